"""Service plans: when is a vehicle due, from its odometer, engine hours and the calendar.

The odometer is the CAN odometer when the vehicle reports one, else the unit's (GPS)
odometer plus the vehicle's offset; engine hours come from the CAN bus. Whichever of
distance, hours and days runs out first decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction

from telematics.models import Event, ServicePlan, ServiceRecord, VehicleState

OK, DUE_SOON, OVERDUE = "ok", "due_soon", "overdue"


@dataclass(frozen=True)
class Reading:
    at: datetime
    odometer_km: float | None = None
    engine_hours: float | None = None


@dataclass(frozen=True)
class PlanStatus:
    state: str
    remaining_km: float | None
    remaining_hours: float | None
    remaining_days: float | None


def plan_status(plan: ServicePlan, reading: Reading) -> PlanStatus:
    remaining_km = remaining_hours = remaining_days = None
    states = []
    if plan.interval_km and reading.odometer_km is not None:
        done = plan.last_done_odometer_km or 0.0
        remaining_km = plan.interval_km - (reading.odometer_km - done)
        states.append(_state(remaining_km, plan.due_soon_km))
    if plan.interval_hours and reading.engine_hours is not None:
        done = plan.last_done_engine_hours or 0.0
        remaining_hours = plan.interval_hours - (reading.engine_hours - done)
        states.append(_state(remaining_hours, plan.due_soon_hours))
    if plan.interval_days:
        elapsed = (reading.at - plan.last_done_at).total_seconds() / 86400
        remaining_days = plan.interval_days - elapsed
        states.append(_state(remaining_days, plan.due_soon_days))
    state = OVERDUE if OVERDUE in states else DUE_SOON if DUE_SOON in states else OK
    return PlanStatus(state, remaining_km, remaining_hours, remaining_days)


def _state(remaining: float, due_soon: float) -> str:
    if remaining <= 0:
        return OVERDUE
    return DUE_SOON if remaining <= due_soon else OK


def current_reading(vehicle_state: VehicleState | None, offset_km: float, at: datetime) -> Reading:
    if vehicle_state is None:
        return Reading(at)
    signals = vehicle_state.signals or {}
    odometer = signals.get("odometer", {}).get("value")
    if odometer is None and vehicle_state.odometer_km is not None:
        odometer = vehicle_state.odometer_km + offset_km
    return Reading(at, odometer, signals.get("engine_hours", {}).get("value"))


def evaluate_plans(vehicle_ids: set[int], at: datetime) -> list[Event]:
    """Recompute plan states; a plan turning due-soon or overdue raises an event."""
    events = []
    plans = ServicePlan.objects.filter(vehicle_id__in=vehicle_ids).select_related(
        "vehicle", "vehicle__state")
    for plan in plans:
        state = getattr(plan.vehicle, "state", None)
        status = plan_status(plan, current_reading(state, plan.vehicle.odometer_offset_km, at))
        if status.state != plan.state:
            if status.state != OK:
                events.append(Event(
                    organisation_id=plan.vehicle.organisation_id, vehicle_id=plan.vehicle_id,
                    type=f"service_{status.state}", time=at,
                    attributes={"plan": plan.name, "remaining_km": status.remaining_km,
                                "remaining_hours": status.remaining_hours,
                                "remaining_days": status.remaining_days},
                ))
            plan.state = status.state
            plan.save(update_fields=["state"])
    Event.objects.bulk_create(events)
    return events


@transaction.atomic
def complete_service(plan: ServicePlan, done_at: datetime, *, odometer_km: float | None = None,
                     engine_hours: float | None = None, note: str = "",
                     recorded_by: str = "") -> ServiceRecord:
    """Record a service and restart the plan from the readings at completion."""
    state = VehicleState.objects.filter(vehicle_id=plan.vehicle_id).first()
    reading = current_reading(state, plan.vehicle.odometer_offset_km, done_at)
    odometer_km = reading.odometer_km if odometer_km is None else odometer_km
    engine_hours = reading.engine_hours if engine_hours is None else engine_hours
    record = ServiceRecord.objects.create(plan=plan, done_at=done_at, odometer_km=odometer_km,
                                          engine_hours=engine_hours, note=note,
                                          recorded_by=recorded_by)
    plan.last_done_at = done_at
    plan.last_done_odometer_km = odometer_km
    plan.last_done_engine_hours = engine_hours
    plan.state = plan_status(plan, Reading(done_at, odometer_km, engine_hours)).state
    plan.save()
    return record
