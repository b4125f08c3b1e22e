"""Simulated units, one class per protocol, as the load generator drives them.

Each unit is a plain ``asyncio.Protocol`` on the load generator's event loop (no task per
unit), so one core can play thousands of them. What each one does is what its real
counterpart does on the wire:

- Teltonika (FMB/FMC): logs in with its IMEI and waits for ``01``; sends Codec 8 AVL
  packets and forgets their records only when the 4-byte record count comes back.
- GT06 (Concox): logs in (0x01) and waits for the echo of its login. Location packets
  (0x22) get no answer from a server, by the vendor's rules, so after each batch of
  locations the unit sends a heartbeat (0x13), which is answered with its serial echoed.
  A listener handles a connection's frames in order and answers the heartbeat only after
  the locations before it are stored, so that echo acknowledges the batch. Real units send
  heartbeats on a timer instead; sending one per batch is allowed by the protocol and is
  the only way a GT06 unit can know its locations arrived.
- NMEA 0183 over TCP: names itself with ``$PGID,<id>*hh`` and writes an RMC and a GGA
  line per fix. The protocol has no acknowledgement at all: the unit cannot know what was
  stored, cannot tell a refusal from a hang-up (both count as lost) and has no latency to
  measure. Its records are counted as sent; the database is the only judge of what was
  stored (``manage.py simulate --count-stored``, and the tests).
- OsmAnd (the current Traccar Client): HTTP/1.1 ``POST`` with a JSON body naming the unit
  and one location (a list of them when it has several to send), on a kept-alive
  connection; ``200`` acknowledges the request's records, any other answer rejects them.
  No login: an unknown unit learns it from a ``400`` to its first request. A server
  closing an idle kept-alive connection is normal: the unit reconnects for its next
  request, and resends once on a fresh connection a request that got no answer at all,
  as HTTP clients do.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, ClassVar

from telematics.protocols.base import Fix
from telematics.protocols.gt06 import crc_itu
from telematics.simulator.encoders import (
    gt06_heartbeat,
    gt06_location,
    gt06_login,
    nmea_identification,
    nmea_sentences,
    osmand_json,
    teltonika_avl,
    teltonika_login,
)

if TYPE_CHECKING:
    from telematics.simulator.load import Drive, LoadResult

MAX_RECORDS_PER_PACKET = 50  # a unit catching up sends at most this many records at once
BACKLOG_SPACING = timedelta(seconds=1)  # between records a unit saved while offline
IO_ELEMENTS = {21: 4, 240: 1}  # GSM signal 4 of 5, movement on: a typical 1-byte IO set
CAN_SPEED_IO = 81  # LV-CAN200 vehicle speed, km/h
CAN_FUEL_LEVEL_IO = 89  # LV-CAN200 fuel level, %
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Run:
    """What every unit of one load run shares."""

    loop: asyncio.AbstractEventLoop
    result: LoadResult
    mode: str
    interval: float  # live: seconds between a unit's records
    records_per_packet: int
    ack_timeout: float
    can: bool
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)


class Tally:
    """Counts a unit's events into the run's total and into its protocol's result."""

    __slots__ = ("results",)

    def __init__(self, total: LoadResult, own: LoadResult) -> None:
        self.results = (total, own)

    def add(self, name: str, amount: int = 1) -> None:
        for result in self.results:
            setattr(result, name, getattr(result, name) + amount)

    def latency(self, seconds: float) -> None:
        for result in self.results:
            result.latencies.append(seconds)

    def tick_lag(self, seconds: float) -> None:
        for result in self.results:
            result.tick_lag.append(seconds)

    def finished(self, identifier: str, sent: int, acked: int, acknowledged: bool) -> None:
        for result in self.results:
            result.sent_by_unit[identifier] = sent
            if acknowledged:
                result.acked_by_unit[identifier] = acked


