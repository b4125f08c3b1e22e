"""How fast Teltonika records go from a unit's socket into PostgreSQL, and at what cost.

Run from the project root (PostgreSQL must be reachable; the database is created when
missing, migrated, and its positions emptied, so give the benchmark one of its own)::

    .venv/bin/python benchmarks/bench_ingest.py              # 10,000 live units, 45 s
    .venv/bin/python benchmarks/bench_ingest.py --units 500 --duration 10   # quick look

The ingest listeners run as ``manage.py ingest`` in a separate process on a free
loopback port, as deployed; the simulated units (``telematics.simulator.load``) run in
this process. Each scenario gets a fresh ingest process, so its CPU time and peak RSS
are the scenario's own. Scenarios, with the targets of the "Telematics ingest" issue:

- live: every unit sends one record a second, spread evenly over the second. Every
  record stored and acknowledged, p99 acknowledgement latency under 250 ms, the ingest
  process under one core and under 1 GiB RSS.
- backlog: units flush packets of 25 records as fast as the acks come back (after a
  coverage gap). At least 50,000 positions stored per second.

Before those, the decode-only rate of each protocol on one core (no I/O, no database).
Figures are printed, nothing is asserted: on a small machine the load generator and
PostgreSQL share the cores with the listener, which the CPU lines show.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    from telematics.simulator.load import LoadResult

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgres://root@127.0.0.1:5432/bench"
LIVE_P99_TARGET_MS = 250.0
LIVE_CORES_TARGET = 1.0
LIVE_RSS_TARGET_BYTES = 1 << 30
BACKLOG_RATE_TARGET = 50_000.0
DECODE_RUNS = 5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20


# --- CPU and memory of processes, from /proc (psutil is not a dependency) -------------------


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time of a process, or of one of its threads (/proc stat 14, 15)."""
    path = f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat"
    with open(path) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()  # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_bytes(pid: int) -> int:
    """The process' peak resident set (VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def processes() -> dict[int, tuple[str, float]]:
    """Name and CPU seconds of every process on this machine, by pid."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with (
            contextlib.suppress(OSError, IndexError, ValueError),
            open(f"/proc/{entry}/comm") as comm,
        ):
            found[int(entry)] = (comm.read().strip(), cpu_seconds(int(entry)))
    return found


def machine_seconds() -> tuple[float, float]:
    """(busy, all) CPU seconds of every core since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLOCK_TICKS, sum(values) / CLOCK_TICKS


def busy_cores(seconds: float = 2.0) -> float:
    """How many cores the machine keeps busy now: other work skews every figure below."""
    busy, everything = machine_seconds()
    time.sleep(seconds)
    busy_after, everything_after = machine_seconds()
    share = (busy_after - busy) / max(everything_after - everything, 1e-9)
    return share * (os.cpu_count() or 1)


class CpuMeter:
    """CPU used over a window by the listener, this process, PostgreSQL and the rest.

    Processes come and go (Django recycles database connections, other jobs start), so
    all of them are sampled every second and each counts from when it was first seen.
    """

    def __init__(self, ingest_pid: int) -> None:
        self.ingest_pid = ingest_pid
        self.started = time.monotonic()
        self.ingest = cpu_seconds(ingest_pid)
        self.ingest_loop = cpu_seconds(ingest_pid, thread=ingest_pid)  # the event loop
        self.generator = time.process_time()
        self.machine = machine_seconds()
        self.first = processes()
        self.last = dict(self.first)

    def sample(self) -> None:
        for pid, (name, seconds) in processes().items():
            self.first.setdefault(pid, (name, 0.0))  # born inside the window
            self.last[pid] = (name, seconds)

    def report(self) -> float:
        """Print the CPU lines; returns the ingest process' cores."""
        self.sample()
        seconds = max(time.monotonic() - self.started, 1e-9)
        ingest = (cpu_seconds(self.ingest_pid) - self.ingest) / seconds
        loop = (cpu_seconds(self.ingest_pid, thread=self.ingest_pid) - self.ingest_loop) / seconds
        generator = (time.process_time() - self.generator) / seconds
        used: dict[str, float] = {}
        for pid, (name, last) in self.last.items():
            if pid not in (self.ingest_pid, os.getpid()):
                used[name] = used.get(name, 0.0) + (last - self.first[pid][1]) / seconds
        postgres = used.pop("postgres", 0.0)
        busy, everything = machine_seconds()
        cores = os.cpu_count() or 1
        machine = (busy - self.machine[0]) / max(everything - self.machine[1], 1e-9) * cores
        print(
            f"  CPU over {seconds:.1f} s, in cores: ingest {ingest:.2f} ({loop:.2f} event loop, "
            f"{ingest - loop:.2f} database threads), load generator {generator:.2f}, "
            f"PostgreSQL {postgres:.2f}; machine {machine:.2f} of {cores}"
        )
        others = sorted(used.items(), key=lambda item: -item[1])[:3]
        unaccounted = machine - ingest - generator - postgres - sum(used.values())
        busiest = [f"{name} {share:.2f}" for name, share in others if share >= 0.01]
        print(
            f"  other processes: {', '.join(busiest) or 'none'}; kernel and unaccounted "
            f"{max(unaccounted, 0.0):.2f}"
        )
        return ingest


