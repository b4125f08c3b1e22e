"""Bodies that MQTT and CoAP units send, by kind: ``position`` (JSON fixes), ``nmea``.

Both transports address a unit as ``fleet/<identifier>/<kind>``; this module turns a
body of a kind into records, keeping the good parts of a partly bad body.
"""

from __future__ import annotations

from telematics.protocols.base import Decoded, DecodeError
from telematics.protocols.jsonfix import decode_positions
from telematics.protocols.nmea import decode_lines

KINDS = ("position", "nmea")


class UnknownKind(DecodeError):
    pass


def decode_unit_message(kind: str, body: bytes) -> tuple[Decoded, list[str]]:
    """Records of one message and the errors of its bad parts (lines, entries).

    Raises DecodeError when nothing in the body could be used.
    """
    if kind == "position":
        return Decoded(fixes=decode_positions(body)), []
    if kind == "nmea":
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError as error:
            raise DecodeError(f"NMEA body is not ASCII text (byte {error.start})") from error
        fixes, errors = decode_lines(text)
        if not fixes and errors:
            raise DecodeError("; ".join(errors[:5]))
        return Decoded(fixes=fixes), errors
    raise UnknownKind(f"Unknown message kind {kind!r}: use one of {', '.join(KINDS)}")


def parse_topic(topic: str, root: str = "fleet") -> tuple[str, str] | None:
    """``fleet/<identifier>/<kind>`` → (identifier, kind); None for any other topic."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != root or not parts[1]:
        return None
    return parts[1], parts[2]
