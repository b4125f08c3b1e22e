"""Two organisations with people and vehicles at known positions, for the dashboard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from fleet.models import Organisation, Role, Vehicle
from fleet.services import create_user
from telematics.models import VehicleState

PASSWORD = "pw-dashboard"


def place(vehicle: Vehicle, latitude: float, longitude: float, *, age_s: float = 30,
          speed_kmh: float = 0.0, course: float | None = None,
          ignition: bool | None = None) -> VehicleState:
    return VehicleState.objects.update_or_create(vehicle=vehicle, defaults={
        "fix_time": datetime.now(UTC) - timedelta(seconds=age_s), "latitude": latitude,
        "longitude": longitude, "speed_kmh": speed_kmh, "course": course,
        "ignition": ignition,
    })[0]


@pytest.fixture
def world(db) -> dict:
    """Acme (Berlin): a manager, a dispatcher, a driver who drives Van 1, three vehicles
    in three states; Globex (Vienna): a manager and one truck."""
    acme = Organisation.objects.create(name="Acme Logistics", time_zone="Europe/Berlin")
    globex = Organisation.objects.create(name="Globex Haulage", time_zone="Europe/Vienna")
    users = {
        name: create_user(name, organisation, role, password=PASSWORD)[0]
        for name, organisation, role in (
            ("adam", acme, Role.ADMIN), ("dora", acme, Role.DISPATCHER),
            ("dana", acme, Role.DRIVER), ("gus", globex, Role.ADMIN),
        )
    }
    van1 = Vehicle.objects.create(organisation=acme, name="Van 1", licence_plate="B-AC 1",
                                  default_driver=users["dana"].driver)
    van2 = Vehicle.objects.create(organisation=acme, name="Van 2", licence_plate="B-AC 2")
    van3 = Vehicle.objects.create(organisation=acme, name="Van 3", licence_plate="B-AC 3")
    truck = Vehicle.objects.create(organisation=globex, name="Truck 9")
    place(van1, 52.5200, 13.4050, speed_kmh=48.0, course=90.0, ignition=True)
    place(van2, 52.5000, 13.3500, speed_kmh=0.0, course=180.0, ignition=True)
    place(van3, 52.4800, 13.4400, age_s=3600)
    place(truck, 48.2082, 16.3738, speed_kmh=70.0, course=45.0, ignition=True)
    return {"acme": acme, "globex": globex, **users, "van1": van1, "van2": van2,
            "van3": van3, "truck": truck}


async def in_thread(function, *args, **kwargs):
    """Run ORM code from an async test in a worker thread, closing that thread's database
    connection afterwards (a leftover one keeps PostgreSQL from dropping the test DB)."""

    def run():
        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    return await sync_to_async(run, thread_sensitive=False)()


async def close_thread_connection() -> None:
    """Close the database connection of the thread ``database_sync_to_async`` uses, so
    the test database can be dropped at the end of a PostgreSQL run."""
    def close() -> None:
        connection.close()  # looked up in that thread: connections are per thread

    await sync_to_async(close)()
