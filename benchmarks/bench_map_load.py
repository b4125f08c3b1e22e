"""How long the live map takes to show 10,000 vehicles in headless Chromium.

Run from the project root::

    .venv/bin/python benchmarks/bench_map_load.py                 # 10,000 vehicles, 5 loads
    .venv/bin/python benchmarks/bench_map_load.py --vehicles 2000 --loads 3

The site runs as deployed (``uvicorn fleet.asgi:application``, no DEBUG, the in-memory
channel layer) in a child process, against PostgreSQL (``--database-url``, default
``postgres://root@127.0.0.1:5432/benchmap``, created and migrated when missing; its name
must start with ``bench``) or, when PostgreSQL does not answer, a throwaway SQLite file.
The organisation "Map Load" gets ``--vehicles`` vehicles spread over Germany, each with
a latest state (moving, stopped, parked and offline mixed), and a fleet manager.

Debian's Chromium (``/usr/bin/chromium``, driven by Playwright; never a browser
download) logs in once, then loads ``/`` ``--loads`` times in a 1280 x 800 window. Each
load is timed from navigation start (the Navigation Timing origin) to:

- ``html``: the last byte of the server-rendered page;
- ``snapshot``: the websocket's snapshot of every vehicle received (performance mark);
- ``list``: the vehicle list rebuilt from it, one row per vehicle;
- ``drawn``: every marker in the cluster group and a frame painted with them:
  ``live-map.js`` then sets ``data-rendered`` on ``#live-map`` (the number of markers)
  and marks ``fleetbook:markers-drawn``. That is the figure the target is for.

Target ("Live dashboard" issue): under 3 s with 10,000 vehicles. Figures are printed,
nothing is asserted. Another busy process on the machine (a test run, another
benchmark) shows in the figures; the header says how busy the machine was.
"""

from __future__ import annotations

import argparse
import contextlib
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import busy_cores, free_port  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://root@127.0.0.1:5432/benchmap"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update"]
ORGANISATION = "Map Load"
USERNAME = "map-manager"
TARGET_S = 3.0




def postgres_answers(database_url: str) -> bool:
    parts = urlsplit(database_url)
    with contextlib.suppress(OSError), socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 5432), timeout=1):
        return True
    return False


def prepare_database(database_url: str, env: dict[str, str]) -> None:
    """Create the PostgreSQL database when missing; migrate."""
    if database_url.startswith("postgres"):
        import psycopg

        parts = urlsplit(database_url)
        name = parts.path.lstrip("/")
        if not name.startswith("bench"):
            raise SystemExit(f"Refusing database {name!r}: give the benchmark one of its own "
                             "whose name starts with 'bench'.")
        with psycopg.connect(parts._replace(path="/postgres").geturl(),
                             autocommit=True) as admin:
            if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                 [name]).fetchone():
                admin.execute(f'CREATE DATABASE "{name}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT,
                   env=env, check=True, timeout=600)


def seed(count: int, password: str) -> int:
    """The organisation with ``count`` placed vehicles and its fleet manager (made once;
    states refreshed every run so the statuses are current)."""
    from django.db import transaction

    from fleet.models import Organisation, Role, Vehicle
    from fleet.services import create_user
    from telematics.models import VehicleState

    organisation, _ = Organisation.objects.get_or_create(
        name=ORGANISATION, defaults={"time_zone": "Europe/Berlin"})
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username=USERNAME).first()
    if user is None:
        create_user(USERNAME, organisation, Role.ADMIN, password=password)
    else:
        user.set_password(password)
        user.save(update_fields=["password"])
    have = Vehicle.objects.filter(organisation=organisation).count()
    with transaction.atomic():
        if have > count:
            extra = Vehicle.objects.filter(organisation=organisation).order_by("-pk")[
                :have - count]
            Vehicle.objects.filter(pk__in=[v.pk for v in extra]).delete()
        elif have < count:
            Vehicle.objects.bulk_create(
                [Vehicle(organisation=organisation, name=f"Truck {n:05d}",
                         licence_plate=f"MAP-{n:05d}") for n in range(have, count)],
                batch_size=2000)
        ids = list(Vehicle.objects.filter(organisation=organisation).values_list(
            "pk", flat=True))
        VehicleState.objects.filter(vehicle_id__in=ids).delete()
        pick = random.Random(42)
        now = datetime.now(UTC)
        states = []
        for pk in ids:
            kind = pick.random()
            moving = kind < 0.5
            states.append(VehicleState(
                vehicle_id=pk, latitude=pick.uniform(47.5, 54.8),
                longitude=pick.uniform(6.0, 14.8),
                fix_time=now - timedelta(seconds=pick.uniform(1, 7200 if kind > 0.9 else 300)),
                speed_kmh=pick.uniform(20, 110) if moving else 0.0,
                course=pick.uniform(0, 360) if moving else None,
                ignition=moving or kind < 0.7))
        VehicleState.objects.bulk_create(states, batch_size=2000)
    return len(ids)


