"""Teltonika CAN IO elements to canonical signals (multipliers from the Teltonika wiki)."""

from __future__ import annotations

import pytest

from telematics.can.signals import SIGNALS
from telematics.can.teltonika_io import IO_ELEMENTS, signals_from_io
from tests.can.helpers import utc


@pytest.mark.parametrize(
    ("io", "signal", "value"),
    [
        ({"io81": 52}, "vehicle_speed", 52.0),
        ({"io82": 37}, "accelerator_pedal", 37.0),
        ({"io83": 123456}, "fuel_used_total", 12345.6),  # 0.1 l
        ({"io84": 523}, "fuel_volume", 52.3),  # 0.1 l
        ({"io85": 1500}, "engine_speed", 1500.0),
        ({"io87": 123456789}, "odometer", 123456.789),  # metres -> km
        ({"io89": 40}, "fuel_level", 40.0),
        ({"io105": 1000}, "odometer_counted", 1.0),
        # CAN-CONTROL manual table 5: "Fuel Consumed (counted) ... Ltr * 10": 150.5 L -> 1505
        ({"io107": 1505}, "fuel_used_counted", 150.5),
        ({"io115": 855}, "coolant_temperature", 85.5),  # 0.1 degC
        ({"io115": -100}, "coolant_temperature", -10.0),
        ({"io115": 0xFF9C}, "coolant_temperature", -10.0),  # stored unsigned
    ],
)
def test_io_element_scaling(io: dict[str, int], signal: str, value: float) -> None:
    [sample] = signals_from_io(io, utc())
    assert (sample.signal, sample.value, sample.time) == (signal, pytest.approx(value), utc())
    assert sample.source == f"teltonika:{next(iter(io))}"


def test_unrelated_and_malformed_elements_are_ignored() -> None:
    io = {"io21": 4, "io66": 12800, "io239": 1, "foo": 3, "iox": 5, "io81": "fast", "io82": True}
    assert signals_from_io(io, None) == []


def test_several_elements_in_one_record() -> None:
    samples = signals_from_io({"io81": 80, "io85": 1200, "io89": 55}, None)
    assert {(s.signal, s.value) for s in samples} == {
        ("vehicle_speed", 80.0),
        ("engine_speed", 1200.0),
        ("fuel_level", 55.0),
    }
    assert all(s.time is None for s in samples)


def test_table_targets_canonical_signals_only() -> None:
    assert {element.signal for element in IO_ELEMENTS.values()} <= set(SIGNALS)
    assert {element.source for element in IO_ELEMENTS.values()} <= {"WIKI", "FMA110", "CANCTRL"}


def test_unconfirmed_obd_elements_stay_raw_attributes() -> None:
    """OBD ids whose rows could not be read in Teltonika's own documentation are not
    turned into signals (a wrong multiplier is worse than no value); see the module."""
    assert signals_from_io({"io30": 2, "io32": 90, "io36": 1500, "io37": 50, "io48": 40,
                            "io389": 123456}, None) == []
