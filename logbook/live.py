"""Live trip derivation in the ingest process, off the event loop.

``attach_trip_tracker(pipeline)`` (one line in ``telematics.ingest.runner.start_ingest``)
registers a ``TripTracker`` as a stored-records listener of the ingest pipeline. The
listener runs in the event loop after each committed batch, so it only puts the
batch's positions on a queue; one worker thread of the tracker's own takes them off,
groups them by vehicle and derives trips with ``logbook.derivation`` (its own database
connection, one transaction per vehicle). Between batches, and at least every
``LOGBOOK_HOUSEKEEPING_S``, the worker closes the trips of silent vehicles and looks up
missing addresses. A database outage only delays the logbook: the positions are in the
database already, and the vehicles that failed are retried with backoff.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import defaultdict
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, OperationalError, close_old_connections, connection
from django.utils import timezone

from fleet.models import Vehicle
from logbook.derivation import NewFix, catch_up, close_silent_vehicles, derive_new_fixes
from logbook.geocoding import configured_geocoder, geocode_pending_trips
from logbook.models import VehicleTripState

logger = logging.getLogger(__name__)

_STOP = object()


class TripTracker:
    """Derives trips from the positions the ingest pipeline stores; see the module doc."""

    def __init__(
        self,
        *,
        housekeeping_s: float | None = None,
        settle_s: float = 1.0,
        max_wait_s: float = 15.0,
        geocode: bool = True,
    ):
        self.housekeeping_s = (
            housekeeping_s if housekeeping_s is not None
            else float(getattr(settings, "LOGBOOK_HOUSEKEEPING_S", 30.0))
        )
        self.settle_s = settle_s
        self.max_wait_s = max_wait_s
        self.geocode = geocode
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: dict[int, list[NewFix]] = defaultdict(list)
        self._busy = 0
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="logbook-trips", daemon=True)
        self._stopping = False
        self.failures = 0

    # ------------------------------------------------------------- event-loop side

    def listener(self, positions: list, moved: set[int]) -> None:
        """The pipeline's stored listener: queue the batch, return at once."""
        rows = [(p.vehicle_id, NewFix(p.device_id, p.server_time, p.fix))
                for p in positions if p.vehicle_id is not None]
        if rows:
            with self._idle:
                self._busy += 1
            self._queue.put(rows)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the queued work and end the thread (and its database connection)."""
        self._stopping = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every queued batch is derived (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy or self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    # ------------------------------------------------------------- worker side

    def _run(self) -> None:
        try:
            self._catch_up()
            last_housekeeping = time.monotonic()
            backoff = 0.0
            stop = False
            while not stop:
                now = time.monotonic()
                timeout = self.housekeeping_s - (now - last_housekeeping)
                if self._pending:
                    timeout = min(timeout, self.settle_s)
                timeout = max(0.05, backoff or timeout)
                try:
                    item = self._queue.get(timeout=timeout)
                except queue.Empty:
                    item = None
                taken = 0
                while item is not None:
                    if item is _STOP:
                        stop = True
                    else:
                        taken += 1
                        arrived = time.monotonic()
                        for vehicle_id, row in item:
                            self._pending[vehicle_id].append(row)
                            self._first.setdefault(vehicle_id, arrived)
                            self._last[vehicle_id] = arrived
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        item = None
                with self._idle:
                    self._busy -= taken
                ok = self._derive_pending(everything=stop)
                backoff = 0.0 if ok else min(max(backoff * 2, 0.5), 30.0)
                if ok and time.monotonic() - last_housekeeping >= self.housekeeping_s:
                    self._housekeeping()
                    last_housekeeping = time.monotonic()
        finally:
            with self._idle:
                self._pending.clear()
                self._busy = 0
                self._idle.notify_all()
            with contextlib.suppress(DatabaseError):
                connection.close()

    def _derive_pending(self, everything: bool = False) -> bool:
        """Derive the vehicles whose positions have settled; False if the database failed.

        A vehicle's positions wait until none came for ``settle_s`` (at most
        ``max_wait_s``): a unit uploading a backlog in many packets is then derived once,
        not re-derived packet by packet.
        """
        ok = True
        now = time.monotonic()
        for vehicle_id in list(self._pending):
            if not everything and (
                now - self._last[vehicle_id] < self.settle_s
                and now - self._first[vehicle_id] < self.max_wait_s
            ):
                continue
            rows = self._pending[vehicle_id]
            try:
                vehicle = Vehicle.objects.select_related(
                    "organisation", "default_driver").filter(pk=vehicle_id).first()
                if vehicle is not None:
                    derive_new_fixes(vehicle, rows, now=timezone.now())
            except (OperationalError, DatabaseError) as error:
                self.failures += 1
                logger.warning("Trip derivation for vehicle %s failed, will retry: %s",
                               vehicle_id, error)
                self._reset_connection()
                ok = False
                break
            except Exception:
                self.failures += 1
                logger.exception("Trip derivation for vehicle %s failed", vehicle_id)
            with self._idle:
                del self._pending[vehicle_id]
                self._first.pop(vehicle_id, None)
                self._last.pop(vehicle_id, None)
                self._idle.notify_all()
        return ok

    def _housekeeping(self, now: datetime | None = None) -> None:
        try:
            close_silent_vehicles(now or timezone.now())
            if self.geocode:
                geocoder = configured_geocoder()
                geocode_pending_trips(geocoder, limit=20)
        except DatabaseError as error:
            logger.warning("Logbook housekeeping failed, will retry: %s", error)
            self._reset_connection()
        except Exception:
            logger.exception("Logbook housekeeping failed")

    def _catch_up(self) -> None:
        """Positions stored while no tracker ran: feed them before the first batch."""
        try:
            for vehicle_id in VehicleTripState.objects.filter(
                    machine__isnull=False).values_list("vehicle_id", flat=True):
                vehicle = Vehicle.objects.select_related("organisation").get(pk=vehicle_id)
                catch_up(vehicle)
        except DatabaseError as error:
            logger.warning("Trip tracker could not catch up: %s", error)
            self._reset_connection()
        except Exception:
            logger.exception("Trip tracker could not catch up")

    @staticmethod
    def _reset_connection() -> None:
        with contextlib.suppress(DatabaseError):
            connection.close()
        close_old_connections()


def attach_trip_tracker(pipeline) -> TripTracker | None:
    """Derive trips live from what ``pipeline`` stores (``LOGBOOK_LIVE``, on by default).

    The tracker is stopped (queue drained, thread ended, connection closed) after the
    pipeline stops, so ``IngestService.stop`` needs no change; it is reachable as
    ``pipeline.trip_tracker``.
    """
    if not getattr(settings, "LOGBOOK_LIVE", True):
        return None
    tracker = TripTracker()
    tracker.start()
    pipeline.stored_listeners.append(tracker.listener)
    pipeline.trip_tracker = tracker
    stop_pipeline = pipeline.stop

    async def stop() -> None:
        import asyncio

        await stop_pipeline()
        await asyncio.get_running_loop().run_in_executor(None, tracker.stop)

    pipeline.stop = stop
    return tracker
