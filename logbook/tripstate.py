"""Trip derivation: a pure, streaming state machine from fixes to logbook trips.

The same code runs in live ingest and in a history rebuild: it is fed one fix at a time
in fix-time order and answers with events (``TripStarted``, ``TripEnded``,
``OdometerGap``). No Django, no database, no I/O, no clock: every decision is taken from
fix times, so replaying the same fixes always gives the same trips.

The model
---------
A vehicle is *parked* or *driving*. A trip is the movement between two parkings.

- **Stops.** While driving, the machine keeps a stop anchor: the fix where the vehicle
  was last seen at rest (speed under ``stop_speed_kmh``). Later fixes within
  ``stop_radius_m`` of it belong to the same stop; GPS drift, creeping in a queue and
  speed noise stay inside the stop and add no distance. The stop becomes a *parking*
  (the trip ends) once it has lasted ``parking_s``; shorter stops (lights, traffic) are
  just part of the trip. Leaving the radius ends the stop; the movement inside the
  radius since the vehicle last stood still is added then. A drive at
  ``moving_speed_kmh`` to a new rest point inside the radius (stop-and-go in a queue)
  is travel and starts a new stop; slower shuffling is not.
- **Departure.** Parked, the vehicle is at its parked point. A departure run is the
  fixes since the vehicle was last at rest; it becomes a *tentative* trip when a fix
  reaches ``moving_speed_kmh`` or leaves the stop radius, and a real trip (``TripStarted``)
  when the vehicle is more than ``depart_radius_m`` from the parked point after at least
  ``confirm_fixes`` fixes outside the stop radius, one of them at ``moving_speed_kmh``
  (speed evidence). With the ignition on, the engine is known to run, so leaving the
  stop radius is enough. A tentative trip that parks again (a manoeuvre, or drift)
  is dropped silently and the parked point moves there.
- **Ignition.** Units that report ignition: ignition off ends the trip at once (many
  units sleep after it and send nothing for hours); ignition off never starts a trip
  (towing, ferry: the vehicle moves but nobody drives it); ignition on with no
  movement is idling, not a trip. A trip that follows ignition on within ``parking_s``
  starts at the ignition-on fix (warming up, buckling up belong to the drive). Idling
  at rest for ``parking_s`` is a parking like any other.
- **Outliers.** A fix that would need more than ``max_speed_kmh`` to reach is held until
  the next fix shows whether the vehicle or the fix jumped. A fix outside the stop
  radius without speed evidence is held until the next fix confirms it is outside too.
  A single outlier of a few hundred metres is thereby dropped, at any reporting rate.
  A fix without a reported speed is never speed evidence on its own (an outlier fakes
  any speed): it is at rest or creeping, and its speed for the trip's maximum is
  estimated over the way from the last stop.
- **Sparse units** (a fix every minute or two, asleep when parked). When the first
  moving fix is already beyond the stop radius but within one reporting interval
  (x1.5) of the parked point at its speed, the trip starts at the parked point at the
  estimated departure; when the first fix after a trip's last moving fix comes after a
  long silence, at rest and within one interval, the trip ends there at the estimated
  arrival. Farther jumps are movement nobody saw: a gap.
- **Gaps** (tunnel, underground car park, no coverage). Up to ``parking_s`` of silence is
  too short to hide a parking: the vehicle continues from where it reappears. A longer
  silence is bridged only if it is at most ``gap_max_s`` and the jump, travelled at
  ``gap_speed_kmh``, leaves less than ``parking_s`` unaccounted; otherwise the vehicle is
  taken to have parked during the gap: the trip ends at the last fix before it and a
  new trip starts where the vehicle reappears moving. (A vehicle that reappears near
  where it vanished after a long time was parked underground: its trip ended at the
  entrance, and no odometer gap is reported.)

Trip boundaries, exactly
------------------------
- Start: the first fix of the uninterrupted run of fixes at or above ``stop_speed_kmh``
  that carried the vehicle off its parked point, or the ignition-on fix (see above),
  or for sparse units the parked point at the estimated departure.
- End: the first fix at rest of the stop that became the parking (where the vehicle
  came to rest), or the ignition-off fix, or the last fix before a gap (for sparse
  units: the first fix after it, at the estimated arrival), or the last fix before
  ``finish()``.

Distances
---------
The hot path measures with a local equirectangular projection on the WGS84 ellipsoid
(meridional and prime-vertical radii at the anchor's latitude): a handful of float
operations. geopy is too slow for every fix: on the reference machine ``geodesic`` takes
about 43 µs and ``great_circle`` about 4 µs per call, against a budget of 5 µs for the
whole fix at 200,000 fixes/s. The projection agrees with geopy's geodesic to better
than 1e-5 relative for the short steps between fixes (tested), better than
``great_circle``, whose sphere is off by up to 0.5 %. Where precision matters and
steps are long (over 1 km: gaps, sparse reporting, odometer-gap chords) geopy's
``geodesic`` is used.

Odometer and continuity
-----------------------
When fixes carry a unit odometer (CAN, OBD, the unit's own), a trip's distance is the
odometer difference, and the GPS track length is kept alongside as ``gps_distance_m``.
Otherwise the odometer is the GPS one: the caller seeds the machine with the vehicle's
last odometer and each trip adds its track length. A trip's own start reading is the
unit's reading at its last fix at the parked point (or at the first moving fix when
the two disagree: the vehicle moved unseen). It starts at the previous trip's end
reading when the readings agree within ``odometer_tolerance_km`` (the small difference
is absorbed into the new trip); when they do not, an ``OdometerGap`` event precedes the
``TripStarted`` so the logbook can show an explainable entry. For GPS odometers the
"reading" at a trip start is the previous end reading plus the geodesic distance
between the previous trip's end and this trip's start.

Replaying late fixes
--------------------
``to_dict()``/``from_dict()`` checkpoint the machine (JSON-safe). A caller saves a
checkpoint after each ``TripEnded``. Each emitted trip carries ``first_fix_time`` and
``last_fix_time``: the latter is the fix that *decided* the event, which is later
than ``end_time`` by up to ``parking_s`` (the parking had to be seen). When a fix
arrives older than ``last_fix_time``, restore the latest checkpoint taken before the
late fix's time, drop the trips emitted after it and re-feed the stored fixes from
there in order. ``feed()`` raises ``OutOfOrderFix`` for a fix older than the last one;
fixes with the same time are accepted (units send an event and a periodic record
with one timestamp).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any

from geopy.distance import geodesic

from telematics.protocols.base import Fix

__all__ = [
    "OdometerGap",
    "OutOfOrderFix",
    "Trip",
    "TripEnded",
    "TripEvent",
    "TripSettings",
    "TripStarted",
    "TripStateMachine",
    "VehicleState",
    "distance_m",
]

# WGS84
_A = 6_378_137.0
_F = 1.0 / 298.257223563
_E2 = _F * (2.0 - _F)
_RAD = math.pi / 180.0
# Longer steps than this are measured with geopy's geodesic instead of the projection.
_PRECISE_M = 1000.0
_FORMAT = 1


def _scales(lat: float) -> tuple[float, float]:
    """Metres per degree of longitude and of latitude at ``lat`` on the WGS84 ellipsoid."""
    s = math.sin(lat * _RAD)
    w = 1.0 - _E2 * s * s
    n = _A / math.sqrt(w)  # prime-vertical radius of curvature
    m = n * (1.0 - _E2) / w  # meridional radius of curvature
    return n * math.cos(lat * _RAD) * _RAD, m * _RAD


def _geodesic_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    return geodesic((lat1, lon1), (lat2, lon2)).meters


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Distance in metres between two positions, as the machine measures it.

    Local ellipsoidal projection at the mid-latitude for short distances, geopy's
    geodesic above 1 km, where the projection's error would start to show.
    """
    kx, ky = _scales((lat1 + lat2) * 0.5)
    dx = (lon2 - lon1) * kx
    dy = (lat2 - lat1) * ky
    d = math.sqrt(dx * dx + dy * dy)
    return _geodesic_m(lat1, lon1, lat2, lon2) if d > _PRECISE_M else d


