"""Dispatch jobs: who sees them, the status machine, and arrivals detected from positions.

A job moves ``planned`` → ``assigned`` → ``en_route`` → ``arrived`` → ``done`` (or
``failed`` from any open status); see ``TRANSITIONS``. Assigning a vehicle or driver to a
planned job makes it ``assigned``, taking the assignment away makes it ``planned`` again.
Every change is a ``job_status`` Event row (webhooks and the event list read those).

Arrival and departure are detected in the ingest process: ``attach_job_tracker`` (one
line in ``telematics.ingest.runner``) registers a ``JobTracker`` as a stored-records
listener. It passes the fixes of vehicles with open jobs to a worker thread, which
compares them with the stops' circles (``stop_transition``: arrive inside ``radius_m``,
leave only beyond ``radius_m * JOB_STOP_EXIT_FACTOR``) and writes ``job_arrived`` and
``job_departed`` events, moving the job to ``arrived`` and back to ``en_route`` while
stops remain. A stop is arrived at once and departed once. Stops without coordinates are
not detected; the driver reports them from the phone page.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from fleet.models import Driver, Job, JobStatus, JobStop, Organisation, Role, Vehicle
from fleet.selectors import Principal, actor_of
from telematics.ingest.filters import haversine_m
from telematics.ingest.workers import STOP, StoredRecordsWorker, attach_worker
from telematics.models import Event

logger = logging.getLogger(__name__)

S = JobStatus
TRANSITIONS: dict[str, frozenset[str]] = {
    S.PLANNED: frozenset({S.ASSIGNED, S.FAILED}),
    S.ASSIGNED: frozenset({S.EN_ROUTE, S.ARRIVED, S.FAILED}),
    S.EN_ROUTE: frozenset({S.ARRIVED, S.FAILED}),
    S.ARRIVED: frozenset({S.EN_ROUTE, S.DONE, S.FAILED}),
    S.DONE: frozenset(),
    S.FAILED: frozenset(),
}
# What a driver may report from the road; dispatchers and admins may do any transition.
DRIVER_STATUSES = frozenset({S.EN_ROUTE, S.ARRIVED, S.DONE, S.FAILED})
OPEN_STATUSES = frozenset({S.PLANNED, S.ASSIGNED, S.EN_ROUTE, S.ARRIVED})
# Jobs whose stops are watched for arrivals.
TRACKED_STATUSES = frozenset({S.ASSIGNED, S.EN_ROUTE, S.ARRIVED})

EVENT_STATUS = "job_status"
EVENT_ARRIVED = "job_arrived"
EVENT_DEPARTED = "job_departed"


class JobConflict(Exception):
    """The job's state does not allow this (an invalid transition, a closed job...)."""


# --- who sees which jobs --------------------------------------------------------------


def jobs_visible_to(principal: Principal) -> QuerySet[Job]:
    """The organisation's jobs; a driver sees the jobs assigned to them or to a vehicle
    they drive."""
    actor = actor_of(principal)
    jobs = Job.objects.select_related("vehicle", "driver")
    if actor.is_superuser:
        return jobs.all()
    if actor.organisation_id is None:
        return jobs.none()
    jobs = jobs.filter(organisation_id=actor.organisation_id)
    if actor.role == Role.DRIVER:
        if actor.user is None:
            return jobs.none()
        jobs = jobs.filter(Q(driver__user=actor.user) | Q(vehicle__default_driver__user=actor.user))
    return jobs


def may_edit_jobs(principal: Principal) -> bool:
    return actor_of(principal).role in (Role.ADMIN, Role.DISPATCHER)


def next_statuses(job: Job, principal: Principal | None = None) -> list[str]:
    """The statuses ``job`` may move to now (for ``principal``'s role, when given)."""
    allowed = TRANSITIONS[job.status]
    if principal is not None and actor_of(principal).role == Role.DRIVER:
        allowed = allowed & DRIVER_STATUSES
    if job.vehicle_id is None and job.driver_id is None:
        allowed = allowed - {S.ASSIGNED}
    return [s.value for s in JobStatus if s in allowed]


