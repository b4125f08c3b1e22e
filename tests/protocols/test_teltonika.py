"""Teltonika decoder: vendor (wiki) and Traccar vectors, TCP framing, UDP, Codec 12, fuzzing.

Vectors live in tests/data/protocols/teltonika/*.hex, each with its source in a comment.
Expected values below are the decoded values stated with them (wiki decode tables and
Traccar's test file, as collected in the shared teltonika.md notes).
"""

from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telematics.protocols.base import DecodeError, Fix, FrameTooLarge
from telematics.protocols.teltonika import (
    TeltonikaError,
    TeltonikaFrameTooLarge,
    TeltonikaTcpSession,
    crc16_ibm,
    decode_udp,
    encode_command,
)

VECTORS = Path(__file__).resolve().parent.parent / "data" / "protocols" / "teltonika"


def vector(name: str) -> bytes:
    lines = (VECTORS / f"{name}.hex").read_text().splitlines()
    return bytes.fromhex("".join(line for line in lines if not line.startswith("#")))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def tcp_packet(data: bytes) -> bytes:
    """Wrap codec data (codec id .. number of data 2) into a TCP packet with a good CRC."""
    return b"\x00" * 4 + struct.pack(">I", len(data)) + data + struct.pack(">I", crc16_ibm(data))


def repaired(packet: bytes) -> bytes:
    """The packet with its data length and CRC fields recomputed."""
    return tcp_packet(packet[8:-4])


def logged_in(imei: bytes = b"356307042441013") -> TeltonikaTcpSession:
    session = TeltonikaTcpSession()
    buffer = bytearray(struct.pack(">H", len(imei)) + imei)
    [frame] = session.split(buffer)
    assert session.decode(frame).identifier == imei.decode()
    return session


def decode_tcp(packet: bytes) -> list[Fix]:
    session = logged_in()
    buffer = bytearray(packet)
    [frame] = session.split(buffer)
    assert frame == packet and not buffer
    return session.decode(frame).fixes


@dataclass
class Record:
    """What a vector's source states about one record."""

    time: str
    latitude: float
    longitude: float
    altitude: int
    course: int
    satellites: int
    speed: int
    event_io: int
    priority: int | None = None
    io: dict[int, int | str] = field(default_factory=dict)
    generation_type: int | None = None


def check(fix: Fix, record: Record) -> None:
    assert fix.fix_time == utc(record.time)
    assert fix.fix_time.tzinfo is UTC
    assert fix.latitude == record.latitude
    assert fix.longitude == record.longitude
    assert fix.altitude == record.altitude
    assert fix.course == record.course
    assert fix.satellites == record.satellites
    assert fix.speed_kmh == record.speed
    assert fix.valid is (record.satellites != 0)
    assert fix.attributes["event_io"] == record.event_io
    if record.priority is not None:
        assert fix.attributes["priority"] == record.priority
    if record.generation_type is not None:
        assert fix.attributes["generation_type"] == record.generation_type
    for io_id, value in record.io.items():
        assert fix.attributes[f"io{io_id}"] == value, io_id


def zero_fix(time: str, event_io: int, priority: int, io: dict, **kwargs) -> Record:
    """The wiki examples are all records without a fix: position, speed, sats all 0."""
    return Record(time, 0.0, 0.0, 0, 0, 0, 0, event_io, priority, io, **kwargs)


# --- Vendor (wiki) AVL examples: every stated value --------------------------------

WIKI_PACKETS = {
    "wiki_codec8_1": [
        zero_fix("2019-06-10T10:04:46", 1, 1, {21: 3, 1: 1, 66: 24079, 241: 24602, 78: 0}),
    ],
    "wiki_codec8_2": [zero_fix("2019-06-10T10:05:36", 1, 1, {21: 3, 1: 1, 66: 24080})],
    "wiki_codec8_3": [
        zero_fix("2019-06-10T10:01:01", 1, 1, {1: 0}),
        zero_fix("2019-06-10T10:01:19", 1, 1, {1: 1}),
    ],
    "wiki_codec8e": [
        zero_fix(
            "2019-06-10T11:36:32",
            1,
            1,
            {1: 1, 17: 29, 16: 22949000, 11: 893700218, 14: 500686954},
        ),
    ],
    "wiki_codec8e_2017": [
        Record(
            "2017-11-14T11:18:44",
            54.6676016,
            25.2562916,
            138,
            0,
            6,
            0,
            event_io=0,
            priority=0,
            io={239: 0, 17: 30, 16: 52191, 11: 893700213, 14: 700441809, 256: "00" * 17},
        ),
    ],
    "wiki_codec16": [
        zero_fix("2019-07-10T12:06:54", 11, 0, {1: 0, 3: 0, 11: 39, 66: 22074}, generation_type=5),
        zero_fix("2019-07-10T12:06:55", 11, 0, {1: 0, 3: 0, 11: 38, 66: 22074}, generation_type=5),
    ],
}


