"""Building drives for logbook tests: a vehicle's fixes written as a story."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from logbook.derivation import NewFix, derive_new_fixes
from telematics.ingest.store import PositionRow, store_batch
from telematics.models import Device
from telematics.protocols.base import Fix

# A Monday morning in Berlin (CEST, UTC+2): 07:00 UTC is 09:00 local, working hours.
T0 = datetime(2024, 5, 6, 7, 0, tzinfo=UTC)
DEPOT = (52.5200, 13.4000)
M_LAT = 111_250.0


class Track:
    """Fixes of one vehicle: park, drive east/north, fall silent. Deterministic."""

    def __init__(self, t0: datetime = T0, at: tuple[float, float] = DEPOT, *,
                 odometer_km: float | None = None, ignition: bool | None = None,
                 driver_key: str | None = None):
        self.t = t0
        self.lat, self.lon = at
        self.odometer_km = odometer_km
        self.ignition = ignition
        self.driver_key = driver_key
        self.fixes: list[Fix] = []
        self._n = 0

    def emit(self, kmh: float, jitter: bool = False) -> None:
        self._n += 1
        dy = dx = 0.0
        if jitter:  # a parked receiver wanders by a few metres
            dy = 4.0 * math.sin(self._n * 1.3) / M_LAT
            dx = 4.0 * math.cos(self._n * 0.7) / (M_LAT * math.cos(math.radians(self.lat)))
        self.fixes.append(Fix(
            fix_time=self.t, latitude=round(self.lat + dy, 7), longitude=round(self.lon + dx, 7),
            speed_kmh=kmh, valid=True, ignition=self.ignition,
            odometer_km=None if self.odometer_km is None else round(self.odometer_km, 3),
            attributes={} if self.driver_key is None else {"driver_key": self.driver_key},
        ))

    def park(self, seconds: float, every: float = 30.0) -> Track:
        for _ in range(int(seconds // every)):
            self.t += timedelta(seconds=every)
            self.emit(0.0, jitter=True)
        return self

    def drive(self, metres: float, kmh: float = 50.0, *, heading: float = 90.0,
              every: float = 2.0) -> Track:
        step = kmh / 3.6 * every
        for _ in range(max(1, round(metres / step))):
            self.t += timedelta(seconds=every)
            self.move(step, heading)
            self.emit(kmh)
        return self

    def move(self, metres: float, heading: float) -> None:
        self.lat += metres * math.cos(math.radians(heading)) / M_LAT
        self.lon += metres * math.sin(math.radians(heading)) / (
            M_LAT * math.cos(math.radians(self.lat)))
        if self.odometer_km is not None:
            self.odometer_km += metres / 1000.0

    def silence(self, seconds: float) -> Track:
        self.t += timedelta(seconds=seconds)
        return self

    def position(self) -> tuple[float, float]:
        return self.lat, self.lon


def rows_for(device: Device, fixes: list[Fix], server_time: datetime | None = None):
    server_time = server_time or timezone.now()
    return [PositionRow(device.pk, device.vehicle_id, device.organisation_id, f, server_time)
            for f in fixes]


def store(device: Device, fixes: list[Fix]) -> list[PositionRow]:
    """Store positions exactly as the ingest pipeline does."""
    rows = rows_for(device, fixes)
    store_batch(rows, [], set(), timezone.now())
    return rows


def feed_live(device: Device, fixes: list[Fix], *, batch: int = 50, now: datetime | None = None):
    """Store and derive batch by batch, as the trip tracker does after each ingest batch."""
    from fleet.models import Vehicle

    vehicle = Vehicle.objects.select_related("organisation").get(pk=device.vehicle_id)
    for start in range(0, len(fixes), batch):
        rows = store(device, fixes[start:start + batch])
        at = now or rows[-1].fix.fix_time + timedelta(seconds=1)  # as if in real time
        derive_new_fixes(vehicle, [NewFix(r.device_id, r.server_time, r.fix) for r in rows],
                         now=at)
    return vehicle
