"""Trips from stored positions into the logbook: live, after a late fix, and for history.

One code path. ``Derivation`` feeds one vehicle's fixes into its
``logbook.tripstate.TripStateMachine`` and writes what comes out (trips, odometer
gaps, checkpoints); the live tracker, a late-fix replay and ``rebuild_trips`` differ
only in where the fixes come from and where the machine starts:

- **Live** (``derive_new_fixes``): the machine saved in ``VehicleTripState`` takes the
  positions of a committed ingest batch.
- **Late fix** or **history** (``replay``): the machine restarts from the checkpoint
  saved at the last trip end before the earliest late fix (or from nothing) and takes
  the stored positions from there, in (fix time, id) order.

Decisions depend on fix times only, never on the clock, except one: a vehicle silent
for ``close_after_s`` has its trip closed (``TripStateMachine.finish``) at *last fix +
close_after_s*. A replay does the same at the same moment (before the next fix that
comes later than that, or at the end of the data once the clock has passed it), so
live derivation and a rebuild give the same trips.

Re-derivation keeps the logbook stable. A re-derived trip whose base data (times,
positions, odometer, distance, route) is that of a stored trip *is* that trip: it
keeps its id, classification and revisions. A stored trip that the positions no
longer give is never deleted: it becomes "superseded" (a revision says why) and the
trip that replaces it lists it in ``corrects`` and takes over its classification.
Trips a person merged or split stay as the person left them.

Trip events
-----------
Live derivation tells the fleet what happens now: it writes an ``Event`` of type
``trip_started`` when a trip is confirmed and ``trip_ended`` when a new trip is written,
in the transaction that writes the trip (webhooks, e-mails and the live feed read them
from there). A history replay (``rebuild_trips``, ``import_track``) announces nothing:
it re-derives trips that were announced long ago or never happened "now", and a rebuild
of a year would send a year of webhooks. Within live derivation, a re-derivation after a
late fix announces only what is new (a trip that did not exist before, a start not
announced yet), and the first derivation of a vehicle with stored history announces
only what the newly arrived positions decided. Every trip event carries ``trip_id`` (the
logbook's privacy rules key on it): a trip row is written when the trip ends, so a
``trip_started`` event has ``trip_id`` null until then and gets it in the transaction
that writes the trip.

At fleet scale
--------------
``LiveFleet`` is live derivation for thousands of vehicles at once: machines stay in
memory between batches, fixes that decide nothing only move a machine in memory, and the
database is written when something is decided (in one transaction for every vehicle of
a batch that decided something) and otherwise every ``flush_s`` per vehicle, in one bulk
UPDATE. Positions are stored before they reach it, so a machine in memory is never the
only record of anything: whatever it has not written yet is derived again from the
stored positions after a crash or when the tracker drops work it cannot keep up with.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from functools import reduce
from operator import itemgetter, or_
from typing import Any

from django.conf import settings as django_settings
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    transaction,
)
from django.db.models import Q
from django.utils import timezone

from fleet.models import Vehicle
from logbook import chain
from logbook.geocoding import match_place
from logbook.models import (
    DriverSession,
    DriverSource,
    GapStatus,
    Interface,
    LogbookSettings,
    NamedPlace,
    OdometerGap,
    Trip,
    TripCheckpoint,
    TripOrigin,
    TripStatus,
    VehicleTripState,
)
from logbook.services import (
    change_trip,
    create_trip,
    driver_for_trip,
    lock_chain,
    logbook_settings_for,
    suggest_category,
)
from logbook.tripstate import (
    OdometerGap as GapEvent,
)
from logbook.tripstate import (
    Trip as DerivedTrip,
)
from logbook.tripstate import (
    TripEnded,
    TripEvent,
    TripStarted,
    TripStateMachine,
)
from telematics.models import Event, Position, SignalSample
from telematics.protocols.base import Fix

logger = logging.getLogger(__name__)

CHUNK = 20_000
_NO_ATTRIBUTES: dict[str, Any] = {}
_POSITION_FIELDS = ("fix_time", "id", "latitude", "longitude", "speed_kmh", "valid", "ignition",
                    "odometer_km", "attributes__driver_key")
SUPERSEDED_REASON = "re-derived from corrected positions"
# A position as live derivation reads it: what the machine needs, then which stored row
# it is (device and fix time) and when it was stored (a resend keeps the first time).
_ROW_FIELDS = ("fix_time", "latitude", "longitude", "speed_kmh", "valid", "ignition",
               "odometer_km", "attributes__driver_key", "device_id", "server_time")


# --------------------------------------------------------------------------- fixes


class OdometerReader:
    """The logbook odometer of each fix: the CAN odometer when the vehicle has one.

    A vehicle with CAN odometer samples (signal "odometer") reads the latest sample at
    or before the fix, if it is at most ``can_odometer_max_age_s`` old (else None: the
    machine keeps the last reading); other vehicles read the unit's odometer on the
    position. Both get ``vehicle.odometer_offset_km`` added. Vehicles with neither get
    None and the machine's GPS odometer, seeded with the offset.
    """

    def __init__(self, vehicle: Vehicle, max_age_s: float):
        self.vehicle_id = vehicle.pk
        self.offset = vehicle.odometer_offset_km or 0.0
        self.max_age = timedelta(seconds=max_age_s)
        self.has_can = SignalSample.objects.filter(
            vehicle_id=vehicle.pk, signal="odometer").exists()
        self._times: list[datetime] = []
        self._values: list[float] = []

    def load(self, start: datetime, end: datetime) -> None:
        """Read the samples the fixes in [start, end] need."""
        if not self.has_can:
            return
        rows = SignalSample.objects.filter(
            vehicle_id=self.vehicle_id, signal="odometer",
            time__gte=start - self.max_age, time__lte=end,
        ).order_by("time").values_list("time", "value")
        self._times = [t for t, _ in rows]
        self._values = [v for _, v in rows]

    def reading(self, when: datetime, unit_km: float | None) -> float | None:
        if self.has_can:
            i = bisect_right(self._times, when) - 1
            if i >= 0 and when - self._times[i] <= self.max_age:
                return self._values[i] + self.offset
            return None
        return None if unit_km is None else unit_km + self.offset


def make_fix(
    fix_time: datetime, latitude: float, longitude: float, speed_kmh: float | None,
    valid: bool, ignition: bool | None, odometer_km: float | None, driver_key: Any,
) -> Fix:
    """The fix the machine gets: only what it reads, the same from any source.

    Numbers are floats, as the database returns them: a unit reporting whole km/h
    (Teltonika) must give the same trip live as a rebuild does (``base_hash``).
    """
    return Fix(
        fix_time=fix_time, latitude=float(latitude), longitude=float(longitude),
        speed_kmh=None if speed_kmh is None else float(speed_kmh),
        valid=valid, ignition=ignition,
        odometer_km=None if odometer_km is None else float(odometer_km),
        attributes=_NO_ATTRIBUTES if driver_key is None else {"driver_key": str(driver_key)},
    )


def stored_fixes(
    vehicle_id: int, after: datetime | None, odometer: OdometerReader, *,
    until: datetime | None = None, chunk: int = CHUNK,
) -> Iterator[Fix]:
    """The vehicle's stored positions after ``after``, as fixes in (fix time, id) order."""
    base = Position.objects.filter(vehicle_id=vehicle_id)
    if after is not None:
        base = base.filter(fix_time__gt=after)
    if until is not None:
        base = base.filter(fix_time__lte=until)
    base = base.order_by("fix_time", "id")
    cursor: tuple[datetime, int] | None = None
    while True:
        rows = base
        if cursor is not None:
            rows = rows.filter(Q(fix_time__gt=cursor[0]) | Q(fix_time=cursor[0], id__gt=cursor[1]))
        rows = list(rows.values_list(*_POSITION_FIELDS)[:chunk])
        if not rows:
            return
        odometer.load(rows[0][0], rows[-1][0])
        reading = odometer.reading
        for t, _, lat, lon, kmh, valid, ign, odo, key in rows:
            yield make_fix(t, lat, lon, kmh, valid, ign, reading(t, odo), key)
        if len(rows) < chunk:
            return
        cursor = (rows[-1][0], rows[-1][1])


# --------------------------------------------------------------------------- derivation


@dataclass(slots=True)
class Outcome:
    created: int = 0
    kept: int = 0
    superseded: int = 0
    gaps: int = 0
    fixes: int = 0
    announced: int = 0
    converged: bool = False
    mode: str = ""


def _machine(data: dict | None, settings: LogbookSettings, offset_km: float | None
             ) -> TripStateMachine:
    """A machine from a checkpoint (with the organisation's current thresholds) or new,
    seeded with the vehicle's odometer offset."""
    trip_settings = settings.trip_settings()
    if data is None:
        return TripStateMachine(trip_settings, odometer_km=offset_km or 0.0)
    return TripStateMachine.from_dict({**data, "settings": asdict(trip_settings)})


def _jsonable(data: dict) -> dict:
    return json.loads(json.dumps(data))


@dataclass(slots=True)
class Decided:
    """What one step of a live machine decided, kept until it is written.

    ``LiveFleet`` feeds machines outside any transaction and writes what they decided
    afterwards, so it keeps, with the events, what ``Derivation`` would otherwise read
    off the machine at that moment: its time, the last real fix, its state after a trip
    end (the checkpoint), and whether the events are announced (see the module doc).
    """

    events: list[TripEvent]
    machine_time: datetime
    last_fix: datetime | None
    checkpoint: dict | None
    announce: bool


