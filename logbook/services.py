"""The logbook's rules: revisions, classification, locking, drivers, corrections, integrity.

Every change to a trip goes through ``create_trip`` or ``change_trip``: they write the
trip and append its revisions to the vehicle's hash chain in one transaction, under the
vehicle's ``VehicleTripState`` row lock, so two writers can never fork the chain.
Derivation (``logbook.derivation``) writes trips through the same two functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings as django_settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from fleet.models import Driver, Organisation, Role, Vehicle
from fleet.selectors import Actor, actor_of
from logbook import chain
from logbook.geocoding import match_place
from logbook.models import (
    CREATED,
    Category,
    DriverSession,
    DriverSource,
    GapStatus,
    Interface,
    LogbookSettings,
    NamedPlace,
    OdometerGap,
    PlaceKind,
    Trip,
    TripOrigin,
    TripRevision,
    TripStatus,
    VehicleLogbook,
    VehicleTripState,
)
from logbook.tripstate import distance_m

SYSTEM = "system"


class LogbookError(ValidationError):
    """A change the logbook rules refuse, with a message per trip and field.

    ``messages`` is ``{trip_id: {field: message}}``; ``"__all__"`` is about the whole trip.
    """

    def __init__(self, messages: dict[int, dict[str, str]]):
        self.messages_by_trip = messages
        flat = [f"Trip {trip_id}: {text}" for trip_id, fields in messages.items()
                for text in fields.values()]
        super().__init__(flat)


# --------------------------------------------------------------------------- settings


def logbook_settings_for(organisation: Organisation | int) -> LogbookSettings:
    """The organisation's logbook settings, created with the defaults on first use."""
    organisation_id = organisation if isinstance(organisation, int) else organisation.pk
    found, _ = LogbookSettings.objects.get_or_create(organisation_id=organisation_id)
    return found


def edit_deadline(trip: Trip, settings: LogbookSettings) -> datetime:
    """The moment the trip locks: ``edit_window_days`` after its end."""
    return trip.end_time + timedelta(days=settings.edit_window_days)


def is_editable(trip: Trip, settings: LogbookSettings, now: datetime | None = None) -> bool:
    now = now or timezone.now()
    return trip.locked_at is None and now < edit_deadline(trip, settings)


# --------------------------------------------------------------------------- actors


@dataclass(frozen=True, slots=True)
class Who:
    """Who made a change, as the revision keeps it."""

    actor_id: int | None
    name: str


def who(actor: Any) -> Who:
    """A user, an ``Actor`` (API key or member) or None (the system) as a revision author."""
    if actor is None:
        return Who(None, SYSTEM)
    if isinstance(actor, Actor):
        if actor.user is not None:
            return who(actor.user)
        if actor.api_key_id is not None:
            return Who(None, f"api-key:{actor.api_key_id}")
        return Who(None, SYSTEM)
    return Who(actor.pk, actor.get_username())


# --------------------------------------------------------------------------- the chain


def lock_chain(vehicle_id: int) -> VehicleTripState:
    """The vehicle's state row, locked for this transaction: the chain head lives in it."""
    state = VehicleTripState.objects.select_for_update().filter(vehicle_id=vehicle_id).first()
    if state is None:
        VehicleTripState.objects.get_or_create(vehicle_id=vehicle_id)
        state = VehicleTripState.objects.select_for_update().get(vehicle_id=vehicle_id)
    return state


class _Appender:
    """Appends revisions to a locked chain head; ``flush`` writes rows and the head."""

    def __init__(self, state: VehicleTripState):
        self.state = state
        self.rows: list[TripRevision] = []

    def add(self, trip: Trip, field_name: str, old: Any, new: Any, trip_hash: str,
            author: Who, interface: str, reason: str, now: datetime) -> None:
        state = self.state
        revision = TripRevision(
            vehicle_id=trip.vehicle_id, trip_id=trip.pk, seq=state.chain_seq + 1, time=now,
            actor_id=author.actor_id, actor_name=author.name[:150], interface=interface,
            field=field_name, old_value=old, new_value=new, reason=reason[:300],
            trip_hash=trip_hash, prev_hash=state.chain_hash,
        )
        revision.hash = chain.revision_hash(
            state.chain_hash, chain.revision_payload(revision), trip_hash
        )
        state.chain_seq = revision.seq
        state.chain_hash = revision.hash
        self.rows.append(revision)

    def flush(self) -> None:
        if self.rows:
            TripRevision.objects.bulk_create(self.rows)
            self.rows = []
            self.state.save(update_fields=["chain_seq", "chain_hash"])


# Base data: written once by derivation (addresses are filled in once, if missing).
_NEVER_CHANGED = frozenset(chain.BASE_FIELDS) | {"corrects", "organisation_id", "vehicle_id",
                                                 "origin"}


def create_trip(
    trip: Trip,
    *,
    corrects: Sequence[Trip] = (),
    actor: Any = None,
    interface: str = Interface.DERIVATION,
    reason: str = "",
    now: datetime | None = None,
    state: VehicleTripState | None = None,
) -> Trip:
    """Store a new trip with its creation revision (the whole entry as ``new_value``)."""
    now = now or timezone.now()
    with transaction.atomic():
        state = state or lock_chain(trip.vehicle_id)
        trip.base_hash = chain.base_hash(trip)
        corrects_ids = [t.pk for t in corrects]
        content = chain.content_of(trip, corrects_ids)
        trip.content_hash = chain.content_hash(content)
        trip.save(force_insert=True)
        if corrects_ids:
            trip.corrects.set(corrects_ids)
        appender = _Appender(state)
        appender.add(trip, CREATED, None, content, trip.content_hash, who(actor), interface,
                     reason, now)
        appender.flush()
    return trip


