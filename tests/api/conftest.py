"""Two organisations with people of every role, vehicles, units and positions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from fleet.api.services import create_api_key, issue_token, recent_credentials
from fleet.models import Driver, Organisation, Role, Vehicle
from telematics.models import Device, Position, VehicleState
from telematics.services import register_unit

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """Throttle counters live in the cache; one test's requests must not limit another's."""
    cache.clear()
    recent_credentials.clear()
    yield
    cache.clear()
    recent_credentials.clear()


def client_for(user=None, api_key: str | None = None) -> APIClient:
    client = APIClient()
    if user is not None:
        _, token = issue_token(user)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    elif api_key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key}")
    return client


def add_positions(device: Device, start: datetime, count: int, step_s: int = 10,
                  server_time: datetime | None = None, **fields) -> list[Position]:
    rows = [
        Position(
            device=device, vehicle_id=device.vehicle_id,
            fix_time=start + timedelta(seconds=i * step_s),
            server_time=server_time or start + timedelta(seconds=i * step_s + 1),
            latitude=52.5 + i * 0.001, longitude=13.4 + i * 0.001, altitude=30.0 + i,
            speed_kmh=float(i % 90), course=float(i % 360), satellites=9, hdop=0.9,
            ignition=True, odometer_km=1000.0 + i * 0.1, **fields,
        )
        for i in range(count)
    ]
    return Position.objects.bulk_create(rows)


@dataclass
class Fleets:
    acme: Organisation
    globex: Organisation
    admin: object
    dispatcher: object
    driver_user: object
    globex_admin: object
    van: Vehicle
    car: Vehicle
    truck: Vehicle
    dana: Driver
    greta: Driver
    van_unit: Device
    truck_unit: Device
    acme_key: str
    globex_key: str

    def client(self, who: str) -> APIClient:
        if who == "api_key":
            return client_for(api_key=self.acme_key)
        return client_for({
            "admin": self.admin, "dispatcher": self.dispatcher, "driver": self.driver_user,
            "globex_admin": self.globex_admin,
        }[who])


@pytest.fixture
def fleets(acme, globex, make_user) -> Fleets:
    admin = make_user("alice", acme, Role.ADMIN)
    dispatcher = make_user("dirk", acme, Role.DISPATCHER)
    driver_user = make_user("dana", acme, Role.DRIVER)
    globex_admin = make_user("gus", globex, Role.ADMIN)
    dana = driver_user.driver
    greta = Driver.objects.create(organisation=globex, name="Greta", identification_key="G1")
    van = Vehicle.objects.create(organisation=acme, name="Van 7", licence_plate="B-AC 7",
                                 default_driver=dana)
    car = Vehicle.objects.create(organisation=acme, name="Pool car")
    truck = Vehicle.objects.create(organisation=globex, name="Truck 1", default_driver=greta)
    van_unit = register_unit("356307042441013", "teltonika", acme, vehicle_name=van.name)
    truck_unit = register_unit("356307042441099", "gt06", globex, vehicle_name=truck.name)
    add_positions(van_unit, T0, 30)
    add_positions(truck_unit, T0, 5)
    VehicleState.objects.create(
        vehicle=van, device=van_unit, fix_time=T0, server_time=T0, latitude=52.5,
        longitude=13.4, speed_kmh=42.0, course=90.0, ignition=True, odometer_km=1000.0,
    )
    _, acme_key = create_api_key(acme, "Dispatch", created_by=admin)
    _, globex_key = create_api_key(globex, "Globex dispatch", created_by=globex_admin)
    return Fleets(acme, globex, admin, dispatcher, driver_user, globex_admin, van, car, truck,
                  dana, greta, van_unit, truck_unit, acme_key, globex_key)


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-root")
