"""Latency and throughput of the two heaviest API reads under 20 concurrent clients.

Run from the project root (PostgreSQL on 127.0.0.1:5432, trust auth):
``.venv/bin/python benchmarks/bench_api.py`` (``--help`` for the knobs).

It creates and migrates the database ``benchapi`` (once), seeds one organisation with
1,000 vehicles, each with a latest state, and one vehicle with 10,000+ positions, then
starts the site under uvicorn in a subprocess and drives it over loopback from asyncio
clients speaking plain HTTP/1.1 with keep-alive:

* ``GET /api/v1/vehicles/?page_size=1000`` - every vehicle, status and last position;
* ``GET /api/v1/vehicles/{id}/positions/?from=..&to=..`` - a page of 1,000 positions,
  each client walking the cursor pages of the window and starting over.

Each request is timed from the first byte sent to the last byte of the body; p50/p99
and requests/s are printed beside the target (p99 < 100 ms at 20 clients). The server,
the database and the clients share the machine, so the figures are for comparing
changes on one machine, not a capacity statement.
"""

from __future__ import annotations

import argparse
import asyncio
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


def server_env(port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": DATABASE_URL,
        "SECRET_KEY": "benchmark-only-secret-key-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
        "DEBUG": "0",
        "SECURE_COOKIES": "0",
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
    from rest_framework.authtoken.models import Token

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
    token, _ = Token.objects.get_or_create(user=user)
    vehicle = Vehicle.objects.get(organisation=organisation, name="Vehicle 0000")
    first_fix = Position.objects.filter(vehicle=vehicle).earliest("fix_time").fix_time
    return token.key, vehicle.pk, first_fix


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, workers: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "uvicorn"), "fleet.asgi:application",
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
         "--no-access-log", "--log-level", "warning"],
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


def run_load(port: int, token: str, paths, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []

    async def main() -> float:
        warm_until = time.monotonic() + 2
        await asyncio.gather(*(client(port, token, paths, warm_until, [], errors)
                               for _ in range(clients)))
        started = time.monotonic()
        await asyncio.gather(*(client(port, token, paths, started + seconds, latencies, errors)
                               for _ in range(clients)))
        return time.monotonic() - started

    elapsed = asyncio.run(main())
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0, help="per endpoint")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    args = parser.parse_args()

    prepare_database()
    token, vehicle_id, first_fix = seed()
    end = first_fix + timedelta(hours=4)
    window = f"from={first_fix:%Y-%m-%dT%H:%M:%SZ}&to={end:%Y-%m-%dT%H:%M:%SZ}"
    first_page = f"/api/v1/vehicles/{vehicle_id}/positions/?{window}&page_size=1000"

    def vehicle_paths(body: bytes | None) -> str:
        if body is not None:
            assert len(json.loads(body)["results"]) == VEHICLES
        return "/api/v1/vehicles/?page_size=1000"

    def position_paths(body: bytes | None) -> str:
        if body is None:
            return first_page
        page = json.loads(body)
        assert len(page["results"]) in (1000, POSITIONS % 1000)
        if page["next"] is None:
            return first_page
        parts = urlsplit(page["next"])
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
        for name, paths in (
            ("GET /api/v1/vehicles/ (1,000 a page)", vehicle_paths),
            ("GET /api/v1/vehicles/{id}/positions/ (1,000)", position_paths),
        ):
            result = run_load(port, token, paths, args.clients, args.seconds)
            verdict = "met" if result["p99"] < TARGET_P99_MS else "NOT met"
            print(f"{name:<44}{result['requests']:>9}{result['rps']:>8.1f}"
                  f"{result['p50']:>9.1f}{result['p99']:>9.1f}   {verdict}")
            if result["errors"]:
                print(f"  {len(result['errors'])} errors, first: {result['errors'][0]}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
