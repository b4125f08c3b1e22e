"""The one status rule the API and the dashboard share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from fleet.status import STATUSES, VehicleStatus, offline_after_s, vehicle_status

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def state(age_s: float = 5, speed: float | None = 0.0, ignition: bool | None = None):
    return SimpleNamespace(fix_time=NOW - timedelta(seconds=age_s), speed_kmh=speed,
                           ignition=ignition)


@pytest.mark.parametrize(("latest", "expected"), [
    (None, "offline"),
    (SimpleNamespace(fix_time=None, speed_kmh=None, ignition=None), "offline"),
    (state(age_s=601, speed=80, ignition=True), "offline"),
    (state(age_s=600, speed=80, ignition=True), "moving"),
    (state(speed=3.0, ignition=False), "moving"),  # towed, or no ignition wire
    (state(speed=2.9, ignition=True), "stopped"),
    (state(speed=None, ignition=True), "stopped"),
    (state(speed=0.0, ignition=False), "parked"),
    (state(speed=None, ignition=None), "parked"),
])
def test_status_rule(latest, expected, settings):
    settings.VEHICLE_OFFLINE_AFTER_S = 600
    assert vehicle_status(latest, NOW) == expected


def test_offline_after_is_a_setting(settings):
    settings.VEHICLE_OFFLINE_AFTER_S = 30
    assert offline_after_s() == 30.0
    assert vehicle_status(state(age_s=31, speed=50), NOW) == VehicleStatus.OFFLINE
    assert vehicle_status(state(age_s=31, speed=50), NOW, offline_after=60) == "moving"


def test_statuses_in_dashboard_order():
    assert [str(s) for s in STATUSES] == ["moving", "stopped", "parked", "offline"]