@pytest.mark.parametrize("name", sorted(WIKI_PACKETS))
def test_wiki_packet(name: str) -> None:
    records = WIKI_PACKETS[name]
    session = logged_in()
    decoded = session.decode(vector(name))
    assert len(decoded.fixes) == len(records)
    for fix, record in zip(decoded.fixes, records, strict=True):
        check(fix, record)
    assert decoded.reply == struct.pack(">I", len(records))
    assert decoded.identifier is None and not decoded.responses


def test_wiki_acks_match_the_stated_bytes() -> None:
    session = logged_in()
    assert session.decode(vector("wiki_codec8_1")).reply == bytes.fromhex("00000001")
    assert session.decode(vector("wiki_codec8_3")).reply == bytes.fromhex("00000002")
    assert session.decode(vector("wiki_codec16")).reply == bytes.fromhex("00000002")


def test_well_known_ios_of_wiki_examples() -> None:
    session = logged_in()
    [fix] = session.decode(vector("wiki_codec8_1")).fixes
    assert fix.attributes["gsm_signal"] == 3
    assert fix.attributes["power"] == pytest.approx(24.079)
    assert "driver_key" not in fix.attributes  # iButton 0 = no key
    [fix] = session.decode(vector("wiki_codec8e")).fixes
    assert fix.odometer_km == pytest.approx(22949.0)
    [fix] = session.decode(vector("wiki_codec8e_2017")).fixes
    assert fix.ignition is False
    assert fix.odometer_km == pytest.approx(52.191)


# --- Login and Codec 12/13 ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "imei"),
    [("wiki_login", "356307042441013"), ("traccar_t01_login", "123456789012345")],
)
def test_login(name: str, imei: str) -> None:
    session = TeltonikaTcpSession()
    buffer = bytearray(vector(name))
    [frame] = session.split(buffer)
    decoded = session.decode(frame)
    assert decoded.identifier == imei
    assert decoded.reply == b"\x01"
    assert decoded.refusal == b"\x00"
    assert not decoded.fixes


def test_login_then_avl_packet() -> None:
    session = TeltonikaTcpSession()
    buffer = bytearray(vector("wiki_login"))
    [login] = session.split(buffer)
    assert session.decode(login).identifier == "356307042441013"
    buffer += vector("wiki_codec8_1")
    [packet] = session.split(buffer)
    decoded = session.decode(packet)
    assert len(decoded.fixes) == 1
    assert decoded.reply == b"\x00\x00\x00\x01"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (
            "wiki_codec12_getinfo_response",
            "INI:2019/7/22 7:22 RTC:2019/7/22 7:53 RST:2 ERR:1 SR:0 BR:0 CF:0 FG:0 FL:0 "
            "TU:0/0 UT:0 SMS:0 NOGPS:0:30 GPS:1 SAT:0 RS:3 RF:65 SF:1 MD:0",
        ),
        ("wiki_codec12_getio_response", "DI1:1 DI2:0 DI3:0 AIN1:0 AIN2:16924 DO1:0 DO2:1"),
        ("traccar_t09", "UUUUww06.4;04.2;00.0;00.0;00.0;00.0;00.0;00.0;01.3;00.0;10.7;00.0;SSS"),
        (
            "traccar_t14",
            'AT$MSGSND=4,"STGB40,PR,356601060265050,1604221517,1604221518,C,+023.3,'
            '0,+023.1,0,DEACTI,0,DEACTI,0,1,0"',
        ),
    ],
)
def test_codec12_response(name: str, text: str) -> None:
    decoded = logged_in().decode(vector(name))
    [response] = decoded.responses
    assert response.text == text
    assert response.received_time is None
    assert decoded.reply is None  # Codec 12 responses are not acknowledged
    assert not decoded.fixes