def actor_label(principal: Principal | None) -> str:
    """Who did something, as events record it: a username, ``api-key:<prefix>``, ``auto``."""
    if principal is None:
        return "auto"
    actor = actor_of(principal)
    if actor.api_key_id is not None:
        from fleet.models import ApiKey

        prefix = ApiKey.objects.filter(pk=actor.api_key_id).values_list("prefix", flat=True)
        return f"api-key:{prefix.first() or actor.api_key_id}"
    return getattr(actor.user, "username", "") or "unknown"


# --- changing jobs --------------------------------------------------------------------


def _assignment_checked(organisation_id: int, vehicle: Vehicle | None,
                        driver: Driver | None) -> None:
    for what, obj in (("vehicle", vehicle), ("driver", driver)):
        if obj is not None and obj.organisation_id != organisation_id:
            raise JobConflict(f"The {what} belongs to another organisation.")


@transaction.atomic
def create_job(
    organisation: Organisation,
    *,
    title: str,
    stops: Iterable[dict[str, Any]] = (),
    reference: str = "",
    notes: str = "",
    vehicle: Vehicle | None = None,
    driver: Driver | None = None,
    created_by: Any = None,
) -> Job:
    """A new job with its stops in the order given; ``assigned`` if it has an assignee."""
    _assignment_checked(organisation.pk, vehicle, driver)
    now = timezone.now()
    job = Job.objects.create(
        organisation=organisation, title=title, reference=reference, notes=notes,
        vehicle=vehicle, driver=driver, created_by=created_by, status_changed=now,
        status=S.ASSIGNED if (vehicle or driver) else S.PLANNED,
    )
    _create_stops(job, stops)
    return job


def _create_stops(job: Job, stops: Iterable[dict[str, Any]]) -> None:
    rows = []
    for number, stop in enumerate(stops, start=1):
        fields = {k: v for k, v in stop.items() if k not in ("id", "job", "sequence")}
        rows.append(JobStop(job=job, sequence=stop.get("sequence") or number, **fields))
    if len({row.sequence for row in rows}) != len(rows):
        raise ValidationError({"stops": ["Two stops have the same sequence number."]})
    JobStop.objects.bulk_create(rows)


@transaction.atomic
def update_job(job: Job, *, by: Principal | None = None,
               stops: Iterable[dict[str, Any]] | None = None, **fields: Any) -> Job:
    """Edit an open job. Changing the assignment moves planned ↔ assigned; ``stops``
    replaces every stop, which only a job none of whose stops was reached allows."""
    job = Job.objects.select_for_update().get(pk=job.pk)
    if job.status not in OPEN_STATUSES:
        raise JobConflict(f"The job is {job.get_status_display().lower()}; it can no "
                          "longer be changed.")
    for name, value in fields.items():
        setattr(job, name, value)
    _assignment_checked(job.organisation_id, job.vehicle, job.driver)
    job.save()
    if stops is not None:
        if job.stops.filter(arrived_at__isnull=False).exists():
            raise JobConflict("Some stops were reached already: change the stops one by one "
                              "instead of replacing them all.")
        job.stops.all().delete()
        _create_stops(job, stops)
    assigned = job.vehicle_id is not None or job.driver_id is not None
    if job.status == S.PLANNED and assigned:
        _set_status(job, S.ASSIGNED, actor_label(by), "", timezone.now())
    elif job.status == S.ASSIGNED and not assigned:
        _set_status(job, S.PLANNED, actor_label(by), "", timezone.now())
    elif not assigned and job.status != S.PLANNED:
        raise JobConflict("A job under way needs a vehicle or a driver.")
    return job


