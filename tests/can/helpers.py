"""Helpers shared by the CAN decoding tests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from telematics.can.frames import CanFrame

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "can"
T0 = 1_700_000_000.0


def frame(can_id: int, data: str, *, extended: bool | None = None, ts: float = T0) -> CanFrame:
    """A frame from a hex string; 29-bit when the id does not fit 11 bits."""
    if extended is None:
        extended = can_id > 0x7FF
    return CanFrame(ts, can_id, extended, bytes.fromhex(data))


def utc(ts: float = T0) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