class Derivation:
    """Feeds one vehicle's fixes to its machine and writes the logbook; see the module doc.

    ``since``: the machine's time at the start; stored trips and gaps decided after it
    are the ones this derivation re-derives. ``converge_after``: once a trip ends after
    this time in exactly the state the stored checkpoint there holds, everything after
    is already stored and ``feed`` returns False.
    """

    def __init__(
        self,
        vehicle: Vehicle,
        state: VehicleTripState,
        machine: TripStateMachine,
        *,
        last_fix: datetime | None,
        since: datetime | None,
        settings: LogbookSettings,
        interface: str,
        now: datetime,
        converge_after: datetime | None = None,
        live: bool = False,
        announce_from: datetime | None = None,
        places: list[NamedPlace] | None = None,
        deferred: bool = False,
        drivers: Callable[[Vehicle, datetime, Iterable[str]], tuple[Any, str]] | None = None,
    ):
        self.vehicle = vehicle
        self.live = live
        # Trip events are written for what is decided at or after this fix time; None:
        # nothing is announced (a history replay).
        self.announce_from = announce_from
        # Trip events to write (at ``finish``, or by the caller when ``deferred``: then
        # the caller also saves the state row, and every start it announces is new).
        self.events: list[Event] = []
        self.deferred = deferred
        self._driver_for = drivers or driver_for_trip  # who drove (services' rule)
        self.state = state
        self.machine = machine
        self.last_fix = last_fix
        self.closed = (
            last_fix is not None and machine.last_fix_time is not None
            and machine.last_fix_time > last_fix
        )
        self.since = since
        self.settings = settings
        self.interface = interface
        self.now = now
        self.converge_after = converge_after
        self.close_after = timedelta(seconds=settings.close_after_s)
        self.driving_since = machine.driving_since
        self.outcome = Outcome()
        self._trips: list[Trip] | None = None  # stored trips still to be matched
        self._gaps: list[OdometerGap] | None = None
        self._retired: list[Trip] = []
        self._checkpoints: set[datetime] = set()
        self._places = places  # the organisation's named places (read when first needed)

    # ---------------------------------------------------------------- feeding

    def feed(self, fix: Fix) -> bool:
        """Take the next fix; False once converged (stop feeding)."""
        self.outcome.fixes += 1
        if (
            self.last_fix is not None and not self.closed
            and fix.fix_time - self.last_fix >= self.close_after
            and not self._close()
        ):
            return False
        events = self.machine.feed(fix)
        self.last_fix = fix.fix_time
        self.closed = False
        return self._handle(events) if events else True

    def close_if_silent(self, now: datetime) -> bool:
        """Close the trip of a vehicle silent for ``close_after_s`` (by ``now``)."""
        last = self.last_fix
        if last is not None and not self.closed and now - last >= self.close_after:
            return self._close()
        return True

    def _close(self) -> bool:
        self.closed = True
        events = self.machine.finish(self.last_fix + self.close_after)
        return self._handle(events) if events else True

    def apply(self, decided: Decided) -> None:
        """Write what a live machine decided earlier (``LiveFleet``): the same writes
        ``feed`` makes, with the machine's state as it was at that moment."""
        self._handle(decided.events, decided)

    def _handle(self, events: list[TripEvent], decided: Decided | None = None) -> bool:
        at = decided.machine_time if decided is not None else self.machine.last_fix_time
        announce = (decided.announce if decided is not None else
                    self.announce_from is not None and at >= self.announce_from)
        ended = False
        for event in events:
            if isinstance(event, TripStarted):
                self.driving_since = event.trip.start_time
                if announce:
                    self._announce_start(event.trip)
            elif isinstance(event, TripEnded):
                self._record_trip(event.trip, announce)
                self.driving_since = None
                ended = True
            elif isinstance(event, GapEvent) and event.from_time is not None:
                # A gap from the seed (from_time None) is where the logbook begins.
                self._record_gap(event, at)
        if not ended:
            return True
        if decided is not None:
            return self._checkpoint(at, decided.last_fix, decided.checkpoint)
        return self._checkpoint(at, self.last_fix, _jsonable(self.machine.to_dict()))

    def _checkpoint(self, at: datetime, last_fix: datetime | None, data: dict) -> bool:
        stored = TripCheckpoint.objects.filter(vehicle_id=self.vehicle.pk, time=at).first()
        self._checkpoints.add(at)
        if stored is not None and stored.machine == data and stored.last_fix_time == last_fix:
            if self.converge_after is not None and at > self.converge_after:
                self.outcome.converged = True
                return False
            return True
        if stored is None:
            TripCheckpoint.objects.create(vehicle_id=self.vehicle.pk, time=at,
                                          last_fix_time=last_fix, machine=data)
        else:
            stored.machine = data
            stored.last_fix_time = last_fix
            stored.save(update_fields=["machine", "last_fix_time"])
        return True

    # ---------------------------------------------------------------- trips

    def _stored_trips(self) -> list[Trip]:
        if self._trips is None:
            trips = Trip.objects.filter(vehicle_id=self.vehicle.pk, origin=TripOrigin.DERIVED)
            trips = trips.exclude(status=TripStatus.SUPERSEDED)
            if self.since is not None:
                trips = trips.filter(decided_at__gt=self.since)
            self._trips = list(trips.defer("route").order_by("start_time", "id"))
        return self._trips

    def _record_trip(self, derived: DerivedTrip, announce: bool = False) -> None:
        trip = self._new_trip(derived)
        base = chain.base_hash(trip)
        pending = self._stored_trips()
        matched = None
        orphans = []
        while pending and pending[0].start_time <= trip.start_time:
            stored = pending.pop(0)
            same = stored.start_time == trip.start_time and stored.base_hash == base
            if matched is None and same:
                matched = stored
            else:
                orphans.append(stored)
        if matched is None:
            while pending and pending[0].start_time < trip.end_time:
                orphans.append(pending.pop(0))
        self._retire(orphans)
        if matched is not None:
            self.outcome.kept += 1
            if matched.decided_at != trip.decided_at:
                Trip.objects.filter(pk=matched.pk).update(decided_at=trip.decided_at)
            return
        if Trip.objects.filter(
            vehicle_id=self.vehicle.pk, status=TripStatus.ACTIVE,
            origin__in=[TripOrigin.MERGE, TripOrigin.SPLIT],
            start_time__lt=trip.end_time, end_time__gt=trip.start_time,
        ).exists():
            logger.info("Re-derived trip of vehicle %s at %s overlaps a manual correction; kept "
                        "the correction", self.vehicle.pk, trip.start_time)
            return
        self._complete(trip, derived)
        corrects = [t for t in self._retired
                    if t.start_time < trip.end_time and t.end_time > trip.start_time]
        create_trip(trip, corrects=corrects, interface=self.interface, now=self.now,
                    state=self.state,
                    reason="re-derived" if corrects else "")
        self.outcome.created += 1
        self._link_start(trip, corrects)
        if announce:
            self._announce_end(trip, corrects)
        classified = [t for t in corrects if t.category]
        if classified:
            best = max(classified, key=lambda t: _overlap(t, trip))
            change_trip(trip, {f: getattr(best, f) for f in
                               ("category", "purpose", "partner", "destination", "note")},
                        interface=self.interface, now=self.now, state=self.state,
                        reason=f"carried over from trip {best.pk}")

    def _retire(self, trips: Iterable[Trip]) -> None:
        for trip in trips:
            if trip.status == TripStatus.ACTIVE:
                trip = Trip.objects.get(pk=trip.pk)
                change_trip(trip, {"status": TripStatus.SUPERSEDED,
                                   "status_reason": SUPERSEDED_REASON},
                            interface=self.interface, now=self.now, state=self.state)
                self._retired.append(trip)
                self.outcome.superseded += 1

    def _new_trip(self, t: DerivedTrip) -> Trip:
        vehicle = self.vehicle
        return Trip(
            organisation_id=vehicle.organisation_id, vehicle_id=vehicle.pk,
            start_time=t.start_time, end_time=t.end_time,
            start_latitude=t.start_lat, start_longitude=t.start_lon,
            end_latitude=t.end_lat, end_longitude=t.end_lon,
            start_odometer_km=t.start_odometer_km, end_odometer_km=t.end_odometer_km,
            distance_m=t.distance_m, gps_distance_m=t.gps_distance_m,
            odometer_source=t.odometer_source, max_speed_kmh=t.max_speed_kmh,
            route=[[chain.json_value(when), lat, lon] for when, lat, lon in t.route],
            fix_count=t.fix_count, end_reason=t.end_reason, decided_at=t.last_fix_time,
        )

    def _complete(self, trip: Trip, derived: DerivedTrip) -> None:
        """Driver, named places (offline addresses) and the suggested category."""
        driver, source = self._driver_for(self.vehicle, trip.start_time, derived.driver_keys)
        trip.driver = driver
        trip.driver_source = source
        places = self._named_places()
        driver_id = driver.pk if driver is not None else None
        start = match_place(places, trip.start_latitude, trip.start_longitude, driver_id)
        end = match_place(places, trip.end_latitude, trip.end_longitude, driver_id)
        trip.start_place, trip.end_place = start, end
        trip.start_address = start.label[:300] if start else ""
        trip.end_address = end.label[:300] if end else ""
        trip.addresses_pending = (start is None or end is None) and bool(
            getattr(django_settings, "GEOCODER_URL", ""))
        trip.organisation = self.vehicle.organisation
        trip.suggested_category = suggest_category(trip, self.settings).category

    def _named_places(self) -> list[NamedPlace]:
        if self._places is None:
            self._places = list(NamedPlace.objects.filter(
                organisation_id=self.vehicle.organisation_id))
        return self._places

    # ---------------------------------------------------------------- trip events

    def _announce_start(self, derived: DerivedTrip) -> None:
        """A ``trip_started`` event, unless this start was announced already (a late
        fix replays the trip in progress)."""
        vehicle = self.vehicle
        if not self.deferred and (
            any(e.type == TRIP_STARTED and e.time == derived.start_time for e in self.events)
            or Event.objects.filter(vehicle_id=vehicle.pk, type=TRIP_STARTED,
                                    time=derived.start_time).exists()
        ):
            return
        driver, _ = self._driver_for(vehicle, derived.start_time, derived.driver_keys)
        place = match_place(self._named_places(), derived.start_lat, derived.start_lon,
                            driver.pk if driver is not None else None)
        self.events.append(Event(
            organisation_id=vehicle.organisation_id, vehicle_id=vehicle.pk,
            type=TRIP_STARTED, time=derived.start_time,
            attributes=started_attributes(derived, driver, place.label[:300] if place else ""),
        ))
        self.outcome.announced += 1

    def _announce_end(self, trip: Trip, corrects: list[Trip]) -> None:
        self.events.append(Event(
            organisation_id=trip.organisation_id, vehicle_id=trip.vehicle_id,
            type=TRIP_ENDED, time=trip.end_time,
            attributes=ended_attributes(trip, [t.pk for t in corrects]),
        ))
        self.outcome.announced += 1

    def _link_start(self, trip: Trip, corrects: list[Trip]) -> None:
        """Give the ``trip_started`` event of this trip its ``trip_id``, now that the
        trip row exists (privacy rules key events on it), or the id of the trip that
        replaces the one it named."""
        replaced = {t.pk for t in corrects}
        pending = [e for e in self.events
                   if e.type == TRIP_STARTED and e.time == trip.start_time]
        stored = [] if pending else list(Event.objects.filter(
            vehicle_id=trip.vehicle_id, type=TRIP_STARTED, time=trip.start_time))
        for started in pending + stored:
            attributes = started.attributes if isinstance(started.attributes, dict) else {}
            if attributes.get("trip_id") is None or attributes.get("trip_id") in replaced:
                started.attributes = {**attributes, "trip_id": trip.pk}
                if started.pk is not None:
                    started.save(update_fields=["attributes"])

    # ---------------------------------------------------------------- gaps

    def _stored_gaps(self) -> list[OdometerGap]:
        if self._gaps is None:
            gaps = OdometerGap.objects.filter(vehicle_id=self.vehicle.pk).exclude(
                status=GapStatus.OBSOLETE)
            if self.since is not None:
                gaps = gaps.filter(decided_at__gt=self.since)
            self._gaps = list(gaps.order_by("to_time", "id"))
        return self._gaps

    def _record_gap(self, event: GapEvent, at: datetime) -> None:
        pending = self._stored_gaps()
        while pending and pending[0].to_time <= event.to_time:
            stored = pending.pop(0)
            if (stored.to_time, stored.from_time, stored.from_km, stored.to_km) == (
                event.to_time, event.from_time, event.from_km, event.to_km
            ):
                return
            self._obsolete(stored)
        OdometerGap.objects.create(
            organisation_id=self.vehicle.organisation_id, vehicle_id=self.vehicle.pk,
            from_time=event.from_time, from_latitude=event.from_lat,
            from_longitude=event.from_lon, from_km=event.from_km, to_time=event.to_time,
            to_latitude=event.to_lat, to_longitude=event.to_lon, to_km=event.to_km,
            source=event.source, decided_at=at,
        )
        self.outcome.gaps += 1

    @staticmethod
    def _obsolete(gap: OdometerGap) -> None:
        OdometerGap.objects.filter(pk=gap.pk).update(status=GapStatus.OBSOLETE)

    # ---------------------------------------------------------------- the end

    def finish(self) -> Outcome:
        """Retire what was not re-derived, drop stale checkpoints, save the live state.

        Live feeding (``since`` is the live machine's time) has nothing stored after it
        to reconcile unless a trip ended, so it skips the queries for leftovers.
        """
        vehicle_id = self.vehicle.pk
        if self.events and not self.deferred:
            Event.objects.bulk_create(self.events)
            self.events = []
        if self.outcome.converged:
            stop = self.machine.last_fix_time
            self._retire([t for t in self._stored_trips() if t.decided_at <= stop])
            for gap in self._stored_gaps():
                if gap.decided_at <= stop:
                    self._obsolete(gap)
            stale = TripCheckpoint.objects.filter(vehicle_id=vehicle_id, time__lte=stop)
        else:
            if not self.live or self._trips is not None:
                self._retire(self._stored_trips())
            if not self.live or self._gaps is not None:
                for gap in self._stored_gaps():
                    self._obsolete(gap)
            stale = TripCheckpoint.objects.filter(vehicle_id=vehicle_id)
            if not self.deferred:
                state = self.state
                state.machine = _jsonable(self.machine.to_dict())
                state.last_fix_time = self.last_fix
                state.closed = self.closed
                state.driving_since = self.driving_since
                state.save(update_fields=["machine", "last_fix_time", "closed",
                                          "driving_since", "updated"])
        if self.live and not self._checkpoints:
            return self.outcome
        if self.since is not None:
            stale = stale.filter(time__gt=self.since)
        stale.exclude(time__in=self._checkpoints).delete()
        return self.outcome


