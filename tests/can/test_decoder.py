"""VehicleCanDecoder: routing, batches with bad frames, and fuzzing."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telematics.can.dbc import DbcDecoder
from telematics.can.decoder import VehicleCanDecoder
from telematics.can.frames import CanFrame, parse_candump, parse_json_frames
from tests.can.helpers import DATA_DIR, T0, frame

MAZDA = DbcDecoder(
    (DATA_DIR / "mazda_rx8.dbc").read_text(),
    {"speed.EngineRPM": "engine_speed", "speed.VehicleSpeed": "vehicle_speed"},
)


def test_sample_capture_end_to_end() -> None:
    frames, parse_errors = parse_candump((DATA_DIR / "sample_candump.log").read_text())
    assert len(parse_errors) == 4
    # line 10 was broken, so the second BAM packet arrives only on line 11
    samples, faults, errors, _ = VehicleCanDecoder().decode(frames)
    assert [(s.signal, s.value, s.source) for s in samples] == [
        ("engine_speed", 1726.0, "obd2:7E8:0C"),
        ("vehicle_speed", 18.0, "obd2:7E8:0D"),
        ("engine_speed", 812.0, "j1939:EEC1:FE"),
        ("vehicle_speed", 50.0, "j1939:CCVS:FE"),
        ("coolant_temperature", 83.0, "j1939:ET1:00"),
    ]
    assert [(f.code, f.mil_lamp) for f in faults] == [
        ("SPN110-FMI0", True),
        ("SPN100-FMI1", True),
        ("SPN74565-FMI3", True),
    ]
    assert errors == []


def test_bad_frames_become_errors_and_good_ones_survive() -> None:
    frames = [
        frame(0x7E8, "03410D12AAAAAAAA"),
        frame(0x123, "00"),  # unknown 11-bit id
        frame(0x18FF0000, "00"),  # unknown PGN
        frame(0x0CF004FE, "FFFF"),  # EEC1 too short
        frame(0x7E8, "0141"),  # OBD without PID
        CanFrame(math.nan, 0x7E8, False, b"\x03\x41\x0d\x12"),  # unusable timestamp
        frame(0x0CF004FE, "FFFFFF6019FFFFFF"),
    ]
    samples, faults, errors, _ = VehicleCanDecoder().decode(frames)
    assert [(s.signal, s.value) for s in samples] == [
        ("vehicle_speed", 18.0),
        ("engine_speed", 812.0),
    ]
    assert faults == []
    assert errors == [
        "frame 1: unknown 11-bit id 0x123",
        "frame 2: PGN 65280 (0xFF00) from SA 0x00 not decoded",
        "frame 3: PGN 61444 (EEC1) from SA 0xFE has 2 bytes, needs 5",
        "frame 4: mode 01 reply on 0x7E8 has no PID byte",
        "frame 5: timestamp nan is not a usable time",
    ]


def test_dbc_takes_precedence_and_unknown_ids_are_errors() -> None:
    decoder = VehicleCanDecoder(dbc=MAZDA)
    samples, _, errors, _ = decoder.decode(
        [
            frame(513, "1AF800004E205000"),  # mazda speed frame
            frame(0x7E8, "03410D12AAAAAAAA"),  # still OBD-II
            frame(0x300, "00"),  # neither DBC nor OBD-II
        ]
    )
    assert [(s.signal, s.value, s.source) for s in samples] == [
        ("engine_speed", 1726.0, "dbc:speed.EngineRPM"),
        ("vehicle_speed", 100.0, "dbc:speed.VehicleSpeed"),
        ("vehicle_speed", 18.0, "obd2:7E8:0D"),
    ]
    assert errors == ["frame 2: unknown 11-bit id 0x300"]


def test_dbc_can_claim_a_j1939_id() -> None:
    dbc = DbcDecoder(
        'VERSION ""\nNS_ :\nBS_:\nBU_:\nBO_ 2364540158 EEC1: 8 Vector__XXX\n'
        ' SG_ EngSpeed : 24|16@1+ (0.125,0) [0|8031.875] "rpm" Vector__XXX\n',
        {"EEC1.EngSpeed": "engine_speed"},
    )
    [sample] = VehicleCanDecoder(dbc=dbc).decode([frame(0x0CF004FE, "FFFFFF6019FFFFFF")]).samples
    assert sample.source == "dbc:EEC1.EngSpeed"


def test_bam_state_carries_across_batches() -> None:
    decoder = VehicleCanDecoder()
    first = decoder.decode([frame(0x18ECFF00, "200E0002FFCAFE00")])
    second = decoder.decode(
        [
            frame(0x18EBFF00, "0144FF6E00000564", ts=T0 + 0.05),
            frame(0x18EBFF00, "020001024523237F", ts=T0 + 0.1),
        ]
    )
    assert first == ([], [], [], {})
    assert [f.spn for f in second.faults] == [110, 100, 74565]
    # The reassembled DM1 is a complete fault list of source address 0x00.
    assert list(second.fault_reports) == ["j1939:DM1:00"]


def test_fault_reports_name_sources_even_without_faults() -> None:
    result = VehicleCanDecoder().decode([
        frame(0x18FECA00, "0000000000000000"),  # DM1 from SA 0x00: no active faults
        frame(0x7E8, "024300AAAAAAAAAA"),  # mode 03 reply: no stored codes
    ])
    assert result.faults == []
    assert set(result.fault_reports) == {"j1939:DM1:00", "obd2:7E8:stored"}


def test_error_list_is_capped() -> None:
    result = VehicleCanDecoder(max_errors=3).decode([frame(0x100, "")] * 10)
    assert result.errors == [
        "frame 0: unknown 11-bit id 0x100",
        "frame 1: unknown 11-bit id 0x100",
        "frame 2: unknown 11-bit id 0x100",
        "... and 7 more errors not listed",
    ]


# Fuzzing: whatever arrives on the bus, decode() returns; it never raises.
interesting_ids = st.sampled_from(
    [0x7E8, 0x7EF, 0x201, 0x420, 0x0CF004FE, 0x18FECA00, 0x18ECFF00, 0x18EBFF00, 0x18FEF500]
)
frames_strategy = st.builds(
    CanFrame,
    timestamp=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(min_value=T0, max_value=T0 + 10),
    ),
    can_id=st.one_of(interesting_ids, st.integers(min_value=0, max_value=0xFFFF_FFFF)),
    extended=st.booleans(),
    data=st.binary(max_size=64),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames_strategy, max_size=30))
def test_fuzz_decoder_never_raises(frames: list[CanFrame]) -> None:
    for decoder in (VehicleCanDecoder(), VehicleCanDecoder(dbc=MAZDA)):
        samples, faults, errors, reports = decoder.decode(frames)
        assert len(errors) <= decoder.max_errors + 1
        assert all(math.isfinite(s.value) for s in samples)
        assert all(f.source in reports for f in faults)


@settings(max_examples=200, deadline=None)
@given(st.text(), st.binary())
def test_fuzz_parsers_never_raise(text: str, body: bytes) -> None:
    _frames, errors = parse_candump(text)
    assert all(isinstance(e, str) for e in errors)
    parse_json_frames(body)
    parse_json_frames(text)
