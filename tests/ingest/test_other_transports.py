"""GT06, NMEA, OsmAnd HTTP and CoAP units against the real listeners and database."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiocoap
import pytest
from asgiref.sync import sync_to_async

from telematics.models import Position, UnknownUnit, VehicleState
from telematics.services import register_unit
from tests.support import db

DATA = Path(__file__).parent.parent / "data"


def vendor_frame(name: str) -> bytes:
    for line in (DATA / "protocols/gt06/vendor.txt").read_text().splitlines():
        if line.startswith(name + " "):
            return bytes.fromhex(line.split()[1])
    raise KeyError(name)


async def test_gt06_login_location_heartbeat(ingest, fleet):
    await db(lambda: register_unit("123456789012345", "gt06", fleet["acme"], "Car 9"))
    reader, writer = await asyncio.open_connection("127.0.0.1", ingest.ports["gt06"])
    writer.write(vendor_frame("v181_login"))
    assert await asyncio.wait_for(reader.readexactly(10), 5) == vendor_frame("v181_login_reply")
    writer.write(vendor_frame("v181_location") + b"noise\r\n" + vendor_frame("v181_session_status"))
    assert await asyncio.wait_for(reader.readexactly(10), 5) == vendor_frame(
        "v181_session_status_reply")
    writer.close()
    position = await db(lambda: Position.objects.get(device__identifier="123456789012345"))
    # Vendor doc v1.8.1 section 5.2.1: 2011-08-29 17:46:16, 23.111668 N, 114.409285 E
    assert position.fix_time == datetime(2011, 8, 29, 17, 46, 16, tzinfo=UTC)
    assert round(position.latitude, 6) == 23.111668
    assert round(position.longitude, 6) == 114.409285
    assert position.course == 143 and position.satellites == 15


async def test_gt06_unknown_unit_gets_no_answer(ingest):
    reader, writer = await asyncio.open_connection("127.0.0.1", ingest.ports["gt06"])
    writer.write(vendor_frame("v31_login"))
    assert await asyncio.wait_for(reader.read(100), 5) == b""
    writer.close()
    assert await db(lambda: UnknownUnit.objects.filter(protocol="gt06").count()) == 1


async def test_nmea_real_drive_over_tcp(ingest, fleet):
    log = (DATA / "nmea/josm-1433-drive-2008-08-14.nmea").read_bytes()
    _, writer = await asyncio.open_connection("127.0.0.1", ingest.ports["nmea"])
    writer.write(b"$PGID,NMEA42*" + _checksum(b"PGID,NMEA42") + b"\r\n" + log)
    await writer.drain()
    writer.close()  # the last fix is flushed when the unit hangs up
    for _ in range(100):
        count = await db(lambda: Position.objects.filter(device=fleet["nmea"]).count())
        if count == 1241:
            break
        await asyncio.sleep(0.1)
    assert count == 1241  # every RMC second of the drive, RMC and GGA merged
    first = await db(lambda: Position.objects.filter(device=fleet["nmea"]).earliest("fix_time"))
    assert first.fix_time == datetime(2008, 8, 14, 15, 5, 53, tzinfo=UTC)
    assert (round(first.latitude, 6), round(first.longitude, 6)) == (53.79256, -1.727447)
    assert first.altitude == 144.4 and first.satellites == 8 and first.hdop == 1.0


def _checksum(body: bytes) -> bytes:
    value = 0
    for byte in body:
        value ^= byte
    return f"{value:02X}".encode()


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def http_post_json(url: str, body: dict) -> tuple[int, str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_osmand_query_and_json(ingest, fleet):
    base = f"http://127.0.0.1:{ingest.ports['osmand']}/"
    now = int(datetime.now(UTC).timestamp())
    status, _ = await sync_to_async(http_get)(
        f"{base}?id=phone-17&timestamp={now - 60}&lat=48.1374&lon=11.5755&speed=10"
        f"&bearing=90&altitude=520&batt=87")
    assert status == 200
    status, _ = await sync_to_async(http_post_json)(base, {
        "device_id": "phone-17",
        "location": {"timestamp": datetime.fromtimestamp(now - 30, UTC).isoformat(),
                     "coords": {"latitude": 48.1375, "longitude": 11.5756, "speed": 5,
                                "heading": 91, "altitude": 521, "accuracy": 4},
                     "battery": {"level": 0.86, "is_charging": False}, "is_moving": True},
    })
    assert status == 200
    rows = await db(lambda: list(Position.objects.filter(device=fleet["osmand"])
                                 .order_by("fix_time")))
    assert [r.latitude for r in rows] == [48.1374, 48.1375]
    assert round(rows[0].speed_kmh, 3) == 18.52  # 10 knots
    assert round(rows[1].speed_kmh, 3) == 18.0  # 5 m/s
    assert rows[0].attributes["battery_level"] == 87


@pytest.mark.parametrize(("query", "message"), [
    ("lat=48.1&lon=11.5", "id"),
    ("id=nobody&lat=48.1&lon=11.5", "Unknown device id 'nobody'"),
    ("id=phone-17&lat=91&lon=11.5", "lat"),
    ("id=phone-17&lat=abc&lon=11.5", "lat"),
    ("id=phone-99&lat=48.1&lon=11.5", "wrong secret"),
])
async def test_osmand_bad_requests_get_400_with_a_message(ingest, query, message):
    status, text = await sync_to_async(http_get)(
        f"http://127.0.0.1:{ingest.ports['osmand']}/?{query}")
    assert status == 400
    assert message in text


async def test_osmand_secret_unit(ingest, fleet):
    status, _ = await sync_to_async(http_get)(
        f"http://127.0.0.1:{ingest.ports['osmand']}/?id=phone-99&lat=48.1&lon=11.5"
        f"&secret=s3cret&timestamp={int(datetime.now(UTC).timestamp())}")
    assert status == 200
    assert await db(lambda: Position.objects.filter(device=fleet["secret"]).count()) == 1


async def test_osmand_oversized_body_is_refused(ingest, settings):
    big = {"device_id": "phone-17", "pad": "x" * 100_000}
    status, text = await sync_to_async(http_post_json)(
        f"http://127.0.0.1:{ingest.ports['osmand']}/", big)
    assert status == 413 and "over" in text


async def coap_post(port: int, path: str, payload: bytes) -> aiocoap.Message:
    context = await aiocoap.Context.create_client_context()
    try:
        request = aiocoap.Message(code=aiocoap.POST, payload=payload,
                                  uri=f"coap://127.0.0.1:{port}/{path}")
        return await asyncio.wait_for(context.request(request).response, 10)
    finally:
        await context.shutdown()


async def test_coap_position_answered_changed_after_storage(ingest, fleet):
    when = (datetime.now(UTC) - timedelta(seconds=30)).replace(microsecond=0)
    body = json.dumps([{"time": when.isoformat(), "lat": 50.1, "lon": 8.6, "speed_kmh": 33}])
    response = await coap_post(ingest.ports["coap"], "fleet/coap-6/position", body.encode())
    assert response.code == aiocoap.CHANGED
    position = await db(lambda: Position.objects.get(device=fleet["coap"]))
    assert (position.fix_time, position.latitude, position.speed_kmh) == (when, 50.1, 33.0)
    state = await db(lambda: VehicleState.objects.get(vehicle=fleet["coap"].vehicle))
    assert state.latitude == 50.1


async def test_coap_bad_body_and_unknown_unit(ingest):
    response = await coap_post(ingest.ports["coap"], "fleet/coap-6/position", b"{not json")
    assert response.code == aiocoap.BAD_REQUEST
    assert response.payload  # a diagnostic the unit's developer can read
    body = json.dumps({"time": datetime.now(UTC).isoformat(), "lat": 50.1, "lon": 8.6})
    response = await coap_post(ingest.ports["coap"], "fleet/ghost/position", body.encode())
    assert response.code == aiocoap.UNAUTHORIZED
