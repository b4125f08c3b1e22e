"""Live fan-out: how late the map's websocket clients hear of a fix, while the ingest
stores thousands of positions a second.

Run from the project root, with Redis (the channel layer between the processes) and
PostgreSQL on loopback::

    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python benchmarks/bench_fanout.py
    .venv/bin/python benchmarks/bench_fanout.py --redis-url redis://127.0.0.1:6379/0 \\
        --units 2000 --clients 20 --duration 20                          # a quick look

Without a Redis URL (``--redis-url`` or ``REDIS_URL``) it says so and skips: one
process with the in-memory layer is not what this measures.

As deployed, in separate processes: ``manage.py ingest --protocols teltonika`` (the
real pipeline: decode, filter, batch store, vehicle state, then one ``vehicles.update``
per organisation per stored batch through channels_redis) and the site under
``uvicorn fleet.asgi:application`` (``--ws websockets-sansio``, as ``fleet/server.py``
runs it). PostgreSQL gets a database of its own (``--database-url``, default
``postgres://root@127.0.0.1:5432/benchfanout``, created and migrated when missing; its
positions are emptied every run).

- ``--units`` (5,000) simulated Teltonika units (``telematics.simulator.load``, in this
  process) each send one record a second, one record a packet, each fix stamped with
  the moment it is sent: R = 5,000 positions/s into one organisation.
- ``--clients`` (50) websocket clients (in a child process of their own, so that
  their work does not slow the units) connect to ``/ws/live/`` logged in as 50
  fleet managers of that organisation, take the snapshot, then count every update
  message and its vehicles. Fix-to-client latency is the moment a client holds an
  update minus the fix time of each vehicle in it (one clock: everything runs here);
  every client measures a random tenth of its messages (every vehicle of them).
- The first ``--warmup`` seconds (5) are not counted; then ``--duration`` (30).

Printed: positions stored per second, latency p50/p99/max over all clients, update
messages and vehicles per second per client, and the CPU of the web process, the
ingest process, Redis and PostgreSQL. Target ("Live dashboard" issue): 5,000
positions/s to 50 clients with p99 under 1 s. Nothing is asserted; other busy
processes on the machine show in the figures (the header says how busy it was).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import busy_cores, free_port  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://root@127.0.0.1:5432/benchfanout"
ORGANISATION = "Fanout Load"
FIRST_UNIT = 700_000  # a range of load IMEIs of its own
P99_TARGET_S = 1.0
SAMPLE_SHARE = 0.1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the clients (a child process: ``--clients-mode``) ----------------------------------


async def client_main(url: str, tokens: list[str], warmup: float, duration: float,
                      compression: str | None) -> None:
    """Connect, report ready, wait for "go" on stdin, measure, print the results."""
    from websockets.asyncio.client import connect

    stats = [{"messages": 0, "vehicles": 0, "latencies": [], "snapshot": 0}
             for _ in tokens]
    window = {"start": None, "end": None}
    pick = random.Random(7)

    async def one(index: int, token: str, ready: asyncio.Event) -> None:
        mine = stats[index]
        origin = "http://" + url.split("://", 1)[1].split("/", 1)[0]
        async with connect(url, additional_headers={"Cookie": f"sessionid={token}"},
                           origin=origin,
                           max_size=64 * 1024 * 1024, open_timeout=120, compression=compression,
                           ping_interval=None) as socket_:
            snapshot = json.loads(await socket_.recv())
            mine["snapshot"] = len(snapshot.get("vehicles", []))
            ready.set()
            async for raw in socket_:
                now = time.time()
                start, end = window["start"], window["end"]
                if start is None or now < start:
                    continue
                if now > end:
                    return
                data = raw.encode() if isinstance(raw, str) else raw
                if b'"update"' not in data[:24]:
                    continue
                mine["messages"] += 1
                mine["vehicles"] += data.count(b'"id"')
                if pick.random() < SAMPLE_SHARE:
                    for vehicle in json.loads(data)["vehicles"]:
                        if vehicle.get("fix_time"):
                            fixed = datetime.fromisoformat(vehicle["fix_time"]).timestamp()
                            mine["latencies"].append(now - fixed)

    readies = [asyncio.Event() for _ in tokens]
    tasks = []
    for index, token in enumerate(tokens):
        tasks.append(asyncio.create_task(one(index, token, readies[index])))
        await asyncio.sleep(0.02)  # no thundering herd of snapshots
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 300)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    if line.strip() != "go":
        return
    window["start"] = time.time() + warmup
    window["end"] = window["start"] + duration
    await asyncio.sleep(warmup + duration + 0.5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"stats": stats, "seconds": duration}), flush=True)


# --- the pipeline fed directly (a child process: ``--feeder-mode``) --------------------


async def feeder_main(units: int, seconds: float) -> None:
    """The ingest as ``manage.py ingest`` starts it (pipeline, trip tracker, alert worker,
    live publishing), without listeners: every unit's fix goes straight into
    ``pipeline.store`` once a second, spread over the second, as a listener would hand
    it over after decoding. Prints "ready", waits for "go", feeds for ``seconds``."""
    from asgiref.sync import sync_to_async

    from telematics.ingest.directory import Unit
    from telematics.ingest.runner import start_ingest
    from telematics.models import Device
    from telematics.protocols.base import Decoded
    from telematics.simulator.load import Drive, load_imeis

    imeis = load_imeis(units, first=FIRST_UNIT)

    def read_units() -> list[Unit]:
        rows = Device.objects.filter(identifier__in=imeis).values_list(
            "pk", "identifier", "organisation_id", "vehicle_id")
        return [Unit(pk, ident, org, vehicle, "") for pk, ident, org, vehicle in rows]

    fleet = await sync_to_async(read_units, thread_sensitive=False)()
    service = await start_ingest((), host="127.0.0.1", ports={}, mqtt_url="")
    pipeline = service.pipeline
    today = datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    drives = [Drive.for_unit(index, today) for index in range(len(fleet))]
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    failures = 0
    pending: set[asyncio.Task] = set()

    def done(task: asyncio.Task) -> None:
        nonlocal failures
        pending.discard(task)
        if task.cancelled() or task.exception() is not None:
            failures += 1

    started = loop.time()
    step = 1.0 / max(len(fleet), 1)
    tick = 0
    while loop.time() - started < seconds:
        for index, unit in enumerate(fleet):
            due = started + tick + index * step
            delay = due - loop.time()
            if delay > 0.002:
                await asyncio.sleep(delay)
            fix = drives[index].fix(datetime.now().astimezone())
            task = asyncio.ensure_future(pipeline.store(unit, "teltonika",
                                                        Decoded(fixes=[fix])))
            pending.add(task)
            task.add_done_callback(done)
        tick += 1
    if pending:
        await asyncio.wait(pending, timeout=30)
    await service.stop()
    print(json.dumps({"failures": failures}), flush=True)


# --- processes and CPU ----------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def processes_named(name: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/comm") as comm:
                if comm.read().strip() == name:
                    found.append(int(entry))
    return found


class Cpu:
    """CPU seconds of named groups of processes over a window."""

    def __init__(self, groups: dict[str, list[int] | str]):
        self.groups = groups
        self.start = self._read()
        self.started = time.monotonic()

    def _read(self) -> dict[str, dict[int, float]]:
        read = {}
        for label, who in self.groups.items():
            pids = processes_named(who) if isinstance(who, str) else who
            seconds = {}
            for pid in pids:
                with contextlib.suppress(OSError, IndexError, ValueError):
                    seconds[pid] = cpu_seconds(pid)
            read[label] = seconds
        return read

    def cores(self) -> dict[str, float]:
        end = self._read()
        span = max(time.monotonic() - self.started, 1e-9)
        return {label: sum(v - self.start[label].get(pid, 0.0) for pid, v in end[label].items())
                / span for label in self.groups}


def children_of(pid: int) -> list[int]:
    """uvicorn's worker processes, when it runs several."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError), open(f"/proc/{entry}/stat") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return found




