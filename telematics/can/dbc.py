"""Vehicle-specific CAN frames decoded with a DBC file (cantools).

Passenger cars and vans broadcast their speed, rpm, fuel level and odometer in
manufacturer frames that only a DBC describes. A fleet maps the few DBC signals it cares
about onto canonical signals, e.g. ``{"speed.EngineRPM": "engine_speed"}`` or
``{(513, "VehicleSpeed"): "vehicle_speed"}``.

Everything name-based is resolved once, in the constructor, into a dict
``key -> (cantools Message, mapped signals)``; decoding a frame is then one dict lookup
and one ``message.decode(data, decode_choices=False)``. Frames of messages with no mapped
signal are recognised (the DBC "knows" them) but never decoded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

import cantools
from cantools.database.can import Database, Message

from telematics.can.errors import CanDecodeError, DbcError
from telematics.can.frames import CanFrame
from telematics.can.signals import SIGNALS, SignalSample

EXTENDED_FLAG = 0x8000_0000  # how DBC files mark a 29-bit id, and our dict key for one

log = logging.getLogger(__name__)

MappingKey = str | tuple[int, str]


def frame_key(can_id: int, extended: bool) -> int:
    """Dict key of a frame id: 11-bit and 29-bit id spaces must not collide."""
    return can_id | EXTENDED_FLAG if extended else can_id


def _load(text: str) -> tuple[Database, list[str]]:
    """Strict first; a DBC that only fails the strict checks loads with a warning.

    cantools reports both a syntax error and a strict-only problem (overlapping signals,
    signals past the frame end) as ``UnsupportedDatabaseFormatError``, so the lenient
    load decides which it was.
    """
    try:
        return cantools.database.load_string(text, database_format="dbc", strict=True), []
    except Exception as strict_exc:
        try:
            database = cantools.database.load_string(text, database_format="dbc", strict=False)
        except Exception as exc:
            raise DbcError(f"DBC does not parse: {exc}") from exc
        return database, [f"strict DBC check failed, loaded with strict=False: {strict_exc}"]


class DbcDecoder:
    """Decode frames a DBC defines into canonical signals.

    ``warnings`` lists what the loader forgave (e.g. overlapping signals). A DBC that
    does not parse, or a mapping that names a message, signal or canonical signal that
    does not exist, raises :class:`DbcError` with the reason.
    """

    def __init__(self, dbc_text: str, mapping: Mapping[MappingKey, str]) -> None:
        database, self.warnings = _load(dbc_text)
        for warning in self.warnings:
            log.warning("%s", warning)
        self.database = database
        self._by_key: dict[int, tuple[Message, tuple[tuple[str, str, str], ...]]] = {}
        mapped: dict[int, list[tuple[str, str, str]]] = {}
        for key, canonical in mapping.items():
            message, signal_name = self._resolve(key)
            if canonical not in SIGNALS:
                raise DbcError(f"mapping {key!r} targets unknown canonical signal {canonical!r}")
            source = f"dbc:{message.name}.{signal_name}"
            mapped.setdefault(id(message), []).append((signal_name, canonical, source))
        for message in database.messages:
            key = frame_key(message.frame_id, message.is_extended_frame)
            self._by_key[key] = (message, tuple(mapped.get(id(message), ())))

    def _resolve(self, key: MappingKey) -> tuple[Message, str]:
        try:
            if isinstance(key, tuple):
                frame_id, signal_name = key
                # accept the DBC spelling of a 29-bit id (0x8CF004FE) as well as 0x0CF004FE
                message = self.database.get_message_by_frame_id(frame_id & ~EXTENDED_FLAG)
            else:
                message_name, _, signal_name = key.partition(".")
                message = self.database.get_message_by_name(message_name)
        except (KeyError, ValueError, TypeError):
            raise DbcError(f"mapping {key!r} names a message the DBC does not define") from None
        if not signal_name or all(s.name != signal_name for s in message.signals):
            raise DbcError(f"mapping {key!r}: message {message.name} has no signal {signal_name!r}")
        return message, signal_name

    def knows(self, can_id: int, extended: bool) -> bool:
        """True when the DBC defines this frame id (mapped or not)."""
        return frame_key(can_id, extended) in self._by_key

    def decode(self, frame: CanFrame, time: datetime | None = None) -> list[SignalSample]:
        """Samples of the mapped signals in one frame; [] for a known but unmapped message."""
        entry = self._by_key.get(frame.can_id | EXTENDED_FLAG if frame.extended else frame.can_id)
        if entry is None:
            raise CanDecodeError(f"id 0x{frame.can_id:X} is not defined in the DBC")
        message, wanted = entry
        if not wanted:
            return []
        data = frame.data
        if len(data) < message.length:
            raise CanDecodeError(
                f"id 0x{frame.can_id:X} ({message.name}) has {len(data)} bytes,"
                f" the DBC says {message.length}"
            )
        try:
            values = message.decode(data, decode_choices=False)
        except Exception as exc:  # cantools raises several error types for odd frames
            raise CanDecodeError(f"id 0x{frame.can_id:X} ({message.name}): {exc}") from exc
        if time is None:
            time = datetime.fromtimestamp(frame.timestamp, UTC)
        samples = []
        for signal_name, canonical, source in wanted:
            value = values.get(signal_name)  # absent when multiplexed out
            if value is not None:
                samples.append(SignalSample(canonical, float(value), time, source))
        return samples
