"""What the live map is told about a vehicle, and where it is sent."""

from __future__ import annotations

from typing import Any

from fleet.models import Vehicle


def organisation_group(organisation_id: int) -> str:
    return f"live.org.{organisation_id}"


def vehicle_snapshot(vehicle: Vehicle) -> dict[str, Any]:
    state = getattr(vehicle, "state", None)
    snapshot: dict[str, Any] = {"id": vehicle.pk, "name": vehicle.name}
    if state is not None and state.fix_time is not None:
        snapshot.update(
            fix_time=state.fix_time.isoformat(), latitude=state.latitude,
            longitude=state.longitude, speed_kmh=state.speed_kmh, course=state.course,
            ignition=state.ignition,
        )
    return snapshot
