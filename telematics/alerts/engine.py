"""What turns fixes and signals into events: pure, no Django, no database.

One vehicle at a time. Its state is a JSON-able dict the worker keeps in
``VehicleAlertState`` (so a restart neither forgets a vehicle is inside a geofence nor
fires an alert twice)::

    {"fences": {"<geofence id>": [revision, inside 0|1, inside-fixes pending, since]},
     "rules":  {"<rule id>": {"overspeed": {"since", "max", "fired"},
                              "idle": {"since", "fired"},
                              "low_fuel": {"fired"}, "offline": {"fired"}}}}

* **Geofences** (``geofence_enter``/``geofence_exit``) are evaluated for every geofence of
  the vehicle's organisation, rules or not, with the hysteresis of
  ``telematics.alerts.geometry.fence_step``. A geofence whose shape changed (its
  ``revision``) starts again without an opinion.
* **Thresholds** come from alert rules, so each rule fires its own events (their
  ``rule`` attribute names it) and two rules with different limits do not share one:

  - ``overspeed``: faster than the rule's km/h (or the speed limit of a geofence the
    vehicle is in, whichever is lower; a rule that names geofences uses only theirs) for
    at least the rule's minimum duration. Once per episode: the episode ends when the
    speed drops ``OVERSPEED_RESET_KMH`` below the limit.
  - ``idle``: ignition on and standing (below ``IDLE_SPEED_KMH``) for the rule's
    minutes; once until the vehicle moves or the ignition goes off.
  - ``low_fuel``: fuel level below the rule's percentage; once until it is back
    ``LOW_FUEL_RESET_PERCENT`` above (refuelled).
  - ``offline``: nothing heard from the vehicle's units for the rule's minutes; once
    until a unit is heard again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from telematics.alerts.geometry import FenceState, Shape, fence_step, in_bbox

EVENT_TYPES: dict[str, str] = {
    "geofence_enter": "Geofence entered",
    "geofence_exit": "Geofence left",
    "overspeed": "Overspeed",
    "idle": "Long idling",
    "low_fuel": "Low fuel",
    "offline": "Unit offline",
    "fault_opened": "Fault opened",
    "fault_closed": "Fault closed",
    "service_due_soon": "Service due soon",
    "service_overdue": "Service overdue",
}

IDLE_SPEED_KMH = 3.0  # fleet.status.MOVING_SPEED_KMH: GPS speed jitters at a standstill
OVERSPEED_RESET_KMH = 3.0
LOW_FUEL_RESET_PERCENT = 5.0


@dataclass(frozen=True, slots=True)
class Fence:
    id: int
    name: str
    revision: int
    shape: Shape
    bbox: tuple[float, float, float, float]  # widened by the hysteresis margin
    speed_limit_kmh: float | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    id: int
    name: str
    types: frozenset[str]
    vehicle_ids: frozenset[int] | None = None  # None: every vehicle of the organisation
    geofence_ids: frozenset[int] | None = None  # None: every geofence
    overspeed_kmh: float | None = None
    overspeed_min_s: float = 0.0
    idle_minutes: float | None = None
    low_fuel_percent: float | None = None
    offline_minutes: float | None = None

    def watches(self, event_type: str, vehicle_id: int | None) -> bool:
        return event_type in self.types and (
            self.vehicle_ids is None or vehicle_id in self.vehicle_ids)

    def covers_fence(self, geofence_id: int) -> bool:
        return self.geofence_ids is None or geofence_id in self.geofence_ids


@dataclass(frozen=True, slots=True)
class Sample:
    """One fix as the evaluator reads it."""

    time: datetime
    latitude: float
    longitude: float
    speed_kmh: float | None = None
    ignition: bool | None = None
    valid: bool = True


@dataclass(slots=True)
class NewEvent:
    type: str
    time: datetime
    attributes: dict[str, Any] = field(default_factory=dict)


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _rule_state(state: dict, rule: Rule) -> dict:
    return state.setdefault("rules", {}).setdefault(str(rule.id), {})


def forget_stale(state: dict, fences: list[Fence] | None, rules: list[Rule] | None) -> None:
    """Drop the state of geofences and rules that no longer exist."""
    if fences is not None:
        alive = {str(f.id) for f in fences}
        for key in [k for k in state.get("fences", {}) if k not in alive]:
            del state["fences"][key]
    if rules is not None:
        alive = {str(r.id) for r in rules}
        for key in [k for k in state.get("rules", {}) if k not in alive]:
            del state["rules"][key]


def evaluate_fixes(state: dict, vehicle_id: int, fixes: list[Sample], fences: list[Fence],
                   rules: list[Rule], margin_m: float) -> list[NewEvent]:
    """Feed a vehicle's new fixes (oldest first, each newer than the last one fed)."""
    events: list[NewEvent] = []
    forget_stale(state, fences, rules)
    fence_states = state.setdefault("fences", {})
    for fix in fixes:
        if not fix.valid:
            continue
        inside: list[Fence] = []
        for fence in fences:
            events += _step_fence(fence_states, fence, fix, margin_m)
            if fence_states[str(fence.id)][1]:
                inside.append(fence)
        for rule in rules:
            if rule.vehicle_ids is not None and vehicle_id not in rule.vehicle_ids:
                continue
            if "overspeed" in rule.types:
                events += _overspeed(_rule_state(state, rule), rule, fix, inside)
            if "idle" in rule.types and rule.idle_minutes:
                events += _idle(_rule_state(state, rule), rule, fix)
    return events