# --- decode-only rates ----------------------------------------------------------------------


def best_rate(count: int, work: Callable[[], object]) -> float:
    """Items per second over the best of DECODE_RUNS runs of ``work`` (which does ``count``)."""
    best = float("inf")
    for _ in range(DECODE_RUNS):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return count / best


def decode_rates() -> None:
    from telematics.ingest.http import QueryParams
    from telematics.protocols.gt06 import Gt06Session
    from telematics.protocols.nmea import NmeaSession
    from telematics.protocols.osmand import decode_request
    from telematics.protocols.teltonika import TeltonikaTcpSession
    from telematics.simulator.encoders import teltonika_avl
    from telematics.simulator.load import IO_ELEMENTS, Drive

    print(f"Decode only, one core, best of {DECODE_RUNS} runs")
    drive = Drive.for_unit(1, datetime(2024, 5, 1, tzinfo=UTC))
    start = datetime(2024, 5, 1, 8, tzinfo=UTC)
    packets = [
        teltonika_avl(
            [drive.fix(start + timedelta(seconds=p * 25 + r)) for r in range(25)], IO_ELEMENTS
        )
        for p in range(400)
    ]
    teltonika = TeltonikaTcpSession()

    def teltonika_packets() -> None:
        for packet in packets:
            teltonika.decode(packet)

    rate = best_rate(len(packets) * 25, teltonika_packets)
    print(f"  Teltonika Codec 8, 25 records a packet, 4 IO each  {rate:>10,.0f} records/s")

    frame = _vendor_frame("v31_location")
    gt06 = Gt06Session()
    frames = 20_000
    rate = best_rate(frames, lambda: [gt06.decode(frame) for _ in range(frames)])
    print(f"  GT06 location frame (vendor v31_location)        {rate:>10,.0f} frames/s")

    nmea_file = ROOT / "tests/data/nmea/josm-1433-drive-2008-08-14.nmea"
    lines = [line.encode() for line in nmea_file.read_text().splitlines() if line.strip()]

    def nmea_lines() -> None:
        session = NmeaSession()  # a fresh unit each pass: the file's clock starts over
        for line in lines:
            session.decode(line)

    rate = best_rate(len(lines), nmea_lines)
    print(f"  NMEA lines (josm drive: GGA, RMC, VTG...)        {rate:>10,.0f} lines/s")

    query = (
        "id=phone-17&timestamp=1714550400&lat=52.520008&lon=13.404954&speed=12.5"
        "&bearing=181.0&altitude=34.0&accuracy=4.0&batt=87.0&charge=false"
    )
    requests = 20_000

    def osmand_requests() -> None:
        for _ in range(requests):
            pairs = parse_qsl(query, keep_blank_values=True)  # as the HTTP listener does
            decode_request(QueryParams(pairs), b"", "")

    rate = best_rate(requests, osmand_requests)
    print(f"  OsmAnd GET (query parsing + decode_request)      {rate:>10,.0f} requests/s")


