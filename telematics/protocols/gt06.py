"""Concox GT06 binary protocol (GT06/GT06N, GT02, JM01, EG02/EG03, JM-VL and clones).

Built to the Concox documents "GPS Tracker Communication Protocol (GT06)" v1.8.1 and
"GPS Tracker Communication Protocol (JM-VL02 ... EG02, EG03, JM01 ...)" V3.1, with the
4G packets of the JM-VL03 protocol V1.1.2.

Framing: ``0x7878`` + 1-byte length or ``0x7979`` + 2-byte length, then protocol number,
content, 2-byte serial number, 2-byte CRC-ITU and the stop bits ``0x0D0A``. The length
counts protocol number + content + serial + CRC; the CRC (CRC-16/X-25) covers everything
from the length to the serial. Some units announce a length two bytes short of what they
send (their CRC still covers every byte); such frames are accepted since the CRC proves
them whole.

Which packets the server answers, following the vendor documents (an answer is the 5-byte
acknowledgement ``<start> 05 <protocol> <serial> <crc> 0D0A`` echoing the unit's protocol
number and serial, in the unit's own start bits):

- answered: login 0x01 ("the terminal reboots after 3 unanswered logins"), heartbeat 0x13
  and the EG02/EG03 heartbeat 0x23 (same rule), alarms 0x16, 0x26, 0x27, the 4G alarm
  0xA4 and the LBS alarm 0x19 ("server response ... after receiving the alarm content").
  An alarm whose language byte is 0x00 says it needs no answer; it still gets one, since
  an extra acknowledgement is harmless and a missing one makes units resend.
- not answered: locations 0x10, 0x11, 0x12, 0x22, 0xA0 ("location packet server no
  response"), LBS 0x28 and 0xA1 ("no need to reply"), Wi-Fi 0x2C ("no need to respond"),
  information 0x94 ("server no response"), command responses 0x15/0x21, time requests 0x8A
  (optional, and the answer needs the server clock), address requests 0x1A/0x2A (the
  answer is an address text this decoder cannot produce), external devices 0x9B, and any
  unknown protocol number (the documents give no generic acknowledgement rule).

A login is answered only once the transport accepts the IMEI; an unknown unit gets no
answer at all (``refusal`` is ``None``).

Times are taken as UTC, which 0x22/0x26/0x27/0x28 state and which older units send unless
configured otherwise. The mileage field's unit is not given by the vendor, so it is kept
raw in ``attributes["mileage"]`` rather than guessed into ``odometer_km``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from telematics.protocols.base import CommandResponse, Decoded, DecodeError, Fix, FrameTooLarge

__all__ = ["Gt06Error", "Gt06Session", "crc_itu", "encode_command", "encode_reply"]


class Gt06Error(DecodeError):
    """A GT06 frame that is noise, damaged, or too malformed to read."""


SHORT_START = b"\x78\x78"
LONG_START = b"\x79\x79"
STOP = b"\r\n"
# Protocol number + serial + CRC: the least a declared length can count.
_MIN_LENGTH = 5

LOGIN = 0x01
GPS = 0x10
GPS_LBS_LONG = 0x11
GPS_LBS = 0x12
HEARTBEAT = 0x13
COMMAND_RESPONSE = 0x15
GPS_LBS_ALARM = 0x16
LBS_ALARM = 0x19
GPS_PHONE = 0x1A
COMMAND_RESPONSE_LONG = 0x21
GPS_LBS_UTC = 0x22
HEARTBEAT_EG = 0x23
ALARM_UTC = 0x26
ALARM_FENCES = 0x27
LBS_MULTIPLE = 0x28
GPS_ADDRESS = 0x2A
WIFI = 0x2C
COMMAND = 0x80
TIME_REQUEST = 0x8A
INFORMATION = 0x94
EXTERNAL_DEVICE = 0x9B
GPS_LBS_4G = 0xA0
LBS_MULTIPLE_4G = 0xA1
ALARM_FENCES_4G = 0xA4

# Packets the server acknowledges (see the module docstring for the vendor's words).
_ANSWERED = frozenset((LOGIN, HEARTBEAT, HEARTBEAT_EG))
_ANSWERED |= {GPS_LBS_ALARM, LBS_ALARM, ALARM_UTC, ALARM_FENCES, ALARM_FENCES_4G}

# Alarm byte of "alarm/language" (V3.1 alarm table; v1.8.1 defines 0x01..0x05).
ALARMS: dict[int, str] = {
    0x01: "sos",
    0x02: "power_cut",
    0x03: "vibration",
    0x04: "geofence_enter",
    0x05: "geofence_exit",
    0x06: "overspeed",
    0x09: "movement",
    0x0A: "gps_blind_spot_enter",
    0x0B: "gps_blind_spot_exit",
    0x0C: "power_on",
    0x0D: "gps_first_fix",
    0x0E: "low_external_battery",
    0x0F: "external_battery_protection",
    0x10: "sim_change",
    0x11: "power_off",
    0x12: "airplane_mode",
    0x13: "tampering",
    0x14: "door",
    0x15: "low_battery_shutdown",
    0x16: "sound",
    0x17: "fake_base_station",
    0x18: "cover_open",
    0x19: "low_battery",
    0x20: "sleep_mode",
    0x23: "fall",
    0x24: "charger_inserted",
    0x29: "harsh_acceleration",
    0x2A: "sharp_left_turn",
    0x2B: "sharp_right_turn",
    0x2C: "collision",
    0x2D: "rollover",
    0x30: "harsh_braking",
    0x32: "unplugged",
    0x3C: "car_theft",
    0x3D: "illegal_start",
    0x3E: "button",
    0x4B: "tilt",
    0x4C: "sharp_turn",
    0x4D: "lane_change",
    0x4E: "vehicle_stability",
    0x4F: "vehicle_angle",
    0x5E: "pulse_line_cut",
    0xFE: "acc_on",
    0xFF: "acc_off",
}

# Bits 3-5 of the terminal information byte.
TERMINAL_ALARMS: dict[int, str] = {1: "vibration", 2: "power_cut", 3: "low_battery", 4: "sos"}

LANGUAGES: dict[int, str] = {0x01: "chinese", 0x02: "english"}

_GPS_BLOCK = struct.Struct(">6sBIIBH")  # date-time, length/satellites, lat, lon, speed, course
_STATUS = struct.Struct(">BBBBB")  # terminal info, voltage level, GSM, alarm, language
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


# --- CRC-ITU ----------------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    """The vendor's 256-entry table (Appendix 1), computed rather than copied."""
    table = []
    for byte in range(256):
        value = byte
        for _ in range(8):
            value = (value >> 1) ^ 0x8408 if value & 1 else value >> 1
        table.append(value)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc_itu(data: bytes) -> int:
    """CRC-16/X-25, the vendor's "CRC-ITU": init 0xFFFF, reflected 0x1021, result negated."""
    fcs = 0xFFFF
    for byte in data:
        fcs = (fcs >> 8) ^ _CRC_TABLE[(fcs ^ byte) & 0xFF]
    return fcs ^ 0xFFFF


