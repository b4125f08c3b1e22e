"""Raw CAN frames, and the text/JSON/log formats units and engineers hand them to us in.

Parsers here never raise on a bad line or entry: each goes to ``errors`` as
``"line 7: ..."`` / ``"frames[3]: ..."`` and the good frames beside it are kept, because a
single corrupted line in a day's capture must not cost the fleet the whole day.
"""

from __future__ import annotations

import json
import logging
import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import can

from telematics.can.errors import CanDecodeError

log = logging.getLogger(__name__)

MAX_STANDARD_ID = 0x7FF
MAX_EXTENDED_ID = 0x1FFF_FFFF
CAN_ERROR_FLAG = 0x2000_0000
CLASSIC_MAX_DATA = 8
# CAN FD payload sizes; anything above 8 bytes must be one of these.
FD_LENGTHS = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64})


@dataclass(frozen=True, slots=True)
class CanFrame:
    """One CAN frame as seen on the bus.

    ``timestamp`` is seconds since the Unix epoch (UTC) as loggers write it;
    ``extended`` is True for 29-bit identifiers (J1939 and most truck buses).
    """

    timestamp: float
    can_id: int
    extended: bool
    data: bytes


def _parse_id(text: str) -> tuple[int, bool]:
    """candump's rule: 3 hex digits is an 11-bit id, 8 hex digits a 29-bit id."""
    if len(text) not in (3, 8):
        raise ValueError(
            f"CAN id {text!r} must have 3 (11-bit) or 8 (29-bit) hex digits, has {len(text)}"
        )
    try:
        can_id = int(text, 16)
    except ValueError:
        raise ValueError(f"CAN id {text!r} is not hexadecimal") from None
    if len(text) == 3:
        if can_id > MAX_STANDARD_ID:
            raise ValueError(f"11-bit CAN id 0x{can_id:03X} is above 0x7FF")
        return can_id, False
    if can_id & CAN_ERROR_FLAG:
        raise ValueError(f"CAN id 0x{can_id:08X} has the error flag set (an error frame)")
    if can_id > MAX_EXTENDED_ID:
        raise ValueError(f"29-bit CAN id 0x{can_id:08X} is above 0x1FFFFFFF")
    return can_id, True


def _parse_data(text: str, fd: bool) -> bytes:
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"data {text!r} is not an even number of hex digits") from None
    if fd:
        if len(data) not in FD_LENGTHS:
            raise ValueError(f"CAN FD payload of {len(data)} bytes is not a valid FD length")
    elif len(data) > CLASSIC_MAX_DATA:
        raise ValueError(f"data has {len(data)} bytes, a classic CAN frame carries at most 8")
    return data


def _parse_candump_line(line: str) -> CanFrame:
    """Parse one ``candump -L`` line: ``(1700000000.123456) can0 18FEF1FE#FF0032...``."""
    fields = line.split()
    if len(fields) == 4 and fields[3] in ("R", "T", "r", "t"):
        fields = fields[:3]  # newer candump appends the direction (R)x/(T)x
    if len(fields) != 3:
        raise ValueError(
            f"expected '(timestamp) interface id#data', got {len(fields)} fields: {line!r}"
        )
    stamp, _interface, frame = fields
    if not (stamp.startswith("(") and stamp.endswith(")")):
        raise ValueError(f"timestamp {stamp!r} is not in parentheses")
    try:
        timestamp = float(stamp[1:-1])
    except ValueError:
        raise ValueError(f"timestamp {stamp!r} is not a number") from None
    if not math.isfinite(timestamp) or timestamp < 0:
        raise ValueError(f"timestamp {stamp!r} is not a finite, non-negative number")
    id_text, sep, payload = frame.partition("#")
    if not sep:
        raise ValueError(f"frame {frame!r} has no '#' between id and data")
    can_id, extended = _parse_id(id_text)
    fd = payload.startswith("#")
    if fd:
        if len(payload) < 2 or payload[1] not in "0123456789ABCDEFabcdef":
            raise ValueError(f"CAN FD frame {frame!r} lacks its flags digit after '##'")
        payload = payload[2:]
    elif payload[:1] in ("R", "r"):
        raise ValueError(f"frame {frame!r} is a remote request (RTR) and carries no data")
    return CanFrame(timestamp, can_id, extended, _parse_data(payload, fd))


def parse_candump(text: str) -> tuple[list[CanFrame], list[str]]:
    """Parse ``candump -L`` text into frames; bad lines go to errors with their number.

    python-can's ``CanutilsLogReader`` is not used here because it stops at the first bad
    line; a capture pasted by a mechanic routinely has one.
    """
    frames: list[CanFrame] = []
    errors: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            frames.append(_parse_candump_line(line))
        except ValueError as exc:
            errors.append(f"line {number}: {exc}")
    return frames, errors