def change_trip(
    trip: Trip,
    updates: dict[str, Any],
    *,
    actor: Any = None,
    interface: str,
    reason: str = "",
    now: datetime | None = None,
    state: VehicleTripState | None = None,
) -> list[str]:
    """Change fields of a stored trip, one revision per changed field; returns their names.

    ``updates`` is keyed by model attribute name (``driver_id``, ``category``...). This
    is the only way anything changes a trip after it was created.
    """
    now = now or timezone.now()
    with transaction.atomic():
        state = state or lock_chain(trip.vehicle_id)
        content = chain.content_of(trip)
        appender = _Appender(state)
        author = who(actor)
        changed = []
        for name, value in updates.items():
            if name not in chain.CONTENT_FIELDS or name in _NEVER_CHANGED:
                raise ValueError(f"{name} is base data: it is never changed")
            old = content[name]
            if name in ("start_address", "end_address") and old and value != old:
                raise ValueError(f"{name} is base data: only a missing address is filled in")
            setattr(trip, name, value)
            new = chain.json_value(getattr(trip, name))
            if new == old:
                continue
            content[name] = new
            changed.append(name)
            appender.add(trip, name, old, new, chain.content_hash(content), author, interface,
                         reason, now)
        if changed:
            trip.content_hash = chain.content_hash(content)
            trip.save(update_fields=[*changed, "content_hash"])
            appender.flush()
    return changed


# --------------------------------------------------------------------------- integrity


@dataclass(slots=True)
class ChainReport:
    vehicle_id: int
    revisions: int = 0
    trips: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(vehicle_id: int) -> ChainReport:
    """Recompute a vehicle's revision chain and every trip from it.

    Checks, in ``seq`` order: no missing or extra revision numbers, each ``prev_hash``
    and ``hash``, that each revision's old value is what the trip held, and that the
    trip content after it hashes to its ``trip_hash``. Then every stored trip must be
    exactly what its revisions built. The first broken link is reported first.
    """
    report = ChainReport(vehicle_id)
    prev = chain.GENESIS
    built: dict[int, dict[str, Any]] = {}
    expected_seq = 1
    revisions = TripRevision.objects.filter(vehicle_id=vehicle_id).order_by("seq")
    for revision in revisions.iterator(chunk_size=2000):
        report.revisions += 1
        where = f"revision #{revision.seq} (trip {revision.trip_id}, {revision.field})"
        if revision.seq != expected_seq:
            report.problems.append(f"{where}: expected #{expected_seq}, a revision is missing")
            return report
        expected_seq += 1
        if revision.prev_hash != prev:
            report.problems.append(f"{where}: does not follow the revision before it")
            return report
        payload = chain.revision_payload(revision)
        if chain.revision_hash(prev, payload, revision.trip_hash) != revision.hash:
            report.problems.append(f"{where}: the revision was altered")
            return report
        if revision.field == CREATED:
            if revision.trip_id in built or not isinstance(revision.new_value, dict):
                report.problems.append(f"{where}: a second or malformed creation")
                return report
            content = dict(revision.new_value)
        else:
            content = built.get(revision.trip_id)
            if content is None:
                report.problems.append(f"{where}: changes a trip before its creation")
                return report
            if content.get(revision.field) != revision.old_value:
                report.problems.append(f"{where}: old value is not what the trip held")
                return report
            content = {**content, revision.field: revision.new_value}
        if chain.content_hash(content) != revision.trip_hash:
            report.problems.append(f"{where}: trip content does not match its hash")
            return report
        built[revision.trip_id] = content
        prev = revision.hash
    state = VehicleTripState.objects.filter(vehicle_id=vehicle_id).first()
    if state is not None and (state.chain_seq, state.chain_hash) != (expected_seq - 1, prev):
        report.problems.append(
            f"chain head #{state.chain_seq} does not match the last revision #{expected_seq - 1}"
        )
        return report
    trips = Trip.objects.filter(vehicle_id=vehicle_id).prefetch_related("corrects")
    for trip in trips.order_by("start_time", "id").iterator(chunk_size=500):
        report.trips += 1
        content = built.pop(trip.pk, None)
        if content is None:
            report.problems.append(f"trip {trip.pk} ({trip}): has no creation revision")
            return report
        stored = chain.content_of(trip)
        if stored != content:
            fields_ = sorted(k for k in content if stored.get(k) != content.get(k))
            report.problems.append(
                f"trip {trip.pk} ({trip}): {', '.join(fields_)} differ from its revisions"
            )
            return report
    if built:
        report.problems.append(f"trips {sorted(built)} have revisions but are gone")
    return report


# --------------------------------------------------------------------------- drivers


def driver_for_trip(
    vehicle: Vehicle, start: datetime, keys: Iterable[str]
) -> tuple[Driver | None, str]:
    """Who drove: a reported identification key, the app session, else the default driver."""
    keys = [k for k in keys if k]
    if keys:
        drivers = {
            d.identification_key: d
            for d in Driver.objects.filter(
                organisation_id=vehicle.organisation_id, identification_key__in=keys
            )
        }
        for key in keys:
            if key in drivers:
                return drivers[key], DriverSource.KEY
    session = (
        DriverSession.objects.filter(vehicle=vehicle, since__lte=start)
        .filter(Q(until__isnull=True) | Q(until__gt=start))
        .select_related("driver")
        .order_by("-since")
        .first()
    )
    if session is not None:
        return session.driver, session.source
    if vehicle.default_driver_id is not None:
        return vehicle.default_driver, DriverSource.DEFAULT
    return None, ""


