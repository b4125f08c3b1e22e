"""The live trip tracker at fleet scale on PostgreSQL: fixes/s, CPU, queue and memory.

Run from the project root (skipped, with a message, without a PostgreSQL DATABASE_URL)::

    DATABASE_URL=postgres://root@127.0.0.1:5432/root \\
        .venv/bin/python benchmarks/bench_live_trips.py      # 10,000 vehicles, about 5 min
    ... bench_live_trips.py --vehicles 1000 --warmup 20 --duration 20 --burst 10  # quick

It uses the server of ``DATABASE_URL`` with a database of its own, ``benchlive`` (or the
URL's, if that name starts with ``bench``), created and migrated when missing; its
positions, vehicle states, events and logbook are emptied first.

Every vehicle replays the real drive in ``tests/data/nmea/josm-1433-drive-2008-08-14.nmea``
(20 minutes at 1 Hz, 7 km of town with eleven short stops): forwards, parked 7 minutes
with the ignition off, backwards, parked again; shifted in place and started at its own
point of that 55-minute cycle, so about one vehicle in 800 starts or ends a trip every
second (12 a second for 10,000). Units report once a second, parked or not. The
tracker (``logbook.live``) runs in this process in its own thread, as in ``manage.py
ingest``; this process' main thread plays the ingest pipeline: it stores each batch as
the pipeline does (``store_batch``: COPY, vehicle states) and then calls the tracker's
listener, as the event loop does.

1. **Live**: ``--vehicles`` units, one fix a second each, in batches of 1,000 spread over
   the second, for ``--warmup`` seconds (every machine is read once, and the vehicles
   found driving start their trips) and then ``--duration`` measured seconds. Printed:
   fixes/s stored and derived, the tracker thread's CPU seconds per 1,000 fixes and share
   of a core, the listener's cost on the event loop, queue depth, vehicles behind, what
   was written, where the tracker's time went, RSS growth over the window, and the CPU
   of this process, PostgreSQL and the machine.
   Target: 10,000 vehicles x 1 fix/s sustained with a small share of one core
   (0.25 core), the queue bounded, RSS flat.
2. **Capacity**: ``--burst`` seconds of every vehicle's fixes are stored first, then
   handed to the listener at once, twice: through the queue (unbounded for the test),
   and with a queue that holds nothing, so every vehicle is dropped and caught up from
   the database. The tracker's fixes/s until everything is derived is what it sustains
   at most, either way.

Figures are printed, nothing is asserted. On a two-core machine this process, PostgreSQL
and anything else running share the cores: the header says how busy the machine was.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_ingest import busy_cores, cpu_seconds, machine_seconds, processes  # noqa: E402

DRIVE = ROOT / "tests" / "data" / "nmea" / "josm-1433-drive-2008-08-14.nmea"
PARK_S = 420
BATCH = 1000
MIB = 1 << 20
CORE_TARGET = 0.25


def bench_database_url() -> str | None:
    url = os.environ.get("DATABASE_URL", "")
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        return None
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"The benchmark only uses loopback addresses, not {parts.hostname}.")
    name = parts.path.lstrip("/")
    return url if name.startswith("bench") else parts._replace(path="/benchlive").geturl()


def prepare_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            admin.execute(f'CREATE DATABASE "{name}"')
            print(f"Created database {name}", flush=True)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def reset_tables() -> None:
    from django.apps import apps
    from django.db import connection

    tables = ["telematics_position", "telematics_vehiclestate", "telematics_signalsample",
              "telematics_event"]
    tables += [m._meta.db_table for m in
               apps.get_app_config("logbook").get_models(include_auto_created=True)]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
        cursor.execute("VACUUM ANALYZE telematics_device, fleet_vehicle")


def register(count: int) -> list[tuple[int, int, int]]:
    """(device, vehicle, organisation) of ``count`` units, registered once."""
    from fleet.models import Organisation, Vehicle
    from telematics.models import Device

    organisation, _ = Organisation.objects.get_or_create(name="Bench Live Trips")
    have = Device.objects.filter(identifier__startswith="benchlive-").count()
    if have < count:
        vehicles = Vehicle.objects.bulk_create(
            Vehicle(organisation=organisation, name=f"Live {i}") for i in range(have, count))
        Device.objects.bulk_create(
            Device(organisation=organisation, vehicle=vehicle, identifier=f"benchlive-{i}",
                   protocol="teltonika") for i, vehicle in zip(range(have, count), vehicles,
                                                               strict=True))
    rows = Device.objects.filter(identifier__startswith="benchlive-").order_by("pk")
    return list(rows.values_list("pk", "vehicle_id", "organisation_id"))[:count]


class Fleet:
    """Where each vehicle is, second by second (see the module doc)."""

    def __init__(self, units: list[tuple[int, int, int]], circles: bool = False):
        from telematics.simulator.fleet import load_track
        from telematics.simulator.load import Drive

        self.track = load_track(DRIVE)
        self.leg = len(self.track)
        self.cycle = 2 * (self.leg + PARK_S)
        self.units = units
        golden = (math.sqrt(5) - 1) / 2
        self.phases = [int((i * golden % 1.0) * self.cycle) for i in range(len(units))]
        self.shifts = [((i % 100) * 0.002, (i // 100 % 100) * 0.003) for i in range(len(units))]
        # One timeline for every phase of the run: second n is at start + n.
        self.start = datetime.now(UTC).replace(microsecond=0)
        self.second = 0
        # Or the units of bench_ingest (telematics.simulator.load): laps of a circle,
        # never parked, so every trip starts at once and none ends.
        self.circles = [Drive.for_unit(i, self.start) for i in range(len(units))] if circles \
            else None

    def rows(self) -> list:
        """The fleet's next second: every vehicle's fix."""
        from telematics.ingest.store import PositionRow
        from telematics.protocols.base import Fix

        second = self.second
        self.second += 1
        when = self.start + timedelta(seconds=second)
        if self.circles is not None:
            return [PositionRow(device, vehicle, organisation, drive.fix(when), when)
                    for (device, vehicle, organisation), drive in zip(
                        self.units, self.circles, strict=True)]
        track, leg, cycle = self.track, self.leg, self.cycle
        out = []
        for (device, vehicle, organisation), phase, (dlat, dlon) in zip(
                self.units, self.phases, self.shifts, strict=True):
            t = (second + phase) % cycle
            if t < leg:
                point, moving = track[t], True
            elif t < leg + PARK_S:
                point, moving = track[-1], False
            elif t < 2 * leg + PARK_S:
                point, moving = track[2 * leg + PARK_S - 1 - t], True
            else:
                point, moving = track[0], False
            fix = Fix(fix_time=when, latitude=point.latitude + dlat,
                      longitude=point.longitude + dlon,
                      speed_kmh=point.speed_kmh if moving else 0.0, course=point.course,
                      satellites=9, hdop=0.9, ignition=moving)
            out.append(PositionRow(device, vehicle, organisation, fix, when))
        return out


def store(rows: list) -> set[int]:
    from telematics.ingest.store import store_batch

    stored_at = datetime.now(UTC)
    for row in rows:
        row.server_time = stored_at
    return store_batch(rows, [], set(), stored_at)


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Window:
    """CPU, stats and memory at the start of a measured window."""

    def __init__(self, tracker) -> None:
        self.tracker = tracker
        self.wall = time.monotonic()
        self.thread = cpu_seconds(os.getpid(), tracker._thread.native_id)
        self.process = cpu_seconds(os.getpid())
        self.stats = dict(tracker.fleet.stats)
        self.busy = dict(tracker.busy_s)
        self.cpu = dict(tracker.cpu_s)
        self.rss = rss_bytes()
        self.machine = machine_seconds()
        self.others = processes()

    def seconds(self) -> float:
        return time.monotonic() - self.wall

    def derived(self) -> int:
        stats = self.tracker.fleet.stats
        return sum(stats[k] - self.stats.get(k, 0) for k in ("fixes", "caught_up"))

    def delta(self, key: str) -> int:
        return self.tracker.fleet.stats[key] - self.stats.get(key, 0)

    def tracker_cpu(self) -> float:
        return cpu_seconds(os.getpid(), self.tracker._thread.native_id) - self.thread

    def cpu_line(self) -> str:
        seconds = self.seconds()
        process = (cpu_seconds(os.getpid()) - self.process) / seconds
        postgres = 0.0
        for pid, (name, last) in processes().items():
            if name == "postgres":
                postgres += last - self.others.get(pid, (name, 0.0))[1]
        busy, everything = machine_seconds()
        cores = os.cpu_count() or 1
        machine = (busy - self.machine[0]) / max(everything - self.machine[1], 1e-9) * cores
        return (f"CPU in cores: this process {process:.2f} (tracker thread "
                f"{self.tracker_cpu() / seconds:.2f}), PostgreSQL {postgres / seconds:.2f}; "
                f"machine {machine:.2f} of {cores}")


def live(fleet: Fleet, warmup: int, duration: int) -> None:
    from logbook.live import TripTracker

    tracker = TripTracker(geocode=False)
    tracker.start()
    count = len(fleet.units)
    listener_s = 0.0
    batches = 0
    depth_max = behind_max = 0
    stored = 0
    window = None
    began = time.monotonic()
    try:
        for second in range(warmup + duration):
            if second == warmup:
                window = Window(tracker)
                listener_s = 0.0
                batches = stored = depth_max = behind_max = 0
            rows = fleet.rows()
            slots = max(1, math.ceil(count / BATCH))
            for slot in range(slots):
                part = rows[slot * BATCH:(slot + 1) * BATCH]
                moved = store(part)
                took = time.perf_counter()
                tracker.listener(part, moved)
                listener_s += time.perf_counter() - took
                batches += 1
                stored += len(part)
                depth_max = max(depth_max, tracker.queued)
                behind_max = max(behind_max, tracker.behind)
                pause = began + second + (slot + 1) / slots - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            if second == warmup - 1:
                print(f"  warm-up: {warmup} s, {tracker.fleet.stats['loaded']:,} machines "
                      f"read, queue {tracker.queued:,}, behind {tracker.behind:,}", flush=True)
        seconds = window.seconds()
        derived = window.derived()
        cpu = window.tracker_cpu()
        cores = cpu / seconds
        rss_growth = rss_bytes() - window.rss
        print(f"live: {count:,} vehicles x 1 fix/s for {duration} s: stored "
              f"{stored / seconds:,.0f} fixes/s, tracker derived {derived / seconds:,.0f} "
              f"fixes/s")
        print(f"  tracker thread: {cpu / max(derived, 1) * 1000:.4f} CPU s per 1,000 fixes "
              f"= {cores:.3f} of a core; target < {CORE_TARGET} of a core: "
              f"{'met' if cores < CORE_TARGET and derived >= 0.98 * stored else 'NOT met'}")
        print(f"  listener (event loop): {listener_s / max(batches, 1) * 1e6:.0f} us per batch "
              f"of {BATCH:,} = {listener_s / seconds * 100:.3f} % of a core")
        print(f"  queue: at most {depth_max:,} rows (bound {tracker.max_queued:,}), "
              f"{tracker.queued:,} at the end; vehicles behind: at most {behind_max:,}; "
              f"rows dropped {tracker.dropped:,}; machines in memory "
              f"{len(tracker.fleet.entries):,}")
        print(f"  written in the window: {window.delta('trips'):,} trips, "
              f"{window.delta('events'):,} trip events, {window.delta('saved'):,} machines "
              f"saved in bulk, {window.delta('replays'):,} late-fix replays, "
              f"{window.delta('stale'):,} stale")
        print(f"  RSS: {rss_growth / MIB:+.1f} MiB over the window ({rss_bytes() / MIB:,.0f} "
              f"MiB for the whole process, its stored rows and fixes included)")
        steps = ", ".join(
            f"{step} {tracker.cpu_s[step] - window.cpu.get(step, 0.0):.1f} s "
            f"({tracker.busy_s[step] - window.busy.get(step, 0.0):.1f} s)"
            for step in tracker.busy_s)
        print(f"  tracker's CPU (wall) by step: {steps}; writing what was decided "
              f"{window.delta('write_cpu_ms') / 1000:.1f} s CPU of it")
        print(f"  {window.cpu_line()}", flush=True)
        took = time.monotonic()
        drained = tracker.wait_idle(120)
        print(f"  drained (every machine saved) in {time.monotonic() - took:.1f} s: "
              f"{'ok' if drained else 'NOT finished'}", flush=True)
    finally:
        tracker.stop(60)


def capacity(fleet: Fleet, burst: int, *, catch_up: bool) -> None:
    from logbook.live import TripTracker

    tracker = TripTracker(geocode=False, max_queued=0 if catch_up else 10**9)
    tracker.start()
    try:
        # Reading the machines at startup is not part of the test: done before the burst.
        assert tracker.wait_idle(600)
        count = len(fleet.units)
        took = time.monotonic()
        parts = []
        for _ in range(burst):
            rows = fleet.rows()
            for slot in range(0, count, BATCH):
                part = rows[slot:slot + BATCH]
                parts.append((part, store(part)))
        total = sum(len(p) for p, _ in parts)
        print(f"  stored {total:,} fixes ({burst} s of the fleet) in "
              f"{time.monotonic() - took:.1f} s", flush=True)
        window = Window(tracker)
        for part, moved in parts:
            tracker.listener(part, moved)
        finished = tracker.wait_idle(900)
        seconds = window.seconds()
        derived = window.derived()
        per_thousand = window.tracker_cpu() / max(derived, 1) * 1000
        way = "dropped, caught up from the database" if catch_up else "through the queue"
        print(f"capacity, {way}: {derived:,} fixes derived in {seconds:.1f} s = "
              f"{derived / seconds:,.0f} fixes/s ({per_thousand:.4f} CPU s per 1,000 fixes)"
              f"{'' if finished else ' NOT finished'}; {window.delta('trips'):,} trips, "
              f"{window.delta('events'):,} trip events; RSS {rss_bytes() / MIB:,.0f} MiB")
        print(f"  {window.cpu_line()}", flush=True)
    finally:
        tracker.stop(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--burst", type=int, default=20, help="seconds of fixes, 0: skip")
    parser.add_argument("--route", choices=["drive", "circles"], default="drive",
                        help="circles: the units of bench_ingest (never parked)")
    args = parser.parse_args()
    url = bench_database_url()
    if url is None:
        print("bench_live_trips: skipped, it needs PostgreSQL: set DATABASE_URL, e.g. "
              "postgres://root@127.0.0.1:5432/root (it uses a database 'benchlive' there)")
        return
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SECRET_KEY", "bench-live-trips-" + "x" * 40)
    os.environ["DEBUG"] = "0"
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ["GEOCODER_URL"] = ""
    os.environ["DJANGO_SETTINGS_MODULE"] = "fleet.settings"
    import django

    django.setup()
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} "
          f"cores, {busy_cores():.2f} of them busy before the run; {args.vehicles:,} vehicles; "
          f"database {urlsplit(url).path.lstrip('/')}", flush=True)
    prepare_database(url)
    reset_tables()
    fleet = Fleet(register(args.vehicles), circles=args.route == "circles")
    if args.route == "circles":
        print("route: laps of a circle, as bench_ingest's units drive", flush=True)
    else:
        print(f"drive: {fleet.leg} s forwards and backwards, parked {PARK_S} s after each "
              f"({fleet.cycle} s a cycle)", flush=True)
    live(fleet, args.warmup, args.duration)
    if args.burst:
        capacity(fleet, args.burst, catch_up=False)
        capacity(fleet, args.burst, catch_up=True)


if __name__ == "__main__":
    main()