def test_codec13_message_has_unit_timestamp() -> None:
    decoded = logged_in().decode(vector("traccar_t05"))
    [response] = decoded.responses
    assert response.text == "GTSL|6|1|0|12749884|1|"
    assert response.received_time == utc("2023-04-03T20:45:05")  # 0x642B3AD1 seconds
    assert decoded.reply is None


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("getinfo", "wiki_codec12_getinfo"),
        ("getio", "wiki_codec12_getio"),
        ("setdigout 11", "traccar_setdigout"),
    ],
)
def test_encode_command(text: str, name: str) -> None:
    assert encode_command(text) == vector(name)


@pytest.mark.parametrize("text", ["", "setparam 2001 ünïcode"])
def test_encode_command_refuses_what_a_unit_cannot_parse(text: str) -> None:
    with pytest.raises(ValueError):
        encode_command(text)


def test_server_command_from_a_unit_is_rejected() -> None:
    with pytest.raises(TeltonikaError, match="type 0x05 is a server command"):
        logged_in().decode(vector("wiki_codec12_getinfo"))


def test_camera_transfer_is_rejected_as_unsupported() -> None:
    with pytest.raises(TeltonikaError, match="type 0x0D is unsupported"):
        logged_in().decode(vector("traccar_photo_request"))


# --- UDP ---------------------------------------------------------------------------


def test_udp_codec8() -> None:
    decoded = decode_udp(vector("wiki_udp_codec8"))
    assert decoded.identifier == "352093086403655"
    [fix] = decoded.fixes
    check(fix, zero_fix("2019-06-13T06:23:26", 1, 1, {21: 3, 1: 1, 66: 23996}))
    assert decoded.reply == bytes.fromhex("0005CAFE010501")
    assert decoded.refusal is None


def test_udp_codec8_extended() -> None:
    decoded = decode_udp(vector("wiki_udp_codec8e"))
    assert decoded.identifier == "352093086403655"
    [fix] = decoded.fixes
    io = {1: 1, 17: 157, 16: 22949000, 11: 893700218, 14: 500686954}
    check(fix, zero_fix("2019-06-13T06:25:21", 1, 1, io))
    assert decoded.reply == bytes.fromhex("0005CAFE010701")


def test_udp_traccar_vector() -> None:
    decoded = decode_udp(vector("traccar_t18"))
    assert decoded.identifier == "357454072713975"
    [fix] = decoded.fixes
    check(fix, Record("2017-07-12T15:24:41", 51.630115, 0.4124566, 99, 109, 9, 49, 0))
    assert decoded.reply == bytes.fromhex("0005CAFE012201")


def test_udp_length_must_fit() -> None:
    with pytest.raises(TeltonikaError, match="UDP length"):
        decode_udp(vector("wiki_udp_codec8") + b"\x00")


# --- Traccar AVL vectors: the stated first record and record count ------------------

TRACCAR_PACKETS = {
    "traccar_t02": (
        2,
        Record("2025-06-13T15:18:07", 41.4349316, 2.2190583, 24, 119, 8, 0, 0),
    ),
    "traccar_t03": (
        1,
        Record("2024-06-03T04:11:04.011", -27.4388733, 153.080315, 9, 319, 14, 0, 548),
    ),
    "traccar_t04": (
        1,
        Record("2022-09-23T04:22:29.011", 54.70086, 25.25975, 179, 180, 14, 0, 10831),
    ),
    "traccar_t06": (
        4,
        Record("2020-07-17T03:25:31", 47.7225616, 1.4924083, 105, 226, 17, 81, 253),
    ),
    "traccar_t07": (3, Record("2022-08-12T20:54:20", 55.9511166, 23.291255, 0, 0, 0, 0, 0)),
    "traccar_t08": (
        1,
        Record("2021-04-08T10:52:26", 52.0296716, 6.7877833, 33, 225, 19, 19, 0),
    ),
    "traccar_t10": (
        1,
        Record("2019-01-04T12:27:19", 48.1523066, 16.3745183, 190, 198, 15, 83, 0),
    ),
    "traccar_t12": (
        14,
        Record("2017-07-05T12:49:14", 40.9420533, -8.6313433, 13, 72, 8, 6, 0),
    ),
    "traccar_t15": (
        1,
        Record("2017-09-25T03:17:54", 56.8255366, 60.4544333, 311, 95, 18, 95, 0),
    ),
    "traccar_t16": (
        1,
        Record("2024-11-06T10:57:17", -6.2906716, 106.8097266, 13, 0, 4, 0, 0),
    ),
}


