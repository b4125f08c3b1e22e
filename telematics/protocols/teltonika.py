"""Teltonika FMB/FMC/FMM binary protocol: TCP sessions, UDP packets and Codec 12 commands.

Built to Teltonika's "Data Sending Protocols" wiki page (formerly "Codec"):

- TCP: the unit logs in with an IMEI frame (2-byte length + ASCII digits) and waits for
  ``01`` (accepted) or ``00`` (refused). Then it sends packets ``00000000 | data length (4) |
  codec id | number of data 1 | records | number of data 2 | CRC-16/IBM (4)`` and waits
  for the record count as a 4-byte big-endian integer before it drops them from its
  memory. Some firmware also sends a lone ``FF`` byte to keep the link open.
- UDP: every datagram carries the IMEI and no CRC; it is acknowledged with
  ``0005 | packet id | 01 | AVL packet id | record count``.
- Codecs: 8 (0x08), 8 Extended (0x8E: 2-byte IO ids and counts, plus variable-length
  "NX" elements) and 16 (0x10: 2-byte IO ids, a generation-type byte) carry records;
  12 (0x0C) carries server commands (type 0x05) and unit responses (type 0x06); 13
  (0x0D) carries unit text with a timestamp (serial "COM TCP link" mode).

Every IO element of a record is kept in ``Fix.attributes`` as ``io<ID>``: fixed-size
values as raw unsigned ints, Codec 8E NX values as lowercase hex, so the CAN/IO stage can
apply sign, multiplier and name from the unit's AVL ID table. A few AVL IDs (same on
FMB, FMC and FMM) also fill Fix fields or named attributes:

    ID   AVL ID name         raw unit     becomes
    16   Total Odometer      m            Fix.odometer_km
    21   GSM Signal          0-5          attributes["gsm_signal"]
    66   External Voltage    mV           attributes["power"] (V)
    67   Battery Voltage     mV           attributes["battery"] (V)
    78   iButton             8 bytes      attributes["driver_key"] (16 upper-case hex
                                          digits; 0 means no key and is left out)
    181  GNSS PDOP           x0.1         attributes["pdop"]
    182  GNSS HDOP           x0.1         Fix.hdop
    199  Trip Odometer       m            attributes["trip_odometer_km"]
    239  Ignition            0/1          Fix.ignition
    240  Movement            0/1          attributes["motion"]

A record taken without a GNSS fix repeats the last valid coordinates with angle,
satellites and speed 0, so ``Fix.valid`` is ``satellites != 0``.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

from telematics.protocols.base import CommandResponse, Decoded, DecodeError, Fix, FrameTooLarge

__all__ = [
    "TeltonikaError",
    "TeltonikaFrameTooLarge",
    "TeltonikaTcpSession",
    "crc16_ibm",
    "decode_udp",
    "encode_command",
]

CODEC_8 = 0x08
CODEC_8_EXTENDED = 0x8E
CODEC_16 = 0x10
CODEC_12 = 0x0C
CODEC_13 = 0x0D
CODEC_14 = 0x0E

COMMAND_TYPE = 0x05  # Codec 12: server -> unit
RESPONSE_TYPE = 0x06  # Codec 12/13: unit -> server

IMEI_ACCEPTED = b"\x01"
IMEI_REFUSED = b"\x00"
KEEPALIVE = b"\xff"

_PREAMBLE = b"\x00\x00\x00\x00"
# IMEIs are 15 digits; a little slack so IMEISV-style ids and test units still log in.
_IMEI_MIN_DIGITS = 8
_IMEI_MAX_DIGITS = 20
# Shortest data field: a Codec 12 packet with an empty command (codec, quantity, type,
# 4-byte size, quantity). Anything shorter is not a packet, so split() resynchronises.
_MIN_DATA_LENGTH = 8
# Codec ids split() accepts as a packet start; decode() still rejects the unsupported ones
# (Codec 14) with a clear message instead of shredding them into garbage chunks.
_FRAMED_CODECS = frozenset({CODEC_8, CODEC_8_EXTENDED, CODEC_16, CODEC_12, CODEC_13, CODEC_14})

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
# Timestamp (ms), priority, longitude, latitude, altitude, angle, satellites, speed.
_GPS = struct.Struct(">QBiihHBH")
_NX_HEADER = struct.Struct(">HH")  # IO id, value length
_RESPONSE_HEADER = struct.Struct(">BI")  # type, size
_UDP_HEADER = struct.Struct(">HHBBH")  # length, packet id, not usable, AVL packet id, IMEI length
_UDP_ACK = struct.Struct(">HHBBB")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TIMESTAMP_MS = (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) - _EPOCH) // timedelta(
    milliseconds=1
)


class TeltonikaError(DecodeError):
    """A Teltonika frame or packet that cannot be decoded; the message says what is wrong."""


class TeltonikaFrameTooLarge(FrameTooLarge, TeltonikaError):
    """A TCP packet announces more bytes than the session accepts: cut the connection."""


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc16_table()


def crc16_ibm(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/IBM (a.k.a. CRC-16/ARC: reflected poly 0xA001, init 0), Teltonika's checksum."""
    crc = 0
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


