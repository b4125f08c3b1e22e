"""The demo's simulated fleet: vehicles replaying a real recorded drive through the real
listeners, each speaking a real unit protocol over loopback.

Everything the demo shows has therefore come through the same path as a unit in the
field: framing, authentication, decoding, filtering, storage, live updates and trips.
Each vehicle drives the recorded track forwards, parks, drives it back and parks again,
shifted a little in place and started at a different point, so the map shows a moving
fleet and the logbook fills with trips. Teltonika units also report CAN data (fuel level
and engine speed as IO elements).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from telematics.protocols.base import Fix
from telematics.protocols.nmea import decode_lines
from telematics.simulator.encoders import (
    gt06_location,
    gt06_login,
    nmea_identification,
    nmea_sentences,
    osmand_query,
    teltonika_avl,
    teltonika_login,
)

logger = logging.getLogger(__name__)

TRACK = Path(__file__).with_name("tracks") / "josm-1433-drive-2008-08-14.nmea"
PARK_S = 420  # longer than the logbook's parking threshold, so each leg is a trip
PARKED_REPORT_S = 30  # units report less often while parked
PROTOCOLS = ("teltonika", "teltonika", "gt06", "nmea", "osmand")


@dataclass(frozen=True, slots=True)
class TrackPoint:
    latitude: float
    longitude: float
    speed_kmh: float
    course: float
    altitude: float


def load_track(path: Path = TRACK) -> list[TrackPoint]:
    """One point a second of the recorded drive."""
    fixes, _errors = decode_lines(path.read_text(encoding="ascii", errors="replace"))
    return [TrackPoint(f.latitude, f.longitude, f.speed_kmh or 0.0, f.course or 0.0,
                       f.altitude or 0.0) for f in fixes]


@dataclass(frozen=True)
class DemoUnit:
    identifier: str
    protocol: str
    vehicle_name: str
    shift: tuple[float, float]
    phase_s: int
    reports_can: bool


def demo_units(count: int = 20) -> list[DemoUnit]:
    units = []
    for number in range(1, count + 1):
        protocol = PROTOCOLS[(number - 1) % len(PROTOCOLS)]
        identifier = {
            "teltonika": f"3520930{number:08d}",
            "gt06": f"3597100{number:08d}",
            "nmea": f"DEMO-NMEA-{number:02d}",
            "osmand": f"demo-phone-{number:02d}",
        }[protocol]
        angle = number * 2.4  # spread the fleet over a few km around the recorded drive
        shift = (0.02 * math.sin(angle) * (number % 4) / 3,
                 0.03 * math.cos(angle) * (number % 3) / 2)
        units.append(DemoUnit(identifier, protocol, f"Van {number:02d}", shift,
                              phase_s=number * 577, reports_can=protocol == "teltonika"))
    return units


class Route:
    """Where a unit is at a moment: forwards, parked, backwards, parked, and again."""

    def __init__(self, track: list[TrackPoint], unit: DemoUnit):
        self.track = track
        self.unit = unit
        self.leg_s = len(track)
        self.cycle_s = 2 * (self.leg_s + PARK_S)

    def at(self, elapsed_s: float) -> tuple[TrackPoint, bool]:
        """The point and whether the vehicle is driving."""
        t = int(elapsed_s + self.unit.phase_s) % self.cycle_s
        if t < self.leg_s:
            point, moving = self.track[t], True
        elif t < self.leg_s + PARK_S:
            point, moving = self.track[-1], False
        elif t < 2 * self.leg_s + PARK_S:
            forward = self.track[2 * self.leg_s + PARK_S - 1 - t]
            point = TrackPoint(forward.latitude, forward.longitude, forward.speed_kmh,
                               (forward.course + 180) % 360, forward.altitude)
            moving = True
        else:
            point, moving = self.track[0], False
        dlat, dlon = self.unit.shift
        return TrackPoint(point.latitude + dlat, point.longitude + dlon,
                          point.speed_kmh if moving else 0.0, point.course,
                          point.altitude), moving


def fix_for(point: TrackPoint, moving: bool, when: datetime) -> Fix:
    return Fix(fix_time=when.replace(microsecond=0), latitude=point.latitude,
               longitude=point.longitude, altitude=point.altitude, speed_kmh=point.speed_kmh,
               course=point.course, satellites=9, hdop=0.9, ignition=moving)


class UnitSimulator:
    """One simulated vehicle: a connection to its listener and a report each tick."""

    def __init__(self, unit: DemoUnit, route: Route, host: str, port: int):
        self.unit, self.route, self.host, self.port = unit, route, host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.serial = 0
        self.fuel = 80.0

    async def run(self, started: float, stop: asyncio.Event, tick_s: float = 1.0) -> None:
        loop = asyncio.get_running_loop()
        last_report = -math.inf
        while not stop.is_set():
            elapsed = loop.time() - started
            point, moving = self.route.at(elapsed)
            if moving or elapsed - last_report >= PARKED_REPORT_S:
                try:
                    await self.report(fix_for(point, moving, datetime.now(UTC)), moving)
                    last_report = elapsed
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
                    logger.debug("Demo unit %s: %s; reconnecting", self.unit.identifier, error)
                    await self.close()
                    await asyncio.sleep(5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick_s)
        await self.close()

    async def report(self, fix: Fix, moving: bool) -> None:
        protocol = self.unit.protocol
        if protocol == "osmand":
            await self.http_get(f"/?{osmand_query(self.unit.identifier, fix)}")
            return
        if self.writer is None:
            await self.connect()
        assert self.reader is not None and self.writer is not None
        self.serial = (self.serial + 1) % 0x10000
        if protocol == "teltonika":
            io = {}
            if self.unit.reports_can:
                self.fuel = max(5.0, self.fuel - (0.004 if moving else 0.0))
                io = {89: round(self.fuel), 85: round(800 + fix.speed_kmh * 35) if moving else 0}
            self.writer.write(teltonika_avl([fix], io=io))
            await asyncio.wait_for(self.reader.readexactly(4), 30)
        elif protocol == "gt06":
            self.writer.write(gt06_location(fix, self.serial))
        else:
            self.writer.write(("\r\n".join(nmea_sentences(fix)) + "\r\n").encode())
        await self.writer.drain()

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        identifier = self.unit.identifier
        if self.unit.protocol == "teltonika":
            self.writer.write(teltonika_login(identifier))
            if await asyncio.wait_for(self.reader.readexactly(1), 30) != b"\x01":
                raise ConnectionError(f"unit {identifier} refused")
        elif self.unit.protocol == "gt06":
            self.writer.write(gt06_login(identifier, 0))
            await asyncio.wait_for(self.reader.readexactly(10), 30)
        else:
            self.writer.write((nmea_identification(identifier) + "\r\n").encode())
        await self.writer.drain()

    async def http_get(self, target: str) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\n"
                         "Connection: close\r\n\r\n".encode())
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 30)
            if b" 200 " not in status:
                raise ConnectionError(f"OsmAnd answer {status!r}")
        finally:
            writer.close()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run_demo_fleet(units: list[DemoUnit], host: str, ports: dict[str, int],
                         stop: asyncio.Event) -> None:
    """Drive every unit until ``stop`` is set."""
    track = load_track()
    started = asyncio.get_running_loop().time()
    simulators = [UnitSimulator(unit, Route(track, unit), host, ports[unit.protocol])
                  for unit in units]
    await asyncio.gather(*(s.run(started, stop) for s in simulators))
