"""Which decoded fixes are worth storing: a pure filter, one instance per ingest process.

A fix is dropped (and counted by reason) when the unit itself says it is invalid, when it
sits on 0/0 (a receiver with no fix yet), when it is dated too far in the future (a wrong
clock would otherwise pin the vehicle's latest state), when reaching it from the previous
fix would need an impossible speed (a multipath jump), or when it repeats a fix already
seen. Fixes a unit flags invalid still carry ignition and IO data, so a caller may keep
their attributes; this filter only decides about storing them as positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from telematics.protocols.base import Fix

EARTH_RADIUS_M = 6_371_008.8


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres; good to 0.5 % which is plenty for a speed check."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlmb = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass(slots=True)
class _Reference:
    fix_time: datetime
    latitude: float
    longitude: float


class FixFilter:
    """Decides per unit whether a fix is stored; remembers each unit's last accepted fix.

    An implied-speed rejection is not final for the unit: when the *next* fix agrees with
    the rejected one rather than with the reference, the reference was the outlier (say,
    the first fix after a restart), so the filter re-anchors instead of rejecting forever.
    """

    def __init__(self, max_speed_kmh: float = 400.0, max_future: timedelta = timedelta(days=1)):
        self.max_speed_kmh = max_speed_kmh
        self.max_future = max_future
        self._last: dict[int, _Reference] = {}
        self._rejected: dict[int, _Reference] = {}

    def reason_to_drop(self, unit_id: int, fix: Fix, now: datetime) -> str | None:
        if not fix.valid:
            return "invalid"
        if abs(fix.latitude) < 1e-9 and abs(fix.longitude) < 1e-9:
            return "null_island"
        if not (-90.0 <= fix.latitude <= 90.0 and -180.0 <= fix.longitude <= 180.0):
            return "out_of_range"
        if fix.fix_time - now > self.max_future:
            return "future"
        candidate = _Reference(fix.fix_time, fix.latitude, fix.longitude)
        last = self._last.get(unit_id)
        if last is not None:
            if candidate == last:
                return "duplicate"
            if fix.fix_time > last.fix_time and self._too_fast(last, candidate):
                rejected = self._rejected.get(unit_id)
                if rejected is None or self._too_fast(rejected, candidate):
                    self._rejected[unit_id] = candidate
                    return "implied_speed"
                # The rejected fix and this one agree: the reference was the outlier.
        self._rejected.pop(unit_id, None)
        if last is None or fix.fix_time >= last.fix_time:
            self._last[unit_id] = candidate
        return None

    def _too_fast(self, earlier: _Reference, later: _Reference) -> bool:
        seconds = abs((later.fix_time - earlier.fix_time).total_seconds())
        metres = haversine_m(earlier.latitude, earlier.longitude, later.latitude, later.longitude)
        if metres < 1000:  # GPS noise over short hops is no evidence of anything
            return False
        return metres / max(seconds, 1.0) * 3.6 > self.max_speed_kmh
