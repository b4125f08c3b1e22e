"""What a vehicle is doing now, from its latest state: one rule for the API and the dashboard."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Protocol

from django.conf import settings
from django.utils import timezone

# Below this a vehicle is standing: GPS speed jitters by a few km/h at a standstill.
MOVING_SPEED_KMH = 3.0


class VehicleStatus(StrEnum):
    MOVING = "moving"
    STOPPED = "stopped"
    PARKED = "parked"
    OFFLINE = "offline"


# In the order the dashboard lists them.
STATUSES: tuple[VehicleStatus, ...] = tuple(VehicleStatus)


class LatestState(Protocol):
    """What the rule reads: a ``telematics.models.VehicleState`` or anything alike."""

    fix_time: datetime | None
    speed_kmh: float | None
    ignition: bool | None


def offline_after_s() -> float:
    """Seconds without a fix after which a vehicle counts as offline (a setting)."""
    return float(settings.VEHICLE_OFFLINE_AFTER_S)


def vehicle_status(
    state: LatestState | None,
    now: datetime | None = None,
    offline_after: float | None = None,
) -> VehicleStatus:
    """Moving, stopped (ignition on, standing), parked, or offline (no recent fix).

    A vehicle is offline when its newest fix is older than ``VEHICLE_OFFLINE_AFTER_S``
    (or it never reported): whatever it last said may no longer be true. A vehicle going
    faster than ``MOVING_SPEED_KMH`` is moving even with the ignition off (towed, or a
    unit without an ignition wire); a standing one is stopped with the ignition on and
    parked otherwise, unknown ignition included.
    """
    if state is None:
        return VehicleStatus.OFFLINE
    return status_from(state.fix_time, state.speed_kmh, state.ignition, now, offline_after)


def status_from(
    fix_time: datetime | None,
    speed_kmh: float | None,
    ignition: bool | None,
    now: datetime | None = None,
    offline_after: float | None = None,
) -> VehicleStatus:
    """The same rule on bare values, for rows read without a VehicleState object."""
    if fix_time is None:
        return VehicleStatus.OFFLINE
    now = now or timezone.now()
    if offline_after is None:
        offline_after = offline_after_s()
    if (now - fix_time).total_seconds() > offline_after:
        return VehicleStatus.OFFLINE
    if speed_kmh is not None and speed_kmh >= MOVING_SPEED_KMH:
        return VehicleStatus.MOVING
    if ignition:
        return VehicleStatus.STOPPED
    return VehicleStatus.PARKED
