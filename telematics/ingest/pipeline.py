"""The one ingest pipeline every transport hands its decoded records to.

``await pipeline.store(unit, protocol, decoded)`` returns only once the records are
committed, so a transport that acknowledges after it has acknowledged stored data. Records
from every connection are gathered into batches (up to ``batch_max`` rows or
``batch_wait`` seconds) and written by one worker in a dedicated database thread. While
the database is down the worker retries the same batch with backoff: the callers simply
wait, nothing is acknowledged, and storing resumes by itself. Live updates are published
after commit from a separate task, so a slow or absent Redis never holds up storing.

A batch the database refuses outright (an integrity or data error: a vehicle or device
deleted while its unit was connected, a value PostgreSQL cannot hold) is never retried
as a whole, which would stall every unit behind it: it is split until the refused
frame is alone, the good frames are stored and acknowledged, and the refused one is
retried once with the unit looked up afresh, then failed with ``RecordsRefused`` (the
transport does not acknowledge it and says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.db import DataError, IntegrityError, connection
from django.db import Error as DatabaseError

from telematics import metrics
from telematics.can.signals import SignalSample
from telematics.can.teltonika_io import signals_from_io
from telematics.ingest.connections import drop_broken_connection
from telematics.ingest.directory import Unit
from telematics.ingest.filters import FixFilter
from telematics.ingest.store import CanRows, PositionRow, ResponseRow, UnitReport, store_batch
from telematics.ingest.thinning import SignalThinner
from telematics.protocols.base import Decoded

logger = logging.getLogger(__name__)

# A device's last_seen is written at most this often (seconds): it feeds the offline
# alert and the admin, which count in minutes, and writing it for every batch would cost
# an UPDATE row per unit per second at fleet scale.
LAST_SEEN_EVERY_S = 30.0

# What a unit says about itself (GT06 heartbeats and alarm packets, OsmAnd's battery):
# kept as the vehicle's unit status, not as position attributes only.
UNIT_STATUS_FIELDS = ("charging", "armed", "oil_cut", "gps_tracking", "voltage_level",
                      "gsm_signal", "external_voltage", "battery_level", "ignition")
STATUS_EVENTS = {"heartbeat", "alarm", "information"}

StoredListener = Callable[[list[PositionRow], set[int]], None]


class RecordsRefused(Exception):
    """The database refused a frame's records for good (not an outage); not acknowledged."""


class _Refused(Exception):
    """A batch hit an integrity or data error: split it, never retry it whole."""


@dataclass(slots=True)
class _Pending:
    positions: list[PositionRow]
    responses: list[ResponseRow]
    unit: Unit
    done: asyncio.Future = field(repr=False)
    can_rows: CanRows | None = None
    report: UnitReport | None = None