class OutOfOrderFix(ValueError):
    """A fix older than the last one fed: the caller must replay from a checkpoint."""


@dataclass(frozen=True, slots=True)
class TripSettings:
    """Every threshold of trip derivation; the defaults are for cars.

    An organisation can override each one (``dataclasses.replace``). Why the defaults:

    - ``stop_speed_kmh`` 5: below it a fix is "at rest". Parked receivers report speed
      noise of a few km/h; a vehicle that moves at walking pace moves a few metres.
    - ``moving_speed_kmh`` 10: speed evidence of real movement, safely above the noise
      of a parked receiver (Doppler speed is far more stable than the position).
    - ``stop_radius_m`` 100: a stop (light, queue, parking) is the fixes within this of
      the point where the vehicle came to rest. Parked receivers drift by tens of
      metres, so a smaller radius would let drift end a stop and delay its parking;
      a queue that moves less than this in ``parking_s`` is standing still.
    - ``depart_radius_m`` 200: without ignition, a parked vehicle is only taken to have
      left when it is this far from its parked point (twice the stop radius, above any
      drift that is not a single outlier), with speed evidence.
    - ``parking_s`` 300: a stop this long is a parking. A red light lasts under two
      minutes (traffic-signal cycles are at most 120 s), traffic standstills and level
      crossings are usually shorter than five minutes, while a quick errand (post
      office, customer hand-over) of five minutes or more is a destination the tax
      office expects to see.
    - ``gap_max_s`` 900 and ``gap_speed_kmh`` 30: a silence of up to 15 minutes is
      bridged when the jump, travelled at an urban average of 30 km/h, leaves less than
      ``parking_s`` unaccounted (3 min and 2 km: bridged; 10 min and 300 m: parked
      during the gap). Longer silences are never bridged: too much could have happened.
    - ``max_speed_kmh`` 250: faster apparent movement between two fixes is a GPS jump.
    - ``jitter_m`` 10: for fixes without speed, the part of a step that counts as noise
      when the speed is estimated from the positions.
    - ``confirm_fixes`` 2: fixes outside the stop radius needed to start a trip, so a
      single outlier with a speed spike never starts one.
    - ``odometer_tolerance_km`` 1.0: consecutive trips agree on the odometer within this.
      Many CAN/OBD odometers report whole kilometres, and parking manoeuvres that are
      not trips move the odometer by a few hundred metres; larger differences are
      reported as ``OdometerGap``.
    - ``route_tolerance_m`` 10 and ``route_interval_s`` 60: the stored route keeps a fix
      where the path bends by more than 10 m from a straight line, and at least one
      fix a minute, so a map and "where was it at 10:35" stay right with a fraction of
      the fixes.
    """

    stop_speed_kmh: float = 5.0
    moving_speed_kmh: float = 10.0
    stop_radius_m: float = 100.0
    depart_radius_m: float = 200.0
    parking_s: float = 300.0
    gap_max_s: float = 900.0
    gap_speed_kmh: float = 30.0
    max_speed_kmh: float = 250.0
    jitter_m: float = 10.0
    confirm_fixes: int = 2
    odometer_tolerance_km: float = 1.0
    route_tolerance_m: float = 10.0
    route_interval_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.stop_speed_kmh < self.moving_speed_kmh < self.max_speed_kmh:
            raise ValueError("need 0 < stop_speed_kmh < moving_speed_kmh < max_speed_kmh")
        if not 0 < self.stop_radius_m <= self.depart_radius_m:
            raise ValueError("need 0 < stop_radius_m <= depart_radius_m")
        if not 0 < self.parking_s <= self.gap_max_s:
            raise ValueError("need 0 < parking_s <= gap_max_s")
        if self.gap_speed_kmh <= 0 or self.jitter_m < 0 or self.confirm_fixes < 1:
            raise ValueError("gap_speed_kmh > 0, jitter_m >= 0 and confirm_fixes >= 1")
        if self.odometer_tolerance_km < 0 or self.route_tolerance_m <= 0:
            raise ValueError("odometer_tolerance_km >= 0 and route_tolerance_m > 0")
        if self.route_interval_s <= 0:
            raise ValueError("route_interval_s > 0")


class VehicleState(StrEnum):
    UNKNOWN = "unknown"  # no valid fix yet
    PARKED = "parked"
    DRIVING = "driving"


RoutePoint = tuple[datetime, float, float]


@dataclass(frozen=True, slots=True)
class Trip:
    """One logbook trip, or (``end_reason == ""``) a trip in progress so far.

    - ``distance_m``: from the unit odometer when the fixes carry one
      (``odometer_source == "unit"``), else ``gps_distance_m``, the geodesic length of
      the filtered track (stops and drift excluded).
    - ``route``: (time, lat, lon) of the kept fixes, from the start to the end point.
    - ``fix_count``: the fixes the trip is made of (its moving fixes and those of its
      short stops), valid or not, including ``invalid_fix_count`` (valid=False) and
      ``rejected_fix_count`` (dropped outliers).
    - ``first_fix_time``: the first fix of the trip (``start_time`` is earlier only when
      estimated for a sparse unit). ``last_fix_time``: the fix that decided this event
      (see the module docstring on replaying).
    - ``end_reason``: "parked", "ignition_off", "gap" (parked during a gap in the data),
      "silent" (``finish()``), or "" while the trip is in progress.
    """

    start_time: datetime
    start_lat: float
    start_lon: float
    start_odometer_km: float
    end_time: datetime
    end_lat: float
    end_lon: float
    end_odometer_km: float
    distance_m: float
    gps_distance_m: float
    odometer_source: str
    max_speed_kmh: float
    route: tuple[RoutePoint, ...]
    driver_keys: tuple[str, ...]
    fix_count: int
    invalid_fix_count: int
    rejected_fix_count: int
    end_reason: str
    first_fix_time: datetime
    last_fix_time: datetime

    @property
    def duration_s(self) -> float:
        return (self.end_time - self.start_time).total_seconds()

    @property
    def average_speed_kmh(self) -> float:
        """Moving average: distance over the whole duration, short stops included."""
        duration = self.duration_s
        return self.distance_m / duration * 3.6 if duration > 0 else 0.0

    @property
    def driver_key(self) -> str | None:
        """The first driver key seen during the trip (all of them: ``driver_keys``)."""
        return self.driver_keys[0] if self.driver_keys else None


