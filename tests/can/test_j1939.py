"""J1939: identifiers, published scalings, not-available skipping, DM1 and BAM reassembly."""

from __future__ import annotations

import pytest

from telematics.can.errors import CanDecodeError
from telematics.can.j1939 import (
    PARAMETER_GROUPS,
    BamAssembler,
    J1939Decoder,
    J1939Id,
    decode_dm1,
    parse_j1939_id,
)
from telematics.can.signals import SIGNALS, FaultCode
from tests.can.helpers import T0, frame, utc


@pytest.mark.parametrize(
    ("can_id", "expected"),
    [
        (0x0CF004FE, J1939Id(3, 61444, 0xFE, None)),
        (0x18FEF1FE, J1939Id(6, 65265, 0xFE, None)),
        (0x18FEEE00, J1939Id(6, 65262, 0x00, None)),
        (0x18FEF200, J1939Id(6, 65266, 0x00, None)),
        (0x18FEFC17, J1939Id(6, 65276, 0x17, None)),
        (0x18FEC1EE, J1939Id(6, 65217, 0xEE, None)),
        (0x18FEE500, J1939Id(6, 65253, 0x00, None)),
        (0x18FECA00, J1939Id(6, 65226, 0x00, None)),
        # PDU1: PS is the destination and is masked out of the PGN
        (0x18ECFF00, J1939Id(6, 0xEC00, 0x00, 0xFF)),
        (0x1CEB2A03, J1939Id(7, 0xEB00, 0x03, 0x2A)),
        # data page bit: PGN 0x1FF46 (from a real "Unknown PGN 130886" report)
        (0x19FF4600, J1939Id(6, 0x1FF46, 0x00, None)),
    ],
)
def test_identifier_split(can_id: int, expected: J1939Id) -> None:
    assert parse_j1939_id(can_id) == expected


def decode(can_id: int, data: str) -> list[tuple[str, float, str]]:
    samples, faults = J1939Decoder().decode(frame(can_id, data))
    assert faults == []
    assert all(s.time == utc() for s in samples)
    return [(s.signal, s.value, s.source) for s in samples]


@pytest.mark.parametrize(
    ("can_id", "data", "expected"),
    [
        # can.md worked examples, checked there against cantools with the J1939 DBC fragments
        (0x0CF004FE, "FFFFFF6019FFFFFF", ("engine_speed", 812.0, "j1939:EEC1:FE")),
        (0x18FEF1FE, "FF00320000000000", ("vehicle_speed", 50.0, "j1939:CCVS:FE")),
        # HOURS bytes 1-4 10 27 00 00 = 10000 x 0.05 h
        (0x18FEE500, "10270000FFFFFFFF", ("engine_hours", 500.0, "j1939:HOURS:00")),
        # VDHR bytes 1-4 40 42 0F 00 = 1,000,000 x 5 m
        (0x18FEC1EE, "40420F00FFFFFFFF", ("odometer", 5000.0, "j1939:VDHR:EE")),
        # DD byte 2 C8 = 200 x 0.4 %
        (0x18FEFC17, "FFC8FFFFFFFFFFFF", ("fuel_level", 80.0, "j1939:DD:17")),
        # ET1 byte 1 7B = 123 - 40 degC
        (0x18FEEE00, "7BFFFFFFFFFFFFFF", ("coolant_temperature", 83.0, "j1939:ET1:00")),
        # LFE bytes 1-2 90 01 = 400 x 0.05 L/h
        (0x18FEF200, "9001FFFFFFFFFFFF", ("fuel_rate", 20.0, "j1939:LFE:00")),
        # LFC bytes 5-8 10 27 00 00 = 10000 x 0.5 L
        (0x18FEE900, "FFFFFFFF10270000", ("fuel_used_total", 5000.0, "j1939:LFC:00")),
        # AMB bytes 4-5 40 25 = 9536 x 0.03125 - 273 degC
        (0x18FEF500, "FFFFFF4025FFFFFF", ("ambient_temperature", 25.0, "j1939:AMB:00")),
    ],
)
def test_published_scalings(can_id: int, data: str, expected: tuple[str, float, str]) -> None:
    assert decode(can_id, data) == [expected]


@pytest.mark.parametrize(
    ("can_id", "data", "value"),
    [
        # the largest valid raw values end each published data range
        (0x0CF004FE, "FFFFFFFFFAFFFFFF", 8031.875),
        (0x18FEF1FE, "FFFFFAFFFFFFFFFF", 64255 / 256),
        (0x18FEEE00, "FAFFFFFFFFFFFFFF", 210.0),
        (0x18FEE500, "FFFFFFFAFFFFFFFF", 210_554_060.75),
        (0x18FEFC17, "FFFAFFFFFFFFFFFF", 100.0),
    ],
)
def test_top_of_valid_range_is_a_value(can_id: int, data: str, value: float) -> None:
    [(_, got, _)] = decode(can_id, data)
    assert got == pytest.approx(value)


