"""Trip derivation over a million positions: the pure state machine, and rebuild_trips.

Run from the project root (PostgreSQL on 127.0.0.1)::

    .venv/bin/python benchmarks/bench_trips.py [--positions 1000000] [--vehicles 20]
        [--database-url postgres://root@127.0.0.1:5432/benchtrips]

1. **State machine**: the synthetic fleet days of ``bench_tripstate`` (parking with drift
   and outliers, 1 Hz drives with lights and tunnels, half the vehicles with ignition
   and a unit odometer), fixes built beforehand, only ``TripStateMachine.feed`` timed,
   pinned to one core. Target: 200,000 fixes/s.
2. **rebuild_trips end to end**: the same positions written into the ``benchtrips``
   database with COPY (created and migrated when missing; its positions and logbook are
   emptied first), then ``manage.py rebuild_trips --no-geocode`` timed as a whole:
   reading positions, deriving, writing trips, revisions, gaps and checkpoints.
   A second run over the unchanged history (every trip matched, nothing written) is
   timed too, since that is what a rebuild after a code update mostly is.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_tripstate import SyntheticVehicle  # noqa: E402

from logbook.tripstate import TripEnded, TripStateMachine  # noqa: E402

TARGET = 200_000
NULL = "\\N"  # COPY's text format


def fleet_fixes(vehicles: int, positions: int) -> list[list]:
    """Each vehicle's fixes, in time order, ``positions`` in all."""
    per_vehicle = positions // vehicles
    out = []
    for seed in range(vehicles):
        stream = SyntheticVehicle(seed, with_ignition=seed % 2 == 0).day()
        fixes = []
        while len(fixes) < per_vehicle:
            fix = next(stream)
            if not fixes or fix.fix_time > fixes[-1].fix_time:  # one position per second
                fixes.append(fix)
        out.append(fixes)
    return out


def bench_state_machine(fixes: list[list]) -> float:
    everywhere = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(everywhere)})
    try:
        fed = trips = 0
        seconds = 0.0
        for vehicle_fixes in fixes:
            machine = TripStateMachine()
            feed = machine.feed
            started = time.perf_counter()
            for fix in vehicle_fixes:
                for event in feed(fix):
                    if isinstance(event, TripEnded):
                        trips += 1
            seconds += time.perf_counter() - started
            fed += len(vehicle_fixes)
    finally:
        os.sched_setaffinity(0, everywhere)
    rate = fed / seconds
    print(f"state machine: {fed:,} fixes in {seconds:.2f} s = {rate:,.0f} fixes/s on one core, "
          f"{trips} trips; target {TARGET:,}: {'met' if rate >= TARGET else 'NOT met'}",
          flush=True)
    return rate


def prepare_database(database_url: str) -> None:
    import psycopg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if parts.hostname not in ("127.0.0.1", "localhost", "::1") or not name.startswith("bench"):
        raise SystemExit("Use a loopback database of its own whose name starts with 'bench'.")
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            subprocess.run(["createdb", "-h", parts.hostname, "-U", parts.username or "root",
                            name], check=True)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def load_positions(fixes: list[list]) -> list[int]:
    """Fresh organisation, vehicles and units; positions by COPY. Returns vehicle ids."""
    from django.db import connection

    from fleet.models import Organisation, Vehicle
    from logbook.models import (
        OdometerGap,
        Trip,
        TripCheckpoint,
        TripRevision,
        VehicleTripState,
    )
    from telematics.models import Device, Position

    TripRevision.objects.all().delete()
    Trip.corrects.through.objects.all().delete()
    Trip.objects.all().delete()
    for model in (OdometerGap, TripCheckpoint, VehicleTripState):
        model.objects.all().delete()
    Position.objects.all().delete()
    Device.objects.filter(identifier__startswith="benchtrips-").delete()
    organisation, _ = Organisation.objects.get_or_create(name="Bench Trips")
    vehicle_ids = []
    now = datetime.now(UTC)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        raw = cursor.cursor
        for index, vehicle_fixes in enumerate(fixes):
            vehicle, _ = Vehicle.objects.get_or_create(organisation=organisation,
                                                       name=f"Bench {index}")
            device = Device.objects.create(organisation=organisation, vehicle=vehicle,
                                           identifier=f"benchtrips-{index}", protocol="teltonika")
            vehicle_ids.append(vehicle.pk)
            buffer = io.StringIO()
            for f in vehicle_fixes:
                ignition = NULL if f.ignition is None else ("t" if f.ignition else "f")
                odometer = NULL if f.odometer_km is None else repr(f.odometer_km)
                buffer.write(
                    f"{device.pk}\t{vehicle.pk}\t{f.fix_time.isoformat()}\t{now.isoformat()}\t"
                    f"{f.latitude!r}\t{f.longitude!r}\t{f.speed_kmh!r}\tt\t"
                    f"{ignition}\t{odometer}\t{{}}\n"
                )
            with raw.copy(
                "COPY telematics_position (device_id, vehicle_id, fix_time, server_time, "
                "latitude, longitude, speed_kmh, valid, ignition, odometer_km, attributes) "
                "FROM STDIN"
            ) as copy:
                copy.write(buffer.getvalue())
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE telematics_position")
    total = sum(len(v) for v in fixes)
    print(f"loaded {total:,} positions with COPY in {time.perf_counter() - started:.1f} s",
          flush=True)
    return vehicle_ids


def bench_rebuild(total: int, label: str) -> float:
    from django.core.management import call_command

    from logbook.models import Trip, TripRevision

    out = io.StringIO()
    started = time.perf_counter()
    call_command("rebuild_trips", "--no-geocode", stdout=out, stderr=io.StringIO())
    seconds = time.perf_counter() - started
    rate = total / seconds
    print(f"rebuild_trips ({label}): {total:,} positions in {seconds:.1f} s = {rate:,.0f} "
          f"positions/s; {Trip.objects.count():,} trips, {TripRevision.objects.count():,} "
          f"revisions. {out.getvalue().strip()}", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--positions", type=int, default=1_000_000)
    parser.add_argument("--vehicles", type=int, default=20)
    parser.add_argument("--database-url",
                        default="postgres://root@127.0.0.1:5432/benchtrips")
    parser.add_argument("--skip-rebuild", action="store_true")
    args = parser.parse_args()
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} "
          f"cores; {args.positions:,} positions over {args.vehicles} vehicles", flush=True)
    fixes = fleet_fixes(args.vehicles, args.positions)
    bench_state_machine(fixes)
    if args.skip_rebuild:
        return
    os.environ["DATABASE_URL"] = args.database_url
    os.environ.setdefault("SECRET_KEY", "bench-trips-" + "x" * 40)
    os.environ["DEBUG"] = "0"
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ["GEOCODER_URL"] = ""
    os.environ["DJANGO_SETTINGS_MODULE"] = "fleet.settings"
    import django

    django.setup()
    prepare_database(args.database_url)
    load_positions(fixes)
    total = sum(len(v) for v in fixes)
    bench_rebuild(total, "first derivation")
    bench_rebuild(total, "again, nothing changed")


if __name__ == "__main__":
    main()