@transaction.atomic
def change_status(job: Job, status: str, *, by: Principal | None = None, note: str = "",
                  at: datetime | None = None) -> Job:
    """Move the job to ``status``, or raise JobConflict saying why it may not."""
    if status not in JobStatus.values:
        raise ValueError(f"Unknown status {status!r}")
    job = Job.objects.select_for_update().get(pk=job.pk)
    if status == job.status:
        raise JobConflict(f"The job is {JobStatus(status).label.lower()} already.")
    allowed = TRANSITIONS[job.status]
    if status not in allowed:
        choices = ", ".join(s.value for s in JobStatus if s in allowed) or "none: it is closed"
        raise JobConflict(
            f"A job that is {job.get_status_display().lower()} cannot become "
            f"{JobStatus(status).label.lower()}; it can become: {choices}."
        )
    if status == S.ASSIGNED and job.vehicle_id is None and job.driver_id is None:
        raise JobConflict("Assign a vehicle or a driver first.")
    _set_status(job, status, actor_label(by), note, at or timezone.now())
    return job


def _set_status(job: Job, status: str, by: str, note: str, at: datetime,
                events: list[Event] | None = None) -> None:
    """Write the new status and its event (into ``events`` when given, for the caller to
    write in one go)."""
    previous = job.status
    job.status = status
    job.status_changed = at
    Job.objects.filter(pk=job.pk).update(status=status, status_changed=at)
    event = Event(
        organisation_id=job.organisation_id, vehicle_id=job.vehicle_id, type=EVENT_STATUS,
        time=at, attributes={**_job_attributes(job), "from": previous, "to": status,
                             "by": by, "note": note},
    )
    if events is None:
        event.save()
    else:
        events.append(event)


def _job_attributes(job: Job) -> dict[str, Any]:
    return {"job": job.pk, "reference": job.reference, "title": job.title,
            "vehicle": job.vehicle_id, "driver": job.driver_id}


@transaction.atomic
def add_stop(job: Job, **fields: Any) -> JobStop:
    job = Job.objects.select_for_update().get(pk=job.pk)
    if job.status not in OPEN_STATUSES:
        raise JobConflict("Stops of a closed job cannot be changed.")
    if not fields.get("sequence"):
        last = job.stops.order_by("-sequence").values_list("sequence", flat=True).first()
        fields["sequence"] = (last or 0) + 1
    elif job.stops.filter(sequence=fields["sequence"]).exists():
        raise JobConflict(f"The job has a stop {fields['sequence']} already.")
    return JobStop.objects.create(job=job, **fields)


@transaction.atomic
def update_stop(stop: JobStop, **fields: Any) -> JobStop:
    job = Job.objects.select_for_update().get(pk=stop.job_id)
    if job.status not in OPEN_STATUSES:
        raise JobConflict("Stops of a closed job cannot be changed.")
    sequence = fields.get("sequence")
    if sequence and job.stops.filter(sequence=sequence).exclude(pk=stop.pk).exists():
        raise JobConflict(f"The job has a stop {sequence} already.")
    for name, value in fields.items():
        setattr(stop, name, value)
    # Only the fields given: arrival times may have moved since the caller read the stop.
    if fields:
        stop.save(update_fields=list(fields))
    stop.refresh_from_db()
    return stop


@transaction.atomic
def delete_stop(stop: JobStop) -> None:
    job = Job.objects.select_for_update().get(pk=stop.job_id)
    if job.status not in OPEN_STATUSES:
        raise JobConflict("Stops of a closed job cannot be changed.")
    stop = JobStop.objects.get(pk=stop.pk)  # as it is now, under the job's lock
    if stop.arrived_at is not None:
        raise JobConflict("The vehicle reached this stop already; it stays on record.")
    stop.delete()


# --- arrival and departure: pure geometry ---------------------------------------------

ARRIVE, DEPART = "arrive", "depart"


def exit_radius_m(radius_m: float, exit_factor: float) -> float:
    return radius_m * max(1.0, exit_factor)


