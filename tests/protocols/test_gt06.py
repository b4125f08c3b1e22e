"""Concox GT06 decoder: vendor and Traccar vectors, replies, framing, commands and fuzz."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telematics.protocols.base import CommandResponse, Decoded, DecodeError, Fix, FrameTooLarge
from telematics.protocols.gt06 import (
    Gt06Error,
    Gt06Session,
    crc_itu,
    encode_command,
    encode_reply,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "protocols" / "gt06"


def load(name: str) -> dict[str, bytes]:
    """``<name> <hex>`` lines of a vector file; ``#`` lines are comments."""
    vectors = {}
    for line in (DATA / name).read_text().splitlines():
        if line and not line.startswith("#"):
            key, text = line.split()
            vectors[key] = bytes.fromhex(text)
    return vectors


VENDOR = load("vendor.txt")
TRACCAR = load("traccar.txt")


def crc_reference(data: bytes) -> int:
    """CRC-16/X-25 bit by bit, from its parameters, independent of the module's table."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def frame(protocol: int, content: bytes, serial: int = 1, *, long: bool = False) -> bytes:
    """A unit packet built by hand with the reference CRC."""
    length = 1 + len(content) + 4
    size = length.to_bytes(2, "big") if long else bytes([length])
    body = size + bytes([protocol]) + content + serial.to_bytes(2, "big")
    start = b"\x79\x79" if long else b"\x78\x78"
    return start + body + crc_reference(body).to_bytes(2, "big") + b"\r\n"


def ack(protocol: int, serial: int) -> bytes:
    """The 5-byte server acknowledgement, built by hand."""
    return frame(protocol, b"", serial)


def decode(data: bytes) -> Decoded:
    return Gt06Session().decode(data)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# --- CRC ----------------------------------------------------------------------------------


def test_crc_is_the_vendor_crc_itu() -> None:
    # The vendor's check value: the v1.8.1 login from its length to its serial.
    assert crc_itu(bytes.fromhex("0D0101234567890123450001")) == 0x8CDD
    assert crc_itu(b"123456789") == 0x906E  # CRC-16/X-25 catalogue check value
    assert crc_itu(b"") == 0x0000


@given(st.binary(max_size=300))
def test_crc_table_matches_the_bitwise_reference(data: bytes) -> None:
    assert crc_itu(data) == crc_reference(data)


# --- login --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "name", "imei", "reply"),
    [
        (VENDOR, "v181_login", "123456789012345", "787805010001D9DC0D0A"),
        (VENDOR, "v181_session_login", "353413532150362", "787805010002EB470D0A"),
        (TRACCAR, "G1", "123456789012345", "787805010001D9DC0D0A"),
        (TRACCAR, "G2", "353419036066061", "787805010003FACE0D0A"),
        (TRACCAR, "G3", "864717003283581", "78780501000955940D0A"),
    ],
)
def test_login_names_the_unit_and_prepares_the_echoed_reply(
    source: dict[str, bytes], name: str, imei: str, reply: str
) -> None:
    decoded = decode(source[name])

    assert decoded.identifier == imei
    assert decoded.reply == bytes.fromhex(reply)
    assert decoded.refusal is None
    assert decoded.fixes == [] and decoded.responses == []
    serial = int(reply[8:12], 16)
    assert decoded.events == [{"type": "login", "protocol": 1, "serial": serial, "imei": imei}]


def test_v31_login_with_model_and_time_zone() -> None:
    session = Gt06Session()
    decoded = session.decode(VENDOR["v31_login"])

    assert decoded.identifier == "752533678900242"
    assert session.imei == "752533678900242"
    # The vendor's login response echoes the login's serial 5.
    assert decoded.reply == VENDOR["v31_login_reply"] == ack(0x01, 5)
    assert decoded.refusal is None
    assert decoded.events == [
        {
            "type": "login",
            "protocol": 1,
            "serial": 5,
            "imei": "752533678900242",
            "model": 0x7000,
            "timezone_minutes": 480,  # 0x320 = 800 -> GMT+8, bit 3 clear: east
            "language": "english",  # bit 0
        }
    ]


def test_traccar_login_with_western_time_zone() -> None:
    decoded = decode(TRACCAR["G4"])

    assert decoded.identifier == "864717003664467"
    assert decoded.reply == bytes.fromhex("787805010002EB470D0A")
    event = decoded.events[0]
    assert event["model"] == 0x100F
    assert event["timezone_minutes"] == -240  # 0x190 = 400 -> 4:00, bit 3 set: west
    assert event["language"] == "chinese"  # bit 1


def test_login_with_a_non_decimal_terminal_id_is_rejected() -> None:
    with pytest.raises(Gt06Error, match="non-decimal"):
        decode(frame(0x01, bytes.fromhex("0123456789ABCDEF")))


# --- heartbeats ---------------------------------------------------------------------------


def heartbeat(serial: int, info: dict[str, bool], **fields: Any) -> dict[str, Any]:
    event = {"type": "heartbeat", "protocol": 0x13, "serial": serial}
    flags = dict.fromkeys(("oil_cut", "gps_tracking", "charging", "ignition", "armed"), False)
    return event | flags | info | fields


def test_v31_heartbeat_status_and_reply() -> None:
    decoded = decode(VENDOR["v31_heartbeat"])

    assert decoded.events == [
        heartbeat(
            0x000F,
            {"gps_tracking": True},
            voltage_level=4,
            gsm_signal=4,  # content 40 04 04 0001 (gt06.md's note says 0x00: a misread)
            alarm_code=0,
            language="chinese",
        )
    ]
    # The reply echoes serial 0x000F. The vendor's printed reply carries serial 0x0100
    # instead (not an echo of its own example); the bytes are right for that serial.
    assert decoded.reply == ack(0x13, 0x000F)
    assert encode_reply(0x13, 0x0100) == VENDOR["v31_heartbeat_reply"]
    assert decoded.fixes == []


def test_v181_session_status_and_reply() -> None:
    decoded = decode(VENDOR["v181_session_status"])

    assert decoded.events == [
        heartbeat(
            5,
            {"gps_tracking": True, "charging": True},
            voltage_level=1,
            gsm_signal=4,
            alarm_code=0,
            language="chinese",
        )
    ]
    assert decoded.reply == VENDOR["v181_session_status_reply"]


def test_v181_heartbeat_example_is_damaged_and_whole_without_the_language_bytes() -> None:
    printed = VENDOR["v181_heartbeat_text"]
    with pytest.raises(Gt06Error, match="CRC"):
        decode(printed)

    repaired = printed.replace(bytes.fromhex("4B04030001"), bytes.fromhex("4B0403"))
    decoded = decode(repaired)

    # 0x4B: GPS tracking, bits 3-5 = 001 (vibration), ACC high, defence on.
    assert decoded.events == [
        heartbeat(
            0x11,
            {"gps_tracking": True, "ignition": True, "armed": True},
            voltage_level=4,
            gsm_signal=3,
        )
    ]
    assert decoded.reply == VENDOR["v181_heartbeat_reply"]


@pytest.mark.parametrize(
    ("name", "serial", "info", "reply"),
    [
        (
            "G14",
            0x0129,
            {"oil_cut": True, "gps_tracking": True, "charging": True},
            "7878051301295D630D0A",
        ),
        ("G15", 0x01BA, {"gps_tracking": True, "charging": True}, "7878051301BAFB710D0A"),
    ],
)
def test_traccar_heartbeats(name: str, serial: int, info: dict[str, bool], reply: str) -> None:
    decoded = decode(TRACCAR[name])

    assert decoded.events == [
        heartbeat(serial, info, voltage_level=6, gsm_signal=4, alarm_code=0, language="english")
    ]
    assert decoded.reply == bytes.fromhex(reply) == ack(0x13, serial)


def test_a_unit_using_long_framing_is_answered_in_long_framing() -> None:
    decoded = decode(frame(0x13, bytes.fromhex("4004040002"), 0x0203, long=True))

    body = bytes.fromhex("0005130203")
    expected = b"\x79\x79" + body + crc_reference(body).to_bytes(2, "big") + b"\r\n"
    assert decoded.reply == expected == encode_reply(0x13, 0x0203, long_frame=True)


@pytest.mark.parametrize(
    ("name", "serial", "reply"),
    [("G16", 0x5EE4, "787805135EE410B50D0A"), ("G17", 0x0040, "787805130040BA7C0D0A")],
)
def test_long_traccar_heartbeats_read_by_the_documented_layout(
    name: str, serial: int, reply: str
) -> None:
    """Traccar reads these with undocumented layouts (battery at offset 5, temperature);
    the vendor layout gives out-of-range levels, but the unit is still answered."""
    decoded = decode(TRACCAR[name])

    assert decoded.reply == bytes.fromhex(reply)
    (event,) = decoded.events
    assert event["serial"] == serial
    if name == "G16":
        assert event == heartbeat(
            serial, {}, voltage_level=0x80, gsm_signal=0x2B, alarm_code=0, language=0
        )
    else:
        assert event == heartbeat(
            serial,
            {"gps_tracking": True},
            voltage_level=0xB2,
            gsm_signal=0xFA,
            alarm_code=0,
            language="english",
        )


def test_eg02_heartbeat_external_voltage_and_reply() -> None:
    decoded = decode(VENDOR["v31_heartbeat_eg"])

    assert decoded.events == [
        {
            "type": "heartbeat",
            "protocol": 0x23,
            "serial": 8,
            "oil_cut": False,
            "gps_tracking": False,
            "charging": True,
            "ignition": False,
            "armed": True,
            "external_voltage": 39.86,
            "gsm_signal": 4,
            "language": "english",
        }
    ]
    assert decoded.reply == VENDOR["v31_heartbeat_eg_reply"]


def test_traccar_eg_heartbeat() -> None:
    decoded = decode(TRACCAR["heartbeat_23"])

    (event,) = decoded.events
    assert event["external_voltage"] == 2.9
    assert (event["oil_cut"], event["gps_tracking"], event["gsm_signal"]) == (True, True, 4)
    assert event["language"] == "chinese"
    assert decoded.reply == ack(0x23, 8)


def test_heartbeat_with_length_two_bytes_short_is_accepted_by_its_crc() -> None:
    decoded = decode(TRACCAR["frame_heartbeat_short_length"])

    assert decoded.events == [
        heartbeat(
            0x044D,
            {"gps_tracking": True, "charging": True, "ignition": True},
            voltage_level=6,
            gsm_signal=2,
            alarm_code=0,
            language="english",
        )
    ]
    assert decoded.reply == ack(0x13, 0x044D)


# --- locations ----------------------------------------------------------------------------


def check_fix(fix: Fix, expected: dict[str, Any]) -> None:
    """Every Fix field against ``expected``; coordinates to the 1e-6 degree of the sources."""
    expected = dict(expected)
    tolerance = expected.pop("tolerance", 1e-6)
    assert fix.fix_time == expected.pop("time")
    assert fix.latitude == pytest.approx(expected.pop("lat"), abs=tolerance)
    assert fix.longitude == pytest.approx(expected.pop("lon"), abs=tolerance)
    assert fix.speed_kmh == expected.pop("speed")
    assert fix.course == expected.pop("course")
    assert fix.satellites == expected.pop("satellites")
    assert fix.valid is expected.pop("valid")
    assert fix.ignition is expected.pop("ignition", None)
    assert (fix.altitude, fix.hdop, fix.odometer_km) == (None, None, None)
    assert fix.attributes == expected.pop("attributes")
    assert expected == {}


CELL_460 = {"mcc": 460, "mnc": 0, "lac": 10365}

LOCATIONS = {
    "v31_location": (
        VENDOR,
        {
            "time": utc(2015, 12, 29, 2, 51, 5),
            "lat": 23.111693,
            "lon": 114.409298,
            "speed": 0.0,
            "course": 0.0,
            "satellites": 9,
            "valid": True,
            "ignition": False,  # ACC 00
            "attributes": {
                "gps_info_length": 12,
                "differential": False,
                **CELL_460,
                "cell_id": 8049,
                "upload_mode": 0,
                "reupload": True,
            },
        },
    ),
    "v181_location": (
        VENDOR,
        {
            "time": utc(2011, 8, 29, 17, 46, 16),
            "lat": 23.111668,
            "lon": 114.409285,
            "speed": 0.0,
            "course": 143.0,
            "satellites": 15,
            "valid": True,
            "attributes": {
                "gps_info_length": 12,
                "differential": False,
                **CELL_460,
                "cell_id": 8120,
            },
        },
    ),
    "collector_location_cc": (
        VENDOR,
        {
            "time": utc(2011, 8, 29, 17, 46, 16),
            "lat": 23.111668,
            "lon": 114.409285,
            "speed": 0.0,
            "course": 143.0,
            "satellites": 12,
            "valid": True,
            "attributes": {
                "gps_info_length": 12,
                "differential": False,
                **CELL_460,
                "cell_id": 8120,
            },
        },
    ),
    "G6": (
        TRACCAR,
        {
            # Traccar asserts position("2015-10-20 14:21:11.000", true, 54.94535, 24.01762).
            "time": utc(2015, 10, 20, 14, 21, 11),
            "lat": 54.94535,
            "lon": 24.01762,
            "tolerance": 1e-5,
            "speed": 0.0,
            "course": 0.0,
            "satellites": 5,
            "valid": True,
            "attributes": {
                "gps_info_length": 12,
                "differential": False,
                "mcc": 246,
                "mnc": 1,
                "lac": 110,
                "cell_id": 21978,
            },
        },
    ),
    "G7": (
        TRACCAR,
        {
            "time": utc(2015, 8, 27, 18, 29, 55),
            "lat": 16.634709,
            "lon": 80.967076,
            "speed": 32.0,
            "course": 258.0,
            "satellites": 11,
            "valid": True,
            "attributes": {
                "gps_info_length": 12,
                "differential": False,
                "mcc": 404,
                "mnc": 7,
                "lac": 470,
                "cell_id": 41241,
                "mileage": 0x0041EE10,
            },
        },
    ),
    "G9": (
        TRACCAR,
        {
            "time": utc(2017, 8, 25, 17, 2, 22),
            "lat": 27.463709,
            "lon": 76.042560,
            "speed": 85.0,
            "course": 200.0,
            "satellites": 4,
            "valid": True,
            "attributes": {
                "gps_info_length": 13,
                "differential": False,
                "mcc": 404,
                "mnc": 70,
                "lac": 211,
                "cell_id": 49301,
            },
        },
    ),
    "G11": (
        TRACCAR,
        {
            "time": utc(2015, 12, 29, 2, 51, 5),
            "lat": 23.111693,
            "lon": 114.409298,
            "speed": 0.0,
            "course": 0.0,
            "satellites": 9,
            "valid": True,
            "ignition": False,
            "attributes": {
                "gps_info_length": 12,
                "differential": False,
                **CELL_460,
                "cell_id": 8049,
                "upload_mode": 0,
                "reupload": True,
            },
        },
    ),
    "G12": (
        TRACCAR,
        {
            "time": utc(2018, 6, 22, 8, 56, 23),
            "lat": 47.068840,
            "lon": 15.441043,
            "speed": 0.0,
            "course": 292.0,
            "satellites": 5,
            "valid": True,
            "ignition": False,
            "attributes": {
                "gps_info_length": 12,
                "differential": False,
                "mcc": 232,
                "mnc": 1,
                "lac": 7615,
                "cell_id": 13106,
                "upload_mode": 0,
                "reupload": False,
            },
        },
    ),
    "G13": (
        TRACCAR,
        {
            "time": utc(2022, 7, 22, 15, 16, 0),
            "lat": 20.020373,
            "lon": 110.360333,
            "speed": 44.0,
            "course": 151.0,
            "satellites": 15,
            "valid": True,
            "ignition": True,
            "attributes": {
                "gps_info_length": 12,
                "differential": False,
                "mcc": 460,
                "mnc": 0,
                "lac": 30147,
                "cell_id": 37683,
                "upload_mode": 0,
                "reupload": False,
            },
        },
    ),
    "G20": (
        TRACCAR,
        {
            # 0xA0, 4G cell: 4-byte LAC, 8-byte cell id. Traccar asserts ignition false.
            "time": utc(2023, 7, 21, 15, 45, 14),
            "lat": -12.936676,
            "lon": -38.396418,
            "speed": 0.0,
            "course": 124.0,
            "satellites": 13,
            "valid": False,
            "ignition": False,
            "attributes": {
                "gps_info_length": 12,
                "differential": False,
                "mcc": 724,
                "mnc": 2,
                "lac": 37166,
                "cell_id": 0x0718798D,
                "upload_mode": 14,
                "reupload": False,
            },
        },
    ),
    "gps_lbs_long_11": (
        TRACCAR,
        {
            "time": utc(2021, 11, 11, 2, 44, 48),
            "lat": 43.970484,
            "lon": -79.263956,
            "speed": 0.0,
            "course": 0.0,
            "satellites": 8,
            "valid": True,
            "attributes": {
                "gps_info_length": 12,
                "differential": True,
                "mcc": 302,
                "mnc": 720,
                "lac": 30175,
                "cell_id": 0x0084890C,
            },
        },
    ),
    "location_22_mnc_2_bytes": (
        TRACCAR,
        {
            # MCC 0x8136: bit 15 announces a 2-byte MNC (310-260).
            "time": utc(2017, 12, 7, 15, 27, 2),
            "lat": 0.0,
            "lon": 0.0,
            "speed": 0.0,
            "course": 0.0,
            "satellites": 0,
            "valid": False,
            "ignition": False,
            "attributes": {
                "gps_info_length": 7,
                "differential": False,
                "mcc": 310,
                "mnc": 260,
                "lac": 52106,
                "cell_id": 48883,
                "upload_mode": 0,
                "reupload": False,
            },
        },
    ),
    "location_22_acc_on": (
        TRACCAR,
        {
            "time": utc(2017, 6, 22, 10, 16, 22),
            "lat": 23.010642,
            "lon": 72.507196,
            "speed": 0.0,
            "course": 0.0,
            "satellites": 6,
            "valid": False,
            "ignition": True,
            "attributes": {
                "gps_info_length": 12,
                "differential": False,
                "mcc": 404,
                "mnc": 5,
                "lac": 1136,
                "cell_id": 18172,
                "upload_mode": 3,
                "reupload": True,
            },
        },
    ),
}


@pytest.mark.parametrize("name", list(LOCATIONS))
def test_location_packets_give_one_fix_and_no_reply(name: str) -> None:
    source, expected = LOCATIONS[name]
    decoded = decode(source[name])

    (fix,) = decoded.fixes
    check_fix(fix, expected)
    assert decoded.reply is None  # V3.1 3.2: "Location packet server no response"
    assert (decoded.events, decoded.responses, decoded.identifier) == ([], [], None)


def test_location_raw_coordinates_are_minutes_times_30000() -> None:
    (fix,) = decode(VENDOR["v31_location"]).fixes

    assert fix.latitude == 0x027AC818 / 30000 / 60
    assert fix.longitude == 0x0C465860 / 30000 / 60


def test_south_and_west_come_from_the_course_status_bits() -> None:
    content = bytearray.fromhex("0F0C1D023305C9027AC8180C465860000000")
    north_east = 0x1400 | 332
    for word, north, east in (
        (north_east, True, True),
        (north_east & ~0x0400, False, True),
        (north_east | 0x0800, True, False),
        ((north_east & ~0x0400) | 0x0800 | 0x2000, False, False),
    ):
        content[16:18] = word.to_bytes(2, "big")
        (fix,) = decode(frame(0x10, bytes(content))).fixes
        assert (fix.latitude > 0, fix.longitude > 0) == (north, east)
        assert fix.course == 332.0  # the vendor's 0x15 0x4C worked example course
        assert fix.valid is True
        assert fix.attributes["differential"] is bool(word & 0x2000)


def test_empty_location_packet_is_an_event() -> None:
    decoded = decode(TRACCAR["G5"])

    assert decoded.events == [{"type": "location", "protocol": 0x12, "serial": 0x99, "empty": True}]
    assert decoded.fixes == [] and decoded.reply is None


def test_truncated_location_is_rejected() -> None:
    content = VENDOR["v31_location"][4:14]
    with pytest.raises(Gt06Error, match="needs 18 content bytes"):
        decode(frame(0x22, content))


def test_location_with_an_impossible_date_is_kept_as_an_event() -> None:
    content = bytearray(VENDOR["v31_location"][4:-6])
    content[0:6] = bytes(6)  # 2000-00-00: units send it before their first fix
    decoded = decode(frame(0x22, bytes(content), serial=7))

    assert decoded.fixes == []
    (event,) = decoded.events
    assert event["type"] == "location" and event["usable_fix"] is False
    assert event["fix_time"] is None
    assert (event["mcc"], event["cell_id"]) == (460, 8049)
    assert decoded.reply is None


# --- alarms -------------------------------------------------------------------------------


def status(info: dict[str, bool], **fields: Any) -> dict[str, Any]:
    flags = dict.fromkeys(("oil_cut", "gps_tracking", "charging", "armed"), False)
    return flags | info | fields


ALARMS = {
    "v31_alarm": (
        VENDOR,
        0x0D,
        {
            "time": utc(2018, 3, 12, 6, 56, 22),
            "lat": 22.575833,
            "lon": 113.915653,
            "speed": 1.0,
            "course": 3.0,
            "satellites": 3,
            "valid": False,
            "ignition": False,
            "attributes": {
                "gps_info_length": 12,
                "differential": False,
                "mcc": 460,
                "mnc": 0,
                "lac": 10342,
                "cell_id": 3822,
                **status(
                    {"charging": True},
                    voltage_level=6,
                    gsm_signal=4,
                    alarm_code=3,
                    language="english",
                    alarm="vibration",
                ),
            },
        },
    ),
    "v31_alarm_fences_example": (
        VENDOR,
        0x1D,
        {
            # LBS length 0x08 for the same 9-byte cell the 0x26 example counts as 0x09.
            "time": utc(2017, 12, 13, 19, 55, 54),
            "lat": 22.576590,
            "lon": 113.916450,
            "speed": 0.0,
            "course": 185.0,
            "satellites": 11,
            "valid": True,
            "ignition": False,
            "attributes": {
                "gps_info_length": 12,
                "differential": False,
                "mcc": 460,
                "mnc": 0,
                "lac": 10342,
                "cell_id": 3822,
                **status(
                    # 0xD8: oil cut, GPS tracking, bits 3-5 = 011 low battery
                    {"oil_cut": True, "gps_tracking": True},
                    voltage_level=2,
                    gsm_signal=4,
                    alarm_code=0,
                    language="english",
                    alarm="low_battery",
                ),
            },
        },
    ),
    "v181_session_alarm": (
        VENDOR,
        0x36,
        {
            "time": utc(2011, 11, 15, 14, 36, 29),
            "lat": 23.111755,
            "lon": 114.409230,
            "speed": 0.0,
            "course": 2.0,
            "satellites": 15,
            "valid": True,
            "ignition": False,
            "attributes": {
                "gps_info_length": 12,
                "differential": False,
                **CELL_460,
                "cell_id": 8050,
                **status(
                    {"gps_tracking": True, "charging": True, "armed": True},
                    voltage_level=6,
                    gsm_signal=4,
                    alarm_code=1,
                    language="chinese",
                    alarm="sos",
                ),
            },
        },
    ),
    "vl03_alarm": (
        VENDOR,
        0x0C,
        {
            "time": utc(2015, 12, 29, 3, 11, 38),
            "lat": 23.111693,
            "lon": 114.409298,
            "speed": 0.0,
            "course": 0.0,
            "satellites": 9,
            "valid": False,
            "ignition": False,
            "attributes": {
                "gps_info_length": 12,
                "differential": False,
                **CELL_460,
                "cell_id": 8049,
                **status(
                    {"oil_cut": True},
                    voltage_level=4,
                    gsm_signal=4,
                    alarm_code=0x13,
                    language="english",
                    alarm="tampering",
                ),
            },
        },
    ),
    "vl03_alarm_fences": (
        VENDOR,
        0x00,
        {
            "time": utc(2016, 4, 25, 9, 45, 7),
            "lat": 23.111838,
            "lon": 114.409244,
            "speed": 0.0,
            "course": 311.0,
            "satellites": 5,
            "valid": False,
            "ignition": False,
            "attributes": {
                "gps_info_length": 12,
                "differential": False,
                "mcc": 0,
                "mnc": 0,
                "lac": 0,
                "cell_id": 0,
                **status(
                    {"oil_cut": True},
                    voltage_level=2,
                    gsm_signal=0,
                    alarm_code=0x0C,
                    language="chinese",
                    alarm="power_on",
                ),
                "fence": None,  # 0xFF: not a fence alarm
            },
        },
    ),
    "G10": (
        TRACCAR,
        0x0140,
        {
            "time": utc(2017, 8, 25, 17, 2, 8),
            "lat": 27.466647,
            "lon": 76.043698,
            "speed": 88.0,
            "course": 199.0,
            "satellites": 4,
            "valid": True,
            "ignition": True,
            "attributes": {
                "gps_info_length": 13,
                "differential": False,
                "mcc": 404,
                "mnc": 70,
                "lac": 211,
                "cell_id": 49301,
                **status(
                    {"gps_tracking": True, "charging": True},
                    voltage_level=6,
                    gsm_signal=4,
                    alarm_code=6,
                    language=0,  # "no need for reply": answered all the same
                    alarm="overspeed",
                ),
            },
        },
    ),
    "G18": (
        TRACCAR,
        0x0D,
        {
            "time": utc(2018, 3, 12, 6, 56, 22),
            "lat": 22.575833,
            "lon": 113.915653,
            "speed": 1.0,
            "course": 3.0,
            "satellites": 3,
            "valid": False,
            "ignition": False,
            "attributes": {
                "gps_info_length": 12,
                "differential": False,
                "mcc": 460,
                "mnc": 0,
                "lac": 10342,
                "cell_id": 3822,
                **status(
                    {"charging": True},
                    voltage_level=6,
                    gsm_signal=4,
                    alarm_code=3,
                    language="english",
                    alarm="vibration",
                ),
            },
        },
    ),
    "G19": (
        TRACCAR,
        0x035F,
        {
            # Traccar asserts ALARM_SOS from a layout the vendor documents do not define:
            # by the documented layout the alarm byte is 0x42 (not in the alarm table).
            "time": utc(2023, 9, 19, 15, 58, 45),
            "lat": 25.827437,
            "lon": -80.376458,
            "speed": 0.0,
            "course": 33.0,
            "satellites": 12,
            "valid": True,
            "ignition": True,
            "attributes": {
                "gps_info_length": 12,
                "differential": False,
                "mcc": 310,
                "mnc": 4,
                "lac": 33278,
                "cell_id": 421275,
                **status(
                    {"armed": True},
                    voltage_level=0x41,
                    gsm_signal=0x3E,
                    alarm_code=0x42,
                    language="chinese",
                ),
            },
        },
    ),
    "alarm_16_status_bits_7": (
        TRACCAR,
        0x0002,
        {
            # Traccar maps terminal bits 3-5 = 111 to "removing"; the vendor defines 1-4 only.
            "time": utc(2019, 2, 12, 18, 20, 26),
            "lat": 23.058384,
            "lon": 113.380546,
            "speed": 0.0,
            "course": 0.0,
            "satellites": 5,
            "valid": True,
            "ignition": False,
            "attributes": {
                "gps_info_length": 12,
                "differential": False,
                "mcc": 0,
                "mnc": 0,
                "lac": 0,
                "cell_id": 0x1A0000,
                **status(
                    {"gps_tracking": True, "charging": True},
                    voltage_level=0x55,
                    gsm_signal=3,
                    alarm_code=0,
                    language="english",
                ),
            },
        },
    ),
}


@pytest.mark.parametrize("name", list(ALARMS))
def test_alarm_packets_give_a_fix_and_the_alarm_reply(name: str) -> None:
    source, serial, expected = ALARMS[name]
    data = source[name]
    decoded = decode(data)

    (fix,) = decoded.fixes
    check_fix(fix, expected)
    assert decoded.reply == ack(data[3], serial)
    assert (decoded.events, decoded.responses) == ([], [])


def test_alarm_replies_match_the_documents() -> None:
    assert decode(VENDOR["v181_session_alarm"]).reply == VENDOR["v181_session_alarm_reply"]
    assert decode(TRACCAR["G18"]).reply == bytes.fromhex("78780526000D9C8E0D0A")
    assert decode(TRACCAR["G10"]).reply == bytes.fromhex("7878051601409A190D0A")
    assert decode(TRACCAR["G19"]).reply == bytes.fromhex("78780516035F41DF0D0A")
    # V3.1 prints a response with serial 0x001C (not its example's 0x000D).
    assert encode_reply(0x26, 0x001C) == VENDOR["v31_alarm_reply"]


def test_alarm_mileage_and_fence_number() -> None:
    content = bytes(VENDOR["v31_alarm"][4:-6])
    decoded = decode(frame(0x27, content + bytes([3]) + (123456).to_bytes(4, "big"), 9))

    (fix,) = decoded.fixes
    assert fix.attributes["fence"] == 3
    assert fix.attributes["mileage"] == 123456
    assert fix.odometer_km is None  # the vendor gives no unit for mileage
    assert decoded.reply == ack(0x27, 9)


def test_alarm_with_an_impossible_date_still_gets_its_reply() -> None:
    content = bytearray(VENDOR["v31_alarm"][4:-6])
    content[1] = 13  # month 13
    decoded = decode(frame(0x26, bytes(content), serial=0x0D))

    assert decoded.fixes == []
    (event,) = decoded.events
    assert (event["type"], event["alarm"], event["usable_fix"]) == ("alarm", "vibration", False)
    assert decoded.reply == ack(0x26, 0x0D)


@pytest.mark.parametrize(
    ("name", "serial", "cell", "fields"),
    [
        (
            "v31_lbs_alarm",
            0x94,
            {"mcc": 460, "mnc": 0, "lac": 10365, "cell_id": 8049},
            {"voltage_level": 4, "gsm_signal": 4, "language": "chinese"},
        ),
        (
            "lbs_alarm_19",
            0x08,
            {"mcc": 655, "mnc": 10, "lac": 10721, "cell_id": 14065},
            {"voltage_level": 3, "gsm_signal": 4, "language": "english"},
        ),
    ],
)
def test_lbs_alarm_is_an_event_with_the_alarm_reply(
    name: str, serial: int, cell: dict, fields: dict
) -> None:
    source = VENDOR if name in VENDOR else TRACCAR
    decoded = decode(source[name])

    # Terminal info 0x20: bits 3-5 = 100 (SOS); alarm byte 0x01 (SOS).
    assert decoded.events == [
        {
            "type": "alarm",
            "protocol": 0x19,
            "serial": serial,
            **cell,
            "ignition": False,
            **status({}, alarm_code=1, alarm="sos", **fields),
        }
    ]
    assert decoded.reply == ack(0x19, serial)
    assert decoded.fixes == []


# --- LBS, Wi-Fi, address requests, information ---------------------------------------------------


def test_lbs_multiple_bases_is_an_event_without_reply() -> None:
    for data in (VENDOR["v31_lbs"], TRACCAR["G24"]):
        decoded = decode(data)

        assert decoded.events == [
            {
                "type": "lbs",
                "protocol": 0x28,
                "serial": 5,
                "time": "2016-01-13T02:02:02+00:00",
                "mcc": 460,
                "mnc": 0,
                "cells": [
                    {"lac": 0x287D, "cell_id": 0x001F71, "rssi": 0x3E},
                    {"lac": 0x287D, "cell_id": 0x001F72, "rssi": 0x31},
                    {"lac": 0x287D, "cell_id": 0x001E23, "rssi": 0x2D},
                    {"lac": 0x287D, "cell_id": 0x001F40, "rssi": 0x18},
                ],
                "timing_advance": 0xFF,
                "language": "english",
            }
        ]
        assert decoded.reply is None  # "No need to reply"
        assert decoded.fixes == []


def test_wifi_packet_is_an_event_without_reply() -> None:
    decoded = decode(VENDOR["v31_wifi"])

    (event,) = decoded.events
    assert event["type"] == "wifi" and event["serial"] == 0x1F
    assert event["time"] == "2016-06-14T02:45:53+00:00"
    assert (event["mcc"], event["mnc"], event["timing_advance"]) == (460, 0, 0xFF)
    assert [cell["cell_id"] for cell in event["cells"]] == [8049, 7703, 7715, 8050, 8000]
    assert event["wifi"] == [
        {"mac": "80:89:17:44:98:b4", "rssi": 0x5C},
        {"mac": "cc:7b:35:36:61:a6", "rssi": 0x5B},
    ]
    assert decoded.reply is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "v181_session_address_request",
            {
                "time": utc(2011, 11, 15, 14, 33, 23),
                "lat": 23.111755,
                "lon": 114.409228,
                "speed": 0.0,
                "course": 2.0,
                "satellites": 15,
                "valid": True,
                "attributes": {
                    "gps_info_length": 12,
                    "differential": False,
                    "address_request": True,
                    "phone": "66366",
                    "language": "chinese",
                },
            },
        ),
        (
            "vl03_address_request",
            {
                "time": utc(2015, 12, 29, 7, 17, 57),
                "lat": 23.111680,
                "lon": 114.409244,
                "speed": 0.0,
                "course": 216.0,
                "satellites": 10,
                "valid": True,
                "attributes": {
                    "gps_info_length": 12,
                    "differential": False,
                    "address_request": True,
                    "phone": "1252013532177079",
                    "language": "chinese",
                },
            },
        ),
    ],
)
def test_address_requests_give_a_fix_without_reply(name: str, expected: dict) -> None:
    decoded = decode(VENDOR[name])

    (fix,) = decoded.fixes
    check_fix(fix, expected)
    assert decoded.reply is None


def test_information_packets() -> None:
    status_sync = decode(VENDOR["v31_information"]).events[0]
    assert status_sync["subtype"] == 0x04
    assert status_sync["text"].startswith("ALM1=C4;ALM2=CC;ALM3=4C;STA1=C0;DYD=01;")

    assert decode(TRACCAR["information_94_iccid"]).events == [
        {
            "type": "information",
            "protocol": 0x94,
            "serial": 3,
            "subtype": 0x0A,
            "imei": "359857082366758",
            "imsi": "520050218721401",
            "iccid": "8966051912408052452",
        }
    ]
    voltage = decode(TRACCAR["information_94_voltage"])
    assert voltage.events[0]["external_voltage"] == 2.37
    assert voltage.reply is None  # "Server no Response"

    fuel = decode(VENDOR["v31_information_fuel"]).events[0]
    assert fuel["subtype"] == 0x0D
    assert bytes.fromhex(fuel["data"])[6:].startswith(b"!AIOIL,02,025.900")


def test_time_request_and_external_device_are_unanswered_events() -> None:
    time_request = decode(VENDOR["v31_time_request"])
    assert time_request.events == [{"type": "time_request", "protocol": 0x8A, "serial": 6}]
    assert time_request.reply is None

    device = decode(VENDOR["v31_external_device"])
    assert device.events[0]["type"] == "external_device"
    assert device.reply is None


@pytest.mark.parametrize("protocol", [0x38, 0x55, 0xF0])
def test_unknown_protocol_numbers_are_events_without_reply(protocol: int) -> None:
    decoded = decode(frame(protocol, b"\x01\x02\x03", 4, long=protocol == 0x38))

    assert decoded.events == [{"type": "unknown", "protocol": protocol}]
    assert decoded.reply is None
    assert decoded.fixes == []


def test_traccar_0x38_is_unknown() -> None:
    assert decode(TRACCAR["G21"]).events == [{"type": "unknown", "protocol": 0x38}]


# --- commands -----------------------------------------------------------------------------


def command_by_hand(text: bytes, serial: int, flag: int) -> bytes:
    """0x80 packet assembled field by field with the reference CRC."""
    content = bytes([4 + len(text)]) + flag.to_bytes(4, "big") + text
    return frame(0x80, content, serial)


def test_encode_command_matches_the_vendor_example() -> None:
    packet = encode_command("sos#", serial=1)

    assert packet == VENDOR["v31_command"]
    assert packet == command_by_hand(b"sos#", 1, 0)
    assert packet[-4:-2] == crc_reference(packet[2:-4]).to_bytes(2, "big") == b"\x6d\x6a"


@pytest.mark.parametrize(
    ("text", "serial", "flag", "expected"),
    [
        ("Relay,1#", 0, 0, TRACCAR["encoder_relay"]),
        ("DYD,000000#", 0xA0, 0x0001A958, VENDOR["v181_session_cut_command"]),
        ("DYD,000000#", 0xA0, 0x0001A961, VENDOR["v181_session_cut_again_command"]),
        ("HFYD,000000#", 0xA0, 0x0001A963, VENDOR["v181_session_resume_command"]),
    ],
)
def test_encode_command_matches_documented_packets(
    text: str, serial: int, flag: int, expected: bytes
) -> None:
    packet = encode_command(text, serial, flag)

    assert packet == expected
    assert packet == command_by_hand(text.encode(), serial, flag)


def test_encode_command_rejects_what_a_packet_cannot_carry() -> None:
    with pytest.raises(ValueError, match="ASCII"):
        encode_command("Relé,1#", 1)
    with pytest.raises(ValueError, match="245"):
        encode_command("A" * 246, 1)
    assert len(encode_command("A" * 245, 1)) == 260
    with pytest.raises(ValueError, match="serial"):
        encode_command("sos#", 0x10000)
    with pytest.raises(ValueError, match="flag"):
        encode_command("sos#", 1, -1)


@pytest.mark.parametrize(
    ("name", "text", "flag", "serial"),
    [
        ("v181_session_cut_response", "DYD=Success!", 0x0001A958, 0x18),
        (
            "v181_session_cut_again_response",
            "Already in the state of fuel supply cut off,the command is not running!",
            0x0001A961,
            0x1C,
        ),
        ("v181_session_resume_response", "HFYD=Success!", 0x0001A963, 0x1E),
        (
            "v181_session_where_response",
            "DWXX=Lat:N23.111682,Lon:E114.409217,Course:0.00,Speed:0.3518,"
            "DateTime:11-11-15  11:53:43",
            0x0001A967,
            0x23,
        ),
        ("v31_response", "SOS1:13421632699 SOS2: SOS3:", 0, 0x2A),
        (
            "v31_response_long",
            "Battery:4.16V,NORMAL; GPRS:Link Up; GSM Signal Level:Strong; GPS:Searching "
            "satellite, SVS Used in fix:0(0), GPS Signal Level:; ACC:OFF; Defense:OFF",
            0,
            0x2E,
        ),
    ],
)
def test_command_responses(name: str, text: str, flag: int, serial: int) -> None:
    data = VENDOR[name]
    decoded = decode(data)

    assert decoded.responses == [CommandResponse(text=text)]
    protocol = data[3] if data[:2] == b"\x78\x78" else data[4]
    assert protocol in (0x15, 0x21)
    assert decoded.events == [
        {"type": "command_response", "protocol": protocol, "serial": serial, "server_flag": flag}
    ]
    assert decoded.reply is None
    assert decoded.fixes == []


def test_command_response_flag_matches_the_command_it_answers() -> None:
    command = VENDOR["v181_session_cut_command"]
    response = decode(VENDOR["v181_session_cut_response"])

    assert response.events[0]["server_flag"] == int.from_bytes(command[5:9], "big")


def test_traccar_command_responses() -> None:
    iccid = decode(TRACCAR["G22"])
    assert iccid.responses == [CommandResponse(text="<ICCID:89882390000097302650>")]
    assert iccid.events[0]["iccid"] == "89882390000097302650"

    utf16 = decode(TRACCAR["response_21_utf16"])
    assert utf16.responses == [CommandResponse(text="Command error!")]


def test_command_response_with_a_bad_command_length_is_rejected() -> None:
    with pytest.raises(Gt06Error, match="command length"):
        decode(frame(0x15, bytes([0x40]) + bytes(8)))


# --- damaged frames -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["v181_location_text", "v181_heartbeat_text", "G8", "G23", "frame_gps_10"]
)
def test_documented_frames_that_fail_their_check_are_rejected(name: str) -> None:
    source = VENDOR if name in VENDOR else TRACCAR
    with pytest.raises(Gt06Error):
        decode(source[name])


def test_flipped_bit_is_a_crc_error() -> None:
    data = bytearray(VENDOR["v31_location"])
    data[10] ^= 0x01
    with pytest.raises(Gt06Error, match="CRC mismatch"):
        decode(bytes(data))


def test_wrong_stop_bits_and_lengths_are_rejected() -> None:
    data = VENDOR["v31_heartbeat"]
    with pytest.raises(Gt06Error, match="stop bits"):
        decode(data[:-2] + b"\r\r")
    with pytest.raises(Gt06Error, match="length says"):
        decode(data[:2] + b"\x0b" + data[3:])
    with pytest.raises(Gt06Error, match="too short"):
        decode(b"\x78\x78\x05\r\n")
    with pytest.raises(Gt06Error, match="noise"):
        decode(b"GET / HTTP/1.1\r\n")


# --- framing ------------------------------------------------------------------------------


STREAM = [
    VENDOR["v31_login"],
    VENDOR["v31_location"],
    VENDOR["v31_heartbeat"],
    VENDOR["v31_response_long"],
    VENDOR["v31_alarm"],
]


def test_frames_arriving_byte_by_byte() -> None:
    session = Gt06Session()
    buffer = bytearray()
    frames: list[bytes] = []
    for byte in b"".join(STREAM):
        buffer.append(byte)
        frames += session.split(buffer)

    assert frames == STREAM
    assert buffer == bytearray()
    assert [session.decode(frame).reply for frame in frames] == [
        VENDOR["v31_login_reply"],
        None,
        ack(0x13, 0x0F),
        None,
        ack(0x26, 0x0D),
    ]


def test_two_frames_in_one_chunk_and_an_incomplete_tail() -> None:
    tail = VENDOR["v31_alarm"][:11]
    buffer = bytearray(VENDOR["v31_login"] + VENDOR["v31_heartbeat"] + tail)

    assert Gt06Session().split(buffer) == [VENDOR["v31_login"], VENDOR["v31_heartbeat"]]
    assert buffer == bytearray(tail)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x01noise\xff",
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x78\x78",  # start bits without a frame
        b"junk\x78",  # half a start marker right before the next frame
        b"\x78\x78\xff\x01\x02",  # start bits announcing 255 bytes
        b"\x78\x78\x0d\r\n",  # a length whose end falls inside the next frame
    ],
)
def test_garbage_between_two_good_frames(garbage: bytes) -> None:
    session = Gt06Session()
    first, second = VENDOR["v31_login"], VENDOR["v31_location"]
    buffer = bytearray(first + garbage + second)

    frames = session.split(buffer)

    assert frames[0] == first and frames[-1] == second
    assert b"".join(frames[1:-1]) == garbage
    for noise in frames[1:-1]:
        with pytest.raises(Gt06Error):
            session.decode(noise)
    assert session.decode(first).identifier == "752533678900242"
    assert len(session.decode(second).fixes) == 1
    assert buffer == bytearray()


def test_garbage_before_a_frame_arriving_in_pieces() -> None:
    session = Gt06Session()
    buffer = bytearray(b"\x78\x78\xff")  # looks like the start of a 260-byte frame
    assert session.split(buffer) == []

    good = VENDOR["v31_heartbeat"]
    buffer += good[:6]
    assert session.split(buffer) == []  # nothing proves the start bits wrong yet
    buffer += good[6:]
    assert session.split(buffer) == [b"\x78\x78\xff", good]


def test_short_length_heartbeat_is_split_whole() -> None:
    data = TRACCAR["frame_heartbeat_short_length"]
    buffer = bytearray(data + VENDOR["v31_heartbeat"])

    assert Gt06Session().split(buffer) == [data, VENDOR["v31_heartbeat"]]


def test_bad_crc_frame_is_split_then_rejected() -> None:
    damaged = bytearray(VENDOR["v31_location"])
    damaged[20] ^= 0xFF
    session = Gt06Session()
    buffer = bytearray(bytes(damaged) + VENDOR["v31_heartbeat"])

    frames = session.split(buffer)

    assert frames == [bytes(damaged), VENDOR["v31_heartbeat"]]
    with pytest.raises(Gt06Error, match="CRC"):
        session.decode(frames[0])


def test_oversized_length_raises_frame_too_large() -> None:
    with pytest.raises(FrameTooLarge):
        Gt06Session().split(bytearray(b"\x79\x79\xff\xff\x94\x00"))
    with pytest.raises(FrameTooLarge):
        Gt06Session(max_frame=64).split(bytearray(VENDOR["v31_information"]))


def test_frames_before_an_oversized_one_are_returned_first() -> None:
    session = Gt06Session()
    buffer = bytearray(VENDOR["v31_login"] + b"\x79\x79\x40\x00")

    assert session.split(buffer) == [VENDOR["v31_login"]]
    with pytest.raises(FrameTooLarge):
        session.split(buffer)


def test_half_a_start_marker_waits() -> None:
    buffer = bytearray(b"\x79")
    assert Gt06Session().split(buffer) == []
    assert buffer == bytearray(b"\x79")


# --- fuzz ---------------------------------------------------------------------------------


KNOWN = [0x01, 0x10, 0x11, 0x12, 0x13, 0x15, 0x16, 0x19, 0x1A, 0x21, 0x22, 0x23, 0x26, 0x27]
KNOWN += [0x28, 0x2A, 0x2C, 0x8A, 0x94, 0x9B, 0xA0, 0xA1, 0xA4]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_decode_errors(data: bytes) -> None:
    try:
        decoded = Gt06Session().decode(data)
    except DecodeError:
        return
    assert isinstance(decoded, Decoded)


@settings(max_examples=500, deadline=None)
@given(
    protocol=st.sampled_from(KNOWN) | st.integers(0, 255),
    content=st.binary(max_size=300),
    serial=st.integers(0, 0xFFFF),
    long=st.booleans(),
)
def test_well_framed_arbitrary_content_raises_only_gt06_errors(
    protocol: int, content: bytes, serial: int, long: bool
) -> None:
    data = frame(protocol, content, serial, long=long or len(content) > 250)
    try:
        decoded = Gt06Session().decode(data)
    except Gt06Error:
        return
    assert isinstance(decoded, Decoded)
    for fix in decoded.fixes:
        assert fix.fix_time.tzinfo is UTC
        assert abs(fix.latitude) <= 90 and abs(fix.longitude) <= 180


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1500), st.lists(st.integers(1, 64), max_size=60))
def test_split_then_decode_raises_only_decode_errors(data: bytes, cuts: list[int]) -> None:
    session = Gt06Session()
    buffer = bytearray()
    position = 0
    for size in [*cuts, len(data)]:
        buffer += data[position : position + size]
        position += size
        try:
            frames = session.split(buffer)
        except FrameTooLarge:
            return
        for chunk in frames:
            with contextlib.suppress(DecodeError):
                session.decode(chunk)


GOOD = [
    VENDOR["v31_login"],
    VENDOR["v31_location"],
    VENDOR["v31_heartbeat"],
    VENDOR["v31_alarm"],
    VENDOR["v31_information"],
    TRACCAR["frame_heartbeat_short_length"],
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.binary(max_size=24), st.sampled_from(GOOD)),
        min_size=1,
        max_size=5,
    ),
    st.lists(st.integers(1, 48), max_size=80),
)
def test_good_frames_survive_any_garbage_and_chunking(
    pieces: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    # Noise free of 0x79 cannot fake the start of an over-sized 0x7979 frame, which
    # would (rightly) cut the connection before the good frame behind it arrives.
    pieces = [(noise.replace(b"\x79", b"\x00"), good) for noise, good in pieces]
    stream = b"".join(noise + good for noise, good in pieces)
    session = Gt06Session()
    buffer = bytearray()
    frames: list[bytes] = []
    position = 0
    for size in [*cuts, len(stream)]:
        buffer += stream[position : position + size]
        position += size
        frames += session.split(buffer)

    assert [chunk for chunk in frames if chunk in GOOD] == [good for _, good in pieces]
    assert b"".join(frames) + bytes(buffer) == stream
    for chunk in frames:
        if chunk not in GOOD:
            with pytest.raises(Gt06Error):
                session.decode(chunk)
