"""How an event reads, in one place: the live feed, the events page, the API and e-mail."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from telematics.alerts.engine import EVENT_TYPES


def label(event_type: str) -> str:
    return EVENT_TYPES.get(event_type, event_type.replace("_", " ").capitalize())


def _number(value: Any, digits: int = 0) -> str:
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return "?"


def summary(event_type: str, attributes: dict[str, Any], vehicle_name: str | None) -> str:
    """One line a dispatcher reads, e.g. "Van 7 entered Depot"."""
    who = vehicle_name or "A vehicle"
    a = attributes or {}
    fence = a.get("geofence_name") or "a geofence"
    if event_type == "geofence_enter":
        return f"{who} entered {fence}"
    if event_type == "geofence_exit":
        text = f"{who} left {fence}"
        if isinstance(a.get("inside_s"), int | float):
            minutes = a["inside_s"] / 60
            text += f" after {minutes:.0f} min" if minutes >= 1 else f" after {a['inside_s']} s"
        return text
    if event_type == "overspeed":
        where = f" in {a['geofence_name']}" if a.get("geofence_name") else ""
        return (f"{who} at {_number(a.get('max_speed_kmh', a.get('speed_kmh')))} km/h"
                f"{where} (limit {_number(a.get('limit_kmh'))} km/h)")
    if event_type == "idle":
        return f"{who} idling for {_number(a.get('minutes'))} min"
    if event_type == "low_fuel":
        return (f"{who} fuel at {_number(a.get('fuel_percent'))} % "
                f"(below {_number(a.get('threshold_percent'))} %)")
    if event_type == "offline":
        return f"{who} silent for {_number(a.get('minutes'))} min"
    if event_type == "fault_opened":
        description = f" – {a['description']}" if a.get("description") else ""
        return f"{who}: fault {a.get('code', '?')}{description}"
    if event_type == "fault_closed":
        return f"{who}: fault {a.get('code', '?')} cleared"
    if event_type == "trip_started":
        return f"{who} started a trip"
    if event_type == "trip_ended":
        metres = a.get("distance_m")
        return f"{who} ended a trip" + (
            f" of {_number(metres / 1000, 1)} km" if isinstance(metres, int | float) else "")
    if event_type.startswith("service_"):
        return f"{who}: {a.get('plan', 'service')} {label(event_type).lower()}"
    return f"{who}: {label(event_type)}"


def event_payload(event, vehicle_name: str | None = None) -> dict[str, Any]:
    """What the live feed sends for a ``telematics.models.Event`` (JSON-able)."""
    if vehicle_name is None and event.vehicle_id is not None:
        vehicle = getattr(event, "vehicle", None)
        vehicle_name = vehicle.name if vehicle is not None else None
    return {
        "id": event.pk,
        "type": event.type,
        "label": label(event.type),
        "time": event.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "vehicle": event.vehicle_id,
        "vehicle_name": vehicle_name,
        "summary": summary(event.type, event.attributes, vehicle_name),
        "attributes": event.attributes,
    }


def with_summary(payload: dict[str, Any]) -> dict[str, Any]:
    """A payload whose attributes were changed (``logbook.event_privacy`` stripped a
    private trip's places), with the summary read from them again."""
    return {**payload, "summary": summary(payload["type"], payload.get("attributes") or {},
                                          payload.get("vehicle_name"))}