@transaction.atomic
def assign_driver(
    vehicle: Vehicle,
    driver: Driver,
    since: datetime,
    *,
    actor: Any = None,
    interface: str = Interface.APP,
    now: datetime | None = None,
) -> DriverSession:
    """The driver took the vehicle at ``since`` (chosen in the app, or set by a manager).

    Ends the vehicle's and the driver's open sessions there, and gives the driver the
    vehicle's editable trips from ``since`` on (up to a later session) that no
    identification key decided. Each reassignment is a revision.
    """
    if driver.organisation_id != vehicle.organisation_id:
        raise ValidationError("The driver belongs to another organisation.")
    now = now or timezone.now()
    state = lock_chain(vehicle.pk)
    DriverSession.objects.filter(
        Q(vehicle=vehicle) | Q(driver=driver), until__isnull=True, since__lte=since
    ).update(until=since)
    later = (
        DriverSession.objects.filter(vehicle=vehicle, since__gt=since)
        .order_by("since").values_list("since", flat=True).first()
    )
    session = DriverSession.objects.create(
        vehicle=vehicle, driver=driver, since=since, until=later, source=DriverSource.APP
    )
    settings = logbook_settings_for(vehicle.organisation_id)
    trips = Trip.objects.filter(
        vehicle=vehicle, status=TripStatus.ACTIVE, start_time__gte=since, locked_at__isnull=True
    ).exclude(driver_source=DriverSource.KEY)
    if later is not None:
        trips = trips.filter(start_time__lt=later)
    for trip in trips:
        if is_editable(trip, settings, now):
            change_trip(trip, {"driver_id": driver.pk, "driver_source": DriverSource.APP},
                        actor=actor, interface=interface, now=now, state=state,
                        reason="driver chose the vehicle")
    return session


# --------------------------------------------------------------------------- classification


@dataclass(frozen=True, slots=True)
class Suggestion:
    category: str
    purpose: str = ""
    partner: str = ""
    destination: str = ""
    note: str = ""
    reason: str = ""


_WORK_KINDS = (PlaceKind.DEPOT, PlaceKind.OFFICE)


def suggest_category(trip: Trip, settings: LogbookSettings | None = None) -> Suggestion:
    """What the rules suggest; the driver confirms it with one tap.

    In this order: home and a depot/office at either end is a commute; the destination's
    named place (its default category, a customer or supplier is business with the place
    as partner); the vehicle's default category; else working hours (start on a working
    day between ``work_start`` and ``work_end`` in the organisation's time zone) give
    business, other times private.
    """
    settings = settings or logbook_settings_for(trip.organisation_id)
    start_place = trip.start_place
    end_place = trip.end_place
    destination = end_place.label if end_place is not None else trip.end_address
    defaults = VehicleLogbook.objects.filter(vehicle_id=trip.vehicle_id).first()
    purpose = defaults.default_purpose if defaults is not None else ""
    kinds = {getattr(start_place, "kind", None), getattr(end_place, "kind", None)}
    if PlaceKind.HOME in kinds and kinds & set(_WORK_KINDS):
        return Suggestion(Category.COMMUTE, note=settings.commute_note,
                          reason="between home and workplace")
    if end_place is not None:
        category = end_place.default_category
        if not category and end_place.kind in (PlaceKind.CUSTOMER, PlaceKind.SUPPLIER):
            category = Category.BUSINESS
        if category:
            partner = end_place.partner or (
                end_place.name if end_place.kind in (PlaceKind.CUSTOMER, PlaceKind.SUPPLIER)
                else ""
            )
            return _suggestion(category, purpose, partner, destination, settings,
                               f"destination {end_place.name}")
    if defaults is not None and defaults.default_category:
        return _suggestion(defaults.default_category, purpose, "", destination, settings,
                           "vehicle default")
    local = trip.start_time.astimezone(ZoneInfo(trip.organisation.time_zone))
    working = (
        str(local.isoweekday()) in settings.work_days
        and settings.work_start <= local.time() < settings.work_end
    )
    if working:
        return _suggestion(Category.BUSINESS, purpose, "", destination, settings,
                           "working hours")
    return Suggestion(Category.PRIVATE, reason="outside working hours")


def _suggestion(category: str, purpose: str, partner: str, destination: str,
                settings: LogbookSettings, reason: str) -> Suggestion:
    if category == Category.BUSINESS:
        return Suggestion(category, purpose, partner, destination, reason=reason)
    if category == Category.COMMUTE:
        return Suggestion(category, note=settings.commute_note, reason=reason)
    return Suggestion(category, reason=reason)


def _required_fields(category: str, values: dict[str, str]) -> dict[str, str]:
    """Validation messages, one per missing field, for a classification."""
    messages = {}
    if category == Category.BUSINESS:
        if not values["purpose"]:
            messages["purpose"] = "A business trip needs its purpose."
        if not values["partner"]:
            messages["partner"] = "A business trip needs the business partner visited."
        if not values["destination"]:
            messages["destination"] = "A business trip needs its destination."
    elif category == Category.COMMUTE:
        if not values["note"]:
            messages["note"] = "A commute needs a short note (e.g. 'Home – workplace')."
    elif category != Category.PRIVATE:
        messages["category"] = "Choose business, private or commute."
    return messages