@pytest.mark.parametrize("name", sorted(TRACCAR_PACKETS))
def test_traccar_packet(name: str) -> None:
    count, first = TRACCAR_PACKETS[name]
    fixes = decode_tcp(vector(name))
    assert len(fixes) == count
    check(fixes[0], first)


def test_traccar_nx_and_raw_values_are_kept_for_the_io_stage() -> None:
    # Traccar turns these into tag1Voltage 3090 / tag1Battery 3030 / eyeTemp1 -11.87; we
    # keep the raw element so the IO stage can do the same from the AVL ID table.
    [fix] = decode_tcp(vector("traccar_t03"))
    assert fix.attributes["io548"].startswith("010f0001c60106babbf36300550202806d")
    [fix] = decode_tcp(vector("traccar_t04"))
    tag = "011c0001a40110eb47706aa38255aa96f21a154e2d00550d01000e020bd6"
    assert fix.attributes["io10831"] == tag
    [fix] = decode_tcp(vector("traccar_t16"))
    assert fix.attributes["io10800"] == 64349  # int16 -1187, x0.01 = -11.87 C


def test_traccar_codec8e_nx_text_elements() -> None:
    [fix] = decode_tcp(vector("traccar_t08"))
    assert bytes.fromhex(fix.attributes["io256"]) == b"WV1ZZZ2EZ86015388"  # VIN
    assert fix.ignition is True
    assert fix.attributes["motion"] is True
    assert fix.odometer_km == pytest.approx(41.397)
    assert fix.attributes["trip_odometer_km"] == pytest.approx(0.03)
    assert fix.attributes["battery"] == pytest.approx(3.991)


def test_traccar_codec16_with_dops() -> None:
    fixes = decode_tcp(vector("traccar_t06"))
    assert fixes[0].attributes["generation_type"] == 7
    assert fixes[0].hdop == pytest.approx(0.6)
    assert fixes[0].attributes["pdop"] == pytest.approx(1.1)
    assert fixes[0].ignition is True


def test_traccar_t11_bad_crc_is_rejected_but_its_records_parse() -> None:
    packet = vector("traccar_t11")
    with pytest.raises(TeltonikaError, match=r"CRC mismatch: frame 0x09A5, computed 0xA6DE"):
        logged_in().decode(packet)
    fixes = logged_in().decode(repaired(packet)).fixes
    assert len(fixes) == 2
    # Values from the older wiki's Codec 16 decode text.
    check(
        fixes[0],
        Record(
            "2013-07-17T06:34:09.140",
            54.6990336,
            25.2618832,
            174,
            185,
            11,
            0,
            0,
            priority=0,
            generation_type=7,
            io={1: 0, 2: 0, 3: 0},
        ),
    )


def test_traccar_t13_invalid_length_is_rejected_but_its_record_parses() -> None:
    packet = vector("traccar_t13")
    with pytest.raises(TeltonikaError, match="data length 0"):
        logged_in().decode(packet)
    [fix] = logged_in().decode(repaired(packet)).fixes
    check(fix, Record("2007-07-25T06:46:38.335", 25.3032016, 54.7146368, 111, 214, 4, 4, 0))


def test_traccar_t17_nonstandard_codec8_is_rejected() -> None:
    # Traccar reads it only with its "extended" option (an extra 16-byte IO group that
    # the Codec 8 layout does not have); a standard unit never sends it.
    with pytest.raises(TeltonikaError, match="record 10 of 11"):
        logged_in().decode(vector("traccar_t17"))


# --- Record mapping on built records -------------------------------------------------