# --- server packets -----------------------------------------------------------------------


def _packet(protocol: int, content: bytes, serial: int, *, long_frame: bool = False) -> bytes:
    """One framed packet: start bits, length, protocol, content, serial, CRC, stop bits."""
    length = 1 + len(content) + 2 + 2
    start = LONG_START if long_frame else SHORT_START
    size = _U16.pack(length) if long_frame else bytes([length])
    body = size + bytes([protocol]) + content + _U16.pack(serial)
    return start + body + _U16.pack(crc_itu(body)) + STOP


def encode_reply(protocol: int, serial: int, *, long_frame: bool = False) -> bytes:
    """The server's acknowledgement of a unit packet: its protocol number and serial echoed.

    Units wait for it after a login, heartbeat or alarm and reconnect (or reboot after
    three misses) when it does not come.
    """
    if not 0 <= protocol <= 0xFF or not 0 <= serial <= 0xFFFF:
        raise ValueError(f"protocol {protocol} or serial {serial} out of range")
    return _packet(protocol, b"", serial, long_frame=long_frame)


def encode_command(text: str, serial: int, server_flag: int = 0) -> bytes:
    """An online command (protocol 0x80) carrying an SMS-style text such as ``DYD,000000#``.

    The unit echoes ``server_flag`` in its 0x15/0x21 answer, so the server can tell which
    command an answer belongs to. The optional language field is left out: the vendor
    shows both forms working, and units of every generation accept the short one.
    """
    try:
        command = text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise ValueError("GT06 commands are ASCII text") from exc
    if not 0 <= serial <= 0xFFFF:
        raise ValueError(f"serial {serial} does not fit in 2 bytes")
    if not 0 <= server_flag <= 0xFFFFFFFF:
        raise ValueError(f"server flag {server_flag} does not fit in 4 bytes")
    # A 1-byte packet length: 1 protocol + 1 command length + 4 flag + text + 2 + 2 <= 255.
    if len(command) > 245:
        raise ValueError(f"command of {len(command)} bytes is over the 245 a packet holds")
    content = bytes([4 + len(command)]) + _U32.pack(server_flag) + command
    return _packet(COMMAND, content, serial)