def missing_fields(category: str, values: dict[str, str]) -> dict[str, str]:
    """What a classification still lacks, one message per field (empty: complete).

    ``values`` has ``purpose``, ``partner``, ``destination`` and ``note``; pages use it to
    offer a suggestion as one tap only when it is complete.
    """
    return _required_fields(category, {k: (values.get(k) or "").strip() for k in
                                       ("purpose", "partner", "destination", "note")})


def can_edit(trip: Trip, actor: Any) -> bool:
    """The trip's driver edits it; a fleet manager only a trip nobody drove."""
    acting = actor_of(actor)
    if acting.is_superuser or acting.organisation_id != trip.organisation_id:
        return False
    if trip.driver_id is not None:
        user = acting.user
        return user is not None and trip.driver.user_id == user.pk
    return acting.role == Role.ADMIN


def classify(
    trips: Sequence[Trip],
    category: str,
    *,
    purpose: str = "",
    partner: str = "",
    destination: str = "",
    note: str = "",
    actor: Any,
    interface: str = Interface.APP,
    now: datetime | None = None,
) -> list[Trip]:
    """Classify one or several trips at once; all or none.

    Raises ``PermissionDenied`` for a trip the actor may not edit and ``LogbookError``
    with a message per trip and missing field (or a locked trip). A private trip keeps
    no purpose, partner, destination or note.
    """
    values = {
        "purpose": purpose.strip(), "partner": partner.strip(),
        "destination": destination.strip(), "note": note.strip(),
    }
    if category == Category.PRIVATE:
        values = dict.fromkeys(values, "")
    elif category == Category.COMMUTE:
        values.update(purpose="", partner="", destination="")
    return _apply_classifications(
        [(trip, category, values) for trip in trips], actor=actor, interface=interface, now=now
    )


def confirm_suggestions(
    trips: Sequence[Trip], *, actor: Any, interface: str = Interface.APP,
    now: datetime | None = None,
) -> list[Trip]:
    """The driver's one tap: take each trip's suggestion as its classification."""
    plan = []
    for trip in trips:
        s = suggest_category(trip)
        plan.append((trip, s.category, {"purpose": s.purpose, "partner": s.partner,
                                        "destination": s.destination, "note": s.note}))
    return _apply_classifications(plan, actor=actor, interface=interface, now=now)


def _apply_classifications(
    plan: list[tuple[Trip, str, dict[str, str]]], *, actor: Any, interface: str,
    now: datetime | None,
) -> list[Trip]:
    now = now or timezone.now()
    vehicles = sorted({trip.vehicle_id for trip, _, _ in plan})
    # Committed on its own: a refused classification must not undo the locking.
    lock_due_trips(now=now, vehicle_ids=vehicles)
    with transaction.atomic():
        states = {vehicle_id: lock_chain(vehicle_id) for vehicle_id in vehicles}
        messages: dict[int, dict[str, str]] = {}
        fresh = []
        for trip, category, values in plan:
            trip = Trip.objects.select_related("driver", "organisation").get(pk=trip.pk)
            if not can_edit(trip, actor):
                raise PermissionDenied(f"Trip {trip.pk} is not yours to classify.")
            settings = logbook_settings_for(trip.organisation_id)
            if trip.status != TripStatus.ACTIVE:
                messages[trip.pk] = {"__all__": f"The trip is {trip.get_status_display()}."}
            elif not is_editable(trip, settings, now):
                messages[trip.pk] = {"__all__": (
                    f"The trip is locked: it could be changed for {settings.edit_window_days} "
                    f"days after it ended, until {edit_deadline(trip, settings):%Y-%m-%d %H:%M} "
                    "UTC."
                )}
            else:
                problems = _required_fields(category, values)
                if problems:
                    messages[trip.pk] = problems
            fresh.append((trip, category, values))
        if messages:
            raise LogbookError(messages)
        for trip, category, values in fresh:
            change_trip(trip, {"category": category, **values}, actor=actor,
                        interface=interface, now=now, state=states[trip.vehicle_id])
    return [trip for trip, _, _ in fresh]


# --------------------------------------------------------------------------- locking


def lock_due_trips(
    *,
    now: datetime | None = None,
    organisation: Organisation | None = None,
    vehicle_ids: Iterable[int] | None = None,
) -> int:
    """Lock every trip whose edit window has closed; unclassified ones become private.

    Run daily by ``lock_logbook`` and lazily before the logbook is read or changed, so
    the window is exact whatever the schedule. Returns the number of trips locked.
    """
    now = now or timezone.now()
    due = Trip.objects.filter(locked_at__isnull=True)
    if organisation is not None:
        due = due.filter(organisation=organisation)
    if vehicle_ids is not None:
        due = due.filter(vehicle_id__in=list(vehicle_ids))
    locked = 0
    settings_by_org: dict[int, LogbookSettings] = {}
    # Any window is at least a day: nothing that ended within the last day can be due.
    candidates = due.filter(end_time__lte=now - timedelta(days=1)).order_by("vehicle_id", "id")
    # Ordered by vehicle only: ordering by id too would make DISTINCT one row per trip.
    for vehicle_id in candidates.order_by("vehicle_id").values_list(
            "vehicle_id", flat=True).distinct():
        with transaction.atomic():
            state = lock_chain(vehicle_id)
            for trip in candidates.filter(vehicle_id=vehicle_id):
                settings = settings_by_org.get(trip.organisation_id)
                if settings is None:
                    settings = settings_by_org[trip.organisation_id] = logbook_settings_for(
                        trip.organisation_id)
                if now < edit_deadline(trip, settings):
                    continue
                if trip.status == TripStatus.ACTIVE and not trip.category:
                    change_trip(trip, {"category": Category.PRIVATE}, interface=Interface.LOCK,
                                now=now, state=state,
                                reason="unclassified when the edit window closed")
                change_trip(trip, {"locked_at": now}, interface=Interface.LOCK, now=now,
                            state=state, reason="edit window closed")
                locked += 1
    return locked