def _json_id(value: object) -> tuple[int, bool]:
    if not isinstance(value, str):
        raise ValueError(f"'id' must be a hex string such as \"18FEF1FE\", got {value!r}")
    text = value.strip()
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    if len(text) in (1, 2):  # "7E8" written without its leading zero, e.g. "80"
        text = text.rjust(3, "0")
    return _parse_id(text)


def parse_json_frames(body: bytes | str) -> tuple[list[CanFrame], list[str]]:
    """Parse ``{"frames": [{"ts": 1700000000.1, "id": "18FEF1FE", "data": "FF00..."}]}``.

    ``ts`` is seconds since the epoch; ``id`` is hex with 1-3 digits for an 11-bit id or
    8 digits for a 29-bit id (the candump rule); ``data`` is hex, up to 8 bytes (or a CAN
    FD length). A body that is not JSON at all yields no frames and one error.
    """
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return [], [f"body is not valid JSON: {exc}"]
    entries = document.get("frames") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        return [], ["body must be an object with a 'frames' list"]
    frames: list[CanFrame] = []
    errors: list[str] = []
    for index, entry in enumerate(entries):
        try:
            frames.append(_json_frame(entry))
        except ValueError as exc:
            errors.append(f"frames[{index}]: {exc}")
    return frames, errors


def _json_frame(entry: object) -> CanFrame:
    if not isinstance(entry, dict):
        raise ValueError(f"entry must be an object, got {type(entry).__name__}")
    missing = [key for key in ("ts", "id", "data") if key not in entry]
    if missing:
        raise ValueError(f"missing {', '.join(repr(key) for key in missing)}")
    ts = entry["ts"]
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise ValueError(f"'ts' must be a number of seconds, got {ts!r}")
    if not math.isfinite(ts) or ts < 0:
        raise ValueError(f"'ts' {ts!r} is not a finite, non-negative number")
    can_id, extended = _json_id(entry["id"])
    data = entry["data"]
    if not isinstance(data, str):
        raise ValueError(f"'data' must be a hex string, got {data!r}")
    payload = _parse_data(data, fd=len(data.replace(" ", "")) > 2 * CLASSIC_MAX_DATA)
    return CanFrame(float(ts), can_id, extended, payload)


def read_log_file(path: str | PathLike[str], errors: list[str] | None = None) -> Iterator[CanFrame]:
    """Yield the frames of a CAN log file, chosen by suffix.

    ``.log`` (candump -L) goes through :func:`parse_candump`'s line parser so a corrupt
    line costs one frame, not the rest of the file. Every other format python-can reads
    (``.asc``, ``.blf``, ``.trc``, ``.csv``, ``.mf4``, ``.db``) goes through
    :class:`can.LogReader`; error and remote frames are skipped. Bad lines and skipped
    frames are appended to ``errors`` when given, logged otherwise. A file python-can
    cannot read at all raises :class:`CanDecodeError`.
    """
    path = Path(path)

    def report(message: str) -> None:
        if errors is None:
            log.warning("%s: %s", path, message)
        else:
            errors.append(message)

    if path.suffix.lower() == ".log":
        with path.open(encoding="utf-8", errors="replace") as handle:
            for number, raw in enumerate(handle, start=1):
                line = raw.strip()
                if not line:
                    continue
                try:
                    yield _parse_candump_line(line)
                except ValueError as exc:
                    report(f"line {number}: {exc}")
        return

    # ASC files carry the capture's start date; read absolute times, not seconds-from-start
    options = {"relative_timestamp": False} if path.suffix.lower() == ".asc" else {}
    try:
        reader = can.LogReader(path, **options)
    except (ValueError, OSError, EOFError, struct.error, zlib.error) as exc:
        raise CanDecodeError(f"{path}: cannot read CAN log: {exc}") from exc
    with reader:
        try:
            for index, message in enumerate(reader):
                if message.is_error_frame or message.is_remote_frame:
                    kind = "error" if message.is_error_frame else "remote"
                    report(f"message {index}: {kind} frame skipped")
                    continue
                yield CanFrame(
                    float(message.timestamp),
                    message.arbitration_id,
                    message.is_extended_id,
                    bytes(message.data),
                )
        except (ValueError, OSError, EOFError, struct.error, zlib.error) as exc:
            raise CanDecodeError(f"{path}: log is corrupt: {exc}") from exc
