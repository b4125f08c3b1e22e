"""CAN data through the real listeners: MQTT/HTTP frames and Teltonika IO become signals,
DM1 reports open and close faults, and bad frames never cost the good ones."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import aiomqtt
import pytest
from asgiref.sync import sync_to_async

from telematics.models import DbcFile, Event, Fault, SignalSample, VehicleState
from telematics.simulator.encoders import fix_at, teltonika_avl, teltonika_login
from tests.support import IMEI, db

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def candump(offset_s: float, can_id: str, data: str) -> str:
    return f"({(T0 + timedelta(seconds=offset_s)).timestamp():.6f}) can0 {can_id}#{data}"


def post(url: str, body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_http_candump_batch_to_signals_and_state(ingest, fleet):
    vehicle = fleet["mqtt"].vehicle
    body = "\n".join([
        candump(0, "0CF004FE", "FFFFFF6019FFFFFF"),   # EEC1: 812 rpm
        candump(0.1, "18FEF1FE", "FF00320000000000"),  # CCVS: 50 km/h
        candump(0.2, "18FEE500", "10270000FFFFFFFF"),  # HOURS: 500 h
        candump(0.3, "18FEC1EE", "40420F00FFFFFFFF"),  # VDHR: 5000 km
        candump(0.4, "18FEFC17", "FFC8FFFFFFFFFFFF"),  # DD: 80 %
        "(garbage) can0 XYZ#00",
        candump(0.5, "0CF004FE", "FFFFFFFFFFFFFFFF"),  # engine speed not available
    ]).encode()
    status, text = await sync_to_async(post)(
        f"http://127.0.0.1:{ingest.ports['osmand']}/fleet/mqtt-5/can", body)
    assert status == 200, text
    assert "1 bad" in text
    values = await db(lambda: dict(SignalSample.objects.filter(vehicle=vehicle)
                                   .values_list("signal", "value")))
    assert values == {"engine_speed": 812.0, "vehicle_speed": 50.0, "engine_hours": 500.0,
                      "odometer": 5000.0, "fuel_level": 80.0}
    state = await db(lambda: VehicleState.objects.get(vehicle=vehicle))
    assert state.signals["engine_speed"]["value"] == 812.0  # "not available" never stored
    assert state.signals["odometer"] == {
        "value": 5000.0, "time": (T0 + timedelta(seconds=0.3)).isoformat(), "unit": "km",
        "source": state.signals["odometer"]["source"]}


async def test_http_can_json_and_bad_body(ingest, fleet):
    url = f"http://127.0.0.1:{ingest.ports['osmand']}/fleet/mqtt-5/can"
    frames = {"frames": [{"ts": T0.timestamp(), "id": "18FEF1FE", "data": "FF00640000000000"},
                         {"ts": T0.timestamp(), "id": "nope", "data": "00"}]}
    status, text = await sync_to_async(post)(url, json.dumps(frames).encode())
    assert status == 200 and "1 bad" in text
    assert await db(lambda: SignalSample.objects.get(signal="vehicle_speed").value) == 100.0
    status, text = await sync_to_async(post)(url, b"\xff\xfe\x00")
    assert status == 400 and text.strip()


async def test_dm1_opens_and_a_later_empty_dm1_closes_a_fault(ingest, fleet):
    vehicle = fleet["mqtt"].vehicle
    url = f"http://127.0.0.1:{ingest.ports['osmand']}/fleet/mqtt-5/can"
    # DM1 from the engine (SA 00): amber lamp on, SPN 110 (coolant temp) FMI 0, 3 times.
    opened = candump(0, "18FECA00", "04FF6E0000037FFF")
    status, _ = await sync_to_async(post)(url, opened.encode())
    assert status == 200
    fault = await db(lambda: Fault.objects.get(vehicle=vehicle))
    assert (fault.code, fault.spn, fault.fmi, fault.occurrence) == ("SPN110-FMI0", 110, 0, 3)
    assert fault.is_open and fault.lamps["amber_warning_lamp"] is True
    cleared = candump(60, "18FECA00", "00FF00000000FFFF")  # no active faults any more
    status, _ = await sync_to_async(post)(url, cleared.encode())
    assert status == 200
    fault = await db(lambda: Fault.objects.get(vehicle=vehicle))
    assert fault.closed_at == T0 + timedelta(seconds=60)
    kinds = await db(lambda: list(Event.objects.filter(vehicle=vehicle)
                                  .order_by("time").values_list("type", flat=True)))
    assert kinds == ["fault_opened", "fault_closed"]


async def test_teltonika_can_io_elements_become_signals(ingest, fleet):
    reader, writer = await asyncio.open_connection("127.0.0.1", ingest.ports["teltonika"])
    writer.write(teltonika_login(IMEI))
    await reader.readexactly(1)
    # IO 89: fuel level 64 % (LVCAN, 1 byte, 1 %/bit per Teltonika's FMA110 manual)
    writer.write(teltonika_avl([fix_at(52.0, 13.0, T0)], io={89: 64}))
    await reader.readexactly(4)
    writer.close()
    sample = await db(lambda: SignalSample.objects.get(vehicle=fleet["teltonika"].vehicle))
    assert (sample.signal, sample.value, sample.time) == ("fuel_level", 64.0, T0)


async def test_vehicle_dbc_decodes_its_own_frames(ingest, fleet, tmp_path):
    from pathlib import Path

    text = (Path(__file__).parent.parent / "data/can/mazda_rx8.dbc").read_text()
    vehicle = fleet["mqtt"].vehicle

    def upload():
        dbc = DbcFile(organisation=fleet["acme"], name="Mazda RX-8", dbc_text=text,
                      mapping={"coolant.CoolantTemperature": "coolant_temperature"})
        dbc.full_clean()
        dbc.save()
        dbc.vehicles.add(vehicle)

    await db(upload)
    # 0x420 coolant: byte 0 = 0x82 = 130 - 40 = 90 degC (DBC: 7|8, scale 1, offset -40)
    status, text_reply = await sync_to_async(post)(
        f"http://127.0.0.1:{ingest.ports['osmand']}/fleet/mqtt-5/can",
        candump(0, "420", "8200000000000000").encode())
    assert status == 200, text_reply
    sample = await db(lambda: SignalSample.objects.get(vehicle=vehicle))
    assert (sample.signal, sample.value) == ("coolant_temperature", 90.0)


def test_a_dbc_that_does_not_parse_is_refused_with_the_reason(acme):
    from django.core.exceptions import ValidationError

    dbc = DbcFile(organisation=acme, name="broken", dbc_text="BO_ nonsense", mapping={})
    with pytest.raises(ValidationError) as error:
        dbc.full_clean()
    assert "dbc_text" in error.value.message_dict


MQTT_URL = os.environ.get("MQTT_URL", "")


@pytest.mark.skipif(not MQTT_URL, reason="MQTT_URL is not set (CI sets it)")
async def test_candump_log_replays_through_mqtt(fleet):
    from urllib.parse import urlparse

    from telematics.ingest.runner import start_ingest

    root = f"fleet{uuid.uuid4().hex[:8]}"
    service = await start_ingest(("mqtt",), host="127.0.0.1", mqtt_url=MQTT_URL,
                                 mqtt_client_id=f"test-{root}", mqtt_topic_root=root)
    try:
        await asyncio.wait_for(service.mqtt.connected.wait(), 10)
        log = [candump(i, "0CF004FE", f"FFFFFF{(6496 + i * 400) & 0xFF:02X}"
                       f"{(6496 + i * 400) >> 8:02X}FFFFFF") for i in range(20)]
        url = urlparse(MQTT_URL)
        async with aiomqtt.Client(url.hostname, url.port or 1883) as client:
            await client.publish(f"{root}/mqtt-5/can", "\n".join(log).encode(), qos=1)
        vehicle = fleet["mqtt"].vehicle
        for _ in range(100):
            count = await db(lambda: SignalSample.objects.filter(vehicle=vehicle).count())
            if count:
                break
            await asyncio.sleep(0.1)
        rpm = await db(lambda: list(SignalSample.objects.filter(vehicle=vehicle)
                                    .order_by("time").values_list("value", flat=True)))
        # 812 rpm rising by 50 rpm a second: stored when it moved >= 100 rpm (thinning)
        assert rpm == [812.0 + 100 * i for i in range(10)]
    finally:
        await service.stop()
