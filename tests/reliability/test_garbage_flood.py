"""Garbage bytes, half-open connections and oversized bodies on every port: the listeners
stay up and a good unit beside them is still stored and acknowledged."""

from __future__ import annotations

import asyncio
import os
import random
import time
from datetime import UTC, datetime, timedelta

import aiocoap

from telematics import metrics
from telematics.models import Position
from telematics.simulator.encoders import fix_at, teltonika_avl, teltonika_login
from tests.support import IMEI, db

STREAM_PORTS = ("teltonika", "gt06", "nmea", "osmand")


async def garbage_connection(port: int, payload: bytes, hold: float) -> None:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        await writer.drain()
        await asyncio.sleep(hold)  # half-open: never finishes what it started
        writer.close()
    except (ConnectionError, OSError):
        pass  # the listener may well cut a garbage connection: that is its right


async def good_unit(port: int, records: int) -> list[float]:
    """A unit logging in and sending one record at a time; returns ack latencies."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(teltonika_login(IMEI))
    assert await asyncio.wait_for(reader.readexactly(1), 5) == b"\x01"
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    latencies = []
    for i in range(records):
        sent = time.monotonic()
        writer.write(teltonika_avl([fix_at(52.0 + i * 1e-5, 13.0, start + timedelta(seconds=i))]))
        await asyncio.wait_for(reader.readexactly(4), 5)
        latencies.append(time.monotonic() - sent)
        await asyncio.sleep(0.02)
    writer.close()
    return latencies


async def test_listeners_survive_a_garbage_flood(ingest, fleet):
    rng = random.Random(7)
    flood = []
    for name in STREAM_PORTS:
        port = ingest.ports[name]
        for _ in range(25):
            junk = rng.randbytes(rng.randint(1, 4000))
            flood.append(garbage_connection(port, junk, hold=rng.uniform(0.1, 1.5)))
        # frames that announce huge lengths, and an HTTP body far over the limit
        flood.append(garbage_connection(port, b"\x00\x00\x00\x00\x7f\xff\xff\xff\x08\x01", 1))
        flood.append(garbage_connection(port, b"\x78\x78\xff" + os.urandom(300), 1))
    flood.append(garbage_connection(
        ingest.ports["osmand"],
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n" + b"a" * 200_000, 1))
    context = await aiocoap.Context.create_client_context()
    coap_port = ingest.ports["coap"]
    coap_junk = [context.request(aiocoap.Message(
        code=aiocoap.POST, payload=os.urandom(500), transport_tuning=aiocoap.Unreliable,
        uri=f"coap://127.0.0.1:{coap_port}/fleet/coap-6/position")).response
        for _ in range(20)]

    errors_before = sum(metrics.ERRORS.labels(p)._value.get() for p in ("teltonika", "gt06"))
    flood_task = asyncio.gather(*flood, return_exceptions=True)
    latencies = await good_unit(ingest.ports["teltonika"], 50)
    await flood_task
    await asyncio.gather(*coap_junk, return_exceptions=True)
    await context.shutdown()

    assert await db(lambda: Position.objects.filter(device=fleet["teltonika"]).count()) == 50
    assert max(latencies) < 2.0
    errors_after = sum(metrics.ERRORS.labels(p)._value.get() for p in ("teltonika", "gt06"))
    assert errors_after > errors_before  # the junk was seen, counted, and survived
    # Every listener still answers a good request after the flood.
    reader, writer = await asyncio.open_connection("127.0.0.1", ingest.ports["teltonika"])
    writer.write(teltonika_login(IMEI))
    assert await asyncio.wait_for(reader.readexactly(1), 5) == b"\x01"
    writer.close()
