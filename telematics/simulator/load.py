"""Many simulated units against real ingest listeners: Teltonika, GT06, NMEA and OsmAnd.

Used by ``manage.py simulate``, the ingest benchmark and the tests (the simulator suite
and the garbage-flood reliability test). Each unit speaks its protocol as a real one does
(``telematics.simulator.units`` says exactly how): it connects, logs in where the
protocol has a login, sends its records and forgets them only once they are
acknowledged: the Teltonika record count, the echo of a GT06 heartbeat sent after the
locations, an OsmAnd ``200``. NMEA over TCP has no acknowledgement at all, so its records
are only counted as sent; what was stored is for the database to say
(:func:`wait_for_stored`).

Two modes:

- ``live``: every unit takes a record every ``1 / rate`` seconds (units are spread evenly
  over that interval so the listener sees a steady stream, not a burst a second) and
  sends them ``records_per_packet`` at a time. Records taken while a packet is still
  waiting for its ack pile up and go together in the next packet, as on a real unit;
  such catch-up packets are counted, since they mean the server fell behind.
- ``backlog``: every unit flushes ``packets`` packets of ``records_per_packet`` records
  (fixes from the recent past, a second apart) as fast as the acks come back, as units
  do after a stretch without coverage.

With ``can=True`` the Teltonika units also report CAN adapter IO elements (vehicle speed
and fuel level), so the records go through the vehicle-signal path of the pipeline too.

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
import time
import zlib
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from telematics.protocols.base import Fix
from telematics.simulator.units import (
    BACKLOG_SPACING,
    CAN_FUEL_LEVEL_IO,
    CAN_SPEED_IO,
    IO_ELEMENTS,
    MAX_RECORDS_PER_PACKET,
    UNIT_CLASSES,
    Run,
    SimulatedUnit,
)

__all__ = [
    "BACKLOG_SPACING",
    "CAN_FUEL_LEVEL_IO",
    "CAN_SPEED_IO",
    "IO_ELEMENTS",
    "MAX_RECORDS_PER_PACKET",
    "MIXED",
    "MODES",
    "SUPPORTED_PROTOCOLS",
    "UNIT_PROTOCOLS",
    "Drive",
    "LoadResult",
    "LoadUnit",
    "Stored",
    "load_imeis",
    "load_units",
    "register_load_units",
    "register_units",
    "run_fleet",
    "run_units",
    "stored_by_protocol",
    "wait_for_stored",
]

UNIT_PROTOCOLS = ("teltonika", "gt06", "nmea", "osmand")
MIXED = "mixed"  # every fourth unit of each protocol
SUPPORTED_PROTOCOLS = (*UNIT_PROTOCOLS, MIXED)
MODES = ("live", "backlog")
ORGANISATION = "Load Test"
METRES_PER_DEGREE = 111_320.0
# Type allocation codes of the load units, one per protocol, so each protocol's units
# have identities of their own and a mixed run never re-registers another's.
PREFIXES = {"teltonika": "35999900", "gt06": "35999901", "nmea": "35999902",
            "osmand": "35999903"}
# GT06 fix times are whole seconds: a unit cannot report faster than once a second.
MAX_RATE = {"gt06": 1.0}
NOTES_KEPT = 20


# --- unit identities --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadUnit:
    """A simulated unit: the protocol it speaks and the identifier it reports."""

    protocol: str
    identifier: str


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
    _check_range(count, first)
    return [_imei(prefix, serial) for serial in range(first, first + count)]


def load_units(count: int, first: int = 0, protocol: str = "teltonika") -> list[LoadUnit]:
    """``count`` units numbered from ``first``, speaking ``protocol`` (or ``mixed``).

    Mixed: unit number n speaks the n-th protocol of UNIT_PROTOCOLS, round the cycle, so
    any run of four or more consecutive numbers has every protocol. Identifiers are IMEIs
    with a type allocation code per protocol, stable for the same numbers.
    """
    if protocol not in SUPPORTED_PROTOCOLS:
        raise ValueError(
            f"the simulator cannot play {protocol!r} units; supported: "
            f"{', '.join(SUPPORTED_PROTOCOLS)}"
        )
    _check_range(count, first)
    units = []
    for number in range(first, first + count):
        speaks = UNIT_PROTOCOLS[number % len(UNIT_PROTOCOLS)] if protocol == MIXED else protocol
        units.append(LoadUnit(speaks, _imei(PREFIXES[speaks], number)))
    return units


def _check_range(count: int, first: int) -> None:
    if count < 0 or first < 0 or first + count > 1_000_000:
        raise ValueError("load units are numbered 0-999999")


def _imei(prefix: str, serial: int) -> str:
    digits = f"{prefix}{serial:06d}"
    return digits + _luhn_digit(digits)


def register_units(
    imeis: Sequence[str], organisation_name: str = ORGANISATION, *, protocol: str = "teltonika"
) -> int:
    """Register the units (one vehicle each) that are not registered yet; returns how many.

    Goes through ``register_unit`` like an operator would, so the benchmark measures the
    same devices the product creates. Synchronous (ORM): call it from a thread in async
    code.
    """
    return register_load_units([LoadUnit(protocol, imei) for imei in imeis], organisation_name)


def register_load_units(units: Sequence[LoadUnit], organisation_name: str = ORGANISATION) -> int:
    """Register units of any protocols that are not registered yet; returns how many."""
    from django.db import transaction

    from fleet.services import get_or_create_organisation
    from telematics.models import Device
    from telematics.services import register_unit

    organisation = get_or_create_organisation(organisation_name)
    identifiers = [unit.identifier for unit in units]
    known: set[str] = set()
    for start in range(0, len(identifiers), 500):  # bounded IN lists, for SQLite
        known.update(
            Device.objects.filter(identifier__in=identifiers[start : start + 500]).values_list(
                "identifier", flat=True
            )
        )
    missing = [unit for unit in units if unit.identifier not in known]
    for start in range(0, len(missing), 500):  # one commit per 500 units, not per unit
        with transaction.atomic():
            for unit in missing[start : start + 500]:
                register_unit(unit.identifier, unit.protocol, organisation,
                              vehicle_name=f"Load {unit.identifier}")
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

    A run's result holds the totals and, in ``protocols``, one result per protocol of its
    units. ``latencies`` are seconds from writing a packet to reading its ack;
    ``tick_lag`` is how late the generator's own loop was for the live records it had to
    take. Records of protocols without an acknowledgement (NMEA over TCP) are in
    ``records_sent`` and ``records_without_ack``, never in ``records_acked``.
    """

    mode: str
    units: int
    protocol: str = "teltonika"  # of the units, or "mixed"
    connected: int = 0
    refused: int = 0
    lost: int = 0  # connection failed, dropped, or an ack overdue
    packets_sent: int = 0
    packets_acked: int = 0
    records_sent: int = 0
    records_acked: int = 0
    records_without_ack: int = 0  # sent in a protocol that acknowledges nothing
    records_rejected: int = 0  # answered with an error (an OsmAnd 4xx/5xx)
    wrong_acks: int = 0  # acks whose count or serial is not the packet's
    retries: int = 0  # requests sent again after a kept-alive connection closed
    catch_up_packets: int = 0
    connect_seconds: float = 0.0
    elapsed: float = 0.0  # from the first record sent until the last unit finished
    offered_per_second: float = 0.0  # live: records the units take per second
    fix_window: tuple[datetime, datetime] | None = None  # earliest and latest fix taken
    acked_by_unit: dict[str, int] = field(default_factory=dict)
    sent_by_unit: dict[str, int] = field(default_factory=dict)
    latencies: array = field(default_factory=lambda: array("d"))
    tick_lag: array = field(default_factory=lambda: array("d"))
    protocols: dict[str, LoadResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # the first errors the units met

    def note(self, text: str) -> None:
        if len(self.notes) < NOTES_KEPT:
            self.notes.append(text)

    def latency_ms(self, share: float) -> float:
        return percentile(self.latencies, share) * 1000

    def tick_lag_ms(self, share: float) -> float:
        return percentile(self.tick_lag, share) * 1000

    @property
    def acks_per_second(self) -> float:
        return self.packets_acked / self.elapsed if self.elapsed else 0.0

    @property
    def records_per_second(self) -> float:
        """Records acknowledged per second over the run."""
        return self.records_acked / self.elapsed if self.elapsed else 0.0

    @property
    def sent_per_second(self) -> float:
        return self.records_sent / self.elapsed if self.elapsed else 0.0

    @property
    def offered_ackable_per_second(self) -> float:
        """The live offer of the units whose protocol acknowledges (all but NMEA)."""
        return sum(
            child.offered_per_second for name, child in self.protocols.items() if name != "nmea"
        )

    @property
    def complete(self) -> bool:
        """Every unit connected and every record it sent was acknowledged, correctly.

        NMEA records count when written: that is all an NMEA unit can know.
        """
        return (
            self.connected == self.units
            and not self.lost
            and not self.wrong_acks
            and not self.records_rejected
            and self.records_acked == self.records_sent - self.records_without_ack
        )

    def summary(self) -> str:
        name = "" if self.protocol == "teltonika" else f", {self.protocol}"
        lines = [
            f"mode {self.mode}{name}: {self.connected:,}/{self.units:,} units connected in "
            f"{self.connect_seconds:.1f} s ({self.refused:,} refused, {self.lost:,} lost)",
        ]
        ackable = self.records_sent - self.records_without_ack
        if ackable or not self.records_without_ack:
            lines += [
                f"records acked {self.records_acked:,} of {ackable:,} sent, in "
                f"{self.packets_acked:,} packets over {self.elapsed:.1f} s",
                f"{self.acks_per_second:,.0f} acks/s, {self.records_per_second:,.0f} records/s"
                + (f" (offered {self.offered_ackable_per_second:,.0f}/s)"
                   if self.mode == "live" else ""),
                f"ack latency p50 {self.latency_ms(0.5):.1f} ms, p99 "
                f"{self.latency_ms(0.99):.1f} ms, max {self.latency_ms(1.0):.1f} ms",
            ]
        if self.records_without_ack:
            nmea = self.protocols.get("nmea", self)
            lines.append(
                f"NMEA: {self.records_without_ack:,} records written, "
                f"{self.records_without_ack / max(nmea.elapsed, 1e-9):,.0f}/s; NMEA over TCP "
                "acknowledges nothing, so only the database can say what was stored"
            )
        if self.mode == "live":
            lines.append(
                f"catch-up packets {self.catch_up_packets:,}; generator lateness p99 "
                f"{self.tick_lag_ms(0.99):.1f} ms"
            )
        if self.retries:
            lines.append(f"requests resent on a fresh connection: {self.retries:,}")
        if self.records_rejected:
            lines.append(f"RECORDS REJECTED: {self.records_rejected:,}")
        if self.wrong_acks:
            lines.append(f"WRONG ACKS: {self.wrong_acks:,}")
        if len(self.protocols) > 1:
            lines.append("per protocol:")
            lines += ["  " + child.protocol_line() for child in self.protocols.values()]
        lines += [f"  ! {note}" for note in self.notes[:5]]
        return "\n".join(lines)

    def protocol_line(self) -> str:
        """One line of figures for a protocol's units."""
        head = (
            f"{self.protocol:<9} {self.connected:,}/{self.units:,} connected, "
            f"{self.refused:,} refused, {self.lost:,} lost; "
        )
        if self.records_without_ack:
            return head + (
                f"{self.records_sent:,} records written, {self.sent_per_second:,.0f}/s"
                + (f" of {self.offered_per_second:,.0f}/s offered" if self.mode == "live" else "")
                + "; no acknowledgement in NMEA over TCP, no latency to measure"
            )
        return head + (
            f"acked {self.records_acked:,} of {self.records_sent:,} records, "
            f"{self.records_per_second:,.0f}/s"
            + (f" of {self.offered_per_second:,.0f}/s offered" if self.mode == "live" else "")
            + f"; ack p50 {self.latency_ms(0.5):.1f} ms, p99 {self.latency_ms(0.99):.1f} ms"
        )


# --- the load ---------------------------------------------------------------------------


async def run_units(
    host: str,
    port: int,
    imeis: Sequence[str],
    *,
    protocol: str = "teltonika",
    **options: Any,
) -> LoadResult:
    """Units of one protocol, all on one port: :func:`run_fleet` with fewer words."""
    if protocol not in UNIT_PROTOCOLS:
        raise ValueError(f"protocol {protocol!r}: choose one of {', '.join(UNIT_PROTOCOLS)}")
    units = [LoadUnit(protocol, identifier) for identifier in imeis]
    return await run_fleet(host, {protocol: port}, units, **options)


async def run_fleet(
    host: str,
    ports: Mapping[str, int],
    units: Sequence[LoadUnit],
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

    ``ports`` gives each protocol's listener port on ``host``. ``live``: ``rate`` records
    per second per unit for ``duration`` seconds, sent ``records_per_packet`` (default 1)
    at a time. ``backlog``: ``packets`` packets of ``records_per_packet`` (default 25)
    records per unit, each sent the moment the previous one is acknowledged. Records
    start once every unit has connected (or given up), so the connection storm is not
    part of the timed run; ``on_start`` is called right then (a benchmark samples the
    listener's CPU time there). ``progress`` is called with the running result every
    ``progress_interval`` seconds. ``can`` adds CAN adapter IO (speed, fuel level) to
    every Teltonika packet.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose one of {', '.join(MODES)}")
    if rate <= 0 or duration <= 0 or packets <= 0:
        raise ValueError("rate, duration and packets must be positive")
    per_packet = records_per_packet or (1 if mode == "live" else 25)
    if not 1 <= per_packet <= MAX_RECORDS_PER_PACKET:
        raise ValueError(f"records per packet must be 1-{MAX_RECORDS_PER_PACKET}")
    present = [name for name in UNIT_PROTOCOLS if any(u.protocol == name for u in units)]
    strangers = {u.protocol for u in units} - set(UNIT_PROTOCOLS)
    if strangers:
        raise ValueError(f"the simulator cannot play {', '.join(sorted(strangers))} units")
    for name in present:
        if name not in ports:
            raise ValueError(f"no port given for the {name} units")
        if mode == "live" and rate > MAX_RATE.get(name, math.inf):
            raise ValueError(
                f"{name} units stamp fixes in whole seconds: at most {MAX_RATE[name]:g} "
                "record a second each (use more units for more load)"
            )
    loop = asyncio.get_running_loop()
    result = LoadResult(mode=mode, units=len(units),
                        protocol=present[0] if len(present) == 1 else MIXED)
    for name in present:
        count = sum(1 for u in units if u.protocol == name)
        result.protocols[name] = LoadResult(mode=mode, units=count, protocol=name)
        if mode == "live":
            result.protocols[name].offered_per_second = count * rate
    result.offered_per_second = len(units) * rate if mode == "live" else 0.0
    run = Run(loop, result, mode, 1.0 / rate, per_packet, ack_timeout, can, host, dict(ports))
    # Routes start at midnight, so runs on the same day continue each unit's track.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    simulated = [
        UNIT_CLASSES[u.protocol](run, u.identifier,
                                 Drive.for_unit(zlib.crc32(u.identifier.encode()), today))
        for u in units
    ]
    reporter = asyncio.create_task(_report(result, progress, progress_interval))
    try:
        started = loop.time()
        gate = asyncio.Semaphore(connect_concurrency)
        await asyncio.gather(*(_connect(u, gate, connect_timeout) for u in simulated))
        result.connect_seconds = loop.time() - started
        ready = [u for u in simulated if u.transport is not None and not u.finished.done()]
        if on_start is not None:
            on_start()
        started = _start(run, ready, duration, packets)
        await _wait_for(ready, mode, duration, ack_timeout)
        result.elapsed = max(0.0, loop.time() - started)
    finally:
        reporter.cancel()
        for unit in simulated:
            unit._finish()
    for name, child in result.protocols.items():
        child.connect_seconds = result.connect_seconds
        # Until its own last unit finished: in a backlog, protocols finish at their pace.
        done = [u.finished_at for u in ready if u.protocol == name and u.finished_at]
        child.elapsed = max(0.0, max(done) - started) if done else result.elapsed
        taken = [u for u in simulated if u.protocol == name and u.first_fix_time is not None]
        if taken:
            child.fix_window = (min(u.first_fix_time for u in taken),
                                max(u.last_fix_time for u in taken))
    if progress is not None:
        progress(result)
    return result


async def _connect(unit: SimulatedUnit, gate: asyncio.Semaphore, timeout: float) -> None:
    async with gate:
        try:
            accepted = await unit.open(timeout)
        except (OSError, TimeoutError) as error:
            unit.tally.add("lost")
            unit.run.result.note(f"{unit.protocol} {unit.identifier}: connect: {error!r}")
            unit._finish()
            return
    if accepted:
        unit.tally.add("connected")
    else:
        unit.tally.add("refused")
        unit._finish()


def _start(run: Run, units: list[SimulatedUnit], duration: float, packets: int) -> float:
    """Set every unit going; returns the loop time the run counts from."""
    loop = run.loop
    if run.mode == "live":
        ticks = max(1, round(duration / run.interval))
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
        unit.next_backlog_packet()
    first = loop.time()
    for unit in units:
        unit.send()
    return first


async def _wait_for(
    units: list[SimulatedUnit], mode: str, duration: float, ack_timeout: float
) -> None:
    """Wait for the units to finish; those that did not in time count as lost."""
    if not units:
        return
    # A live run ends on the clock. A backlog ends when the listener has taken it all;
    # it needs no bound of its own, since every packet's ack is bounded by ack_timeout.
    limit = duration + 2 * ack_timeout if mode == "live" else None
    _, late = await asyncio.wait([u.finished for u in units], timeout=limit)
    for unit in units:
        if unit.finished in late:
            unit.tally.add("lost")


async def _report(
    result: LoadResult, progress: Callable[[LoadResult], None] | None, interval: float
) -> None:
    if progress is None:
        return
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(Exception):  # a broken printer must not stop the load
            progress(result)


# --- what the database holds afterwards ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stored:
    """What the database holds of a protocol's units after a run.

    ``count``: positions stored since the run began; ``last_stored``: when the last of
    them was; ``earlier``: positions stored before the run whose fix times lie inside the
    run's, which a record of the run may have repeated (a GT06 backlog replayed over an
    earlier run: whole-second fix times coincide); the ingest acknowledges such a record
    and, rightly, does not store it twice.
    """

    count: int
    last_stored: datetime | None
    earlier: int = 0


def stored_by_protocol(
    units: Sequence[LoadUnit],
    since: datetime,
    windows: Mapping[str, tuple[datetime, datetime] | None] | None = None,
) -> dict[str, Stored]:
    """Positions stored (server time at or after ``since``) per protocol of ``units``.

    With ``windows`` (a protocol's earliest and latest fix time of the run), also counts
    the positions stored before ``since`` inside that window. Synchronous (ORM); only
    meaningful when this process uses the listeners' database.
    """
    from django.db.models import Count, Max

    from telematics.models import Position

    found: dict[str, Stored] = {}
    for name in UNIT_PROTOCOLS:
        identifiers = [u.identifier for u in units if u.protocol == name]
        if not identifiers:
            continue
        window = (windows or {}).get(name)
        count, earlier, last = 0, 0, None
        for start in range(0, len(identifiers), 500):  # bounded IN lists, for SQLite
            positions = Position.objects.filter(
                device__identifier__in=identifiers[start : start + 500])
            row = positions.filter(server_time__gte=since).aggregate(
                n=Count("id"), last=Max("server_time"))
            count += row["n"]
            if row["last"] is not None and (last is None or row["last"] > last):
                last = row["last"]
            if window is not None:
                earlier += positions.filter(
                    server_time__lt=since, fix_time__range=window).count()
        found[name] = Stored(count, last, earlier)
    return found


def wait_for_stored(
    units: Sequence[LoadUnit],
    since: datetime,
    expected: int,
    *,
    windows: Mapping[str, tuple[datetime, datetime] | None] | None = None,
    settle: float = 5.0,
    poll: float = 0.5,
) -> dict[str, Stored]:
    """Poll the database until ``expected`` positions are there or the count stops growing.

    Acknowledged records are stored before their ack, so they are there at once; NMEA
    records have no ack and are stored as the listener gets to them, hence the wait.
    """
    last_total, steady_since = -1, time.monotonic()
    while True:
        stored = stored_by_protocol(units, since, windows)
        total = sum(s.count + s.earlier for s in stored.values())
        if total >= expected:
            return stored
        if total != last_total:
            last_total, steady_since = total, time.monotonic()
        elif time.monotonic() - steady_since >= settle:
            return stored
        time.sleep(poll)
