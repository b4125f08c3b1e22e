"""candump and JSON parsing, and log files through python-can's readers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import can
import pytest

from telematics.can.errors import CanDecodeError
from telematics.can.frames import CanFrame, parse_candump, parse_json_frames, read_log_file
from tests.can.helpers import DATA_DIR, T0

SAMPLE = DATA_DIR / "sample_candump.log"
SAMPLE_ERRORS = [
    "line 5: expected '(timestamp) interface id#data', got 4 fields:"
    " '(1700000000.040000) can0 18FEF1FE#FF0032 0000'",
    "line 6: timestamp '(not-a-time)' is not a number",
    "line 7: data '03410D1' is not an even number of hex digits",
    "line 10: expected '(timestamp) interface id#data', got 4 fields:"
    " '(1700000000.200000) can0 18EBFF00#02000102452323 7F'",
]


def test_candump_line_kinds() -> None:
    frames, errors = parse_candump(
        "(1700000000.123456) can0 18FEF1FE#FF00320000000000\n"
        "\n"
        "(1700000000.5) vcan1 7E8#03410D12 R\n"
        "(1700000001.000000) can0 123#\n"
        "(1700000002.000000) can0 1A0##1" + "00" * 12 + "\n"
    )
    assert errors == []
    assert frames == [
        CanFrame(1700000000.123456, 0x18FEF1FE, True, bytes.fromhex("FF00320000000000")),
        CanFrame(1700000000.5, 0x7E8, False, bytes.fromhex("03410D12")),
        CanFrame(1700000001.0, 0x123, False, b""),
        CanFrame(1700000002.0, 0x1A0, False, bytes(12)),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("(1.0) can0 7E8", "no '#'"),
        ("(1.0) can0 7E81#00", "3 \\(11-bit\\) or 8 \\(29-bit\\) hex digits, has 4"),
        ("(1.0) can0 8FF#00", "above 0x7FF"),
        ("(1.0) can0 XYZ#00", "not hexadecimal"),
        ("(1.0) can0 20000080#0000000000000000", "error flag"),
        ("(1.0) can0 3FFFFFFF#00", "above 0x1FFFFFFF|error flag"),
        ("(1.0) can0 7E8#R", "remote request"),
        ("(1.0) can0 7E8#001122334455667788", "at most 8"),
        ("(1.0) can0 7E8##1" + "00" * 9, "not a valid FD length"),
        ("(1.0) can0 7E8##", "flags digit"),
        ("1.0 can0 7E8#00", "not in parentheses"),
        ("(nan) can0 7E8#00", "finite"),
        ("(-5) can0 7E8#00", "non-negative"),
        ("hello", "got 1 fields"),
    ],
)
def test_candump_bad_lines(line: str, message: str) -> None:
    frames, [error] = parse_candump(line)
    assert frames == []
    assert error.startswith("line 1: ")
    assert re.search(message, error), error


def test_sample_file_keeps_good_frames_beside_bad_lines() -> None:
    frames, errors = parse_candump(SAMPLE.read_text())
    assert errors == SAMPLE_ERRORS
    assert [f.can_id for f in frames] == [
        0x7E8,
        0x7E8,
        0x0CF004FE,
        0x18FEF1FE,
        0x18ECFF00,
        0x18EBFF00,
        0x18EBFF00,
        0x18FEEE00,
    ]
    assert frames[0] == CanFrame(T0, 0x7E8, False, bytes.fromhex("04410C1AF8AAAAAA"))


def test_read_log_file_candump_streams_with_errors() -> None:
    errors: list[str] = []
    frames = list(read_log_file(SAMPLE, errors))
    assert frames == parse_candump(SAMPLE.read_text())[0]
    assert errors == SAMPLE_ERRORS


def test_read_log_file_logs_errors_when_no_list(caplog: pytest.LogCaptureFixture) -> None:
    assert len(list(read_log_file(SAMPLE))) == 8
    assert "line 6: timestamp" in caplog.text


MESSAGES = [
    can.Message(timestamp=T0, arbitration_id=0x0CF004FE, is_extended_id=True,
                data=bytes.fromhex("FFFFFF6019FFFFFF")),
    can.Message(timestamp=T0 + 0.5, arbitration_id=0x7E8, is_extended_id=False,
                data=bytes.fromhex("03410D12AAAAAAAA")),
    can.Message(timestamp=T0 + 0.6, arbitration_id=0x7DF, is_extended_id=False,
                is_remote_frame=True, dlc=8),
]  # fmt: skip


@pytest.mark.parametrize("suffix", [".asc", ".blf"])
def test_read_log_file_through_python_can_readers(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"trip{suffix}"
    with can.Logger(path) as writer:
        for message in MESSAGES:
            writer.on_message_received(message)
    errors: list[str] = []
    frames = list(read_log_file(path, errors))
    assert [(f.can_id, f.extended, f.data) for f in frames] == [
        (0x0CF004FE, True, bytes.fromhex("FFFFFF6019FFFFFF")),
        (0x7E8, False, bytes.fromhex("03410D12AAAAAAAA")),
    ]
    assert frames[0].timestamp == pytest.approx(T0, abs=1e-3)
    assert errors == ["message 2: remote frame skipped"]


def test_read_log_file_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "trip.xyz"
    path.write_text("nothing")
    with pytest.raises(CanDecodeError, match="cannot read CAN log"):
        list(read_log_file(path))


def test_read_log_file_corrupt_blf(tmp_path: Path) -> None:
    path = tmp_path / "broken.blf"
    path.write_bytes(b"LOGG" + b"\x00" * 10)
    with pytest.raises(CanDecodeError, match=r"broken\.blf"):
        list(read_log_file(path))


def test_json_frames() -> None:
    body = json.dumps(
        {
            "frames": [
                {"ts": T0, "id": "18FEF1FE", "data": "FF00320000000000"},
                {"ts": 1700000000, "id": "7E8", "data": "03 41 0D 12"},
                {"ts": T0, "id": "0x0CF004FE", "data": "FFFFFF6019FFFFFF"},
                {"ts": T0, "id": "80", "data": ""},
            ]
        }
    ).encode()
    frames, errors = parse_json_frames(body)
    assert errors == []
    assert frames == [
        CanFrame(T0, 0x18FEF1FE, True, bytes.fromhex("FF00320000000000")),
        CanFrame(1700000000.0, 0x7E8, False, bytes.fromhex("03410D12")),
        CanFrame(T0, 0x0CF004FE, True, bytes.fromhex("FFFFFF6019FFFFFF")),
        CanFrame(T0, 0x080, False, b""),
    ]


def test_json_bad_entries_kept_apart() -> None:
    good = {"ts": T0, "id": "7E8", "data": "03410D12"}
    body = json.dumps(
        {
            "frames": [
                good,
                "7E8#00",
                {"id": "7E8", "data": "00"},
                {"ts": "yesterday", "id": "7E8", "data": "00"},
                {"ts": True, "id": "7E8", "data": "00"},
                {"ts": T0, "id": 2024, "data": "00"},
                {"ts": T0, "id": "12345", "data": "00"},
                {"ts": T0, "id": "7E8", "data": "0G"},
                {"ts": T0, "id": "7E8", "data": 3},
                {"ts": T0, "id": "7E8", "data": "00" * 9},
                good,
            ]
        }
    )
    frames, errors = parse_json_frames(body)
    assert len(frames) == 2
    assert errors == [
        "frames[1]: entry must be an object, got str",
        "frames[2]: missing 'ts'",
        "frames[3]: 'ts' must be a number of seconds, got 'yesterday'",
        "frames[4]: 'ts' must be a number of seconds, got True",
        "frames[5]: 'id' must be a hex string such as \"18FEF1FE\", got 2024",
        "frames[6]: CAN id '12345' must have 3 (11-bit) or 8 (29-bit) hex digits, has 5",
        "frames[7]: data '0G' is not an even number of hex digits",
        "frames[8]: 'data' must be a hex string, got 3",
        "frames[9]: CAN FD payload of 9 bytes is not a valid FD length",
    ]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "body is not valid JSON"),
        (b"\xff\xfe", "body is not valid JSON"),
        (b"[]", "body must be an object with a 'frames' list"),
        (b'{"frames": {}}', "body must be an object with a 'frames' list"),
    ],
)
def test_json_body_errors(body: bytes, error: str) -> None:
    frames, [message] = parse_json_frames(body)
    assert frames == []
    assert message.startswith(error)