class SimulatedUnit(asyncio.Protocol):
    """One unit's connection and record buffer, driven by loop callbacks.

    Live units take records from timer callbacks; both modes send the next packet the
    moment the previous one is acknowledged (at once, for a protocol without acks).
    Subclasses say how the unit logs in, encodes a packet and reads its answers.
    """

    protocol: ClassVar[str]
    acknowledged: ClassVar[bool] = True  # whether the protocol acknowledges records
    time_step: ClassVar[timedelta] = timedelta(milliseconds=1)  # resolution of fix times

    def __init__(self, run: Run, identifier: str, drive: Drive) -> None:
        self.run = run
        self.identifier = identifier
        self.drive = drive
        self.tally = Tally(run.result, run.result.protocols[self.protocol])
        loop = run.loop
        self.transport: asyncio.Transport | None = None
        self.inbox = bytearray()
        self.login_reply: asyncio.Future[bool] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.pending: list[Fix] = []
        self.in_flight = 0  # records in the packet awaiting its ack; 0 when none
        self.sent_at = 0.0
        self.overdue: asyncio.TimerHandle | None = None
        self.first_fix_time: datetime | None = None
        self.last_fix_time = datetime.min.replace(tzinfo=UTC)
        self.records_left = 0  # records still to take (live) or to send (backlog)
        self.next_tick = 0.0
        self.sent = 0
        self.acked = 0
        self.finished_at = 0.0  # loop time

    @property
    def port(self) -> int:
        return self.run.ports[self.protocol]

    async def open(self, timeout: float) -> bool:
        """Connect and log in; True when the listener accepted the unit."""
        loop = self.run.loop
        await asyncio.wait_for(
            loop.create_connection(lambda: self, self.run.host, self.port), timeout
        )
        self.login()
        return await asyncio.wait_for(self.login_reply, timeout)

    # --- what differs per protocol

    def login(self) -> None:
        """Write the login; resolve ``login_reply`` with whether the unit was accepted."""
        self.login_reply.set_result(True)

    def encode(self, batch: list[Fix]) -> bytes:
        raise NotImplementedError

    def read_answers(self) -> None:
        """Consume what the server sent from ``inbox``; call ``_acknowledged`` per ack."""
        self.inbox.clear()

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.inbox += data
        self.read_answers()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.login_reply.done():
            self.hung_up_on_login()  # the connect step counts it
        elif not self.finished.done():
            self.tally.add("lost")  # a hang-up the unit did not ask for
        self._finish()

    def hung_up_on_login(self) -> None:
        self.login_reply.set_exception(ConnectionError("closed before the login reply"))

    # --- the unit's behaviour

    def take_record(self, when: datetime) -> None:
        """Record a fix at ``when``, later than any before: fix times are unique per unit.

        Times are cut to what the protocol can carry (whole seconds for GT06), so no two
        records of a unit share a time after encoding: the store would keep only one.
        """
        step = self.time_step
        when -= (when - EPOCH) % step
        if when <= self.last_fix_time:
            when = self.last_fix_time + step
        self.last_fix_time = when
        if self.first_fix_time is None:
            self.first_fix_time = when
        self.pending.append(self.drive.fix(when))

    def tick(self) -> None:
        """Live mode: take the record due now, send when a packet's worth is waiting."""
        run = self.run
        if self.finished.done():
            return
        self.tally.tick_lag(max(0.0, run.loop.time() - self.next_tick))
        self.take_record(datetime.now(UTC))
        self.records_left -= 1
        if self.records_left > 0:
            self.next_tick += run.interval
            run.loop.call_at(self.next_tick, self.tick)
        if not self.in_flight and (
            len(self.pending) >= run.records_per_packet or self.records_left <= 0
        ):
            self.send()

    def next_backlog_packet(self) -> None:
        """Backlog mode: the next packet's records, a second apart, in the recent past."""
        count = min(self.run.records_per_packet, self.records_left)
        for _ in range(count):
            self.take_record(self.last_fix_time + BACKLOG_SPACING)

    def send(self) -> None:
        run = self.run
        batch = self.pending[:MAX_RECORDS_PER_PACKET]
        del self.pending[: len(batch)]
        if run.mode == "backlog":
            self.records_left -= len(batch)
        elif len(batch) > run.records_per_packet:
            self.tally.add("catch_up_packets")
        packet = self.encode(batch)
        self.tally.add("packets_sent")
        self.tally.add("records_sent", len(batch))
        self.sent += len(batch)
        self.sent_at = run.loop.time()
        if self.acknowledged:
            self.in_flight = len(batch)
            self.overdue = run.loop.call_later(run.ack_timeout, self._ack_overdue)
        else:
            self.tally.add("records_without_ack", len(batch))
        self.write(packet)

    def write(self, packet: bytes) -> None:
        assert self.transport is not None
        self.transport.write(packet)

    def _acknowledged(self, count: int) -> None:
        run = self.run
        self.tally.latency(run.loop.time() - self.sent_at)
        if self.overdue is not None:
            self.overdue.cancel()
        if count != self.in_flight:
            self.tally.add("wrong_acks")
            count = min(count, self.in_flight)
        self.tally.add("packets_acked")
        self.tally.add("records_acked", count)
        self.acked += count
        self.in_flight = 0
        self._after_packet()

    def _after_packet(self) -> None:
        """The packet is done with (acknowledged, or written when nothing acks): go on."""
        run = self.run
        if run.mode == "backlog" and self.records_left > 0:
            self.next_backlog_packet()
            self.send()
        elif self.pending and (
            len(self.pending) >= run.records_per_packet or self.records_left <= 0
        ):
            self.send()
        elif self.records_left <= 0 and not self.pending:
            self._finish()

    def _rejected(self, detail: str) -> None:
        """The server answered the packet with an error: its records are not stored."""
        if self.overdue is not None:
            self.overdue.cancel()
        self.tally.add("records_rejected", self.in_flight)
        self.in_flight = 0
        self.run.result.note(f"{self.protocol} {self.identifier}: {detail}")
        self._finish()

    def _ack_overdue(self) -> None:
        self.tally.add("lost")
        self._finish()

    def _finish(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)
            self.finished_at = self.run.loop.time()
            self.tally.finished(self.identifier, self.sent, self.acked, self.acknowledged)
        if self.overdue is not None:
            self.overdue.cancel()
        if self.transport is not None:
            self.transport.close()