class Site:
    """``uvicorn fleet.asgi:application`` on a free loopback port, as deployed."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.port = free_port()
        self.log = (log_dir / "uvicorn.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "fleet.asgi:application", "--host", "127.0.0.1",
             "--port", str(self.port), "--ws", "websockets-sansio", "--lifespan", "off",
             "--no-access-log", "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"uvicorn exited with {self.process.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.2)
        raise SystemExit("uvicorn did not listen")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()


TIMINGS_JS = """() => {
    const mark = (name) => {
        const entries = performance.getEntriesByName(`fleetbook:${name}`);
        return entries.length ? entries[0].startTime / 1000 : null;
    };
    const nav = performance.getEntriesByType('navigation')[0];
    return {
        html: nav.responseEnd / 1000, bytes: nav.transferSize,
        dom: nav.domContentLoadedEventEnd / 1000,
        snapshot: mark('snapshot-received'), list: mark('list-populated'),
        drawn: mark('markers-drawn'),
        markers: Number(document.getElementById('live-map').dataset.rendered),
        rows: document.querySelectorAll('#vehicle-rows tr[data-vehicle]').length,
    };
}"""


def measure(url: str, password: str, loads: int, expected: int) -> list[dict]:
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{url}/login/")
            page.fill("#id_username", USERNAME)
            page.fill("#id_password", password)
            page.click("button[type=submit]")
            page.wait_for_url(f"{url}/", timeout=120_000)
            page.wait_for_selector("#live-map[data-rendered]", timeout=120_000)  # warm up
            for _ in range(loads):
                page.goto("about:blank")
                page.goto(f"{url}/", wait_until="commit", timeout=120_000)
                page.wait_for_selector("#live-map[data-rendered]", state="attached",
                                       timeout=120_000)
                timing = page.evaluate(TIMINGS_JS)
                results.append(timing)
                print(f"  load {len(results)}: html {timing['html']:.2f} s "
                      f"({timing['bytes'] / 1e6:.1f} MB), snapshot {timing['snapshot']:.2f} s, "
                      f"list {timing['list']:.2f} s ({timing['rows']:,} rows), "
                      f"drawn {timing['drawn']:.2f} s ({timing['markers']:,} markers)",
                      flush=True)
                if timing["rows"] != expected or timing["markers"] != expected:
                    print(f"  !! expected {expected:,} rows and markers")
            if errors:
                print("  page errors: " + "; ".join(errors[:5]))
        finally:
            browser.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print("Debian's chromium is not installed (apt-get install chromium): skipped.")
        return
    with tempfile.TemporaryDirectory(prefix="bench-map-") as scratch:
        database_url = args.database_url
        if database_url.startswith("postgres") and not postgres_answers(database_url):
            database_url = f"sqlite:///{scratch}/map.sqlite3"
        password = secrets.token_urlsafe(12)
        env = dict(os.environ, DATABASE_URL=database_url, DEBUG="0", REDIS_URL="",
                   MQTT_URL="", SECRET_KEY="bench-" + secrets.token_urlsafe(40),
                   ALLOWED_HOSTS="127.0.0.1", SECURE_SSL_REDIRECT="0", SECURE_COOKIES="0",
                   SECURE_HSTS_SECONDS="0", LOG_LEVEL="WARNING",
                   DJANGO_SETTINGS_MODULE="fleet.settings")
        print(f"{os.cpu_count()} cores ({busy_cores(1.0):.2f} busy before the run); "
              f"database {database_url.split('@')[-1]}", flush=True)
        prepare_database(database_url, env)
        os.environ.update({k: env[k] for k in ("DATABASE_URL", "DEBUG", "REDIS_URL",
                                                "SECRET_KEY", "DJANGO_SETTINGS_MODULE")})
        import django

        django.setup()
        started = time.monotonic()
        count = seed(args.vehicles, password)
        from django.db import connection

        connection.close()
        print(f"{count:,} vehicles with a state in {time.monotonic() - started:.1f} s; "
              f"{args.loads} loads of / in Chromium 1280 x 800", flush=True)
        site = Site(env, Path(scratch))
        try:
            site.wait()
            results = measure(site.url, password, args.loads, count)
        finally:
            site.stop()
    if not results:
        return
    print("  median of the loads, seconds from navigation start:")
    for name in ("html", "snapshot", "list", "drawn"):
        values = [r[name] for r in results if r[name] is not None]
        if values:
            print(f"    {name:<9} {statistics.median(values):6.2f}   (max {max(values):.2f})")
    drawn = statistics.median(r["drawn"] for r in results)
    verdict = "ok" if drawn < TARGET_S else "MISSED"
    print(f"  target: all {count:,} markers drawn and listed < {TARGET_S:.0f} s   "
          f"{drawn:.2f} s  {verdict}")


if __name__ == "__main__":
    main()