@pytest.mark.parametrize(
    ("can_id", "data"),
    [
        (0x0CF004FE, "FFFFFFFFFFFFFFFF"),  # not available
        (0x0CF004FE, "FFFFFF00FEFFFFFF"),  # 0xFE00: error indicator
        (0x0CF004FE, "FFFFFF00FBFFFFFF"),  # 0xFB00: parameter-specific indicator
        (0x18FEEE00, "FEFFFFFFFFFFFFFF"),  # 1-byte error
        (0x18FEEE00, "FBFFFFFFFFFFFFFF"),
        (0x18FEE500, "FFFFFFFFFFFFFFFF"),  # 4-byte not available
        (0x18FEE500, "000000FEFFFFFFFF"),  # 4-byte error
        (0x18FEF500, "FFFFFFFFFFFFFFFF"),
        (0x18FEE900, "FFFFFFFFFFFFFFFF"),
    ],
)
def test_not_available_and_error_values_are_skipped(can_id: int, data: str) -> None:
    assert decode(can_id, data) == []


def test_every_parameter_maps_to_a_canonical_signal() -> None:
    keys = {p.signal for g in PARAMETER_GROUPS.values() for p in g.parameters}
    assert keys <= set(SIGNALS)


@pytest.mark.parametrize(
    ("can_id", "data", "message"),
    [
        (0x0CF004FE, "FFFFFF60", "has 4 bytes, needs 5"),
        (0x18FEE900, "FFFFFFFF1027", "has 6 bytes, needs 8"),
        (0x18FF0000, "0000000000000000", "PGN 65280 .* not decoded"),
        (0x18FECA00, "04FF6E00", "DM1 .* has 4 bytes"),
        (0x123, "00", "11-bit"),
    ],
)
def test_unknown_or_short_frames_raise(can_id: int, data: str, message: str) -> None:
    with pytest.raises(CanDecodeError, match=message):
        J1939Decoder().decode(frame(can_id, data, extended=can_id > 0x7FF))


def test_single_frame_dm1() -> None:
    # lamps 0x04: amber on, MIL/red/protect off; SPN 110 FMI 0 OC 5 CM 0; FF FF padding
    samples, faults = J1939Decoder().decode(frame(0x18FECA00, "04FF6E000005FFFF"))
    assert samples == []
    assert faults == [
        FaultCode(
            code="SPN110-FMI0",
            source="j1939:DM1:00",
            time=utc(),
            spn=110,
            fmi=0,
            occurrence=5,
            conversion_method=0,
            mil_lamp=False,
            red_stop_lamp=False,
            amber_warning_lamp=True,
            protect_lamp=False,
        )
    ]


def test_dm1_without_active_fault_and_lamps_not_available() -> None:
    # "no active DTC": all-zero DTC; lamp bits 11 = not available
    assert decode_dm1(bytes.fromhex("FFFF00000000FFFF"), 0, None) == []
    [fault] = decode_dm1(bytes.fromhex("FFFF6E000005"), 0, None)
    assert (fault.mil_lamp, fault.red_stop_lamp, fault.amber_warning_lamp) == (None, None, None)


def test_dm1_spn_high_bits_and_legacy_conversion_method() -> None:
    # SPN 0x7FFFE (19 bits) = FE FF + top bits 111 in byte 3 with FMI 31; CM 1, OC 127
    [fault] = decode_dm1(bytes.fromhex("4000FEFFFFFF"), 0x3D, None)
    assert (fault.spn, fault.fmi, fault.occurrence, fault.conversion_method) == (
        0x7FFFE,
        31,
        127,
        1,
    )
    assert fault.mil_lamp is True
    assert fault.code == "SPN524286-FMI31"
    assert fault.source == "j1939:DM1:3D"


# A DM1 with three DTCs, 14 bytes, sent from SA 0x00 with BAM (2 TP.DT packets):
#   lamps 44 (MIL on, amber on), FF
#   SPN 110 FMI 0 OC 5        -> 6E 00 00 05
#   SPN 100 FMI 1 OC 2        -> 64 00 01 02
#   SPN 74565 FMI 3 OC 127    -> 45 23 23 7F   (74565 = 0x12345: 45, 23, top bits 001)
BAM_CM = "200E0002FFCAFE00"  # BAM, 14 bytes, 2 packets, reserved, PGN 0x00FECA
BAM_DT = ["0144FF6E00000564", "020001024523237F"]
EXPECTED_BAM = [(110, 0, 5), (100, 1, 2), (74565, 3, 127)]


