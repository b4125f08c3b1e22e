"""Fleetbook JSON position format: fields, the documented example, errors, fuzz."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telematics.protocols import jsonfix
from telematics.protocols.base import DecodeError, Fix
from telematics.protocols.jsonfix import JsonFixError, decode_positions


def decode(message: Any) -> list[Fix]:
    return decode_positions(json.dumps(message).encode())


def test_a_full_position() -> None:
    [fix] = decode(
        {
            "time": "2024-05-01T10:00:00.250+02:00",
            "lat": 48.1372,
            "lon": 11.5756,
            "alt_m": 519,
            "speed_kmh": 42.5,
            "course": 270,
            "satellites": 9,
            "hdop": 0.8,
            "valid": False,
            "ignition": True,
            "odometer_km": 120345.6,
            "fuel_pct": 61,
            "driver": {"card": "D-1"},
        }
    )

    assert fix == Fix(
        fix_time=datetime(2024, 5, 1, 8, 0, 0, 250000, tzinfo=UTC),
        latitude=48.1372,
        longitude=11.5756,
        altitude=519.0,
        speed_kmh=42.5,
        course=270.0,
        satellites=9,
        hdop=0.8,
        valid=False,
        ignition=True,
        odometer_km=120345.6,
        attributes={"fuel_pct": 61, "driver": {"card": "D-1"}},
    )
    assert isinstance(fix.satellites, int)


def test_the_documented_example_decodes() -> None:
    """The module docstring goes into the README: its example must stay true."""
    doc = jsonfix.__doc__ or ""
    example = doc.split("Example::", 1)[1].split("\n\n", 2)[1]

    fixes = decode_positions(textwrap.dedent(example).encode())

    assert [fix.fix_time for fix in fixes] == [
        datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC),
        datetime(2024, 5, 1, 8, 0, 1, tzinfo=UTC),
    ]
    assert fixes[0].attributes == {"fuel_pct": 61}
    assert fixes[1].altitude is None
    assert fixes[1].valid is True


def test_a_minimal_position_with_unix_seconds() -> None:
    [fix] = decode({"time": 1714550400.5, "lat": -33.9, "lon": 18.4})

    assert fix.fix_time == datetime(2024, 5, 1, 8, 0, 0, 500000, tzinfo=UTC)
    assert (fix.altitude, fix.speed_kmh, fix.course, fix.satellites, fix.hdop) == (None,) * 5
    assert (fix.valid, fix.ignition, fix.odometer_km, fix.attributes) == (True, None, None, {})


def test_a_list_keeps_its_order_and_an_empty_list_is_no_fix() -> None:
    fixes = decode([{"time": 1714550402 - offset, "lat": 1, "lon": 2} for offset in range(3)])

    assert [fix.fix_time.second for fix in fixes] == [2, 1, 0]
    assert decode([]) == []


def test_null_is_absent_and_altitude_is_an_alias() -> None:
    message = {"time": "2024-05-01T08:00:00z", "lat": 1, "lon": 2, "alt_m": None}
    [fix] = decode({**message, "altitude": 12.5, "speed_kmh": None, "valid": None})

    assert fix.altitude == 12.5
    assert fix.speed_kmh is None
    assert fix.valid is True


def test_equal_alt_m_and_altitude_are_fine() -> None:
    [fix] = decode({"time": 0, "lat": 1, "lon": 2, "alt_m": 3, "altitude": 3.0})

    assert fix.altitude == 3.0
    assert fix.fix_time == datetime(1970, 1, 1, tzinfo=UTC)


def test_whole_float_satellites_and_edge_values_are_accepted() -> None:
    [fix] = decode({"time": 1, "lat": -90, "lon": 180, "satellites": 8.0, "course": 360})

    assert (fix.satellites, fix.latitude, fix.longitude, fix.course) == (8, -90.0, 180.0, 360.0)
    assert fix.fix_time == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=1)


GOOD = {"time": "2024-05-01T08:00:00Z", "lat": 48.1, "lon": 11.5}


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({**GOOD, "lat": 95}, "entry 0: lat: 95 is out of range -90..90"),
        ([GOOD, {**GOOD, "lon": -180.5}], "entry 1: lon: -180.5 is out of range -180..180"),
        ([GOOD, GOOD, {"time": 1, "lon": 2}], "entry 2: lat: missing"),
        ({"time": 1, "lat": 2}, "entry 0: lon: missing"),
        ({"lat": 1, "lon": 2}, "entry 0: time: missing"),
        ({**GOOD, "lat": "48.1"}, "entry 0: lat: '48.1' is not a number"),
        ({**GOOD, "lat": True}, "entry 0: lat: True is not a number"),
        ({**GOOD, "speed_kmh": -1}, "entry 0: speed_kmh: -1 is below 0"),
        ({**GOOD, "course": 361}, "entry 0: course: 361 is out of range 0..360"),
        ({**GOOD, "hdop": -0.5}, "entry 0: hdop: -0.5 is below 0"),
        ({**GOOD, "odometer_km": -3}, "entry 0: odometer_km: -3 is below 0"),
        ({**GOOD, "satellites": 8.5}, "entry 0: satellites: 8.5 is not a whole number"),
        ({**GOOD, "satellites": -1}, "entry 0: satellites: -1 is below 0"),
        ({**GOOD, "valid": "yes"}, "entry 0: valid: 'yes' is not true/false"),
        ({**GOOD, "ignition": 1}, "entry 0: ignition: 1 is not true/false"),
        ({**GOOD, "alt_m": 1, "altitude": 2}, "entry 0: altitude: 2.0 disagrees with alt_m 1.0"),
        (
            {**GOOD, "time": "2024-05-01T08:00:00"},
            "entry 0: time: '2024-05-01T08:00:00' is not RFC 3339 with a UTC offset",
        ),
        (
            {**GOOD, "time": "20240501T080000Z"},
            "entry 0: time: '20240501T080000Z' is not RFC 3339 with a UTC offset",
        ),
        (
            {**GOOD, "time": "2024-02-30T08:00:00Z"},
            "entry 0: time: '2024-02-30T08:00:00Z' is not a valid time",
        ),
        ({**GOOD, "time": -1}, "entry 0: time: -1 is not a unix time"),
        (
            {**GOOD, "time": 1714550400000},
            "entry 0: time: 1714550400000 looks like milliseconds; give unix seconds",
        ),
        ({**GOOD, "time": [1]}, "entry 0: time: [1] is neither RFC 3339 text nor unix seconds"),
        ([GOOD, 5], "entry 1: expected an object, got int"),
        ("2024-05-01", "entry 0: expected an object, got str"),
    ],
)
def test_bad_entries_name_the_index_and_field(message: Any, error: str) -> None:
    with pytest.raises(JsonFixError) as raised:
        decode(message)

    assert str(raised.value).startswith(error)


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"\xff\xfe\xfa", b'{"time": NaN, "lat": 1, "lon": 2}', b"[" * 100_000],
)
def test_bodies_that_are_not_json_are_refused(body: bytes) -> None:
    with pytest.raises(JsonFixError, match=r"^body: not valid JSON"):
        decode_positions(body)


def test_a_json_number_too_large_for_a_float_is_out_of_range() -> None:
    with pytest.raises(JsonFixError, match=r"^entry 0: lat: inf is out of range"):
        decode_positions(b'{"time": 1, "lat": 1e999, "lon": 2}')


_FIELD_NAMES = st.sampled_from(
    [
        *("time", "lat", "lon", "alt_m", "altitude", "speed_kmh", "course", "satellites"),
        *("hdop", "valid", "ignition", "odometer_km", "extra"),
    ]
)
_TIMES = st.sampled_from(
    ["2024-05-01T08:00:00Z", "2024-05-01T08:00:00.5+14:00", "0001-01-01T00:00:00+01:00"]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | _TIMES
)
_ENTRY = st.dictionaries(_FIELD_NAMES, _SCALARS, max_size=12)
_BODIES = st.one_of(
    st.binary(max_size=200),
    _ENTRY.map(json.dumps).map(str.encode),
    st.lists(_ENTRY, max_size=4).map(json.dumps).map(str.encode),
)


@settings(max_examples=400, deadline=None)
@given(_BODIES)
def test_arbitrary_bodies_raise_only_decode_errors(body: bytes) -> None:
    try:
        fixes = decode_positions(body)
    except DecodeError:
        return
    for fix in fixes:
        assert -90 <= fix.latitude <= 90
        assert -180 <= fix.longitude <= 180
        assert fix.fix_time.tzinfo is UTC
