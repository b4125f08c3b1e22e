"""The OsmAnd HTTP protocol, as sent by the Traccar Client phone app and many trackers.

Two encodings reach the same HTTP port (Traccar's default is 5055):

Query string (GET, or POST with the parameters in the URL or a form body), the OsmAnd
live-tracking style of the older Traccar Client apps and of many trackers:

- ``id`` or ``deviceid``: the unit identifier (required).
- ``timestamp``: unix seconds, unix milliseconds (any number of 2**31 or more), ISO 8601,
  or ``yyyy-MM-dd HH:mm:ss``; a time without offset is UTC (Traccar uses its own zone).
- ``lat`` and ``lon`` in degrees, or ``location=lat,lon``.
- ``speed`` in KNOTS (the Android client multiplies m/s by 1.943844), stored in km/h.
- ``bearing`` or ``heading`` (course), ``altitude`` (m), ``hdop``, ``valid``,
  ``ignition`` (``true``/``false``/``1``/``0``).
- Attributes: ``accuracy`` (m), ``batt`` -> ``battery_level`` (%), ``charge``,
  ``driverUniqueId`` -> ``driver_unique_id``, repeated ``cell`` -> ``cells`` and ``wifi``
  (MAC dashes turned to colons) as lists. Every other parameter is kept as an attribute,
  typed: integer, float, ``true``/``false`` -> bool, else text. ``notificationToken`` is
  dropped: it is a push credential, not a property of the position.

JSON body (POST, ``Content-Type: application/json``) of the current Traccar Client,
built on flutter_background_geolocation: ``{"device_id": ..., "location": {...}}`` where
``location`` is one record or, when the app batches, a list of records. A record has
``timestamp`` (ISO 8601), ``coords`` (``latitude``, ``longitude``, ``speed`` in m/s ->
km/h, ``heading``, ``altitude``, ``accuracy``; negative speed, heading and accuracy mean
"unknown" and are dropped), ``is_moving`` -> ``motion``, ``event``, ``mock``, ``uuid``
(lets the store spot a batch the app sent twice), ``alarm``, ``activity.type`` ->
``activity``, ``battery.level`` (0..1, -1 unknown) -> ``battery_level`` (%, rounded),
``battery.is_charging`` -> ``charge``, ``odometer`` -> ``app_odometer_m`` (the app's own
distance counter in metres, reset at will: not the vehicle's odometer, so not
``odometer_km``), and ``extras`` copied as attributes (never over the keys above).

Decisions:

- No timestamp: real apps and trackers omit it (Traccar uses the server time), so the
  transport's ``received_at`` (default: now) stands in and the fix gets the attribute
  ``server_time: true``; requiring a unit clock would lose those units entirely.
- No position at all (Traccar test Q1: cells and Wi-Fi only; a record without
  ``coords``): not an error. Traccar would reuse the last position; a pure decoder has
  none, so the request yields a ``{"type": "status", "time": "<ISO 8601>", "attributes":
  {...}}`` event (JSON-ready, like every event here) and no fix, and the unit still
  gets its 200. Half a position (``lat`` without ``lon``) is an error.
- A batch keeps its good records: the app deletes a batch only on a 2xx answer and
  retries it otherwise, so one unusable record would jam its queue for good. Each bad
  record becomes a ``{"type": "rejected", "error": ...}`` event; if no record is good,
  the first error is raised.
- Errors are :class:`OsmandError` whose message names the parameter and the problem; the
  transport sends it as the HTTP 400 body. ``reply`` is None: the transport answers 200.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from telematics.protocols.base import Decoded, DecodeError, Fix

KNOT_KMH = 1.852
MS_KMH = 3.6
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECONDS_LIMIT = 2**31 - 1  # Traccar: a smaller number is seconds, a larger one ms
_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", re.ASCII)
_INTEGER = re.compile(r"-?\d{1,18}", re.ASCII)  # longer: float, no huge int parsing
_MAX_IDENTIFIER = 128
_MAX_FORM_FIELDS = 200
_TRUE = ("true", "1")
_FALSE = ("false", "0")
# Parameters read into Fix fields or renamed attributes; the rest are kept as they come.
_READ = frozenset(
    (
        "id",
        "deviceid",
        "timestamp",
        "lat",
        "lon",
        "location",
        "valid",
        "speed",
        "bearing",
        "heading",
        "altitude",
        "accuracy",
        "hdop",
        "batt",
        "charge",
        "driverUniqueId",
        "ignition",
        "cell",
        "wifi",
        "notificationToken",
    )
)


class OsmandError(DecodeError):
    """An OsmAnd request that cannot be used; the message is the HTTP 400 body."""


def decode_request(
    query: Mapping[str, str],
    body: bytes,
    content_type: str,
    *,
    received_at: datetime | None = None,
) -> Decoded:
    """Decode one OsmAnd HTTP request into the unit's identifier and fixes.

    ``query`` may be a Django QueryDict: repeated ``cell``/``wifi`` are read with
    ``getlist`` when it has one. ``received_at`` is the fix time for requests without a
    timestamp (see the module notes).
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    params = _params(query)
    if media_type == "application/x-www-form-urlencoded" and body:
        for key, values in _form(body).items():
            params.setdefault(key, []).extend(values)
    is_json = media_type == "application/json" or media_type.endswith("+json")
    # Some clients post the JSON without its media type; a query id means it is not JSON.
    unlabelled_json = _looks_like_json(body) and not {"id", "deviceid"} & params.keys()
    if (is_json and body.strip()) or unlabelled_json:
        return _decode_json(body, received_at)
    return _decode_query(params, received_at)