class IngestPipeline:
    def __init__(
        self,
        *,
        fix_filter: FixFilter | None = None,
        batch_max: int = 5000,
        batch_wait: float = 0.02,
        store_raw: bool = False,
        channel_layer=None,
    ):
        self.fix_filter = fix_filter or FixFilter()
        self.thinner = SignalThinner()
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        self.store_raw = store_raw
        self.channel_layer = channel_layer
        self.db_executor = ThreadPoolExecutor(1, thread_name_prefix="ingest-store")
        self.lookup_executor = ThreadPoolExecutor(1, thread_name_prefix="ingest-lookup")
        self.stored_listeners: list[StoredListener] = []
        from telematics.ingest.unit_messages import CanDecoderCache

        self.can_decoders = CanDecoderCache(self.lookup_executor)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._live: asyncio.Queue[dict[int, list[dict]] | None] = asyncio.Queue(maxsize=1000)
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self.database_ok = True
        self._last_seen_written: dict[int, float] = {}
        # Set by start_ingest: refreshes a connected unit's vehicle and organisation (a
        # device moved to another vehicle, or deactivated, while its TCP link stays up).
        self.directory = None

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._store_worker(), name="ingest-store"),
            asyncio.create_task(self._live_publisher(), name="ingest-live"),
        ]

    async def stop(self) -> None:
        # Some library code under group_send (the Redis client) can swallow a
        # cancellation; the publisher then went back to waiting on its queue and stop()
        # hung. So it is told to stop by flag and sentinel too, and waited for boundedly.
        self._stopping = True
        with contextlib.suppress(asyncio.QueueEmpty):
            if self._live.full():
                self._live.get_nowait()
        self._live.put_nowait(None)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=5.0)
            for task in stuck:
                logger.warning("Ingest task %s did not stop within 5 s", task.get_name())
        loop = asyncio.get_running_loop()
        for executor in (self.db_executor, self.lookup_executor):
            await loop.run_in_executor(executor, _close_connection)
            executor.shutdown(wait=False)

    def attach_raw(self, decoded: Decoded, frame: bytes) -> None:
        """Keep the frame's hex beside its positions when INGEST_STORE_RAW is on."""
        if self.store_raw:
            for fix in decoded.fixes:
                fix.attributes["raw"] = frame.hex()

    async def store(self, unit: Unit, protocol: str, decoded: Decoded) -> int:
        """Filter and store the decoded records of one frame; returns once committed.

        Returns the number of positions handed to the database (a resend's duplicates
        are among them and silently ignored there).
        """
        if self.directory is not None:
            unit = await self._current(unit)
        now = datetime.now(UTC)
        positions = []
        for fix in decoded.fixes:
            reason = self.fix_filter.reason_to_drop(unit.device_id, fix, now)
            if reason is not None:
                metrics.RECORDS_DROPPED.labels(protocol, reason).inc()
                continue
            positions.append(PositionRow(unit.device_id, unit.vehicle_id,
                                         unit.organisation_id, fix, now))
        responses = [
            ResponseRow(unit.device_id, r.text, r.received_time or now)
            for r in decoded.responses
        ]
        can_rows = self._can_rows(unit, decoded)
        report = _unit_report(unit, decoded, now)
        if not (positions or responses or can_rows or report):
            return 0
        done = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(positions, responses, unit, done, can_rows, report))
        await done
        if positions:
            metrics.RECORDS_STORED.labels(protocol).inc(len(positions))
        return len(positions)

    async def _current(self, unit: Unit) -> Unit:
        """The unit as the directory knows it now (cached); refused if it is gone."""
        try:
            current = await self.directory.refresh(unit)
        except DatabaseError:  # an outage: the unit was valid a minute ago; store will wait
            return unit
        if current is None:
            raise RecordsRefused(f"unit {unit.identifier} is no longer registered or active")
        return current

    def _can_rows(self, unit: Unit, decoded: Decoded) -> CanRows | None:
        """Vehicle signals of a frame: CAN samples plus what Teltonika IO elements carry."""
        if unit.vehicle_id is None:
            return None
        samples = list(decoded.samples)
        for fix in decoded.fixes:
            samples += signals_from_io(fix.attributes, fix.fix_time)
        if not (samples or decoded.faults or decoded.fault_reports):
            return None
        latest: dict[str, SignalSample] = {}
        stored = []
        for sample in samples:
            if sample.time is None:
                continue
            if sample.signal not in latest or sample.time > latest[sample.signal].time:
                latest[sample.signal] = sample
            if self.thinner.keep(unit.vehicle_id, sample):
                stored.append(sample)
        return CanRows(unit.vehicle_id, unit.organisation_id, unit.device_id, stored, latest,
                       list(decoded.faults), dict(decoded.fault_reports))

    async def _store_worker(self) -> None:
        """Gather a batch and write it; one timer a batch, not one per queued frame.

        While a write is in progress frames pile up in the queue, so under load the next
        batch is taken at once; only a lone frame on a quiet queue waits ``batch_wait``
        for company.
        """
        while True:
            batch = [await self._queue.get()]
            if self._queue.empty() and self.batch_wait > 0:
                await asyncio.sleep(self.batch_wait)
            rows = len(batch[0].positions)
            while not self._queue.empty() and rows < self.batch_max:
                item = self._queue.get_nowait()
                batch.append(item)
                rows += len(item.positions)
            await self._write(batch)

    async def _write(self, batch: list[_Pending], *, refreshed: bool = False) -> None:
        try:
            positions, moved = await self._commit(batch)
        except _Refused as refusal:
            await self._split(batch, refusal.__cause__, refreshed)
            return
        except Exception as error:  # a bug, not an outage: isolate the frame that hits it
            if len(batch) > 1:
                await self._split(batch, error, refreshed=True)
                return
            logger.exception("Storing a frame of unit %s failed", batch[0].unit.identifier)
            if not batch[0].done.done():
                batch[0].done.set_exception(error)
            return
        for item in batch:
            if not item.done.done():
                item.done.set_result(None)
        if moved:
            self._queue_live_update(positions, moved)
        for listener in self.stored_listeners:
            try:
                listener(positions, moved)
            except Exception:
                logger.exception("A stored-records listener failed")

    async def _commit(self, batch: list[_Pending]) -> tuple[list[PositionRow], set[int]]:
        """Write the batch in one transaction, waiting out database outages."""
        loop = asyncio.get_running_loop()
        positions = [p for item in batch for p in item.positions]
        responses = [r for item in batch for r in item.responses]
        clock = time.monotonic()
        seen = {item.unit.device_id for item in batch
                if clock - self._last_seen_written.get(item.unit.device_id, -1e9)
                >= LAST_SEEN_EVERY_S}
        can_rows = [item.can_rows for item in batch if item.can_rows is not None]
        reports = [item.report for item in batch if item.report is not None]
        delay = 0.2
        while True:
            # server_time is when the row is stored, not when the frame arrived, so a
            # client paging the position feed by server_time never misses a batch that
            # waited out a database outage.
            stored_at = datetime.now(UTC)
            for p in positions:
                p.server_time = stored_at
            try:
                moved = await loop.run_in_executor(
                    self.db_executor, _store_in_thread, positions, responses, seen,
                    stored_at, can_rows, reports,
                )
            except (IntegrityError, DataError) as error:
                metrics.STORE_FAILURES.inc()
                raise _Refused() from error
            except DatabaseError as error:
                metrics.STORE_FAILURES.inc()
                if self.database_ok:
                    logger.error("Storing %d positions failed, retrying: %s",
                                 len(positions), error)
                self.database_ok = False
                await loop.run_in_executor(self.db_executor, _close_connection)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if not self.database_ok:
                logger.info("Database is back; storing resumed")
                self.database_ok = True
            for device_id in seen:
                self._last_seen_written[device_id] = clock
            return positions, moved

    async def _split(self, batch: list[_Pending], error: BaseException | None,
                     refreshed: bool) -> None:
        """Store the good frames of a refused batch; isolate and refuse the bad one."""
        if len(batch) > 1:
            half = len(batch) // 2
            await self._write(batch[:half], refreshed=refreshed)
            await self._write(batch[half:], refreshed=refreshed)
            return
        item = batch[0]
        if not refreshed and self.directory is not None:
            # Most refusals are a stale unit (its device or vehicle deleted or moved since
            # it was looked up): look it up afresh and try once more.
            self.directory.forget(item.unit.identifier)
            try:
                current = await self.directory.refresh(item.unit)
            except DatabaseError:
                current = None
            if current is not None and current != item.unit:
                _rebind(item, current)
                await self._write(batch, refreshed=True)
                return
        logger.error("Records of unit %s refused by the database, not acknowledged: %s",
                     item.unit.identifier, error)
        if not item.done.done():
            item.done.set_exception(RecordsRefused(
                f"the database refused the records of unit {item.unit.identifier}: "
                f"{str(error).strip().splitlines()[0] if error else 'unknown error'}"
            ))

    def _queue_live_update(self, positions: list[PositionRow], moved: set[int]) -> None:
        newest: dict[int, PositionRow] = {}
        for p in positions:
            if p.vehicle_id in moved:
                current = newest.get(p.vehicle_id)
                if current is None or p.fix.fix_time > current.fix.fix_time:
                    newest[p.vehicle_id] = p
        by_organisation: dict[int, list[dict]] = {}
        for vehicle_id, p in newest.items():
            f = p.fix
            by_organisation.setdefault(p.organisation_id, []).append({
                "id": vehicle_id, "fix_time": f.fix_time.isoformat(),
                "latitude": f.latitude, "longitude": f.longitude, "speed_kmh": f.speed_kmh,
                "course": f.course, "ignition": f.ignition,
            })
        if self._live.full():  # live updates are lossy by design; the database is not
            self._live.get_nowait()
        self._live.put_nowait(by_organisation)

    async def _live_publisher(self) -> None:
        from fleet.live import merged_updates, organisation_group

        failing_since: float | None = None
        while True:
            by_organisation = await self._live.get()
            if by_organisation is None or self._stopping:
                return
            if self.channel_layer is None:
                continue
            # Behind (a busy loop, a slow Redis)? Send what waits as one message with the
            # newest state of each vehicle (fleet.live.merged_updates), not stale batches.
            batches = [by_organisation]
            while not self._live.empty() and batches[-1] is not None:
                batches.append(self._live.get_nowait())
            if batches[-1] is None:
                return
            by_organisation = merged_updates(batches)
            try:
                for organisation_id, vehicles in by_organisation.items():
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
                    # cancellation that arrives as the send completes, and this task then
                    # never ends (the pipeline's stop() hung on it).
                    async with asyncio.timeout(2.0):
                        await self.channel_layer.group_send(
                            organisation_group(organisation_id),
                            {"type": "vehicles.update", "vehicles": vehicles},
                        )
                if failing_since is not None:
                    logger.info("Live updates resumed")
                    failing_since = None
            except Exception as error:
                if failing_since is None:
                    logger.warning("Live updates failing (storing goes on): %r", error)
                    failing_since = time.monotonic()


