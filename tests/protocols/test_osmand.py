"""OsmAnd / Traccar Client HTTP decoder: Traccar's test vectors, errors, fuzz.

The vectors are verbatim from traccar/traccar OsmAndProtocolDecoderTest.java
(Apache-2.0), as collected in /work/shared/data/protocols/osmand.md.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telematics.protocols.base import Decoded, DecodeError
from telematics.protocols.osmand import OsmandError, decode_request

ARRIVAL = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)

J1 = '{"location":{"timestamp":"2025-06-15T13:45:12.862Z","coords":{"latitude":37.4219983,"longitude":-122.084,"accuracy":5,"speed":0,"heading":-1,"altitude":5},"is_moving":false,"odometer":0,"event":"motionchange","battery":{"level":1,"is_charging":false},"activity":{"type":"still"},"extras":{},"_":"&id=48241179&lat=37.4219983&lon=-122.084&timestamp=2025-06-15T13:45:12.862Z&"},"device_id":"48241179"}'  # noqa: E501
J2 = '{"location":{"timestamp":"2025-06-15T13:45:12.862Z","coords":{"latitude":37.4219983,"longitude":-122.084,"accuracy":5,"speed":0,"heading":-1,"altitude":5},"is_moving":false,"odometer":0,"event":"motionchange","battery":{"level":1,"is_charging":false},"activity":{"type":"still"},"extras":{"device_string_test":"long_device_id","device_bool_test":true,"device_bool_false_test":false,"device_integer_test":1,"device_integer_twelve_test":12,"device_double_test":1.345,"device_very_long_double_test":1763636.3442},"_":"&id=48241179&lat=37.4219983&lon=-122.084&timestamp=2025-06-15T13:45:12.862Z&"},"device_id":"48241179"}'  # noqa: E501
J3 = '{"location":{"extras":{},"mock":true,"coords":{"speed_accuracy":-1,"speed":-1,"longitude":-122.406417,"ellipsoidal_altitude":0,"floor":null,"heading_accuracy":-1,"latitude":37.785834000000001,"accuracy":5,"altitude_accuracy":-1,"altitude":0,"heading":-1},"is_moving":false,"age":188,"odometer":0,"uuid":"2FB04C65-99CF-42AB-8DD3-EBCB4B108BF8","event":"motionchange","battery":{"level":-1,"is_charging":false},"activity":{"type":"unknown","confidence":100},"timestamp":"2025-05-09T04:11:30.579Z"},"device_id":"658765"}'  # noqa: E501
J4 = '{"location":{"event":"motionchange","is_moving":false,"uuid":"0e9a2473-a9a7-4c00-997b-fb97d2154e75","timestamp":"2021-07-21T08:06:34.444Z","odometer":0,"coords":{"latitude":-6.1148096,"longitude":106.6837015,"accuracy":3.8,"speed":18.67,"speed_accuracy":0.26,"heading":63,"heading_accuracy":0.28,"altitude":35.7,"altitude_accuracy":3.8},"activity":{"type":"still","confidence":100},"battery":{"is_charging":false,"level":0.79},"extras":{}},"device_id":"8737767034"}'  # noqa: E501

Q1 = "/?id=123456&timestamp=1377177267&cell=257,02,16,2224&cell=257,02,16,2223,-90&wifi=00-14-22-01-23-45,-80&wifi=00-1C-B3-09-85-15,-70"  # noqa: E501
Q2 = "/?timestamp=1377177267&lat=60.0&lon=30.0"
Q3 = "/?id=902064&lat=42.06288&lon=-88.23412&timestamp=2016-01-27T18%3A55%3A47Z&hdop=6.0&altitude=224.0&speed=0.0"  # noqa: E501
Q4 = "/?id=902064&lat=42.06288&lon=-88.23412&timestamp=1442068686579&hdop=6.0&altitude=224.0&speed=0.0"  # noqa: E501
Q5 = "/?lat=49.60688&lon=6.15788&timestamp=2014-06-04+09%3A10%3A11&altitude=384.7&speed=0.0&id=353861053849681"  # noqa: E501
Q6 = "/?id=123456&timestamp=1377177267&lat=60.0&lon=30.0&speed=0.0&bearing=0.0&altitude=0&hdop=0.0"
Q7 = "/?id=123456&timestamp=1377177267&lat=60.0&lon=30.0"
Q8 = "/?lat=60.0&lon=30.0&speed=0.0&heading=0.0&vacc=0&hacc=0&altitude=0&deviceid=123456"
Q9 = "/?id=861001000719969&lat=41.666667&lon=-0.883333&altitude=350.059479&speed=0.000000&batt=87"
Q10 = "/?id=123456&timestamp=1377177267&location=60.0,30.0"
Q11 = "/?id=123456789012345&timestamp=1504763810&lat=40.7232948571&lon=-74.0061408571&bearing=7.19889788244&speed=40&ignition=true&rpm=933&fuel=24"  # noqa: E501

T_1377177267 = datetime(2013, 8, 22, 13, 14, 27, tzinfo=UTC)


class QueryParams(dict[str, str]):
    """A query mapping with Django QueryDict's ``getlist`` (QueryDict needs settings)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self._lists: dict[str, list[str]] = {}
        for key, value in pairs:
            self._lists.setdefault(key, []).append(value)

    def getlist(self, key: str) -> list[str]:
        return self._lists.get(key, [])


