"""Many simulated Teltonika units over TCP against a real ingest listener.

Used by ``manage.py simulate``, the ingest benchmark and the tests; later by the demo and
the reliability suite. Each unit does what an FMB unit does: it opens a connection, logs
in with its IMEI, waits for ``01``, then sends Codec 8 AVL packets and waits for the
4-byte record count before it forgets the records and sends the next packet.

Two modes:

- ``live``: every unit takes a record every ``1 / rate`` seconds (units are spread evenly
  over that interval so the listener sees a steady stream, not a burst a second) and
  sends them ``records_per_packet`` at a time. Records taken while a packet is still
  waiting for its ack pile up and go together in the next packet, as on a real unit;
  such catch-up packets are counted, since they mean the server fell behind.
- ``backlog``: every unit flushes ``packets`` packets of ``records_per_packet`` records
  (fixes from the recent past, a second apart) as fast as the acks come back, as units
  do after a stretch without coverage.

With ``can=True`` the units also report CAN adapter IO elements (vehicle speed and fuel
level), so the records go through the vehicle-signal path of the pipeline too.

Units run as plain protocol callbacks on one event loop, with no task per unit, so one
core can drive ten thousand of them and the figures measure the listener rather than
the load generator. The loop's own lateness is measured too (``tick_lag``): when it
grows, the acknowledgement latency includes the generator's queueing.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import zlib
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from telematics.protocols.base import Fix
from telematics.simulator.encoders import teltonika_avl, teltonika_login

__all__ = [
    "MODES",
    "SUPPORTED_PROTOCOLS",
    "Drive",
    "LoadResult",
    "load_imeis",
    "register_units",
    "run_units",
]

SUPPORTED_PROTOCOLS = ("teltonika",)
MODES = ("live", "backlog")
ORGANISATION = "Load Test"
MAX_RECORDS_PER_PACKET = 50  # a unit catching up sends at most this many records at once
BACKLOG_SPACING = timedelta(seconds=1)  # between records a unit saved while offline
METRES_PER_DEGREE = 111_320.0
IO_ELEMENTS = {21: 4, 240: 1}  # GSM signal 4 of 5, movement on: a typical 1-byte IO set
CAN_SPEED_IO = 81  # LV-CAN200 vehicle speed, km/h
CAN_FUEL_LEVEL_IO = 89  # LV-CAN200 fuel level, %


# --- unit identities --------------------------------------------------------------------


def _luhn_digit(digits: str) -> str:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:  # doubled: the check digit will sit to the right of it
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return str((10 - total % 10) % 10)


def load_imeis(count: int, first: int = 0, prefix: str = "35999900") -> list[str]:
    """``count`` valid 15-digit IMEIs (Luhn check digit), numbered from ``first``.

    The same numbers always give the same IMEIs, so a benchmark registers them once and
    later runs reuse them; different ranges never collide.
    """
    if len(prefix) != 8 or not prefix.isdigit():
        raise ValueError("the prefix is an 8-digit type allocation code")
    if first < 0 or first + count > 1_000_000:
        raise ValueError("load units are numbered 0-999999")
    return [_imei(prefix, serial) for serial in range(first, first + count)]


def _imei(prefix: str, serial: int) -> str:
    digits = f"{prefix}{serial:06d}"
    return digits + _luhn_digit(digits)


def register_units(imeis: Sequence[str], organisation_name: str = ORGANISATION) -> int:
    """Register the units (one vehicle each) that are not registered yet; returns how many.

    Goes through ``register_unit`` like an operator would, so the benchmark measures the
    same devices the product creates. Synchronous (ORM): call it from a thread in async
    code.
    """
    from django.db import transaction

    from fleet.services import get_or_create_organisation
    from telematics.models import Device
    from telematics.services import register_unit

    organisation = get_or_create_organisation(organisation_name)
    known = set(
        Device.objects.filter(identifier__in=list(imeis)).values_list("identifier", flat=True)
    )
    missing = [imei for imei in imeis if imei not in known]
    for start in range(0, len(missing), 500):  # one commit per 500 units, not per unit
        with transaction.atomic():
            for imei in missing[start : start + 500]:
                register_unit(imei, "teltonika", organisation, vehicle_name=f"Load {imei}")
    return len(missing)


# --- where the units drive --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Drive:
    """A unit's route: laps of a circle at constant speed, so any two fixes agree.

    The position is a function of the fix time alone (counted from ``epoch``), so fixes
    taken in any order, in the past for a backlog or now for live, all lie on one
    plausible track: no implied-speed jumps for the ingest filter to drop.
    """

    epoch: datetime
    latitude: float  # centre of the circle
    longitude: float
    radius_m: float
    speed_kmh: float
    bearing: float  # of the unit from the centre at the epoch, degrees
    altitude: float
    odometer_km: float  # at the epoch

    @classmethod
    def for_unit(cls, index: int, epoch: datetime) -> Drive:
        """A route around the Berlin area, the same for the same unit number."""
        pick = random.Random(index)
        return cls(
            epoch=epoch,
            latitude=52.52 + pick.uniform(-0.2, 0.2),
            longitude=13.405 + pick.uniform(-0.3, 0.3),
            radius_m=pick.uniform(1_000, 5_000),
            speed_kmh=float(pick.randrange(30, 91)),
            bearing=pick.uniform(0, 360),
            altitude=float(pick.randrange(30, 70)),
            odometer_km=float(pick.randrange(10_000, 200_000)),
        )

    def fix(self, when: datetime) -> Fix:
        """The fix at ``when`` (whole milliseconds, as Teltonika timestamps are)."""
        metres = self.speed_kmh / 3.6 * (when - self.epoch).total_seconds()
        angle = math.radians(self.bearing) + metres / self.radius_m  # clockwise laps
        north = self.radius_m * math.cos(angle)
        east = self.radius_m * math.sin(angle)
        return Fix(
            fix_time=when,
            latitude=self.latitude + north / METRES_PER_DEGREE,
            longitude=self.longitude
            + east / (METRES_PER_DEGREE * math.cos(math.radians(self.latitude))),
            altitude=self.altitude,
            speed_kmh=self.speed_kmh,
            course=(math.degrees(angle) + 90.0) % 360.0,
            satellites=9,
            ignition=True,
            odometer_km=round(self.odometer_km + metres / 1000, 3),
        )


# --- results ----------------------------------------------------------------------------


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (``share`` 0-1) of unsorted values; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


@dataclass
class LoadResult:
    """What the units saw; updated while the run goes on, so progress can print it.

    ``latencies`` are seconds from writing a packet to reading its ack; ``tick_lag`` is
    how late the generator's own loop was for the live records it had to take.
    """

    mode: str
    units: int
    connected: int = 0
    refused: int = 0
    lost: int = 0  # connection failed, dropped, or an ack overdue
    packets_sent: int = 0
    packets_acked: int = 0
    records_sent: int = 0
    records_acked: int = 0
    wrong_acks: int = 0  # acks whose count is not the packet's record count
    catch_up_packets: int = 0
    connect_seconds: float = 0.0
    elapsed: float = 0.0  # from the first record sent until the last unit finished
    acked_by_unit: dict[str, int] = field(default_factory=dict)
    latencies: array = field(default_factory=lambda: array("d"))
    tick_lag: array = field(default_factory=lambda: array("d"))

    def latency_ms(self, share: float) -> float:
        return percentile(self.latencies, share) * 1000

    def tick_lag_ms(self, share: float) -> float:
        return percentile(self.tick_lag, share) * 1000

    @property
    def acks_per_second(self) -> float:
        return self.packets_acked / self.elapsed if self.elapsed else 0.0

    @property
    def records_per_second(self) -> float:
        return self.records_acked / self.elapsed if self.elapsed else 0.0

    @property
    def complete(self) -> bool:
        """Every unit connected and every record it sent was acknowledged, correctly."""
        return (
            self.connected == self.units
            and not self.lost
            and not self.wrong_acks
            and self.records_acked == self.records_sent
        )

    def summary(self) -> str:
        lines = [
            f"mode {self.mode}: {self.connected:,}/{self.units:,} units connected in "
            f"{self.connect_seconds:.1f} s ({self.refused:,} refused, {self.lost:,} lost)",
            f"records acked {self.records_acked:,} of {self.records_sent:,} sent, in "
            f"{self.packets_acked:,} packets over {self.elapsed:.1f} s",
            f"{self.acks_per_second:,.0f} acks/s, {self.records_per_second:,.0f} records/s",
            f"ack latency p50 {self.latency_ms(0.5):.1f} ms, p99 {self.latency_ms(0.99):.1f} ms,"
            f" max {self.latency_ms(1.0):.1f} ms",
        ]
        if self.mode == "live":
            lines.append(
                f"catch-up packets {self.catch_up_packets:,}; generator lateness p99 "
                f"{self.tick_lag_ms(0.99):.1f} ms"
            )
        if self.wrong_acks:
            lines.append(f"WRONG ACKS: {self.wrong_acks:,}")
        return "\n".join(lines)


# --- one unit ---------------------------------------------------------------------------


class _Unit(asyncio.Protocol):
    """One unit's connection and its record buffer, driven by loop callbacks.

    Live units take records from timer callbacks; both modes send the next packet from
    ``data_received`` the moment the previous one is acknowledged.
    """

    def __init__(self, run: _Run, imei: str, drive: Drive) -> None:
        self.run = run
        self.imei = imei
        self.drive = drive
        loop = run.loop
        self.transport: asyncio.Transport | None = None
        self.inbox = bytearray()
        self.login_reply: asyncio.Future[bytes] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.pending: list[Fix] = []
        self.in_flight = 0  # records in the packet awaiting its ack; 0 when none
        self.sent_at = 0.0
        self.overdue: asyncio.TimerHandle | None = None
        self.last_fix_time = datetime.min.replace(tzinfo=UTC)
        self.records_left = 0  # records still to take (live) or to send (backlog)
        self.next_tick = 0.0
        self.acked = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.inbox += data
        if not self.login_reply.done():
            self.login_reply.set_result(bytes(self.inbox[:1]))
            del self.inbox[:1]
        while self.in_flight and len(self.inbox) >= 4:
            count = int.from_bytes(self.inbox[:4], "big")
            del self.inbox[:4]
            self._acknowledged(count)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.login_reply.done():
            self.login_reply.set_exception(ConnectionError("closed before the login reply"))
        unfinished = self.in_flight or self.records_left or self.pending
        if unfinished and not self.finished.done():
            self.run.result.lost += 1
        self._finish()

    # the unit's behaviour

    def take_record(self, when: datetime) -> None:
        """Record a fix at ``when``, later than any before: fix times are unique per unit."""
        when = when.replace(microsecond=when.microsecond // 1000 * 1000)
        if when <= self.last_fix_time:
            when = self.last_fix_time + timedelta(milliseconds=1)
        self.last_fix_time = when
        self.pending.append(self.drive.fix(when))

    def tick(self) -> None:
        """Live mode: take the record due now, send when a packet's worth is waiting."""
        run = self.run
        if self.finished.done():
            return
        run.result.tick_lag.append(max(0.0, run.loop.time() - self.next_tick))
        self.take_record(datetime.now(UTC))
        self.records_left -= 1
        if self.records_left > 0:
            self.next_tick += run.interval
            run.loop.call_at(self.next_tick, self.tick)
        if not self.in_flight and (
            len(self.pending) >= run.records_per_packet or self.records_left <= 0
        ):
            self.send()

    def send(self) -> None:
        run = self.run
        batch = self.pending[:MAX_RECORDS_PER_PACKET]
        del self.pending[: len(batch)]
        if run.mode == "backlog":
            self.records_left -= len(batch)
        elif len(batch) > run.records_per_packet:
            run.result.catch_up_packets += 1
        packet = teltonika_avl(batch, self._io(batch[-1]) if run.can else IO_ELEMENTS)
        self.in_flight = len(batch)
        run.result.packets_sent += 1
        run.result.records_sent += len(batch)
        self.sent_at = run.loop.time()
        self.overdue = run.loop.call_later(run.ack_timeout, self._ack_overdue)
        assert self.transport is not None
        self.transport.write(packet)

    def _acknowledged(self, count: int) -> None:
        run = self.run
        result = run.result
        result.latencies.append(run.loop.time() - self.sent_at)
        if self.overdue is not None:
            self.overdue.cancel()
        if count != self.in_flight:
            result.wrong_acks += 1
            count = min(count, self.in_flight)
        result.packets_acked += 1
        result.records_acked += count
        self.acked += count
        self.in_flight = 0
        if run.mode == "backlog" and self.records_left > 0:
            self.pending = [self._backlog_record() for _ in range(run.records_per_packet)]
            self.send()
        elif self.pending and (
            len(self.pending) >= run.records_per_packet or self.records_left <= 0
        ):
            self.send()
        elif self.records_left <= 0:
            self._finish()

    def _io(self, fix: Fix) -> dict[int, int]:
        """IO elements with a CAN adapter's readings: speed, and fuel burning down slowly."""
        hours = (fix.fix_time - self.drive.epoch).total_seconds() / 3600
        fuel = 90 - round(hours * 5) % 80
        return {**IO_ELEMENTS, CAN_SPEED_IO: round(fix.speed_kmh or 0), CAN_FUEL_LEVEL_IO: fuel}

    def _backlog_record(self) -> Fix:
        self.take_record(self.last_fix_time + BACKLOG_SPACING)
        return self.pending.pop()

    def _ack_overdue(self) -> None:
        self.run.result.lost += 1
        self._finish()

    def _finish(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)
            self.run.result.acked_by_unit[self.imei] = self.acked
        if self.overdue is not None:
            self.overdue.cancel()
        if self.transport is not None:
            self.transport.close()


