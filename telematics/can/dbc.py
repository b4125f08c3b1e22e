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

from telematics.can.errors import CanDecodeError, DbcError, DbcMappingError
from telematics.can.frames import CanFrame
from telematics.can.signals import SIGNALS, SignalSample

EXTENDED_FLAG = 0x8000_0000  # how DBC files mark a 29-bit id, and our dict key for one

log = logging.getLogger(__name__)

MappingKey = str | tuple[int, str]


def frame_key(can_id: int, extended: bool) -> int:
    """Dict key of a frame id: 11-bit and 29-bit id spaces must not collide."""
    return can_id | EXTENDED_FLAG if extended else can_id


def load_dbc(text: str) -> tuple[Database, list[str]]:
    """Parse DBC text: strict first; a DBC that only fails the strict checks loads with a
    warning, because real files (opendbc's among them) often have overlapping signals that
    do not matter for the few a fleet maps.

    cantools reports both a syntax error and a strict-only problem (overlapping signals,
    signals past the frame end) as ``UnsupportedDatabaseFormatError``, so the lenient
    load decides which it was. Raises :class:`DbcError` with the parser's reason.
    """
    try:
        return cantools.database.load_string(text, database_format="dbc", strict=True), []
    except Exception as strict_exc:
        try:
            database = cantools.database.load_string(text, database_format="dbc", strict=False)
        except Exception as exc:
            # the DBC parser's own reason ("Invalid syntax at line 3, column 1: ..."),
            # without the wrapper that lists every format cantools tried
            reason = getattr(exc, "e_dbc", None) or exc
            raise DbcError(f"DBC does not parse: {reason}") from exc
        reason = getattr(strict_exc, "e_dbc", None) or strict_exc
        return database, [f"strict DBC check failed, loaded with strict=False: {reason}"]



def _some(names: list[str], limit: int = 12) -> str:
    """A readable, bounded list of names for an error message."""
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class DbcDecoder:
    """Decode frames a DBC defines into canonical signals.

    ``warnings`` lists what the loader forgave (e.g. overlapping signals). A DBC that
    does not parse raises :class:`DbcError`; a mapping that names a message, signal or
    canonical signal that does not exist raises :class:`DbcMappingError`, with the reason.
    """

    def __init__(self, dbc_text: str, mapping: Mapping[MappingKey, str]) -> None:
        database, warnings = load_dbc(dbc_text)
        self._build(database, mapping, warnings)

    @classmethod
    def from_database(
        cls,
        database: Database,
        mapping: Mapping[MappingKey, str],
        warnings: list[str] | None = None,
    ) -> DbcDecoder:
        """A decoder over an already parsed DBC (one parse, several mappings)."""
        decoder = cls.__new__(cls)
        decoder._build(database, mapping, list(warnings or []))
        return decoder

    def _build(
        self, database: Database, mapping: Mapping[MappingKey, str], warnings: list[str]
    ) -> None:
        self.warnings = warnings
        for warning in self.warnings:
            log.warning("%s", warning)
        self.database = database
        self._by_key: dict[int, tuple[Message, tuple[tuple[str, str, str], ...]]] = {}
        mapped: dict[int, list[tuple[str, str, str]]] = {}
        for key, canonical in mapping.items():
            message, signal_name = self._resolve(key)
            if not isinstance(canonical, str) or canonical not in SIGNALS:
                raise DbcMappingError(
                    f"mapping {key!r} targets unknown canonical signal {canonical!r};"
                    f" use one of: {', '.join(sorted(SIGNALS))}"
                )
            source = f"dbc:{message.name}.{signal_name}"
            mapped.setdefault(id(message), []).append((signal_name, canonical, source))
        for message in database.messages:
            key = frame_key(message.frame_id, message.is_extended_frame)
            self._by_key[key] = (message, tuple(mapped.get(id(message), ())))

    def _resolve(self, key: MappingKey) -> tuple[Message, str]:
        if isinstance(key, str) and "." not in key:
            raise DbcMappingError(
                f"mapping key {key!r} must name a message and a signal as 'Message.Signal'"
            )
        try:
            if isinstance(key, tuple):
                frame_id, signal_name = key
                # accept the DBC spelling of a 29-bit id (0x8CF004FE) as well as 0x0CF004FE
                message = self.database.get_message_by_frame_id(frame_id & ~EXTENDED_FLAG)
            else:
                message_name, _, signal_name = key.partition(".")
                message = self.database.get_message_by_name(message_name)
        except (KeyError, ValueError, TypeError, AttributeError):
            names = [m.name for m in self.database.messages]
            raise DbcMappingError(
                f"mapping {key!r} names a message the DBC does not define"
                f" (it defines {_some(names) or 'no messages'})"
            ) from None
        if not signal_name or all(s.name != signal_name for s in message.signals):
            raise DbcMappingError(
                f"mapping {key!r}: message {message.name} has no signal {signal_name!r}"
                f" (it has {_some([s.name for s in message.signals]) or 'no signals'})"
            )
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


DBC_MAX_BYTES = 5 * 1024 * 1024  # the largest opendbc file is under 1 MB
MAPPING_MAX_ENTRIES = 500


def dbc_text_from_upload(raw: bytes) -> str:
    """The text of an uploaded DBC file.

    DBC files are text, but the tools that write them disagree on the encoding: Vector's
    CANdb++ writes Windows-1252 (cantools reads files as cp1252 by default), newer tools
    UTF-8, some with a byte-order mark. UTF-8 is tried first because cp1252 would "decode"
    UTF-8 too, into mojibake; a byte cp1252 leaves undefined falls back to Latin-1, which
    decodes anything. A binary file is refused rather than parsed into a confusing error.
    """
    if len(raw) > DBC_MAX_BYTES:
        raise DbcError(f"the file has {len(raw):,} bytes; a DBC file of at most"
                       f" {DBC_MAX_BYTES // (1024 * 1024)} MB is accepted")
    if b"\x00" in raw:
        raise DbcError("the file holds NUL bytes, so it is not a DBC file (DBC is text)")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def check_mapping_shape(mapping: object) -> dict[str, str]:
    """A mapping as stored: ``{"Message.Signal": "<canonical signal key>"}``, strings only.

    Checked before the DBC is consulted, so that a list or a number in a JSON body gets a
    message about its shape rather than a confusing one about DBC contents.
    """
    if not isinstance(mapping, dict):
        raise DbcMappingError(
            'the mapping must be an object such as {"EEC1.EngSpeed": "engine_speed"},'
            f" got {type(mapping).__name__}")
    if len(mapping) > MAPPING_MAX_ENTRIES:
        raise DbcMappingError(f"the mapping has {len(mapping)} entries; at most"
                              f" {MAPPING_MAX_ENTRIES} are accepted")
    for key, value in mapping.items():
        if not isinstance(value, str):
            raise DbcMappingError(
                f"mapping {key!r} must name a signal key as a string, got {value!r}")
    return dict(mapping)