def get(uri: str) -> Decoded:
    """Decode a GET request the way the HTTP transport hands it over."""
    pairs = parse_qsl(urlsplit(uri).query, keep_blank_values=True)
    return decode_request(QueryParams(pairs), b"", "", received_at=ARRIVAL)


def post_json(body: str | dict[str, Any], content_type: str = "application/json") -> Decoded:
    raw = body if isinstance(body, str) else json.dumps(body)
    return decode_request({}, raw.encode(), content_type, received_at=ARRIVAL)


# --- query-string vectors --------------------------------------------------------------


def test_q1_cells_and_wifi_without_position_is_a_status_event() -> None:
    decoded = get(Q1)

    assert decoded.identifier == "123456"
    assert decoded.fixes == []
    assert (decoded.reply, decoded.refusal) == (None, None)
    assert decoded.events == [
        {
            "type": "status",
            "time": "2013-08-22T13:14:27+00:00",
            "attributes": {
                "cells": ["257,02,16,2224", "257,02,16,2223,-90"],
                "wifi": ["00:14:22:01:23:45,-80", "00:1C:B3:09:85:15,-70"],
            },
        }
    ]


def test_q2_without_id_is_refused() -> None:
    with pytest.raises(OsmandError, match=r"^id: missing unit identifier$"):
        get(Q2)


def test_q3_iso_timestamp() -> None:
    decoded = get(Q3)

    assert decoded.identifier == "902064"
    [fix] = decoded.fixes
    assert fix.fix_time == datetime(2016, 1, 27, 18, 55, 47, tzinfo=UTC)
    assert (fix.latitude, fix.longitude) == (42.06288, -88.23412)
    assert (fix.hdop, fix.altitude, fix.speed_kmh, fix.course) == (6.0, 224.0, 0.0, None)
    assert fix.valid is True
    assert fix.attributes == {}


def test_q4_millisecond_timestamp() -> None:
    [fix] = get(Q4).fixes

    assert fix.fix_time == datetime(2015, 9, 12, 14, 38, 6, 579000, tzinfo=UTC)
    assert (fix.latitude, fix.longitude, fix.hdop, fix.altitude) == (
        42.06288,
        -88.23412,
        6.0,
        224.0,
    )


def test_q5_date_time_with_space_is_utc() -> None:
    decoded = get(Q5)

    assert decoded.identifier == "353861053849681"
    [fix] = decoded.fixes
    assert fix.fix_time == datetime(2014, 6, 4, 9, 10, 11, tzinfo=UTC)
    assert (fix.latitude, fix.longitude, fix.altitude, fix.speed_kmh) == (
        49.60688,
        6.15788,
        384.7,
        0.0,
    )


def test_q6_bearing_altitude_hdop() -> None:
    [fix] = get(Q6).fixes

    assert fix.fix_time == T_1377177267
    assert (fix.latitude, fix.longitude) == (60.0, 30.0)
    assert (fix.speed_kmh, fix.course, fix.altitude, fix.hdop) == (0.0, 0.0, 0.0, 0.0)


def test_q7_bare_minimum() -> None:
    decoded = get(Q7)

    assert decoded.identifier == "123456"
    [fix] = decoded.fixes
    assert (fix.fix_time, fix.latitude, fix.longitude) == (T_1377177267, 60.0, 30.0)
    assert (fix.altitude, fix.speed_kmh, fix.course, fix.hdop) == (None, None, None, None)
    assert fix.attributes == {}


def test_q8_deviceid_heading_and_no_timestamp() -> None:
    decoded = get(Q8)

    assert decoded.identifier == "123456"
    [fix] = decoded.fixes
    assert fix.fix_time == ARRIVAL
    assert (fix.latitude, fix.longitude, fix.course, fix.speed_kmh) == (60.0, 30.0, 0.0, 0.0)
    assert fix.attributes == {"vacc": 0, "hacc": 0, "server_time": True}