def _unit_report(unit: Unit, decoded: Decoded, now: datetime) -> UnitReport | None:
    """The unit's status and alarms in a frame, or None when it said nothing of the kind."""
    status: dict = {}
    alarms: list[dict] = []
    for event in decoded.events:
        if event.get("type") in STATUS_EVENTS:
            status.update((k, event[k]) for k in UNIT_STATUS_FIELDS if k in event)
        if event.get("alarm"):
            alarms.append({"alarm": event["alarm"], "protocol_event": event.get("type")})
    for fix in decoded.fixes:
        # A fix's own status fields (Teltonika's GSM level on every record) reach the
        # vehicle state with the fix's attributes; only an alarm's are taken here, as
        # its fix may be unpositioned and never stored.
        attributes = fix.attributes
        if attributes.get("alarm"):
            status.update((k, attributes[k]) for k in UNIT_STATUS_FIELDS if k in attributes)
            alarms.append({"alarm": attributes["alarm"], "time": fix.fix_time,
                           "latitude": fix.latitude, "longitude": fix.longitude,
                           "speed_kmh": fix.speed_kmh, "valid": fix.valid})
    if not (status or alarms):
        return None
    return UnitReport(unit.vehicle_id, unit.organisation_id, unit.device_id, now, status,
                      alarms)


def _rebind(item: _Pending, unit: Unit) -> None:
    """Point a pending frame's rows at the unit's current device, vehicle, organisation."""
    item.unit = unit
    for p in item.positions:
        p.device_id, p.vehicle_id, p.organisation_id = (
            unit.device_id, unit.vehicle_id, unit.organisation_id)
    for r in item.responses:
        r.device_id = unit.device_id
    if item.report is not None:
        item.report.vehicle_id, item.report.organisation_id, item.report.device_id = (
            unit.vehicle_id, unit.organisation_id, unit.device_id)
    if item.can_rows is not None:
        if unit.vehicle_id is None:
            item.can_rows = None
        else:
            item.can_rows.vehicle_id = unit.vehicle_id
            item.can_rows.organisation_id = unit.organisation_id
            item.can_rows.device_id = unit.device_id


def _store_in_thread(*args) -> set[int]:
    drop_broken_connection()
    return store_batch(*args)


def _close_connection() -> None:
    with contextlib.suppress(DatabaseError):
        connection.close()