# --- Teltonika ---------------------------------------------------------------------------


class TeltonikaUnit(SimulatedUnit):
    protocol = "teltonika"

    def login(self) -> None:
        self.write(teltonika_login(self.identifier))

    def encode(self, batch: list[Fix]) -> bytes:
        return teltonika_avl(batch, self._io(batch[-1]) if self.run.can else IO_ELEMENTS)

    def read_answers(self) -> None:
        if not self.login_reply.done():
            self.login_reply.set_result(self.inbox[:1] == b"\x01")
            del self.inbox[:1]
        while self.in_flight and len(self.inbox) >= 4:
            count = int.from_bytes(self.inbox[:4], "big")
            del self.inbox[:4]
            self._acknowledged(count)

    def _io(self, fix: Fix) -> dict[int, int]:
        """IO elements with a CAN adapter's readings: speed, and fuel burning down slowly."""
        hours = (fix.fix_time - self.drive.epoch).total_seconds() / 3600
        fuel = 90 - round(hours * 5) % 80
        return {**IO_ELEMENTS, CAN_SPEED_IO: round(fix.speed_kmh or 0), CAN_FUEL_LEVEL_IO: fuel}


# --- GT06 --------------------------------------------------------------------------------

GT06_LOGIN = 0x01
GT06_HEARTBEAT = 0x13