class _Layout:
    """How one AVL codec lays out a record's event id, IO counts and IO ids."""

    __slots__ = ("count", "elements", "has_nx", "header")

    def __init__(self, header: str, count: str, io_id: str, has_nx: bool) -> None:
        self.header = struct.Struct(">" + header)
        self.count = struct.Struct(">" + count)
        self.elements = tuple(struct.Struct(f">{io_id}{v}") for v in "BHIQ")
        self.has_nx = has_nx


_LAYOUTS = {
    # event IO id, total IO count | N1/N2/N4/N8 counts | IO ids
    CODEC_8: _Layout("BB", "B", "B", has_nx=False),
    CODEC_8_EXTENDED: _Layout("HH", "H", "H", has_nx=True),
    # event IO id, generation type, total IO count | counts | IO ids
    CODEC_16: _Layout("HBB", "B", "H", has_nx=False),
}


def _fix_time(ms: int) -> datetime:
    if ms > _MAX_TIMESTAMP_MS:
        raise TeltonikaError(f"record timestamp {ms} ms is beyond year 9999")
    return _EPOCH + timedelta(milliseconds=ms)


def _read_record(data: bytes, pos: int, layout: _Layout) -> tuple[Fix, int]:
    """One AVL record at ``pos``; returns it and the position after it.

    Short input surfaces as struct.error/IndexError, turned into TeltonikaError by the caller.
    """
    ms, priority, longitude, latitude, altitude, angle, satellites, speed = _GPS.unpack_from(
        data, pos
    )
    pos += 24
    header = layout.header.unpack_from(data, pos)
    pos += layout.header.size
    attributes: dict[str, object] = {"priority": priority, "event_io": header[0]}
    if len(header) == 3:
        attributes["generation_type"] = header[1]

    # The total IO count in the header is not checked: the groups delimit themselves, and
    # the CRC plus the exact end-of-records check already catch corrupt packets.
    io: dict[int, int] = {}
    count = layout.count
    for element in layout.elements:
        (n,) = count.unpack_from(data, pos)
        pos += count.size
        unpack = element.unpack_from
        size = element.size
        for _ in range(n):
            io_id, value = unpack(data, pos)
            io[io_id] = value
            pos += size
    for io_id, value in io.items():
        attributes[f"io{io_id}"] = value

    if layout.has_nx:
        (n,) = _U16.unpack_from(data, pos)
        pos += 2
        for _ in range(n):
            io_id, length = _NX_HEADER.unpack_from(data, pos)
            pos += 4
            if pos + length > len(data):
                raise TeltonikaError(f"IO {io_id} announces {length} bytes past the packet end")
            attributes[f"io{io_id}"] = data[pos : pos + length].hex()
            pos += length

    fix = Fix(
        fix_time=_fix_time(ms),
        latitude=latitude / 10_000_000,
        longitude=longitude / 10_000_000,
        altitude=altitude,
        speed_kmh=speed,
        course=angle,
        satellites=satellites,
        valid=satellites != 0,
        attributes=attributes,
    )
    if io:
        _apply_well_known(io, fix, attributes)
    return fix, pos


