"""What units send, encoded: the unit side of the protocols, for the simulated fleet.

The simulator, the ingest benchmark and the end-to-end tests drive the real listeners
with these frames, so everything they produce has come through the real decoders.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime

from telematics.protocols.base import Fix
from telematics.protocols.teltonika import crc16_ibm


def teltonika_login(imei: str) -> bytes:
    return struct.pack(">H", len(imei)) + imei.encode("ascii")


def _codec8_body(fixes: list[Fix], io: dict[int, int] | None) -> bytes:
    records = bytearray()
    for fix in fixes:
        elements = dict(io or {})
        if fix.ignition is not None:
            elements[239] = int(fix.ignition)
        if fix.odometer_km is not None:
            elements[16] = round(fix.odometer_km * 1000)
        one = {k: v for k, v in elements.items() if v < 0x100 and k != 16}
        four = {k: v for k, v in elements.items() if k == 16}
        records += struct.pack(
            ">QBiihHBH",
            round(fix.fix_time.timestamp() * 1000), 0,
            round(fix.longitude * 1e7), round(fix.latitude * 1e7),
            round(fix.altitude or 0), round(fix.course or 0) % 360,
            fix.satellites if fix.satellites is not None else 9,
            round(fix.speed_kmh or 0),
        )
        records += struct.pack(">BB", 0, len(one) + len(four))
        records += struct.pack(">B", len(one))
        for key, value in one.items():
            records += struct.pack(">BB", key, value)
        records += b"\x00"  # no 2-byte IO elements
        records += struct.pack(">B", len(four))
        for key, value in four.items():
            records += struct.pack(">BI", key, value)
        records += b"\x00"  # no 8-byte IO elements
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
