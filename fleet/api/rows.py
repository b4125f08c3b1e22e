"""The API's bulk reads as plain rows: all of a fleet's vehicles, pages of positions.

A dispatch board loads every vehicle every few seconds and a sync walks positions a
thousand at a time, so these two reads decide how many clients a web process serves.
Model instances and DRF fields cost ten times what the data does; here a page is read
with ``values_list`` and turned into dicts directly (times stay ``datetime`` objects,
which ``FastJSONRenderer`` writes as RFC 3339 UTC in C, and the CSV and GPX renderers
format themselves).

On PostgreSQL the rows come in binary and go through psycopg's C loaders: Django
installs a Python loader for text ``timestamptz`` on every connection (to pin the time
zone, which the connection has set to UTC anyway), and that loader alone costs more
than the query for a page of positions with two times a row.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
import psycopg
from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import QuerySet
from psycopg.adapt import Loader
from psycopg.pq import Format

from fleet.status import offline_after_s, status_from

POSITION_FIELDS = (
    "id", "vehicle_id", "device_id", "fix_time", "server_time", "latitude", "longitude",
    "altitude", "speed_kmh", "course", "satellites", "hdop", "valid", "ignition",
    "odometer_km", "attributes",
)
# ``without_private_positions`` and the cursor read rows by attribute, as model instances.
PositionRow = namedtuple("PositionRow", POSITION_FIELDS)
VEHICLE_FIELDS = (
    "id", "organisation_id", "name", "licence_plate", "vin", "make", "model",
    "odometer_offset_km", "default_driver_id", "created",
    # annotations of fleet.selectors.vehicles_with_state_visible_to
    "last_fix_time", "last_latitude", "last_longitude", "last_speed_kmh", "last_course",
    "last_ignition", "last_odometer_km",
)


def fetch(queryset: QuerySet, fields: Sequence[str]) -> list[tuple]:
    """``list(queryset.values_list(*fields))``, faster on PostgreSQL (see the module's
    docstring): the same values of the same types."""
    rows_query = queryset.values_list(*fields)
    connection = connections[rows_query.db]
    if connection.vendor != "postgresql":
        return list(rows_query)
    try:
        sql, params = rows_query.query.get_compiler(rows_query.db).as_sql()
    except EmptyResultSet:  # e.g. .none(): no query at all
        return []
    with _binary_cursor(connection) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _binary_cursor(connection: Any) -> Any:
    """A cursor on Django's connection (so in its transaction, logged and wrapped like
    any other) that has PostgreSQL send values in binary: numbers and times then need
    no parsing, and psycopg's C loaders convert them (Django's text-format
    ``timestamptz`` loader is Python). JSON is decoded by orjson."""
    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw = psycopg.Cursor(connection.connection)  # server-side binding: binary results
    raw.format = Format.BINARY
    raw.adapters.register_loader("jsonb", _JsonbLoader)
    if connection.queries_logged:
        return connection.make_debug_cursor(raw)
    return connection.make_cursor(raw)


class _JsonbLoader(Loader):
    """jsonb in binary: a version byte (1), then the JSON text."""

    format = Format.BINARY

    def load(self, data: Any) -> Any:
        return orjson.loads(bytes(data[1:]))


def position_rows(queryset: QuerySet) -> list[PositionRow]:
    """Positions of a queryset (already ordered, filtered, sliced) as ``PositionRow``s."""
    return [PositionRow._make(row) for row in fetch(queryset, POSITION_FIELDS)]


def position_dicts(rows: Iterable[tuple]) -> list[dict]:
    """Positions (rows of ``POSITION_FIELDS``) as the API shows them, with
    ``PositionSerializer``'s field names; times as datetimes."""
    return [
        {"id": pk, "vehicle": vehicle_id, "device": device_id, "fix_time": fix_time,
         "server_time": server_time, "latitude": latitude, "longitude": longitude,
         "altitude_m": altitude, "speed_kmh": speed_kmh, "course": course,
         "satellites": satellites, "hdop": hdop, "valid": valid, "ignition": ignition,
         "odometer_km": odometer_km, "attributes": attributes}
        for (pk, vehicle_id, device_id, fix_time, server_time, latitude, longitude, altitude,
             speed_kmh, course, satellites, hdop, valid, ignition, odometer_km,
             attributes) in rows
    ]


def vehicle_rows(queryset: QuerySet) -> list[tuple]:
    """Vehicles of ``vehicles_with_state_visible_to`` (a page of them) as tuples of
    ``VEHICLE_FIELDS``."""
    return fetch(queryset, VEHICLE_FIELDS)


def vehicle_row_of(vehicle: Any) -> tuple:
    """A model instance with the ``last_*`` annotations as a row of ``VEHICLE_FIELDS``."""
    return tuple(getattr(vehicle, name) for name in VEHICLE_FIELDS)


def vehicle_dicts(rows: Iterable[tuple], *, now: datetime, hidden: set[int] | frozenset = (),
                  offline_after: float | None = None) -> list[dict]:
    """Vehicles as the API shows them: the one representation, for the list (plain rows)
    and ``VehicleSerializer`` (a row of one instance, ``vehicle_row_of``).

    ``hidden``: ids of vehicles whose whereabouts the caller may not see now (a private
    trip), so their ``last_position`` is null. Times are datetimes (see the module's
    docstring).
    """
    if offline_after is None:
        offline_after = offline_after_s()
    data = []
    for (pk, organisation_id, name, licence_plate, vin, make, model, offset, driver_id,
         created, fix_time, latitude, longitude, speed_kmh, course, ignition,
         odometer) in rows:
        data.append({
            "id": pk,
            "organisation": organisation_id,
            "name": name,
            "licence_plate": licence_plate,
            "vin": vin,
            "make": make,
            "model": model,
            "odometer_offset_km": offset,
            "odometer_km": None if odometer is None else odometer + offset,
            "default_driver": driver_id,
            "status": status_from(fix_time, speed_kmh, ignition, now, offline_after).value,
            "last_position": None if fix_time is None or pk in hidden else {
                "fix_time": fix_time,
                "latitude": latitude,
                "longitude": longitude,
                "speed_kmh": speed_kmh,
                "course": course,
                "ignition": ignition,
            },
            "created": created,
        })
    return data