# --------------------------------------------------------------------------- corrections
#
# Issue 5: trips are never deleted. A correction is a visible cancellation, or a merge or
# split whose originals stay (status "merged"/"split") and are listed in the new trips'
# ``corrects``. Who may correct (``correction_refusal``, PermissionDenied) is decided
# before the trip's state (``correction_blocker``, a LogbookError on "__all__": the API
# answers 409) and before the input (a LogbookError on a field: 400), and every refusal
# is a sentence the person can act on.

# A standstill within a trip's route at least this long is offered as a split point: the
# parking rule (``parking_s``, 5 minutes) misses a short delivery, and a minute is the
# route's own resolution (``route_interval_s``).
PAUSE_MIN_S = 60.0
MERGE_MAX_TRIPS = 50
REASON_MAX = 300
DEFAULT_MERGE_REASON = "The stops between the trips were no destinations."
DEFAULT_SPLIT_REASON = "A destination within the trip."
_ALREADY_CORRECTED = {
    TripStatus.CANCELLED: "The trip is cancelled already: it stays in the logbook as it is.",
    TripStatus.MERGED: "The trip was merged into another trip: correct that one instead.",
    TripStatus.SPLIT: "The trip was split into two trips: correct those instead.",
    TripStatus.SUPERSEDED: "The trip was replaced when its positions were derived again: "
                           "correct the replacement instead.",
}


def correction_refusal(trip: Trip, actor: Any) -> str | None:
    """Why the actor may not correct this trip (None: they may), whatever its state.

    A correction changes what the tax office reads, so a person answerable for the
    logbook makes it: the trip's driver, or the organisation's fleet manager (admin).
    Dispatchers, other drivers, API keys and the platform operator do not. A trip
    redacted for the actor (someone else's private trip) is corrected by its driver only:
    a split point or a merge partner would tell its times and route.
    """
    from logbook.selectors import is_redacted_for

    acting = actor_of(actor)
    if acting.is_superuser or acting.organisation_id != trip.organisation_id:
        return "The trip belongs to another organisation."
    if acting.api_key_id is not None:
        return ("An API key does not correct the logbook: the trip's driver or a fleet "
                "manager does, logged in.")
    if acting.role == Role.DISPATCHER:
        return ("Dispatchers do not correct the logbook: the trip's driver or a fleet "
                "manager does.")
    if is_redacted_for(trip, actor):
        return "A private trip: only its driver corrects it."
    if acting.role == Role.ADMIN:
        return None
    user = acting.user
    if (acting.role == Role.DRIVER and user is not None and trip.driver_id is not None
            and trip.driver.user_id == user.pk):
        return None
    return "Only the trip's driver or a fleet manager corrects it."


def correction_blocker(
    trip: Trip, settings: LogbookSettings, now: datetime | None = None
) -> str | None:
    """Why the trip can no longer be corrected by anyone (None: it can).

    The edit window that closes classification closes corrections too: a locked
    logbook is what the tax office may rely on.
    """
    if trip.status != TripStatus.ACTIVE:
        return _ALREADY_CORRECTED.get(trip.status, f"The trip is {trip.status}.")
    if not is_editable(trip, settings, now):
        deadline = edit_deadline(trip, settings).astimezone(ZoneInfo("UTC"))
        return (f"The trip is locked: it could be corrected for {settings.edit_window_days} "
                f"days after it ended, until {deadline:%Y-%m-%d %H:%M} UTC.")
    return None


def _check_correctable(trips: Sequence[Trip], actor: Any, now: datetime) -> None:
    for trip in trips:
        refusal = correction_refusal(trip, actor)
        if refusal is not None:
            raise PermissionDenied(refusal)
    messages = {}
    for trip in trips:
        blocker = correction_blocker(trip, logbook_settings_for(trip.organisation_id), now)
        if blocker is not None:
            messages[trip.pk] = {"__all__": blocker}
    if messages:
        raise LogbookError(messages)


def _reason(trip_id: int, text: str | None, default: str | None, missing: str = "") -> str:
    """The reason as stored; blank takes ``default``, or is refused when there is none."""
    text = (text or "").strip()
    if not text:
        if default is None:
            raise LogbookError({trip_id: {"reason": missing}})
        return default
    if len(text) > REASON_MAX:
        raise LogbookError({trip_id: {"reason": f"At most {REASON_MAX} characters."}})
    if "\x00" in text:
        raise LogbookError({trip_id: {"reason": "The reason holds a NUL character."}})
    return text


def _local_text(moment: datetime, trip: Trip, fmt: str = "%d.%m.%Y %H:%M") -> str:
    """A time as the organisation reads it, for messages."""
    return moment.astimezone(ZoneInfo(trip.organisation.time_zone)).strftime(fmt)


