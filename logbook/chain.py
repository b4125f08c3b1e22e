"""Hashes that make the logbook tamper-evident. Pure functions, no database.

A trip's *content* is every field a tax auditor relies on, in JSON form (times as
ISO 8601 UTC, the route as its own SHA-256). Each revision row stores the trip's content
hash after the change, and its own hash:

    hash = SHA-256(prev_hash + canonical JSON of the revision + trip content hash)

chained per vehicle in ``seq`` order from 64 zeros. Rewriting a trip (even with a bare
SQL UPDATE) makes its content disagree with its last revision; rewriting, inserting or
deleting a revision breaks the chain from there on. ``logbook.services.verify_chain``
recomputes both.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64

# The trip fields in its content (model attribute names), in no particular order:
# canonical JSON sorts keys.
CONTENT_FIELDS = (
    "organisation_id",
    "vehicle_id",
    "driver_id",
    "driver_source",
    "start_time",
    "end_time",
    "start_latitude",
    "start_longitude",
    "end_latitude",
    "end_longitude",
    "start_address",
    "end_address",
    "start_odometer_km",
    "end_odometer_km",
    "distance_m",
    "gps_distance_m",
    "odometer_source",
    "max_speed_kmh",
    "route",
    "fix_count",
    "end_reason",
    "category",
    "purpose",
    "partner",
    "destination",
    "note",
    "origin",
    "status",
    "status_reason",
    "locked_at",
    "corrects",
)
# What a re-derivation must reproduce for a stored trip to be "the same trip".
BASE_FIELDS = (
    "start_time",
    "end_time",
    "start_latitude",
    "start_longitude",
    "end_latitude",
    "end_longitude",
    "start_odometer_km",
    "end_odometer_km",
    "distance_m",
    "gps_distance_m",
    "odometer_source",
    "max_speed_kmh",
    "route",
    "fix_count",
    "end_reason",
)


def canonical(value: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, no NaN, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def json_value(value: Any) -> Any:
    """A field value in content form: aware datetimes as ISO 8601 in UTC."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def route_hash(route: list) -> str:
    return sha256(canonical(route))


def content_of(trip: Any, corrects: list[int] | None = None) -> dict[str, Any]:
    """The trip's content. ``corrects`` (ids) must be given for a trip not yet saved."""
    content = {}
    for name in CONTENT_FIELDS:
        if name == "route":
            content[name] = route_hash(trip.route)
        elif name == "corrects":
            if corrects is None:
                corrects = [t.pk for t in trip.corrects.all()] if trip.pk else []
            content[name] = sorted(corrects)
        else:
            content[name] = json_value(getattr(trip, name))
    return content


def content_hash(content: dict[str, Any]) -> str:
    return sha256(canonical(content))


def base_hash(trip: Any) -> str:
    """Hash of what derivation produced (no addresses, driver or classification)."""
    return sha256(canonical({
        name: route_hash(trip.route) if name == "route" else json_value(getattr(trip, name))
        for name in BASE_FIELDS
    }))


def revision_payload(revision: Any) -> dict[str, Any]:
    """The part of a revision row its hash covers (everything but the hashes)."""
    return {
        "vehicle": revision.vehicle_id,
        "trip": revision.trip_id,
        "seq": revision.seq,
        "time": json_value(revision.time),
        "actor_id": revision.actor_id,
        "actor_name": revision.actor_name,
        "interface": revision.interface,
        "field": revision.field,
        "old": revision.old_value,
        "new": revision.new_value,
        "reason": revision.reason,
    }


def revision_hash(prev_hash: str, payload: dict[str, Any], trip_hash: str) -> str:
    return sha256(prev_hash + canonical(payload) + trip_hash)