def _apply_well_known(io: dict[int, int], fix: Fix, attributes: dict[str, object]) -> None:
    """Fill Fix fields and named attributes from the AVL IDs in the module docstring table."""
    get = io.get
    if (value := get(239)) is not None:
        fix.ignition = value != 0
    if (value := get(240)) is not None:
        attributes["motion"] = value != 0
    if (value := get(16)) is not None:
        fix.odometer_km = value / 1000
    if (value := get(182)) is not None:
        fix.hdop = value / 10
    if (value := get(181)) is not None:
        attributes["pdop"] = value / 10
    if (value := get(21)) is not None:
        attributes["gsm_signal"] = value
    if (value := get(66)) is not None:
        attributes["power"] = value / 1000
    if (value := get(67)) is not None:
        attributes["battery"] = value / 1000
    if value := get(78):
        attributes["driver_key"] = f"{value:016X}"
    if (value := get(199)) is not None:
        attributes["trip_odometer_km"] = value / 1000


def _read_records(data: bytes, start: int, end: int) -> list[Fix]:
    """The records of ``data[start:end]``: codec id, number of data 1, records, number of data 2."""
    if end - start < 3:
        raise TeltonikaError(f"AVL data of {end - start} bytes is too short")
    codec = data[start]
    layout = _LAYOUTS.get(codec)
    if layout is None:
        raise TeltonikaError(f"codec 0x{codec:02X} carries no records")
    count, count_2 = data[start + 1], data[end - 1]
    if count != count_2:
        raise TeltonikaError(f"number of data 1 ({count}) != number of data 2 ({count_2})")
    if count == 0:
        raise TeltonikaError("packet holds no records")

    fixes = []
    pos = start + 2
    for index in range(1, count + 1):
        try:
            fix, pos = _read_record(data, pos, layout)
        except (struct.error, IndexError):
            raise TeltonikaError(f"record {index} of {count} runs past the packet end") from None
        if pos > end - 1:
            raise TeltonikaError(f"record {index} of {count} runs into number of data 2")
        fixes.append(fix)
    if pos != end - 1:
        raise TeltonikaError(f"{end - 1 - pos} unparsed bytes after record {count}")
    return fixes


def _response_text(payload: bytes) -> str:
    # Units answer in ASCII; anything else is kept readable and lossless.
    return payload.decode("utf-8", "backslashreplace").rstrip("\r\n")


def _read_responses(frame: bytes, codec: int) -> list[CommandResponse]:
    """Codec 12 / 13 messages from the unit: quantity, (type, size, payload)..., quantity."""
    end = len(frame) - 5  # position of the second quantity
    count, count_2 = frame[9], frame[end]
    if count != count_2:
        raise TeltonikaError(f"response quantity 1 ({count}) != quantity 2 ({count_2})")
    if count == 0:
        raise TeltonikaError("packet holds no responses")
    responses = []
    pos = 10
    for _ in range(count):
        if pos + 5 > end:
            raise TeltonikaError("response header runs past the packet end")
        kind, size = _RESPONSE_HEADER.unpack_from(frame, pos)
        pos += 5
        if kind != RESPONSE_TYPE:
            what = "a server command" if kind == COMMAND_TYPE else "unsupported"
            raise TeltonikaError(f"codec 0x{codec:02X} message type 0x{kind:02X} is {what}")
        if pos + size > end:
            raise TeltonikaError(f"response of {size} bytes runs past the packet end")
        payload = frame[pos : pos + size]
        pos += size
        if codec == CODEC_13:
            # The wiki calls it milliseconds, but 4 bytes only fit seconds (as units send).
            if size < 4:
                raise TeltonikaError(f"Codec 13 message of {size} bytes has no timestamp")
            (seconds,) = _U32.unpack_from(payload)
            responses.append(
                CommandResponse(
                    text=_response_text(payload[4:]),
                    received_time=_EPOCH + timedelta(seconds=seconds),
                )
            )
        else:
            responses.append(CommandResponse(text=_response_text(payload)))
    if pos != end:
        raise TeltonikaError(f"{end - pos} unparsed bytes after the responses")
    return responses