# --- framing ------------------------------------------------------------------------------


def _header_size(start: bytes) -> int:
    return 3 if start == SHORT_START else 4


def _declared_length(buffer: bytes | bytearray, at: int, header: int) -> int:
    if header == 3:
        return buffer[at + 2]
    return (buffer[at + 2] << 8) | buffer[at + 3]


def _next_start(buffer: bytearray, begin: int) -> int:
    """Where the next start bits are, or how much of a start-less buffer is surely noise."""
    found = [i for i in (buffer.find(SHORT_START, begin), buffer.find(LONG_START, begin)) if i >= 0]
    if found:
        return min(found)
    if buffer and buffer[-1] in (0x78, 0x79):
        return max(len(buffer) - 1, 1)  # the last byte may begin the next frame
    return len(buffer)


def _sound_frame_at(buffer: bytearray, at: int) -> int | None:
    """Size of a complete frame at ``at`` whose stop bits and CRC check out, else None."""
    header = _header_size(bytes(buffer[at : at + 2]))
    if len(buffer) < at + header:
        return None
    declared = _declared_length(buffer, at, header)
    if declared < _MIN_LENGTH:
        return None
    for size in (header + declared + 2, header + declared + 4):
        end = at + size
        if end <= len(buffer) and buffer[end - 2 : end] == STOP and _crc_ok(buffer, at, size):
            return size
    return None


def _sound_frame_after(buffer: bytearray, begin: int, before: int | None = None) -> bool:
    """Whether a whole, CRC-valid frame starts at or after ``begin`` (and before ``before``)."""
    limit = len(buffer) - 1 if before is None else min(before, len(buffer) - 1)
    at = _next_start(buffer, begin)
    while at < limit:
        if _sound_frame_at(buffer, at) is not None:
            return True
        at = _next_start(buffer, at + 1)
    return False


def _crc_ok(buffer: bytearray, at: int, size: int) -> bool:
    """Whether the frame of ``size`` bytes at ``at`` carries the CRC of its bytes."""
    end = at + size
    received = (buffer[end - 4] << 8) | buffer[end - 3]
    return crc_itu(bytes(buffer[at + 2 : end - 4])) == received


# --- packet content helpers ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Packet:
    protocol: int
    content: bytes
    serial: int
    long_frame: bool

    def reply(self) -> bytes | None:
        if self.protocol not in _ANSWERED:
            return None
        return encode_reply(self.protocol, self.serial, long_frame=self.long_frame)

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "protocol": self.protocol, "serial": self.serial, **fields}

    def need(self, size: int, what: str) -> None:
        if len(self.content) < size:
            raise Gt06Error(
                f"0x{self.protocol:02X} {what} needs {size} content bytes,"
                f" the packet has {len(self.content)}"
            )