@transaction.atomic
def cancel_trip(
    trip: Trip, reason: str, *, actor: Any, interface: str = Interface.WEB,
    now: datetime | None = None,
) -> Trip:
    """A visible cancellation (towed, a unit on the wrong vehicle): the trip stays listed,
    with its reason, and counts in no total."""
    now = now or timezone.now()
    lock_due_trips(now=now, vehicle_ids=[trip.vehicle_id])
    state = lock_chain(trip.vehicle_id)
    trip = Trip.objects.select_related("driver", "organisation").get(pk=trip.pk)
    _check_correctable([trip], actor, now)
    reason = _reason(trip.pk, reason, None, "Say why the trip is cancelled.")
    # The person's words are the trip's ``status_reason`` (hidden with a private trip),
    # never a revision's ``reason``, which everyone who sees the trip reads.
    change_trip(trip, {"status": TripStatus.CANCELLED, "status_reason": reason},
                actor=actor, interface=interface, now=now, state=state)
    return trip


def _copy_base(trip: Trip) -> Trip:
    return Trip(
        organisation_id=trip.organisation_id, vehicle_id=trip.vehicle_id,
        driver_id=trip.driver_id, driver_source=trip.driver_source,
        start_time=trip.start_time, end_time=trip.end_time,
        start_latitude=trip.start_latitude, start_longitude=trip.start_longitude,
        end_latitude=trip.end_latitude, end_longitude=trip.end_longitude,
        start_address=trip.start_address, end_address=trip.end_address,
        start_place_id=trip.start_place_id, end_place_id=trip.end_place_id,
        start_odometer_km=trip.start_odometer_km, end_odometer_km=trip.end_odometer_km,
        distance_m=trip.distance_m, gps_distance_m=trip.gps_distance_m,
        odometer_source=trip.odometer_source, max_speed_kmh=trip.max_speed_kmh,
        route=list(trip.route), fix_count=trip.fix_count, end_reason=trip.end_reason,
        decided_at=trip.decided_at, addresses_pending=trip.addresses_pending,
        suggested_category=trip.suggested_category,
    )


def neighbours(trip: Trip) -> tuple[Trip | None, Trip | None]:
    """The vehicle's active trips just before and just after this one."""
    active = Trip.objects.filter(vehicle_id=trip.vehicle_id, status=TripStatus.ACTIVE)
    active = active.select_related("driver", "organisation").exclude(pk=trip.pk)
    before = active.filter(start_time__lt=trip.start_time).order_by("-start_time").first()
    after = active.filter(start_time__gt=trip.start_time).order_by("start_time").first()
    return before, after


def merge_problem(trips: Sequence[Trip], settings: LogbookSettings) -> str | None:
    """What makes these trips (sorted by start) unfit to become one trip, or None.

    One vehicle, one driver (each driver's trips stay their own), and a continuous
    odometer: an odometer gap between two trips is an entry of its own that the fleet
    manager explains, and a merge would hide it inside a trip.
    """
    if len({t.vehicle_id for t in trips}) > 1:
        return "The trips belong to different vehicles: only one vehicle's trips are merged."
    if len({t.driver_id for t in trips}) > 1:
        return "The trips have different drivers: each driver's trips stay their own."
    for earlier, later in pairwise(trips):
        jump = later.start_odometer_km - earlier.end_odometer_km
        if abs(jump) > settings.odometer_tolerance_km:
            return (f"The odometer jumps by {jump:.1f} km between the trip ending "
                    f"{_local_text(earlier.end_time, earlier)} and the one starting "
                    f"{_local_text(later.start_time, later)}: trips around an odometer gap "
                    "are not merged.")
    return None


def merge_partners(
    trip: Trip, actor: Any, now: datetime | None = None
) -> list[tuple[str, Trip]]:
    """The neighbours (``"previous"``, ``"next"``) the actor may merge this trip with.

    A page offers exactly these, so a tap never meets a refusal.
    """
    now = now or timezone.now()
    settings = logbook_settings_for(trip.organisation_id)
    if correction_refusal(trip, actor) or correction_blocker(trip, settings, now):
        return []
    partners = []
    before, after = neighbours(trip)
    for direction, other in (("previous", before), ("next", after)):
        if other is None or correction_refusal(other, actor):
            continue
        if correction_blocker(other, settings, now):
            continue
        pair = sorted([trip, other], key=lambda t: t.start_time)
        if merge_problem(pair, settings) is None:
            partners.append((direction, other))
    return partners


