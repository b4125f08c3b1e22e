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

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery, Sum
from django.utils import timezone

from fleet.models import Organisation, Role, Vehicle
from fleet.selectors import Principal, actor_of, vehicles_visible_to
from logbook.models import (
    CREATED,
    Category,
    GapStatus,
    LogbookSettings,
    OdometerGap,
    Trip,
    TripRevision,
    TripStatus,
    VehicleLogbook,
    VehicleTripState,
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
    # Every status: a private trip that was cancelled, merged or split still happened
    # privately (its positions are the same), so a correction never uncovers it.
    trips = Trip.objects.filter(
        vehicle=vehicle, start_time__lt=end, end_time__gt=start,
    ).filter(Q(category=Category.PRIVATE) | Q(category="", suggested_category=Category.PRIVATE))
    trips = trips.select_related("driver", "organisation")
    return [(t.start_time, t.end_time) for t in trips if is_redacted_for(t, principal)]


def period_bounds(organisation: Organisation, start: date, end: date) -> tuple[datetime, datetime]:
    """[start 00:00, day after end 00:00) in the organisation's time zone."""
    zone = ZoneInfo(organisation.time_zone)
    return (datetime.combine(start, time(), zone),
            datetime.combine(end + timedelta(days=1), time(), zone))


# --------------------------------------------------------------------------- privacy in SQL

PRIVATE_Q = Q(category=Category.PRIVATE) | Q(category="", suggested_category=Category.PRIVATE)


def redacted_q(principal: Principal) -> Q:
    """``is_redacted_for`` as a query: the principal's trips of which they see date,
    distance and odometer only (private, and not their own)."""
    actor = actor_of(principal)
    if actor.user is None or actor.is_superuser or actor.organisation_id is None:
        return PRIVATE_Q
    return PRIVATE_Q & ~Q(driver__user=actor.user)


def _day_floor(moment: datetime, zone: ZoneInfo) -> datetime:
    return datetime.combine(moment.astimezone(zone).date(), time(), zone)


def _day_ceil(moment: datetime, zone: ZoneInfo) -> datetime:
    local = moment.astimezone(zone)
    midnight = datetime.combine(local.date(), time(), zone)
    return midnight if local == midnight else datetime.combine(
        local.date() + timedelta(days=1), time(), zone)


def trips_in_window(
    trips: QuerySet[Trip], principal: Principal, start: datetime | None, end: datetime | None,
) -> QuerySet[Trip]:
    """Trips starting in [start, end), without telling a redacted trip's times.

    A trip the principal sees redacted is matched by its date only: it is in when its
    day (in its organisation's time zone) overlaps the window. Matching it by its exact
    start would let anyone narrow the window until the hidden start time falls out.
    """
    if start is None and end is None:
        return trips
    actor = actor_of(principal)
    exact = Q()
    if start is not None:
        exact &= Q(start_time__gte=start)
    if end is not None:
        exact &= Q(start_time__lt=end)
    if actor.is_superuser:
        zones = set(Organisation.objects.values_list("time_zone", flat=True).distinct())
    elif actor.organisation_id is not None:
        zones = set(Organisation.objects.filter(pk=actor.organisation_id)
                    .values_list("time_zone", flat=True))
    else:
        zones = set()
    by_day = Q(pk__in=[])
    for name in sorted(zones):
        zone = ZoneInfo(name)
        day = Q(organisation__time_zone=name)
        if start is not None:
            day &= Q(start_time__gte=_day_floor(start, zone))
        if end is not None:
            day &= Q(start_time__lt=_day_ceil(end, zone))
        by_day |= day
    redacted = redacted_q(principal)
    return trips.filter((~redacted & exact) | (redacted & by_day))


def _private_trips(vehicle_ids: list[int], start: datetime, end: datetime) -> QuerySet[Trip]:
    return (
        Trip.objects.filter(vehicle_id__in=vehicle_ids,  # every status: see private_periods
                            start_time__lte=end, end_time__gte=start)
        .filter(PRIVATE_Q).select_related("driver", "organisation")
    )


def without_private_positions(principal: Principal, positions: list) -> list:
    """The positions (rows with ``vehicle_id`` and ``fix_time``) the principal may see on
    a map: those inside a trip redacted for them (``private_periods``) are left out.

    For one page of a position list or the feed: one query, whatever the page holds.
    """
    # Comprehensions and builtins: this runs on every page of 1,000 positions.
    times = [p.fix_time for p in positions if p.vehicle_id is not None]
    if not times:
        return positions
    vehicle_ids = list({p.vehicle_id for p in positions} - {None})
    start, end = min(times), max(times)
    periods: dict[int, list[tuple[datetime, datetime]]] = {}
    for trip in _private_trips(vehicle_ids, start, end):
        if is_redacted_for(trip, principal):
            periods.setdefault(trip.vehicle_id, []).append((trip.start_time, trip.end_time))
    if not periods:
        return positions
    return [
        p for p in positions
        if not any(a <= p.fix_time <= b for a, b in periods.get(p.vehicle_id, ()))
    ]


def live_positions_hidden(
    principal: Principal, latest: dict[int, datetime | None]
) -> set[int]:
    """Vehicles whose live position (``{vehicle_id: fix time}``) the principal may not see.

    A trip still being driven is not classified yet, so it cannot be private; what is
    hidden is (1) every live position of a vehicle whose logbook default category is
    private, from everyone but drivers (a driver sees only the vehicles they drive), and
    (2) a position within a stored trip redacted for the principal, or after its end
    while the vehicle has not started another trip: parked at a private trip's
    destination is that trip's end address. See logbook/README.md.
    """
    ids = [pk for pk, fix_time in latest.items() if fix_time is not None]
    if not ids:
        return set()
    actor = actor_of(principal)
    hidden: set[int] = set()
    if actor.is_superuser or actor.role != Role.DRIVER:
        hidden |= set(VehicleLogbook.objects.filter(
            vehicle_id__in=ids, default_category=Category.PRIVATE,
        ).values_list("vehicle_id", flat=True))
    rest = [pk for pk in ids if pk not in hidden]
    if not rest:
        return hidden
    last_trip = Trip.objects.filter(
        vehicle_id=OuterRef("pk"), status=TripStatus.ACTIVE).order_by("-start_time")
    last_ids = Vehicle.objects.filter(pk__in=rest).annotate(
        last_trip=Subquery(last_trip.values("pk")[:1])
    ).values_list("last_trip", flat=True)
    last = {
        trip.vehicle_id: trip
        for trip in Trip.objects.filter(pk__in=[pk for pk in last_ids if pk is not None])
        .select_related("driver", "organisation")
    }
    driving = dict(VehicleTripState.objects.filter(vehicle_id__in=list(last))
                   .values_list("vehicle_id", "driving_since"))
    for vehicle_id, trip in last.items():
        fix_time = latest[vehicle_id]
        if fix_time < trip.start_time:
            # An old fix sent late: is it inside a private trip?
            moment = timedelta(seconds=1)
            periods = private_periods(principal, Vehicle(pk=vehicle_id), fix_time - moment,
                                      fix_time + moment)
            if any(a <= fix_time <= b for a, b in periods):
                hidden.add(vehicle_id)
            continue
        if not is_redacted_for(trip, principal):
            continue
        since = driving.get(vehicle_id)
        on_a_new_trip = since is not None and since > trip.end_time and fix_time >= since
        if fix_time <= trip.end_time or not on_a_new_trip:
            hidden.add(vehicle_id)
    return hidden


# --------------------------------------------------------------------------- stops


def _local_day_bounds(moment: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    floor = _day_floor(moment, zone)
    return floor, datetime.combine(floor.date() + timedelta(days=1), time(), zone)


def logbook_vehicles_for(principal: Principal) -> QuerySet[Vehicle]:
    """Vehicles whose logbook the principal may open: managers and dispatchers every
    vehicle of the organisation, a driver those they drive or have driven."""
    actor = actor_of(principal)
    vehicles = vehicles_visible_to(principal)
    if actor.role == Role.DRIVER and not actor.is_superuser and actor.user is not None:
        driven = Trip.objects.filter(driver__user=actor.user,
                                     organisation_id=actor.organisation_id)
        vehicles = Vehicle.objects.filter(
            Q(pk__in=vehicles.values("pk")) | Q(pk__in=driven.values("vehicle_id")))
    elif actor.role not in (Role.ADMIN, Role.DISPATCHER) and not actor.is_superuser:
        return Vehicle.objects.none()
    return vehicles.select_related("organisation").order_by("name", "pk")


def stops_visible_to(
    principal: Principal, start: datetime, end: datetime, *, vehicle: Vehicle | None = None,
) -> list[dict[str, Any]]:
    """The parked periods between a vehicle's consecutive trips that overlap [start, end).

    A stop runs from one trip's end (where it is) to the next trip's start; the last one
    is ongoing (``end_time`` None) until the vehicle drives again. A stop is listed to
    whoever sees the trip that ended there. What a redacted trip would tell is left out:
    after a private trip its place and start, before one its end; such a stop is placed
    in the window by its date, as the trips are.
    """
    actor = actor_of(principal)
    vehicles = logbook_vehicles_for(principal)
    if vehicle is not None:
        vehicles = vehicles.filter(pk=vehicle.pk)
    # Hidden ends are placed by their day, so look a day further on either side.
    low, high = start - timedelta(days=1), end + timedelta(days=1)
    active = Trip.objects.filter(status=TripStatus.ACTIVE)
    if not actor.is_superuser:
        active = active.filter(organisation_id=actor.organisation_id)
    bounds = vehicles.annotate(
        before=Subquery(active.filter(vehicle_id=OuterRef("pk"), end_time__lt=low)
                        .order_by("-end_time").values("pk")[:1]),
        after=Subquery(active.filter(vehicle_id=OuterRef("pk"), start_time__gte=high)
                       .order_by("start_time").values("pk")[:1]),
    ).values_list("pk", "before", "after")
    vehicle_ids, edge_ids = [], []
    for pk, before, after in bounds:
        vehicle_ids.append(pk)
        edge_ids += [t for t in (before, after) if t is not None]
    trips = active.filter(
        Q(vehicle_id__in=vehicle_ids, start_time__lt=high, end_time__gte=low)
        | Q(pk__in=edge_ids)
    ).select_related("vehicle", "driver", "organisation").order_by("vehicle_id", "start_time")
    visible = set(trips_visible_to(principal, lock=False).filter(
        pk__in=[t.pk for t in trips]).values_list("pk", flat=True))
    driving = {}
    if vehicle_ids:
        driving = dict(VehicleTripState.objects.filter(vehicle_id__in=vehicle_ids)
                       .values_list("vehicle_id", "driving_since"))
    by_vehicle: dict[int, list[Trip]] = {}
    for trip in trips:
        by_vehicle.setdefault(trip.vehicle_id, []).append(trip)
    stops = []
    for vehicle_id, runs in by_vehicle.items():
        for previous, following in zip(runs, [*runs[1:], None], strict=True):
            if previous.pk not in visible:
                continue
            if following is None and driving.get(vehicle_id) is not None:
                continue  # driving again: the trip in progress ended the stop
            zone = ZoneInfo(previous.organisation.time_zone)
            hide_start = is_redacted_for(previous, principal)
            shows_next = following is not None and following.pk in visible
            hide_end = following is not None and (
                not shows_next or is_redacted_for(following, principal))
            # Where the stop sits in time, as far as it may tell.
            first = (_local_day_bounds(previous.start_time, zone)[0] if hide_start
                     else previous.end_time)
            if following is None:
                last = None
            elif hide_end:
                last = _local_day_bounds(following.start_time, zone)[1]
            else:
                last = following.start_time
            if first >= end or (last is not None and last <= start):
                continue
            stop = {
                "vehicle_id": vehicle_id,
                "vehicle": previous.vehicle.name,
                "date": local_date(previous).isoformat(),
                "start_time": None if hide_start else previous.end_time,
                "end_time": None if (hide_end or following is None) else following.start_time,
                "duration_s": None,
                "latitude": None if hide_start else previous.end_latitude,
                "longitude": None if hide_start else previous.end_longitude,
                "address": None if hide_start else previous.end_address,
                "previous_trip": previous.pk,
                "next_trip": following.pk if shows_next else None,
                "ongoing": following is None,
                "redacted": hide_start or hide_end,
            }
            if stop["start_time"] is not None and stop["end_time"] is not None:
                stop["duration_s"] = (stop["end_time"] - stop["start_time"]).total_seconds()
            stops.append((first, vehicle_id, stop))
    stops.sort(key=lambda item: (item[0], item[1]))
    return [stop for _, _, stop in stops]


# --------------------------------------------------------------------------- completeness


def completeness_for(principal: Principal, start: datetime, end: datetime,
                     now: datetime | None = None) -> list[dict[str, Any]]:
    """Per vehicle, for fleet managers and dispatchers: what the logbook still lacks.

    ``unclassified`` counts the trips still waiting for their driver (open, whatever
    their date: older ones are locked private already), ``locking_soon`` those of them
    that lock within 24 hours; ``open_gaps`` and ``gap_km`` the unexplained odometer
    gaps; ``trips`` and ``km`` the active trips in [start, end).
    """
    actor = actor_of(principal)
    if not actor.is_superuser and actor.role not in (Role.ADMIN, Role.DISPATCHER):
        return []
    now = now or timezone.now()
    from logbook.services import lock_due_trips

    lock_due_trips(now=now, organisation=None if actor.is_superuser else Organisation(
        pk=actor.organisation_id))
    vehicles = list(logbook_vehicles_for(principal))
    ids = [v.pk for v in vehicles]
    active = Trip.objects.filter(vehicle_id__in=ids, status=TripStatus.ACTIVE)
    in_period = dict(
        (row["vehicle_id"], row) for row in active.filter(start_time__gte=start, start_time__lt=end)
        .values("vehicle_id").annotate(n=Count("pk"), metres=Sum("distance_m"))
    )
    open_trips = active.filter(category="", locked_at__isnull=True)
    unclassified: dict[int, int] = {}
    soon: dict[int, int] = {}
    windows = dict(LogbookSettings.objects.values_list("organisation_id", "edit_window_days"))
    for vehicle_id, organisation_id, end_time in open_trips.values_list(
            "vehicle_id", "organisation_id", "end_time"):
        unclassified[vehicle_id] = unclassified.get(vehicle_id, 0) + 1
        deadline = end_time + timedelta(days=windows.get(organisation_id, 7))
        if now <= deadline < now + timedelta(hours=24):
            soon[vehicle_id] = soon.get(vehicle_id, 0) + 1
    gaps: dict[int, list[float]] = {}
    for vehicle_id, from_km, to_km in OdometerGap.objects.filter(
            vehicle_id__in=ids, status=GapStatus.OPEN).values_list(
            "vehicle_id", "from_km", "to_km"):
        gaps.setdefault(vehicle_id, []).append(to_km - from_km)
    rows = []
    for vehicle in vehicles:
        period = in_period.get(vehicle.pk, {})
        rows.append({
            "vehicle": vehicle,
            "trips": period.get("n", 0),
            "km": round((period.get("metres") or 0.0) / 1000.0, 1),
            "unclassified": unclassified.get(vehicle.pk, 0),
            "locking_soon": soon.get(vehicle.pk, 0),
            "open_gaps": len(gaps.get(vehicle.pk, [])),
            "gap_km": round(sum(gaps.get(vehicle.pk, [])), 1),
        })
    return rows


def vehicles_to_choose(principal: Principal) -> QuerySet[Vehicle]:
    """The vehicles a driver may take for the day: any of the organisation's (pool cars
    included), by name; nobody else chooses one."""
    actor = actor_of(principal)
    if actor.is_superuser or actor.role != Role.DRIVER or actor.organisation_id is None:
        return Vehicle.objects.none()
    return Vehicle.objects.filter(organisation_id=actor.organisation_id).order_by("name", "pk")