def _vendor_frame(name: str) -> bytes:
    for line in (ROOT / "tests/data/protocols/gt06/vendor.txt").read_text().splitlines():
        if line.startswith(name + " "):
            return bytes.fromhex(line.split()[1])
    raise KeyError(name)


# --- the database and the ingest process ----------------------------------------------------


def child_environment(database_url: str, redis_url: str) -> dict[str, str]:
    """Production-like settings for the children: no DEBUG query log, loopback only."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        SECRET_KEY=os.environ.get("SECRET_KEY") or "bench-" + secrets.token_urlsafe(40),
        DEBUG="0",
        INGEST_BIND="127.0.0.1",
        REDIS_URL=redis_url,
        MQTT_URL="",
        LOG_LEVEL="WARNING",
    )
    return env


def prepare_database(database_url: str, env: dict[str, str]) -> None:
    """Create the database when missing and migrate it."""
    import psycopg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"The benchmark only uses loopback addresses, not {parts.hostname}.")
    if not name.startswith("bench"):
        raise SystemExit(
            f"Refusing database {name!r}: the benchmark empties its positions, so give it "
            "one of its own whose name starts with 'bench'."
        )
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            admin.execute(f'CREATE DATABASE "{name}"')
            print(f"Created database {name}")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )


def reset_tables() -> None:
    """Start every run from the same database: no positions, nothing derived from them.

    Positions would pile up over runs, and so would what the ingest process derives from
    them (vehicle states and signals, events, the logbook's trips): its trip tracker
    catches up every vehicle with trip state when it starts, which after a few runs
    means thousands of vehicles replayed in the measured process. Every stored record
    also updates its device row: without a vacuum (autovacuum may be off on a test
    server) that table bloats by a dead row per record and later runs slow down.
    """
    from django.apps import apps
    from django.db import connection

    tables = [
        "telematics_position",
        "telematics_vehiclestate",
        "telematics_signalsample",
        "telematics_event",
    ]
    if apps.is_installed("logbook"):
        logbook = apps.get_app_config("logbook").get_models(include_auto_created=True)
        tables += [model._meta.db_table for model in logbook]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
        cursor.execute("VACUUM ANALYZE telematics_device, fleet_vehicle")
        cursor.execute("SHOW autovacuum")
        if cursor.fetchone()[0] != "on":
            print("(autovacuum is off on this server; the benchmark vacuums before each run)")


@dataclass
class DatabaseCounters:
    """What the database has done so far: rows stored, WAL written, checkpoints."""

    positions: int
    wal_bytes: int
    checkpoints: int

    @classmethod
    def read(cls) -> DatabaseCounters:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT (SELECT count(*) FROM telematics_position), "
                "pg_current_wal_lsn() - '0/0'::pg_lsn, "
                "(SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)"
            )
            positions, wal, checkpoints = cursor.fetchone()
        return cls(positions, int(wal), checkpoints)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _interruptible() -> None:
    # A benchmark started in the background has SIGINT ignored, and children inherit
    # that: restore it so the listener shuts down as it does on Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class IngestProcess:
    """``manage.py ingest --protocols teltonika`` on a free loopback port, as a child."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"ingest-{self.port}.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "ingest",
                "--protocols",
                "teltonika",
                "--metrics-port",
                "0",
            ],
            cwd=ROOT,
            env={**env, "TELTONIKA_PORT": str(self.port)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_interruptible,
        )
        self.pid = self.process.pid

    def wait_until_listening(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"ingest exited with {self.process.returncode}:\n{self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.2)
        raise SystemExit(f"ingest did not listen within {timeout:.0f} s:\n{self.log()}")

    def stop(self) -> None:
        """Interrupt it like Ctrl-C (it hangs up on its units); kill it if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()

    def log(self, lines: int = 20) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])


# --- scenarios ------------------------------------------------------------------------------


@dataclass
class Outcome:
    result: LoadResult
    stored: int  # positions in the table after the run minus before
    peak_rss: int
    ingest_cores: float

    @property
    def stored_per_second(self) -> float:
        return self.stored / self.result.elapsed if self.result.elapsed else 0.0

    @property
    def everything_stored(self) -> bool:
        r = self.result
        return r.complete and self.stored == r.records_acked == r.records_sent


class _Progress:
    """Samples the CPU meter every second and prints a line every five."""

    def __init__(self, ingest_pid: int) -> None:
        self.pid = ingest_pid
        self.meter: CpuMeter | None = None
        self.calls = 0
        self.last = (time.monotonic(), cpu_seconds(ingest_pid), 0)  # time, CPU, acks

    def start(self) -> None:
        """The units are connected and records begin: the measured window opens.

        Ten thousand units' objects live for the whole run; frozen, they are not rescanned
        by every full garbage collection, which would stall all of them at once and show
        up as acknowledgement latency that is the generator's, not the listener's.
        """
        gc.freeze()
        self.meter = CpuMeter(self.pid)

    def __call__(self, result: LoadResult) -> None:
        from telematics.simulator.load import percentile

        if self.meter is not None:
            self.meter.sample()
        self.calls += 1
        if self.calls % 5:
            return
        now, cpu = time.monotonic(), cpu_seconds(self.pid)
        seconds = now - self.last[0]
        recent = result.latencies[self.last[2] :]  # one latency per acked packet
        p99 = f"p99 {percentile(recent, 0.99) * 1000:6,.0f} ms" if recent else ""
        print(
            f"  {result.connected:>6,}/{result.units:,} connected, "
            f"{result.records_acked:>9,} records acked, "
            f"{(result.packets_acked - self.last[2]) / seconds:>7,.0f} acks/s {p99}, "
            f"ingest {(cpu - self.last[1]) / seconds:4.2f} cores",
            flush=True,
        )
        self.last = (now, cpu, len(result.latencies))


def run_scenario(
    name: str, imeis: list[str], env: dict[str, str], log_dir: Path, budget: float, **load
) -> Outcome | None:
    """Play the load against a fresh ingest process; None when it overran its budget."""
    from telematics.simulator.load import run_units

    reset_tables()  # before the listener starts: it catches up what it finds
    ingest = IngestProcess(env, log_dir)
    try:
        ingest.wait_until_listening()
        before = DatabaseCounters.read()
        progress = _Progress(ingest.pid)
        print(
            f"\n{name}: {len(imeis):,} units against ingest pid {ingest.pid} "
            f"on 127.0.0.1:{ingest.port}",
            flush=True,
        )

        async def play() -> LoadResult:
            return await asyncio.wait_for(
                run_units(
                    "127.0.0.1",
                    ingest.port,
                    imeis,
                    progress=progress,
                    on_start=progress.start,
                    **load,
                ),
                budget,
            )

        try:
            result = asyncio.run(play())
        except TimeoutError:
            print(f"  did not finish within its {budget:.0f} s budget; ingest log:\n{ingest.log()}")
            return None
        finally:
            gc.unfreeze()
        print("  " + result.summary().replace("\n", "\n  "))
        cores = progress.meter.report() if progress.meter else 0.0
        after = DatabaseCounters.read()
        stored = after.positions - before.positions
        wal = after.wal_bytes - before.wal_bytes
        print(
            f"  PostgreSQL wrote {wal / MIB:,.0f} MiB of WAL ({wal / max(stored, 1):,.0f} bytes "
            f"a position), {after.checkpoints - before.checkpoints} checkpoints"
        )
        outcome = Outcome(result, stored, peak_rss_bytes(ingest.pid), cores)
        if errors := ingest.log().strip():
            print("  ingest log (last lines):\n    " + errors.replace("\n", "\n    "))
        return outcome
    finally:
        ingest.stop()


def mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def live(imeis: list[str], duration: float, env: dict[str, str], log_dir: Path, can: bool) -> None:
    outcome = run_scenario(
        "Live, with CAN adapter IO" if can else "Live",
        imeis,
        env,
        log_dir,
        budget=duration + 900,
        mode="live",
        rate=1.0,
        duration=duration,
        connect_timeout=120.0,
        can=can,
    )
    if outcome is None:
        return
    r = outcome.result
    p99 = r.latency_ms(0.99)
    print(
        f"  stored {outcome.stored:,} positions = {outcome.stored_per_second:,.0f}/s, "
        f"ingest peak RSS {outcome.peak_rss / MIB:,.0f} MiB"
    )
    print("  target                              measured")
    print(
        f"  every record stored and acked       {outcome.stored:,} stored, "
        f"{r.records_acked:,} acked of {r.records_sent:,} sent  "
        f"{mark(outcome.everything_stored)}"
    )
    print(
        f"  p99 ack latency < {LIVE_P99_TARGET_MS:.0f} ms            {p99:,.1f} ms  "
        f"{mark(p99 < LIVE_P99_TARGET_MS)}"
    )
    print(
        f"  ingest process < {LIVE_CORES_TARGET:.0f} core             "
        f"{outcome.ingest_cores:.2f} cores  {mark(outcome.ingest_cores < LIVE_CORES_TARGET)}"
    )
    print(
        f"  ingest peak RSS < 1 GiB             {outcome.peak_rss / MIB:,.0f} MiB  "
        f"{mark(outcome.peak_rss < LIVE_RSS_TARGET_BYTES)}"
    )


def backlog(imeis: list[str], packets: int, env: dict[str, str], log_dir: Path, can: bool) -> None:
    outcome = run_scenario(
        "Backlog, with CAN adapter IO" if can else "Backlog",
        imeis,
        env,
        log_dir,
        budget=900,
        mode="backlog",
        packets=packets,
        records_per_packet=25,
        can=can,
    )
    if outcome is None:
        return
    rate = outcome.stored_per_second
    print(
        f"  stored {outcome.stored:,} positions in {outcome.result.elapsed:.1f} s, "
        f"ingest peak RSS {outcome.peak_rss / MIB:,.0f} MiB"
    )
    print("  target                              measured")
    print(f"  every record stored and acked       {mark(outcome.everything_stored)}")
    print(
        f"  >= {BACKLOG_RATE_TARGET:,.0f} positions/s stored     {rate:,.0f}/s  "
        f"{mark(rate >= BACKLOG_RATE_TARGET)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=10_000, help="live units (10,000)")
    parser.add_argument("--duration", type=float, default=45.0, help="live seconds (45)")
    parser.add_argument("--backlog-units", type=int, default=200)
    parser.add_argument("--backlog-packets", type=int, default=40)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument(
        "--redis-url",
        default="",
        help="Publish live updates through Redis (default: in-memory layer)",
    )
    parser.add_argument(
        "--can",
        action="store_true",
        help="Units also report CAN adapter IO (speed, fuel level): the vehicle-signal path",
    )
    parser.add_argument(
        "--skip", action="append", default=[], choices=("decode", "live", "backlog")
    )
    args = parser.parse_args()

    print(
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores "
        f"({busy_cores():.2f} busy before the run); database {args.database_url}\n",
        flush=True,
    )
    env = child_environment(args.database_url, args.redis_url)
    for name in ("DATABASE_URL", "SECRET_KEY", "DEBUG", "REDIS_URL"):
        os.environ[name] = env[name]
    os.environ["DJANGO_SETTINGS_MODULE"] = "fleet.settings"
    import django

    django.setup()

    if "decode" not in args.skip:
        everywhere = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(everywhere)})  # figures per core
        try:
            decode_rates()
        finally:
            os.sched_setaffinity(0, everywhere)
    if {"live", "backlog"} <= set(args.skip):
        return

    import psycopg

    from telematics.simulator.load import load_imeis, register_units

    try:
        prepare_database(args.database_url, env)
    except psycopg.OperationalError as error:
        first_line = str(error).strip().splitlines()[0]
        print(f"\nNo PostgreSQL at {args.database_url} ({first_line}): end-to-end skipped.")
        return
    live_imeis = load_imeis(args.units)
    backlog_imeis = load_imeis(args.backlog_units, first=500_000)  # a range of their own
    started = time.monotonic()
    added = register_units(live_imeis + backlog_imeis)
    print(f"\nUnits registered: {added:,} new in {time.monotonic() - started:.1f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as log_dir:
        if "live" not in args.skip:
            live(live_imeis, args.duration, env, Path(log_dir), args.can)
        if "backlog" not in args.skip:
            backlog(backlog_imeis, args.backlog_packets, env, Path(log_dir), args.can)


if __name__ == "__main__":
    main()