# --- query string ----------------------------------------------------------------------


def _params(query: Mapping[str, str]) -> dict[str, list[str]]:
    getlist = getattr(query, "getlist", None)
    if callable(getlist):
        return {key: [str(value) for value in getlist(key)] for key in query}
    return {key: [str(value)] for key, value in query.items()}


def _form(body: bytes) -> dict[str, list[str]]:
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=_MAX_FORM_FIELDS
        )
    except ValueError as error:  # UnicodeDecodeError too
        raise OsmandError(f"body: unreadable form ({error})") from None
    form: dict[str, list[str]] = {}
    for key, value in pairs:
        form.setdefault(key, []).append(value)
    return form


def _decode_query(params: dict[str, list[str]], received_at: datetime | None) -> Decoded:
    def last(key: str) -> str | None:
        """The last non-empty value: an empty parameter is an absent one."""
        values = [value.strip() for value in params.get(key, []) if value.strip()]
        return values[-1] if values else None

    identifier = _identifier(last("id") or last("deviceid"), "id")
    attributes: dict[str, Any] = {}
    for key in params:
        value = last(key)
        if key not in _READ and value is not None:
            attributes[key] = _typed(value)
    _put(attributes, "accuracy", _query_number(last("accuracy"), "accuracy"))
    _put(attributes, "battery_level", _whole(_query_number(last("batt"), "batt")))
    _put(attributes, "charge", _query_bool(last("charge"), "charge"))
    _put(attributes, "driver_unique_id", last("driverUniqueId"))
    cells = [value for value in params.get("cell", []) if value]
    wifi = [_wifi(value) for value in params.get("wifi", []) if value]
    _put(attributes, "cells", cells or None)
    _put(attributes, "wifi", wifi or None)

    fix_time, server_time = _query_time(last("timestamp"), received_at)
    if server_time:
        attributes["server_time"] = True
    position = _query_position(last("lat"), last("lon"), last("location"))
    if position is None:
        return Decoded(identifier=identifier, events=[_status_event(fix_time, attributes)])
    knots = _query_number(last("speed"), "speed")
    course = _query_number(last("bearing"), "bearing")
    if course is None:
        course = _query_number(last("heading"), "heading")
    valid = _query_bool(last("valid"), "valid")
    fix = Fix(
        fix_time=fix_time,
        latitude=position[0],
        longitude=position[1],
        altitude=_query_number(last("altitude"), "altitude"),
        speed_kmh=None if knots is None or knots < 0 else knots * KNOT_KMH,
        course=None if course is None or course < 0 else course,
        hdop=_query_number(last("hdop"), "hdop"),
        valid=True if valid is None else valid,
        ignition=_query_bool(last("ignition"), "ignition"),
        attributes=attributes,
    )
    return Decoded(identifier=identifier, fixes=[fix])


def _query_position(
    lat: str | None, lon: str | None, location: str | None
) -> tuple[float, float] | None:
    if lat is None and lon is None:
        if location is None:
            return None
        parts = location.split(",")
        if len(parts) != 2:
            raise OsmandError(f"location: {location!r} is not 'lat,lon'")
        lat, lon = parts[0].strip(), parts[1].strip()
        name_lat = name_lon = "location"
    else:
        name_lat, name_lon = "lat", "lon"
    if lat is None or lon is None:
        missing = "lat" if lat is None else "lon"
        raise OsmandError(f"{missing}: missing (give both lat and lon, or location=lat,lon)")
    latitude = _parse_number(lat, name_lat)
    longitude = _parse_number(lon, name_lon)
    return _checked_position(latitude, longitude, name_lat, name_lon)