@transaction.atomic
def merge_trips(
    trips: Sequence[Trip], *, actor: Any, interface: str = Interface.WEB,
    now: datetime | None = None, reason: str = "",
) -> Trip:
    """Merge consecutive trips of one vehicle (a stop that was no destination) into one.

    The originals stay, with status "merged"; the new trip runs from the first start to
    the last end, odometer included, and lists them in ``corrects``. It keeps their
    classification when they agree; otherwise it waits for its driver, hidden like a
    private trip if any of them was private, so a merge never shows a private route.
    """
    now = now or timezone.now()
    ids = [t.pk for t in trips]
    first_id = ids[0] if ids else 0
    if len(set(ids)) != len(ids):
        raise LogbookError({first_id: {"trips": "Name each trip once."}})
    if len(ids) < 2:
        raise LogbookError({first_id: {"trips": "Name two or more trips to merge."}})
    if len(ids) > MERGE_MAX_TRIPS:
        raise LogbookError({first_id: {"trips": f"At most {MERGE_MAX_TRIPS} trips at once."}})
    if len({t.vehicle_id for t in trips}) != 1:
        raise LogbookError({first_id: {"trips": "The trips belong to different vehicles: "
                                                "only one vehicle's trips are merged."}})
    vehicle_id = trips[0].vehicle_id
    lock_due_trips(now=now, vehicle_ids=[vehicle_id])
    state = lock_chain(vehicle_id)
    trips = sorted(Trip.objects.select_related("driver", "organisation").filter(pk__in=ids),
                   key=lambda t: t.start_time)
    _check_correctable(trips, actor, now)
    first, last = trips[0], trips[-1]
    settings = logbook_settings_for(first.organisation_id)
    between = Trip.objects.filter(
        vehicle_id=vehicle_id, status=TripStatus.ACTIVE,
        start_time__gt=first.start_time, start_time__lt=last.start_time,
    ).exclude(pk__in=ids)
    if between.exists():
        raise LogbookError({first.pk: {"trips": (
            "Only consecutive trips are merged: another trip lies between the trip of "
            f"{_local_text(first.start_time, first)} and the one of "
            f"{_local_text(last.start_time, last)}.")}})
    problem = merge_problem(trips, settings)
    if problem is not None:
        raise LogbookError({first.pk: {"trips": problem}})
    reason = _reason(first.pk, reason, DEFAULT_MERGE_REASON)
    # Revisions name the trips (see cancel_trip for why not the person's reason).
    what = "merge of trips " + ", ".join(str(t.pk) for t in trips)
    for trip in trips:
        change_trip(trip, {"status": TripStatus.MERGED, "status_reason": reason},
                    actor=actor, interface=interface, now=now, state=state, reason=what)
    merged = _copy_base(first)
    merged.end_time = last.end_time
    merged.end_latitude, merged.end_longitude = last.end_latitude, last.end_longitude
    merged.end_address, merged.end_place_id = last.end_address, last.end_place_id
    merged.end_odometer_km = last.end_odometer_km
    merged.distance_m = (last.end_odometer_km - first.start_odometer_km) * 1000.0
    merged.gps_distance_m = sum(t.gps_distance_m for t in trips)
    merged.max_speed_kmh = max(t.max_speed_kmh for t in trips)
    merged.route = [point for t in trips for point in t.route]
    merged.fix_count = sum(t.fix_count for t in trips)
    merged.end_reason = last.end_reason
    merged.decided_at = last.decided_at
    merged.addresses_pending = any(t.addresses_pending for t in (first, last))
    merged.origin = TripOrigin.MERGE
    if len({t.category for t in trips}) == 1:
        merged.category = first.category
        merged.purpose, merged.partner = first.purpose, first.partner
        merged.destination, merged.note = last.destination, first.note
    if not merged.category:
        private = any(t.category == Category.PRIVATE or t.suggested_category
                      == Category.PRIVATE for t in trips)
        merged.suggested_category = Category.PRIVATE if private else first.suggested_category
    return create_trip(merged, corrects=trips, actor=actor, interface=interface, now=now,
                       state=state, reason=what)


# --- split points


@dataclass(frozen=True, slots=True)
class Pause:
    """A standstill within a trip's route: where a destination the parking rule missed
    may be. ``arrival`` and ``departure`` index the route."""

    arrival: int
    departure: int
    arrival_time: datetime
    departure_time: datetime
    latitude: float
    longitude: float

    @property
    def duration_s(self) -> float:
        return (self.departure_time - self.arrival_time).total_seconds()


def _route_times(route: Sequence[Sequence[Any]]) -> list[datetime]:
    return [datetime.fromisoformat(point[0]) for point in route]


def pauses_in(
    route: Sequence[Sequence[Any]], radius_m: float, min_s: float = PAUSE_MIN_S
) -> list[Pause]:
    """Standstills of at least ``min_s`` within ``radius_m`` of where the vehicle came to
    rest, between the route's first and last point. Pure; O(points).

    A rest at the very start or end is the parking the trip left or reached, so it is no
    split point. On a merged trip, the parking between its originals is one.
    """
    times = _route_times(route)
    count = len(route)
    pauses = []
    i = 0
    while i < count - 1:
        lat, lon = route[i][1], route[i][2]
        j = i
        while j + 1 < count and distance_m(lat, lon, route[j + 1][1], route[j + 1][2]) <= radius_m:
            j += 1
        if j > i and (times[j] - times[i]).total_seconds() >= min_s:
            if i > 0 and j < count - 1:
                pauses.append(Pause(i, j, times[i], times[j], lat, lon))
            i = j + 1
        else:
            i += 1
    return pauses


