"""Latency and throughput of the two heaviest API reads under 20 concurrent clients.

Run from the project root (PostgreSQL on 127.0.0.1:5432, trust auth):
``.venv/bin/python benchmarks/bench_api.py`` (``--help`` for the knobs).

It creates and migrates the database ``benchapi`` (once), seeds one organisation with
1,000 vehicles, each with a latest state, and one vehicle with 10,000+ positions, then
starts the site as production serves it (``python -m fleet.server``, uvicorn with
``--workers`` processes) and drives it over loopback from asyncio clients in this
process, speaking plain HTTP/1.1 with keep-alive:

* ``GET /api/v1/vehicles/?page_size=1000`` - every vehicle, status and last position;
* ``GET /api/v1/vehicles/{id}/positions/?from=..&to=..`` - a page of 1,000 positions,
  each client walking the cursor pages of the window and starting over.

Each request is timed from the first byte sent to the last byte of the body; p50/p99
and requests/s are printed beside the target (p99 < 100 ms at 20 clients), with the CPU
each request cost the web processes, PostgreSQL and the load generator, and what the
rest of the machine used meanwhile. The clients check each answer cheaply (status, row
count from the bytes) and parse one in fifty in full, so that they take little of the
cores the server needs. The server, the database and the clients share the machine, so
the figures are for comparing changes on one machine, not a capacity statement.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "benchapi"
DATABASE_URL = f"postgres://root@127.0.0.1:5432/{DATABASE}"
VEHICLES = 1000
POSITIONS = 10_800  # three hours at one fix every second
TARGET_P99_MS = 100.0
FULL_CHECK_EVERY = 50  # answers; the others are checked from their bytes
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def server_env(port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": DATABASE_URL,
        "SECRET_KEY": "benchmark-only-secret-key-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
        "DEBUG": "0",
        "SECURE_COOKIES": "0",
        "SECURE_SSL_REDIRECT": "0",  # plain HTTP over loopback, as behind a TLS proxy
        "LOG_LEVEL": "WARNING",
        "API_RATE_USER": "",  # the limits would measure themselves, not the API
        "API_RATE_ANON": "",
        "DJANGO_SETTINGS_MODULE": "fleet.settings",
        "PYTHONPATH": str(ROOT),
    })
    return env


def prepare_database() -> None:
    created = subprocess.run(["createdb", "-h", "127.0.0.1", DATABASE],
                             capture_output=True, text=True)
    if created.returncode != 0 and "already exists" not in created.stderr:
        raise SystemExit(f"createdb failed: {created.stderr.strip()}")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                   cwd=ROOT, env=server_env(0), check=True)


def seed() -> tuple[str, int, datetime]:
    """The fleet, once; returns an admin's token, the vehicle with the history and the
    time of its first fix (a few hours before the first run, so in a live partition)."""
    os.environ.update(server_env(0))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from fleet.api.services import issue_token
    from fleet.models import Organisation, Role, Vehicle
    from fleet.services import create_user
    from telematics.models import Position, VehicleState
    from telematics.services import register_unit

    organisation, created = Organisation.objects.get_or_create(name="Bench Fleet")
    if created:
        user, _ = create_user("bench-admin", organisation, Role.ADMIN, password="bench-pw")
        vehicles = Vehicle.objects.bulk_create(
            Vehicle(organisation=organisation, name=f"Vehicle {i:04}",
                    licence_plate=f"B-F {i:04}") for i in range(VEHICLES)
        )
        now = datetime.now(UTC)
        VehicleState.objects.bulk_create(
            VehicleState(vehicle=v, fix_time=now - timedelta(seconds=i), server_time=now,
                         latitude=52.5 + i / 1e4, longitude=13.4, speed_kmh=float(i % 80),
                         course=90.0, ignition=i % 3 != 0, odometer_km=1000.0 + i)
            for i, v in enumerate(vehicles)
        )
        first_fix = (datetime.now(UTC) - timedelta(hours=4)).replace(second=0, microsecond=0)
        unit = register_unit("359999000000001", "teltonika", organisation,
                             vehicle_name=vehicles[0].name)
        Position.objects.bulk_create((
            Position(device=unit, vehicle=vehicles[0],
                     fix_time=first_fix + timedelta(seconds=i),
                     server_time=first_fix + timedelta(seconds=i, milliseconds=300),
                     latitude=52.5 + i * 1e-5, longitude=13.4 + i * 1e-5, altitude=35.0,
                     speed_kmh=float(i % 90), course=float(i % 360), satellites=11,
                     hdop=0.8, ignition=True, odometer_km=1000.0 + i * 0.01)
            for i in range(POSITIONS)
        ), batch_size=2000)
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    user = organisation.memberships.get(user__username="bench-admin").user
    _, token = issue_token(user)
    vehicle = Vehicle.objects.get(organisation=organisation, name="Vehicle 0000")
    first_fix = Position.objects.filter(vehicle=vehicle).earliest("fix_time").fix_time
    return token, vehicle.pk, first_fix


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, workers: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "fleet.server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--no-access-log", "--log-level", "warning"],
        cwd=ROOT, env=server_env(port),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health/", timeout=1).read()
            return server
        except OSError:
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("uvicorn did not come up")


# --- CPU of the processes involved, from /proc (psutil is not a dependency) ------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (/proc/<pid>/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()  # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_by_role(server_pid: int) -> dict[str, float]:
    """CPU seconds so far of the web processes (the server and its workers), of this
    load generator, and of the whole machine (busy time of every core)."""
    web = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            if int(entry) == server_pid or parent == server_pid:
                web += cpu_seconds(int(entry))
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    machine = (sum(values) - values[3] - values[4]) / CLOCK_TICKS  # all but idle, iowait
    return {"web": web, "clients": time.process_time(), "machine": machine}


async def fetch(reader, writer, path: str, token: str) -> tuple[int, bytes]:
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Accept: application/json\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:  # chunked
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    return status, body


async def client(port: int, token: str, paths, stop_at: float, latencies: list[float],
                 errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    path = paths(None)
    try:
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            status, body = await fetch(reader, writer, path, token)
            latencies.append((time.perf_counter() - started) * 1000)
            if status != 200:
                errors.append(f"{status} {body[:200]!r}")
            path = paths(body)
    finally:
        writer.close()


def run_load(port: int, token: str, paths, clients: int, seconds: float,
             server_pid: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    cpu: dict[str, dict[str, float]] = {}

    async def main() -> float:
        warm_until = time.monotonic() + 2
        await asyncio.gather(*(client(port, token, paths, warm_until, [], errors)
                               for _ in range(clients)))
        cpu["before"] = cpu_by_role(server_pid)
        started = time.monotonic()
        await asyncio.gather(*(client(port, token, paths, started + seconds, latencies, errors)
                               for _ in range(clients)))
        elapsed = time.monotonic() - started
        cpu["after"] = cpu_by_role(server_pid)
        return elapsed

    elapsed = asyncio.run(main())
    latencies.sort()
    used = {role: cpu["after"][role] - cpu["before"][role] for role in cpu["after"]}
    # PostgreSQL (its backends come and go with the connections) and other work.
    used["rest"] = used["machine"] - used["web"] - used["clients"]
    count = max(len(latencies), 1)
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "errors": errors,
        "cpu_ms": {role: seconds_used * 1000 / count for role, seconds_used in used.items()},
        "rest_cores": max(used["rest"], 0.0) / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0, help="per endpoint")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="web processes (default: one per core, as WEB_WORKERS with Redis)")
    args = parser.parse_args()

    prepare_database()
    token, vehicle_id, first_fix = seed()
    end = first_fix + timedelta(hours=4)
    window = f"from={first_fix:%Y-%m-%dT%H:%M:%SZ}&to={end:%Y-%m-%dT%H:%M:%SZ}"
    first_page = f"/api/v1/vehicles/{vehicle_id}/positions/?{window}&page_size=1000"

    answers = {"vehicles": 0, "positions": 0}

    def vehicle_paths(body: bytes | None) -> str:
        if body is not None:
            answers["vehicles"] += 1
            if answers["vehicles"] % FULL_CHECK_EVERY == 0:
                assert len(json.loads(body)["results"]) == VEHICLES
            else:
                assert body.startswith(b'{"count":%d,' % VEHICLES)
                assert body.count(b'"last_position":') == VEHICLES
        return "/api/v1/vehicles/?page_size=1000"

    def position_paths(body: bytes | None) -> str:
        if body is None:
            return first_page
        answers["positions"] += 1
        if answers["positions"] % FULL_CHECK_EVERY == 0:
            page = json.loads(body)
            rows, next_link = len(page["results"]), page["next"]
        else:
            rows = body.count(b'"fix_time":')
            tail = body[body.rindex(b'"next":'):]
            next_link = None if tail.startswith(b'"next":null') \
                else tail.split(b'"')[3].decode()
        assert rows in (1000, POSITIONS % 1000), rows
        if next_link is None:
            return first_page
        parts = urlsplit(next_link)
        return f"{parts.path}?{parts.query}"

    port = free_port()
    server = start_server(port, args.workers)
    try:
        print(f"Fleetbook API benchmark: {platform.python_version()}, {os.cpu_count()} CPUs, "
              f"uvicorn x{args.workers} workers, {args.clients} clients, "
              f"{args.seconds:.0f} s each, PostgreSQL database {DATABASE!r}")
        print("load average before: {:.2f} {:.2f} {:.2f} (other work on the machine counts "
              "against these figures)".format(*os.getloadavg()))
        print(f"{'endpoint':<44}{'requests':>9}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
              f"   target p99 < {TARGET_P99_MS:.0f} ms")
        results = []
        for name, paths in (
            ("GET /api/v1/vehicles/ (1,000 a page)", vehicle_paths),
            ("GET /api/v1/vehicles/{id}/positions/ (1,000)", position_paths),
        ):
            result = run_load(port, token, paths, args.clients, args.seconds, server.pid)
            results.append((name, result))
            verdict = "met" if result["p99"] < TARGET_P99_MS else "NOT met"
            print(f"{name:<44}{result['requests']:>9}{result['rps']:>8.1f}"
                  f"{result['p50']:>9.1f}{result['p99']:>9.1f}   {verdict}")
            if result["errors"]:
                print(f"  {len(result['errors'])} errors, first: {result['errors'][0]}")
        print("CPU per request (ms) of the web processes and the load generator, and the "
              "cores the rest of the machine (PostgreSQL, other work) kept busy meanwhile:")
        for name, result in results:
            cpu = result["cpu_ms"]
            print(f"  {name:<44} web {cpu['web']:5.1f}  clients {cpu['clients']:4.1f}  "
                  f"rest {result['rest_cores']:.2f} cores ({cpu['rest']:.1f} ms a request)")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