class Gt06Unit(SimulatedUnit):
    protocol = "gt06"
    time_step = timedelta(seconds=1)  # the GPS block's time has whole seconds

    def __init__(self, run: Run, identifier: str, drive: Drive) -> None:
        super().__init__(run, identifier, drive)
        self.serial = 0
        self.heartbeat_serial = -1

    def _next_serial(self) -> int:
        self.serial = (self.serial + 1) & 0xFFFF
        return self.serial

    def login(self) -> None:
        self.write(gt06_login(self.identifier, self._next_serial()))

    def encode(self, batch: list[Fix]) -> bytes:
        packet = bytearray()
        for fix in batch:
            mileage = round((fix.odometer_km or 0) * 1000)
            packet += gt06_location(fix, self._next_serial(), mileage_m=mileage)
        self.heartbeat_serial = self._next_serial()
        packet += gt06_heartbeat(self.heartbeat_serial, ignition=bool(batch[-1].ignition))
        return bytes(packet)

    def read_answers(self) -> None:
        while True:
            start = self.inbox.find(b"\x78\x78")
            if start < 0:
                if len(self.inbox) > 1:  # keep a last 0x78: it may start the next packet
                    self.tally.add("wrong_acks")
                    del self.inbox[:-1]
                return
            if start:
                self.tally.add("wrong_acks")  # bytes that are no server packet
                del self.inbox[:start]
            if len(self.inbox) < 3:
                return
            size = 2 + 1 + self.inbox[2] + 2  # start, length, counted bytes, stop
            if len(self.inbox) < size:
                return
            frame = bytes(self.inbox[:size])
            del self.inbox[:size]
            self._answer(frame)

    def _answer(self, frame: bytes) -> None:
        body, crc = frame[2:-4], int.from_bytes(frame[-4:-2], "big")
        if frame[-2:] != b"\r\n" or crc_itu(body) != crc or len(body) < 4:
            self.tally.add("wrong_acks")
            return
        protocol, serial = body[1], int.from_bytes(body[-2:], "big")
        if protocol == GT06_LOGIN and not self.login_reply.done():
            self.login_reply.set_result(True)
        elif protocol == GT06_HEARTBEAT and self.in_flight:
            if serial == self.heartbeat_serial:
                self._acknowledged(self.in_flight)
            else:
                self.tally.add("wrong_acks")
        # Anything else (a command from the server) is not this simulation's business.

    def hung_up_on_login(self) -> None:
        # The listener hangs up on a login it refuses, without a word: that is a refusal.
        self.login_reply.set_result(False)


# --- NMEA 0183 over TCP -------------------------------------------------------------------


class NmeaUnit(SimulatedUnit):
    protocol = "nmea"
    acknowledged = False
    time_step = timedelta(milliseconds=10)  # hhmmss.ss

    def __init__(self, run: Run, identifier: str, drive: Drive) -> None:
        super().__init__(run, identifier, drive)
        self.paused = False

    def login(self) -> None:
        self.write((nmea_identification(self.identifier) + "\r\n").encode("ascii"))
        self.login_reply.set_result(True)  # nothing comes back: accepted as far as it knows

    def encode(self, batch: list[Fix]) -> bytes:
        lines = [line for fix in batch for line in nmea_sentences(fix)]
        return ("\r\n".join(lines) + "\r\n").encode("ascii")

    def send(self) -> None:
        super().send()
        # Nothing to wait for: the next packet goes when the socket takes it, letting the
        # other units have their turn in between.
        if not self.paused:
            self.run.loop.call_soon(self._after_written)

    def _after_written(self) -> None:
        if not self.finished.done() and not self.paused:
            self._after_packet()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.run.loop.call_soon(self._after_written)


# --- OsmAnd (Traccar Client) over HTTP -----------------------------------------------------