def split_points(trip: Trip, at: datetime | int, radius_m: float) -> tuple[int, int]:
    """Where a split cuts the trip's route: (last point of the first part, first point of
    the second). A time or route point within a pause cuts at the pause, so the first
    part ends on arrival and the second starts on departure; elsewhere both parts share
    the point (the last one at or before a time).

    Raises ``ValueError`` with a message for the person when ``at`` is no point between
    the trip's start and end.
    """
    route = trip.route
    count = len(route)
    times = _route_times(route)
    if count < 3:
        raise ValueError("The trip's route has no position between its start and end to "
                         "split at.")
    pauses = pauses_in(route, radius_m)
    if isinstance(at, datetime):
        if not trip.start_time < at < trip.end_time:
            raise ValueError(
                f"Choose a time between the trip's start ({_local_text(trip.start_time, trip)})"
                f" and end ({_local_text(trip.end_time, trip)}).")
        for pause in pauses:
            if pause.arrival_time <= at <= pause.departure_time:
                return pause.arrival, pause.departure
        index = max((i for i, t in enumerate(times) if t <= at), default=0)
        if index <= 0:
            raise ValueError(
                "No position was recorded between the trip's start "
                f"({_local_text(trip.start_time, trip, '%H:%M:%S')}) and "
                f"{_local_text(at, trip, '%H:%M:%S')}: choose a later time.")
    else:
        index = at
        if not 0 < index < count - 1:
            raise ValueError(f"Choose a point of the trip's route from 1 to {count - 2} (0 is "
                             "its start, the last one its end).")
        for pause in pauses:
            if pause.arrival <= index <= pause.departure:
                return pause.arrival, pause.departure
    if index >= count - 1 or not trip.start_time < times[index] < trip.end_time:
        raise ValueError("Choose a point between the trip's start and end.")
    return index, index


@transaction.atomic
def split_trip(
    trip: Trip, at: datetime | int, *, actor: Any, interface: str = Interface.WEB,
    now: datetime | None = None, reason: str = "",
) -> tuple[Trip, Trip]:
    """Split a trip at a time or route point (a destination the parking rule missed).

    ``split_points`` decides the cut. The odometer there is the start reading plus the
    part of the distance along the route up to the cut, so both parts are continuous
    and add up to the original. The original stays, with status "split"; both parts
    keep its driver and classification, and get the named place at the cut as address.
    """
    now = now or timezone.now()
    lock_due_trips(now=now, vehicle_ids=[trip.vehicle_id])
    state = lock_chain(trip.vehicle_id)
    trip = Trip.objects.select_related("driver", "organisation").get(pk=trip.pk)
    _check_correctable([trip], actor, now)
    settings = logbook_settings_for(trip.organisation_id)
    try:
        end_index, start_index = split_points(trip, at, settings.stop_radius_m)
    except ValueError as error:
        raise LogbookError({trip.pk: {"at": str(error)}}) from error
    reason = _reason(trip.pk, reason, DEFAULT_SPLIT_REASON)
    route = trip.route
    times = _route_times(route)
    legs = [distance_m(a[1], a[2], b[1], b[2]) for a, b in pairwise(route)]
    total = sum(legs)
    share = sum(legs[:end_index]) / total if total > 0 else end_index / (len(route) - 1)
    split_km = trip.start_odometer_km + (trip.end_odometer_km - trip.start_odometer_km) * share
    change_trip(trip, {"status": TripStatus.SPLIT, "status_reason": reason}, actor=actor,
                interface=interface, now=now, state=state, reason=f"split of trip {trip.pk}")
    places = named_places_for(trip.organisation_id)
    geocoder = bool(getattr(django_settings, "GEOCODER_URL", ""))
    arrival, departure = route[end_index], route[start_index]
    first = _copy_base(trip)
    first.end_time = times[end_index]
    first.end_latitude, first.end_longitude = arrival[1], arrival[2]
    place = match_place(places, arrival[1], arrival[2], trip.driver_id)
    first.end_place = place
    first.end_address = place.label[:300] if place is not None else ""
    first.end_odometer_km = split_km
    first.distance_m = (split_km - trip.start_odometer_km) * 1000.0
    first.gps_distance_m = trip.gps_distance_m * share
    first.route = route[: end_index + 1]
    first.fix_count = math.floor(trip.fix_count * share)
    first.end_reason = "split"
    first.decided_at = times[end_index]
    second = _copy_base(trip)
    second.start_time = times[start_index]
    second.start_latitude, second.start_longitude = departure[1], departure[2]
    place = match_place(places, departure[1], departure[2], trip.driver_id)
    second.start_place = place
    second.start_address = place.label[:300] if place is not None else ""
    second.start_odometer_km = split_km
    second.distance_m = (trip.end_odometer_km - split_km) * 1000.0
    second.gps_distance_m = trip.gps_distance_m - first.gps_distance_m
    second.route = route[start_index:]
    second.fix_count = trip.fix_count - first.fix_count
    for part in (first, second):
        part.origin = TripOrigin.SPLIT
        part.category, part.purpose, part.partner = trip.category, trip.purpose, trip.partner
        part.destination, part.note = trip.destination, trip.note
        part.addresses_pending = geocoder and not (part.start_address and part.end_address)
        create_trip(part, corrects=[trip], actor=actor, interface=interface, now=now,
                    state=state, reason=f"part of split trip {trip.pk}")
    return first, second


# --------------------------------------------------------------------------- odometer gaps


def explain_gap(gap: OdometerGap, note: str, *, actor: Any, now: datetime | None = None) -> None:
    """A fleet manager explains an odometer gap (workshop test drive, unit unplugged...)."""
    acting = actor_of(actor)
    if acting.organisation_id != gap.organisation_id or acting.role != Role.ADMIN:
        raise PermissionDenied("Only the organisation's fleet manager explains odometer gaps.")
    if not note.strip():
        raise ValidationError("Say what happened.")
    gap.note = note.strip()[:300]
    gap.noted_by = who(actor).name
    gap.noted_at = now or timezone.now()
    gap.status = GapStatus.EXPLAINED
    gap.save(update_fields=["note", "noted_by", "noted_at", "status"])


def named_places_for(organisation_id: int) -> list[NamedPlace]:
    return list(NamedPlace.objects.filter(organisation_id=organisation_id))
