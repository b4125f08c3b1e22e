"""Logbook entries made directly (through ``logbook.services.create_trip``) at times
relative to now, for pages and API tests that depend on the edit window."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from fleet.models import Driver, Vehicle
from logbook.models import DriverSource, GapStatus, NamedPlace, OdometerGap, Trip, TripStatus
from logbook.services import create_trip

START = (52.5200, 13.4000)


def ago(**kwargs) -> datetime:
    return timezone.now() - timedelta(**kwargs)


def make_trip(
    vehicle: Vehicle,
    start: datetime,
    *,
    minutes: float = 20.0,
    km: float = 10.0,
    driver: Driver | None = None,
    category: str = "",
    suggested: str = "",
    purpose: str = "",
    partner: str = "",
    destination: str = "",
    start_address: str = "Depot, Berlin",
    end_address: str = "Schulz GmbH, Berlin",
    odometer_km: float | None = None,
    end_place: NamedPlace | None = None,
) -> Trip:
    """A trip of ``km`` km starting at ``start``, continuing the vehicle's odometer."""
    end = start + timedelta(minutes=minutes)
    if odometer_km is None:
        last = (Trip.objects.filter(vehicle=vehicle, status=TripStatus.ACTIVE)
                .order_by("-end_time").first())
        odometer_km = last.end_odometer_km if last is not None else 1000.0
    steps = 6
    lat0, lon0 = START
    dlat = km / 111.25 / steps  # northwards
    route = [
        [(start + (end - start) * i / steps).isoformat(), round(lat0 + dlat * i, 6), lon0]
        for i in range(steps + 1)
    ]
    trip = Trip(
        organisation_id=vehicle.organisation_id, vehicle=vehicle, driver=driver,
        driver_source=DriverSource.DEFAULT if driver else "",
        start_time=start, end_time=end,
        start_latitude=route[0][1], start_longitude=lon0,
        end_latitude=route[-1][1], end_longitude=lon0,
        start_address=start_address, end_address=end_address,
        start_odometer_km=odometer_km, end_odometer_km=odometer_km + km,
        distance_m=km * 1000.0, gps_distance_m=km * 1000.0, odometer_source="unit",
        max_speed_kmh=82.0, route=route, fix_count=60, end_reason="parking",
        category=category, purpose=purpose, partner=partner, destination=destination,
        decided_at=end + timedelta(minutes=5), addresses_pending=False,
        suggested_category=suggested, end_place=end_place,
    )
    return create_trip(trip)


def make_gap(vehicle: Vehicle, before: Trip, km: float = 12.0) -> OdometerGap:
    """An odometer gap just before ``before``: the odometer jumped by ``km``."""
    return OdometerGap.objects.create(
        organisation_id=vehicle.organisation_id, vehicle=vehicle,
        from_time=before.start_time - timedelta(hours=2), from_latitude=START[0],
        from_longitude=START[1], from_km=before.start_odometer_km - km,
        to_time=before.start_time, to_latitude=START[0], to_longitude=START[1],
        to_km=before.start_odometer_km, source="unit", decided_at=before.start_time,
        status=GapStatus.OPEN,
    )