def _overlap(a: Trip, b: Trip) -> float:
    return (min(a.end_time, b.end_time) - max(a.start_time, b.start_time)).total_seconds()


# --------------------------------------------------------------------------- trip events

TRIP_STARTED = "trip_started"
TRIP_ENDED = "trip_ended"


def _driver_attributes(driver: Any) -> dict[str, Any]:
    return {"driver_id": driver.pk if driver is not None else None,
            "driver_name": driver.name if driver is not None else ""}


def started_attributes(trip: DerivedTrip, driver: Any, address: str) -> dict[str, Any]:
    """A ``trip_started`` event's attributes: what is known when the trip is confirmed.

    ``trip_id`` is null until the trip is written at its end; the address is a named
    place's, or empty (the geocoder fills in the trip's, not the event's).
    """
    return {
        "trip_id": None,
        "start_time": trip.start_time.isoformat(),
        "start_latitude": trip.start_lat,
        "start_longitude": trip.start_lon,
        "start_address": address,
        "start_odometer_km": round(trip.start_odometer_km, 3),
        **_driver_attributes(driver),
    }


def ended_attributes(trip: Trip, corrects: list[int]) -> dict[str, Any]:
    """A ``trip_ended`` event's attributes: the logbook entry as written.

    ``corrects`` lists the trips this one replaces (a late fix re-derived them).
    """
    attributes = {
        "trip_id": trip.pk,
        "start_time": trip.start_time.isoformat(),
        "end_time": trip.end_time.isoformat(),
        "start_latitude": trip.start_latitude,
        "start_longitude": trip.start_longitude,
        "end_latitude": trip.end_latitude,
        "end_longitude": trip.end_longitude,
        "start_address": trip.start_address,
        "end_address": trip.end_address,
        "start_odometer_km": round(trip.start_odometer_km, 3),
        "end_odometer_km": round(trip.end_odometer_km, 3),
        "distance_m": round(trip.distance_m, 1),
        "duration_s": trip.duration_s,
        "max_speed_kmh": round(trip.max_speed_kmh, 1),
        "average_speed_kmh": round(trip.average_speed_kmh, 1),
        "end_reason": trip.end_reason,
        **_driver_attributes(trip.driver),
    }
    if corrects:
        attributes["corrects"] = corrects
    return attributes


# --------------------------------------------------------------------------- entry points


def replay(
    vehicle: Vehicle,
    *,
    since: datetime | None = None,
    converge_after: datetime | None = None,
    interface: str = Interface.REBUILD,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    close: bool = True,
    announce_from: datetime | None = None,
) -> Outcome:
    """Re-derive a vehicle's trips from the last trip end before ``since`` (None: all).

    Runs on until the re-derived state meets the stored one after ``converge_after``
    (then the rest is already right), or to the newest position. With ``close``, a trip
    still open at the end is closed if the vehicle has been silent for
    ``close_after_s`` by ``now`` (a history); the live tracker leaves that to its
    housekeeping, since more of a backlog may be on its way.

    Announces nothing (history) unless live derivation passes ``announce_from``: then
    new trips and starts decided at or after that fix time get their trip events.
    """
    now = now or timezone.now()
    with transaction.atomic():
        state = lock_chain(vehicle.pk)
        settings = logbook_settings_for(vehicle.organisation_id)
        checkpoint = None
        if since is not None:
            checkpoint = (TripCheckpoint.objects.filter(vehicle_id=vehicle.pk, time__lt=since)
                          .order_by("-time").first())
        machine = _machine(checkpoint.machine if checkpoint else None, settings,
                           vehicle.odometer_offset_km)
        start = checkpoint.time if checkpoint else None
        derivation = Derivation(
            vehicle, state, machine, last_fix=checkpoint.last_fix_time if checkpoint else None,
            since=start, settings=settings, interface=interface, now=now,
            converge_after=converge_after, announce_from=announce_from,
        )
        derivation.outcome.mode = "replay"
        odometer = OdometerReader(vehicle, settings.can_odometer_max_age_s)
        count = 0
        for fix in stored_fixes(vehicle.pk, start, odometer):
            if not derivation.feed(fix):
                break
            count += 1
            if progress is not None and count % 10_000 == 0:
                progress(10_000)
        else:
            if close:
                derivation.close_if_silent(now)
        if progress is not None:
            progress(count % 10_000)
        return derivation.finish()