def _query_number(text: str | None, name: str) -> float | None:
    return None if text is None else _parse_number(text, name)


def _parse_number(text: str, name: str) -> float:
    if not _NUMBER.fullmatch(text):
        raise OsmandError(f"{name}: {text!r} is not a number")
    number = float(text)
    if not math.isfinite(number):
        raise OsmandError(f"{name}: {text!r} is out of range")
    return number


def _query_bool(text: str | None, name: str) -> bool | None:
    if text is None:
        return None
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise OsmandError(f"{name}: {text!r} is not true/false/1/0")


def _query_time(text: str | None, received_at: datetime | None) -> tuple[datetime, bool]:
    """The unit's time, or the arrival time and True when the unit sent none."""
    if text is None:
        return _arrival(received_at), True
    if _NUMBER.fullmatch(text):
        return _unix_time(float(text), "timestamp"), False
    return _iso_time(text, "timestamp"), False


def _wifi(text: str) -> str:
    """``mac,rssi`` with the MAC's dashes turned into colons, as Traccar does."""
    mac, _, rest = text.partition(",")
    return mac.replace("-", ":") + ("," + rest if rest else "")


def _typed(text: str) -> Any:
    """An extra parameter as Traccar keeps it: number, bool, or text."""
    if _INTEGER.fullmatch(text):
        return int(text)
    if _NUMBER.fullmatch(text):
        number = float(text)
        return number if math.isfinite(number) else text
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


# --- JSON body -------------------------------------------------------------------------


def _looks_like_json(body: bytes) -> bool:
    return body.lstrip()[:1] in (b"{", b"[")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def _decode_json(body: bytes, received_at: datetime | None) -> Decoded:
    try:
        root = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError
        raise OsmandError(f"body: not valid JSON ({error})") from None
    if not isinstance(root, dict):
        raise OsmandError("body: expected a JSON object with device_id and location")
    device_id = root.get("device_id")
    if isinstance(device_id, int) and not isinstance(device_id, bool):
        device_id = str(device_id)
    if device_id is not None and not isinstance(device_id, str):
        raise OsmandError(f"device_id: {device_id!r} is not text")
    identifier = _identifier(device_id.strip() if device_id else None, "device_id")
    records = root.get("location")
    if records is None:
        raise OsmandError("location: missing")
    if isinstance(records, dict):
        fix, event = _json_record(records, "location", received_at)
        return Decoded(identifier=identifier, fixes=[fix] if fix else [], events=_event(event))
    if not isinstance(records, list) or not records:
        raise OsmandError("location: expected an object or a non-empty list of objects")
    decoded = Decoded(identifier=identifier)
    errors: list[str] = []
    for index, record in enumerate(records):
        try:
            fix, event = _json_record(record, f"location[{index}]", received_at)
        except OsmandError as error:
            errors.append(str(error))
            decoded.events.append({"type": "rejected", "error": str(error)})
            continue
        decoded.fixes += [fix] if fix else []
        decoded.events += _event(event)
    if len(errors) == len(records):
        raise OsmandError(errors[0])
    return decoded


