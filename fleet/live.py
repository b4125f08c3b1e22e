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