@dataclass(slots=True)
class NewFix:
    """A position the ingest pipeline just committed, as the tracker receives it."""

    device_id: int
    server_time: datetime
    fix: Fix


def derive_new_fixes(
    vehicle: Vehicle, rows: list[NewFix], *, now: datetime | None = None,
    interface: str = Interface.DERIVATION,
) -> Outcome:
    """Feed a vehicle's newly stored positions to its live machine.

    Positions older than the machine's time are late: a resend of stored ones is
    ignored; a really new one replays from the trip boundary before it. The caller
    holds no lock; this takes the vehicle's. Trip events are written for what these
    positions decide (see the module doc): the first derivation of a vehicle replays
    its stored history silently up to the earliest of them.
    """
    now = now or timezone.now()
    rows = sorted(rows, key=lambda r: r.fix.fix_time)
    with transaction.atomic():
        state = lock_chain(vehicle.pk)
        if state.machine is None:
            outcome = replay(vehicle, interface=interface, now=now, close=False,
                             announce_from=rows[0].fix.fix_time if rows else None)
            outcome.mode = "initial"
            return outcome
        settings = logbook_settings_for(vehicle.organisation_id)
        machine = _machine(state.machine, settings, vehicle.odometer_offset_km)
        latest = machine.last_fix_time
        if latest is not None:
            rows = _drop_resends(rows, latest)
        if not rows:
            return Outcome(mode="none")
        first = rows[0].fix.fix_time
        if latest is not None and first < latest:
            outcome = replay(vehicle, since=first, converge_after=rows[-1].fix.fix_time,
                             interface=interface, now=now, close=False, announce_from=first)
            outcome.mode = "late"
            return outcome
        derivation = Derivation(
            vehicle, state, machine, last_fix=state.last_fix_time, since=latest,
            settings=settings, interface=interface, now=now, live=True, announce_from=first,
        )
        derivation.outcome.mode = "live"
        odometer = OdometerReader(vehicle, settings.can_odometer_max_age_s)
        odometer.load(rows[0].fix.fix_time, rows[-1].fix.fix_time)
        for row in rows:
            f = row.fix
            derivation.feed(make_fix(
                f.fix_time, f.latitude, f.longitude, f.speed_kmh, f.valid, f.ignition,
                odometer.reading(f.fix_time, f.odometer_km), f.attributes.get("driver_key"),
            ))
        return derivation.finish()


def _drop_resends(rows: list[NewFix], latest: datetime) -> list[NewFix]:
    """Drop positions at or before ``latest`` that the database already had (resends).

    A resend is stored as nothing (conflict ignored), so its stored row keeps the
    server time of the first delivery.
    """
    old = [r for r in rows if r.fix.fix_time <= latest]
    if not old:
        return rows
    query = Q()
    for r in old:
        query |= Q(device_id=r.device_id, fix_time=r.fix.fix_time)
    stored = {
        (device_id, fix_time): server_time
        for device_id, fix_time, server_time in Position.objects.filter(query).values_list(
            "device_id", "fix_time", "server_time")
    }
    return [r for r in rows if r.fix.fix_time > latest
            or stored.get((r.device_id, r.fix.fix_time)) == r.server_time]


def close_silent_vehicles(
    now: datetime | None = None, *, grace_s: float = 120.0, skip: Collection[int] = (),
) -> int:
    """Close the trips of vehicles silent for their ``close_after_s``; returns how many.

    Silent means by fix time (last fix + ``close_after_s`` <= ``now``) and, so that a
    unit uploading a backlog in several batches is not closed between two of them, no
    positions derived for ``grace_s`` of wall-clock time. ``skip``: vehicles whose live
    machine is in a ``LiveFleet``'s memory (it closes those itself). A trip closed here
    is announced (``trip_ended``).
    """
    now = now or timezone.now()
    quiet_since = timezone.now() - timedelta(seconds=grace_s)
    candidates = VehicleTripState.objects.filter(
        closed=False, machine__isnull=False, last_fix_time__lte=now - timedelta(seconds=60),
        updated__lte=quiet_since,
    ).values_list("vehicle_id", flat=True)
    closed = 0
    for vehicle_id in [v for v in candidates if v not in skip]:
        vehicle = Vehicle.objects.select_related("organisation").get(pk=vehicle_id)
        settings = logbook_settings_for(vehicle.organisation_id)
        with transaction.atomic():
            state = lock_chain(vehicle_id)
            if state.closed or state.machine is None or state.last_fix_time is None:
                continue
            if now - state.last_fix_time < timedelta(seconds=settings.close_after_s):
                continue
            machine = _machine(state.machine, settings, vehicle.odometer_offset_km)
            derivation = Derivation(
                vehicle, state, machine, last_fix=state.last_fix_time,
                since=machine.last_fix_time, settings=settings,
                interface=Interface.DERIVATION, now=now, live=True,
                announce_from=state.last_fix_time,
            )
            derivation.close_if_silent(now)
            derivation.finish()
            closed += 1
    return closed


def _stored_after(vehicle_id: int, after: datetime | None) -> list[NewFix]:
    """The vehicle's stored positions after ``after``, in (fix time, id) order."""
    query = Position.objects.filter(vehicle_id=vehicle_id)
    if after is not None:
        query = query.filter(fix_time__gt=after)
    return [
        NewFix(device_id, server_time, Fix(fix_time=t, latitude=lat, longitude=lon,
                                           speed_kmh=kmh, valid=valid, ignition=ign,
                                           odometer_km=odo,
                                           attributes={} if key is None else {"driver_key": key}))
        for t, lat, lon, kmh, valid, ign, odo, key, device_id, server_time in query
        .order_by("fix_time", "id").values_list(*_ROW_FIELDS)
    ]


def _saved_time(state: VehicleTripState) -> datetime | None:
    """Every stored position up to this was fed to the saved machine."""
    saved = state.machine.get("last_time") if isinstance(state.machine, dict) else None
    times = [t for t in (state.last_fix_time, saved and datetime.fromisoformat(saved)) if t]
    return max(times) if times else None


def derive_with_catch_up(
    vehicle: Vehicle, rows: list[NewFix], *, now: datetime | None = None,
    interface: str = Interface.DERIVATION,
) -> Outcome:
    """``derive_new_fixes`` for a vehicle whose saved machine may lag its positions.

    ``LiveFleet`` saves a machine only now and then, and drops work it cannot keep up
    with, so the saved machine may not have seen every stored position. This feeds it
    everything stored after it, and of ``rows`` only those at or before it (a late fix:
    the newer ones are among the stored). Without a saved machine, this is the
    vehicle's first derivation.
    """
    now = now or timezone.now()
    with transaction.atomic():
        state = lock_chain(vehicle.pk)
        if state.machine is None:
            return derive_new_fixes(vehicle, rows, now=now, interface=interface)
        after = _saved_time(state)
        merged = [r for r in rows if after is not None and r.fix.fix_time <= after]
        merged += _stored_after(vehicle.pk, after)
        if not merged:
            return Outcome(mode="none")
        return derive_new_fixes(vehicle, merged, now=now, interface=interface)


def catch_up(vehicle: Vehicle, *, now: datetime | None = None) -> Outcome:
    """Feed positions stored while no tracker ran (newer than the live machine)."""
    state = VehicleTripState.objects.filter(vehicle_id=vehicle.pk).first()
    if state is None or state.machine is None or state.last_fix_time is None:
        return Outcome(mode="none")
    return derive_with_catch_up(vehicle, [], now=now)


# --------------------------------------------------------------------------- live, at fleet scale

# (fix time, lat, lon, km/h, valid, ignition, unit odometer, driver key, device, stored at)
Row = tuple[datetime, float, float, float | None, bool, bool | None, float | None, Any, int,
            datetime]
_FIX_TIME = itemgetter(0)
_OUTAGE = (OperationalError, InterfaceError)
KEYS_S = 10.0  # catch-up rows stored this recently may still be queued: remember them
RETRY_S = 60.0  # a vehicle whose derivation failed (not an outage) is retried after this
YIELD_FIXES = 200  # fixes fed between two pauses (about a millisecond)
YIELD_MACHINES = 16  # machines serialised between two pauses


def pause() -> None:
    """Let the ingest event loop have the GIL now.

    The live tracker runs in the ingest process. A thread that wants the GIL waits for
    the holder to give it up, which a busy Python thread does only after the switch
    interval (5 ms); every such wait adds to an acknowledgement's latency. Pausing
    every millisecond of work bounds the wait to that.
    """
    time.sleep(0)


def live_row(device_id: int, server_time: datetime, fix: Fix) -> Row:
    """A stored position as ``LiveFleet`` takes it."""
    return (fix.fix_time, fix.latitude, fix.longitude, fix.speed_kmh, fix.valid, fix.ignition,
            fix.odometer_km, fix.attributes.get("driver_key"), device_id, server_time)


