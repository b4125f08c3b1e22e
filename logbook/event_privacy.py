"""Events during a private trip say nothing of where the vehicle was.

A private trip's route and addresses are the driver's business (logbook/README.md,
"Privacy"). Events carry places too: an overspeed or idling event has the fix's
coordinates, a geofence event names the area, the logbook's trip events carry start and
end addresses. So every consumer that shows events to someone (the events API and page,
the map's live feed) or sends them out (alert e-mails, webhooks) passes them through
here first:

* ``event_privacy_for(principal, events)`` is the one selector: it reads, in a handful
  of queries whatever the number of events, which of the events' vehicles were on (or
  parked at the end of) a trip the principal sees redacted, and which vehicles' every
  position is hidden from them (a logbook default of private).
* ``EventPrivacy.hides(...)``, ``without_location`` and ``redacted`` are pure: they
  decide per event and strip the attributes.

An event is private for a viewer when its vehicle's logbook default category is private
(for everyone but drivers, as on the live map), when ``attributes["trip_id"]`` names a
trip redacted for the viewer, or when its time lies within such a trip or after its end
while the vehicle has not started another trip (parked at a private trip's destination
is that trip's end address, as on the live map and in the stops). A private event keeps
its type, time and vehicle, loses every location attribute, and says so with
``"location_hidden": true``; an event whose type alone tells the place (entering or
leaving a geofence, arriving at or leaving a job stop) is withheld altogether, since
"entered a geofence" is the depot when there is only one.

The trip's own driver sees their events whole. E-mail recipients and webhook receivers
are nobody in particular: they get what a fleet manager who drove none of the trips
would see (``organisation_viewer``).

A trip is classified after it ends, so what went out while it was being driven (an
e-mail, a webhook, the live feed) was decided then; a later classification hides it
from every page and the API from then on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import OuterRef, Q, Subquery

from fleet.models import Role, Vehicle
from fleet.selectors import Actor, Principal, actor_of
from logbook.models import Category, Trip, TripStatus, VehicleLogbook, VehicleTripState

# Attribute names that hold a place, and the endings that make any other name one
# ("start_latitude", "end_address", "stop_coordinates" ...).
LOCATION_KEYS = frozenset({
    "latitude", "longitude", "lat", "lon", "lng", "long", "altitude", "altitude_m",
    "course", "heading", "address", "coordinates", "coords", "position", "location",
    "place", "place_name", "geometry", "route", "track", "point", "geofence",
    "geofence_name", "geofences", "stop", "stop_address", "destination", "partner",
})
LOCATION_SUFFIXES = (
    "_latitude", "_longitude", "_lat", "_lon", "_lng", "_address", "_coordinates",
    "_coords", "_position", "_location", "_place", "_geometry", "_route", "_point",
)
# What else the logbook never shows of a private trip but its driver (the logbook's
# trip events carry them): who drove, and why.
PERSONAL_KEYS = frozenset({"driver", "driver_id", "driver_name", "driver_key", "purpose",
                           "note"})
# Events whose type alone tells where the vehicle was.
PLACE_EVENT_TYPES = frozenset({"geofence_enter", "geofence_exit", "job_arrived",
                               "job_departed"})
HIDDEN_FLAG = "location_hidden"


# --- pure ---------------------------------------------------------------------------


def is_location_key(key: str) -> bool:
    lowered = key.lower()
    return (lowered in LOCATION_KEYS or lowered in PERSONAL_KEYS
            or lowered.endswith(LOCATION_SUFFIXES))


def without_location(value: Any) -> Any:
    """``value`` (attributes: dicts and lists, nested) without any location key (nor
    who drove and why: ``PERSONAL_KEYS``)."""
    if isinstance(value, dict):
        return {k: without_location(v) for k, v in value.items()
                if not (isinstance(k, str) and is_location_key(k))}
    if isinstance(value, list):
        return [without_location(v) for v in value]
    return value


def redacted(event_type: str, attributes: dict[str, Any] | None,
             hidden: bool) -> dict[str, Any] | None:
    """The attributes the viewer gets: unchanged when not ``hidden``; else without any
    location and flagged, or None when the event is withheld (its type tells the place)."""
    if not hidden:
        return attributes
    if event_type in PLACE_EVENT_TYPES:
        return None
    return {**without_location(attributes or {}), HIDDEN_FLAG: True}


@dataclass(frozen=True, slots=True)
class PrivateSpan:
    """A trip redacted for the viewer, and the parking after it: from the trip's start
    to its end (inclusive: a "trip ended" event carries the end time), then on until
    ``until``, when the vehicle drove off again (None: it has not yet)."""

    start: datetime
    trip_end: datetime
    until: datetime | None
    trip_id: int

    def covers(self, time: datetime) -> bool:
        if time < self.start:
            return False
        return time <= self.trip_end or self.until is None or time < self.until


@dataclass
class EventPrivacy:
    """What one viewer may not see of the events' places (from ``event_privacy_for``)."""

    spans: dict[int, list[PrivateSpan]] = field(default_factory=dict)
    trip_ids: frozenset[int] = frozenset()
    whole_vehicles: frozenset[int] = frozenset()

    def hides(self, vehicle_id: int | None, time: datetime,
              attributes: dict[str, Any] | None) -> bool:
        if vehicle_id is not None and vehicle_id in self.whole_vehicles:
            return True
        trip_id = _trip_id(attributes)
        if trip_id is not None and trip_id in self.trip_ids:
            return True
        if vehicle_id is None:
            return False
        return any(span.covers(time) for span in self.spans.get(vehicle_id, ()))