def _time(raw: bytes) -> datetime | None:
    """YY MM DD hh mm ss in binary, UTC; None when the unit sent an impossible date."""
    year, month, day, hour, minute, second = raw
    try:
        return datetime(2000 + year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _bcd(raw: bytes) -> str:
    """Digits of a BCD field (IMEI, IMSI); the vendor pads 15 digits with a leading 0."""
    digits = raw.hex()
    if not digits.isdigit():
        raise Gt06Error(f"BCD field {digits!r} holds a non-decimal digit")
    return digits.removeprefix("0")


def _language(code: int) -> str | int:
    return LANGUAGES.get(code, code)


def _terminal_info(info: int) -> dict[str, Any]:
    """The terminal information byte shared by heartbeats and alarms."""
    return {
        "oil_cut": bool(info & 0x80),
        "gps_tracking": bool(info & 0x40),
        "charging": bool(info & 0x04),
        "ignition": bool(info & 0x02),
        "armed": bool(info & 0x01),
    }


def _status(content: bytes, at: int) -> dict[str, Any]:
    """Terminal info, voltage level, GSM signal and alarm/language of alarm packets."""
    info, voltage, gsm, alarm, language = _STATUS.unpack_from(content, at)
    status = _terminal_info(info)
    status.update(voltage_level=voltage, gsm_signal=gsm, alarm_code=alarm)
    status["language"] = _language(language)
    name = ALARMS.get(alarm) or TERMINAL_ALARMS.get((info >> 3) & 0x07)
    if name:
        status["alarm"] = name
    return status


def _lbs(content: bytes, at: int, *, fourth_generation: bool = False) -> tuple[dict, int]:
    """MCC, MNC, LAC and cell id; returns them and the offset after them.

    An MCC with bit 15 set announces a 2-byte MNC (JM-VL03); 4G packets carry a 4-byte
    LAC and an 8-byte cell id.
    """
    (mcc,) = _U16.unpack_from(content, at)
    at += 2
    if mcc & 0x8000:
        (mnc,) = _U16.unpack_from(content, at)
        at += 2
    else:
        mnc = content[at]
        at += 1
    if fourth_generation:
        lac, cell_id = struct.unpack_from(">IQ", content, at)
        at += 12
    else:
        lac, cell_hi, cell_lo = struct.unpack_from(">HBH", content, at)
        cell_id = (cell_hi << 16) | cell_lo
        at += 5
    return {"mcc": mcc & 0x7FFF, "mnc": mnc, "lac": lac, "cell_id": cell_id}, at


def _lbs_with_length(content: bytes, at: int, *, fourth_generation: bool) -> tuple[dict, int]:
    """The cell of alarm packets, after a length byte; returns it and the offset after it.

    The vendor's own examples disagree on whether the length counts itself (0x09 in the
    0x26 example, 0x08 in the 0x27 one, for the same 9 bytes), so the cell is read at its
    fixed layout, 0 means no cell, and only a length beyond the layout skips extra bytes.
    """
    length = content[at]
    if length == 0:
        return {}, at + 1
    cell, end = _lbs(content, at + 1, fourth_generation=fourth_generation)
    return cell, max(end, at + length)


def _gps(packet: _Packet) -> tuple[datetime | None, dict[str, Any]]:
    """The 18-byte GPS block every position packet starts with."""
    raw_time, sizes, lat_raw, lon_raw, speed, course_status = _GPS_BLOCK.unpack_from(
        packet.content, 0
    )
    latitude = lat_raw / 30000 / 60
    longitude = lon_raw / 30000 / 60
    if not course_status & 0x0400:  # bit 2 of byte 1: north latitude
        latitude = -latitude
    if course_status & 0x0800:  # bit 3 of byte 1: west longitude
        longitude = -longitude
    gps = {
        "latitude": latitude,
        "longitude": longitude,
        "speed_kmh": float(speed),
        "course": float(course_status & 0x03FF),
        "satellites": sizes & 0x0F,
        "valid": bool(course_status & 0x1000),
        "gps_info_length": sizes >> 4,
        "differential": bool(course_status & 0x2000),
    }
    return _time(raw_time), gps


def _position(
    packet: _Packet, kind: str, moment: datetime | None, gps: dict[str, Any], extra: dict
) -> Decoded:
    """A Fix when time and coordinates are usable, else the same facts as an event."""
    ignition = extra.pop("ignition", None)
    if moment is None or abs(gps["latitude"]) > 90 or abs(gps["longitude"]) > 180:
        fields = {**gps, **extra, "ignition": ignition, "fix_time": _iso(moment)}
        return Decoded(
            events=[packet.event(kind, usable_fix=False, **fields)], reply=packet.reply()
        )
    fix = Fix(
        fix_time=moment,
        latitude=gps["latitude"],
        longitude=gps["longitude"],
        speed_kmh=gps["speed_kmh"],
        course=gps["course"],
        satellites=gps["satellites"],
        valid=gps["valid"],
        ignition=ignition,
        attributes={
            "gps_info_length": gps["gps_info_length"],
            "differential": gps["differential"],
            **extra,
        },
    )
    return Decoded(fixes=[fix], reply=packet.reply())


def _trailer(tail: bytes) -> dict[str, Any]:
    """ACC, upload mode, re-upload flag and mileage after the cell of 0x12/0x22/0xA0."""
    fields: dict[str, Any] = {}
    if len(tail) in (3, 7):
        fields.update(ignition=tail[0] == 0x01, upload_mode=tail[1], reupload=tail[2] == 0x01)
        tail = tail[3:]
    if len(tail) == 4:
        fields["mileage"] = _U32.unpack(tail)[0]
    return fields


# --- packet decoders ------------------------------------------------------------------------


def _login(packet: _Packet) -> Decoded:
    packet.need(8, "login")
    imei = _bcd(packet.content[:8])
    event = packet.event("login", imei=imei)
    if len(packet.content) >= 10:
        event["model"] = _U16.unpack_from(packet.content, 8)[0]
    if len(packet.content) >= 12:
        (zone,) = _U16.unpack_from(packet.content, 10)
        hours, minutes = divmod(zone >> 4, 100)
        offset = hours * 60 + minutes
        event["timezone_minutes"] = -offset if zone & 0x08 else offset
        event["language"] = "chinese" if zone & 0x02 else "english" if zone & 0x01 else None
    return Decoded(identifier=imei, events=[event], reply=packet.reply(), refusal=None)


def _heartbeat(packet: _Packet) -> Decoded:
    """0x13: terminal info, voltage level 0-6, GSM 0-4, alarm/language (or port status)."""
    packet.need(3, "heartbeat")
    content = packet.content
    event = packet.event("heartbeat", **_terminal_info(content[0]))
    event.update(voltage_level=content[1], gsm_signal=content[2])
    if len(content) >= 5:
        event.update(alarm_code=content[3], language=_language(content[4]))
    return Decoded(events=[event], reply=packet.reply())


def _heartbeat_eg(packet: _Packet) -> Decoded:
    """0x23 (EG02/EG03): the voltage level byte is replaced by the external voltage."""
    packet.need(4, "heartbeat")
    content = packet.content
    event = packet.event("heartbeat", **_terminal_info(content[0]))
    event.update(external_voltage=_U16.unpack_from(content, 1)[0] / 100, gsm_signal=content[3])
    if len(content) >= 6:
        event["language"] = _language(content[5])
    return Decoded(events=[event], reply=packet.reply())


def _location(packet: _Packet) -> Decoded:
    """0x10 GPS; 0x12/0x22 GPS + cell; 0x11 with a long cell; 0xA0 with a 4G cell."""
    if not packet.content:
        return Decoded(events=[packet.event("location", empty=True)], reply=packet.reply())
    packet.need(_GPS_BLOCK.size, "location")
    moment, gps = _gps(packet)
    extra: dict[str, Any] = {}
    if packet.protocol == GPS_LBS_LONG:
        packet.need(28, "location")
        mcc, mnc, lac, cell_id = struct.unpack_from(">HHHI", packet.content, 18)
        extra.update(mcc=mcc, mnc=mnc, lac=lac, cell_id=cell_id)
    elif packet.protocol != GPS:
        packet.need(_GPS_BLOCK.size + 8, "location")
        cell, end = _lbs(
            packet.content, _GPS_BLOCK.size, fourth_generation=packet.protocol == GPS_LBS_4G
        )
        extra.update(cell)
        extra.update(_trailer(packet.content[end:]))
    return _position(packet, "location", moment, gps, extra)


def _alarm(packet: _Packet) -> Decoded:
    """0x16/0x26: GPS, cell with length, status; 0x27/0xA4 add a fence number."""
    if not packet.content:
        return Decoded(events=[packet.event("alarm", empty=True)], reply=packet.reply())
    packet.need(_GPS_BLOCK.size + 1, "alarm")
    moment, gps = _gps(packet)
    cell, at = _lbs_with_length(
        packet.content, _GPS_BLOCK.size, fourth_generation=packet.protocol == ALARM_FENCES_4G
    )
    packet.need(at + _STATUS.size, "alarm")
    extra = {**cell, **_status(packet.content, at)}
    at += _STATUS.size
    if packet.protocol in (ALARM_FENCES, ALARM_FENCES_4G) and at < len(packet.content):
        fence = packet.content[at]
        extra["fence"] = None if fence == 0xFF else fence
        at += 1
    if len(packet.content) - at == 4:
        extra["mileage"] = _U32.unpack_from(packet.content, at)[0]
    return _position(packet, "alarm", moment, gps, extra)


def _lbs_alarm(packet: _Packet) -> Decoded:
    """0x19: an alarm without GPS, only the serving cell and the status."""
    packet.need(8 + _STATUS.size, "LBS alarm")
    cell, at = _lbs(packet.content, 0)
    packet.need(at + _STATUS.size, "LBS alarm")
    event = packet.event("alarm", **cell, **_status(packet.content, at))
    return Decoded(events=[event], reply=packet.reply())


def _address_request(packet: _Packet) -> Decoded:
    """0x1A/0x2A: a position with the phone number that asked the unit for an address."""
    packet.need(_GPS_BLOCK.size + 21, "address request")
    moment, gps = _gps(packet)
    phone = packet.content[18:39].split(b"\x00")[0].decode("ascii", errors="replace")
    extra: dict[str, Any] = {"address_request": True, "phone": phone}
    if len(packet.content) >= 41:
        extra["language"] = _language(packet.content[40])
    return _position(packet, "address_request", moment, gps, extra)


def _cells(content: bytes, at: int, count: int, *, fourth_generation: bool) -> tuple[list, int]:
    """Serving and neighbour cells (LAC, cell id, RSSI); empty slots (all zero) are dropped."""
    layout = struct.Struct(">IQB" if fourth_generation else ">HBHB")
    cells = []
    for _ in range(count):
        if fourth_generation:
            lac, cell_id, rssi = layout.unpack_from(content, at)
        else:
            lac, cell_hi, cell_lo, rssi = layout.unpack_from(content, at)
            cell_id = (cell_hi << 16) | cell_lo
        at += layout.size
        if lac or cell_id:
            cells.append({"lac": lac, "cell_id": cell_id, "rssi": rssi})
    return cells, at


def _lbs_multiple(packet: _Packet) -> Decoded:
    """0x28/0xA1 (no GPS fix) and 0x2C (plus Wi-Fi): the cells the unit hears."""
    packet.need(6 + 3, "LBS")
    content = packet.content
    fourth_generation = packet.protocol == LBS_MULTIPLE_4G
    (mcc,) = _U16.unpack_from(content, 6)
    at = 8
    if mcc & 0x8000:
        (mnc,) = _U16.unpack_from(content, at)
        at += 2
    else:
        mnc = content[at]
        at += 1
    cells, at = _cells(content, at, 7, fourth_generation=fourth_generation)
    kind = "wifi" if packet.protocol == WIFI else "lbs"
    event = packet.event(
        kind, time=_iso(_time(content[:6])), mcc=mcc & 0x7FFF, mnc=mnc, cells=cells
    )
    event["timing_advance"] = content[at]
    at += 1
    if packet.protocol == WIFI:
        count = content[at]
        at += 1
        networks = []
        for _ in range(count):
            mac = content[at : at + 6]
            if len(mac) < 6:
                raise Gt06Error("Wi-Fi list runs past the packet")
            networks.append({"mac": mac.hex(":"), "rssi": content[at + 6]})
            at += 7
        event["wifi"] = networks
    elif at + 2 <= len(content):
        event["language"] = _language(content[at + 1])
    return Decoded(events=[event], reply=packet.reply())


def _text(raw: bytes, utf16: bool = False) -> str:
    """Unit text: ASCII by the documents, UTF-16BE when 0x21 says so; bad bytes replaced."""
    return raw.decode("utf-16-be" if utf16 else "utf-8", errors="replace")


def _command_response(packet: _Packet) -> Decoded:
    """0x15: command length, server flag, ASCII text, language."""
    packet.need(1, "command response")
    length = packet.content[0]
    if length < 4 or 1 + length > len(packet.content):
        raise Gt06Error(f"command length {length} does not fit a 0x15 packet")
    (flag,) = _U32.unpack_from(packet.content, 1)
    text = _text(packet.content[5 : 1 + length])
    return _response(packet, text, flag)


def _command_response_long(packet: _Packet) -> Decoded:
    """0x21: server flag, encoding (1 ASCII, 2 UTF-16BE), text."""
    packet.need(5, "command response")
    (flag,) = _U32.unpack_from(packet.content, 0)
    text = _text(packet.content[5:], utf16=packet.content[4] == 0x02)
    return _response(packet, text, flag)


def _response(packet: _Packet, text: str, flag: int) -> Decoded:
    event = packet.event("command_response", server_flag=flag)
    if text.startswith("<ICCID:") and text.endswith(">"):
        event["iccid"] = text[7:-1]
    return Decoded(responses=[CommandResponse(text=text)], events=[event])


def _information(packet: _Packet) -> Decoded:
    """0x94: non-position data, keyed by its sub-protocol number."""
    packet.need(1, "information")
    kind, data = packet.content[0], packet.content[1:]
    event = packet.event("information", subtype=kind)
    if kind == 0x00 and len(data) >= 2:
        event["external_voltage"] = _U16.unpack_from(data, 0)[0] / 100
    elif kind in (0x04, 0x08):
        event["text"] = _text(data)
    elif kind == 0x05 and data:
        event.update(door=bool(data[0] & 0x01), io_high=bool(data[0] & 0x04))
    elif kind == 0x0A and len(data) >= 26:
        iccid = data[16:26].hex().rstrip("f")  # BCD padded with 0xF
        event.update(imei=_bcd(data[:8]), imsi=_bcd(data[8:16]), iccid=iccid)
    else:
        event["data"] = data.hex()
    return Decoded(events=[event])


def _time_request(packet: _Packet) -> Decoded:
    return Decoded(events=[packet.event("time_request")])


def _external_device(packet: _Packet) -> Decoded:
    return Decoded(events=[packet.event("external_device", data=packet.content.hex())])


_DECODERS = {
    LOGIN: _login,
    GPS: _location,
    GPS_LBS_LONG: _location,
    GPS_LBS: _location,
    HEARTBEAT: _heartbeat,
    COMMAND_RESPONSE: _command_response,
    GPS_LBS_ALARM: _alarm,
    LBS_ALARM: _lbs_alarm,
    GPS_PHONE: _address_request,
    COMMAND_RESPONSE_LONG: _command_response_long,
    GPS_LBS_UTC: _location,
    HEARTBEAT_EG: _heartbeat_eg,
    ALARM_UTC: _alarm,
    ALARM_FENCES: _alarm,
    LBS_MULTIPLE: _lbs_multiple,
    GPS_ADDRESS: _address_request,
    WIFI: _lbs_multiple,
    TIME_REQUEST: _time_request,
    INFORMATION: _information,
    EXTERNAL_DEVICE: _external_device,
    GPS_LBS_4G: _location,
    LBS_MULTIPLE_4G: _lbs_multiple,
    ALARM_FENCES_4G: _alarm,
}


# --- the session ------------------------------------------------------------------------------


class Gt06Session:
    """Framing and decoding for one unit's TCP connection."""

    def __init__(self, max_frame: int = 4096) -> None:
        self.max_frame = max_frame
        self.imei: str | None = None

    def split(self, buffer: bytearray) -> list[bytes]:
        """Cut every complete frame (and every run of noise) off the front of ``buffer``.

        Noise before a start marker is returned as a chunk of its own so that decode()
        rejects it and the listener counts it; start bits whose frame does not end in
        0x0D0A are treated as noise too. A frame still arriving stays in the buffer,
        unless a whole CRC-valid frame already follows it, which proves its start bits
        were noise. A declared size over ``max_frame`` (the whole frame, in bytes) raises
        FrameTooLarge; frames cut before it are returned first and the next call raises.
        """
        frames: list[bytes] = []
        while buffer:
            start = bytes(buffer[:2])
            if start not in (SHORT_START, LONG_START):
                if len(buffer) == 1 and buffer[0] in (0x78, 0x79):
                    break  # half a start marker
                cut = _next_start(buffer, 1)
            else:
                size = self._frame_size(buffer, frames)
                if size is None:
                    break
                if size > 0:
                    frames.append(bytes(buffer[:size]))
                    del buffer[:size]
                    continue
                cut = _next_start(buffer, 1)
            frames.append(bytes(buffer[:cut]))
            del buffer[:cut]
        return frames

    def _frame_size(self, buffer: bytearray, frames: list[bytes]) -> int | None:
        """Size of the frame at the front; 0 if its start bits are noise; None to wait."""
        header = _header_size(bytes(buffer[:2]))
        if len(buffer) < header:
            return None
        declared = _declared_length(buffer, 0, header)
        size = header + declared + 2
        if size > self.max_frame:
            if _sound_frame_after(buffer, 1):
                return 0
            if frames:
                return None
            raise FrameTooLarge(f"GT06 frame of {size} bytes is over the {self.max_frame} limit")
        if declared < _MIN_LENGTH:
            return 0
        if len(buffer) >= size and buffer[size - 2 : size] == STOP:
            if _crc_ok(buffer, 0, size) or not _sound_frame_after(buffer, 1, before=size):
                return size  # whole, or damaged: decode() says which
            return 0
        if len(buffer) >= size + 2:
            # A length announced two bytes short (seen on heartbeats) is taken only when
            # the CRC proves the longer frame whole; otherwise the start bits were noise.
            if buffer[size : size + 2] == STOP and _crc_ok(buffer, 0, size + 2):
                return size + 2
            return 0
        return 0 if _sound_frame_after(buffer, 1) else None

    def decode(self, frame: bytes) -> Decoded:
        """Check start bits, length, stop bits and CRC, then read the packet.

        See the module docstring for which packets get a reply. Raises Gt06Error for
        noise, damage and malformed content; nothing else.
        """
        frame = bytes(frame)
        start = frame[:2]
        if start not in (SHORT_START, LONG_START):
            raise Gt06Error(
                f"{len(frame)} bytes of noise without GT06 start bits: {frame[:16].hex()}"
            )
        header = _header_size(start)
        if len(frame) < header + _MIN_LENGTH + 2:
            raise Gt06Error(f"GT06 frame of {len(frame)} bytes is too short")
        if frame[-2:] != STOP:
            raise Gt06Error("GT06 frame does not end with the 0x0D0A stop bits")
        declared = _declared_length(frame, 0, header)
        actual = len(frame) - header - 2
        if declared not in (actual, actual - 2):
            raise Gt06Error(f"GT06 length says {declared} bytes, the frame has {actual}")
        (received,) = _U16.unpack_from(frame, len(frame) - 4)
        computed = crc_itu(frame[2:-4])
        if received != computed:
            raise Gt06Error(
                f"GT06 CRC mismatch: frame has {received:04X}, bytes give {computed:04X}"
            )
        packet = _Packet(
            protocol=frame[header],
            content=frame[header + 1 : -6],
            serial=_U16.unpack_from(frame, len(frame) - 6)[0],
            long_frame=start == LONG_START,
        )
        decoder = _DECODERS.get(packet.protocol)
        if decoder is None:
            return Decoded(events=[{"type": "unknown", "protocol": packet.protocol}])
        try:
            decoded = decoder(packet)
        except (struct.error, IndexError) as exc:
            raise Gt06Error(f"0x{packet.protocol:02X} packet is malformed: {exc}") from exc
        if decoded.identifier:
            self.imei = decoded.identifier
        return decoded