class _HttpConnection(asyncio.Protocol):
    """One kept-alive connection of an OsmAnd unit; a unit may go through several."""

    def __init__(self, unit: OsmandUnit) -> None:
        self.unit = unit
        self.transport: asyncio.Transport | None = None
        self.inbox = bytearray()
        self.answered = False  # a response came on this connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.inbox += data
        self.unit.read_responses(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.unit.connection_closed(self)


class OsmandUnit(SimulatedUnit):
    protocol = "osmand"

    def __init__(self, run: Run, identifier: str, drive: Drive) -> None:
        super().__init__(run, identifier, drive)
        self.connection: _HttpConnection | None = None
        self.request = b""
        self.retried = False

    async def open(self, timeout: float) -> bool:
        """No login in this protocol: an open connection is all a unit can have."""
        await asyncio.wait_for(self._connect(), timeout)
        return True

    async def _connect(self) -> None:
        connection = _HttpConnection(self)
        self.connection = connection
        await self.run.loop.create_connection(lambda: connection, self.run.host, self.port)
        self.transport = connection.transport

    def encode(self, batch: list[Fix]) -> bytes:
        body = osmand_json(self.identifier, batch)
        head = (
            f"POST / HTTP/1.1\r\nHost: {self.run.host}:{self.port}\r\n"
            "Content-Type: application/json\r\nUser-Agent: fleetbook-simulator\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode("ascii") + body

    def write(self, packet: bytes) -> None:
        self.request = packet
        self.retried = False
        self._send_request()

    def _send_request(self) -> None:
        transport = self.connection.transport if self.connection else None
        if transport is not None and not transport.is_closing():
            transport.write(self.request)
        else:
            self.run.loop.create_task(self._resend_on_new_connection())

    async def _resend_on_new_connection(self) -> None:
        try:
            await self._connect()
        except OSError:
            if not self.finished.done():
                self.tally.add("lost")
                self._finish()
            return
        if self.finished.done():
            self._finish()  # closes the new connection too
        elif self.in_flight and self.transport is not None:
            self.transport.write(self.request)

    def read_responses(self, connection: _HttpConnection) -> None:
        while connection is self.connection:
            try:
                answer = read_http_response(connection.inbox)
            except ValueError as error:
                self.tally.add("wrong_acks")
                self._rejected(str(error))
                return
            if answer is None:
                return
            status, body, close = answer
            connection.answered = True
            if self.in_flight:
                if status == 200:
                    self._acknowledged(self.in_flight)
                else:
                    self._answered_with_error(status, body.decode("utf-8", "replace").strip())
            if close and connection.transport is not None:
                connection.transport.close()

    def _answered_with_error(self, status: int, text: str) -> None:
        if status == 400 and not self.acked and "Unknown device" in text:
            # How an OsmAnd unit learns it is not registered: count it as refused.
            self.tally.add("refused")
            self.tally.add("connected", -1)
            if self.overdue is not None:
                self.overdue.cancel()
            self.in_flight = 0
            self._finish()
        else:
            self._rejected(f"HTTP {status} {text[:200]}")

    def connection_closed(self, connection: _HttpConnection) -> None:
        if connection is not self.connection or self.finished.done():
            return  # an old connection, or the unit is done
        self.connection = None
        self.transport = None
        if not self.in_flight:
            return  # an idle kept-alive connection the server closed: reconnect when needed
        if not connection.answered and not self.retried:
            # The request got no answer at all: the server closed the kept-alive connection
            # just as it went out. Send it once more on a fresh one, as HTTP clients do.
            self.retried = True
            self.tally.add("retries")
            self._send_request()
            return
        self.tally.add("lost")
        self._finish()

    def _finish(self) -> None:
        super()._finish()
        if self.connection is not None and self.connection.transport is not None:
            self.connection.transport.close()


def read_http_response(buffer: bytearray) -> tuple[int, bytes, bool] | None:
    """Take one complete HTTP/1.1 response off ``buffer``: (status, body, server closes).

    Handles ``Content-Length`` and chunked bodies; None while the response is incomplete.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {head[0][:80]!r}")
    status = int(parts[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    at = end + 4
    if "chunked" in headers.get("transfer-encoding", ""):
        body = bytearray()
        while True:
            line_end = buffer.find(b"\r\n", at)
            if line_end < 0:
                return None
            size = int(bytes(buffer[at:line_end]).split(b";")[0], 16)
            chunk_start = line_end + 2
            if len(buffer) < chunk_start + size + 2:
                return None
            body += buffer[chunk_start : chunk_start + size]
            at = chunk_start + size + 2
            if size == 0:
                break
    else:
        length = int(headers.get("content-length", "0"))
        if len(buffer) < at + length:
            return None
        body = buffer[at : at + length]
        at += length
    del buffer[:at]
    return status, bytes(body), headers.get("connection") == "close"


UNIT_CLASSES: dict[str, type[SimulatedUnit]] = {
    cls.protocol: cls for cls in (TeltonikaUnit, Gt06Unit, NmeaUnit, OsmandUnit)
}
