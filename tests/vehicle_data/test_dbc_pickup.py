"""A DBC uploaded, changed or deleted through the API takes effect in the running ingest
within seconds, without a restart."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from datetime import UTC, datetime, timedelta

from asgiref.sync import sync_to_async
from rest_framework.test import APIClient

from fleet.models import Role
from fleet.services import create_user
from telematics.models import SignalSample
from tests.can.helpers import DATA_DIR
from tests.support import db

MAZDA = (DATA_DIR / "mazda_rx8.dbc").read_text()
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
# Everything a test waits for must arrive within the ingest's DBC check (2 s) plus margin.
PICKUP_DEADLINE_S = 8.0


def api(method: str, path: str, user, body: dict | None = None):
    """The API as the admin calls it; run through ``db`` so the thread's connection closes."""
    def call():
        client = APIClient()
        client.force_authenticate(user)
        response = getattr(client, method.lower())(path, body, format="json")
        return response.status_code, response.json() if response.content else {}

    return db(call)


def post_frames(port: int, lines: list[str]) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/fleet/mqtt-5/can",
                                     data="\n".join(lines).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode()


def candump(offset_s: float, can_id: str, data: str) -> str:
    return f"({(T0 + timedelta(seconds=offset_s)).timestamp():.6f}) can0 {can_id}#{data}"


async def sample_appears(port: int, line_at, signal: str, vehicle) -> float:
    """Send the frame (a fresh timestamp each time) until the signal is stored; returns the
    stored value."""
    started = time.monotonic()
    attempt = 0
    while time.monotonic() - started < PICKUP_DEADLINE_S:
        await sync_to_async(post_frames)(port, [line_at(attempt)])
        values = await db(lambda: list(SignalSample.objects.filter(
            vehicle=vehicle, signal=signal).values_list("value", flat=True)))
        if values:
            return values[0]
        attempt += 1
        await asyncio.sleep(0.2)
    raise AssertionError(f"{signal} was not decoded within {PICKUP_DEADLINE_S} s")


async def test_upload_change_and_delete_take_effect_without_a_restart(ingest, fleet):
    vehicle = fleet["mqtt"].vehicle
    port = ingest.ports["osmand"]

    admin = await db(lambda: create_user("ada", fleet["acme"], Role.ADMIN,
                                         password="pw-ada-long")[0])
    # 0x420 is no OBD-II reply and 11 bits long: without a DBC the frame is a bad part.
    reply = await sync_to_async(post_frames)(port, [candump(0, "420", "8200000000000000")])
    assert "1 bad" in reply and "unknown 11-bit id 0x420" in reply

    status, dbc = await api("POST", "/api/v1/dbc-files/", admin, {
        "name": "Mazda RX-8", "dbc_text": MAZDA, "vehicles": [vehicle.pk],
        "mapping": {"coolant.CoolantTemperature": "coolant_temperature"}})
    assert status == 201, dbc
    # BO_ 1056 coolant: CoolantTemperature 7|8@0+ (1,-40): 0x82 = 130 -> 90 degC
    value = await sample_appears(
        port, lambda i: candump(1 + i, "420", "8200000000000000"), "coolant_temperature",
        vehicle)
    assert value == 90.0

    status, changed = await api("PATCH", f"/api/v1/dbc-files/{dbc['id']}/", admin,
                                {"mapping": {"speed.EngineRPM": "engine_speed"}})
    assert status == 200, changed
    # BO_ 513 speed: EngineRPM 7|16@0+ (0.25,0): 0x1AF8 = 6904 -> 1726 rpm
    value = await sample_appears(
        port, lambda i: candump(100 + i, "201", "1AF800004E205000"), "engine_speed", vehicle)
    assert value == 1726.0

    status, _ = await api("DELETE", f"/api/v1/dbc-files/{dbc['id']}/", admin)
    assert status == 204
    started = time.monotonic()
    while time.monotonic() - started < PICKUP_DEADLINE_S:
        reply = await sync_to_async(post_frames)(port, [candump(200, "201", "1AF800004E205000")])
        if "unknown 11-bit id 0x201" in reply:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("the deleted DBC still decodes 0x201")
