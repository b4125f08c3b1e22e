"""Service plans: when is a vehicle due, from its odometer, engine hours and the calendar.

The odometer is the CAN odometer when the vehicle reports one, else the unit's (GPS)
odometer plus the vehicle's offset; engine hours come from the CAN bus. Whichever of
distance, hours and days runs out first decides.

The end of the module gathers what a vehicle's page shows: its plans with what is left,
and its open and recently closed faults.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction

from fleet.models import Vehicle
from telematics.models import Event, Fault, ServicePlan, ServiceRecord, VehicleState

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


# --- What a vehicle's page shows -------------------------------------------------------

RECENT_CLOSED_FAULTS = 5


@dataclass(frozen=True)
class PlanOnPage:
    plan: ServicePlan
    status: PlanStatus

    @property
    def what_is_left(self) -> list[tuple[str, float, str]]:
        """(quantity, amount, unit) for each interval the plan has: how much is left, or
        with a negative amount how far past due it is."""
        left = []
        for amount, unit in ((self.status.remaining_km, "km"),
                             (self.status.remaining_hours, "h"),
                             (self.status.remaining_days, "days")):
            if amount is not None:
                left.append(("overdue" if amount <= 0 else "left", abs(amount), unit))
        return left

    @property
    def missing_readings(self) -> list[str]:
        """Readings the plan needs but the vehicle has not reported (so that interval
        cannot fall due yet), named for the page."""
        missing = []
        if self.plan.interval_km and self.status.remaining_km is None:
            missing.append("odometer")
        if self.plan.interval_hours and self.status.remaining_hours is None:
            missing.append("engine hours")
        return missing


def plans_of_vehicle(vehicle: Vehicle, at: datetime) -> list[PlanOnPage]:
    """The vehicle's service plans with their state now, overdue first, then due soon.

    The state is computed from the current reading rather than read from ``plan.state``,
    which the ingest only updates when a reading arrives; a plan due by days turns due
    on the calendar even while the vehicle stands.
    """
    state = VehicleState.objects.filter(vehicle_id=vehicle.pk).first()
    reading = current_reading(state, vehicle.odometer_offset_km, at)
    order = {OVERDUE: 0, DUE_SOON: 1, OK: 2}
    plans = [PlanOnPage(plan, plan_status(plan, reading))
             for plan in ServicePlan.objects.filter(vehicle_id=vehicle.pk)]
    return sorted(plans, key=lambda p: (order[p.status.state], p.plan.name))


def faults_of_vehicle(
    vehicle: Vehicle, closed: int = RECENT_CLOSED_FAULTS
) -> tuple[list[Fault], list[Fault]]:
    """(open faults, newest first; the ``closed`` most recently closed ones)."""
    faults = Fault.objects.filter(vehicle_id=vehicle.pk)
    return (list(faults.filter(closed_at__isnull=True).order_by("-last_seen", "-id")),
            list(faults.filter(closed_at__isnull=False).order_by("-closed_at", "-id")[:closed]))