def codec8_record(
    ms: int,
    lon: int,
    lat: int,
    alt: int,
    angle: int,
    sats: int,
    speed: int,
    event: int,
    io: dict[int, dict[int, int]],
) -> bytes:
    """A Codec 8 record; ``io`` maps value size (1, 2, 4, 8) to {id: value}."""
    body = struct.pack(">QBiihHBH", ms, 1, lon, lat, alt, angle, sats, speed)
    total = sum(len(group) for group in io.values())
    body += bytes((event, total))
    for size, fmt in ((1, "B"), (2, "H"), (4, "I"), (8, "Q")):
        group = io.get(size, {})
        body += bytes((len(group),))
        for io_id, value in group.items():
            body += struct.pack(f">B{fmt}", io_id, value)
    return body


def test_well_known_ios_become_fix_fields() -> None:
    record = codec8_record(
        1_700_000_000_123,
        -700_000_000,
        -335_000_000,
        -12,
        359,
        9,
        87,
        239,
        {
            1: {239: 1, 240: 1, 21: 4},
            2: {182: 9, 181: 15, 66: 12_345, 67: 4_100},
            4: {16: 123_456_789, 199: 2_500},
            8: {78: 0x0000_0123_4567_89AB},
        },
    )
    [fix] = decode_tcp(tcp_packet(bytes((0x08, 1)) + record + b"\x01"))
    assert fix.fix_time == utc("2023-11-14T22:13:20.123")
    assert (fix.latitude, fix.longitude) == (-33.5, -70.0)
    assert fix.altitude == -12  # below sea level: altitude is signed
    assert (fix.course, fix.satellites, fix.speed_kmh, fix.valid) == (359, 9, 87, True)
    assert fix.ignition is True
    assert fix.attributes["motion"] is True
    assert fix.hdop == pytest.approx(0.9)
    assert fix.attributes["pdop"] == pytest.approx(1.5)
    assert fix.odometer_km == pytest.approx(123_456.789)
    assert fix.attributes["trip_odometer_km"] == pytest.approx(2.5)
    assert fix.attributes["gsm_signal"] == 4
    assert fix.attributes["power"] == pytest.approx(12.345)
    assert fix.attributes["battery"] == pytest.approx(4.1)
    assert fix.attributes["driver_key"] == "00000123456789AB"
    assert fix.attributes["io78"] == 0x0000_0123_4567_89AB
    assert fix.attributes["event_io"] == 239
    assert fix.attributes["io16"] == 123_456_789


def test_record_without_fix_is_invalid() -> None:
    record = codec8_record(1_700_000_000_000, 252_562_916, 546_676_016, 138, 0, 0, 0, 0, {})
    [fix] = decode_tcp(tcp_packet(bytes((0x08, 1)) + record + b"\x01"))
    assert fix.valid is False
    assert fix.ignition is None and fix.hdop is None and fix.odometer_km is None


def test_codec8e_two_byte_ids_and_nx() -> None:
    record = struct.pack(">QBiihHBH", 1_000, 0, 1, 2, 3, 4, 5, 6)
    record += struct.pack(">HH", 1000, 3)  # event IO id, total
    record += struct.pack(">H", 1) + struct.pack(">HB", 239, 1)  # N1
    record += struct.pack(">H", 0) + struct.pack(">H", 0)  # N2, N4
    record += struct.pack(">H", 1) + struct.pack(">HQ", 1000, 2**64 - 1)  # N8
    record += struct.pack(">H", 1) + struct.pack(">HH", 385, 3) + b"\xab\xcd\xef"  # NX
    [fix] = decode_tcp(tcp_packet(bytes((0x8E, 1)) + record + b"\x01"))
    assert fix.attributes["event_io"] == 1000
    assert fix.attributes["io1000"] == 2**64 - 1
    assert fix.attributes["io385"] == "abcdef"
    assert fix.ignition is True


def test_codec16_two_byte_ids_and_generation_type() -> None:
    record = struct.pack(">QBiihHBH", 1_000, 2, 1, 2, 3, 4, 5, 6)
    record += struct.pack(">HBB", 300, 6, 2)  # event IO id, generation type, total
    record += bytes((1,)) + struct.pack(">HB", 300, 1)  # N1
    record += bytes((1,)) + struct.pack(">HH", 66, 13_800)  # N2
    record += bytes((0, 0))  # N4, N8
    [fix] = decode_tcp(tcp_packet(bytes((0x10, 1)) + record + b"\x01"))
    assert fix.attributes["priority"] == 2
    assert fix.attributes["event_io"] == 300
    assert fix.attributes["generation_type"] == 6
    assert fix.attributes["io300"] == 1
    assert fix.attributes["power"] == pytest.approx(13.8)