def stop_transition(at_stop: bool, distance_m: float, radius_m: float,
                    exit_factor: float = 1.5) -> str | None:
    """ARRIVE when a fix away from the stop lies within ``radius_m``, DEPART when a fix at
    the stop lies beyond ``radius_m * exit_factor``, otherwise None.

    Between the two circles nothing changes, so GPS jitter around the radius cannot
    report a vehicle arriving and leaving over and over.
    """
    if not at_stop:
        return ARRIVE if distance_m <= radius_m else None
    return DEPART if distance_m > exit_radius_m(radius_m, exit_factor) else None


def detect(stop: JobStop, fix_time: datetime, latitude: float, longitude: float,
           exit_factor: float) -> str | None:
    """What one fix means for one stop, given what the stop has seen so far.

    A stop is arrived at once and departed once; a fix older than the stop's last change
    (a unit uploading history late) changes nothing.
    """
    if stop.latitude is None or stop.longitude is None or stop.departed_at is not None:
        return None
    if stop.arrived_at is not None and fix_time <= stop.arrived_at:
        return None
    distance = haversine_m(stop.latitude, stop.longitude, latitude, longitude)
    return stop_transition(stop.arrived_at is not None, distance, stop.radius_m, exit_factor)


# --- arrival and departure: applying fixes --------------------------------------------


def track_fixes(fixes_by_vehicle: dict[int, list], exit_factor: float | None = None) -> int:
    """Apply stored fixes (``telematics.protocols.base.Fix``) to the stops of the open jobs
    of their vehicles; returns the number of events written. One transaction."""
    if exit_factor is None:
        exit_factor = settings.JOB_STOP_EXIT_FACTOR
    vehicle_ids = set(fixes_by_vehicle)
    written = 0
    with transaction.atomic():
        drivers = dict(Vehicle.objects.filter(pk__in=vehicle_ids, default_driver__isnull=False)
                       .values_list("pk", "default_driver_id"))
        jobs = list(
            Job.objects.select_for_update()
            .filter(status__in=TRACKED_STATUSES)
            .filter(Q(vehicle_id__in=vehicle_ids)
                    | Q(vehicle__isnull=True, driver_id__in=set(drivers.values())))
            .order_by("pk")
        )
        if not jobs:
            return 0
        stops: dict[int, list[JobStop]] = defaultdict(list)
        for stop in JobStop.objects.filter(job__in=jobs).order_by("sequence"):
            stops[stop.job_id].append(stop)
        events: list[Event] = []
        for job in jobs:
            if job.vehicle_id is not None:
                vehicles = [job.vehicle_id]
            else:
                vehicles = [v for v, d in drivers.items() if d == job.driver_id]
            fixes = sorted((f for v in vehicles for f in fixes_by_vehicle.get(v, ())),
                           key=lambda f: f.fix_time)
            vehicle_of = {id(f): v for v in vehicles for f in fixes_by_vehicle.get(v, ())}
            for fix in fixes:
                events += _apply_fix(job, stops[job.pk], fix, vehicle_of[id(fix)],
                                     exit_factor)
        Event.objects.bulk_create(events)
        written = len(events)
    return written


def _apply_fix(job: Job, stops: list[JobStop], fix, vehicle_id: int,
               exit_factor: float) -> list[Event]:
    events = []
    for stop in stops:
        step = detect(stop, fix.fix_time, fix.latitude, fix.longitude, exit_factor)
        if step is None:
            continue
        if step == ARRIVE:
            stop.arrived_at = fix.fix_time
            JobStop.objects.filter(pk=stop.pk).update(arrived_at=fix.fix_time)
        else:
            stop.departed_at = fix.fix_time
            JobStop.objects.filter(pk=stop.pk).update(departed_at=fix.fix_time)
        distance = haversine_m(stop.latitude, stop.longitude, fix.latitude, fix.longitude)
        events.append(Event(
            organisation_id=job.organisation_id, vehicle_id=vehicle_id,
            type=EVENT_ARRIVED if step == ARRIVE else EVENT_DEPARTED, time=fix.fix_time,
            attributes={**_job_attributes(job), "vehicle": vehicle_id, "stop": stop.pk,
                        "sequence": stop.sequence, "address": stop.address,
                        "latitude": fix.latitude, "longitude": fix.longitude,
                        "distance_m": round(distance, 1)},
        ))
        if step == ARRIVE and job.status in (S.ASSIGNED, S.EN_ROUTE):
            _set_status(job, S.ARRIVED, "auto", f"Arrived at stop {stop.sequence}",
                        fix.fix_time, events)
        elif (step == DEPART and job.status == S.ARRIVED
              and any(s.arrived_at is None for s in stops)):
            _set_status(job, S.EN_ROUTE, "auto", f"Left stop {stop.sequence}", fix.fix_time,
                        events)
    return events


