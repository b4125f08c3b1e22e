"""Bodies that MQTT, CoAP and HTTP units send, by kind: ``position`` (JSON fixes),
``nmea`` (NMEA lines) and ``can`` (raw CAN frames: candump log lines or JSON).

Both transports address a unit as ``fleet/<identifier>/<kind>``; this module turns a
body of a kind into records, keeping the good parts of a partly bad body.
"""

from __future__ import annotations

from telematics.can.decoder import VehicleCanDecoder
from telematics.can.frames import parse_candump, parse_json_frames
from telematics.protocols.base import CommandResponse, Decoded, DecodeError
from telematics.protocols.jsonfix import decode_positions
from telematics.protocols.nmea import decode_lines

KINDS = ("position", "nmea", "can", "response")


class UnknownKind(DecodeError):
    pass


def decode_unit_message(
    kind: str, body: bytes, can_decoder: VehicleCanDecoder | None = None
) -> tuple[Decoded, list[str]]:
    """Records of one message and the errors of its bad parts (lines, entries, frames).

    Raises DecodeError when nothing in the body could be used. CAN bodies need the
    vehicle's decoder (it keeps multi-frame transfers between messages).
    """
    if kind == "can":
        return decode_can_body(body, can_decoder or VehicleCanDecoder())
    if kind == "position":
        return Decoded(fixes=decode_positions(body)), []
    if kind == "response":  # the unit's answer to a command (fleet.unit_commands)
        text = body.decode("utf-8", "backslashreplace").strip()
        if not text:
            raise DecodeError("Empty command response")
        return Decoded(responses=[CommandResponse(text=text[:10000])]), []
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


def decode_can_body(body: bytes, decoder: VehicleCanDecoder) -> tuple[Decoded, list[str]]:
    """Frames as candump log lines or ``{"frames": [...]}`` JSON, decoded to signals."""
    if body.lstrip()[:1] in (b"{", b"["):
        frames, errors = parse_json_frames(body)
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DecodeError(f"CAN body is neither JSON nor candump text (byte {error.start})") \
                from error
        frames, errors = parse_candump(text)
    if not frames:
        raise DecodeError("; ".join(errors[:5]) or "CAN body holds no frames")
    result = decoder.decode(frames)
    decoded = Decoded(samples=result.samples, faults=result.faults,
                      fault_reports=result.fault_reports)
    return decoded, errors + result.errors