class Child:
    def __init__(self, name: str, command: list[str], env: dict[str, str], log_dir: Path,
                 stdin=None, stdout=None):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=stdin, text=True,
            stdout=stdout if stdout is not None else self.log,
            stderr=self.log if stdout is not None else subprocess.STDOUT)
        self.pid = self.process.pid

    def wait_for_port(self, port: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited:\n{self.tail()}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", port), timeout=0.5):
                return
            time.sleep(0.2)
        raise SystemExit(f"{self.name} did not listen on {port}:\n{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        if not self.log.closed:
            self.log.flush()
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()


# --- setting up ------------------------------------------------------------------------


def principals(count: int) -> list[str]:
    """``count`` fleet managers of the organisation, each logged in: their session keys
    (the browser's way in, cookie and Origin check included)."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )

    from fleet.models import Organisation, Role
    from fleet.services import create_user

    organisation = Organisation.objects.get(name=ORGANISATION)
    store = import_module(settings.SESSION_ENGINE).SessionStore
    keys = []
    users = get_user_model().objects
    for n in range(count):
        name = f"fanout-{n:03d}"
        user = users.filter(username=name).first() or create_user(
            name, organisation, Role.ADMIN, password=secrets.token_urlsafe(16))[0]
        session = store()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        keys.append(session.session_key)
    return keys


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(share * len(ordered) + 0.5) - 1))]


def measuring(args, clients: subprocess.Popen, groups, measured: dict):
    """What to do when the fixes start: tell the clients, then open and close the
    measured window after the warm-up."""
    loop = asyncio.get_running_loop()

    def go() -> None:
        clients.stdin.write("go\n")
        clients.stdin.flush()

        def open_window() -> None:
            measured["cpu"] = Cpu(groups)
            measured["stored"] = stored_count()

        def close_window() -> None:
            measured["cores"] = measured["cpu"].cores()
            measured["stored"] = stored_count() - measured["stored"]

        loop.call_later(args.warmup, open_window)
        loop.call_later(args.warmup + args.duration, close_window)

    return go


async def play_units(args, ingest_port: int, clients: subprocess.Popen, groups) -> tuple:
    """``--feed tcp``: the simulated units, through the Teltonika listener."""
    from telematics.simulator.load import load_imeis, run_units

    measured: dict = {}
    result = await run_units(
        "127.0.0.1", ingest_port, load_imeis(args.units, first=FIRST_UNIT), mode="live",
        rate=1.0, duration=args.warmup + args.duration + 1, connect_timeout=180.0,
        on_start=measuring(args, clients, groups, measured))
    return "\n       ".join(result.summary().splitlines()[1:4]), measured


async def play_feeder(args, feeder: subprocess.Popen, clients: subprocess.Popen,
                      groups) -> tuple:
    """``--feed pipeline``: the feeder child hands fixes straight to the pipeline."""
    measured: dict = {}
    go = measuring(args, clients, groups, measured)
    feeder.stdin.write("go\n")
    feeder.stdin.flush()
    go()
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, feeder.stdout.readline)
    failures = json.loads(line).get("failures", "?") if line.strip() else "?"
    return (f"{args.units:,} units' fixes handed to the pipeline, 1 a second each; "
            f"{failures} stores failed"), measured


async def play_publisher(args, clients: subprocess.Popen, groups) -> tuple:
    """``--feed publish``: no ingest at all; this process sends what the pipeline sends
    after each stored batch (one ``vehicles.update`` per organisation every
    ``INGEST_BATCH_WAIT_MS``, the newest fix of each vehicle in it, stamped now) through
    channels_redis: the fan-out alone, from Redis to the browsers."""
    from asgiref.sync import sync_to_async
    from channels.layers import get_channel_layer

    from fleet.live import organisation_group
    from fleet.models import Organisation, Vehicle
    from telematics.simulator.load import Drive

    def read() -> tuple[int, list[int]]:
        organisation = Organisation.objects.get(name=ORGANISATION)
        return organisation.pk, list(Vehicle.objects.filter(
            organisation=organisation).order_by("pk").values_list("pk", flat=True))

    organisation_id, vehicle_ids = await sync_to_async(read)()
    layer = get_channel_layer()
    group = organisation_group(organisation_id)
    today = datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    drives = {pk: Drive.for_unit(pk, today) for pk in vehicle_ids}
    measured: dict = {}
    measuring(args, clients, groups, measured)()
    loop = asyncio.get_running_loop()
    batch_s = 0.02
    per_batch = max(1, round(args.units * batch_s))
    started = loop.time()
    sent = index = 0
    while loop.time() - started < args.warmup + args.duration + 1:
        now = datetime.now().astimezone()
        vehicles = []
        for _ in range(per_batch):
            pk = vehicle_ids[index % len(vehicle_ids)]
            index += 1
            fix = drives[pk].fix(now)
            vehicles.append({"id": pk, "fix_time": now.isoformat(), "latitude": fix.latitude,
                             "longitude": fix.longitude, "speed_kmh": fix.speed_kmh,
                             "course": fix.course, "ignition": True})
        await layer.group_send(group, {"type": "vehicles.update", "vehicles": vehicles})
        sent += len(vehicles)
        delay = started + (sent / args.units) - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    seconds = loop.time() - started
    return (f"published {sent / seconds:,.0f} vehicle updates/s in batches of {per_batch} "
            f"every {batch_s * 1000:.0f} ms (no ingest)"), measured


def stored_count() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM telematics_position")
        return cursor.fetchone()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=5_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""))
    parser.add_argument("--log-lines", type=int, default=5,
                        help="last lines of the ingest and web logs to print")
    parser.add_argument("--feed", choices=("tcp", "pipeline", "publish"), default="tcp",
                        help="tcp: simulated Teltonika units through the listener (default); "
                        "pipeline: fixes handed straight to the ingest pipeline, no sockets; "
                        "publish: no ingest, the pipeline's live messages sent to Redis "
                        "directly (the fan-out alone)")
    parser.add_argument("--web-workers", type=int, default=1,
                        help="uvicorn worker processes serving the site (1)")
    parser.add_argument("--no-compression", action="store_true",
                        help="clients do not offer permessage-deflate (browsers do)")
    parser.add_argument("--clients-mode", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--feeder-mode", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--tokens-file", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.clients_mode:
        tokens = json.loads(Path(args.tokens_file).read_text())
        asyncio.run(client_main(args.url, tokens, args.warmup, args.duration,
                                None if args.no_compression else "deflate"))
        return 0
    if args.feeder_mode:
        os.environ["DJANGO_SETTINGS_MODULE"] = "fleet.settings"
        import django

        django.setup()
        asyncio.run(feeder_main(args.units, args.warmup + args.duration + 1))
        return 0
    if not args.redis_url:
        print("No Redis (set REDIS_URL or --redis-url): the fan-out across processes goes "
              "through channels_redis, so this benchmark is skipped.")
        return 0

    import bench_ingest  # the database helpers

    print(f"{os.cpu_count()} cores ({busy_cores(1.0):.2f} busy before the run); "
          f"{args.units:,} units at 1 record/s, {args.clients} clients "
          f"({'no compression' if args.no_compression else 'permessage-deflate, as browsers'}"
          f"); fixes fed by {args.feed}; Redis {args.redis_url}", flush=True)
    env = bench_ingest.child_environment(args.database_url, args.redis_url)
    env.update(CHANNEL_PREFIX=f"benchfanout-{os.getpid()}", ALLOWED_HOSTS="127.0.0.1",
               SECURE_SSL_REDIRECT="0", SECURE_HSTS_SECONDS="0", WEBHOOKS_IN_INGEST="0")
    for name in ("DATABASE_URL", "SECRET_KEY", "DEBUG", "REDIS_URL", "CHANNEL_PREFIX"):
        os.environ[name] = env[name]
    os.environ["DJANGO_SETTINGS_MODULE"] = "fleet.settings"
    # The position count is read between the units' callbacks, on their event loop.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    import django

    django.setup()
    import psycopg

    try:
        bench_ingest.prepare_database(args.database_url, env)
    except psycopg.OperationalError as error:
        print(f"No PostgreSQL at {args.database_url} ({str(error).strip().splitlines()[0]}): "
              "skipped.")
        return 0
    from telematics.simulator.load import load_imeis, register_units

    started = time.monotonic()
    added = register_units(load_imeis(args.units, first=FIRST_UNIT), ORGANISATION)
    tokens = principals(args.clients)
    bench_ingest.reset_tables()
    print(f"Units registered ({added:,} new) and {len(tokens)} logins in "
          f"{time.monotonic() - started:.1f} s", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as scratch:
        log_dir = Path(scratch)
        ingest_port, web_port = free_port(), free_port()
        feeder = ingest = None
        if args.feed == "publish":
            pass
        elif args.feed == "tcp":
            ingest = Child("ingest", [sys.executable, "manage.py", "ingest", "--protocols",
                                      "teltonika", "--metrics-port", "0"],
                           {**env, "TELTONIKA_PORT": str(ingest_port)}, log_dir)
        else:
            ingest = Child("ingest", [sys.executable, __file__, "--feeder-mode", "--units",
                                      str(args.units), "--warmup", str(args.warmup),
                                      "--duration", str(args.duration)], env, log_dir,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            feeder = ingest.process
        web = Child("web", [sys.executable, "-m", "uvicorn", "fleet.asgi:application",
                            "--host", "127.0.0.1", "--port", str(web_port), "--ws",
                            "websockets-sansio", "--lifespan", "off", "--no-access-log",
                            "--log-level", "warning", "--workers", str(args.web_workers)],
                    env, log_dir)
        clients = None
        try:
            if args.feed == "tcp":
                ingest.wait_for_port(ingest_port)
            elif feeder is not None and feeder.stdout.readline().strip() != "ready":
                print(f"The pipeline feeder did not start:\n{ingest.tail()}")
                return 1
            web.wait_for_port(web_port)
            tokens_file = log_dir / "tokens.json"
            tokens_file.write_text(json.dumps(tokens))
            clients = subprocess.Popen(
                [sys.executable, __file__, "--clients-mode", "--url",
                 f"ws://127.0.0.1:{web_port}/ws/live/", "--tokens-file", str(tokens_file),
                 "--warmup", str(args.warmup), "--duration", str(args.duration),
                 *(["--no-compression"] if args.no_compression else [])],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            line = clients.stdout.readline().strip()
            if line != "ready":
                print(f"The clients did not connect ({line!r}); web log:\n{web.tail()}")
                return 1
            print(f"{args.clients} clients connected, each with a snapshot; "
                  f"feeding fixes ({args.feed})…", flush=True)
            groups = {"web": [web.pid, *children_of(web.pid)],
                      "ingest": [ingest.pid] if ingest else [],
                      "redis": "redis-server",
                      "postgres": "postgres", "clients": [clients.pid],
                      "load generator": [os.getpid()]}
            if args.feed == "publish":
                fed, measured = asyncio.run(play_publisher(args, clients, groups))
            elif feeder is None:
                fed, measured = asyncio.run(play_units(args, ingest_port, clients, groups))
            else:
                fed, measured = asyncio.run(play_feeder(args, feeder, clients, groups))
            output, _ = clients.communicate(timeout=args.warmup + args.duration + 120)
        finally:
            if clients is not None and clients.poll() is None:
                clients.kill()
            web.stop()
            if ingest is not None:
                ingest.stop()
        errors = [child.tail(args.log_lines) for child in (ingest, web) if child is not None]
        errors = [text for text in errors if text.strip()]
    report = json.loads(output.strip().splitlines()[-1])
    stats, seconds = report["stats"], report["seconds"]
    latencies = [x for s in stats for x in s["latencies"]]
    per_client_messages = [s["messages"] / seconds for s in stats]
    per_client_vehicles = [s["vehicles"] / seconds for s in stats]
    cores = measured.get("cores", {})
    print(f"fixes: {fed}")
    print(f"stored {measured.get('stored', 0) / args.duration:,.0f} positions/s over the "
          f"{args.duration:.0f} s window")
    print(f"fix-to-client latency over {len(latencies):,} sampled vehicle updates: "
          f"p50 {percentile(latencies, 0.5) * 1000:,.0f} ms, "
          f"p99 {percentile(latencies, 0.99) * 1000:,.0f} ms, "
          f"max {max(latencies, default=float('nan')) * 1000:,.0f} ms")
    print(f"per client: {statistics.mean(per_client_messages):.1f} update messages/s "
          f"(min {min(per_client_messages):.1f}), "
          f"{statistics.mean(per_client_vehicles):,.0f} vehicle updates/s "
          f"(min {min(per_client_vehicles):,.0f})")
    print("CPU in cores: " + ", ".join(f"{k} {v:.2f}" for k, v in cores.items()))
    if errors:
        print("last log lines:\n  " + "\n  ".join(errors))
    p99 = percentile(latencies, 0.99)
    verdict = "ok" if p99 < P99_TARGET_S else "MISSED"
    print(f"target: p99 < {P99_TARGET_S:.0f} s at {args.units:,} positions/s to "
          f"{args.clients} clients   {p99:.2f} s  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