@dataclass(frozen=True, slots=True)
class TripStarted:
    trip: Trip


@dataclass(frozen=True, slots=True)
class TripEnded:
    trip: Trip


@dataclass(frozen=True, slots=True)
class OdometerGap:
    """The odometer moved between two trips without a recorded trip.

    ``from_*`` is the previous trip's end (``from_time`` is None when the reading is the
    caller's seed), ``to_*`` the next trip's start. ``source`` is "unit" or "gps"; for
    GPS odometers the jump is the geodesic distance between the two positions, a lower
    bound of what was driven unseen.
    """

    from_time: datetime | None
    from_lat: float | None
    from_lon: float | None
    from_km: float
    to_time: datetime
    to_lat: float
    to_lon: float
    to_km: float
    source: str

    @property
    def km(self) -> float:
        return self.to_km - self.from_km


TripEvent = TripStarted | TripEnded | OdometerGap


class _Progress:
    """The trip being built (tentative until ``confirmed``). Internal and mutable."""

    __slots__ = (
        "c_along",
        "c_lat",
        "c_lon",
        "c_time",
        "confirmed",
        "first_kmh",
        "first_step_s",
        "first_time",
        "fixes",
        "from_ignition",
        "gps_m",
        "has_dir",
        "invalid",
        "k_lat",
        "k_lon",
        "k_time",
        "key",
        "keys",
        "last_d2p",
        "last_kmh",
        "last_lat",
        "last_lon",
        "last_odo",
        "last_time",
        "max_kmh",
        "outside",
        "p_seen",
        "p_seen_odo",
        "prev_time",
        "rejected",
        "route",
        "source",
        "start_km",
        "start_lat",
        "start_lon",
        "start_odo",
        "start_time",
        "ux",
        "uy",
    )

    def __init__(self, t: datetime, lat: float, lon: float, odo: float | None) -> None:
        self.start_time = t
        self.first_time = t  # the first fix (start_time may be estimated earlier)
        self.first_kmh = 0.0
        self.first_step_s = -1.0  # time from the first fix to the next committed one
        self.from_ignition = False
        self.p_seen: datetime | None = None  # last seen at the parked point
        self.p_seen_odo: float | None = None  # unit odometer then
        self.start_lat = lat
        self.start_lon = lon
        self.start_odo = odo  # unit odometer reading at the start, if any
        self.start_km = 0.0  # set on confirmation
        self.source = "gps"
        self.confirmed = False
        self.gps_m = 0.0
        self.max_kmh = 0.0
        self.outside = 0  # committed fixes outside the stop radius of the parked point
        self.last_d2p = 0.0  # squared distance of the last committed fix from it
        self.fixes = 0
        self.invalid = 0
        self.rejected = 0
        self.keys: list[str] = []
        self.key: str | None = None
        self.route: list[RoutePoint] = [(t, lat, lon)]
        # Route thinning (Reumann-Witkam): last kept point K, direction (ux, uy) from K,
        # and the candidate C (the last committed point, kept when the path bends).
        self.k_time = t
        self.k_lat = lat
        self.k_lon = lon
        self.has_dir = False
        self.ux = 0.0
        self.uy = 0.0
        self.c_along = 0.0
        self.c_time: datetime | None = None
        self.c_lat = 0.0
        self.c_lon = 0.0
        # The last committed point of the track.
        self.last_time = t
        self.last_lat = lat
        self.last_lon = lon
        self.last_odo = odo
        self.last_kmh = 0.0
        self.prev_time = t  # the committed point before the last one


@lru_cache(maxsize=64)
def _settings_of(settings: TripSettings) -> dict[str, Any]:
    return asdict(settings)


def _settings_dict(settings: TripSettings) -> dict[str, Any]:
    """``asdict(settings)``, which deep-copies: a quarter of ``to_dict``'s time, and the
    live tracker saves thousands of machines a minute (a copy: callers may change it)."""
    return dict(_settings_of(settings))


def _fix_to_dict(fix: Fix) -> dict[str, Any]:
    """The parts of a fix the machine reads, JSON-safe."""
    return {
        "t": fix.fix_time.isoformat(),
        "lat": fix.latitude,
        "lon": fix.longitude,
        "kmh": fix.speed_kmh,
        "valid": fix.valid,
        "ign": fix.ignition,
        "odo": fix.odometer_km,
        "key": fix.attributes.get("driver_key"),
    }


def _fix_from_dict(d: dict[str, Any]) -> Fix:
    attributes = {} if d["key"] is None else {"driver_key": d["key"]}
    return Fix(
        fix_time=datetime.fromisoformat(d["t"]),
        latitude=d["lat"],
        longitude=d["lon"],
        speed_kmh=d["kmh"],
        valid=d["valid"],
        ignition=d["ign"],
        odometer_km=d["odo"],
        attributes=attributes,
    )


