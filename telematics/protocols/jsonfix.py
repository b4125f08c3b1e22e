"""Fleetbook's own JSON position format, for units and gateways that speak MQTT or CoAP.

Where it is sent: MQTT topic ``fleet/<unit>/position``, or CoAP ``POST
/fleet/<unit>/position``. The topic or path names the unit; the body never does.

The body is UTF-8 JSON: one position object, or a list of them (a unit that was offline
sends its backlog in one message). Fields of a position:

============== ================================================ =========================
field          value                                            required
============== ================================================ =========================
``time``       RFC 3339 with offset (``2024-05-01T08:00:00Z``,  yes
               ``2024-05-01T10:00:00.250+02:00``) or unix
               seconds as a number (``1714550400``, ``1714550400.25``)
``lat``        degrees WGS 84, -90..90                          yes
``lon``        degrees WGS 84, -180..180                        yes
``alt_m``      metres above sea level (``altitude`` also read)  no
``speed_kmh``  km/h, >= 0                                       no
``course``     degrees clockwise from true north, 0..360        no
``satellites`` satellites used, integer >= 0                    no
``hdop``       horizontal dilution of precision, >= 0           no
``valid``      true/false: the receiver trusts the position     no (default true)
``ignition``   true/false                                       no
``odometer_km`` the vehicle's odometer, km, >= 0                no
anything else  any JSON value, kept in the fix's attributes     no
============== ================================================ =========================

``null`` is the same as leaving an optional field out. Numbers must be JSON numbers
(not strings), booleans JSON booleans. Example::

    [{"time": "2024-05-01T08:00:00Z", "lat": 48.1372, "lon": 11.5756, "alt_m": 519,
      "speed_kmh": 42.5, "course": 270, "satellites": 9, "hdop": 0.8, "ignition": true,
      "odometer_km": 120345.6, "fuel_pct": 61},
     {"time": 1714550401, "lat": 48.1371, "lon": 11.5750}]

A message is all or nothing: one bad entry refuses it with :class:`JsonFixError`, whose
message names the entry and field (``entry 1: lat: 95 is out of range -90..90``; a single
object is entry 0). The format is ours, so the sender can be fixed, and since nothing of
a refused message was stored, sending it again corrected stores no duplicate.

Unix times of 10**11 or more are refused as "looks like milliseconds": as seconds they
would be past the year 5000, and a sender that multiplied by 1000 is the likely cause.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from telematics.protocols.base import DecodeError, Fix

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECONDS_FROM = 10**11
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_FIELDS = frozenset(
    (
        "time",
        "lat",
        "lon",
        "alt_m",
        "altitude",
        "speed_kmh",
        "course",
        "satellites",
        "hdop",
        "valid",
        "ignition",
        "odometer_km",
    )
)


class JsonFixError(DecodeError):
    """A position message that does not follow the format; names the entry and field."""


def decode_positions(body: bytes) -> list[Fix]:
    """Decode one message body into fixes, in the order they were sent."""
    try:
        message = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError
        raise JsonFixError(f"body: not valid JSON ({error})") from None
    entries = message if isinstance(message, list) else [message]
    return [_fix(entry, index) for index, entry in enumerate(entries)]


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def _fix(entry: object, index: int) -> Fix:
    if not isinstance(entry, dict):
        raise JsonFixError(f"entry {index}: expected an object, got {type(entry).__name__}")
    position = _Entry(entry, index)
    altitude = position.number("alt_m")
    other_altitude = position.number("altitude")
    if altitude is None:
        altitude = other_altitude
    elif other_altitude is not None and other_altitude != altitude:
        raise position.error("altitude", f"{other_altitude} disagrees with alt_m {altitude}")
    satellites = position.number("satellites", low=0)
    if satellites is not None and not satellites.is_integer():
        raise position.error("satellites", f"{satellites} is not a whole number")
    valid = position.boolean("valid")
    return Fix(
        fix_time=position.time(),
        latitude=position.required("lat", -90, 90),
        longitude=position.required("lon", -180, 180),
        altitude=altitude,
        speed_kmh=position.number("speed_kmh", low=0),
        course=position.number("course", low=0, high=360),
        satellites=None if satellites is None else int(satellites),
        hdop=position.number("hdop", low=0),
        valid=True if valid is None else valid,
        ignition=position.boolean("ignition"),
        odometer_km=position.number("odometer_km", low=0),
        attributes={key: value for key, value in entry.items() if key not in _FIELDS},
    )


class _Entry:
    """Typed reads of one position object; errors name the entry and the field."""

    def __init__(self, entry: dict[str, Any], index: int) -> None:
        self.entry = entry
        self.index = index

    def error(self, field: str, problem: str) -> JsonFixError:
        return JsonFixError(f"entry {self.index}: {field}: {problem}")

    def number(
        self, field: str, low: float | None = None, high: float | None = None
    ) -> float | None:
        value = self.entry.get(field)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(field, f"{value!r} is not a number")
        number = float(value)
        if not math.isfinite(number):
            raise self.error(field, f"{value!r} is out of range")
        if low is not None and high is not None and not low <= number <= high:
            raise self.error(field, f"{value!r} is out of range {low:g}..{high:g}")
        if low is not None and number < low:
            raise self.error(field, f"{value!r} is below {low:g}")
        return number

    def required(self, field: str, low: float, high: float) -> float:
        number = self.number(field, low, high)
        if number is None:
            raise self.error(field, "missing")
        return number

    def boolean(self, field: str) -> bool | None:
        value = self.entry.get(field)
        if value is not None and not isinstance(value, bool):
            raise self.error(field, f"{value!r} is not true/false")
        return value

    def time(self) -> datetime:
        value = self.entry.get("time")
        if value is None:
            raise self.error("time", "missing")
        if isinstance(value, str):
            return self._rfc3339(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error("time", f"{value!r} is neither RFC 3339 text nor unix seconds")
        if not math.isfinite(value) or value < 0:
            raise self.error("time", f"{value!r} is not a unix time")
        if value >= _MILLISECONDS_FROM:
            raise self.error("time", f"{value!r} looks like milliseconds; give unix seconds")
        return _EPOCH + timedelta(seconds=value)

    def _rfc3339(self, text: str) -> datetime:
        if not _RFC3339.fullmatch(text):
            raise self.error("time", f"{text!r} is not RFC 3339 with a UTC offset")
        try:
            return datetime.fromisoformat(text.upper()).astimezone(UTC)
        except (ValueError, OverflowError) as error:
            raise self.error("time", f"{text!r} is not a valid time ({error})") from None
