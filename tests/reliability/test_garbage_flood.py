"""Garbage bytes, half-open connections, oversized HTTP bodies and junk datagrams on every
port: the listeners stay up and keep serving hundreds of good units of every protocol
(live at one record a second, and units flushing backlogs beside them), every record
acknowledged and stored, at the rate the units offer.

The flood comes from ``telematics.simulator.flood`` in a child process, so it has a core
of its own, as an attacker elsewhere would, and the good units' figures are not the
flood's share of this process' event loop. The good units are the load generator's
(``telematics.simulator.load``), played here beside the listeners (the suite's ``ingest``
fixture).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import Count

from telematics import metrics
from telematics.models import Position
from telematics.simulator.encoders import teltonika_login
from telematics.simulator.load import (
    LoadResult,
    LoadUnit,
    load_units,
    register_load_units,
    run_fleet,
)
from tests.support import IMEI, db

ROOT = Path(__file__).resolve().parents[2]
# What a 2-core machine sustains with the flood, the listeners, the database and the
# units all on it: on PostgreSQL (CI), 400 live units (100 of each protocol) at one record
# a second; on SQLite, the embedded demo database, 200: its one writer at a time is shared
# by the store with the live alert and trip workers, which costs the units about a second
# of acknowledgement latency at 400...
LIVE_UNITS = {"postgresql": 400, "sqlite": 200}
LIVE_SECONDS = 10
# ...and 20 units (5 of each) flushing 10 packets of 25 records after a coverage gap.
BACKLOG = load_units(20, first=960_000, protocol="mixed")
BACKLOG_PACKETS = 10
BACKLOG_AFTER_S = 3  # into the live run
FLOOD_RATE = 100  # junk connections a second, spread over the four TCP ports
FLOOD_HALF_OPEN = 25  # held connections per TCP port
FLOOD_S = LIVE_SECONDS + 6  # covers the units' connecting, their run and its tail
FLOOD_PORTS = ("teltonika", "gt06", "nmea", "osmand", "teltonika_udp", "coap")
ERROR_PORTS = ("teltonika", "gt06", "nmea", "osmand", "coap")
# Generous bounds, so a busy machine does not fail the test: the achieved rate counts the
# run's tail against the listeners, and a unit that fell behind catches up in one packet.
MIN_SHARE_OF_OFFER = 0.6
MAX_P99_MS = 5000


@pytest.fixture
def live_units(fleet) -> list[LoadUnit]:
    units = load_units(LIVE_UNITS.get(connection.vendor, 200), first=950_000, protocol="mixed")
    register_load_units(units + BACKLOG)
    return units


def stored_by_unit(identifiers: list[str]) -> dict[str, int]:
    rows = (
        Position.objects.filter(device__identifier__in=identifiers)
        .values_list("device__identifier")
        .annotate(n=Count("id"))
    )
    return dict(rows)


def errors() -> dict[str, float]:
    return {name: metrics.ERRORS.labels(name)._value.get() for name in ERROR_PORTS}


async def start_flood(ports: dict[str, int]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "telematics.simulator.flood",
        "--ports", ",".join(f"{name}={ports[name]}" for name in FLOOD_PORTS),
        "--duration", str(FLOOD_S), "--rate", str(FLOOD_RATE),
        "--half-open", str(FLOOD_HALF_OPEN), "--coap-identifier", "coap-6",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def backlog_later(ports: dict[str, int]) -> LoadResult:
    await asyncio.sleep(BACKLOG_AFTER_S)
    return await run_fleet("127.0.0.1", ports, BACKLOG, mode="backlog",
                           packets=BACKLOG_PACKETS, records_per_packet=25)


async def settle(ingest) -> None:
    """Let the workers behind the pipeline (trips, jobs, alerts) finish what the units
    sent, so the test database is not emptied under them."""
    for name in ("trip_tracker", "job_tracker", "alert_worker"):
        worker = getattr(ingest.pipeline, name, None)
        if worker is not None and hasattr(worker, "wait_idle"):
            await asyncio.to_thread(worker.wait_idle, 60)


async def test_listeners_keep_serving_good_units_through_a_flood(ingest, live_units):
    before = errors()
    flood = await start_flood(ingest.ports)
    try:
        await asyncio.sleep(1)  # the half-open connections are held before units come
        live, backlog = await asyncio.gather(
            run_fleet("127.0.0.1", ingest.ports, live_units, rate=1, duration=LIVE_SECONDS),
            backlog_later(ingest.ports),
        )
        out, err = await asyncio.wait_for(flood.communicate(), FLOOD_S + 30)
    finally:
        if flood.returncode is None:
            flood.kill()
            await flood.wait()
    print(f"\nlive units beside the flood:\n{live.summary()}")
    print(f"backlog units beside the flood:\n{backlog.summary()}")
    assert flood.returncode == 0, err.decode()[-2000:]
    junk = json.loads(out.decode().strip().splitlines()[-1])
    print(f"flood: {junk}")

    # Every good unit connected and had every record acknowledged...
    assert live.complete, live.summary()
    assert backlog.complete, backlog.summary()
    assert live.records_sent == len(live_units) * LIVE_SECONDS
    assert backlog.records_sent == len(BACKLOG) * BACKLOG_PACKETS * 25
    # ...at the rate the units offered (NMEA's quarter gets no acknowledgement), the
    # run's tail counted against the listeners...
    offered = len(live_units) * 3 / 4
    assert live.offered_ackable_per_second == offered
    assert live.records_per_second >= MIN_SHARE_OF_OFFER * offered, live.summary()
    assert live.latency_ms(0.99) < MAX_P99_MS, live.summary()
    # ...and every acknowledged record is in the database; NMEA's too, which get no ack.
    acked = {**live.acked_by_unit, **backlog.acked_by_unit}
    assert len(acked) == offered + 15
    assert sum(acked.values()) == offered * LIVE_SECONDS + 15 * BACKLOG_PACKETS * 25
    assert await db(lambda: stored_by_unit(list(acked))) == acked
    nmea = {u.identifier for u in live_units + BACKLOG if u.protocol == "nmea"}
    written = {identifier: n for result in (live, backlog)
               for identifier, n in result.sent_by_unit.items() if identifier in nmea}
    for _ in range(100):
        stored = await db(lambda: stored_by_unit(list(written)))
        if stored == written:
            break
        await asyncio.sleep(0.1)
    assert stored == written
    assert sum(written.values()) == len(live_units) / 4 * LIVE_SECONDS + 1250

    # The flood was a flood: every kind of junk went out and was seen, counted, survived.
    assert junk["connections"] >= 0.5 * FLOOD_RATE * FLOOD_S
    assert junk["half_open"] == 4 * FLOOD_HALF_OPEN and junk["datagrams"] > 0
    assert any(" 413 " in status for status in junk["answers"]), junk["answers"]
    after = errors()
    assert all(after[name] > before[name] for name in ERROR_PORTS), (before, after)
    # And the listeners still answer a good unit.
    reader, writer = await asyncio.open_connection("127.0.0.1", ingest.ports["teltonika"])
    writer.write(teltonika_login(IMEI))
    assert await asyncio.wait_for(reader.readexactly(1), 5) == b"\x01"
    writer.close()
    await settle(ingest)
