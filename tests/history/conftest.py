"""One day of Van 7 in Berlin, built fix by fix so every report figure is known exactly.

Monday 2024-05-06 (CEST, UTC+2); times below are UTC. Every fix carries the unit's
odometer, so distances are exact sums of known steps.

====================  =====================================================================
06:50:00-06:59:30     at the depot D, ignition on, 0 km/h (10 min idling), 20 fixes / 30 s
07:00:00-07:10:00     T1, business: D -> customer C, 36 km/h, 20 steps of 300 m = 6.0 km
07:15-08:55           parked at C, ignition off, a fix every 5 min
09:00:00-09:30:00     T2, *private*: C -> the Secret Garden G, 25 km/h, 60 steps, 12.5 km
09:35-11:50           parked at G, ignition off, a fix every 5 min
11:55:00-11:59:30     at G, ignition on, 0 km/h (5 min idling)
12:00:00-12:20:00     T3, commute: G -> E, 19.5 km/h, 40 steps of 162.5 m = 6.5 km
12:25-13:00           parked at E, a fix every 5 min
====================  =====================================================================

Tuesday 2024-05-07: no trips, only positions: 08:00:00-08:07:30 UTC, 15 steps of 300 m
(4.5 km by the odometer). Events on Monday: fault_opened 07:05 (in T1), fault_closed
09:15 (in T2), service_due_soon 12:30, fault_opened 13:00. Coolant temperature samples at
07:02, 07:05, 09:10 (in T2) and 12:05.

Alice drives Van 7 (its default driver, so she may see it); the trips are hers. For the
dispatcher and the fleet manager T2 is redacted, and from T1's end to T3's start the
van's positions are hidden (it stands at the garden after T2).
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import pytest

from fleet.models import Driver, Organisation, Role, Vehicle
from logbook.models import Trip
from logbook.services import create_trip
from telematics.models import Device, Event, Position, SignalSample
from telematics.services import register_unit

DAY = date(2024, 5, 6)
NEXT_DAY = date(2024, 5, 7)
M_LAT = 111_320.0
D = (52.5200, 13.4000)
SECRET = "Secret Garden"


def t(hms: str, day: int = 6) -> datetime:
    h, m, s = (int(x) for x in hms.split(":"))
    return datetime(2024, 5, day, h, m, s, tzinfo=UTC)


def moved(at: tuple[float, float], metres: float, heading: float) -> tuple[float, float]:
    lat, lon = at
    lat += metres * math.cos(math.radians(heading)) / M_LAT
    lon += metres * math.sin(math.radians(heading)) / (M_LAT * math.cos(math.radians(lat)))
    return lat, lon


class Story:
    """Fixes written in order: ``stay`` and ``drive`` advance time, place and odometer."""

    def __init__(self, device: Device, at: tuple[float, float], odometer_km: float):
        self.device = device
        self.at = at
        self.km = odometer_km
        self.rows: list[Position] = []

    def fix(self, when: datetime, speed: float, ignition: bool | None) -> None:
        self.rows.append(Position(
            device=self.device, vehicle_id=self.device.vehicle_id, fix_time=when,
            server_time=when, latitude=round(self.at[0], 7), longitude=round(self.at[1], 7),
            speed_kmh=speed, ignition=ignition, odometer_km=round(self.km, 4), valid=True,
            course=None, satellites=9, hdop=0.8,
        ))

    def stay(self, first: datetime, last: datetime, every_s: int, *, ignition: bool | None,
             speed: float = 0.0) -> Story:
        when = first
        while when <= last:
            self.fix(when, speed, ignition)
            when += timedelta(seconds=every_s)
        return self

    def drive(self, first: datetime, steps: int, every_s: int, step_m: float, heading: float,
              kmh: float, step_km: float) -> Story:
        """A fix at ``first`` where the vehicle is (moving off), then ``steps`` fixes each
        ``step_m`` further; the last one at rest with the ignition off."""
        self.fix(first, kmh, True)
        for k in range(1, steps + 1):
            self.at = moved(self.at, step_m, heading)
            self.km += step_km
            last = k == steps
            self.fix(first + timedelta(seconds=k * every_s), 0.0 if last else kmh, not last)
        return self

    def save(self) -> None:
        Position.objects.bulk_create(self.rows)


def make_trip(vehicle: Vehicle, driver: Driver, start: datetime, end: datetime,
              start_km: float, end_km: float, category: str, start_at, end_at,
              start_address: str, end_address: str, **fields) -> Trip:
    return create_trip(Trip(
        organisation=vehicle.organisation, vehicle=vehicle, driver=driver,
        driver_source="default", start_time=start, end_time=end,
        start_latitude=start_at[0], start_longitude=start_at[1],
        end_latitude=end_at[0], end_longitude=end_at[1],
        start_address=start_address, end_address=end_address,
        start_odometer_km=start_km, end_odometer_km=end_km,
        distance_m=(end_km - start_km) * 1000, gps_distance_m=(end_km - start_km) * 1000,
        odometer_source="unit", max_speed_kmh=40.0, route=[], fix_count=10,
        end_reason="parking", category=category, decided_at=end, addresses_pending=False,
        **fields,
    ), now=end)


@pytest.fixture
def world(db):
    return build_world()


def build_world() -> dict:
    acme = Organisation.objects.create(name="Acme Logistics", time_zone="Europe/Berlin")
    globex = Organisation.objects.create(name="Globex Haulage", time_zone="Europe/Vienna")
    from fleet.services import create_user

    users = {
        name: create_user(name, organisation, role, password=f"pw-{name}")[0]
        for name, organisation, role in (
            ("boss", acme, Role.ADMIN), ("desk", acme, Role.DISPATCHER),
            ("alice", acme, Role.DRIVER), ("bob", acme, Role.DRIVER),
            ("eve", globex, Role.ADMIN),
        )
    }
    alice = Driver.objects.get(user=users["alice"])
    unit = register_unit("356307042441013", "teltonika", acme, vehicle_name="Van 7")
    van = Vehicle.objects.get(pk=unit.vehicle_id)
    van.default_driver = alice
    van.save()
    truck_unit = register_unit("359710049095095", "gt06", globex, vehicle_name="Truck 9")
    truck = Vehicle.objects.get(pk=truck_unit.vehicle_id)

    story = Story(unit, D, 1000.0)
    story.stay(t("06:50:00"), t("06:59:30"), 30, ignition=True)
    story.drive(t("07:00:00"), 20, 30, 300.0, 90.0, 36.0, 0.3)
    c = story.at
    story.stay(t("07:15:00"), t("08:55:00"), 300, ignition=False)
    story.drive(t("09:00:00"), 60, 30, 12_500.0 / 60, 0.0, 25.0, 12.5 / 60)
    g = story.at
    story.stay(t("09:35:00"), t("11:50:00"), 300, ignition=False)
    story.stay(t("11:55:00"), t("11:59:30"), 30, ignition=True)
    story.drive(t("12:00:00"), 40, 30, 162.5, 270.0, 19.5, 0.1625)
    e = story.at
    story.stay(t("12:25:00"), t("13:00:00"), 300, ignition=False)
    story.drive(t("08:00:00", 7), 15, 30, 300.0, 180.0, 36.0, 0.3)
    story.save()
    Story(truck_unit, (48.2, 16.37), 500.0).drive(t("07:00:00"), 10, 30, 300.0, 90.0, 36.0,
                                                   0.3).save()

    trips = {
        "t1": make_trip(van, alice, t("07:00:00"), t("07:10:00"), 1000.0, 1006.0, "business",
                        D, c, "Depot", "Schulz GmbH", purpose="Delivery",
                        partner="Schulz GmbH"),
        "t2": make_trip(van, alice, t("09:00:00"), t("09:30:00"), 1006.0, 1018.5, "private",
                        c, g, "Schulz GmbH", SECRET),
        "t3": make_trip(van, alice, t("12:00:00"), t("12:20:00"), 1018.5, 1025.0, "commute",
                        g, e, "Lindenstraße 5", "Home street 1"),
    }
    for kind, when in (("fault_opened", "07:05:00"), ("fault_closed", "09:15:00"),
                       ("service_due_soon", "12:30:00"), ("fault_opened", "13:00:00")):
        Event.objects.create(organisation=acme, vehicle=van, type=kind, time=t(when))
    Event.objects.create(organisation=globex, vehicle=truck, type="fault_opened",
                         time=t("07:05:00"))
    for when, value in (("07:02:00", 70.0), ("07:05:00", 82.5), ("09:10:00", 88.0),
                        ("12:05:00", 79.0)):
        SignalSample.objects.create(vehicle=van, signal="coolant_temperature", time=t(when),
                                    value=value, source="obd2:7E8:05")
    return {"acme": acme, "globex": globex, **users, "alice_driver": alice, "van": van,
            "unit": unit, "truck": truck, **trips, "c": c, "g": g, "e": e}


@pytest.fixture
def login(client):
    def as_user(username: str):
        client.login(username=username, password=f"pw-{username}")
        return client

    return as_user