def _dt(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _undt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class TripStateMachine:
    """Derives trips from one vehicle's fixes, fed one at a time in fix-time order.

    ``odometer_km`` seeds the odometer: the vehicle's reading at the end of its last
    logbook trip. It is the base of the GPS odometer, and a unit odometer that
    disagrees with it gives an ``OdometerGap`` before the first trip.
    """

    __slots__ = (
        "_a_kx",
        "_a_ky",
        "_a_lat",
        "_a_lon",
        "_a_rest",
        "_a_time",
        "_dep_r2",
        "_gap_max",
        "_gap_mps",
        "_held",
        "_held_kind",
        "_ign_on",
        "_ignition",
        "_jitter",
        "_l_lat",
        "_l_lon",
        "_l_time",
        "_last_end",
        "_last_time",
        "_move_kmh",
        "_p_kx",
        "_p_ky",
        "_p_lat",
        "_p_lon",
        "_p_seen",
        "_p_seen_odo",
        "_p_time",
        "_park",
        "_pend_kmh",
        "_pending",
        "_r2",
        "_rt_dir2",
        "_rt_int",
        "_rt_tol",
        "_run_odo",
        "_seed_km",
        "_stop_kmh",
        "_trip",
        "_u_inv",
        "_u_n",
        "_u_rej",
        "_unit_odo",
        "_vmax_kmh",
        "_vmax_mps",
        "settings",
    )

    def __init__(
        self, settings: TripSettings | None = None, *, odometer_km: float | None = None
    ) -> None:
        self.settings = settings if settings is not None else TripSettings()
        s = self.settings
        # Settings in the form the hot path wants them.
        self._stop_kmh = s.stop_speed_kmh
        self._move_kmh = s.moving_speed_kmh
        self._r2 = s.stop_radius_m * s.stop_radius_m
        self._dep_r2 = s.depart_radius_m * s.depart_radius_m
        self._park = timedelta(seconds=s.parking_s)
        self._gap_max = timedelta(seconds=s.gap_max_s)
        self._gap_mps = s.gap_speed_kmh / 3.6
        self._vmax_kmh = s.max_speed_kmh
        self._vmax_mps = s.max_speed_kmh / 3.6
        self._jitter = s.jitter_m
        self._rt_tol = s.route_tolerance_m
        self._rt_dir2 = 4.0 * s.route_tolerance_m * s.route_tolerance_m
        self._rt_int = timedelta(seconds=s.route_interval_s)

        self._seed_km = odometer_km
        self._last_time: datetime | None = None  # last fix (or finish) time
        self._ignition: bool | None = None  # last reported ignition
        # Ignition-on fix of the current engine run: (time, lat, lon, odometer, key).
        self._ign_on: tuple[datetime, float | None, float | None, float | None, Any] | None = None
        self._unit_odo: float | None = None  # latest unit odometer reading
        # Parked point P (None before the first valid fix) and its scales.
        self._p_lat: float | None = None
        self._p_lon: float | None = None
        self._p_time: datetime | None = None
        self._p_seen: datetime | None = None  # the last fix at the parked point
        self._p_seen_odo: float | None = None  # and the unit odometer then
        self._p_kx = 0.0
        self._p_ky = 0.0
        # Stop anchor A: the parked point while parked, the current stop while driving.
        self._a_lat = 0.0
        self._a_lon = 0.0
        self._a_time: datetime | None = None
        self._a_rest = True
        self._a_kx = 0.0
        self._a_ky = 0.0
        # Last accepted valid fix L.
        self._l_lat = 0.0
        self._l_lon = 0.0
        self._l_time: datetime | None = None
        # Valid fixes inside a stop since the vehicle was last at rest (maybe leaving).
        self._pending: list[Fix] = []
        self._run_odo: float | None = None  # unit odometer at the first pending fix
        self._pend_kmh = 0.0  # fastest pending fix in a stop
        # Fixes not yet attributed: the current stop's (or departure run's) fixes.
        self._u_n = 0
        self._u_inv = 0
        self._u_rej = 0
        self._held: Fix | None = None  # fix waiting for the next one to confirm it
        self._held_kind = 0  # 1: implausible jump, 2: outside a stop without speed
        self._trip: _Progress | None = None
        self._last_end: tuple[datetime | None, float | None, float | None, float] | None = None

    # ----------------------------------------------------------------- public API

    @property
    def state(self) -> VehicleState:
        if self._p_lat is None:
            return VehicleState.UNKNOWN
        trip = self._trip
        return VehicleState.DRIVING if trip is not None and trip.confirmed else VehicleState.PARKED

    @property
    def driving_since(self) -> datetime | None:
        trip = self._trip
        return trip.start_time if trip is not None and trip.confirmed else None

    @property
    def parked_since(self) -> datetime | None:
        """When the last trip ended (or the first fix, if no trip has ended yet)."""
        return self._p_time if self.state is VehicleState.PARKED else None

    @property
    def last_fix_time(self) -> datetime | None:
        return self._last_time

    def current_trip(self) -> Trip | None:
        """The trip in progress, up to its last committed fix; None while parked."""
        trip = self._trip
        if trip is None or not trip.confirmed:
            return None
        return self._snapshot(trip, trip.last_time, trip.last_odo, "", self._last_time)

    def feed(self, fix: Fix) -> list[TripEvent]:
        """Take the next fix; return what it decided (usually nothing)."""
        t = fix.fix_time
        last = self._last_time
        if last is not None and t < last:
            raise OutOfOrderFix(f"fix at {t.isoformat()} is older than {last.isoformat()}")
        self._last_time = t
        events: list[TripEvent] = []
        ign = fix.ignition
        if ign and self._ignition is not True:
            self._ignition = True
            self._ign_on = (
                t,
                fix.latitude if fix.valid else None,
                fix.longitude if fix.valid else None,
                fix.odometer_km if fix.odometer_km is not None else self._unit_odo,
                fix.attributes.get("driver_key"),
            )
        if fix.valid:
            self._position(fix, t, events)
        else:
            self._invalid(fix, t, events)
        if ign is False and self._ignition is not False:
            self._ignition = False
            self._ign_on = None
            self._ignition_off(t, events)
        return events

    def flush(self) -> list[TripEvent]:
        """Return what is due without closing anything; a trip in progress stays open.

        Events are never delayed by this machine, so this is always empty; it exists so
        a history rebuild can end uniformly. Fixes held for confirmation stay held.
        """
        return []

    def finish(self, at_time: datetime) -> list[TripEvent]:
        """The vehicle has been silent until ``at_time``: end its trip if that is due.

        Decided as if the vehicle had reported again at ``at_time`` from where it was last
        seen: the trip ends when it has been at rest, or silent, for ``parking_s``.
        ``at_time`` becomes the last fix time: older fixes then raise ``OutOfOrderFix``.
        """
        last = self._last_time
        if last is not None and at_time < last:
            raise OutOfOrderFix(f"finish at {at_time.isoformat()} is older than {last}")
        self._last_time = at_time
        events: list[TripEvent] = []
        if self._trip is None:
            return events
        if self._held is not None and at_time - self._l_time >= self._park:
            self._settle_held(events)
        if self._trip is None:
            return events
        if (
            self._a_rest
            and not self._pending
            and self._a_time is not None
            and at_time - self._a_time >= self._park
        ):
            self._stay_ended(at_time, events)
        elif at_time - self._l_time >= self._park:
            self._vanish(at_time, events, "silent")
        return events

    # -------------------------------------------------------------- the hot path

    def _position(self, fix: Fix, t: datetime, events: list[TripEvent]) -> None:
        lat = fix.latitude
        lon = fix.longitude
        if self._p_lat is None:
            if fix.odometer_km is not None:
                self._unit_odo = fix.odometer_km
            self._settle(lat, lon, t, t)
            self._l_lat = lat
            self._l_lon = lon
            self._l_time = t
            kmh = fix.speed_kmh
            self._take(fix, t, lat, lon, 0.0 if kmh is None else kmh, 0.0, 0.0, events)
            return
        if t - self._l_time >= self._park:
            if self._trip is not None:
                self._gap(fix, t, lat, lon, events)
            else:
                self._quiet(lat, lon)
        if fix.odometer_km is not None:
            self._unit_odo = fix.odometer_km
        if self._held is not None and self._resolve_held(fix, t, lat, lon, events):
            return
        self._check(fix, t, lat, lon, events, False)

    def _check(
        self, fix: Fix, t: datetime, lat: float, lon: float, events: list[TripEvent], force: bool
    ) -> None:
        """Hold implausible or unconfirmed fixes; pass the others to ``_take``."""
        kx = self._a_kx
        ky = self._a_ky
        dx = (lon - self._l_lon) * kx
        dy = (lat - self._l_lat) * ky
        step = math.sqrt(dx * dx + dy * dy)
        dt = -1.0
        if step > self._vmax_mps:  # could be too fast even for one second
            if step > _PRECISE_M:
                step = _geodesic_m(self._l_lat, self._l_lon, lat, lon)
            dt = (t - self._l_time).total_seconds()
            if step > self._vmax_mps * (dt if dt > 1.0 else 1.0):
                self._hold(fix, 1)
                return
        kmh = fix.speed_kmh
        if kmh is None:
            # Without a reported speed one step is no evidence (an outlier fakes any
            # speed): the fix is at rest or creeping, and leaving a stop needs the next
            # fix to confirm it.
            if dt < 0.0:
                dt = (t - self._l_time).total_seconds()
            moved = step - self._jitter
            creeping = dt > 0.0 and moved > 0.0 and moved / dt * 3.6 >= self._stop_kmh
            kmh = self._stop_kmh if creeping else 0.0
        ax = (lon - self._a_lon) * kx
        ay = (lat - self._a_lat) * ky
        d2 = ax * ax + ay * ay
        if d2 > self._r2 and kmh < self._move_kmh and not force:
            self._hold(fix, 2)
            return
        self._take(fix, t, lat, lon, kmh, step, d2, events)

    def _take(
        self,
        fix: Fix,
        t: datetime,
        lat: float,
        lon: float,
        kmh: float,
        step: float,
        d2: float,
        events: list[TripEvent],
        jump: bool = False,
    ) -> None:
        """Apply an accepted fix: stop, travel, leaving a stop or departing."""
        self._l_lat = lat
        self._l_lon = lon
        self._l_time = t
        trip = self._trip
        rest = kmh < self._stop_kmh
        inside = d2 <= self._r2
        if trip is None:  # parked: the anchor is the parked point
            if inside and kmh < self._move_kmh:
                self._p_seen = t
                self._p_seen_odo = self._unit_odo
                if rest:
                    if self._u_n:
                        self._pending.clear()
                        self._u_n = self._u_inv = self._u_rej = 0
                else:
                    if not self._pending:
                        self._run_odo = self._unit_odo
                    self._pending.append(fix)
                    self._u_n += 1
                return
            self._begin(fix, t, lat, lon, kmh, events, jump)
            return
        if inside:
            if self._a_rest:  # in a stop: nothing moves until the vehicle leaves it
                self._u_n += 1
                if rest:
                    if self._pending:
                        if self._pend_kmh >= self._move_kmh:
                            # Drove (not crept) to a new rest point inside the radius: that
                            # was travel, and this is a new stop.
                            self._flush_pending(trip)
                            step = self._step_from_last(trip, lat, lon)
                            self._commit(trip, fix, lat, lon, step)
                            self._set_anchor(lat, lon, t, True)
                            return
                        self._pending.clear()
                else:
                    if self._pending:
                        if kmh > self._pend_kmh:
                            self._pend_kmh = kmh
                    else:
                        self._pend_kmh = kmh
                    self._pending.append(fix)
                if t - self._a_time >= self._park:
                    self._stay_ended(t, events)
                return
            # Travelling; the anchor is the last fix that left a stop radius.
            if t - self._a_time >= self._park:
                # Still within the radius a parking duration later: it stood there.
                self._stay_ended(t, events)
                return
            trip.fixes += 1
            self._commit(trip, fix, lat, lon, 0.0 if jump else step)
            if rest:
                self._set_anchor(lat, lon, t, True)
            if not trip.confirmed:
                self._maybe_confirm(trip, events)
            return
        # Leaving the stop radius.
        if self._pending or self._u_n:
            self._flush_pending(trip)
            step = self._step_from_last(trip, lat, lon)
        elif self._a_rest:
            step = math.sqrt(d2)
            if step > _PRECISE_M:
                step = _geodesic_m(self._a_lat, self._a_lon, lat, lon)
        trip.fixes += 1
        self._commit(trip, fix, lat, lon, 0.0 if jump else step)
        self._set_anchor(lat, lon, t, rest)
        if not trip.confirmed:
            self._maybe_confirm(trip, events)

    def _commit(self, trip: _Progress, fix: Fix, lat: float, lon: float, step: float) -> None:
        """Add a fix to the trip's track: distance, speed, driver, route."""
        trip.gps_m += step
        kmh = fix.speed_kmh
        if kmh is None:
            # Estimated over the way from the last stop anchor: single steps are noise.
            t = fix.fix_time
            dt = (t - self._a_time).total_seconds()
            if dt > 0.0:
                ax = (lon - self._a_lon) * self._a_kx
                ay = (lat - self._a_lat) * self._a_ky
                kmh = math.sqrt(ax * ax + ay * ay) / dt * 3.6
            else:
                kmh = 0.0
        if trip.max_kmh < kmh <= self._vmax_kmh:
            trip.max_kmh = kmh
        attributes = fix.attributes
        if attributes:
            key = attributes.get("driver_key")
            if key is not None and key != trip.key:
                self._note_key(trip, key)
        t = fix.fix_time
        # Route thinning: keep the candidate when this point leaves the corridor of
        # route_tolerance_m around the direction from the last kept point, turns back,
        # or route_interval_s has passed since the last kept point.
        x = (lon - trip.k_lon) * self._a_kx
        y = (lat - trip.k_lat) * self._a_ky
        if trip.has_dir:
            ux = trip.ux
            uy = trip.uy
            along = x * ux + y * uy
            tol = self._rt_tol
            if (
                abs(x * uy - y * ux) > tol
                or along < trip.c_along - tol
                or t - trip.k_time >= self._rt_int
            ):
                kt = trip.c_time
                klat = trip.c_lat
                klon = trip.c_lon
                trip.route.append((kt, klat, klon))
                trip.k_time = kt
                trip.k_lat = klat
                trip.k_lon = klon
                trip.has_dir = False
                x = (lon - klon) * self._a_kx
                y = (lat - klat) * self._a_ky
            else:
                trip.c_along = along
        if not trip.has_dir:
            n2 = x * x + y * y
            if n2 >= self._rt_dir2:
                n = math.sqrt(n2)
                trip.ux = x / n
                trip.uy = y / n
                trip.c_along = n
                trip.has_dir = True
        trip.c_time = t
        trip.c_lat = lat
        trip.c_lon = lon
        if trip.first_step_s < 0.0 and t > trip.first_time:
            trip.first_step_s = (t - trip.first_time).total_seconds()
        trip.prev_time = trip.last_time
        trip.last_kmh = kmh
        trip.last_time = t
        trip.last_lat = lat
        trip.last_lon = lon
        trip.last_odo = self._unit_odo
        if not trip.confirmed:
            px = (lon - self._p_lon) * self._p_kx
            py = (lat - self._p_lat) * self._p_ky
            d2p = px * px + py * py
            if d2p > self._r2:
                trip.outside += 1
            trip.last_d2p = d2p

    # ------------------------------------------------------------ transitions

    def _begin(
        self,
        fix: Fix,
        t: datetime,
        lat: float,
        lon: float,
        kmh: float,
        events: list[TripEvent],
        jump: bool,
    ) -> None:
        """A departure run becomes a tentative trip."""
        pending = self._pending
        first = pending[0] if pending else fix
        ign = self._ign_on
        skip = 0
        if self._ignition and ign is not None and first.fix_time - ign[0] <= self._park:
            s_lat = self._p_lat if ign[1] is None else ign[1]
            s_lon = self._p_lon if ign[2] is None else ign[2]
            trip = _Progress(ign[0], s_lat, s_lon, ign[3])
            trip.from_ignition = True
            if ign[4] is not None:
                self._note_key(trip, ign[4])
        elif pending:
            trip = _Progress(first.fix_time, first.latitude, first.longitude, self._run_odo)
            skip = 1
        else:
            trip = _Progress(t, lat, lon, self._unit_odo)
            skip = -1
        self._trip = trip
        trip.p_seen = self._p_seen
        trip.p_seen_odo = self._p_seen_odo
        if skip == 1:
            trip.first_kmh = first.speed_kmh or 0.0
        elif skip == -1:
            trip.first_kmh = kmh
        if skip == 1:  # the start is the first pending fix: its own point, no distance
            trip.fixes += 1
            self._u_n -= 1
            self._commit(trip, first, first.latitude, first.longitude, 0.0)
            del pending[0]
        self._flush_pending(trip)
        trip.fixes += 1
        if skip == -1:
            self._commit(trip, fix, lat, lon, 0.0)
        else:
            step = 0.0 if jump else self._step_from_last(trip, lat, lon)
            self._commit(trip, fix, lat, lon, step)
        self._set_anchor(lat, lon, t, kmh < self._stop_kmh)
        self._maybe_confirm(trip, events)

    def _maybe_confirm(self, trip: _Progress, events: list[TripEvent]) -> None:
        ignition = self._ignition
        if ignition is False:
            return  # towed or on a ferry: nobody drives it
        if trip.outside < self.settings.confirm_fixes or trip.max_kmh < self._move_kmh:
            return
        if trip.last_d2p <= (self._r2 if ignition else self._dep_r2):
            return
        self._confirm(trip, events)

    def _confirm(self, trip: _Progress, events: list[TripEvent]) -> None:
        """The tentative trip is a trip: check odometer continuity, announce it."""
        tolerance = self.settings.odometer_tolerance_km
        reading = trip.start_odo
        if not trip.from_ignition:
            leg_km = self._departure_leg(trip) / 1000.0
            parked = trip.p_seen_odo
            # Leaving from its parked point, it starts at the parked reading; a larger
            # difference is movement nobody saw, for the odometer gap to show.
            if (
                reading is not None
                and parked is not None
                and 0.0 <= reading - parked <= leg_km + tolerance
            ):
                reading = parked
        last_end = self._last_end
        base = last_end[3] if last_end is not None else self._seed_km
        if reading is not None:
            trip.source = "unit"
            if base is not None and abs(reading - base) <= tolerance:
                start_km = base
            else:
                start_km = reading
                if base is not None:
                    events.append(self._gap_event(last_end, base, trip, reading, "unit"))
        else:
            trip.source = "gps"
            start_km = 0.0 if base is None else base
            if last_end is not None and last_end[1] is not None:
                chord_km = (
                    distance_m(last_end[1], last_end[2], trip.start_lat, trip.start_lon) / 1000.0
                )
                if chord_km > tolerance:
                    events.append(
                        self._gap_event(last_end, start_km, trip, start_km + chord_km, "gps")
                    )
                    start_km += chord_km
        trip.start_km = start_km
        trip.confirmed = True
        events.append(
            TripStarted(self._snapshot(trip, trip.last_time, trip.last_odo, "", self._last_time))
        )

    def _departure_leg(self, trip: _Progress) -> float:
        """Start a sparse unit's trip at its parked point, not where it was first seen.

        A unit that reports every minute or two is first seen moving up to a reporting
        interval after the vehicle left. When the first fix is beyond the stop radius
        but within one reporting interval (the time to the next fix, x1.5) at its speed
        from the parked point, the trip starts at the parked point, with that leg in its
        distance, at the estimated departure time (never before the vehicle was last
        seen parked). A farther first fix is a vehicle that moved unseen: it stays an
        odometer gap. Returns the length of the leg added (0 if none).
        """
        if trip.first_step_s <= 0.0:
            return 0.0
        d = distance_m(self._p_lat, self._p_lon, trip.start_lat, trip.start_lon)
        if d <= self.settings.stop_radius_m:
            return 0.0
        v = max(trip.first_kmh, self.settings.gap_speed_kmh) / 3.6
        if d > v * trip.first_step_s * 1.5:
            return 0.0
        left = trip.start_time - timedelta(seconds=round(d / v))  # an estimate: whole seconds
        if trip.p_seen is not None and left < trip.p_seen:
            left = trip.p_seen
        trip.start_time = left
        trip.start_lat = self._p_lat
        trip.start_lon = self._p_lon
        trip.gps_m += d
        trip.route.insert(0, (left, self._p_lat, self._p_lon))
        return d

    def _arrival_leg(self, fix: Fix, t: datetime, lat: float, lon: float, jump: float) -> bool:
        """End a sparse unit's trip where it parked, not at its last moving fix.

        The mirror of ``_departure_leg``: a unit that sleeps once parked sends its next
        fix long after arrival. If that fix is at rest and within one reporting interval
        (x1.5) at the last speed from the last moving fix, the vehicle drove on to it
        and parked there: it becomes the trip's last point, at the estimated arrival.
        """
        trip = self._trip
        kmh = fix.speed_kmh
        if not trip.confirmed or self._a_rest or self._pending:
            return False
        if kmh is not None and kmh >= self._stop_kmh:
            return False
        interval = (trip.last_time - trip.prev_time).total_seconds()
        v = max(trip.last_kmh, self.settings.gap_speed_kmh) / 3.6
        if interval <= 0.0 or jump > v * interval * 1.5:
            return False
        arrival = trip.last_time + timedelta(seconds=round(jump / v))  # an estimate
        if arrival > t:
            arrival = t
        trip.fixes += 1
        self._commit(trip, replace(fix, fix_time=arrival), lat, lon, jump)
        return True

    def _stay_ended(self, t: datetime, events: list[TripEvent]) -> None:
        """The current stop lasted ``parking_s``: the vehicle is parked at its anchor."""
        trip = self._trip
        self._pending.clear()
        self._u_n = self._u_inv = self._u_rej = 0
        if trip.confirmed:
            self._end(trip, trip.last_time, trip.last_odo, "parked", t, events)
            self._settle(trip.last_lat, trip.last_lon, trip.last_time, trip.last_time)
        else:
            self._settle(trip.last_lat, trip.last_lon, self._p_time, trip.last_time)
        if self._ignition:
            self._ign_on = None  # idled for a parking: the next trip starts when it moves

    def _vanish(self, t: datetime, events: list[TripEvent], reason: str) -> None:
        """The vehicle parked during a silence: end the trip at the last fix before it."""
        self._settle_held(events)
        trip = self._trip
        if trip is None:
            return
        if self._pending:
            self._flush_pending(trip)  # it was leaving the stop when it vanished
        else:
            self._u_n = self._u_inv = self._u_rej = 0
        if trip.confirmed:
            self._end(trip, trip.last_time, trip.last_odo, reason, t, events)
            self._settle(trip.last_lat, trip.last_lon, trip.last_time, trip.last_time)
        else:
            self._settle(trip.last_lat, trip.last_lon, self._p_time, trip.last_time)
        if self._ignition:
            self._ign_on = None

    def _ignition_off(self, t: datetime, events: list[TripEvent]) -> None:
        if self._trip is None:
            return
        self._settle_held(events)
        trip = self._trip
        if trip is None:
            return
        if self._pending or self._u_n:
            self._flush_pending(trip)
        if trip.confirmed:
            self._end(trip, t, self._unit_odo, "ignition_off", t, events)
            self._settle(trip.last_lat, trip.last_lon, t, t)
        else:
            self._settle(trip.last_lat, trip.last_lon, self._p_time, t)

    def _gap(self, fix: Fix, t: datetime, lat: float, lon: float, events: list[TripEvent]) -> None:
        """A valid fix after at least ``parking_s`` of silence: bridge, or park in the gap."""
        silence = (t - self._l_time).total_seconds()
        jump = distance_m(self._l_lat, self._l_lon, lat, lon)
        if (
            silence <= self.settings.gap_max_s
            and silence - jump / self._gap_mps < self.settings.parking_s
        ):
            return  # consistent with driving through it
        if self._held is None and self._arrival_leg(fix, t, lat, lon, jump):
            trip = self._trip
            self._end(trip, trip.last_time, self._unit_odo, "parked", t, events)
            self._settle(lat, lon, trip.last_time, trip.last_time)
            return
        self._vanish(t, events, "gap")

    def _quiet(self, lat: float, lon: float) -> None:
        """Parked and silent for ``parking_s``: an unfinished departure run is over.

        A fix held outside the parked point is where the vehicle went and parked during
        the silence if the fix after the silence is outside the parked point too.
        """
        self._pending.clear()
        self._u_n = self._u_inv = self._u_rej = 0
        held = self._held
        if held is None:
            return
        self._held = None
        kind = self._held_kind
        self._held_kind = 0
        ax = (lon - self._a_lon) * self._a_kx
        ay = (lat - self._a_lat) * self._a_ky
        if kind == 2 and ax * ax + ay * ay > self._r2:
            self._settle(held.latitude, held.longitude, self._p_time, held.fix_time)
            self._l_lat = held.latitude
            self._l_lon = held.longitude
            self._l_time = held.fix_time

    def _invalid(self, fix: Fix, t: datetime, events: list[TripEvent]) -> None:
        """An invalid fix: no position, but it counts and may carry odometer and driver."""
        if fix.odometer_km is not None:
            self._unit_odo = fix.odometer_km
        trip = self._trip
        if trip is None:
            if self._pending:
                self._u_n += 1
                self._u_inv += 1
            return
        if self._a_rest:
            self._u_n += 1
            self._u_inv += 1
        else:
            trip.fixes += 1
            trip.invalid += 1
        attributes = fix.attributes
        if attributes:
            key = attributes.get("driver_key")
            if key is not None and key != trip.key:
                self._note_key(trip, key)
        if t - self._l_time > self._gap_max:
            self._vanish(t, events, "gap")

    # ---------------------------------------------------------------- helpers

    def _hold(self, fix: Fix, kind: int) -> None:
        self._held = fix
        self._held_kind = kind

    def _reject(self) -> None:
        """Count a dropped outlier with the fixes around it."""
        trip = self._trip
        if trip is not None and not self._a_rest:
            trip.fixes += 1
            trip.rejected += 1
        elif trip is not None or self._pending:
            self._u_n += 1
            self._u_rej += 1

    def _resolve_held(
        self, fix: Fix, t: datetime, lat: float, lon: float, events: list[TripEvent]
    ) -> bool:
        """The next fix decides on the held one. True when ``fix`` is now held itself."""
        held = self._held
        kind = self._held_kind
        self._held = None
        self._held_kind = 0
        kx = self._a_kx
        ky = self._a_ky
        if kind == 2:
            ax = (lon - self._a_lon) * kx
            ay = (lat - self._a_lat) * ky
            if ax * ax + ay * ay <= self._r2:
                self._reject()  # back in the stop: the held fix was an outlier
            else:
                self._check(held, held.fix_time, held.latitude, held.longitude, events, True)
            return False
        # kind 1: the held fix was too far from L to be reached.
        vmax = self._vmax_mps
        step = distance_m(self._l_lat, self._l_lon, lat, lon)
        dt = (t - self._l_time).total_seconds()
        if step <= vmax * (dt if dt > 1.0 else 1.0):
            self._reject()
            return False
        step = distance_m(held.latitude, held.longitude, lat, lon)
        dt = (t - held.fix_time).total_seconds()
        if step <= vmax * (dt if dt > 1.0 else 1.0):
            self._reposition(held, events)  # the position really moved: L was wrong
            return False
        self._reject()
        self._hold(fix, 1)
        return True

    def _reposition(self, fix: Fix, events: list[TripEvent]) -> None:
        """Accept a confirmed jump as a new position, without adding its distance."""
        lat = fix.latitude
        lon = fix.longitude
        if self._trip is None:
            self._settle(lat, lon, self._p_time, fix.fix_time)
        kmh = fix.speed_kmh
        kx = self._a_kx
        ky = self._a_ky
        ax = (lon - self._a_lon) * kx
        ay = (lat - self._a_lat) * ky
        self._take(
            fix,
            fix.fix_time,
            lat,
            lon,
            0.0 if kmh is None else kmh,
            0.0,
            ax * ax + ay * ay,
            events,
            True,
        )

    def _settle_held(self, events: list[TripEvent]) -> None:
        """Before a trip is closed: accept a held fix if it was plausible, else drop it."""
        held = self._held
        if held is None:
            return
        kind = self._held_kind
        self._held = None
        self._held_kind = 0
        if kind == 2:
            self._check(held, held.fix_time, held.latitude, held.longitude, events, True)
        else:
            self._reject()

    def _flush_pending(self, trip: _Progress) -> None:
        """Commit the fixes of the stop being left, and count the stop's fixes."""
        pending = self._pending
        if pending:
            kx = self._a_kx
            ky = self._a_ky
            for f in pending:
                lat = f.latitude
                lon = f.longitude
                dx = (lon - trip.last_lon) * kx
                dy = (lat - trip.last_lat) * ky
                self._commit(trip, f, lat, lon, math.sqrt(dx * dx + dy * dy))
            pending.clear()
        trip.fixes += self._u_n
        trip.invalid += self._u_inv
        trip.rejected += self._u_rej
        self._u_n = self._u_inv = self._u_rej = 0

    def _step_from_last(self, trip: _Progress, lat: float, lon: float) -> float:
        dx = (lon - trip.last_lon) * self._a_kx
        dy = (lat - trip.last_lat) * self._a_ky
        step = math.sqrt(dx * dx + dy * dy)
        if step > _PRECISE_M:
            step = _geodesic_m(trip.last_lat, trip.last_lon, lat, lon)
        return step

    def _set_anchor(self, lat: float, lon: float, t: datetime, rest: bool) -> None:
        self._a_lat = lat
        self._a_lon = lon
        self._a_time = t
        self._a_rest = rest
        self._a_kx, self._a_ky = _scales(lat)

    def _settle(self, lat: float, lon: float, since: datetime | None, anchor_t: datetime) -> None:
        """Parked at (lat, lon): no trip, the stop anchor is the parked point."""
        self._trip = None
        self._pending.clear()
        self._u_n = self._u_inv = self._u_rej = 0
        self._p_lat = lat
        self._p_lon = lon
        self._p_time = since
        self._p_seen = anchor_t
        self._p_seen_odo = self._unit_odo
        self._set_anchor(lat, lon, anchor_t, True)
        self._p_kx = self._a_kx
        self._p_ky = self._a_ky

    def _note_key(self, trip: _Progress, key: Any) -> None:
        key = str(key)
        trip.key = key
        if key not in trip.keys:
            trip.keys.append(key)

    def _odometer_end(self, trip: _Progress, reading: float | None) -> tuple[float, float, str]:
        """End odometer, distance and their source for a trip whose last reading is ``reading``.

        A unit odometer that went backwards (unit replaced or reset) is not trusted for
        this trip: the GPS track length is used instead.
        """
        if trip.source == "unit" and reading is not None and reading >= trip.start_km:
            return reading, (reading - trip.start_km) * 1000.0, "unit"
        return trip.start_km + trip.gps_m / 1000.0, trip.gps_m, "gps"

    def _end(
        self,
        trip: _Progress,
        end_time: datetime,
        reading: float | None,
        reason: str,
        decided_at: datetime,
        events: list[TripEvent],
    ) -> None:
        snapshot = self._snapshot(trip, end_time, reading, reason, decided_at)
        self._last_end = (end_time, trip.last_lat, trip.last_lon, snapshot.end_odometer_km)
        events.append(TripEnded(snapshot))

    def _snapshot(
        self,
        trip: _Progress,
        end_time: datetime,
        reading: float | None,
        reason: str,
        decided_at: datetime | None,
    ) -> Trip:
        end_km, distance, source = self._odometer_end(trip, reading)
        route = trip.route.copy()
        if trip.c_time is not None:
            route.append((trip.c_time, trip.c_lat, trip.c_lon))
        return Trip(
            start_time=trip.start_time,
            start_lat=trip.start_lat,
            start_lon=trip.start_lon,
            start_odometer_km=trip.start_km,
            end_time=end_time,
            end_lat=trip.last_lat,
            end_lon=trip.last_lon,
            end_odometer_km=end_km,
            distance_m=distance,
            gps_distance_m=trip.gps_m,
            odometer_source=source,
            max_speed_kmh=trip.max_kmh,
            route=tuple(route),
            driver_keys=tuple(trip.keys),
            fix_count=trip.fixes,
            invalid_fix_count=trip.invalid,
            rejected_fix_count=trip.rejected,
            end_reason=reason,
            first_fix_time=trip.first_time,
            last_fix_time=decided_at if decided_at is not None else end_time,
        )

    def _gap_event(
        self,
        last_end: tuple[datetime | None, float | None, float | None, float] | None,
        from_km: float,
        trip: _Progress,
        to_km: float,
        source: str,
    ) -> OdometerGap:
        from_time, from_lat, from_lon = (None, None, None) if last_end is None else last_end[:3]
        return OdometerGap(
            from_time=from_time,
            from_lat=from_lat,
            from_lon=from_lon,
            from_km=from_km,
            to_time=trip.start_time,
            to_lat=trip.start_lat,
            to_lon=trip.start_lon,
            to_km=to_km,
            source=source,
        )

    # ---------------------------------------------------------- checkpointing

    def to_dict(self) -> dict[str, Any]:
        """The whole state, JSON-safe: restore with ``from_dict`` and feed on."""
        trip = self._trip
        ign = self._ign_on
        last_end = self._last_end
        return {
            "format": _FORMAT,
            "settings": _settings_dict(self.settings),
            "seed_km": self._seed_km,
            "last_time": _dt(self._last_time),
            "ignition": self._ignition,
            "ign_on": None if ign is None else [_dt(ign[0]), *ign[1:]],
            "unit_odo": self._unit_odo,
            "p": [
                self._p_lat,
                self._p_lon,
                _dt(self._p_time),
                _dt(self._p_seen),
                self._p_seen_odo,
            ],
            "a": [self._a_lat, self._a_lon, _dt(self._a_time), self._a_rest],
            "l": [self._l_lat, self._l_lon, _dt(self._l_time)],
            "pending": [_fix_to_dict(f) for f in self._pending],
            "run_odo": self._run_odo,
            "pend_kmh": self._pend_kmh,
            "u": [self._u_n, self._u_inv, self._u_rej],
            "held": None if self._held is None else _fix_to_dict(self._held),
            "held_kind": self._held_kind,
            "last_end": None if last_end is None else [_dt(last_end[0]), *last_end[1:]],
            "trip": None if trip is None else self._trip_to_dict(trip),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TripStateMachine:
        if data.get("format") != _FORMAT:
            raise ValueError(f"unknown trip state format {data.get('format')!r}")
        m = cls(TripSettings(**data["settings"]), odometer_km=data["seed_km"])
        m._last_time = _undt(data["last_time"])
        m._ignition = data["ignition"]
        ign = data["ign_on"]
        m._ign_on = None if ign is None else (_undt(ign[0]), *ign[1:])
        m._unit_odo = data["unit_odo"]
        p_lat, p_lon, p_time, p_seen, m._p_seen_odo = data["p"]
        m._p_lat = p_lat
        m._p_lon = p_lon
        m._p_time = _undt(p_time)
        m._p_seen = _undt(p_seen)
        if p_lat is not None:
            m._p_kx, m._p_ky = _scales(p_lat)
        a_lat, a_lon, a_time, a_rest = data["a"]
        m._a_time = _undt(a_time)
        if a_time is not None:
            m._set_anchor(a_lat, a_lon, m._a_time, a_rest)
        m._l_lat, m._l_lon, l_time = data["l"]
        m._l_time = _undt(l_time)
        m._pending = [_fix_from_dict(f) for f in data["pending"]]
        m._run_odo = data["run_odo"]
        m._pend_kmh = data["pend_kmh"]
        m._u_n, m._u_inv, m._u_rej = data["u"]
        m._held = None if data["held"] is None else _fix_from_dict(data["held"])
        m._held_kind = data["held_kind"]
        last_end = data["last_end"]
        m._last_end = None if last_end is None else (_undt(last_end[0]), *last_end[1:])
        m._trip = None if data["trip"] is None else cls._trip_from_dict(data["trip"])
        return m

    @staticmethod
    def _trip_to_dict(trip: _Progress) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in _Progress.__slots__:
            value = getattr(trip, name)
            if isinstance(value, datetime):
                value = {"dt": value.isoformat()}
            elif name == "route":
                value = [[t.isoformat(), lat, lon] for t, lat, lon in value]
            elif name == "keys":
                value = list(value)
            out[name] = value
        return out

    @staticmethod
    def _trip_from_dict(data: dict[str, Any]) -> _Progress:
        trip = _Progress.__new__(_Progress)
        for name in _Progress.__slots__:
            value = data[name]
            if isinstance(value, dict):
                value = datetime.fromisoformat(value["dt"])
            elif name == "route":
                value = [(datetime.fromisoformat(t), lat, lon) for t, lat, lon in value]
            elif name == "keys":
                value = list(value)
            setattr(trip, name, value)
        return trip