def test_q9_battery_without_timestamp() -> None:
    decoded = get(Q9)

    assert decoded.identifier == "861001000719969"
    [fix] = decoded.fixes
    assert fix.fix_time == ARRIVAL
    assert (fix.latitude, fix.longitude) == (41.666667, -0.883333)
    assert (fix.altitude, fix.speed_kmh) == (350.059479, 0.0)
    assert fix.attributes == {"battery_level": 87, "server_time": True}


def test_q10_location_parameter() -> None:
    [fix] = get(Q10).fixes

    assert (fix.fix_time, fix.latitude, fix.longitude) == (T_1377177267, 60.0, 30.0)


def test_q11_speed_in_knots_ignition_and_extra_keys() -> None:
    decoded = get(Q11)

    assert decoded.identifier == "123456789012345"
    [fix] = decoded.fixes
    assert fix.fix_time == datetime(2017, 9, 7, 5, 56, 50, tzinfo=UTC)
    assert (fix.latitude, fix.longitude) == (40.7232948571, -74.0061408571)
    assert fix.course == 7.19889788244
    assert fix.speed_kmh == pytest.approx(40 * 1.852)
    assert fix.ignition is True
    assert fix.attributes == {"rpm": 933, "fuel": 24}


def test_query_attributes_are_typed_and_renamed() -> None:
    decoded = get(
        "/?id=7&timestamp=1377177267&lat=1&lon=2&accuracy=12.5&charge=false&valid=0"
        "&driverUniqueId=D-42&mock=true&alarm=sos&ratio=0.5&notificationToken=secret"
    )

    [fix] = decoded.fixes
    assert fix.valid is False
    assert fix.attributes == {
        "accuracy": 12.5,
        "charge": False,
        "driver_unique_id": "D-42",
        "mock": True,
        "alarm": "sos",
        "ratio": 0.5,
    }


def test_plain_dict_query_and_form_body() -> None:
    body = b"lat=48.1&lon=11.5&timestamp=2024-05-01T10:00:00%2B02:00&speed=10"

    decoded = decode_request(
        {"id": "unit-9"}, body, "application/x-www-form-urlencoded; charset=utf-8"
    )

    assert decoded.identifier == "unit-9"
    [fix] = decoded.fixes
    assert fix.fix_time == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    assert fix.speed_kmh == pytest.approx(18.52)


def test_empty_parameters_count_as_absent() -> None:
    [fix] = get("/?id=5&timestamp=1377177267&lat=1&lon=2&speed=&bearing=&hdop=").fixes

    assert (fix.speed_kmh, fix.course, fix.hdop) == (None, None, None)


def test_missing_timestamp_without_received_at_uses_now() -> None:
    before = datetime.now(UTC)

    [fix] = decode_request({"id": "5", "lat": "1", "lon": "2"}, b"", "").fixes

    assert before <= fix.fix_time <= datetime.now(UTC)
    assert fix.attributes["server_time"] is True


# --- JSON vectors ----------------------------------------------------------------------


def test_j1_current_traccar_client() -> None:
    decoded = post_json(J1)

    assert decoded.identifier == "48241179"
    assert decoded.events == []
    [fix] = decoded.fixes
    assert fix.fix_time == datetime(2025, 6, 15, 13, 45, 12, 862000, tzinfo=UTC)
    assert (fix.latitude, fix.longitude, fix.altitude) == (37.4219983, -122.084, 5.0)
    assert (fix.speed_kmh, fix.course, fix.valid) == (0.0, None, True)
    assert fix.attributes == {
        "accuracy": 5.0,
        "motion": False,
        "event": "motionchange",
        "app_odometer_m": 0.0,
        "activity": "still",
        "battery_level": 100,
        "charge": False,
    }


def test_j2_extras_are_typed_attributes() -> None:
    [fix] = post_json(J2).fixes

    assert fix.attributes["device_integer_twelve_test"] == 12
    assert fix.attributes["device_string_test"] == "long_device_id"
    assert fix.attributes["device_bool_test"] is True
    assert fix.attributes["device_bool_false_test"] is False
    assert fix.attributes["device_integer_test"] == 1
    assert fix.attributes["device_double_test"] == 1.345
    assert fix.attributes["device_very_long_double_test"] == 1763636.3442