def _new_fix(row: Row) -> NewFix:
    t, lat, lon, kmh, valid, ign, odo, key, device_id, server_time = row
    return NewFix(device_id, server_time, Fix(
        fix_time=t, latitude=lat, longitude=lon, speed_kmh=kmh, valid=valid, ignition=ign,
        odometer_km=odo, attributes={} if key is None else {"driver_key": key}))


def _in_order(rows: list[Row]) -> list[Row]:
    """Rows by fix time, each stored row once (a frame resent within one batch)."""
    seen: set[tuple[int, datetime]] = set()
    out = []
    for row in sorted(rows, key=_FIX_TIME):
        key = (row[8], row[0])
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass(slots=True)
class Missed:
    """Stored positions of a vehicle that live derivation did not take (dropped while it
    was behind, or what it derived could not be written): a catch-up derives them.

    A catch-up reads the positions newer than the machine; a missed one that is older
    (a late fix) it would not see, so ``earliest_fix`` and ``earliest_stored`` (None:
    none was older) bound the search for those. ``not_before``: retry no earlier
    (monotonic seconds), after a failure that was not an outage.
    """

    earliest_fix: datetime | None = None
    earliest_stored: datetime | None = None
    not_before: float = 0.0

    def add(self, fix_time: datetime, server_time: datetime) -> None:
        if self.earliest_fix is None or fix_time < self.earliest_fix:
            self.earliest_fix = fix_time
        if self.earliest_stored is None or server_time < self.earliest_stored:
            self.earliest_stored = server_time

    def merge(self, other: Missed) -> None:
        if other.earliest_fix is not None and other.earliest_stored is not None:
            self.add(other.earliest_fix, other.earliest_stored)
        self.not_before = max(self.not_before, other.not_before)


@dataclass(slots=True)
class _Late:
    """Positions waiting for a database derivation (a late fix replays from a checkpoint);
    a vehicle's later positions join them until they settle."""

    rows: list[NewFix]
    first: float
    last: float


class CanOdometer:
    """``OdometerReader`` for a machine that stays in memory: the vehicle's CAN odometer
    samples around the machine's time, loaded as new fixes need them."""

    __slots__ = ("max_age", "offset", "times", "until", "values")

    def __init__(self, offset_km: float, max_age_s: float):
        self.offset = offset_km
        self.max_age = timedelta(seconds=max_age_s)
        self.times: list[datetime] = []
        self.values: list[float] = []
        self.until: datetime | None = None  # samples up to here are loaded

    def window(self, first: datetime, last: datetime) -> tuple[datetime, bool, datetime] | None:
        """(from, from inclusive, to) of the samples fixes in [first, last] still need."""
        if self.until is None:
            return first - self.max_age, True, last
        if last <= self.until:
            return None
        return self.until, False, last

    def add(self, samples: Iterable[tuple[datetime, float]], until: datetime) -> None:
        for when, value in samples:
            if not self.times or when > self.times[-1]:
                self.times.append(when)
                self.values.append(value)
            elif when not in self.times:
                i = bisect_right(self.times, when)
                self.times.insert(i, when)
                self.values.insert(i, value)
        if self.until is None or until > self.until:
            self.until = until

    def reading(self, when: datetime) -> float | None:
        i = bisect_right(self.times, when) - 1
        if i >= 0 and when - self.times[i] <= self.max_age:
            return self.values[i] + self.offset
        return None

    def trim(self, before: datetime) -> None:
        """Forget samples no later fix can read (older than ``max_age`` before it)."""
        i = bisect_right(self.times, before)
        if i:
            del self.times[:i]
            del self.values[:i]


class LiveVehicle:
    """One vehicle's live machine in memory, and what it decided that is not written yet.

    ``token`` is the saved state row's ``updated`` as this process last wrote or read
    it: when the row says otherwise, someone else (a rebuild, another ingest process)
    derived the vehicle meanwhile, and this machine is thrown away and derived again
    from the database.
    """

    __slots__ = ("can", "close_after", "closed", "decided", "driving_since", "fed_at",
                 "fed_keys", "keys_until", "last_fix", "machine", "offset_km",
                 "organisation_id", "quiet_until", "since", "token", "vehicle_id")

    def __init__(
        self, vehicle_id: int, organisation_id: int, offset_km: float,
        machine: TripStateMachine, *, last_fix: datetime | None, close_after: timedelta,
        token: datetime, quiet_until: datetime | None,
    ):
        self.vehicle_id = vehicle_id
        self.organisation_id = organisation_id
        self.offset_km = offset_km
        self.machine = machine
        self.last_fix = last_fix
        self.closed = (last_fix is not None and machine.last_fix_time is not None
                       and machine.last_fix_time > last_fix)
        self.driving_since = machine.driving_since
        self.close_after = close_after
        self.token = token
        self.since = machine.last_fix_time  # the saved machine's time
        # Events decided before this fix time are history: not announced.
        self.quiet_until = quiet_until
        self.decided: list[Decided] = []
        self.fed_at = 0.0
        # (device, fix time, stored at) of positions a catch-up fed that may still come
        # through the queue; forgotten at keys_until (monotonic).
        self.fed_keys: set[tuple[int, datetime, datetime]] | None = None
        self.keys_until = 0.0
        self.can: CanOdometer | None = None

    def take(self, rows: list[Row]) -> bool:
        """Feed positions newer than the machine, in fix-time order (``Derivation.feed``
        without the database); True if the machine decided something."""
        machine = self.machine
        feed = machine.feed
        can = self.can
        offset = self.offset_km
        close_after = self.close_after
        decided = False
        for t, lat, lon, kmh, valid, ign, odo, key, _, _ in rows:
            last = self.last_fix
            if last is not None and not self.closed and t - last >= close_after:
                decided = self.close() or decided
            reading = (None if odo is None else odo + offset) if can is None else can.reading(t)
            events = feed(make_fix(t, lat, lon, kmh, valid, ign, reading, key))
            self.last_fix = t
            self.closed = False
            if events:
                self._decide(events)
                decided = True
        if can is not None and self.last_fix is not None:
            can.trim(self.last_fix - can.max_age)
        return decided

    def close(self) -> bool:
        """The vehicle fell silent: close its trip at last fix + ``close_after``."""
        self.closed = True
        events = self.machine.finish(self.last_fix + self.close_after)
        if events:
            self._decide(events)
        return bool(events)

    def _decide(self, events: list[TripEvent]) -> None:
        ended = False
        for event in events:
            if isinstance(event, TripStarted):
                self.driving_since = event.trip.start_time
            elif isinstance(event, TripEnded):
                self.driving_since = None
                ended = True
        machine = self.machine
        at = machine.last_fix_time
        self.decided.append(Decided(
            events, at, self.last_fix, _jsonable(machine.to_dict()) if ended else None,
            self.quiet_until is None or at >= self.quiet_until))

    def writes(self) -> bool:
        """Did the machine decide a trip or a gap (rows of their own), or only starts?"""
        return any(not isinstance(event, TripStarted)
                   for decided in self.decided for event in decided.events)

    def state_fields(self) -> dict[str, Any]:
        return {"machine": self.machine.to_dict(), "last_fix_time": self.last_fix,
                "closed": self.closed, "driving_since": self.driving_since}


