"""What units send, encoded: the unit side of the protocols, for the simulated fleet.

The simulator, the ingest benchmark and the end-to-end tests drive the real listeners
with these frames, so everything they produce has come through the real decoders.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime

from telematics.protocols.base import Fix
from telematics.protocols.gt06 import crc_itu
from telematics.protocols.teltonika import crc16_ibm


def teltonika_login(imei: str) -> bytes:
    return struct.pack(">H", len(imei)) + imei.encode("ascii")


def _codec8_body(fixes: list[Fix], io: dict[int, int] | None) -> bytes:
    """Codec 8 records; each IO value goes in the 1-, 2-, 4- or 8-byte group it fits."""
    records = bytearray()
    for fix in fixes:
        elements = dict(io or {})
        if fix.ignition is not None:
            elements[239] = int(fix.ignition)
        if fix.odometer_km is not None:
            elements[16] = round(fix.odometer_km * 1000)
        groups: dict[int, dict[int, int]] = {1: {}, 2: {}, 4: {}, 8: {}}
        for key, value in elements.items():
            size = 4 if key == 16 else next(n for n in (1, 2, 4, 8) if value < 1 << (8 * n))
            groups[size][key] = value
        records += struct.pack(
            ">QBiihHBH",
            round(fix.fix_time.timestamp() * 1000), 0,
            round(fix.longitude * 1e7), round(fix.latitude * 1e7),
            round(fix.altitude or 0), round(fix.course or 0) % 360,
            fix.satellites if fix.satellites is not None else 9,
            round(fix.speed_kmh or 0),
        )
        records += struct.pack(">BB", 0, len(elements))
        for size, code in ((1, "B"), (2, "H"), (4, "I"), (8, "Q")):
            records += struct.pack(">B", len(groups[size]))
            for key, value in groups[size].items():
                records += struct.pack(f">B{code}", key, value)
    return bytes([0x08, len(fixes)]) + bytes(records) + bytes([len(fixes)])


def teltonika_avl(fixes: list[Fix], io: dict[int, int] | None = None) -> bytes:
    """A Codec 8 TCP AVL packet with one record per fix (IO: 1-byte values, odometer)."""
    body = _codec8_body(fixes, io)
    return b"\x00\x00\x00\x00" + struct.pack(">I", len(body)) + body + struct.pack(
        ">I", crc16_ibm(body)
    )


def teltonika_udp(imei: str, packet_id: int, avl_packet_id: int, fixes: list[Fix]) -> bytes:
    """A Codec 8 UDP datagram (no preamble or CRC; the IMEI in every packet)."""
    body = struct.pack(">HBBH", packet_id, 0x01, avl_packet_id, len(imei)) + imei.encode()
    body += _codec8_body(fixes, None)
    return struct.pack(">H", len(body)) + body


def fix_at(latitude: float, longitude: float, when: datetime | None = None, **fields) -> Fix:
    """A Fix with sensible defaults, for simulators and tests."""
    when = when or datetime.now(UTC)
    fields.setdefault("satellites", 9)
    fields.setdefault("speed_kmh", 0.0)
    return Fix(fix_time=when.replace(microsecond=(when.microsecond // 1000) * 1000),
               latitude=latitude, longitude=longitude, **fields)


def _gt06_frame(protocol: int, content: bytes, serial: int) -> bytes:
    body = bytes([len(content) + 5, protocol]) + content + struct.pack(">H", serial & 0xFFFF)
    return b"\x78\x78" + body + struct.pack(">H", crc_itu(body)) + b"\r\n"


def gt06_login(imei: str, serial: int) -> bytes:
    """Login 0x01: the IMEI as 8 BCD bytes (a leading zero makes 16 digits)."""
    return _gt06_frame(0x01, bytes.fromhex(imei.rjust(16, "0")), serial)


def gt06_location(fix: Fix, serial: int, *, mileage_m: int | None = None) -> bytes:
    """GPS + LBS location 0x22: time, satellites, position, speed, course, a cell, ACC."""
    t = fix.fix_time.astimezone(UTC)
    course_status = (round(fix.course or 0) % 360) | 0x1000  # GPS positioned
    if fix.latitude >= 0:
        course_status |= 0x0400  # north
    if fix.longitude < 0:
        course_status |= 0x0800  # west
    content = bytes([t.year - 2000, t.month, t.day, t.hour, t.minute, t.second])
    content += struct.pack(">BIIBH", 0xC0 | min(fix.satellites or 9, 15),
                           round(abs(fix.latitude) * 1_800_000),
                           round(abs(fix.longitude) * 1_800_000),
                           min(round(fix.speed_kmh or 0), 255), course_status)
    content += struct.pack(">HBH", 262, 1, 0x1A2B) + (0x00C0FE).to_bytes(3, "big")  # a cell
    content += bytes([1 if fix.ignition else 0, 0x00, 0x00])
    if mileage_m is not None:
        content += struct.pack(">I", mileage_m)
    return _gt06_frame(0x22, content, serial)


def gt06_heartbeat(serial: int, *, ignition: bool = True) -> bytes:
    """Heartbeat 0x13: terminal info (GPS tracking, ACC), voltage 4 of 6, GSM 4 of 4.

    The server echoes its serial; it is the packet a unit can count on being answered.
    """
    info = 0x40 | (0x02 if ignition else 0x00)
    return _gt06_frame(0x13, bytes([info, 4, 4, 0x00, 0x02]), serial)


def nmea_sentences(fix: Fix) -> list[str]:
    """RMC and GGA for one fix, as a receiver prints them (pynmea2 adds the checksums)."""
    import pynmea2

    t = fix.fix_time.astimezone(UTC)
    hhmmss = t.strftime("%H%M%S") + f".{t.microsecond // 10000:02d}"
    lat = f"{int(abs(fix.latitude)):02d}{abs(fix.latitude) % 1 * 60:07.4f}"
    lon = f"{int(abs(fix.longitude)):03d}{abs(fix.longitude) % 1 * 60:07.4f}"
    ns, ew = ("N" if fix.latitude >= 0 else "S"), ("E" if fix.longitude >= 0 else "W")
    knots = f"{(fix.speed_kmh or 0) / 1.852:.2f}"
    rmc = pynmea2.RMC("GP", "RMC", (hhmmss, "A" if fix.valid else "V", lat, ns, lon, ew, knots,
                                    f"{fix.course or 0:.1f}", t.strftime("%d%m%y"), "", "", "A"))
    gga = pynmea2.GGA("GP", "GGA", (hhmmss, lat, ns, lon, ew, "1", f"{fix.satellites or 9:02d}",
                                    f"{fix.hdop or 1.0:.1f}", f"{fix.altitude or 0:.1f}", "M",
                                    "47.0", "M", "", ""))
    return [str(rmc), str(gga)]


def nmea_identification(identifier: str) -> str:
    """``$PGID,<identifier>*hh``: how an NMEA unit names itself to the listener."""
    body = f"PGID,{identifier}"
    checksum = 0
    for char in body.encode("ascii"):
        checksum ^= char
    return f"${body}*{checksum:02X}"


def osmand_query(identifier: str, fix: Fix) -> str:
    """The query string the Traccar Client app sends (speed in knots)."""
    from urllib.parse import urlencode

    fields = {"id": identifier, "timestamp": int(fix.fix_time.timestamp()),
              "lat": f"{fix.latitude:.6f}", "lon": f"{fix.longitude:.6f}",
              "speed": f"{(fix.speed_kmh or 0) / 1.852:.2f}", "bearing": f"{fix.course or 0:.1f}",
              "altitude": f"{fix.altitude or 0:.1f}", "accuracy": "5", "batt": "87"}
    return urlencode(fields)


def osmand_json(identifier: str, fixes: list[Fix]) -> bytes:
    """The JSON body the current Traccar Client posts: one location, or a list of them.

    Times go as ISO 8601 with milliseconds and speeds in m/s, as the app sends them;
    ``odometer`` is the app's own distance counter in metres.
    """
    import json

    records = [
        {
            "timestamp": fix.fix_time.astimezone(UTC).isoformat(timespec="milliseconds"),
            "coords": {
                "latitude": round(fix.latitude, 7),
                "longitude": round(fix.longitude, 7),
                "speed": round((fix.speed_kmh or 0) / 3.6, 2),
                "heading": round(fix.course or 0, 1),
                "altitude": round(fix.altitude or 0, 1),
                "accuracy": 5,
            },
            "is_moving": bool(fix.speed_kmh),
            "odometer": round((fix.odometer_km or 0) * 1000),
            "battery": {"level": 0.87, "is_charging": False},
        }
        for fix in fixes
    ]
    body = {"device_id": identifier, "location": records[0] if len(records) == 1 else records}
    return json.dumps(body, separators=(",", ":")).encode()
