"""The ingest loses its MQTT broker connection: it reconnects and resubscribes by itself,
and QoS 1 messages published meanwhile to its persistent session arrive afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import aiomqtt
import pytest

from telematics.ingest.runner import start_ingest
from telematics.models import Position
from tests.reliability.conftest import CuttableProxy
from tests.support import db

MQTT_URL = os.environ.get("MQTT_URL", "")
pytestmark = pytest.mark.skipif(not MQTT_URL, reason="MQTT_URL is not set (CI sets it)")


async def publish(root: str, latitudes: list[float], start: datetime) -> None:
    broker = urlparse(MQTT_URL)
    async with aiomqtt.Client(broker.hostname, broker.port or 1883) as client:
        for i, latitude in enumerate(latitudes):
            body = {"time": (start + timedelta(seconds=i)).isoformat(), "lat": latitude,
                    "lon": 13.0}
            await client.publish(f"{root}/mqtt-5/position", json.dumps(body), qos=1)


async def test_subscriber_survives_a_broker_outage(fleet):
    broker = urlparse(MQTT_URL)
    proxy = CuttableProxy(broker.hostname or "127.0.0.1", broker.port or 1883)
    root = f"fleet{uuid.uuid4().hex[:8]}"
    service = await start_ingest(("mqtt",), host="127.0.0.1",
                                 mqtt_url=f"mqtt://127.0.0.1:{proxy.port}",
                                 mqtt_client_id=f"test-{root}", mqtt_topic_root=root)
    try:
        await asyncio.wait_for(service.mqtt.connected.wait(), 10)
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        await publish(root, [52.0, 52.0001], start)
        for _ in range(50):
            if await db(lambda: Position.objects.filter(device=fleet["mqtt"]).count()) == 2:
                break
            await asyncio.sleep(0.1)

        proxy.cut()  # the broker vanishes for the ingest; units keep publishing to it
        for _ in range(50):
            if not service.mqtt.connected.is_set():
                break
            await asyncio.sleep(0.1)
        assert not service.mqtt.connected.is_set()
        await publish(root, [52.0002 + i * 1e-4 for i in range(10)],
                      start + timedelta(seconds=10))
        proxy.restore()

        await asyncio.wait_for(service.mqtt.connected.wait(), 30)
        for _ in range(100):
            count = await db(lambda: Position.objects.filter(device=fleet["mqtt"]).count())
            if count == 12:
                break
            await asyncio.sleep(0.1)
        assert count == 12  # the ten published during the outage arrived, once each
    finally:
        await service.stop()
        proxy.close()
