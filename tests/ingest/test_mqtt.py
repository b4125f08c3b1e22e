"""MQTT units through the real broker (MQTT_URL): positions and NMEA stored, QoS 1."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import aiomqtt
import pytest

from telematics.ingest.runner import start_ingest
from telematics.models import Position, UnknownUnit
from tests.support import db

MQTT_URL = os.environ.get("MQTT_URL", "")
pytestmark = pytest.mark.skipif(not MQTT_URL, reason="MQTT_URL is not set (CI sets it)")
DATA = Path(__file__).parent.parent / "data"


@pytest.fixture
async def mqtt_ingest(fleet):
    root = f"fleet{uuid.uuid4().hex[:8]}"  # two test runs on one broker never mix
    service = await start_ingest(("mqtt",), host="127.0.0.1", mqtt_url=MQTT_URL,
                                 mqtt_client_id=f"test-{root}", mqtt_topic_root=root)
    await asyncio.wait_for(service.mqtt.connected.wait(), 10)
    yield service, root
    await service.stop()


async def publish(topic: str, payload: bytes) -> None:
    url = urlparse(MQTT_URL)
    async with aiomqtt.Client(url.hostname, url.port or 1883) as client:
        await client.publish(topic, payload, qos=1)


async def wait_for_rows(query, expected: int) -> int:
    for _ in range(100):
        count = await db(query)
        if count >= expected:
            return count
        await asyncio.sleep(0.1)
    return count


async def test_json_position(mqtt_ingest, fleet):
    _, root = mqtt_ingest
    when = (datetime.now(UTC) - timedelta(seconds=20)).replace(microsecond=0)
    await publish(f"{root}/mqtt-5/position", json.dumps(
        {"time": when.isoformat(), "lat": 51.5, "lon": -0.12, "speed_kmh": 12.5,
         "ignition": True}).encode())
    assert await wait_for_rows(
        lambda: Position.objects.filter(device=fleet["mqtt"]).count(), 1) == 1
    position = await db(lambda: Position.objects.get(device=fleet["mqtt"]))
    assert (position.fix_time, position.latitude, position.longitude) == (when, 51.5, -0.12)
    assert position.speed_kmh == 12.5 and position.ignition is True


async def test_nmea_lines_with_a_bad_one_among_them(mqtt_ingest, fleet):
    _, root = mqtt_ingest
    lines = (DATA / "nmea/josm-1433-drive-2008-08-14.nmea").read_bytes().splitlines()[:30]
    seconds = len({line.split(b",")[1] for line in lines
                   if line.startswith((b"$GPRMC", b"$GPGGA"))})
    lines.insert(5, b"$GPRMC,150555.000,A,5347.5536,N,00143.6468,W,0.00,241.59,140808,,,A*00")
    await publish(f"{root}/mqtt-5/nmea", b"\r\n".join(lines))
    count = await wait_for_rows(
        lambda: Position.objects.filter(device=fleet["mqtt"]).count(), seconds)
    assert seconds >= 8
    assert count == seconds  # a fix per second; the corrupt line skipped, not the rest


async def test_garbage_message_does_not_stop_the_next(mqtt_ingest, fleet):
    _, root = mqtt_ingest
    await publish(f"{root}/mqtt-5/position", b"\x00\xff garbage")
    when = (datetime.now(UTC) - timedelta(seconds=5)).replace(microsecond=0)
    await publish(f"{root}/mqtt-5/position", json.dumps(
        {"time": when.isoformat(), "lat": 51.6, "lon": -0.1}).encode())
    assert await wait_for_rows(
        lambda: Position.objects.filter(device=fleet["mqtt"]).count(), 1) == 1


async def test_unknown_unit_recorded(mqtt_ingest):
    _, root = mqtt_ingest
    await publish(f"{root}/ghost-1/position", json.dumps(
        {"time": datetime.now(UTC).isoformat(), "lat": 1.0, "lon": 1.0}).encode())
    assert await wait_for_rows(
        lambda: UnknownUnit.objects.filter(identifier="ghost-1", protocol="mqtt").count(), 1) == 1
