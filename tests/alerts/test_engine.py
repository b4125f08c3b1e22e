"""The evaluator's rules on plain data: overspeed, idling, low fuel, offline, geofences."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from telematics.alerts.engine import (
    Fence,
    Rule,
    Sample,
    evaluate_fixes,
    evaluate_fuel,
    evaluate_offline,
)
from telematics.alerts.geometry import parse_geometry

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
M = 111_195.0


def circle_fence(fence_id=1, radius=200.0, limit=None, revision=1, name="Depot"):
    shape = parse_geometry({"type": "Point", "coordinates": [13.405, 52.52]}, radius)
    return Fence(fence_id, name, revision, shape, shape.bbox(25), limit)


def fix(seconds, lat=52.60, lon=13.405, speed=0.0, ignition=None, valid=True):
    return Sample(T0 + timedelta(seconds=seconds), lat, lon, speed, ignition, valid)


def test_geofence_enter_exit_with_duration_inside():
    state: dict = {}
    fence = circle_fence()
    fixes = [fix(0, 52.53), fix(10, 52.5205), fix(20, 52.52), fix(600, 52.50)]
    events = evaluate_fixes(state, 7, fixes, [fence], [], 25)
    assert [e.type for e in events] == ["geofence_enter", "geofence_exit"]
    assert events[0].time == T0 + timedelta(seconds=10)  # 50 m inside: > margin
    assert events[1].attributes["inside_s"] == 590
    assert events[1].attributes["geofence_name"] == "Depot"


def test_a_changed_shape_starts_without_an_opinion():
    state: dict = {}
    evaluate_fixes(state, 7, [fix(0, 52.52)], [circle_fence()], [], 25)
    assert state["fences"]["1"][1] == 1
    # Moved so the vehicle is now outside: no exit event, only the new state.
    moved = Fence(1, "Depot", 2, parse_geometry(
        {"type": "Point", "coordinates": [13.5, 52.52]}, 100), (52.0, 13.0, 53.0, 14.0))
    assert evaluate_fixes(state, 7, [fix(10, 52.52)], [moved], [], 25) == []
    assert state["fences"]["1"][:2] == [2, 0]
    # A deleted geofence's state goes.
    evaluate_fixes(state, 7, [fix(20, 52.52)], [], [], 25)
    assert state["fences"] == {}


def test_overspeed_needs_the_minimum_duration_and_fires_once_per_episode():
    rule = Rule(1, "Highway", frozenset({"overspeed"}), overspeed_kmh=100, overspeed_min_s=30)
    state: dict = {}
    speeds = [90, 105, 110, 120, 104, 101, 99, 95, 96, 110, 112, 115, 118]
    fixes = [fix(10 * i, speed=s) for i, s in enumerate(speeds)]
    events = evaluate_fixes(state, 7, fixes, [], [rule], 25)
    assert [e.type for e in events] == ["overspeed", "overspeed"]
    first, second = events
    assert first.time == T0 + timedelta(seconds=40)  # 10 s .. 40 s over the limit
    assert first.attributes["max_speed_kmh"] == 120
    assert first.attributes["limit_kmh"] == 100 and first.attributes["rule"] == 1
    # 99 stays within the reset band; 95 ends the episode; 110 at 90 s starts another.
    assert second.time == T0 + timedelta(seconds=120)


def test_overspeed_uses_a_geofence_speed_limit_inside_it():
    rule = Rule(1, "Zones", frozenset({"overspeed"}), overspeed_kmh=130)
    school = circle_fence(limit=30, name="School")
    state: dict = {}
    events = evaluate_fixes(state, 7, [fix(0, 52.52, speed=45), fix(5, 52.52, speed=50)],
                            [school], [rule], 25)
    overspeed = [e for e in events if e.type == "overspeed"]
    assert len(overspeed) == 1
    assert overspeed[0].attributes["limit_kmh"] == 30
    assert overspeed[0].attributes["geofence_name"] == "School"
    # A rule naming other geofences ignores this one's limit.
    other = Rule(2, "Only 9", frozenset({"overspeed"}), overspeed_kmh=130,
                 geofence_ids=frozenset({9}))
    assert evaluate_fixes({}, 7, [fix(0, 52.52, speed=50)], [school], [other], 25) == []


def test_idle_fires_after_the_minutes_and_again_only_after_moving():
    rule = Rule(3, "Idle", frozenset({"idle"}), idle_minutes=5)
    state: dict = {}
    standing = [fix(60 * i, speed=0.5, ignition=True) for i in range(7)]
    events = evaluate_fixes(state, 7, standing, [], [rule], 25)
    assert [e.time for e in events] == [T0 + timedelta(minutes=5)]
    assert events[0].attributes["minutes"] == 5.0
    # Ignition off ends it; a second idle period fires again.
    later = [fix(600, ignition=False)] + [fix(700 + 60 * i, ignition=True) for i in range(6)]
    assert len(evaluate_fixes(state, 7, later, [], [rule], 25)) == 1


def test_rules_for_other_vehicles_stay_quiet():
    rule = Rule(3, "Idle", frozenset({"idle"}), vehicle_ids=frozenset({99}), idle_minutes=1)
    standing = [fix(60 * i, ignition=True) for i in range(4)]
    assert evaluate_fixes({}, 7, standing, [], [rule], 25) == []


def test_low_fuel_fires_once_until_refuelled():
    rule = Rule(4, "Fuel", frozenset({"low_fuel"}), low_fuel_percent=15)
    state: dict = {}
    readings = [40, 14, 12, 16, 10, 35, 14]
    fired = [bool(evaluate_fuel(state, 7, value, T0, [rule])) for value in readings]
    # 16 is within the reset band (15 + 5), so 10 does not fire again; 35 re-arms it.
    assert fired == [False, True, False, False, False, False, True]


def test_offline_fires_once_and_rearms_when_heard_again():
    rule = Rule(5, "Offline", frozenset({"offline"}), offline_minutes=10)
    state: dict = {}
    assert evaluate_offline(state, 7, T0, T0 + timedelta(minutes=9), [rule]) == []
    events = evaluate_offline(state, 7, T0, T0 + timedelta(minutes=11), [rule])
    assert [e.type for e in events] == ["offline"]
    assert events[0].attributes["minutes"] == 11.0
    assert evaluate_offline(state, 7, T0, T0 + timedelta(minutes=30), [rule]) == []
    heard = T0 + timedelta(minutes=31)
    assert evaluate_offline(state, 7, heard, heard + timedelta(minutes=1), [rule]) == []
    assert len(evaluate_offline(state, 7, heard, heard + timedelta(minutes=12), [rule])) == 1
    assert evaluate_offline({}, 7, None, T0, [rule]) == []  # never reported: nothing


def test_invalid_fixes_are_ignored():
    events = evaluate_fixes({}, 7, [fix(0, 52.60), fix(5, 52.52, valid=False),
                                    fix(6, 52.52, valid=False)], [circle_fence()], [], 25)
    assert events == []
