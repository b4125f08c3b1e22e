"""Live trip derivation in the ingest process, off the event loop, for a whole fleet.

``attach_trip_tracker(pipeline)`` (one line in ``telematics.ingest.runner.start_ingest``)
registers a ``TripTracker`` (a ``StoredRecordsWorker``) as a stored-records listener of
the ingest pipeline. The listener runs in the event loop after each committed batch, so
it only queues the batch. One worker thread of the tracker's own (its own database
connection) derives what is queued with a ``logbook.derivation.LiveFleet``: machines stay
in memory, a fix that decides nothing costs no query, what is decided (a trip started or
ended, an odometer gap) is written for all vehicles of a round in one transaction, and
each machine is saved at most every ``LOGBOOK_LIVE_FLUSH_S`` in one bulk UPDATE.

Bounded, and nothing lost: positions are stored before the listener sees them, so when
``LOGBOOK_LIVE_MAX_QUEUED`` rows are waiting the listener drops the batch and notes its
vehicles as *behind* (and drops their later rows too). Whenever the queue is empty the
worker catches behind vehicles up from the stored positions, a chunk of vehicles a
query at a time (``benchmarks/bench_live_trips.py``: either way derives a multiple of
what a full fleet sends, so a tracker that fell behind catches up). Startup is the same
catch-up (every vehicle with a saved machine is behind until read), and so is a failed
write: the vehicle goes behind and is derived again from the database (after a backoff
when the database is down).

Between rounds, and at least every ``LOGBOOK_HOUSEKEEPING_S``, the worker closes the
trips of silent vehicles, re-reads thresholds and looks up missing addresses.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from logbook.derivation import (
    LiveFleet,
    Missed,
    Row,
    close_silent_vehicles,
    live_row,
    pause,
)
from logbook.geocoding import configured_geocoder, geocode_pending_trips
from logbook.models import VehicleTripState
from telematics.ingest.workers import STOP, StoredRecordsWorker, attach_worker

logger = logging.getLogger(__name__)

MAX_ROUND_ROWS = 20_000  # queued rows taken into one round at most


@dataclass(slots=True)
class _Barrier:
    """Queued by ``wait_idle``: set once everything queued before it is derived, every
    vehicle behind caught up and every machine saved."""

    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = True


class TripTracker(StoredRecordsWorker):
    """Derives trips from the positions the ingest pipeline stores; see the module doc."""

    thread_name = "logbook-trips"

    def __init__(
        self,
        *,
        housekeeping_s: float | None = None,
        flush_s: float | None = None,
        max_queued: int | None = None,
        settle_s: float = 1.0,
        max_wait_s: float = 15.0,
        resume_chunk: int = 1000,
        round_s: float = 0.25,
        geocode: bool = True,
    ):
        super().__init__()
        self.housekeeping_s = (
            housekeeping_s if housekeeping_s is not None
            else float(getattr(settings, "LOGBOOK_HOUSEKEEPING_S", 30.0))
        )
        self.max_queued = (max_queued if max_queued is not None
                           else int(getattr(settings, "LOGBOOK_LIVE_MAX_QUEUED", 50_000)))
        self.fleet = LiveFleet(
            flush_s=(flush_s if flush_s is not None
                     else float(getattr(settings, "LOGBOOK_LIVE_FLUSH_S", 60.0))),
            settle_s=settle_s, max_wait_s=max_wait_s,
        )
        self.resume_chunk = resume_chunk
        # A round takes what arrived in at least this long: the pipeline commits up to
        # fifty batches a second, and each round that decides something is a transaction.
        self.round_s = round_s
        self.geocode = geocode
        self._lock = threading.Lock()  # the queue bound and the vehicles behind
        self._queued = 0  # rows queued and not yet derived
        self._behind: dict[int, Missed] = {}
        self._starting = True
        self._shedding = False
        self._stopping = False
        self.dropped = 0  # rows dropped (derived later from the database)
        self.caught_up = 0  # vehicles caught up from the database
        self.failures = 0  # rounds the database failed
        # Wall and CPU seconds spent, by step (for benchmarks).
        self.busy_s: dict[str, float] = {}
        self.cpu_s: dict[str, float] = {}

    # ------------------------------------------------------------- event-loop side

    def listener(self, positions: list, moved: set[int]) -> None:
        """The pipeline's stored listener: queue the batch, return at once.

        Past ``max_queued`` waiting rows (and until the worker has read which vehicles
        it must catch up at startup) the batch is dropped instead and its vehicles are
        noted as behind, as are the later positions of vehicles already behind.
        """
        if not positions:
            return
        with self._lock:
            shed = self._starting or self._queued + len(positions) > self.max_queued
            if not shed and not self._behind:
                self._queued += len(positions)
                self.submit(positions)
                return
            if shed and not self._shedding and not self._starting:
                logger.warning("Trip tracker has %d positions queued (at most %d): dropping "
                               "batches, their vehicles are derived from the database once "
                               "it has caught up", self._queued, self.max_queued)
            self._shedding = shed
            behind = self._behind
            keep = []
            for p in positions:
                vehicle_id = p.vehicle_id
                if vehicle_id is None:
                    continue
                if shed or vehicle_id in behind:
                    mark = behind.get(vehicle_id)
                    if mark is None:
                        mark = behind[vehicle_id] = Missed()
                    mark.add(p.fix.fix_time, p.server_time)
                    self.dropped += 1
                else:
                    keep.append(p)
            if keep:
                self._queued += len(keep)
                self.submit(keep)

    @property
    def queued(self) -> int:
        """Rows waiting in the queue."""
        return self._queued

    @property
    def behind(self) -> int:
        """Vehicles waiting for a catch-up from the database."""
        return len(self._behind)

    def stop(self, timeout: float = 10.0) -> None:
        """Derive what is queued, save every machine, then end the thread."""
        self._stopping = True
        super().stop(timeout)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until everything queued so far is derived and written, every vehicle
        behind caught up and every machine saved (for tests and shutdown)."""
        if not self._thread.is_alive():
            return super().wait_idle(0)
        barrier = _Barrier()
        self.submit(barrier)
        return barrier.done.wait(timeout) and barrier.ok

    # ------------------------------------------------------------- worker side

    def run(self) -> None:
        try:
            self._start_up()
            last_housekeeping = time.monotonic()
            backoff = 0.0
            backoff_until = 0.0
            last_round = 0.0
            while True:
                item = self.take(self._timeout(last_housekeeping, backoff_until))
                gather = last_round + self.round_s - time.monotonic()
                if item is not None and gather > 0:
                    time.sleep(gather)
                last_round = time.monotonic()
                positions: list[list] = []
                barriers: list[_Barrier] = []
                taken = rows = 0
                stop = False
                while item is not None:
                    taken += 1
                    if item is STOP:
                        stop = True
                    elif isinstance(item, _Barrier):
                        barriers.append(item)
                    else:
                        positions.append(item)
                        rows += len(item)
                    if stop or rows >= MAX_ROUND_ROWS:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        item = None
                everything = stop or bool(barriers)
                if time.monotonic() < backoff_until and not everything:
                    self._set_aside(positions)
                    ok = False
                else:
                    ok = self._round(positions, everything)
                if ok:
                    backoff = 0.0
                else:
                    self.failures += 1
                    backoff = min(max(backoff * 2, 0.5), 30.0)
                    backoff_until = time.monotonic() + backoff
                if ok and time.monotonic() - last_housekeeping >= self.housekeeping_s:
                    self._housekeeping()
                    last_housekeeping = time.monotonic()
                for barrier in barriers:
                    barrier.ok = ok
                    barrier.done.set()
                self.done(taken)
                if stop:
                    return
        finally:
            self.done(self._busy)  # wake anyone waiting: nothing more will be done
            with contextlib.suppress(DatabaseError):
                connection.close()

    def _timeout(self, last_housekeeping: float, backoff_until: float) -> float:
        now = time.monotonic()
        timeout = self.housekeeping_s - (now - last_housekeeping)
        fleet = self.fleet
        if fleet.late:
            timeout = min(timeout, fleet.settle_s)
        if fleet.dirty:
            first = next(iter(fleet.dirty.values()))
            timeout = min(timeout, fleet.flush_s - (now - first))
        if self._behind:
            timeout = min(timeout, 0.05)
        if backoff_until > now:
            timeout = max(timeout, backoff_until - now)
        return max(0.05, timeout)

    def _round(self, positions: list[list], everything: bool) -> bool:
        """Derive the taken batches, (when the queue is empty) a chunk of the vehicles
        behind and the settled late fixes, then save due machines; False if the database
        failed."""
        now = timezone.now()
        batch: dict[int, list[Row]] = {}
        count = 0
        for rows in positions:
            count += len(rows)
            for p in rows:
                if p.vehicle_id is not None:
                    batch.setdefault(p.vehicle_id, []).append(
                        live_row(p.device_id, p.server_time, p.fix))
            pause()  # see logbook.derivation.pause
        ok = True
        clock = (time.perf_counter(), time.thread_time())
        if batch:
            missed, ok = self.fleet.feed(batch, now)
            self._note_behind(missed)
            clock = self._spent("feed", clock)
        with self._lock:
            self._queued -= count
        if ok and (everything or self._queue.empty()):
            ok = self._resume(everything)
            clock = self._spent("catch_up", clock)
        # After the catch-up, which may find late fixes among what was dropped.
        missed, late_ok = self.fleet.derive_late(now, everything=everything)
        self._note_behind(missed)
        ok = ok and late_ok
        clock = self._spent("late", clock)
        if ok:
            ok = self.fleet.flush(everything=everything)
            self._spent("save", clock)
        return ok

    def _spent(self, step: str, since: tuple[float, float]) -> tuple[float, float]:
        now = (time.perf_counter(), time.thread_time())
        self.busy_s[step] = self.busy_s.get(step, 0.0) + now[0] - since[0]
        self.cpu_s[step] = self.cpu_s.get(step, 0.0) + now[1] - since[1]
        return now

    def _resume(self, everything: bool) -> bool:
        """Catch up a chunk of the vehicles behind (all of them with ``everything``)."""
        rounds = len(self._behind) // self.resume_chunk + 2
        for _ in range(rounds):
            mono = time.monotonic()
            with self._lock:
                due = [v for v, mark in self._behind.items()
                       if everything or mark.not_before <= mono][:self.resume_chunk]
                picked = {v: self._behind.pop(v) for v in due}
                if not self._behind:
                    self._shedding = False
            if not picked:
                return True
            missed, ok = self.fleet.resume(picked, timezone.now())
            self._note_behind(missed)
            self.caught_up += len(picked) - len(missed)
            if not ok:
                return False
            if not everything:
                return True
        return True

    def _set_aside(self, positions: list[list]) -> None:
        """Batches taken while the database is down: derived later from the database."""
        missed: dict[int, Missed] = {}
        count = 0
        for rows in positions:
            count += len(rows)
            for p in rows:
                if p.vehicle_id is not None:
                    missed.setdefault(p.vehicle_id, Missed()).add(p.fix.fix_time, p.server_time)
        with self._lock:
            self._queued -= count
        self._note_behind(missed)

    def _note_behind(self, missed: dict[int, Missed]) -> None:
        if not missed:
            return
        with self._lock:
            for vehicle_id, mark in missed.items():
                known = self._behind.get(vehicle_id)
                if known is None:
                    self._behind[vehicle_id] = mark
                else:
                    known.merge(mark)

    def _start_up(self) -> None:
        """Every vehicle with a saved machine may have positions stored while no tracker
        ran: all are behind, caught up as soon as the queue lets."""
        delay = 0.5
        while True:
            try:
                vehicle_ids = list(VehicleTripState.objects.filter(
                    machine__isnull=False).values_list("vehicle_id", flat=True))
                break
            except DatabaseError as error:
                logger.warning("Trip tracker cannot read the saved machines yet: %s", error)
                self._reset_connection()
                if self._stopping:
                    return
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        with self._lock:
            for vehicle_id in vehicle_ids:
                self._behind.setdefault(vehicle_id, Missed())
            self._starting = False

    def _housekeeping(self) -> None:
        now = timezone.now()
        try:
            self.fleet.refresh()
            missed, _ = self.fleet.close_silent(now)
            self._note_behind(missed)
            with self._lock:
                skip = set(self.fleet.entries) | set(self._behind) | set(self.fleet.late)
            close_silent_vehicles(now, skip=skip)
            if self.geocode:
                geocode_pending_trips(configured_geocoder(), limit=20)
        except DatabaseError as error:
            logger.warning("Logbook housekeeping failed, will retry: %s", error)
            self._reset_connection()
        except Exception:
            logger.exception("Logbook housekeeping failed")

    @staticmethod
    def _reset_connection() -> None:
        with contextlib.suppress(DatabaseError):
            connection.close()
        close_old_connections()


def attach_trip_tracker(pipeline) -> TripTracker | None:
    """Derive trips live from what ``pipeline`` stores (``LOGBOOK_LIVE``, on by default).

    The tracker is stopped (queue derived, machines saved, thread ended, connection
    closed) after the pipeline stops, so ``IngestService.stop`` needs no change; it is
    reachable as ``pipeline.trip_tracker``.
    """
    if not getattr(settings, "LOGBOOK_LIVE", True):
        return None
    tracker = TripTracker()
    attach_worker(pipeline, tracker, "trip_tracker")
    return tracker