@dataclass
class _Run:
    loop: asyncio.AbstractEventLoop
    result: LoadResult
    mode: str
    interval: float  # live: seconds between a unit's records
    records_per_packet: int
    ack_timeout: float
    can: bool


# --- the load ---------------------------------------------------------------------------


async def run_units(
    host: str,
    port: int,
    imeis: Sequence[str],
    *,
    mode: str = "live",
    rate: float = 1.0,
    duration: float = 10.0,
    records_per_packet: int | None = None,
    packets: int = 40,
    connect_concurrency: int = 100,
    connect_timeout: float = 60.0,
    ack_timeout: float = 30.0,
    progress: Callable[[LoadResult], None] | None = None,
    progress_interval: float = 1.0,
    on_start: Callable[[], None] | None = None,
    can: bool = False,
) -> LoadResult:
    """Connect the units, play the load, wait for the last ack; returns what they saw.

    ``live``: ``rate`` records per second per unit for ``duration`` seconds, sent
    ``records_per_packet`` (default 1) at a time. ``backlog``: ``packets`` packets of
    ``records_per_packet`` (default 25) records per unit, each sent the moment the
    previous one is acknowledged. Records start once every unit has connected (or
    given up), so the connection storm is not part of the timed run; ``on_start`` is
    called right then (a benchmark samples the listener's CPU time there). ``progress``
    is called with the running result every ``progress_interval`` seconds. ``can`` adds
    CAN adapter IO (speed, fuel level) to every packet.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose one of {', '.join(MODES)}")
    if rate <= 0 or duration <= 0 or packets <= 0:
        raise ValueError("rate, duration and packets must be positive")
    per_packet = records_per_packet or (1 if mode == "live" else 25)
    if not 1 <= per_packet <= MAX_RECORDS_PER_PACKET:
        raise ValueError(f"records per packet must be 1-{MAX_RECORDS_PER_PACKET}")
    loop = asyncio.get_running_loop()
    result = LoadResult(mode=mode, units=len(imeis))
    run = _Run(loop, result, mode, 1.0 / rate, per_packet, ack_timeout, can)
    # Routes start at midnight, so runs on the same day continue each unit's track.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    units = [_Unit(run, imei, Drive.for_unit(zlib.crc32(imei.encode()), today)) for imei in imeis]
    reporter = asyncio.create_task(_report(result, progress, progress_interval))
    try:
        started = loop.time()
        gate = asyncio.Semaphore(connect_concurrency)
        await asyncio.gather(*(_connect(u, host, port, gate, connect_timeout) for u in units))
        result.connect_seconds = loop.time() - started
        ready = [u for u in units if u.transport is not None and not u.finished.done()]
        if on_start is not None:
            on_start()
        started = _start(run, ready, mode, duration, rate, packets)
        late = await _wait_for(ready, mode, duration, ack_timeout)
        result.lost += late  # not `+= await`: that would drop the losses counted meanwhile
        result.elapsed = max(0.0, loop.time() - started)
    finally:
        reporter.cancel()
        for unit in units:
            unit._finish()
    if progress is not None:
        progress(result)
    return result


async def _connect(
    unit: _Unit, host: str, port: int, gate: asyncio.Semaphore, timeout: float
) -> None:
    result = unit.run.result
    async with gate:
        try:
            await asyncio.wait_for(
                unit.run.loop.create_connection(lambda: unit, host, port), timeout
            )
            assert unit.transport is not None
            unit.transport.write(teltonika_login(unit.imei))
            reply = await asyncio.wait_for(unit.login_reply, timeout)
        except (OSError, TimeoutError):
            result.lost += 1
            unit._finish()
            return
    if reply == b"\x01":
        result.connected += 1
    else:
        result.refused += 1
        unit._finish()


def _start(
    run: _Run, units: list[_Unit], mode: str, duration: float, rate: float, packets: int
) -> float:
    """Set every unit going; returns the loop time the run counts from."""
    loop = run.loop
    if mode == "live":
        ticks = max(1, round(duration * rate))
        first = loop.time() + 0.05
        for index, unit in enumerate(units):
            unit.records_left = ticks
            unit.next_tick = first + run.interval * index / max(1, len(units))
            loop.call_at(unit.next_tick, unit.tick)
        return first
    wall = datetime.now(UTC)
    total = packets * run.records_per_packet
    for unit in units:
        unit.records_left = total
        unit.last_fix_time = wall - BACKLOG_SPACING * (total + 1)
        unit.pending = [unit._backlog_record() for _ in range(run.records_per_packet)]
    first = loop.time()
    for unit in units:
        unit.send()
    return first


async def _wait_for(units: list[_Unit], mode: str, duration: float, ack_timeout: float) -> int:
    """Wait for the units to finish; returns how many did not in time."""
    if not units:
        return 0
    # A live run ends on the clock. A backlog ends when the listener has taken it all;
    # it needs no bound of its own, since every packet's ack is bounded by ack_timeout.
    limit = duration + 2 * ack_timeout if mode == "live" else None
    _, late = await asyncio.wait([u.finished for u in units], timeout=limit)
    return len(late)


async def _report(
    result: LoadResult, progress: Callable[[LoadResult], None] | None, interval: float
) -> None:
    if progress is None:
        return
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(Exception):  # a broken printer must not stop the load
            progress(result)