def bam_frames(sa: int = 0x00, start: float = T0, step: float = 0.05):
    yield frame(0x18ECFF00 | sa, BAM_CM, ts=start)
    for i, data in enumerate(BAM_DT, start=1):
        yield frame(0x18EBFF00 | sa, data, ts=start + i * step)


def test_bam_dm1_reassembled_into_three_faults() -> None:
    decoder = J1939Decoder()
    results = [decoder.decode(f) for f in bam_frames()]
    assert results[:2] == [([], []), ([], [])]
    samples, faults = results[2]
    assert samples == []
    assert [(f.spn, f.fmi, f.occurrence) for f in faults] == EXPECTED_BAM
    assert all(f.mil_lamp and f.amber_warning_lamp and f.red_stop_lamp is False for f in faults)
    assert all(f.time == utc(T0 + 0.1) and f.source == "j1939:DM1:00" for f in faults)
    assert len(decoder.assembler) == 0


def test_bam_transfers_from_two_sources_interleave() -> None:
    decoder = J1939Decoder()
    a, b = list(bam_frames(0x00)), list(bam_frames(0x03))
    faults = []
    for f in [a[0], b[0], a[1], b[1], a[2], b[2]]:
        faults += decoder.decode(f)[1]
    assert [(f.source, f.spn) for f in faults] == [
        ("j1939:DM1:00", 110),
        ("j1939:DM1:00", 100),
        ("j1939:DM1:00", 74565),
        ("j1939:DM1:03", 110),
        ("j1939:DM1:03", 100),
        ("j1939:DM1:03", 74565),
    ]


def test_bam_missing_packet_drops_transfer() -> None:
    decoder = J1939Decoder()
    cm, _, dt2 = bam_frames()
    decoder.decode(cm)
    with pytest.raises(CanDecodeError, match="expected packet 1, got 2"):
        decoder.decode(dt2)
    assert len(decoder.assembler) == 0
    with pytest.raises(CanDecodeError, match="without a BAM announce"):
        decoder.decode(dt2)


def test_bam_timeout_drops_transfer() -> None:
    decoder = J1939Decoder()
    cm, dt1, _dt2 = bam_frames(step=1.0)
    decoder.decode(cm)
    with pytest.raises(CanDecodeError, match=r"exceeds 0\.75 s"):
        decoder.decode(dt1)


def test_new_announce_replaces_unfinished_transfer() -> None:
    decoder = J1939Decoder()
    cm, dt1, dt2 = bam_frames()
    decoder.decode(cm)
    decoder.decode(dt1)
    decoder.decode(cm)  # sender restarted
    assert decoder.decode(dt1) == ([], [])
    assert len(decoder.decode(dt2)[1]) == 3


@pytest.mark.parametrize(
    ("can_id", "data", "message"),
    [
        (0x18ECFF00, "200E0003FFCAFE00", "do not agree"),  # 14 bytes in 3 packets
        (0x18ECFF00, "2005000001CAFE00", "do not agree"),  # too small for transport
        (0x18EC2A00, "100E0002FFCAFE00", "peer-to-peer"),  # RTS to address 0x2A
        (0x18ECFF00, "100E0002FFCAFE00", "not BAM"),
        (0x18ECFF00, "200E00", "needs 8"),
    ],
)
def test_bad_connection_management(can_id: int, data: str, message: str) -> None:
    with pytest.raises(CanDecodeError, match=message):
        J1939Decoder().decode(frame(can_id, data))


def test_bam_of_undecoded_pgn_is_reported() -> None:
    decoder = J1939Decoder()
    decoder.decode(frame(0x18ECFF00, "20090002FFECFE00"))  # 9 bytes of PGN 65260 (VI)
    decoder.decode(frame(0x18EBFF00, "0131324142433435"))
    with pytest.raises(CanDecodeError, match=r"PGN 65260 .* not decoded"):
        decoder.decode(frame(0x18EBFF00, "0236FFFFFFFFFFFF"))


def test_assembler_can_be_used_directly() -> None:
    assembler = BamAssembler()
    assembler.connection_management(bytes.fromhex(BAM_CM), 0x00, T0)
    assert assembler.data_transfer(bytes.fromhex(BAM_DT[0]), 0x00, T0 + 0.05) is None
    pgn, payload = assembler.data_transfer(bytes.fromhex(BAM_DT[1]), 0x00, T0 + 0.1)
    assert pgn == 65226
    assert payload.hex().upper() == "44FF6E00000564000102452323" + "7F"