class LiveFleet:
    """Live trip derivation for a whole fleet; see the module doc, "At fleet scale".

    Single-threaded (the trip tracker's thread). Each call takes a round of work and
    returns the vehicles whose positions it could not derive (``Missed``: the caller
    catches them up later with ``resume``) and whether the database worked.

    Results are those of ``derive_new_fixes`` batch by batch, and so of a rebuild:
    the same machine gets the same fixes in the same order; the writes of what it
    decides are ``Derivation``'s, only later and for many vehicles in one transaction.
    """

    def __init__(
        self, *, flush_s: float = 60.0, settle_s: float = 1.0, max_wait_s: float = 15.0,
        grace_s: float = 120.0, evict_s: float = 900.0, refresh_s: float = 60.0,
        flush_max: int = 2000, interface: str = Interface.DERIVATION,
    ):
        # Machines are saved this long after they changed, at the latest: less than
        # ``close_silent_vehicles``' grace, so no other process takes one for silent.
        self.flush_s = flush_s
        self.flush_max = flush_max  # machines saved per round at most (unless everything)
        self.settle_s = settle_s
        self.max_wait_s = max_wait_s
        self.grace_s = grace_s
        self.evict_s = evict_s
        self.refresh_s = refresh_s
        self.interface = interface
        self.entries: dict[int, LiveVehicle] = {}
        self.dirty: dict[int, float] = {}  # vehicle -> since when (monotonic), oldest first
        self.late: dict[int, _Late] = {}
        self._deciding: set[int] = set()
        self._settings: dict[int, LogbookSettings] = {}
        self._places: dict[int, list[NamedPlace]] = {}
        self._refreshed = time.monotonic()
        self.stats: Counter[str] = Counter()

    # ---------------------------------------------------------------- rounds

    def feed(self, batch: dict[int, list[Row]], now: datetime
             ) -> tuple[dict[int, Missed], bool]:
        """Derive newly stored positions, by vehicle (consumes ``batch``)."""
        mono = time.monotonic()
        for vehicle_id in [v for v in batch if v in self.late]:
            late = self.late[vehicle_id]
            late.rows += [_new_fix(r) for r in batch.pop(vehicle_id)]
            late.last = mono
        if not batch:
            return {}, True
        unknown = [v for v in batch if v not in self.entries]
        try:
            if unknown:
                self._load(unknown, now, arrived=batch)
            fresh, suspects = self._classify(batch)
            if suspects:
                for vehicle_id in self._late_rows(suspects):
                    fresh.pop(vehicle_id, None)
                    self._to_late(vehicle_id, [_new_fix(r) for r in batch[vehicle_id]], mono)
            self._load_can(fresh)
        except DatabaseError as error:
            logger.warning("Live trip derivation could not read the database: %s", error)
            missed: dict[int, Missed] = {}
            for vehicle_id, rows in batch.items():
                if vehicle_id in unknown:
                    self._drop(vehicle_id)
                mark = missed.setdefault(vehicle_id, Missed())
                for row in rows:
                    mark.add(row[0], row[9])
            return missed, False
        failed: dict[int, Missed] = {}
        fed = 0
        for vehicle_id, rows in fresh.items():
            entry = self.entries[vehicle_id]
            try:
                if entry.take(rows):
                    self._deciding.add(vehicle_id)
            except Exception:
                logger.exception("Live trip derivation of vehicle %s failed", vehicle_id)
                self._drop(vehicle_id)
                failed[vehicle_id] = Missed(not_before=mono + RETRY_S)
                continue
            self._fed(entry, mono)
            fed += len(rows)
            if fed >= YIELD_FIXES:
                self.stats["fixes"] += fed
                fed = 0
                pause()
        self.stats["fixes"] += fed
        missed, ok = self._write_decided(now)
        failed.update(missed)
        return failed, ok

    def resume(self, missed: dict[int, Missed], now: datetime
               ) -> tuple[dict[int, Missed], bool]:
        """Derive what was missed for these vehicles from the stored positions."""
        ids = [v for v in missed if v not in self.late]
        try:
            self._load(ids, now, missed=missed)
        except DatabaseError as error:
            logger.warning("Live trip derivation could not catch up: %s", error)
            for vehicle_id in ids:
                self._drop(vehicle_id)
            return {v: missed[v] for v in ids}, False
        return self._write_decided(now)

    def derive_late(self, now: datetime, *, everything: bool = False
                    ) -> tuple[dict[int, Missed], bool]:
        """Replay the vehicles with late positions once these settled (``settle_s``
        without more, at most ``max_wait_s``): a backlog uploaded in many packets is
        replayed once, not packet by packet."""
        mono = time.monotonic()
        missed: dict[int, Missed] = {}
        for vehicle_id, late in list(self.late.items()):
            if not everything and (mono - late.last < self.settle_s
                                   and mono - late.first < self.max_wait_s):
                continue
            try:
                vehicle = Vehicle.objects.select_related(
                    "organisation", "default_driver").filter(pk=vehicle_id).first()
                if vehicle is not None:
                    derive_with_catch_up(vehicle, late.rows, now=now, interface=self.interface)
                self.stats["replays"] += 1
            except _OUTAGE as error:
                logger.warning("Trip derivation for vehicle %s failed, will retry: %s",
                               vehicle_id, error)
                _reset_connection()
                return missed, False
            except Exception:
                logger.exception("Trip derivation for vehicle %s failed", vehicle_id)
                self.stats["failures"] += 1
                mark = missed[vehicle_id] = Missed(not_before=mono + RETRY_S)
                for row in late.rows:
                    mark.add(row.fix.fix_time, row.server_time)
            del self.late[vehicle_id]
        return missed, True

    def close_silent(self, now: datetime) -> tuple[dict[int, Missed], bool]:
        """Close the trips of vehicles in memory silent for their ``close_after_s`` by
        ``now`` and fed nothing for ``grace_s`` (as ``close_silent_vehicles``)."""
        mono = time.monotonic()
        for vehicle_id, entry in self.entries.items():
            if entry.closed or entry.last_fix is None:
                continue
            if now - entry.last_fix < entry.close_after or mono - entry.fed_at < self.grace_s:
                continue
            if entry.close():
                self._deciding.add(vehicle_id)
            self.dirty.setdefault(vehicle_id, mono)
        return self._write_decided(now)

    def flush(self, *, everything: bool = False) -> bool:
        """Save the machines changed ``flush_s`` ago or more (all with ``everything``),
        in bulk, ``flush_max`` a round (a fleet read at once is due at once, and would
        hold up a round); False if the database failed (they stay due)."""
        mono = time.monotonic()
        due = []
        for vehicle_id, since in self.dirty.items():
            if not everything and (mono - since < self.flush_s or len(due) >= self.flush_max):
                break
            if vehicle_id not in self._deciding:
                due.append(self.entries[vehicle_id])
        if not due:
            return True
        try:
            written = self._save_states(due, timezone.now())
        except DatabaseError as error:
            logger.warning("Saving live trip states failed, will retry: %s", error)
            _reset_connection()
            return False
        for entry in due:
            vehicle_id = entry.vehicle_id
            self.dirty.pop(vehicle_id, None)
            token = written.get(vehicle_id)
            if token is None:  # derived by someone else meanwhile: derive it again
                self.stats["stale"] += 1
                self._to_late(vehicle_id, [], mono)
            else:
                entry.token = token
                entry.since = entry.machine.last_fix_time
        self.stats["saved"] += len(written)
        return True

    def refresh(self) -> None:
        """Every ``refresh_s``: re-read what may change under running machines (the
        organisations' thresholds apply from the next fix, as in ``derive_new_fixes``;
        named places; vehicles' odometer offsets; CAN odometers that appeared), and
        forget machines idle for ``evict_s`` (saved already; a later fix reads them
        again)."""
        mono = time.monotonic()
        if mono - self._refreshed < self.refresh_s:
            return
        self._refreshed = mono
        by_organisation: dict[int, list[LiveVehicle]] = {}
        for entry in self.entries.values():
            by_organisation.setdefault(entry.organisation_id, []).append(entry)
        self._places.clear()
        for organisation_id, old in list(self._settings.items()):
            new = logbook_settings_for(organisation_id)
            self._settings[organisation_id] = new
            if (new.trip_settings(), new.close_after_s, new.can_odometer_max_age_s) == (
                    old.trip_settings(), old.close_after_s, old.can_odometer_max_age_s):
                continue
            trip_settings = asdict(new.trip_settings())
            for entry in by_organisation.get(organisation_id, ()):
                entry.machine = TripStateMachine.from_dict(
                    {**entry.machine.to_dict(), "settings": trip_settings})
                entry.close_after = timedelta(seconds=new.close_after_s)
                if entry.can is not None:
                    entry.can.max_age = timedelta(seconds=new.can_odometer_max_age_s)
        ids = list(self.entries)
        seen = set()
        for chunk in _chunks(ids, 5000):
            for pk, organisation_id, offset in Vehicle.objects.filter(pk__in=chunk).values_list(
                    "pk", "organisation_id", "odometer_offset_km"):
                seen.add(pk)
                entry = self.entries[pk]
                if organisation_id != entry.organisation_id:
                    self._to_late(pk, [], mono)
                    continue
                entry.offset_km = offset or 0.0
                if entry.can is not None:
                    entry.can.offset = entry.offset_km
        for vehicle_id in set(ids) - seen:
            self._drop(vehicle_id)
        without_can = [v for v, e in self.entries.items() if e.can is None]
        for vehicle_id in self._with_can_odometer(without_can):
            entry = self.entries[vehicle_id]
            settings = self._settings_for(entry.organisation_id)
            entry.can = CanOdometer(entry.offset_km, settings.can_odometer_max_age_s)
        for vehicle_id, entry in list(self.entries.items()):
            if entry.fed_keys is not None and mono > entry.keys_until:
                entry.fed_keys = None
            if (vehicle_id not in self.dirty and vehicle_id not in self._deciding
                    and mono - entry.fed_at >= self.evict_s):
                del self.entries[vehicle_id]

    # ---------------------------------------------------------------- loading

    def _load(self, vehicle_ids: list[int], now: datetime, *,
              arrived: dict[int, list[Row]] | None = None,
              missed: dict[int, Missed] | None = None) -> None:
        """Bring the machines of ``vehicle_ids`` into memory, then feed each what is
        stored beyond it (positions of ``arrived`` among them).

        Those positions may also still be on their way through the tracker's queue (a
        batch is queued after it is committed), so the recent ones are remembered and
        skipped when they come (``fed_keys``). A vehicle never derived but with a
        logbook (a rebuild made it, or its state was reset) is derived in the database.
        """
        mono = time.monotonic()
        arrived = arrived or {}
        missed = missed or {}
        unknown = [v for v in vehicle_ids if v not in self.entries and v not in self.late]
        if unknown:
            self._read_states(unknown, now, mono, arrived, missed)
        if missed:
            self._find_late(missed, mono)
        horizon = now - timedelta(seconds=KEYS_S)
        for vehicle_id in vehicle_ids:
            for row in arrived.get(vehicle_id, ()):
                horizon = min(horizon, row[9])
        pairs = [(self.entries[v].machine.last_fix_time, v) for v in vehicle_ids
                 if v in self.entries]
        for after, group in _groups(pairs):
            for vehicle_id, rows in _stored_rows(group, after):
                entry = self.entries.get(vehicle_id)
                if entry is None:
                    continue
                latest = entry.machine.last_fix_time
                if latest is not None:
                    rows = [r for r in rows if r[0] > latest]
                if not rows:
                    continue
                self._load_can({vehicle_id: rows})
                try:
                    if entry.take(rows):
                        self._deciding.add(vehicle_id)
                except Exception:
                    logger.exception("Live trip derivation of vehicle %s failed", vehicle_id)
                    self._drop(vehicle_id)
                    self.stats["failures"] += 1
                    continue
                self._fed(entry, mono)
                self.stats["caught_up"] += len(rows)
                pause()
                keys = [(r[8], r[0], r[9]) for r in rows if r[9] >= horizon]
                if keys:
                    if entry.fed_keys is None:
                        entry.fed_keys = set()
                    entry.fed_keys.update(keys)
                    entry.keys_until = mono + 6 * KEYS_S

    def _read_states(self, unknown: list[int], now: datetime, mono: float,
                     arrived: dict[int, list[Row]], missed: dict[int, Missed]) -> None:
        vehicles = {pk: (organisation_id, offset) for pk, organisation_id, offset in
                    Vehicle.objects.filter(pk__in=unknown).values_list(
                        "pk", "organisation_id", "odometer_offset_km")}
        fields = ("vehicle_id", "machine", "last_fix_time", "updated")
        states = {row[0]: row[1:] for row in VehicleTripState.objects.filter(
            vehicle_id__in=list(vehicles)).values_list(*fields)}
        missing = [v for v in vehicles if v not in states]
        if missing:
            # Every machine in memory has its row, so saving it is an UPDATE like any.
            VehicleTripState.objects.bulk_create(
                [VehicleTripState(vehicle_id=v) for v in missing], ignore_conflicts=True)
            states.update({row[0]: row[1:] for row in VehicleTripState.objects.filter(
                vehicle_id__in=missing).values_list(*fields)})
        never = [v for v in vehicles if states.get(v, (None,))[0] is None]
        history = self._with_history(never) if never else set()
        with_can = self._with_can_odometer(list(vehicles))
        for vehicle_id in unknown:
            if vehicle_id not in vehicles:
                continue  # deleted meanwhile: its positions go with it
            if vehicle_id in history:
                self._to_late(vehicle_id, [_new_fix(r) for r in arrived.get(vehicle_id, ())],
                              mono)
                continue
            organisation_id, offset = vehicles[vehicle_id]
            settings = self._settings_for(organisation_id)
            data, last_fix, updated = states.get(vehicle_id, (None, None, None))
            try:
                machine = _machine(data, settings, offset)
            except (KeyError, TypeError, ValueError):
                logger.exception("The saved trip state of vehicle %s cannot be read", vehicle_id)
                self.stats["failures"] += 1
                continue
            quiet_until = None
            if data is None:
                # The first derivation of this vehicle: its history is not news.
                earliest = [r[0] for r in arrived.get(vehicle_id, ())]
                mark = missed.get(vehicle_id)
                if mark is not None and mark.earliest_fix is not None:
                    earliest.append(mark.earliest_fix)
                quiet_until = min(earliest) if earliest else now
                last_fix = None
            entry = LiveVehicle(
                vehicle_id, organisation_id, offset or 0.0, machine, last_fix=last_fix,
                close_after=timedelta(seconds=settings.close_after_s), token=updated,
                quiet_until=quiet_until)
            if vehicle_id in with_can:
                entry.can = CanOdometer(offset or 0.0, settings.can_odometer_max_age_s)
            self.entries[vehicle_id] = entry
            self.stats["loaded"] += 1

    def _find_late(self, missed: dict[int, Missed], mono: float) -> None:
        """Missed positions older than the machine: late fixes, for a database replay.

        A batch the listener dropped may also have been read by an earlier catch-up (it
        was committed before the catch-up read and dropped after): what a catch-up fed
        is remembered (``fed_keys``) and is not late.
        """
        checks = []
        for vehicle_id, mark in missed.items():
            entry = self.entries.get(vehicle_id)
            if entry is None or mark.earliest_fix is None or mark.earliest_stored is None:
                continue
            latest = entry.machine.last_fix_time
            if latest is not None and mark.earliest_fix <= latest:
                checks.append(Q(vehicle_id=vehicle_id, fix_time__gte=mark.earliest_fix,
                                fix_time__lte=latest, server_time__gte=mark.earliest_stored))
        found: dict[int, list[Row]] = {}
        for chunk in _chunks(checks, 200):
            for row in Position.objects.filter(reduce(or_, chunk)).order_by(
                    "fix_time", "id").values_list("vehicle_id", *_ROW_FIELDS):
                keys = self.entries[row[0]].fed_keys
                if keys is None or (row[9], row[1], row[10]) not in keys:
                    found.setdefault(row[0], []).append(row[1:])
        for vehicle_id, rows in found.items():
            self.stats["late_missed"] += len(rows)
            self._to_late(vehicle_id, [_new_fix(r) for r in rows], mono)

    @staticmethod
    def _with_history(vehicle_ids: list[int]) -> set[int]:
        found: set[int] = set()
        for model in (Trip, TripCheckpoint, OdometerGap):
            found.update(model.objects.filter(vehicle_id__in=vehicle_ids).order_by()
                         .values_list("vehicle_id", flat=True).distinct())
        return found

    @staticmethod
    def _with_can_odometer(vehicle_ids: list[int]) -> set[int]:
        from django.db.models import Exists, OuterRef

        found: set[int] = set()
        for chunk in _chunks(vehicle_ids, 5000):
            found.update(Vehicle.objects.filter(pk__in=chunk).filter(Exists(
                SignalSample.objects.filter(vehicle_id=OuterRef("pk"), signal="odometer")
            )).values_list("pk", flat=True))
        return found

    def _settings_for(self, organisation_id: int) -> LogbookSettings:
        settings = self._settings.get(organisation_id)
        if settings is None:
            settings = self._settings[organisation_id] = logbook_settings_for(organisation_id)
        return settings

    # ---------------------------------------------------------------- one round

    def _classify(self, batch: dict[int, list[Row]]
                  ) -> tuple[dict[int, list[Row]], list[tuple[int, Row]]]:
        """Rows newer than their machine (to feed), and older ones: resends or late."""
        fresh: dict[int, list[Row]] = {}
        suspects: list[tuple[int, Row]] = []
        for vehicle_id, rows in batch.items():
            entry = self.entries.get(vehicle_id)
            if entry is None:
                continue
            if len(rows) > 1:
                rows = _in_order(rows)
            latest = entry.machine.last_fix_time
            if latest is None or rows[0][0] > latest:  # the usual: all newer (rows sorted)
                fresh[vehicle_id] = rows
                continue
            keys = entry.fed_keys or ()
            new = []
            for row in rows:
                if row[0] > latest:
                    new.append(row)
                elif (row[8], row[0], row[9]) not in keys:  # else a catch-up fed it (the
                    suspects.append((vehicle_id, row))  # machine is past what it fed)
            if new:
                fresh[vehicle_id] = new
        return fresh, suspects

    def _late_rows(self, suspects: list[tuple[int, Row]]) -> set[int]:
        """Vehicles with a late fix among ``suspects``. A resend is stored as nothing,
        so its stored row keeps the server time of the first delivery."""
        stored: dict[tuple[int, datetime], datetime] = {}
        for chunk in _chunks(suspects, 500):
            query = reduce(or_, (Q(device_id=row[8], fix_time=row[0]) for _, row in chunk))
            stored.update({(device_id, fix_time): server_time for device_id, fix_time, server_time
                           in Position.objects.filter(query).values_list(
                               "device_id", "fix_time", "server_time")})
        late = {v for v, row in suspects if stored.get((row[8], row[0])) == row[9]}
        self.stats["late_fixes"] += sum(1 for v, row in suspects
                                        if stored.get((row[8], row[0])) == row[9])
        self.stats["resends"] += sum(1 for v, _ in suspects if v not in late)
        return late

    def _load_can(self, fresh: dict[int, list[Row]]) -> None:
        wanted = []
        for vehicle_id, rows in fresh.items():
            entry = self.entries.get(vehicle_id)
            if entry is not None and entry.can is not None:
                window = entry.can.window(rows[0][0], rows[-1][0])
                if window is not None:
                    wanted.append((entry.can, vehicle_id, window))
        for chunk in _chunks(wanted, 200):
            query = reduce(or_, (
                Q(vehicle_id=vehicle_id, time__gte=low, time__lte=high) if inclusive
                else Q(vehicle_id=vehicle_id, time__gt=low, time__lte=high)
                for _, vehicle_id, (low, inclusive, high) in chunk))
            samples: dict[int, list[tuple[datetime, float]]] = {}
            for vehicle_id, when, value in SignalSample.objects.filter(
                    query, signal="odometer").order_by("time").values_list(
                    "vehicle_id", "time", "value"):
                samples.setdefault(vehicle_id, []).append((when, value))
            for can, vehicle_id, (_, _, high) in chunk:
                can.add(samples.get(vehicle_id, ()), high)

    def _fed(self, entry: LiveVehicle, mono: float) -> None:
        entry.fed_at = mono
        self.dirty.setdefault(entry.vehicle_id, mono)

    def _drop(self, vehicle_id: int) -> None:
        self.entries.pop(vehicle_id, None)
        self.dirty.pop(vehicle_id, None)
        self._deciding.discard(vehicle_id)

    def _to_late(self, vehicle_id: int, rows: list[NewFix], mono: float) -> None:
        """Derive this vehicle in the database (``derive_with_catch_up``) once settled."""
        self._drop(vehicle_id)
        late = self.late.get(vehicle_id)
        if late is None:
            self.late[vehicle_id] = _Late(rows, mono, mono)
        else:
            late.rows += rows
            late.last = mono

    # ---------------------------------------------------------------- writing

    def _write_decided(self, now: datetime) -> tuple[dict[int, Missed], bool]:
        """Write what the machines decided, for every vehicle in one transaction."""
        if not self._deciding:
            return {}, True
        entries = [self.entries[v] for v in sorted(self._deciding)]
        self._deciding.clear()
        started = time.thread_time()
        try:
            stale, broken = self._write(entries, now)
            self.stats["write_cpu_ms"] += round((time.thread_time() - started) * 1000)
        except DatabaseError as error:
            logger.warning("Writing trips failed, will derive them again: %s", error)
            _reset_connection()
            missed = {}
            for entry in entries:
                self._drop(entry.vehicle_id)
                missed[entry.vehicle_id] = Missed()
            return missed, False
        mono = time.monotonic()
        for entry in stale:
            self.stats["stale"] += 1
            self._to_late(entry.vehicle_id, [], mono)
        missed = {}
        for entry in broken:
            self._drop(entry.vehicle_id)
            self.stats["failures"] += 1
            missed[entry.vehicle_id] = Missed(not_before=mono + RETRY_S)
        return missed, True

    def _write(self, entries: list[LiveVehicle], now: datetime
               ) -> tuple[list[LiveVehicle], list[LiveVehicle]]:
        """Under the vehicles' row locks: each vehicle's trips, gaps and checkpoints (in a
        savepoint of its own, so one vehicle's failure is its own), then every trip event
        in one INSERT and every machine in one UPDATE."""
        ids = [e.vehicle_id for e in entries]
        stale, broken, written = [], [], []
        events: list[Event] = []
        stamp = timezone.now()
        with transaction.atomic():
            states = {s.vehicle_id: s for s in VehicleTripState.objects.select_for_update()
                      .filter(vehicle_id__in=ids).order_by("vehicle_id")}
            vehicles = Vehicle.objects.select_related(
                "organisation", "default_driver").in_bulk(ids)
            drivers = _RoundDrivers(ids)
            for entry in entries:
                state = states.get(entry.vehicle_id)
                vehicle = vehicles.get(entry.vehicle_id)
                if vehicle is None:
                    broken.append(entry)
                elif state is None or state.updated != entry.token:
                    stale.append(entry)
                else:
                    try:
                        if entry.writes():
                            with transaction.atomic():
                                events += self._apply(entry, vehicle, state, now, drivers)
                        else:  # a trip start: only reads (its event is written below)
                            events += self._apply(entry, vehicle, state, now, drivers)
                        written.append(entry)
                    except _OUTAGE:
                        raise
                    except Exception:
                        logger.exception("Writing the trips of vehicle %s failed",
                                         entry.vehicle_id)
                        broken.append(entry)
            if events:
                Event.objects.bulk_create(events)
            saved = self._save_states(written, stamp)
            if len(saved) != len(written):  # cannot be: the rows are locked
                raise DatabaseError("a locked trip state row changed")
        for entry in written:
            entry.decided = []
            entry.token = stamp
            entry.since = entry.machine.last_fix_time
            self.dirty.pop(entry.vehicle_id, None)
        return stale, broken

    def _apply(self, entry: LiveVehicle, vehicle: Vehicle, state: VehicleTripState,
               now: datetime, drivers: _RoundDrivers) -> list[Event]:
        organisation_id = vehicle.organisation_id
        places = self._places.get(organisation_id)
        if places is None:
            places = self._places[organisation_id] = list(
                NamedPlace.objects.filter(organisation_id=organisation_id))
        derivation = Derivation(
            vehicle, state, entry.machine, last_fix=entry.last_fix, since=entry.since,
            settings=self._settings_for(organisation_id), interface=self.interface,
            now=now, live=True, places=places, deferred=True, drivers=drivers,
        )
        for decided in entry.decided:
            derivation.apply(decided)
        outcome = derivation.finish()
        self.stats["trips"] += outcome.created
        self.stats["events"] += outcome.announced
        return derivation.events

    def _save_states(self, entries: list[LiveVehicle], stamp: datetime) -> dict[int, datetime]:
        """Save machines whose row is still as this process left it; returns their new
        ``updated`` by vehicle (a row changed by someone else is not overwritten)."""
        written: dict[int, datetime] = {}
        if connection.vendor == "postgresql":
            for chunk in _chunks(entries, 500):
                written.update(dict.fromkeys(_bulk_update_states(chunk, stamp), stamp))
        else:
            for entry in entries:
                if VehicleTripState.objects.filter(
                        vehicle_id=entry.vehicle_id, updated=entry.token).update(
                        updated=stamp, **entry.state_fields()):
                    written[entry.vehicle_id] = stamp
        return written


