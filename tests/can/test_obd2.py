"""OBD-II replies: can.md worked examples (python-OBD test bytes, CSS example) and DTCs."""

from __future__ import annotations

import pytest

from telematics.can.errors import CanDecodeError
from telematics.can.obd2 import DTC_DESCRIPTIONS, PIDS, decode_obd2, dtc_to_string
from telematics.can.signals import SIGNALS
from tests.can.helpers import frame, utc


def mode01(pid_and_bytes: str, can_id: int = 0x7E8) -> tuple[str, float, str]:
    """Decode ``41 <pid> <bytes>`` wrapped in an ISO-TP single frame padded with 0xAA."""
    payload = bytes.fromhex("41" + pid_and_bytes)
    data = bytes([len(payload)]) + payload
    data += b"\xaa" * (8 - len(data))
    samples, faults = decode_obd2(frame(can_id, data.hex()))
    assert faults == []
    [sample] = samples
    assert sample.time == utc()
    return sample.signal, sample.value, sample.source


@pytest.mark.parametrize(
    ("pid_bytes", "signal", "value"),
    [
        # coolant: A - 40 (python-OBD tests: 00 -> -40, FF -> 215; collector: 7B -> 83)
        ("0500", "coolant_temperature", -40.0),
        ("05FF", "coolant_temperature", 215.0),
        ("057B", "coolant_temperature", 83.0),
        # rpm: (256A + B) / 4 -> 6904 / 4
        ("0C1AF8", "engine_speed", 1726.0),
        # speed: A km/h (CSS example 7E8 03 41 0D 12 -> 18 km/h)
        ("0D12", "vehicle_speed", 18.0),
        # MAF: (256A + B) / 100 -> 400 / 100
        ("100190", "mass_air_flow", 4.0),
        # throttle: A * 100 / 255
        ("1100", "throttle", 0.0),
        ("11FF", "throttle", 100.0),
        ("1180", "throttle", 128 * 100 / 255),
        # run time: 256A + B seconds
        ("1F0E10", "engine_run_time", 3600.0),
        # distance with MIL on: 256A + B km
        ("210064", "distance_with_mil_on", 100.0),
        # fuel level: A * 100 / 255
        ("2FFF", "fuel_level", 100.0),
        ("2F40", "fuel_level", 64 * 100 / 255),
        # distance since codes cleared: 256A + B km
        ("3103E8", "distance_since_codes_cleared", 1000.0),
        # ambient: A - 40
        ("4600", "ambient_temperature", -40.0),
        # fuel rate: (256A + B) * 0.05 L/h (python-OBD: 0000 -> 0, FFFF -> 3276.75)
        ("5E0000", "fuel_rate", 0.0),
        ("5EFFFF", "fuel_rate", 3276.75),
        ("5E0190", "fuel_rate", 20.0),
        # odometer: 32-bit / 10 km -> 1,000,000 / 10
        ("A6000F4240", "odometer", 100_000.0),
        # engine load and intake air temperature (CSS OBD2 DBC: 0.39216 %/bit, -40 degC)
        ("04FF", "engine_load", 100.0),
        ("0F46", "intake_air_temperature", 30.0),
    ],
)
def test_mode01_worked_examples(pid_bytes: str, signal: str, value: float) -> None:
    got_signal, got_value, source = mode01(pid_bytes)
    assert got_signal == signal
    assert got_value == pytest.approx(value, abs=1e-9)
    assert source == f"obd2:7E8:{pid_bytes[:2]}"


def test_throttle_half_rounds_to_published_50_2_percent() -> None:
    assert round(mode01("1180")[1], 1) == 50.2
    assert round(mode01("2F40")[1], 1) == 25.1


def test_every_pid_maps_to_a_canonical_signal() -> None:
    assert {key for key, _, _ in PIDS.values()} <= set(SIGNALS)


def test_reply_from_second_ecu_keeps_its_id_in_source() -> None:
    assert mode01("0D12", can_id=0x7E9) == ("vehicle_speed", 18.0, "obd2:7E9:0D")


@pytest.mark.parametrize(
    ("high", "low", "code"),
    [
        (0x01, 0x04, "P0104"),
        (0x41, 0x23, "C0123"),
        (0x80, 0x03, "B0003"),
        (0x01, 0x33, "P0133"),
        (0xC1, 0x58, "U0158"),
        (0x3F, 0xFF, "P3FFF"),
    ],
)
def test_dtc_bytes_to_code(high: int, low: int, code: str) -> None:
    assert dtc_to_string(high, low) == code


def test_mode03_two_stored_codes_with_descriptions() -> None:
    samples, faults = decode_obd2(frame(0x7E8, "0643020104C158AA"))
    assert samples == []
    assert [(f.code, f.description, f.source) for f in faults] == [
        ("P0104", "Mass or Volume Air Flow Circuit Intermittent", "obd2:7E8:stored"),
        ("U0158", None, "obd2:7E8:stored"),
    ]
    assert all(f.time == utc() and f.spn is None for f in faults)


def test_mode07_pending_code_and_padding_pair_skipped() -> None:
    _, faults = decode_obd2(frame(0x7EA, "0647020171000000"))
    assert [(f.code, f.description, f.source) for f in faults] == [
        ("P0171", "System Too Lean (Bank 1)", "obd2:7EA:pending")
    ]


def test_mode03_no_codes() -> None:
    assert decode_obd2(frame(0x7E8, "024300AAAAAAAAAA")) == ([], [])


def test_description_table_has_a_few_dozen_generic_p0_codes() -> None:
    assert len(DTC_DESCRIPTIONS) >= 30
    assert all(code.startswith("P0") and len(code) == 5 for code in DTC_DESCRIPTIONS)


@pytest.mark.parametrize(
    ("can_id", "data", "extended", "message"),
    [
        (0x7E0, "03410D12", False, "not an OBD-II reply id"),
        (0x7E8, "03410D12", True, "not an OBD-II reply id"),
        (0x7E8, "03", False, "needs 2+"),
        (0x7E8, "100A4902013144", False, "multi-frame"),
        (0x7E8, "07410D12", False, "declares 7 bytes but carries 3"),
        (0x7E8, "00410D12", False, "declares 0 bytes"),
        (0x7E8, "0241AAAA", False, "is not decoded"),  # PID 0xAA unknown
        (0x7E8, "03410CAA", False, "needs 2 data bytes, has 1"),
        (0x7E8, "0141AAAA", False, "has no PID byte"),
        (0x7E8, "037F0112", False, "negative response"),
        (0x7E8, "024900AA", False, "service response 0x49"),
        (0x7E8, "0643030104C158", False, "announces 3 codes"),
    ],
)
def test_bad_replies_raise_clear_errors(
    can_id: int, data: str, extended: bool, message: str
) -> None:
    with pytest.raises(CanDecodeError, match=message):
        decode_obd2(frame(can_id, data, extended=extended))
