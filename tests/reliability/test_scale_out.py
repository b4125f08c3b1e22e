"""The scaled-out shape: two ingest processes on one PostgreSQL, Redis and MQTT broker.

Units connected to either process reach the same organisation's live updates, MQTT load
is split through the shared subscription, and nothing is stored twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import aiomqtt
import pytest
from channels.layers import get_channel_layer
from django.conf import settings

from fleet.live import organisation_group
from fleet.models import Organisation
from telematics.models import Position
from telematics.services import register_unit
from telematics.simulator.encoders import fix_at, teltonika_avl, teltonika_login
from tests.reliability.conftest import IngestProcess
from tests.reliability.test_ingest_killed import database_url
from tests.support import db

REDIS_URL = os.environ.get("REDIS_URL", "")
MQTT_URL = os.environ.get("MQTT_URL", "")
pytestmark = pytest.mark.skipif(not (REDIS_URL and MQTT_URL),
                                reason="needs REDIS_URL and MQTT_URL (CI sets both)")


@pytest.fixture
def units(transactional_db):
    acme = Organisation.objects.create(name="Acme")
    return acme, [register_unit(imei, "teltonika", acme, f"Van {n}")
                  for n, imei in enumerate(("356307042441013", "356307042441021"))], \
        register_unit("mqtt-van", "mqtt", acme, "MQTT van")


def send(port: int, imei: str, latitude: float, when: datetime) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as unit:
        unit.sendall(teltonika_login(imei))
        assert unit.recv(1) == b"\x01"
        unit.sendall(teltonika_avl([fix_at(latitude, 13.0, when)]))
        ack = b""
        while len(ack) < 4:
            ack += unit.recv(4 - len(ack))


async def test_two_ingest_processes_one_dashboard(units):
    acme, (van_a, van_b), mqtt_van = units
    root = f"fleet{uuid.uuid4().hex[:8]}"
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
    common = {"REDIS_URL": REDIS_URL, "MQTT_URL": MQTT_URL, "MQTT_TOPIC_ROOT": root,
              "CHANNEL_PREFIX": prefix}
    url = database_url()
    first = await asyncio.to_thread(IngestProcess, url, "teltonika,mqtt",
                                    {**common, "MQTT_CLIENT_ID": f"{root}-1"})
    second = await asyncio.to_thread(IngestProcess, url, "teltonika,mqtt",
                                     {**common, "MQTT_CLIENT_ID": f"{root}-2"})
    try:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(organisation_group(acme.pk), channel)
        await asyncio.sleep(1.0)  # both subscribers have joined the shared subscription
        now = datetime.now(UTC).replace(microsecond=0)
        await asyncio.to_thread(send, first.ports["teltonika"], van_a.identifier, 52.1,
                                now - timedelta(seconds=30))
        await asyncio.to_thread(send, second.ports["teltonika"], van_b.identifier, 52.2,
                                now - timedelta(seconds=30))
        broker = urlparse(MQTT_URL)
        async with aiomqtt.Client(broker.hostname, broker.port or 1883) as client:
            for i in range(40):
                body = {"time": (now - timedelta(seconds=60 - i)).isoformat(),
                        "lat": 52.3 + i * 1e-5, "lon": 13.0}
                await client.publish(f"{root}/mqtt-van/position", json.dumps(body), qos=1)
        seen: set[int] = set()
        deadline = asyncio.get_running_loop().time() + 15
        while seen != {van_a.vehicle_id, van_b.vehicle_id, mqtt_van.vehicle_id}:
            remaining = deadline - asyncio.get_running_loop().time()
            assert remaining > 0, f"live updates only for {seen}"
            message = await asyncio.wait_for(layer.receive(channel), remaining)
            seen.update(vehicle["id"] for vehicle in message["vehicles"])
        for _ in range(100):
            stored = await db(lambda: Position.objects.filter(device=mqtt_van).count())
            if stored >= 40:
                break
            await asyncio.sleep(0.1)
        assert stored == 40  # every MQTT message once, whichever process took it
        assert await db(lambda: Position.objects.filter(device__in=[van_a, van_b]).count()) == 2
        assert all(p.process.poll() is None for p in (first, second))
        await layer.group_discard(organisation_group(acme.pk), channel)
    finally:
        await asyncio.to_thread(first.stop)
        await asyncio.to_thread(second.stop)
