"""What the live map is told about a vehicle, and where it is sent."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from fleet.models import Vehicle
from fleet.status import vehicle_status


def organisation_group(organisation_id: int) -> str:
    return f"live.org.{organisation_id}"


def vehicle_snapshot(vehicle: Vehicle, now: datetime | None = None) -> dict[str, Any]:
    """Everything the map and list show of one vehicle, status included.

    Select ``state`` and ``default_driver`` with the vehicles: this reads both.
    """
    now = now or datetime.now(UTC)
    state = getattr(vehicle, "state", None)
    driver = vehicle.default_driver
    snapshot: dict[str, Any] = {
        "id": vehicle.pk, "name": vehicle.name, "licence_plate": vehicle.licence_plate,
        "driver": driver.name if driver else None,
        "status": vehicle_status(state, now).value,
    }
    if state is not None and state.fix_time is not None:
        snapshot.update(
            fix_time=state.fix_time.isoformat(), latitude=state.latitude,
            longitude=state.longitude, speed_kmh=state.speed_kmh, course=state.course,
            ignition=state.ignition,
        )
    return snapshot


def with_status(update: dict[str, Any], now: datetime) -> dict[str, Any]:
    """An ingest update (one vehicle's newest fix) with its status added.

    Computed when the update is sent rather than when it was stored, so a batch that sat
    in the consumer for a moment is judged against the time the browser receives it.
    """
    fix_time = update.get("fix_time")
    state = SimpleNamespace(
        fix_time=datetime.fromisoformat(fix_time) if fix_time else None,
        speed_kmh=update.get("speed_kmh"), ignition=update.get("ignition"),
    )
    return {**update, "status": vehicle_status(state, now).value}


# --- Privacy (issue 5): what the map may not show of a private trip -----------------

PRIVATE_STATUS = "private"
POSITION_KEYS = ("fix_time", "latitude", "longitude", "speed_kmh", "course", "ignition")


def positions_hidden_from(principal: Any, latest: dict[int, datetime | None]) -> set[int]:
    """Vehicles (``{id: newest fix time}``) whose live position the principal may not
    see; the rule is ``logbook.selectors.live_positions_hidden``."""
    from logbook.selectors import live_positions_hidden

    return live_positions_hidden(principal, latest)


def without_position(vehicle: dict[str, Any], hidden: bool) -> dict[str, Any]:
    """A snapshot or update as the map gets it: a hidden vehicle keeps its name, plate
    and driver, and shows status "private" without fix time, position or speed."""
    if not hidden:
        return {**vehicle, "private": False}
    return {**vehicle, **dict.fromkeys(POSITION_KEYS), "status": PRIVATE_STATUS,
            "private": True}


def hide_private_vehicles(principal: Any, vehicles: list[Vehicle]) -> set[int]:
    """For the server-rendered pages: clear the fix of each vehicle (annotated by
    ``fleet.views._annotate``) the principal may not follow now."""
    hidden = positions_hidden_from(principal, {
        v.pk: v.fix.fix_time if getattr(v, "fix", None) is not None else None
        for v in vehicles
    })
    for vehicle in vehicles:
        if vehicle.pk in hidden:
            vehicle.status, vehicle.fix, vehicle.fix_age = PRIVATE_STATUS, None, ""
    return hidden