def tracked_vehicle_ids() -> set[int]:
    """Vehicles whose fixes may reach a stop: those of tracked jobs, directly or through
    the job's driver (the vehicles they are the default driver of)."""
    pairs = list(Job.objects.filter(status__in=TRACKED_STATUSES)
                 .filter(stops__latitude__isnull=False, stops__departed_at__isnull=True)
                 .values_list("vehicle_id", "driver_id").distinct())
    vehicles = {v for v, _ in pairs if v is not None}
    drivers = {d for v, d in pairs if v is None and d is not None}
    if drivers:
        vehicles |= set(Vehicle.objects.filter(default_driver_id__in=drivers)
                        .values_list("pk", flat=True))
    return vehicles


class JobTracker(StoredRecordsWorker):
    """Feeds stored fixes to ``track_fixes`` from a thread of its own; see the module doc.

    The pipeline listener runs in the event loop, so it only keeps the fixes of vehicles
    with open jobs (a set the thread refreshes every ``refresh_s``) and queues them.
    """

    thread_name = "job-tracker"

    def __init__(self, *, refresh_s: float = 2.0):
        super().__init__()
        self.refresh_s = refresh_s
        self.tracked: frozenset[int] = frozenset()
        self.failures = 0

    def listener(self, positions: list, moved: set[int]) -> None:
        tracked = self.tracked
        if not tracked:
            return
        rows = [(p.vehicle_id, p.fix) for p in positions
                if p.vehicle_id in tracked and p.fix.valid]
        if rows:
            self.submit(rows)

    def refresh(self) -> None:
        """Re-read which vehicles have open jobs (the thread does every refresh_s)."""
        self.tracked = frozenset(tracked_vehicle_ids())

    def run(self) -> None:
        last_refresh = 0.0
        try:
            while True:
                if time.monotonic() - last_refresh >= self.refresh_s:
                    self._guarded(self.refresh)
                    last_refresh = time.monotonic()
                item = self.take(self.refresh_s)
                if item is STOP:
                    return
                if item is None:
                    continue
                by_vehicle: dict[int, list] = defaultdict(list)
                for vehicle_id, fix in item:
                    by_vehicle[vehicle_id].append(fix)
                self._guarded(track_fixes, by_vehicle)
                self.done()
        finally:
            self.done(self._busy)  # wake anyone waiting: nothing more will be done
            with contextlib.suppress(DatabaseError):
                connection.close()

    def _guarded(self, function, *args) -> None:
        """A failure costs at most this batch: the next fix at a stop is detected again."""
        try:
            function(*args)
        except DatabaseError as error:
            self.failures += 1
            logger.warning("Job tracking failed (%s); carrying on", error)
            with contextlib.suppress(DatabaseError):
                connection.close()
            close_old_connections()
        except Exception:
            self.failures += 1
            logger.exception("Job tracking failed")


def attach_job_tracker(pipeline) -> JobTracker | None:
    """Detect arrivals at job stops from what ``pipeline`` stores (``JOBS_LIVE``).

    Reachable as ``pipeline.job_tracker``; stopped after the pipeline stops.
    """
    if not getattr(settings, "JOBS_LIVE", True):
        return None
    return attach_worker(pipeline, JobTracker(), "job_tracker")