# --- Malformed packets -----------------------------------------------------------------


def test_bad_crc_is_rejected() -> None:
    packet = bytearray(vector("wiki_codec8_1"))
    packet[20] ^= 0x01
    session = logged_in()
    [frame] = session.split(packet)
    with pytest.raises(TeltonikaError, match=r"CRC mismatch: frame 0xC7CF, computed 0x"):
        session.decode(frame)


def test_number_of_data_mismatch_is_rejected() -> None:
    data = bytearray(vector("wiki_codec8_1")[8:-4])
    data[-1] = 2
    with pytest.raises(TeltonikaError, match=r"number of data 1 \(1\) != number of data 2 \(2\)"):
        logged_in().decode(tcp_packet(bytes(data)))


def test_unsupported_codec_is_rejected() -> None:
    with pytest.raises(TeltonikaError, match="unsupported codec 0x0E"):
        logged_in().decode(tcp_packet(bytes.fromhex("0E0106000000000000000001")))


def test_trailing_bytes_after_records_are_rejected() -> None:
    data = vector("wiki_codec8_2")[8:-5] + b"\x00\x01"
    with pytest.raises(TeltonikaError, match="unparsed bytes"):
        logged_in().decode(tcp_packet(data))


# --- TCP framing -------------------------------------------------------------------------

STREAM = [
    vector("wiki_login"),
    vector("wiki_codec8_1"),
    vector("wiki_codec8e_2017"),
    vector("traccar_t06"),
    b"\xff",
    vector("wiki_codec12_getio_response"),
    vector("wiki_codec16"),
]


def test_split_byte_by_byte() -> None:
    session = TeltonikaTcpSession()
    buffer = bytearray()
    frames = []
    for byte in b"".join(STREAM):
        buffer.append(byte)
        frames += session.split(buffer)
    assert frames == STREAM
    assert not buffer
    decoded = [session.decode(frame) for frame in frames]
    assert decoded[0].identifier == "356307042441013"
    assert [len(d.fixes) for d in decoded] == [0, 1, 1, 4, 0, 0, 2]
    assert decoded[4].events == [{"type": "keepalive"}] and decoded[4].reply is None


def test_split_two_frames_in_one_chunk_and_keeps_the_tail() -> None:
    session = logged_in()
    second = vector("wiki_codec8_2")
    buffer = bytearray(vector("wiki_codec8_1") + second + second[:9])
    assert session.split(buffer) == [vector("wiki_codec8_1"), second]
    assert buffer == second[:9]
    buffer += second[9:]
    assert session.split(buffer) == [second]
    assert not buffer


def test_split_empty_buffer() -> None:
    assert TeltonikaTcpSession().split(bytearray()) == []


@pytest.mark.parametrize(
    "garbage",
    [
        b"hello world",
        b"\x12\x34\x00\x00",  # ends in zeros: a preamble that starts 2 bytes early
        b"\x00\x00\x00\x00\x00\x00\x00\x00\x07",  # a preamble with no plausible length
        b"\xab" + b"\x00" * 8 + b"\x00\x00\x00\x20\x99\x01",  # unknown codec 0x99
        vector("wiki_login"),  # a second IMEI frame after login
    ],
)
def test_garbage_between_good_frames(garbage: bytes) -> None:
    session = logged_in()
    first, second = vector("wiki_codec8_1"), vector("traccar_t10")
    buffer = bytearray(first + garbage + second)
    frames = session.split(buffer)
    assert not buffer
    assert frames[0] == first and frames[-1] == second
    assert b"".join(frames[1:-1]) == garbage
    assert len(session.decode(frames[0]).fixes) == 1
    for chunk in frames[1:-1]:
        with pytest.raises(TeltonikaError):
            session.decode(chunk)
    assert len(session.decode(frames[-1]).fixes) == 1


def test_garbage_before_login_then_login() -> None:
    session = TeltonikaTcpSession()
    probe = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    buffer = bytearray(probe + vector("wiki_login") + vector("wiki_codec8_1"))
    frames = session.split(buffer)
    assert frames[1:] == [vector("wiki_login"), vector("wiki_codec8_1")]
    with pytest.raises(TeltonikaError, match="not framed: expected the IMEI frame"):
        session.decode(frames[0])
    assert session.decode(frames[1]).identifier == "356307042441013"


