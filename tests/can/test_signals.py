"""The canonical signal list."""

from __future__ import annotations

import dataclasses

import pytest

from telematics.can import signals
from telematics.can.signals import SIGNALS, Signal, SignalSample

CORE = {
    "vehicle_speed": "km/h",
    "engine_speed": "rpm",
    "coolant_temperature": "°C",
    "fuel_level": "%",
    "fuel_rate": "L/h",
    "fuel_used_total": "L",
    "throttle": "%",
    "odometer": "km",
    "engine_hours": "h",
    "ambient_temperature": "°C",
    "distance_since_codes_cleared": "km",
    "mass_air_flow": "g/s",
    "engine_load": "%",
    "intake_air_temperature": "°C",
}


def test_core_signals_and_units() -> None:
    assert {key: SIGNALS[key].unit for key in CORE} == CORE


def test_every_signal_constant_is_listed_once() -> None:
    constants = [v for v in vars(signals).values() if isinstance(v, Signal)]
    assert len(constants) == len(SIGNALS)
    assert all(SIGNALS[s.key] is s for s in constants)
    assert all(s.label and s.unit for s in constants)


def test_records_are_immutable() -> None:
    sample = SignalSample("vehicle_speed", 50.0, None, "test")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.value = 60.0  # type: ignore[misc]