def _event(event: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [event] if event else []


def _json_record(
    record: object, path: str, received_at: datetime | None
) -> tuple[Fix | None, dict[str, Any] | None]:
    """One location record: a fix, or a status event when it has no coordinates."""
    if not isinstance(record, dict):
        raise OsmandError(f"{path}: expected an object")
    attributes: dict[str, Any] = {}
    _put(attributes, "motion", _json_bool(record, "is_moving", path))
    _put(attributes, "mock", _json_bool(record, "mock", path))
    _put(attributes, "event", _json_text(record, "event", path))
    _put(attributes, "uuid", _json_text(record, "uuid", path))
    _put(attributes, "alarm", _json_text(record, "alarm", path))
    _put(attributes, "app_odometer_m", _json_number(record, "odometer", path))
    activity = _json_object(record, "activity", path)
    _put(attributes, "activity", _json_text(activity, "type", f"{path}.activity"))
    battery = _json_object(record, "battery", path)
    level = _json_number(battery, "level", f"{path}.battery")
    _put(attributes, "battery_level", None if level is None or level < 0 else round(level * 100))
    _put(attributes, "charge", _json_bool(battery, "is_charging", f"{path}.battery"))
    for key, value in _json_object(record, "extras", path).items():
        attributes.setdefault(key, value)

    fix_time, server_time = _json_time(record.get("timestamp"), f"{path}.timestamp", received_at)
    if server_time:
        attributes["server_time"] = True
    coords = _json_object(record, "coords", path)
    if not coords:
        return None, _status_event(fix_time, attributes)
    where = f"{path}.coords"
    latitude = _json_number(coords, "latitude", where)
    longitude = _json_number(coords, "longitude", where)
    if latitude is None or longitude is None:
        missing = "latitude" if latitude is None else "longitude"
        raise OsmandError(f"{where}.{missing}: missing")
    _checked_position(latitude, longitude, f"{where}.latitude", f"{where}.longitude")
    accuracy = _json_number(coords, "accuracy", where)
    _put(attributes, "accuracy", None if accuracy is None or accuracy < 0 else accuracy)
    speed = _json_number(coords, "speed", where)
    heading = _json_number(coords, "heading", where)
    fix = Fix(
        fix_time=fix_time,
        latitude=latitude,
        longitude=longitude,
        altitude=_json_number(coords, "altitude", where),
        speed_kmh=None if speed is None or speed < 0 else speed * MS_KMH,
        course=None if heading is None or heading < 0 else heading,
        attributes=attributes,
    )
    return fix, None


def _json_object(parent: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OsmandError(f"{path}.{key}: expected an object")
    return value


def _json_number(parent: dict[str, Any], key: str, path: str) -> float | None:
    value = parent.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OsmandError(f"{path}.{key}: {value!r} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise OsmandError(f"{path}.{key}: {value!r} is out of range")
    return number


def _json_bool(parent: dict[str, Any], key: str, path: str) -> bool | None:
    value = parent.get(key)
    if value is not None and not isinstance(value, bool):
        raise OsmandError(f"{path}.{key}: {value!r} is not true/false")
    return value


def _json_text(parent: dict[str, Any], key: str, path: str) -> str | None:
    value = parent.get(key)
    if value is not None and not isinstance(value, str):
        raise OsmandError(f"{path}.{key}: {value!r} is not text")
    return value or None


def _json_time(value: object, path: str, received_at: datetime | None) -> tuple[datetime, bool]:
    if value is None or value == "":
        return _arrival(received_at), True
    if isinstance(value, str):
        return _iso_time(value, path), False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _unix_time(float(value), path), False
    raise OsmandError(f"{path}: {value!r} is not a time")


# --- shared ----------------------------------------------------------------------------


def _identifier(value: str | None, name: str) -> str:
    if not value:
        raise OsmandError(f"{name}: missing unit identifier")
    if len(value) > _MAX_IDENTIFIER or not value.isprintable():
        raise OsmandError(f"{name}: not a usable unit identifier")
    return value


def _checked_position(
    latitude: float, longitude: float, name_lat: str, name_lon: str
) -> tuple[float, float]:
    if not -90 <= latitude <= 90:
        raise OsmandError(f"{name_lat}: latitude {latitude} is out of range -90..90")
    if not -180 <= longitude <= 180:
        raise OsmandError(f"{name_lon}: longitude {longitude} is out of range -180..180")
    return latitude, longitude


def _unix_time(number: float, name: str) -> datetime:
    if not math.isfinite(number) or number < 0:
        raise OsmandError(f"{name}: {number!r} is not a unix time")
    seconds = number if number < _SECONDS_LIMIT else number / 1000
    try:
        return _EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        raise OsmandError(f"{name}: {number!r} is out of range") from None


def _iso_time(text: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise OsmandError(f"{name}: {text!r} is not a unix or ISO 8601 time") from None


def _arrival(received_at: datetime | None) -> datetime:
    if received_at is None:
        return datetime.now(UTC)
    return received_at.astimezone(UTC)


def _whole(number: float | None) -> float | int | None:
    """An integral number as int, so ``batt=87`` is stored as 87, as the JSON level is."""
    return int(number) if number is not None and number.is_integer() else number


def _put(attributes: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        attributes[key] = value


def _status_event(fix_time: datetime, attributes: dict[str, Any]) -> dict[str, Any]:
    """A report without a position: the unit's state, kept as an event."""
    return {"type": "status", "time": fix_time.isoformat(), "attributes": attributes}