def test_j3_negative_values_mean_unknown() -> None:
    decoded = post_json(J3)

    assert decoded.identifier == "658765"
    [fix] = decoded.fixes
    assert fix.fix_time == datetime(2025, 5, 9, 4, 11, 30, 579000, tzinfo=UTC)
    assert (fix.latitude, fix.longitude, fix.altitude) == (37.785834, -122.406417, 0.0)
    assert (fix.speed_kmh, fix.course) == (None, None)
    assert "battery_level" not in fix.attributes
    assert fix.attributes["mock"] is True
    assert fix.attributes["uuid"] == "2FB04C65-99CF-42AB-8DD3-EBCB4B108BF8"
    assert fix.attributes["activity"] == "unknown"


def test_j4_moving_fix_speed_in_metres_per_second() -> None:
    decoded = post_json(J4)

    assert decoded.identifier == "8737767034"
    [fix] = decoded.fixes
    assert fix.fix_time == datetime(2021, 7, 21, 8, 6, 34, 444000, tzinfo=UTC)
    assert (fix.latitude, fix.longitude, fix.altitude) == (-6.1148096, 106.6837015, 35.7)
    assert fix.speed_kmh == pytest.approx(67.212)
    assert fix.course == 63.0
    assert fix.attributes["battery_level"] == 79
    assert fix.attributes["accuracy"] == 3.8


def test_json_without_content_type_is_recognised() -> None:
    assert post_json(J4, content_type="").identifier == "8737767034"
    assert post_json(J4, content_type="text/plain").fixes != []


def test_json_batch_keeps_good_records_and_reports_bad_ones() -> None:
    record = json.loads(J4)["location"]
    bad = {**record, "coords": {**record["coords"], "latitude": 95.0}}
    later = {**record, "timestamp": "2021-07-21T08:06:35.444Z"}

    decoded = post_json({"device_id": "8737767034", "location": [record, bad, later]})

    assert [fix.fix_time.second for fix in decoded.fixes] == [34, 35]
    assert decoded.events == [
        {
            "type": "rejected",
            "error": "location[1].coords.latitude: latitude 95.0 is out of range -90..90",
        }
    ]


def test_json_batch_with_no_good_record_is_refused() -> None:
    body = {"device_id": "1", "location": [{"coords": {"latitude": 1}}, "x"]}

    with pytest.raises(OsmandError, match=r"^location\[0\]\.coords\.longitude: missing$"):
        post_json(body)


def test_json_record_without_coords_is_a_status_event() -> None:
    body = {
        "device_id": 77,
        "location": {"timestamp": "2025-01-01T00:00:00Z", "battery": {"level": 0.29}},
    }

    decoded = post_json(body)

    assert decoded.identifier == "77"
    assert decoded.fixes == []
    assert decoded.events == [
        {
            "type": "status",
            "time": "2025-01-01T00:00:00+00:00",
            "attributes": {"battery_level": 29},
        }
    ]