class _RoundDrivers:
    """``driver_for_trip`` for the vehicles of one round, without a query for most.

    The rule (``services.driver_for_trip``): a reported identification key, then the
    driver session chosen in the app, then the vehicle's default driver. Which of the
    round's vehicles have any session is read once; for a trip without a key of a
    vehicle without sessions the answer is its default driver, with no query. Everything
    else asks ``driver_for_trip`` itself.
    """

    def __init__(self, vehicle_ids: list[int]):
        self.with_sessions = set(DriverSession.objects.filter(
            vehicle_id__in=vehicle_ids).order_by().values_list("vehicle_id", flat=True)
            .distinct())

    def __call__(self, vehicle: Vehicle, start: datetime, keys: Iterable[str]
                 ) -> tuple[Any, str]:
        keys = [k for k in keys if k]
        if keys or vehicle.pk in self.with_sessions:
            return driver_for_trip(vehicle, start, keys)
        if vehicle.default_driver_id is not None:
            return vehicle.default_driver, DriverSource.DEFAULT
        return None, ""


def _bulk_update_states(entries: list[LiveVehicle], stamp: datetime) -> list[int]:
    """One UPDATE for many state rows, each only if its ``updated`` is still the token.

    The rows go as one JSON document (``jsonb_to_recordset``), not as thousands of bound
    values, which the driver would have to splice into the statement one by one.
    """
    table = connection.ops.quote_name(VehicleTripState._meta.db_table)
    rows = []
    for number, e in enumerate(entries, 1):
        rows.append(json.dumps({
            "vehicle_id": e.vehicle_id, "machine": e.machine.to_dict(),
            "last_fix_time": e.last_fix.isoformat() if e.last_fix else None,
            "closed": e.closed,
            "driving_since": e.driving_since.isoformat() if e.driving_since else None,
            "token": e.token.isoformat(),
        }))
        if number % YIELD_MACHINES == 0:
            pause()
    sql = (
        f"UPDATE {table} AS s SET machine = v.machine, last_fix_time = v.last_fix_time, "
        "closed = v.closed, driving_since = v.driving_since, updated = %s "
        "FROM jsonb_to_recordset(%s::jsonb) AS v(vehicle_id bigint, machine jsonb, "
        "last_fix_time timestamptz, closed boolean, driving_since timestamptz, "
        "token timestamptz) WHERE s.vehicle_id = v.vehicle_id AND s.updated = v.token "
        "RETURNING s.vehicle_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [stamp, "[" + ",".join(rows) + "]"])
        return [row[0] for row in cursor.fetchall()]


def _groups(pairs: list[tuple[datetime | None, int]], *, span: timedelta = timedelta(minutes=10),
            size: int = 500) -> Iterator[tuple[datetime | None, list[int]]]:
    """Vehicles whose machines are at about the same time, to read what is stored after
    them in one query each (from the earliest of the group)."""
    never = [v for t, v in pairs if t is None]
    for chunk in _chunks(never, 200):
        yield None, chunk
    group: list[int] = []
    start: datetime | None = None
    for when, vehicle_id in sorted((t, v) for t, v in pairs if t is not None):
        if group and (when - start > span or len(group) >= size):
            yield start, group
            group = []
        if not group:
            start = when
        group.append(vehicle_id)
    if group:
        yield start, group


def _stored_rows(vehicle_ids: list[int], after: datetime | None, *, page: int = CHUNK
                 ) -> Iterator[tuple[int, list[Row]]]:
    """The vehicles' positions after ``after``, by vehicle in (fix time, id) order, read
    a page at a time (a vehicle's may come in several parts)."""
    base = Position.objects.filter(vehicle_id__in=vehicle_ids)
    if after is not None:
        base = base.filter(fix_time__gt=after)
    base = base.order_by("vehicle_id", "fix_time", "id")
    cursor: tuple[int, datetime, int] | None = None
    while True:
        query = base
        if cursor is not None:
            v, t, i = cursor
            query = query.filter(Q(vehicle_id__gt=v) | Q(vehicle_id=v, fix_time__gt=t)
                                 | Q(vehicle_id=v, fix_time=t, id__gt=i))
        rows = list(query.values_list("vehicle_id", "id", *_ROW_FIELDS)[:page])
        current = None
        part: list[Row] = []
        for row in rows:
            if row[0] != current:
                if part:
                    yield current, part
                current, part = row[0], []
            part.append(row[2:])
        if part:
            yield current, part
        if len(rows) < page:
            return
        cursor = (rows[-1][0], rows[-1][2], rows[-1][1])


def _reset_connection() -> None:
    with contextlib.suppress(DatabaseError):
        connection.close()
    close_old_connections()
