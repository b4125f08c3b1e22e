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
"""

from __future__ import annotations

import json
import logging
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings as django_settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from fleet.models import Vehicle
from logbook import chain
from logbook.geocoding import match_place
from logbook.models import (
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
from telematics.models import Position, SignalSample
from telematics.protocols.base import Fix

logger = logging.getLogger(__name__)

CHUNK = 20_000
_NO_ATTRIBUTES: dict[str, Any] = {}
_POSITION_FIELDS = ("fix_time", "id", "latitude", "longitude", "speed_kmh", "valid", "ignition",
                    "odometer_km", "attributes__driver_key")
SUPERSEDED_REASON = "re-derived from corrected positions"


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
    """The fix the machine gets: only what it reads, the same from any source."""
    return Fix(
        fix_time=fix_time, latitude=latitude, longitude=longitude, speed_kmh=speed_kmh,
        valid=valid, ignition=ignition, odometer_km=odometer_km,
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
    converged: bool = False
    mode: str = ""


def _machine(data: dict | None, settings: LogbookSettings, vehicle: Vehicle) -> TripStateMachine:
    """A machine from a checkpoint (with the organisation's current thresholds) or new."""
    trip_settings = settings.trip_settings()
    if data is None:
        return TripStateMachine(trip_settings, odometer_km=vehicle.odometer_offset_km or 0.0)
    from dataclasses import asdict

    return TripStateMachine.from_dict({**data, "settings": asdict(trip_settings)})


def _jsonable(data: dict) -> dict:
    return json.loads(json.dumps(data))


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
    ):
        self.vehicle = vehicle
        self.live = live
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
        self._places: list[NamedPlace] | None = None

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

    def _handle(self, events: list[TripEvent]) -> bool:
        ended = False
        for event in events:
            if isinstance(event, TripStarted):
                self.driving_since = event.trip.start_time
            elif isinstance(event, TripEnded):
                self._record_trip(event.trip)
                self.driving_since = None
                ended = True
            elif isinstance(event, GapEvent) and event.from_time is not None:
                # A gap from the seed (from_time None) is where the logbook begins.
                self._record_gap(event)
        return self._checkpoint() if ended else True

    def _checkpoint(self) -> bool:
        at = self.machine.last_fix_time
        data = _jsonable(self.machine.to_dict())
        stored = TripCheckpoint.objects.filter(vehicle_id=self.vehicle.pk, time=at).first()
        self._checkpoints.add(at)
        if stored is not None and stored.machine == data and stored.last_fix_time == self.last_fix:
            if self.converge_after is not None and at > self.converge_after:
                self.outcome.converged = True
                return False
            return True
        if stored is None:
            TripCheckpoint.objects.create(vehicle_id=self.vehicle.pk, time=at,
                                          last_fix_time=self.last_fix, machine=data)
        else:
            stored.machine = data
            stored.last_fix_time = self.last_fix
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

    def _record_trip(self, derived: DerivedTrip) -> None:
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
        driver, source = driver_for_trip(self.vehicle, trip.start_time, derived.driver_keys)
        trip.driver = driver
        trip.driver_source = source
        if self._places is None:
            self._places = list(NamedPlace.objects.filter(
                organisation_id=self.vehicle.organisation_id))
        driver_id = driver.pk if driver is not None else None
        start = match_place(self._places, trip.start_latitude, trip.start_longitude, driver_id)
        end = match_place(self._places, trip.end_latitude, trip.end_longitude, driver_id)
        trip.start_place, trip.end_place = start, end
        trip.start_address = start.label[:300] if start else ""
        trip.end_address = end.label[:300] if end else ""
        trip.addresses_pending = (start is None or end is None) and bool(
            getattr(django_settings, "GEOCODER_URL", ""))
        trip.organisation = self.vehicle.organisation
        trip.suggested_category = suggest_category(trip, self.settings).category

    # ---------------------------------------------------------------- gaps

    def _stored_gaps(self) -> list[OdometerGap]:
        if self._gaps is None:
            gaps = OdometerGap.objects.filter(vehicle_id=self.vehicle.pk).exclude(
                status=GapStatus.OBSOLETE)
            if self.since is not None:
                gaps = gaps.filter(decided_at__gt=self.since)
            self._gaps = list(gaps.order_by("to_time", "id"))
        return self._gaps

    def _record_gap(self, event: GapEvent) -> None:
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
            source=event.source, decided_at=self.machine.last_fix_time,
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
            state = self.state
            state.machine = _jsonable(self.machine.to_dict())
            state.last_fix_time = self.last_fix
            state.closed = self.closed
            state.driving_since = self.driving_since
            state.save(update_fields=["machine", "last_fix_time", "closed", "driving_since",
                                      "updated"])
        if self.live and not self._checkpoints:
            return self.outcome
        if self.since is not None:
            stale = stale.filter(time__gt=self.since)
        stale.exclude(time__in=self._checkpoints).delete()
        return self.outcome