def _read_packet(frame: bytes) -> Decoded:
    """A complete TCP packet: preamble, data length, codec data, CRC."""
    size = len(frame)
    if size < 12 + 3:
        raise TeltonikaError(f"packet of {size} bytes is too short")
    (length,) = _U32.unpack_from(frame, 4)
    if length + 12 != size:
        raise TeltonikaError(f"data length {length} does not fit a packet of {size} bytes")
    (crc_field,) = _U32.unpack_from(frame, size - 4)
    crc = crc16_ibm(memoryview(frame)[8 : size - 4])
    if crc_field != crc:
        raise TeltonikaError(f"CRC mismatch: frame 0x{crc_field:04X}, computed 0x{crc:04X}")
    codec = frame[8]
    if codec in _LAYOUTS:
        fixes = _read_records(frame, 8, size - 4)
        return Decoded(fixes=fixes, reply=_U32.pack(len(fixes)))
    if codec in (CODEC_12, CODEC_13):
        if size < 12 + _MIN_DATA_LENGTH:
            raise TeltonikaError(f"codec 0x{codec:02X} packet of {size} bytes is too short")
        return Decoded(responses=_read_responses(frame, codec))
    raise TeltonikaError(f"unsupported codec 0x{codec:02X}")


def _read_imei(data: bytes, start: int, length: int) -> str:
    imei = data[start : start + length]
    if len(imei) != length:
        raise TeltonikaError(f"IMEI of {length} digits runs past the end")
    if not _IMEI_MIN_DIGITS <= length <= _IMEI_MAX_DIGITS or not imei.isdigit():
        raise TeltonikaError(f"IMEI {imei!r} is not {_IMEI_MIN_DIGITS}-{_IMEI_MAX_DIGITS} digits")
    return imei.decode("ascii")


class _Unframed(bytes):
    """Bytes split() could not frame: decode() rejects them with the reason split() saw.

    Marking them matters for content that would decode on its own, e.g. an AVL packet
    sent before the IMEI login, or a second IMEI frame after it.
    """

    reason: str


class TeltonikaTcpSession:
    """One TCP connection: frames the byte stream and decodes its frames.

    The only state is whether the IMEI frame has gone by, because it decides what a
    plausible frame start looks like (an IMEI frame first, packets after it).
    """

    def __init__(self, max_frame: int = 65536) -> None:
        self.max_frame = max_frame
        self._logged_in = False

    def split(self, buffer: bytearray) -> list[bytes]:
        """Cut every complete frame off the front of ``buffer``; leave an incomplete tail.

        Bytes that cannot start a frame come out as one chunk up to the next plausible
        frame start, so decode() rejects them and the listener counts them, and the good
        frames after them still arrive. Raises TeltonikaFrameTooLarge when a packet header
        announces more than ``max_frame`` bytes (frames cut before it in this call go with
        it; never acknowledged, the unit sends them again).
        """
        frames: list[bytes] = []
        pos = 0
        end = len(buffer)
        try:
            while pos < end:
                size = self._frame_size(buffer, pos)
                if isinstance(size, str):
                    stop = self._next_frame_start(buffer, pos + 1)
                    chunk = _Unframed(buffer[pos:stop])
                    chunk.reason = size
                    frames.append(chunk)
                    pos = stop
                    continue
                if size > self.max_frame:
                    raise TeltonikaFrameTooLarge(
                        f"packet of {size} bytes exceeds the {self.max_frame}-byte limit"
                    )
                if size == 0 or pos + size > end:
                    break
                frame = bytes(buffer[pos : pos + size])
                frames.append(frame)
                pos += size
                if frame != KEEPALIVE:
                    self._logged_in = True  # the first real frame is the IMEI frame
        finally:
            del buffer[:pos]
        return frames

    def decode(self, frame: bytes) -> Decoded:
        """Decode one frame from split(): IMEI login, AVL packet, Codec 12/13 response."""
        if isinstance(frame, _Unframed):
            raise TeltonikaError(f"{len(frame)} bytes not framed: {frame.reason}")
        if frame[:4] == _PREAMBLE:
            return _read_packet(frame)
        if frame == KEEPALIVE:
            return Decoded(events=[{"type": "keepalive"}])
        if len(frame) >= 2 and frame[0] == 0:
            (length,) = _U16.unpack_from(frame)
            if len(frame) != length + 2:
                raise TeltonikaError(f"IMEI frame of {len(frame)} bytes announces {length}")
            imei = _read_imei(frame, 2, length)
            return Decoded(identifier=imei, reply=IMEI_ACCEPTED, refusal=IMEI_REFUSED)
        raise TeltonikaError(f"not a Teltonika frame: {frame[:16].hex()}")

    def _frame_size(self, buffer: bytearray, pos: int) -> int | str:
        """Size of the frame starting at ``pos``; 0 if more bytes are needed to tell.

        A str says why ``pos`` cannot start a frame. Each check looks only at bytes
        already there, so the answer does not depend on how the stream was chunked.
        """
        if buffer[pos] == 0xFF:
            return 1
        if not self._logged_in:
            return _imei_frame_size(buffer, pos)
        return _packet_size(buffer, pos)

    def _next_frame_start(self, buffer: bytearray, pos: int) -> int:
        """The first position from ``pos`` on that may start a frame (or the buffer end)."""
        end = len(buffer)
        frame_size = _packet_size if self._logged_in else _imei_frame_size
        while pos < end:
            # Both IMEI frames (length < 256) and packets (preamble) start with a zero byte.
            pos = buffer.find(0, pos)
            if pos < 0:
                return end
            if not isinstance(frame_size(buffer, pos), str):
                return pos
            pos += 1
        return end


