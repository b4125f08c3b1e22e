"""Trip derivation from fixes: a real urban drive, and the edge cases a logbook must survive.

Pure tests: no Django, no database. The real drive is parsed here with pynmea2 (not with
the platform's NMEA decoder) so these tests depend on nothing but the state machine.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pynmea2
import pytest
from geopy.distance import geodesic

from logbook.tripstate import (
    OdometerGap,
    OutOfOrderFix,
    Trip,
    TripEnded,
    TripSettings,
    TripStarted,
    TripStateMachine,
    VehicleState,
    distance_m,
)
from telematics.protocols.base import Fix

DATA = Path(__file__).resolve().parent.parent / "data" / "nmea"
JOSM = DATA / "josm-1433-drive-2008-08-14.nmea"
SETTINGS = TripSettings()
T0 = datetime(2024, 5, 6, 7, 0, tzinfo=UTC)
LAT0 = 48.2
LON0 = 16.37
M_LAT = 111_200.0  # metres per degree, close enough to build scenarios
M_LON = M_LAT * math.cos(math.radians(LAT0))


# --------------------------------------------------------------------------- helpers


def josm_fixes() -> list[Fix]:
    """The RMC sentences of the JOSM drive as fixes (RMC carries time, date, speed, status)."""
    fixes = []
    for line in JOSM.read_text(encoding="ascii").splitlines():
        if not line.startswith("$GPRMC"):
            continue
        rmc = pynmea2.parse(line)
        fixes.append(
            Fix(
                fix_time=datetime.combine(rmc.datestamp, rmc.timestamp).replace(tzinfo=UTC),
                latitude=rmc.latitude,
                longitude=rmc.longitude,
                speed_kmh=rmc.spd_over_grnd * 1.852,
                course=rmc.true_course,
                valid=rmc.status == "A",
            )
        )
    return fixes


def geodesic_length(fixes: list[Fix]) -> float:
    return sum(
        geodesic((a.latitude, a.longitude), (b.latitude, b.longitude)).meters
        for a, b in pairwise(fixes)
    )


class Script:
    """One vehicle's fixes, written as a story: park, drive, stop at a light, vanish..."""

    def __init__(
        self,
        *,
        ignition: bool | None = None,
        odometer_km: float | None = None,
        with_speed: bool = True,
        seed: int = 7,
    ) -> None:
        self.t = T0
        self.x = 0.0  # metres east of LAT0/LON0
        self.y = 0.0  # metres north
        self.heading = 90.0  # degrees clockwise from north
        self.ignition = ignition
        self.odometer_km = odometer_km
        self.with_speed = with_speed
        self.driver_key: str | None = None
        self.rng = random.Random(seed)
        self.fixes: list[Fix] = []

    def emit(self, kmh: float, dx: float = 0.0, dy: float = 0.0, valid: bool = True) -> Fix:
        fix = Fix(
            fix_time=self.t,
            latitude=LAT0 + (self.y + dy) / M_LAT,
            longitude=LON0 + (self.x + dx) / M_LON,
            speed_kmh=kmh if self.with_speed else None,
            valid=valid,
            ignition=self.ignition,
            odometer_km=None if self.odometer_km is None else round(self.odometer_km, 3),
            attributes={} if self.driver_key is None else {"driver_key": self.driver_key},
        )
        self.fixes.append(fix)
        return fix

    def tick(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)

    def park(self, seconds: float, every: float = 30.0, outlier_every: int = 0) -> None:
        """Parked: drift of tens of metres, speed noise of a few km/h, rare outliers."""
        rng = self.rng
        dx = dy = 0.0
        for i in range(int(seconds // every)):
            self.tick(every)
            dx = 0.85 * dx + rng.gauss(0, 6)
            dy = 0.85 * dy + rng.gauss(0, 6)
            if outlier_every and i % outlier_every == outlier_every - 1:
                angle = rng.uniform(0, 2 * math.pi)
                r = rng.uniform(200, 500)
                self.emit(rng.uniform(0, 4), r * math.cos(angle), r * math.sin(angle))
            else:
                self.emit(rng.uniform(0, 4), dx, dy)

    def wait(self, seconds: float, every: float = 1.0) -> None:
        """Standing in traffic or at a light: metre-level jitter, speed 0-2 km/h."""
        rng = self.rng
        for _ in range(int(seconds // every)):
            self.tick(every)
            self.emit(rng.uniform(0, 2), rng.gauss(0, 1), rng.gauss(0, 1))

    def drive(self, metres: float, kmh: float, every: float = 1.0, turn: float = 0.0) -> None:
        """Drive straight (or turning ``turn`` degrees per fix) at a steady speed."""
        step = kmh / 3.6 * every
        for _ in range(max(1, round(metres / step))):
            self.tick(every)
            self.heading += turn
            self.move(step)
            self.emit(kmh)

    def move(self, metres: float) -> None:
        self.x += metres * math.sin(math.radians(self.heading))
        self.y += metres * math.cos(math.radians(self.heading))
        if self.odometer_km is not None:
            self.odometer_km += metres / 1000.0

    def vanish(self, seconds: float, metres: float = 0.0) -> None:
        """No fixes for ``seconds`` while the vehicle covers ``metres`` along its heading."""
        self.tick(seconds)
        self.move(metres)

    def switch(self, on: bool) -> Fix:
        self.ignition = on
        self.tick(1)
        return self.emit(0.0)


def run(
    fixes: list[Fix], machine: TripStateMachine | None = None, finish: bool = True
) -> tuple[list, TripStateMachine]:
    """Feed every fix; with ``finish``, tell the machine the vehicle then went silent."""
    machine = machine or TripStateMachine()
    events = []
    for fix in fixes:
        events.extend(machine.feed(fix))
    if finish:
        events.extend(machine.finish(fixes[-1].fix_time + timedelta(hours=1)))
    return events, machine


def ended(events: list) -> list[Trip]:
    return [e.trip for e in events if isinstance(e, TripEnded)]


def started(events: list) -> list[Trip]:
    return [e.trip for e in events if isinstance(e, TripStarted)]


def first_fix_after(fixes: list[Fix], t: datetime) -> Fix:
    return next(f for f in fixes if f.fix_time > t)


# ------------------------------------------------------------------- the real drive


def test_josm_drive_with_eleven_short_stops_is_one_trip():
    fixes = josm_fixes()
    assert len(fixes) == 1241
    machine = TripStateMachine()
    events = []
    for fix in fixes:
        events.extend(machine.feed(fix))
    # The file ends 20 s after the vehicle stopped: the trip is still open...
    assert [type(e) for e in events] == [TripStarted]
    assert machine.state is VehicleState.DRIVING
    assert machine.flush() == []
    # ...until the vehicle has been silent at rest for the parking duration.
    events.extend(machine.finish(fixes[-1].fix_time + timedelta(seconds=SETTINGS.parking_s)))
    trips = ended(events)
    assert len(trips) == 1 and len(events) == 2
    trip = trips[0]
    assert machine.state is VehicleState.PARKED

    # Start: the first fix of the uninterrupted run at or above stop_speed_kmh in which
    # the vehicle reached moving_speed_kmh and left its parked point. (At 15:08:39-50 it
    # crept 20 m out of its space below moving speed and waited 37 s: not yet a trip.)
    speeds = [f.speed_kmh for f in fixes]
    first_moving = next(i for i, v in enumerate(speeds) if v >= SETTINGS.moving_speed_kmh)
    start = first_moving
    while speeds[start - 1] >= SETTINGS.stop_speed_kmh:
        start -= 1
    assert trip.start_time == fixes[start].fix_time == datetime(2008, 8, 14, 15, 9, 28, tzinfo=UTC)
    assert (trip.start_lat, trip.start_lon) == (fixes[start].latitude, fixes[start].longitude)
    # End: the first fix at rest after the last fix at or above stop_speed_kmh.
    last_moving = max(i for i, v in enumerate(speeds) if v >= SETTINGS.stop_speed_kmh)
    end = last_moving + 1
    assert trip.end_time == fixes[end].fix_time == datetime(2008, 8, 14, 15, 26, 11, tzinfo=UTC)
    assert (trip.end_lat, trip.end_lon) == (fixes[end].latitude, fixes[end].longitude)
    assert trip.end_reason == "parked"
    assert trip.first_fix_time == trip.start_time
    assert trip.last_fix_time == fixes[-1].fix_time + timedelta(seconds=SETTINGS.parking_s)

    assert round(trip.max_speed_kmh, 1) == 61.2
    # Distance: the geodesic length of every fix from start to end (geopy) is 7241 m; it
    # includes 1 Hz position noise and the jitter of the stops, which the machine
    # filters out, so it is an upper bound; the trip is within 1 % of it (7208 m,
    # -0.46 %). Against the geodesic path through the moving fixes only (speed >= 5
    # km/h) it is within 0.2 % (-0.08 %).
    raw = geodesic_length(fixes[start : end + 1])
    assert raw * 0.99 <= trip.distance_m <= raw + 0.01
    moving_only = [f for f in fixes[start:end] if f.speed_kmh >= SETTINGS.stop_speed_kmh]
    moving = geodesic_length([*moving_only, fixes[end]])
    assert abs(trip.distance_m - moving) / moving < 0.002
    assert trip.gps_distance_m == trip.distance_m and trip.odometer_source == "gps"
    assert trip.start_odometer_km == 0.0
    assert trip.end_odometer_km == pytest.approx(trip.distance_m / 1000)
    assert trip.duration_s == 16 * 60 + 43
    assert trip.average_speed_kmh == pytest.approx(trip.distance_m / trip.duration_s * 3.6)

    assert trip.fix_count == end - start + 1
    assert trip.invalid_fix_count == trip.rejected_fix_count == 0
    assert trip.driver_keys == () and trip.driver_key is None
    # The route is thinned but runs from the start to the end, in time order.
    route = trip.route
    assert route[0] == (trip.start_time, trip.start_lat, trip.start_lon)
    assert route[-1] == (trip.end_time, trip.end_lat, trip.end_lon)
    assert 20 < len(route) < (end - start) / 10
    assert all(a[0] < b[0] for a, b in pairwise(route))
    assert all(b[0] - a[0] <= timedelta(seconds=70) for a, b in pairwise(route))


def test_josm_trip_started_event_is_backdated_and_announced_once_confirmed():
    fixes = josm_fixes()
    machine = TripStateMachine()
    for fix in fixes:
        events = machine.feed(fix)
        if events:
            break
    (event,) = events
    trip = event.trip
    assert isinstance(event, TripStarted)
    assert trip.start_time == datetime(2008, 8, 14, 15, 9, 28, tzinfo=UTC)
    assert trip.end_reason == ""
    # Announced when the vehicle was more than depart_radius_m from where it was parked.
    assert distance_m(fixes[0].latitude, fixes[0].longitude, trip.end_lat, trip.end_lon) > 200
    assert trip.last_fix_time == fix.fix_time
    assert machine.driving_since == trip.start_time
    current = machine.current_trip()
    assert current is not None and current.start_time == trip.start_time


def test_josm_resumes_from_a_checkpoint_at_every_fix_with_identical_output():
    fixes = josm_fixes()
    at = fixes[-1].fix_time + timedelta(seconds=SETTINGS.parking_s)
    reference, _ = run(fixes, finish=False)
    reference += _.finish(at)
    for cut in range(len(fixes) + 1):
        machine = TripStateMachine()
        events = []
        for fix in fixes[:cut]:
            events.extend(machine.feed(fix))
        machine = TripStateMachine.from_dict(json.loads(json.dumps(machine.to_dict())))
        for fix in fixes[cut:]:
            events.extend(machine.feed(fix))
        events.extend(machine.finish(at))
        assert events == reference, f"differs when resumed at fix {cut}"


# ------------------------------------------------------------------- parked vehicles


@pytest.mark.parametrize("ignition", [None, False, True])
def test_drift_while_parked_for_hours_makes_no_trip(ignition):
    # Drift of tens of metres, speed noise up to 4 km/h, a single outlier of 200-500 m
    # every 20 fixes; ignition True is a unit whose ignition wire is stuck on.
    script = Script(ignition=ignition, seed=11)
    script.emit(0.0)
    script.park(8 * 3600, every=10, outlier_every=20)
    script.park(3600, every=1, outlier_every=97)
    events, machine = run(script.fixes)
    assert events == []
    assert machine.state is VehicleState.PARKED
    assert machine.parked_since == T0


def test_departure_after_a_drifting_night_starts_at_the_first_moving_fix():
    script = Script(seed=3)
    script.emit(0.0)
    script.park(10 * 3600, every=60, outlier_every=13)
    script.wait(5)
    script.drive(3000, 50)
    first_moving = script.fixes[-round(3000 / (50 / 3.6))]
    script.wait(400)
    events, _ = run(script.fixes)
    (trip,) = ended(events)
    assert trip.start_time == first_moving.fix_time
    assert trip.distance_m == pytest.approx(3000, rel=0.01)


# ------------------------------------------------------------------- stops and gaps


def test_short_stop_at_a_light_does_not_split_the_trip():
    script = Script()
    script.emit(0.0)
    script.park(600)
    script.wait(3)
    script.drive(1000, 40)
    script.wait(110)  # red light: jitter of a metre, speed noise up to 2 km/h
    script.drive(1000, 40, turn=0.5)
    script.wait(400)
    events, _ = run(script.fixes)
    assert [type(e) for e in events] == [TripStarted, TripEnded]
    (trip,) = ended(events)
    assert trip.distance_m == pytest.approx(2000, rel=0.01)
    assert trip.end_reason == "parked"


@pytest.mark.parametrize(("standstill", "trips"), [(290, 1), (310, 2)])
def test_a_standstill_splits_the_trip_only_from_the_parking_duration(standstill, trips):
    script = Script()
    script.emit(0.0)
    script.drive(2000, 50)
    script.wait(standstill)
    script.drive(2000, 50)
    script.wait(400)
    events, _ = run(script.fixes)
    assert len(ended(events)) == trips


def test_tunnel_gap_of_three_minutes_is_bridged():
    script = Script()
    script.emit(0.0)
    script.park(600)
    script.drive(3000, 50)
    script.vanish(180, 2000)  # 40 km/h average through the tunnel
    script.drive(2000, 50)
    script.wait(400)
    events, _ = run(script.fixes)
    (trip,) = ended(events)
    assert len(events) == 2
    assert trip.distance_m == pytest.approx(7000, rel=0.01)
    assert trip.end_reason == "parked"


def test_gap_of_two_hours_reappearing_30_km_away_splits_the_trip():
    script = Script(seed=5)
    script.emit(0.0)
    script.park(600)
    script.drive(5000, 60)
    vanished = script.fixes[-1]
    script.vanish(2 * 3600, 30_000)
    script.drive(5000, 60)
    reappeared = first_fix_after(script.fixes, vanished.fix_time)
    script.wait(400)
    events, _ = run(script.fixes)
    assert [type(e) for e in events] == [
        TripStarted,
        TripEnded,
        OdometerGap,
        TripStarted,
        TripEnded,
    ]
    first, second = ended(events)
    gap = events[2]
    assert first.end_time == vanished.fix_time and first.end_reason == "gap"
    assert first.last_fix_time == reappeared.fix_time  # decided when it reappeared
    assert second.start_time == reappeared.fix_time
    assert first.distance_m == pytest.approx(5000, rel=0.01)
    assert second.distance_m == pytest.approx(5000, rel=0.01)
    # The unseen 30 km: a GPS odometer reports the straight line, a lower bound.
    chord = geodesic(
        (vanished.latitude, vanished.longitude), (reappeared.latitude, reappeared.longitude)
    )
    assert gap.source == "gps"
    assert gap.km == pytest.approx(chord.km)
    assert gap.from_km == first.end_odometer_km and gap.from_time == first.end_time
    assert gap.to_km == second.start_odometer_km and gap.to_time == second.start_time
    assert second.end_odometer_km == pytest.approx(second.start_odometer_km + 5.0, abs=0.05)


def test_reappearing_where_it_vanished_after_an_hour_ends_the_trip_at_the_entrance():
    # Underground car park without ignition: the vehicle parked out of sight.
    script = Script()
    script.emit(0.0)
    script.drive(3000, 50)
    entrance = script.fixes[-1]
    script.vanish(3600, 40)
    script.drive(3000, 50)
    script.wait(400)
    events, _ = run(script.fixes)
    first, second = ended(events)
    assert first.end_time == entrance.fix_time
    assert not any(isinstance(e, OdometerGap) for e in events)
    assert second.start_odometer_km == first.end_odometer_km


def test_silence_of_six_minutes_with_little_progress_is_a_parking():
    script = Script()
    script.emit(0.0)
    script.drive(3000, 50)
    vanished = script.fixes[-1]
    script.vanish(360, 300)  # 3 km/h average: it stood somewhere
    script.drive(3000, 50)
    script.wait(400)
    events, _ = run(script.fixes)
    first, _second = ended(events)
    assert first.end_time == vanished.fix_time


def test_single_outlier_during_a_drive_is_dropped():
    clean = Script()
    clean.emit(0.0)
    clean.drive(3000, 50)
    clean.wait(400)
    noisy = Script()
    noisy.emit(0.0)
    noisy.drive(1500, 50)
    noisy.tick(1)
    noisy.emit(50, dx=0.0, dy=400.0)  # 400 m off the road
    noisy.drive(1500, 50)
    noisy.wait(400)
    (reference,) = ended(run(clean.fixes)[0])
    (trip,) = ended(run(noisy.fixes)[0])
    assert trip.rejected_fix_count == 1
    assert trip.distance_m == pytest.approx(reference.distance_m, abs=20)


def test_sparse_reporting_unit_trips_run_from_parking_to_parking():
    # A unit that reports every 2 min driving and every 30 min parked: it is first seen
    # moving 2 km from home, and next seen 30 min after it parked.
    script = Script()
    home = script.emit(0.0)
    script.park(6 * 3600, every=1800)
    last_at_home = script.fixes[-1]
    script.drive(20_000, 60, every=120)
    first_moving = first_fix_after(script.fixes, last_at_home.fix_time)
    last_moving = script.fixes[-1]
    script.vanish(1800, 1000)  # 1 km more, then parked while the unit slept
    script.wait(3600, every=1800)
    parked = first_fix_after(script.fixes, last_moving.fix_time)
    script.drive(20_000, 60, every=120)
    script.wait(3600, every=1800)
    events, _ = run(script.fixes)
    trips = ended(events)
    assert len(trips) == 2
    assert not any(isinstance(e, OdometerGap) for e in events)
    trip = trips[0]
    # From home (2 km = one 2-min interval at 60 km/h before the first fix)...
    assert (trip.start_lat, trip.start_lon) == (home.latitude, home.longitude)
    assert trip.start_time == first_moving.fix_time - timedelta(minutes=2)
    assert trip.start_time >= last_at_home.fix_time
    assert trip.first_fix_time == first_moving.fix_time
    # ...to where it parked, 1 km (1 min at 60 km/h) after the last moving fix.
    assert (trip.end_lat, trip.end_lon) == (parked.latitude, parked.longitude)
    assert trip.end_time == last_moving.fix_time + timedelta(minutes=1)
    assert trip.distance_m == pytest.approx(21_000, rel=0.01)
    assert trips[1].start_odometer_km == trip.end_odometer_km


# ---------------------------------------------------------------------------- ignition


def test_ignition_on_without_movement_is_idling_not_a_trip():
    script = Script(ignition=False, seed=2)
    script.emit(0.0)
    script.park(3600)
    script.switch(True)
    script.park(20 * 60, every=5)  # engine running, drift and speed noise
    script.switch(False)
    script.park(3600)
    events, _ = run(script.fixes)
    assert events == []


def test_ignition_on_with_a_manoeuvre_inside_the_stop_radius_is_not_a_trip():
    script = Script(ignition=False)
    script.emit(0.0)
    script.switch(True)
    script.drive(60, 8)
    script.switch(False)
    script.park(3600)
    events, _ = run(script.fixes)
    assert events == []


def test_ignition_trip_runs_from_ignition_on_to_ignition_off():
    script = Script(ignition=False, odometer_km=42_000.0)
    script.emit(0.0)
    script.park(3600)
    on = script.switch(True)
    script.wait(60)  # warming up, buckling up
    script.drive(4000, 50)
    script.wait(30)
    off = script.switch(False)
    script.park(3600)
    events, machine = run(script.fixes)
    assert [type(e) for e in events] == [TripStarted, TripEnded]
    (trip,) = ended(events)
    assert trip.start_time == on.fix_time
    assert trip.end_time == off.fix_time
    assert trip.end_reason == "ignition_off"
    assert trip.last_fix_time == off.fix_time  # ended at once: the unit may sleep now
    assert trip.odometer_source == "unit"
    assert trip.start_odometer_km == 42_000.0
    assert trip.end_odometer_km == pytest.approx(42_004.0, abs=0.01)
    assert trip.distance_m == pytest.approx(4000, abs=10)
    assert trip.gps_distance_m == pytest.approx(4000, rel=0.01)
    assert machine.parked_since == off.fix_time


def test_idling_at_the_destination_ends_the_trip_and_the_next_one_starts_moving():
    script = Script(ignition=False)
    script.emit(0.0)
    script.switch(True)
    script.drive(3000, 50)
    arrived = script.fixes[-1]
    script.wait(10 * 60)  # engine left running at the destination
    script.drive(3000, 50)
    departed = script.fixes[-round(3000 / (50 / 3.6))]
    script.wait(30)
    script.switch(False)
    events, _ = run(script.fixes)
    first, second = ended(events)
    assert first.end_reason == "parked"
    assert first.end_time == first_fix_after(script.fixes, arrived.fix_time).fix_time
    assert second.start_time == departed.fix_time
    assert second.end_reason == "ignition_off"


def test_moving_with_ignition_off_is_towing_not_a_trip():
    script = Script(ignition=False)
    script.emit(0.0)
    script.drive(2000, 30)
    script.park(3600)
    events, machine = run(script.fixes)
    assert events == []
    assert machine.state is VehicleState.PARKED


def test_invalid_fixes_carry_ignition_but_no_movement():
    script = Script(ignition=False)
    script.emit(0.0)
    script.switch(True)
    script.drive(3000, 50)
    for _ in range(20):  # into a car park: no GPS, position garbage
        script.tick(1)
        script.emit(0.0, dx=50_000, dy=50_000, valid=False)
    script.ignition = False
    script.tick(1)
    off = script.emit(0.0, dx=50_000, dy=50_000, valid=False)
    events, _ = run(script.fixes, finish=False)
    (trip,) = ended(events)
    assert trip.end_time == off.fix_time and trip.end_reason == "ignition_off"
    assert trip.distance_m == pytest.approx(3000, rel=0.01)
    assert trip.invalid_fix_count == 21
    assert abs(trip.end_lat - LAT0) < 0.01  # the last valid position


def test_ignition_on_at_an_invalid_fix_starts_the_trip_at_the_parked_point():
    script = Script(ignition=False)
    start = script.emit(0.0)
    script.park(600)
    script.ignition = True
    script.tick(1)
    on = script.emit(0.0, valid=False)
    script.drive(3000, 50)
    script.switch(False)
    (trip,) = ended(run(script.fixes)[0])
    assert trip.start_time == on.fix_time
    assert (trip.start_lat, trip.start_lon) == (start.latitude, start.longitude)


# ------------------------------------------------------------------ units without ignition


def test_unit_without_ignition_starts_on_leaving_and_ends_on_parking():
    script = Script()
    script.emit(0.0)
    script.park(3600)
    script.wait(5)
    script.drive(3000, 50, turn=0.3)
    first_moving = script.fixes[-round(3000 / (50 / 3.6))]
    script.wait(400)
    arrived = first_fix_after(script.fixes, first_moving.fix_time + timedelta(seconds=215))
    events, machine = run(script.fixes, finish=False)
    trip = started(events)[0]
    assert trip.start_time == first_moving.fix_time
    (trip,) = ended(events)
    assert trip.end_time == arrived.fix_time
    assert trip.end_reason == "parked"
    # Decided once the vehicle had been at rest for parking_s.
    assert trip.last_fix_time == arrived.fix_time + timedelta(seconds=SETTINGS.parking_s)
    assert machine.state is VehicleState.PARKED


def test_unit_without_speed_derives_trips_from_positions():
    script = Script(with_speed=False)
    script.emit(0.0)
    script.park(3 * 3600, every=10, outlier_every=31)
    script.drive(3000, 50)
    script.wait(400)
    events, _ = run(script.fixes)
    (trip,) = ended(events)
    assert trip.distance_m == pytest.approx(3000, rel=0.02)
    assert 40 < trip.max_speed_kmh < 60


def test_two_trips_in_a_day_are_continuous_on_the_gps_odometer():
    script = Script()
    script.emit(0.0)
    script.park(3600)
    script.drive(5000, 50)
    script.wait(2 * 3600)
    script.heading += 180
    script.drive(5000, 50)
    script.wait(3600)
    events, _ = run(script.fixes, TripStateMachine(odometer_km=12_345.0))
    first, second = ended(events)
    assert not any(isinstance(e, OdometerGap) for e in events)
    assert first.start_odometer_km == 12_345.0
    assert first.end_odometer_km == pytest.approx(12_350.0, abs=0.05)
    assert second.start_odometer_km == first.end_odometer_km
    assert second.end_odometer_km == second.start_odometer_km + second.distance_m / 1000
    assert second.start_time - first.end_time > timedelta(hours=1)


def test_unit_odometer_continuity_and_an_explicit_gap():
    script = Script(odometer_km=50_000.0)
    script.emit(0.0)
    script.drive(5000, 50)
    script.wait(600)
    script.odometer_km += 0.3  # a parking manoeuvre that was not a trip
    script.drive(5000, 50)
    script.wait(600)
    script.odometer_km += 95.0  # unit unplugged for a drive
    script.wait(60)  # plugged in again, it reports at rest before the next drive
    script.drive(5000, 50)
    script.wait(600)
    events, _ = run(script.fixes, TripStateMachine(odometer_km=50_000.0))
    assert [type(e).__name__ for e in events] == [
        "TripStarted",
        "TripEnded",
        "TripStarted",
        "TripEnded",
        "OdometerGap",
        "TripStarted",
        "TripEnded",
    ]
    first, second, third = ended(events)
    gap = events[4]
    assert first.start_odometer_km == 50_000.0
    # Agreeing readings: the next trip starts at the previous end, the 0.3 km are
    # absorbed into it.
    assert second.start_odometer_km == first.end_odometer_km
    assert second.distance_m == pytest.approx(5300, abs=5)
    # Disagreeing readings: an explainable entry with both readings.
    assert gap.source == "unit"
    assert gap.from_km == second.end_odometer_km and gap.to_km == third.start_odometer_km
    assert gap.km == pytest.approx(95.0, abs=0.001)
    assert third.distance_m == pytest.approx(5000, abs=5)
    assert all(t.odometer_source == "unit" for t in (first, second, third))


def test_seeded_odometer_disagreeing_with_the_unit_is_a_gap_before_the_first_trip():
    script = Script(odometer_km=50_010.0)
    script.emit(0.0)
    script.drive(3000, 50)
    script.wait(400)
    events, _ = run(script.fixes, TripStateMachine(odometer_km=50_000.0))
    gap = events[0]
    assert isinstance(gap, OdometerGap)
    assert gap.from_time is None and gap.from_lat is None
    assert gap.from_km == 50_000.0 and gap.to_km == 50_010.0
    assert events[1].trip.start_odometer_km == 50_010.0


def test_odometer_jump_first_seen_at_a_moving_fix_is_a_gap_up_to_that_fix():
    # Nothing reported at rest after the jump: the reading of the first moving fix,
    # 14 m (1 s at 50 km/h) after the start, is the best known start reading.
    script = Script(odometer_km=50_000.0)
    script.emit(0.0)
    script.odometer_km += 10.0
    script.drive(3000, 50)
    script.wait(400)
    events, _ = run(script.fixes, TripStateMachine(odometer_km=50_000.0))
    gap = events[0]
    assert isinstance(gap, OdometerGap)
    assert gap.to_km == pytest.approx(50_010.014, abs=0.001)
    assert ended(events)[0].distance_m == pytest.approx(3000 - 14, abs=2)


def test_driver_keys_seen_during_the_trip():
    script = Script()
    script.emit(0.0)
    script.driver_key = "0000DEADBEEF"
    script.drive(3000, 50)
    script.driver_key = "0000CAFEF00D"
    script.drive(1000, 50)
    script.wait(400)
    (trip,) = ended(run(script.fixes)[0])
    assert trip.driver_keys == ("0000DEADBEEF", "0000CAFEF00D")
    assert trip.driver_key == "0000DEADBEEF"


# ------------------------------------------------------------------ protocol of the machine


def test_out_of_order_fix_raises_and_same_time_is_accepted():
    script = Script()
    script.emit(0.0)
    script.drive(1000, 50)
    machine = TripStateMachine()
    for fix in script.fixes:
        machine.feed(fix)
    last = script.fixes[-1]
    machine.feed(replace(last, ignition=True))  # an event record with the same time
    with pytest.raises(OutOfOrderFix):
        machine.feed(replace(last, fix_time=last.fix_time - timedelta(seconds=1)))


def test_flush_keeps_the_trip_open_and_finish_ends_it_when_due():
    script = Script()
    script.emit(0.0)
    script.drive(3000, 50)
    last = script.fixes[-1]
    machine = TripStateMachine()
    for fix in script.fixes:
        machine.feed(fix)
    assert machine.flush() == []
    assert machine.state is VehicleState.DRIVING
    assert machine.finish(last.fix_time + timedelta(seconds=120)) == []
    (event,) = machine.finish(last.fix_time + timedelta(seconds=300))
    assert event.trip.end_time == last.fix_time and event.trip.end_reason == "silent"
    with pytest.raises(OutOfOrderFix):
        machine.feed(replace(last, fix_time=last.fix_time + timedelta(seconds=200)))


def test_mid_trip_checkpoint_restores_to_identical_output():
    # A day with everything: ignition, unit odometer, driver key, a light, a tunnel,
    # outliers, invalid fixes, a gap that splits, idling. Checkpoint after every fix.
    script = Script(ignition=False, odometer_km=7_000.0, seed=9)
    script.emit(0.0)
    script.park(1800, outlier_every=7)
    script.driver_key = "0000AB12"
    script.switch(True)
    script.drive(2000, 40)
    script.wait(60)
    script.drive(1000, 30, turn=2.0)
    script.tick(1)
    script.emit(30, dy=350)  # outlier
    script.drive(1500, 60)
    script.vanish(120, 1500)
    for _ in range(5):
        script.tick(1)
        script.emit(0.0, valid=False)
    script.drive(2000, 50)
    script.switch(False)
    script.park(1200, outlier_every=5)
    script.switch(True)
    script.drive(3000, 70, every=5)
    script.vanish(3 * 3600, 40_000)
    script.drive(2000, 70, every=5)
    script.wait(420)
    script.switch(False)
    fixes = script.fixes
    at = fixes[-1].fix_time + timedelta(hours=1)
    reference, machine = run(fixes, TripStateMachine(odometer_km=7_000.0), finish=False)
    reference += machine.finish(at)
    assert [type(e) for e in reference].count(TripEnded) == 3
    for cut in range(len(fixes) + 1):
        machine = TripStateMachine(odometer_km=7_000.0)
        events = []
        for fix in fixes[:cut]:
            events.extend(machine.feed(fix))
        machine = TripStateMachine.from_dict(json.loads(json.dumps(machine.to_dict())))
        for fix in fixes[cut:]:
            events.extend(machine.feed(fix))
        events.extend(machine.finish(at))
        assert events == reference, f"differs when resumed at fix {cut}"


def test_replaying_from_the_checkpoint_before_a_late_fix():
    # How a caller re-derives when a fix arrives late: restore the checkpoint saved at
    # the last TripEnded before the late fix, re-feed the stored fixes in order.
    script = Script()
    script.emit(0.0)
    script.drive(3000, 50)
    script.wait(400)
    script.drive(3000, 50)
    script.wait(400)
    fixes = script.fixes
    late = fixes.pop(len(fixes) - 300)  # a fix from the second trip arrives last
    machine = TripStateMachine()
    checkpoints = [(None, machine.to_dict())]
    for fix in fixes:
        for event in machine.feed(fix):
            if isinstance(event, TripEnded):
                checkpoints.append((event.trip.last_fix_time, machine.to_dict()))
    with pytest.raises(OutOfOrderFix):
        machine.feed(late)
    _, state = [c for c in checkpoints if c[0] is None or c[0] < late.fix_time][-1]
    machine = TripStateMachine.from_dict(state)
    replay = sorted(
        [f for f in fixes if f.fix_time > (machine.last_fix_time or T0)] + [late],
        key=lambda f: f.fix_time,
    )
    events, _ = run(replay, machine)
    complete, _ = run(sorted([*fixes, late], key=lambda f: f.fix_time))
    assert ended(events) == ended(complete)[1:]


def test_state_is_unknown_before_the_first_fix_and_settings_are_checked():
    machine = TripStateMachine()
    assert machine.state is VehicleState.UNKNOWN
    assert machine.current_trip() is None and machine.parked_since is None
    with pytest.raises(ValueError):
        TripSettings(stop_speed_kmh=12, moving_speed_kmh=10)
    with pytest.raises(ValueError):
        TripSettings(stop_radius_m=300)
    with pytest.raises(ValueError):
        TripSettings(parking_s=1200)
    with pytest.raises(ValueError):
        TripStateMachine.from_dict({"format": 99})


def test_settings_can_be_overridden_by_the_organisation():
    script = Script()
    script.emit(0.0)
    script.drive(2000, 50)
    script.wait(8 * 60)  # a long level crossing
    script.drive(2000, 50)
    script.wait(15 * 60)
    patient = TripStateMachine(TripSettings(parking_s=600))
    assert len(ended(run(script.fixes)[0])) == 2
    assert len(ended(run(script.fixes, patient)[0])) == 1


# ------------------------------------------------------------------------------ distance


def test_local_projection_agrees_with_geopy_geodesic():
    rng = random.Random(1)
    for _ in range(2000):
        lat = rng.uniform(-70, 70)
        lon = rng.uniform(-180, 180)
        bearing = rng.uniform(0, 360)
        length = rng.uniform(1, 1000)
        there = geodesic(meters=length).destination((lat, lon), bearing)
        ours = distance_m(lat, lon, there.latitude, there.longitude)
        assert abs(ours - length) / length < 1e-5, (lat, lon, bearing, length)
    # Above 1 km it is geopy's geodesic.
    far = geodesic(kilometers=30).destination((LAT0, LON0), 45)
    assert distance_m(LAT0, LON0, far.latitude, far.longitude) == pytest.approx(30_000, abs=1e-6)


# --------------------------------------------------------------------- random fleet days


def random_day(seed: int) -> tuple[list[Fix], float | None]:
    """A random mix of everything a unit may send, for invariants and resumability."""
    rng = random.Random(seed)
    ignition = rng.choice([None, False])
    odometer = rng.choice([None, 30_000.0])
    script = Script(
        ignition=ignition, odometer_km=odometer, with_speed=rng.random() < 0.8, seed=seed
    )
    script.emit(0.0)
    for _ in range(rng.randint(3, 9)):
        action = rng.random()
        if action < 0.2:
            script.park(
                rng.uniform(60, 4 * 3600),
                every=rng.choice([5, 30, 600]),
                outlier_every=rng.choice([0, 7]),
            )
        elif action < 0.5:
            if ignition is not None and rng.random() < 0.7:
                script.switch(True)
            script.heading += rng.uniform(-120, 120)
            script.drive(
                rng.uniform(50, 8000),
                rng.uniform(5, 120),
                every=rng.choice([1, 1, 10, 60]),
                turn=rng.uniform(-2, 2),
            )
        elif action < 0.65:
            script.wait(rng.uniform(5, 700), every=rng.choice([1, 15]))
        elif action < 0.75:
            script.vanish(rng.uniform(30, 3 * 3600), rng.uniform(0, 30_000))
        elif action < 0.82:
            for _ in range(rng.randint(1, 30)):
                script.tick(rng.uniform(1, 60))
                script.emit(0.0, dx=rng.uniform(-1e5, 1e5), valid=False)
        elif action < 0.9:
            script.tick(1)
            script.emit(
                rng.uniform(0, 90), dx=rng.uniform(-3000, 3000), dy=rng.uniform(-3000, 3000)
            )
        elif ignition is not None:
            script.switch(False)
        else:
            script.driver_key = rng.choice(["A1", "B2"])
        if odometer is not None and rng.random() < 0.1:
            script.odometer_km += rng.uniform(0, 50)
    return script.fixes, odometer


@pytest.mark.parametrize("seed", range(60))
def test_random_days_keep_the_logbook_consistent_and_resumable(seed):
    fixes, seed_km = random_day(seed)
    at = fixes[-1].fix_time + timedelta(hours=2)
    machine = TripStateMachine(odometer_km=seed_km)
    events = []
    states = []
    for fix in fixes:
        events.extend(machine.feed(fix))
        states.append((len(events), machine.to_dict()))
    events.extend(machine.finish(at))

    open_trip = None
    previous = None
    gap = None
    for event in events:
        if isinstance(event, OdometerGap):
            assert open_trip is None and gap is None
            gap = event
            continue
        trip = event.trip
        assert trip.start_time <= trip.first_fix_time <= trip.last_fix_time
        assert trip.start_time <= trip.end_time <= trip.last_fix_time or trip.end_reason == ""
        assert trip.distance_m >= 0 and trip.gps_distance_m >= 0
        assert trip.max_speed_kmh <= SETTINGS.max_speed_kmh
        assert trip.route[0][0] == trip.start_time
        assert all(a[0] <= b[0] for a, b in pairwise(trip.route))
        if isinstance(event, TripStarted):
            assert open_trip is None
            open_trip = trip
            if previous is not None:
                assert trip.start_time >= previous.end_time
                if gap is None:
                    assert trip.start_odometer_km == previous.end_odometer_km
            if gap is not None:
                assert gap.to_km == trip.start_odometer_km and gap.to_time == trip.start_time
                if previous is not None:
                    assert gap.from_km == previous.end_odometer_km
            gap = None
        else:
            assert open_trip is not None and trip.start_time == open_trip.start_time
            assert trip.end_odometer_km == pytest.approx(
                trip.start_odometer_km + trip.distance_m / 1000
            )
            assert (trip.route[-1][1], trip.route[-1][2]) == (trip.end_lat, trip.end_lon)
            previous = trip
            open_trip = None

    rng = random.Random(seed)
    for cut in rng.sample(range(len(fixes)), min(25, len(fixes))):
        count, state = states[cut]
        resumed = TripStateMachine.from_dict(json.loads(json.dumps(state)))
        tail = []
        for fix in fixes[cut + 1 :]:
            tail.extend(resumed.feed(fix))
        tail.extend(resumed.finish(at))
        assert events[:count] + tail == events, f"differs when resumed after fix {cut}"
