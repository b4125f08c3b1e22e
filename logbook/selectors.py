"""Who sees which trips, and how much of them: every consumer reads trips through here.

The dashboard, the API and the exports show trips only as ``trip_view`` dicts built for
the person asking, so the privacy rules live in one place:

- A driver sees only the trips they drove, in full.
- Fleet managers (admin), dispatchers, API keys and the platform operator see every
  trip of the organisation, but of a *private* trip only its date, distance and
  odometer readings: never its times, route, positions, addresses, purpose, partner or
  driver. A trip counts as private when it is classified private, or when it is not
  classified yet and the rules suggest private (a Sunday trip stays hidden while the
  driver has not confirmed it yet).
- Nobody sees another organisation's trips.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import Q, QuerySet

from fleet.models import Organisation, Role, Vehicle
from fleet.selectors import Principal, actor_of
from logbook.models import (
    CREATED,
    Category,
    OdometerGap,
    Trip,
    TripRevision,
    TripStatus,
)

# What anyone in the organisation may see of a private trip.
PRIVATE_VISIBLE = frozenset({
    "id", "vehicle_id", "vehicle", "date", "start_odometer_km", "end_odometer_km",
    "distance_km", "category", "status", "locked", "redacted", "odometer_source",
})
VIEW_FIELDS = (
    "id", "vehicle_id", "vehicle", "date", "start_time", "end_time", "duration_s",
    "start_address", "end_address", "start_latitude", "start_longitude", "end_latitude",
    "end_longitude", "start_odometer_km", "end_odometer_km", "distance_km",
    "odometer_source", "max_speed_kmh", "average_speed_kmh", "driver", "category",
    "purpose", "partner", "destination", "note", "status", "status_reason", "corrects",
    "locked", "redacted", "route",
)
# Revision fields whose values a redacted view may show.
_REVISION_VISIBLE = frozenset({"category", "status", "locked_at"})


def trips_visible_to(
    principal: Principal,
    *,
    vehicle: Vehicle | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    active_only: bool = False,
    lock: bool = True,
) -> QuerySet[Trip]:
    """Trips the principal may see (trips starting in [start, end)), oldest first.

    With ``lock`` the edit windows that have closed are applied first (unclassified
    trips become private), so nobody ever reads a trip that should be locked.
    """
    actor = actor_of(principal)
    trips = Trip.objects.select_related("vehicle", "driver", "organisation")
    if actor.is_superuser:
        pass
    elif actor.organisation_id is None:
        return trips.none()
    else:
        trips = trips.filter(organisation_id=actor.organisation_id)
        if actor.role == Role.DRIVER:
            if actor.user is None:
                return trips.none()
            trips = trips.filter(driver__user=actor.user)
        elif actor.role not in (Role.ADMIN, Role.DISPATCHER):
            return trips.none()
    if vehicle is not None:
        trips = trips.filter(vehicle=vehicle)
    if start is not None:
        trips = trips.filter(start_time__gte=start)
    if end is not None:
        trips = trips.filter(start_time__lt=end)
    if active_only:
        trips = trips.filter(status=TripStatus.ACTIVE)
    if lock:
        from logbook.services import lock_due_trips

        organisation = None if actor.is_superuser else Organisation(pk=actor.organisation_id)
        lock_due_trips(organisation=organisation,
                       vehicle_ids=[vehicle.pk] if vehicle is not None else None)
    return trips.order_by("start_time", "id")


def is_private(trip: Trip) -> bool:
    return trip.category == Category.PRIVATE or (
        not trip.category and trip.suggested_category == Category.PRIVATE
    )


def is_redacted_for(trip: Trip, principal: Principal) -> bool:
    """True when the principal sees only date, distance and odometer of this trip."""
    if not is_private(trip):
        return False
    actor = actor_of(principal)
    user = actor.user
    own = (
        user is not None and trip.driver_id is not None and trip.driver.user_id == user.pk
        and not actor.is_superuser and actor.organisation_id == trip.organisation_id
    )
    return not own


def local_date(trip: Trip) -> date:
    return trip.start_time.astimezone(ZoneInfo(trip.organisation.time_zone)).date()


def trip_view(trip: Trip, principal: Principal, *, with_route: bool = True) -> dict[str, Any]:
    """The trip as the principal may see it: every key present, hidden ones None."""
    redacted = is_redacted_for(trip, principal)
    view: dict[str, Any] = {
        "id": trip.pk,
        "vehicle_id": trip.vehicle_id,
        "vehicle": trip.vehicle.name,
        "date": local_date(trip).isoformat(),
        "start_time": trip.start_time,
        "end_time": trip.end_time,
        "duration_s": trip.duration_s,
        "start_address": trip.start_address,
        "end_address": trip.end_address,
        "start_latitude": trip.start_latitude,
        "start_longitude": trip.start_longitude,
        "end_latitude": trip.end_latitude,
        "end_longitude": trip.end_longitude,
        "start_odometer_km": round(trip.start_odometer_km, 1),
        "end_odometer_km": round(trip.end_odometer_km, 1),
        "distance_km": round(trip.end_odometer_km, 1) - round(trip.start_odometer_km, 1),
        "odometer_source": trip.odometer_source,
        "max_speed_kmh": round(trip.max_speed_kmh, 1),
        "average_speed_kmh": round(trip.average_speed_kmh, 1),
        "driver": trip.driver.name if trip.driver_id else None,
        "category": trip.category or None,
        "purpose": trip.purpose,
        "partner": trip.partner,
        "destination": trip.destination,
        "note": trip.note,
        "status": trip.status,
        "status_reason": trip.status_reason,
        "corrects": [t.pk for t in trip.corrects.all()],
        "locked": trip.locked_at is not None,
        "redacted": redacted,
        "route": trip.route if with_route else None,
    }
    view["distance_km"] = round(view["distance_km"], 1)
    if redacted:
        if view["category"] is None:
            view["category"] = Category.PRIVATE  # what it becomes unless the driver objects
        for key in VIEW_FIELDS:
            if key not in PRIVATE_VISIBLE:
                view[key] = None
    return view


def revisions_of(trip: Trip, principal: Principal) -> list[dict[str, Any]]:
    """The trip's revision history, as the principal may see it.

    For a redacted trip, values of hidden fields show as None (the creation shows only
    the visible part of the entry): that a change happened stays visible.
    """
    redacted = is_redacted_for(trip, principal)
    history = []
    for revision in TripRevision.objects.filter(trip=trip).order_by("seq"):
        old, new = revision.old_value, revision.new_value
        if redacted:
            if revision.field == CREATED:
                new = {k: v for k, v in (new or {}).items()
                       if k in ("start_odometer_km", "end_odometer_km", "distance_m",
                                "category", "status")}
            elif revision.field not in _REVISION_VISIBLE:
                old = new = None
        history.append({
            "seq": revision.seq, "time": revision.time, "actor": revision.actor_name,
            "interface": revision.interface, "field": revision.field, "old": old,
            "new": new, "reason": revision.reason, "hash": revision.hash,
        })
    return history


def odometer_gaps_visible_to(
    principal: Principal, *, vehicle: Vehicle | None = None,
    start: datetime | None = None, end: datetime | None = None,
) -> QuerySet[OdometerGap]:
    """Odometer gaps are the fleet's business: managers and dispatchers, not drivers."""
    actor = actor_of(principal)
    gaps = OdometerGap.objects.exclude(status="obsolete")
    if not actor.is_superuser:
        if actor.organisation_id is None or actor.role not in (Role.ADMIN, Role.DISPATCHER):
            return gaps.none()
        gaps = gaps.filter(organisation_id=actor.organisation_id)
    if vehicle is not None:
        gaps = gaps.filter(vehicle=vehicle)
    if start is not None:
        gaps = gaps.filter(to_time__gte=start)
    if end is not None:
        gaps = gaps.filter(to_time__lt=end)
    return gaps.order_by("to_time", "id")


def private_periods(
    principal: Principal, vehicle: Vehicle, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """Time ranges of the vehicle's trips the principal may not follow on a map.

    A consumer that shows positions (a track, a position list) hides those in these
    ranges, so a private trip's route is not rebuilt from the raw positions.
    """
    trips = Trip.objects.filter(
        vehicle=vehicle, status=TripStatus.ACTIVE, start_time__lt=end, end_time__gt=start,
    ).filter(Q(category=Category.PRIVATE) | Q(category="", suggested_category=Category.PRIVATE))
    trips = trips.select_related("driver", "organisation")
    return [(t.start_time, t.end_time) for t in trips if is_redacted_for(t, principal)]


def period_bounds(organisation: Organisation, start: date, end: date) -> tuple[datetime, datetime]:
    """[start 00:00, day after end 00:00) in the organisation's time zone."""
    zone = ZoneInfo(organisation.time_zone)
    return (datetime.combine(start, time(), zone),
            datetime.combine(end + timedelta(days=1), time(), zone))
