"""A real recorded J1939 capture (a heavy truck, candump -L; see tests/data/can/SOURCE.md)
replayed through the MQTT path into stored signals, with values worked out by hand."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import aiomqtt
import pytest

from telematics.can.frames import parse_candump
from telematics.ingest.runner import start_ingest
from telematics.models import SignalSample, VehicleState
from tests.support import db

MQTT_URL = os.environ.get("MQTT_URL", "")
CAPTURE = Path(__file__).parent.parent / "data/can/nmfta_truck_2018-11-29.log"
# Line 5, 0CF00400#207D87481400F087: EEC1 from the engine (SA 0x00); engine speed is
# bytes 4-5, little-endian 0x1448 = 5192, at 0.125 rpm/bit = 649.0 rpm.
EEC1_TIME = datetime.fromtimestamp(1543509533.001145, UTC)


def test_the_capture_is_what_source_md_says():
    frames, errors = parse_candump(CAPTURE.read_text())
    assert errors == [] and len(frames) == 10
    eec1 = frames[4]
    assert (eec1.can_id, eec1.data.hex().upper()) == (0x0CF00400, "207D87481400F087")
    assert int.from_bytes(eec1.data[3:5], "little") * 0.125 == 649.0


@pytest.mark.skipif(not MQTT_URL, reason="MQTT_URL is not set (CI sets it)")
async def test_real_truck_capture_replays_through_mqtt(fleet):
    root = f"fleet{uuid.uuid4().hex[:8]}"  # runs on one broker never mix
    service = await start_ingest(("mqtt",), host="127.0.0.1", mqtt_url=MQTT_URL,
                                 mqtt_client_id=f"test-{root}", mqtt_topic_root=root)
    vehicle = fleet["mqtt"].vehicle
    try:
        await asyncio.wait_for(service.mqtt.connected.wait(), 10)
        url = urlparse(MQTT_URL)
        async with aiomqtt.Client(url.hostname, url.port or 1883) as client:
            await client.publish(f"{root}/mqtt-5/can", CAPTURE.read_bytes(), qos=1)
        for _ in range(100):
            if await db(lambda: SignalSample.objects.filter(vehicle=vehicle).exists()):
                break
            await asyncio.sleep(0.1)
        stored = await db(lambda: list(SignalSample.objects.filter(vehicle=vehicle)
                                       .values_list("signal", "value", "time", "source")))
        # Only EEC1 carries a value Fleetbook reads; CCVS's speed is "not available" and
        # the other eight groups are not decoded (bad parts, never a crash).
        assert stored == [("engine_speed", 649.0, EEC1_TIME, "j1939:EEC1:00")]
        state = await db(lambda: VehicleState.objects.get(vehicle=vehicle))
        assert state.signals["engine_speed"]["value"] == 649.0
        assert state.signals["engine_speed"]["time"] == EEC1_TIME.isoformat()
        assert "vehicle_speed" not in state.signals
    finally:
        await service.stop()