def _imei_frame_size(buffer: bytearray, pos: int) -> int | str:
    head = bytes(buffer[pos : pos + 2 + _IMEI_MAX_DIGITS])
    if head[0] != 0:
        return "expected the IMEI frame"
    if len(head) < 2:
        return 0
    length = head[1]
    if not _IMEI_MIN_DIGITS <= length <= _IMEI_MAX_DIGITS:
        return f"IMEI frame announces {length} digits"
    digits = head[2 : 2 + length]
    if digits and not digits.isdigit():
        return "IMEI frame holds non-digits"
    if len(digits) < length:
        return 0
    return length + 2


def _packet_size(buffer: bytearray, pos: int) -> int | str:
    head = bytes(buffer[pos : pos + 10])
    if not _PREAMBLE.startswith(head[:4]):
        return "expected a 00000000 packet preamble"
    if len(head) < 8:
        return 0
    (length,) = _U32.unpack_from(head, 4)
    if length < _MIN_DATA_LENGTH:
        return f"packet announces {length} data bytes"
    if len(head) < 9:
        return 0
    if head[8] not in _FRAMED_CODECS:
        return f"packet announces unknown codec 0x{head[8]:02X}"
    if len(head) < 10:
        return 0
    if head[9] == 0:
        return "packet announces 0 records"
    return length + 12


def decode_udp(packet: bytes) -> Decoded:
    """Decode one UDP datagram: header with the IMEI, then AVL data without a CRC.

    The reply echoes the packet id and AVL packet id, as the wiki shows; the unit resends
    the datagram when the acknowledgement does not match.
    """
    if len(packet) < _UDP_HEADER.size:
        raise TeltonikaError(f"UDP packet of {len(packet)} bytes is too short")
    length, packet_id, _not_usable, avl_packet_id, imei_length = _UDP_HEADER.unpack_from(packet)
    if length != len(packet) - 2:
        raise TeltonikaError(f"UDP length {length} does not fit a packet of {len(packet)} bytes")
    imei = _read_imei(packet, _UDP_HEADER.size, imei_length)
    fixes = _read_records(packet, _UDP_HEADER.size + imei_length, len(packet))
    reply = _UDP_ACK.pack(5, packet_id, 0x01, avl_packet_id, len(fixes))
    return Decoded(identifier=imei, fixes=fixes, reply=reply, refusal=None)


def encode_command(text: str) -> bytes:
    """A Codec 12 command frame (type 0x05) for the unit, e.g. ``getinfo`` or ``setdigout 1``.

    Units parse commands as ASCII, so anything else raises ValueError rather than reach
    the unit garbled.
    """
    if not text:
        raise ValueError("empty command")
    try:
        command = text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"command {text!r} is not ASCII") from None
    body = bytes((CODEC_12, 1, COMMAND_TYPE)) + _U32.pack(len(command)) + command + b"\x01"
    return _PREAMBLE + _U32.pack(len(body)) + body + _U32.pack(crc16_ibm(body))