def test_json_without_timestamp_uses_arrival_time() -> None:
    body = {"device_id": "1", "location": {"coords": {"latitude": 1, "longitude": 2}}}

    [fix] = post_json(body).fixes

    assert fix.fix_time == ARRIVAL
    assert fix.attributes == {"server_time": True}


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("/?id=&lat=1&lon=2", "id: missing unit identifier"),
        ("/?id=%01x&lat=1&lon=2", "id: not a usable unit identifier"),
        ("/?id=1&lat=1", "lon: missing (give both lat and lon, or location=lat,lon)"),
        ("/?id=1&lon=1", "lat: missing (give both lat and lon, or location=lat,lon)"),
        ("/?id=1&lat=north&lon=2", "lat: 'north' is not a number"),
        ("/?id=1&lat=1&lon=0x10", "lon: '0x10' is not a number"),
        ("/?id=1&lat=nan&lon=2", "lat: 'nan' is not a number"),
        ("/?id=1&lat=1e999&lon=2", "lat: '1e999' is out of range"),
        ("/?id=1&lat=90.5&lon=2", "lat: latitude 90.5 is out of range -90..90"),
        ("/?id=1&lat=1&lon=-180.5", "lon: longitude -180.5 is out of range -180..180"),
        ("/?id=1&location=60.0", "location: '60.0' is not 'lat,lon'"),
        ("/?id=1&location=60.0,300", "location: longitude 300.0 is out of range -180..180"),
        ("/?id=1&lat=1&lon=2&timestamp=yesterday", "timestamp: 'yesterday' is not a unix or ISO"),
        ("/?id=1&lat=1&lon=2&timestamp=-5", "timestamp: -5.0 is not a unix time"),
        ("/?id=1&lat=1&lon=2&timestamp=1e300", "timestamp: 1e+300 is out of range"),
        ("/?id=1&lat=1&lon=2&speed=fast", "speed: 'fast' is not a number"),
        ("/?id=1&lat=1&lon=2&ignition=on", "ignition: 'on' is not true/false/1/0"),
        ("/?id=1&lat=1&lon=2&batt=full", "batt: 'full' is not a number"),
    ],
)
def test_bad_query_names_the_parameter(uri: str, message: str) -> None:
    with pytest.raises(OsmandError) as raised:
        get(uri)

    assert str(raised.value).startswith(message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "id: missing unit identifier"),  # no body: the parameters are in the URL
        ('{"device_id": "1", "location": ', "body: not valid JSON"),
        ('{"device_id": "1", "location": {"coords": {"latitude": NaN}}}', "body: not valid JSON"),
        ("[1, 2]", "body: expected a JSON object with device_id and location"),
        ('{"location": {}}', "device_id: missing unit identifier"),
        ('{"device_id": true, "location": {}}', "device_id: True is not text"),
        ('{"device_id": "1"}', "location: missing"),
        ('{"device_id": "1", "location": []}', "location: expected an object or a non-empty"),
        ('{"device_id": "1", "location": {"coords": []}}', "location.coords: expected an object"),
        (
            '{"device_id": "1", "location": {"coords": {"latitude": "1", "longitude": 2}}}',
            "location.coords.latitude: '1' is not a number",
        ),
        (
            '{"device_id": "1", "location": {"coords": {"latitude": 1, "longitude": 200}}}',
            "location.coords.longitude: longitude 200.0 is out of range -180..180",
        ),
        (
            '{"device_id": "1", "location": {"timestamp": "soon", "coords": {}}}',
            "location.timestamp: 'soon' is not a unix or ISO 8601 time",
        ),
        (
            '{"device_id": "1", "location": {"is_moving": "yes"}}',
            "location.is_moving: 'yes' is not true/false",
        ),
        (
            '{"device_id": "1", "location": {"battery": {"level": "full"}}}',
            "location.battery.level: 'full' is not a number",
        ),
    ],
)
def test_bad_json_names_the_field(body: str, message: str) -> None:
    with pytest.raises(OsmandError) as raised:
        post_json(body)

    assert str(raised.value).startswith(message)


def test_deeply_nested_json_is_a_decode_error() -> None:
    with pytest.raises(OsmandError, match="not valid JSON"):
        post_json("[" * 100_000)


def test_bad_form_body_is_a_decode_error() -> None:
    with pytest.raises(OsmandError, match="body: unreadable form"):
        decode_request({}, b"id=\xff", "application/x-www-form-urlencoded")


# --- fuzz ------------------------------------------------------------------------------

_KEYS = st.sampled_from(
    [
        "id",
        "deviceid",
        "timestamp",
        "lat",
        "lon",
        "location",
        "speed",
        "bearing",
        "heading",
        "altitude",
        "accuracy",
        "hdop",
        "batt",
        "charge",
        "valid",
        "ignition",
        "cell",
        "wifi",
        "driverUniqueId",
    ]
)
_VALUES = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"-?[0-9]{0,20}(\.[0-9]{0,8})?(e[-+]?[0-9]{1,4})?", fullmatch=True),
    st.sampled_from(["true", "false", "1", "0", "60.0,30.0", "2024-01-01T00:00:00Z", "nan"]),
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.one_of(_KEYS, st.text(max_size=10)), _VALUES, max_size=12))
def test_arbitrary_queries_raise_only_decode_errors(query: dict[str, str]) -> None:
    try:
        decoded = decode_request(query, b"", "", received_at=ARRIVAL)
    except DecodeError:
        return
    for fix in decoded.fixes:
        assert -90 <= fix.latitude <= 90
        assert -180 <= fix.longitude <= 180
        assert fix.fix_time.tzinfo is UTC


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    *("device_id", "location", "coords", "latitude", "longitude", "timestamp"),
                    *("speed", "heading", "battery", "level", "extras", "activity", "is_moving"),
                ]
            )
            | st.text(max_size=5),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(st.binary(max_size=200), _JSON.map(lambda value: json.dumps(value).encode())),
    st.sampled_from(["application/json", "", "application/x-www-form-urlencoded", "text/plain"]),
)
def test_arbitrary_bodies_raise_only_decode_errors(body: bytes, content_type: str) -> None:
    try:
        decoded = decode_request({}, body, content_type, received_at=ARRIVAL)
    except DecodeError:
        return
    for fix in decoded.fixes:
        assert -90 <= fix.latitude <= 90
        assert fix.fix_time.tzinfo is UTC