def spans_of(trips: list[Trip], redacted_ids: set[int],
             driving_since: datetime | None) -> list[PrivateSpan]:
    """One vehicle's trips (any category, oldest first) to the spans hidden from a
    viewer who sees the trips ``redacted_ids`` redacted. The parking after a redacted
    trip lasts until the next stored trip starts, or, when none is stored yet, until the
    vehicle started driving again (``driving_since``: a trip in progress)."""
    spans = []
    for index, trip in enumerate(trips):
        if trip.pk not in redacted_ids:
            continue
        until = trips[index + 1].start_time if index + 1 < len(trips) else None
        if until is None and driving_since is not None and driving_since > trip.end_time:
            until = driving_since
        spans.append(PrivateSpan(trip.start_time, trip.end_time, until, trip.pk))
    return spans


def _trip_id(attributes: dict[str, Any] | None) -> int | None:
    raw = (attributes or {}).get("trip_id")
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.isdigit() and len(raw) <= 18:
        return int(raw)
    return None


def _time_of(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


# --- the selector ---------------------------------------------------------------------


def organisation_viewer(organisation_id: int) -> Actor:
    """Who an e-mail recipient or a webhook receiver counts as: a fleet manager of the
    organisation who drove none of its trips."""
    return Actor(organisation_id=organisation_id, role=Role.ADMIN)


def event_privacy_for(
    principal: Principal,
    events: Iterable[tuple[int | None, datetime, dict[str, Any] | None]],
) -> EventPrivacy:
    """What ``principal`` may not see of the places of ``events`` ((vehicle id, time,
    attributes) each). A handful of queries, whatever the number of events."""
    from logbook.selectors import PRIVATE_Q, is_redacted_for

    actor = actor_of(principal)
    windows: dict[int, tuple[datetime, datetime]] = {}
    named: set[int] = set()
    for vehicle_id, time, attributes in events:
        trip_id = _trip_id(attributes)
        if trip_id is not None:
            named.add(trip_id)
        if vehicle_id is None:
            continue
        low, high = windows.get(vehicle_id, (time, time))
        windows[vehicle_id] = (min(low, time), max(high, time))
    if not windows and not named:
        return EventPrivacy()

    whole: set[int] = set()
    if windows and (actor.is_superuser or actor.role != Role.DRIVER):
        whole = set(VehicleLogbook.objects.filter(
            vehicle_id__in=list(windows), default_category=Category.PRIVATE,
        ).values_list("vehicle_id", flat=True))

    trips_by_vehicle: dict[int, list[Trip]] = {}
    rest = [pk for pk in windows if pk not in whole]
    if rest:
        start = min(windows[pk][0] for pk in rest)
        end = max(windows[pk][1] for pk in rest)
        active = Trip.objects.filter(status=TripStatus.ACTIVE)
        # The trip that ended last before the window: the vehicle may still be parked
        # at its (private) end.
        before = Vehicle.objects.filter(pk__in=rest).annotate(last=Subquery(
            active.filter(vehicle_id=OuterRef("pk"), end_time__lt=start)
            .order_by("-end_time").values("pk")[:1])).values_list("last", flat=True)
        trips = (active.filter(Q(vehicle_id__in=rest, start_time__lte=end, end_time__gte=start)
                               | Q(pk__in=[pk for pk in before if pk is not None]))
                 .select_related("driver").order_by("vehicle_id", "start_time", "pk"))
        for trip in trips:
            trips_by_vehicle.setdefault(trip.vehicle_id, []).append(trip)

    redacted_ids = {trip.pk for runs in trips_by_vehicle.values() for trip in runs
                    if _is_private(trip) and is_redacted_for(trip, actor)}
    hidden_trips: set[int] = set(redacted_ids)
    missing = named - {trip.pk for runs in trips_by_vehicle.values() for trip in runs}
    if missing:
        for trip in Trip.objects.filter(PRIVATE_Q, pk__in=list(missing)).select_related(
                "driver"):
            if is_redacted_for(trip, actor):
                hidden_trips.add(trip.pk)

    spans: dict[int, list[PrivateSpan]] = {}
    with_private = [pk for pk, runs in trips_by_vehicle.items()
                    if any(t.pk in redacted_ids for t in runs)]
    if with_private:
        driving = dict(VehicleTripState.objects.filter(vehicle_id__in=with_private)
                       .values_list("vehicle_id", "driving_since"))
        for vehicle_id in with_private:
            spans[vehicle_id] = spans_of(trips_by_vehicle[vehicle_id], redacted_ids,
                                         driving.get(vehicle_id))
    return EventPrivacy(spans=spans, trip_ids=frozenset(hidden_trips),
                        whole_vehicles=frozenset(whole))


def _is_private(trip: Trip) -> bool:
    from logbook.selectors import is_private

    return is_private(trip)


# --- for the consumers ------------------------------------------------------------------


def redact_events(principal: Principal, events: list) -> list:
    """``telematics.models.Event`` rows as ``principal`` may see them, in order: private
    ones as copies with the location stripped (``attributes`` replaced, the rows in the
    database untouched), withheld ones left out."""
    privacy = event_privacy_for(principal, ((e.vehicle_id, e.time, e.attributes)
                                            for e in events))
    return list(_apply(privacy, events))


def _apply(privacy: EventPrivacy, events: list) -> Iterator:
    import copy

    for event in events:
        hidden = privacy.hides(event.vehicle_id, event.time, event.attributes)
        if not hidden:
            yield event
            continue
        attributes = redacted(event.type, event.attributes, True)
        if attributes is None:
            continue
        clone = copy.copy(event)
        clone.attributes = attributes
        yield clone


def redact_payloads(principal: Principal, payloads: list[dict[str, Any]]) -> list[dict]:
    """Live feed payloads (``{"type", "time", "vehicle", "attributes", ...}``, see
    ``telematics.alerts.presentation.event_payload``) as ``principal`` may see them:
    private ones with their attributes stripped, withheld ones left out. The caller
    rewrites anything derived from the attributes (the summary)."""
    rows = []
    for payload in payloads:
        time = _time_of(payload.get("time"))
        rows.append((payload, time))
    privacy = event_privacy_for(principal, (
        (p.get("vehicle"), t, p.get("attributes")) for p, t in rows if t is not None))
    out = []
    for payload, time in rows:
        hidden = time is None or privacy.hides(payload.get("vehicle"), time,
                                               payload.get("attributes"))
        attributes = redacted(payload.get("type", ""), payload.get("attributes"), hidden)
        if attributes is None:
            continue
        out.append(payload if not hidden else {**payload, "attributes": attributes})
    return out