def test_packet_before_login_is_not_decoded() -> None:
    session = TeltonikaTcpSession()
    buffer = bytearray(vector("wiki_codec8_1"))
    [chunk] = session.split(buffer)
    with pytest.raises(TeltonikaError, match="not framed"):
        session.decode(chunk)


def test_keepalive_before_login() -> None:
    session = TeltonikaTcpSession()
    buffer = bytearray(vector("traccar_keepalive_login"))
    keepalive, login = session.split(buffer)
    assert keepalive == b"\xff"
    assert session.decode(keepalive).identifier is None
    assert session.decode(login).identifier == "123456789012345"


def test_oversize_length_raises_frame_too_large() -> None:
    session = logged_in()
    buffer = bytearray(bytes.fromhex("00000000 00100000 0801"))
    with pytest.raises(FrameTooLarge) as raised:
        session.split(buffer)
    assert isinstance(raised.value, TeltonikaFrameTooLarge)
    assert isinstance(raised.value, TeltonikaError)


def test_max_frame_is_the_whole_packet_size() -> None:
    packet = vector("traccar_t06")
    session = TeltonikaTcpSession(max_frame=len(packet))
    session._logged_in = True
    assert session.split(bytearray(packet)) == [packet]
    session = TeltonikaTcpSession(max_frame=len(packet) - 1)
    session._logged_in = True
    with pytest.raises(TeltonikaFrameTooLarge, match=f"packet of {len(packet)} bytes"):
        session.split(bytearray(packet[:10]))


# --- Fuzzing: arbitrary input raises only DecodeError ---------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_or_reject(session: TeltonikaTcpSession, frame: bytes) -> None:
    with contextlib.suppress(DecodeError):
        session.decode(frame)


@FUZZ
@given(st.binary(max_size=600), st.booleans())
def test_fuzz_decode(data: bytes, login: bool) -> None:
    decode_or_reject(logged_in() if login else TeltonikaTcpSession(), data)


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_decode_udp(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_udp(data)


@FUZZ
@given(st.sampled_from([0x08, 0x8E, 0x10, 0x0C, 0x0D]), st.binary(max_size=400))
def test_fuzz_packets_with_good_crc(codec: int, body: bytes) -> None:
    """Random bodies behind a valid header and CRC reach the record parsers."""
    decode_or_reject(logged_in(), tcp_packet(bytes((codec, 1)) + body + b"\x01"))


@FUZZ
@given(st.sampled_from([0x08, 0x8E, 0x10]), st.binary(max_size=400))
def test_fuzz_udp_records(codec: int, body: bytes) -> None:
    """UDP has no CRC, so random record bytes go straight to the record parser."""
    payload = b"\x00\x01\x01\x05\x00\x0f352093086403655" + bytes((codec, 1)) + body + b"\x01"
    with contextlib.suppress(DecodeError):
        decode_udp(struct.pack(">H", len(payload)) + payload)


@FUZZ
@given(st.lists(st.binary(max_size=80), max_size=12), st.booleans())
def test_fuzz_split_then_decode(chunks: list[bytes], login: bool) -> None:
    session = logged_in() if login else TeltonikaTcpSession()
    buffer = bytearray()
    received = b""
    framed = b""
    for chunk in chunks:
        buffer += chunk
        received += chunk
        try:
            frames = session.split(buffer)
        except FrameTooLarge:
            return
        for frame in frames:
            framed += frame
            decode_or_reject(session, frame)
    assert framed + buffer == received  # split never loses or invents bytes


@FUZZ
@given(st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=40))
def test_fuzz_chunking_does_not_change_the_good_frames(sizes: list[int]) -> None:
    garbage = b"\x12\x00\x00junk\x00\x00\x00"
    stream = b"".join(STREAM[:3]) + garbage + b"".join(STREAM[3:])
    session = TeltonikaTcpSession()
    buffer = bytearray()
    good = []
    pos = 0
    for size in sizes * (len(stream) // sum(sizes) + 1):
        buffer += stream[pos : pos + size]
        pos += size
        for frame in session.split(buffer):
            try:
                session.decode(frame)
            except TeltonikaError:
                continue
            good.append(frame)
    assert good == STREAM
    assert not buffer