def _step_fence(fence_states: dict, fence: Fence, fix: Sample, margin_m: float) -> list[NewEvent]:
    key = str(fence.id)
    stored = fence_states.get(key)
    previous = None
    since = None
    if stored is not None and stored[0] == fence.revision:
        previous = FenceState(bool(stored[1]), stored[2])
        since = stored[3]
    if in_bbox(fence.bbox, fix.latitude, fix.longitude):
        distance = fence.shape.signed_distance_m(fix.latitude, fix.longitude)
    else:
        distance = -math.inf
    new, transition = fence_step(previous, distance, margin_m)
    if transition == "enter" or (previous is None and new.inside):
        since = _iso(fix.time)
    elif not new.inside:
        since = None
    fence_states[key] = [fence.revision, int(new.inside), new.pending, since]
    if transition is None:
        return []
    attributes: dict[str, Any] = {
        "geofence": fence.id, "geofence_name": fence.name,
        "latitude": fix.latitude, "longitude": fix.longitude, "speed_kmh": fix.speed_kmh,
    }
    if transition == "exit" and stored and stored[3]:
        entered = datetime.fromisoformat(stored[3])
        attributes["inside_since"] = stored[3]
        attributes["inside_s"] = round((fix.time - entered).total_seconds())
    return [NewEvent(f"geofence_{transition}", fix.time, attributes)]


def _overspeed(rule_state: dict, rule: Rule, fix: Sample, inside: list[Fence]) -> list[NewEvent]:
    limit, fence = rule.overspeed_kmh, None
    for candidate in inside:
        if candidate.speed_limit_kmh is None or not rule.covers_fence(candidate.id):
            continue
        if limit is None or candidate.speed_limit_kmh < limit:
            limit, fence = candidate.speed_limit_kmh, candidate
    speed = fix.speed_kmh
    episode = rule_state.get("overspeed")
    if limit is None or speed is None:
        return []
    if speed <= limit - OVERSPEED_RESET_KMH:
        rule_state.pop("overspeed", None)
        return []
    if speed <= limit:
        return []  # inside the reset band: the episode (if any) goes on
    if episode is None:
        episode = rule_state["overspeed"] = {"since": _iso(fix.time), "max": speed,
                                             "fired": False}
    episode["max"] = max(episode["max"], speed)
    since = datetime.fromisoformat(episode["since"])
    duration = (fix.time - since).total_seconds()
    if episode["fired"] or duration < (rule.overspeed_min_s or 0):
        return []
    episode["fired"] = True
    attributes: dict[str, Any] = {
        "rule": rule.id, "rule_name": rule.name, "speed_kmh": speed,
        "max_speed_kmh": episode["max"], "limit_kmh": limit, "since": episode["since"],
        "duration_s": round(duration), "latitude": fix.latitude, "longitude": fix.longitude,
    }
    if fence is not None:
        attributes.update(geofence=fence.id, geofence_name=fence.name)
    return [NewEvent("overspeed", fix.time, attributes)]


def _idle(rule_state: dict, rule: Rule, fix: Sample) -> list[NewEvent]:
    idling = fix.ignition is True and (fix.speed_kmh or 0.0) < IDLE_SPEED_KMH
    if not idling:
        rule_state.pop("idle", None)
        return []
    episode = rule_state.get("idle")
    if episode is None:
        episode = rule_state["idle"] = {"since": _iso(fix.time), "fired": False}
    since = datetime.fromisoformat(episode["since"])
    if episode["fired"] or fix.time - since < timedelta(minutes=rule.idle_minutes or 0):
        return []
    episode["fired"] = True
    return [NewEvent("idle", fix.time, {
        "rule": rule.id, "rule_name": rule.name, "since": episode["since"],
        "minutes": round((fix.time - since).total_seconds() / 60, 1),
        "latitude": fix.latitude, "longitude": fix.longitude,
    })]


def evaluate_fuel(state: dict, vehicle_id: int, percent: float, time: datetime,
                  rules: list[Rule]) -> list[NewEvent]:
    """The vehicle's latest fuel level (%) against the rules that watch low fuel."""
    events = []
    for rule in rules:
        if not rule.watches("low_fuel", vehicle_id) or rule.low_fuel_percent is None:
            continue
        rule_state = _rule_state(state, rule)
        fired = rule_state.get("low_fuel", {}).get("fired", False)
        if percent < rule.low_fuel_percent and not fired:
            rule_state["low_fuel"] = {"fired": True}
            events.append(NewEvent("low_fuel", time, {
                "rule": rule.id, "rule_name": rule.name, "fuel_percent": percent,
                "threshold_percent": rule.low_fuel_percent,
            }))
        elif fired and percent >= rule.low_fuel_percent + LOW_FUEL_RESET_PERCENT:
            rule_state.pop("low_fuel", None)
    return events


def evaluate_offline(state: dict, vehicle_id: int, last_seen: datetime | None, now: datetime,
                     rules: list[Rule]) -> list[NewEvent]:
    """Whether the vehicle's units have been silent for longer than a rule allows."""
    events = []
    if last_seen is None:
        return events
    silent = (now - last_seen).total_seconds()
    for rule in rules:
        if not rule.watches("offline", vehicle_id) or not rule.offline_minutes:
            continue
        rule_state = _rule_state(state, rule)
        fired = rule_state.get("offline", {}).get("fired", False)
        if silent > rule.offline_minutes * 60:
            if not fired:
                rule_state["offline"] = {"fired": True}
                events.append(NewEvent("offline", now, {
                    "rule": rule.id, "rule_name": rule.name, "last_seen": _iso(last_seen),
                    "minutes": round(silent / 60, 1),
                }))
        elif fired:
            rule_state.pop("offline", None)
    return events
