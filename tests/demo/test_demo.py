"""The README's main command: the demo serves the site, runs the listeners and drives a
simulated fleet through them, on a machine with nothing but Python (SQLite)."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from telematics.models import Position, SignalSample
from telematics.simulator.fleet import Route, demo_units, load_track, run_demo_fleet
from tests.support import db

ROOT = Path(__file__).resolve().parents[2]


def test_route_drives_parks_and_returns():
    track = load_track()
    assert len(track) == 1241  # one point a second of the recorded drive
    unit = demo_units(1)[0]
    route = Route(track, unit)
    moving = [route.at(t - unit.phase_s)[1] for t in range(route.cycle_s)]
    assert moving.count(False) == 2 * 420  # two parkings a cycle, long enough to end trips
    first, _ = route.at(-unit.phase_s)
    assert abs(first.latitude - (track[0].latitude + unit.shift[0])) < 1e-9


async def test_every_protocol_reaches_the_database(ingest, fleet):
    from fleet.demo import seed_demo_units

    units = [u for u in demo_units(5)]
    assert {u.protocol for u in units} == {"teltonika", "gt06", "nmea", "osmand"}
    units = [type(u)(u.identifier, u.protocol, u.vehicle_name, u.shift, 0, u.reports_can)
             for u in units]  # all start driving
    await db(lambda: seed_demo_units(fleet["acme"], units))
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(3.5, stop.set)
    await run_demo_fleet(units, "127.0.0.1", ingest.ports, stop)
    await asyncio.sleep(2.5)  # NMEA's last second is flushed after a quiet spell
    stored = await db(lambda: {
        protocol: Position.objects.filter(device__protocol=protocol).count()
        for protocol in ("teltonika", "gt06", "nmea", "osmand")})
    assert all(count >= 2 for count in stored.values()), stored
    signals = await db(lambda: set(SignalSample.objects.values_list("signal", flat=True)))
    assert {"fuel_level", "engine_speed"} <= signals  # CAN data of the Teltonika vans


def test_make_demo_command_serves_and_drives(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "MQTT_URL", "DJANGO_SETTINGS_MODULE"}}
    env.update(DEBUG="1", FLEETBOOK_VAR_DIR=str(tmp_path), PYTHONUNBUFFERED="1",
               TELTONIKA_PORT="0", GT06_PORT="0", NMEA_PORT="0", OSMAND_PORT="0",
               COAP_PORT="0", INGEST_BIND="127.0.0.1")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "demo", "--port", "0", "--vehicles", "5"], cwd=ROOT,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(process.stdout), daemon=True)
    reader.start()
    try:
        url = None
        for _ in range(600):
            text = "".join(log)
            match = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", text)
            if match and "Simulated fleet" in text:
                url = match.group(1)
                break
            assert process.poll() is None, text
            time.sleep(0.1)
        assert url, "".join(log)
        assert "manager / fleetbook-demo" in "".join(log)
        with urllib.request.urlopen(f"{url}/login/", timeout=10) as response:
            assert response.status == 200
        positions = 0
        for _ in range(100):
            with sqlite3.connect(tmp_path / "fleetbook.sqlite3") as database:
                positions = database.execute(
                    "SELECT count(*) FROM telematics_position").fetchone()[0]
            if positions >= 5:
                break
            time.sleep(0.2)
        assert positions >= 5  # the simulated fleet's fixes came through the listeners
    finally:
        process.terminate()
        process.wait(15)