def _overlap(a: Trip, b: Trip) -> float:
    return (min(a.end_time, b.end_time) - max(a.start_time, b.start_time)).total_seconds()


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
) -> Outcome:
    """Re-derive a vehicle's trips from the last trip end before ``since`` (None: all).

    Runs on until the re-derived state meets the stored one after ``converge_after``
    (then the rest is already right), or to the newest position. With ``close``, a trip
    still open at the end is closed if the vehicle has been silent for
    ``close_after_s`` by ``now`` (a history); the live tracker leaves that to its
    housekeeping, since more of a backlog may be on its way.
    """
    now = now or timezone.now()
    with transaction.atomic():
        state = lock_chain(vehicle.pk)
        settings = logbook_settings_for(vehicle.organisation_id)
        checkpoint = None
        if since is not None:
            checkpoint = (TripCheckpoint.objects.filter(vehicle_id=vehicle.pk, time__lt=since)
                          .order_by("-time").first())
        machine = _machine(checkpoint.machine if checkpoint else None, settings, vehicle)
        start = checkpoint.time if checkpoint else None
        derivation = Derivation(
            vehicle, state, machine, last_fix=checkpoint.last_fix_time if checkpoint else None,
            since=start, settings=settings, interface=interface, now=now,
            converge_after=converge_after,
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
    holds no lock; this takes the vehicle's.
    """
    now = now or timezone.now()
    with transaction.atomic():
        state = lock_chain(vehicle.pk)
        if state.machine is None:
            outcome = replay(vehicle, interface=interface, now=now, close=False)
            outcome.mode = "initial"
            return outcome
        settings = logbook_settings_for(vehicle.organisation_id)
        machine = _machine(state.machine, settings, vehicle)
        latest = machine.last_fix_time
        rows = sorted(rows, key=lambda r: r.fix.fix_time)
        if latest is not None:
            rows = _drop_resends(rows, latest)
        if not rows:
            return Outcome(mode="none")
        if latest is not None and rows[0].fix.fix_time < latest:
            outcome = replay(vehicle, since=rows[0].fix.fix_time,
                             converge_after=rows[-1].fix.fix_time, interface=interface, now=now,
                             close=False)
            outcome.mode = "late"
            return outcome
        derivation = Derivation(
            vehicle, state, machine, last_fix=state.last_fix_time, since=latest,
            settings=settings, interface=interface, now=now, live=True,
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


def close_silent_vehicles(now: datetime | None = None, *, grace_s: float = 120.0) -> int:
    """Close the trips of vehicles silent for their ``close_after_s``; returns how many.

    Silent means by fix time (last fix + ``close_after_s`` <= ``now``) and, so that a
    unit uploading a backlog in several batches is not closed between two of them, no
    positions derived for ``grace_s`` of wall-clock time.
    """
    now = now or timezone.now()
    quiet_since = timezone.now() - timedelta(seconds=grace_s)
    candidates = VehicleTripState.objects.filter(
        closed=False, machine__isnull=False, last_fix_time__lte=now - timedelta(seconds=60),
        updated__lte=quiet_since,
    ).values_list("vehicle_id", flat=True)
    closed = 0
    for vehicle_id in list(candidates):
        vehicle = Vehicle.objects.select_related("organisation").get(pk=vehicle_id)
        settings = logbook_settings_for(vehicle.organisation_id)
        with transaction.atomic():
            state = lock_chain(vehicle_id)
            if state.closed or state.machine is None or state.last_fix_time is None:
                continue
            if now - state.last_fix_time < timedelta(seconds=settings.close_after_s):
                continue
            machine = _machine(state.machine, settings, vehicle)
            derivation = Derivation(
                vehicle, state, machine, last_fix=state.last_fix_time,
                since=machine.last_fix_time, settings=settings,
                interface=Interface.DERIVATION, now=now, live=True,
            )
            derivation.close_if_silent(now)
            derivation.finish()
            closed += 1
    return closed


def catch_up(vehicle: Vehicle, *, now: datetime | None = None) -> Outcome:
    """Feed positions stored while no tracker ran (newer than the live machine)."""
    state = VehicleTripState.objects.filter(vehicle_id=vehicle.pk).first()
    if state is None or state.machine is None or state.last_fix_time is None:
        return Outcome(mode="none")
    after = max(state.last_fix_time, datetime.fromisoformat(state.machine["last_time"]))
    rows = [
        NewFix(device_id, server_time, Fix(fix_time=t, latitude=lat, longitude=lon,
                                           speed_kmh=kmh, valid=valid, ignition=ign,
                                           odometer_km=odo,
                                           attributes={} if key is None else {"driver_key": key}))
        for t, device_id, server_time, lat, lon, kmh, valid, ign, odo, key in Position.objects
        .filter(vehicle_id=vehicle.pk, fix_time__gt=after).order_by("fix_time", "id")
        .values_list("fix_time", "device_id", "server_time", "latitude", "longitude",
                     "speed_kmh", "valid", "ignition", "odometer_km", "attributes__driver_key")
    ]
    if not rows:
        return Outcome(mode="none")
    return derive_new_fixes(vehicle, rows, now=now)
