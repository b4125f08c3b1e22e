"""Records the database refuses never stall the ingest, and stale units are corrected.

A unit authenticates once per TCP connection; if its vehicle or device is deleted, or the
device is moved to another vehicle, while it stays connected, its next frame must still
land in the right place (or be refused clearly), and the frames of every other unit in
the same batch must be stored and acknowledged as usual.
"""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import sync_to_async

from fleet.models import Vehicle
from telematics.ingest.runner import start_ingest
from telematics.models import Device, Position
from telematics.simulator.encoders import fix_at, teltonika_avl, teltonika_login
from tests.support import IMEI, db


async def teltonika_session(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(teltonika_login(IMEI))
    assert await asyncio.wait_for(reader.readexactly(1), 5) == b"\x01"
    return reader, writer


def a_fix(seconds_ago: int = 30):
    return fix_at(52.52, 13.40, datetime.now(UTC).replace(microsecond=0)
                  - timedelta(seconds=seconds_ago), speed_kmh=30.0)


@pytest.fixture
async def slow_batches(fleet, settings):
    """Ingest whose batches wait long enough that two units' frames share one."""
    settings.INGEST_BATCH_WAIT_MS = 300
    service = await start_ingest(("teltonika", "gt06", "osmand"), host="127.0.0.1",
                                 ports={"teltonika": 0, "gt06": 0, "osmand": 0}, mqtt_url="")
    yield service
    await service.stop()


def http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def phone_fix_url(service, seconds_ago: int = 20) -> str:
    moment = int(datetime.now(UTC).timestamp()) - seconds_ago
    return (f"http://127.0.0.1:{service.ports['osmand']}/?id=phone-17&timestamp={moment}"
            "&lat=48.1374&lon=11.5755&speed=5")


async def test_vehicle_deleted_while_connected_does_not_stall_the_batch(slow_batches, fleet):
    van = fleet["teltonika"].vehicle_id
    reader, writer = await teltonika_session(slow_batches.ports["teltonika"])
    await db(lambda: Vehicle.objects.filter(pk=van).delete())

    # The van's frame and a phone's request arrive within one batch.
    writer.write(teltonika_avl([a_fix()]))
    phone = asyncio.create_task(sync_to_async(http_get)(phone_fix_url(slow_batches)))

    # Both are acknowledged, though the van's rows named a vehicle that no longer exists.
    assert await asyncio.wait_for(reader.readexactly(4), 10) == b"\x00\x00\x00\x01"
    assert (await asyncio.wait_for(phone, 10))[0] == 200
    stored = await db(lambda: list(Position.objects.filter(device=fleet["teltonika"])))
    assert [p.vehicle_id for p in stored] == [None]  # the unit's device has no vehicle now
    assert await db(lambda: Position.objects.filter(device=fleet["osmand"]).count()) == 1

    # And the ingest goes on: the next frame is stored and acknowledged.
    writer.write(teltonika_avl([a_fix(10)]))
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"\x00\x00\x00\x01"
    writer.close()


async def test_device_deleted_while_connected_is_refused_without_acknowledgement(
    slow_batches, fleet
):
    reader, writer = await teltonika_session(slow_batches.ports["teltonika"])
    await db(lambda: Device.objects.filter(pk=fleet["teltonika"].pk).delete())
    writer.write(teltonika_avl([a_fix()]))
    phone = asyncio.create_task(sync_to_async(http_get)(phone_fix_url(slow_batches)))
    # Nothing to acknowledge: the unit is hung up on and will resend after reconnecting
    # (where it is refused as unknown). The phone in the same batch is stored as usual.
    assert await asyncio.wait_for(reader.read(4), 10) == b""
    assert (await asyncio.wait_for(phone, 10))[0] == 200
    assert await db(lambda: Position.objects.filter(device__identifier=IMEI).count()) == 0
    assert await db(lambda: Position.objects.filter(device=fleet["osmand"]).count()) == 1
    writer.close()


async def test_device_moved_to_another_vehicle_while_connected(fleet, settings):
    settings.INGEST_BATCH_WAIT_MS = 5
    settings.INGEST_UNIT_CACHE_S = 0.2
    service = await start_ingest(("teltonika",), host="127.0.0.1", ports={"teltonika": 0},
                                 mqtt_url="")
    try:
        reader, writer = await teltonika_session(service.ports["teltonika"])
        writer.write(teltonika_avl([a_fix(40)]))
        await asyncio.wait_for(reader.readexactly(4), 5)

        def move() -> int:
            truck = Vehicle.objects.create(organisation=fleet["acme"], name="Truck 9")
            Device.objects.filter(pk=fleet["teltonika"].pk).update(vehicle=truck)
            return truck.pk

        truck = await db(move)
        await asyncio.sleep(0.3)  # the unit cache's lifetime
        writer.write(teltonika_avl([a_fix(20)]))
        await asyncio.wait_for(reader.readexactly(4), 5)
        rows = await db(lambda: list(Position.objects.filter(device=fleet["teltonika"])
                                     .order_by("fix_time").values_list("vehicle_id", flat=True)))
        assert rows == [fleet["teltonika"].vehicle_id, truck]
        writer.close()
    finally:
        await service.stop()


async def test_deactivated_device_is_refused_on_its_open_connection(fleet, settings):
    settings.INGEST_UNIT_CACHE_S = 0.2
    service = await start_ingest(("teltonika",), host="127.0.0.1", ports={"teltonika": 0},
                                 mqtt_url="")
    try:
        reader, writer = await teltonika_session(service.ports["teltonika"])
        await db(lambda: Device.objects.filter(pk=fleet["teltonika"].pk).update(active=False))
        await asyncio.sleep(0.3)
        writer.write(teltonika_avl([a_fix()]))
        assert await asyncio.wait_for(reader.read(4), 10) == b""
        assert await db(lambda: Position.objects.count()) == 0
        writer.close()
    finally:
        await service.stop()


async def test_text_with_a_nul_byte_is_stored_not_refused(slow_batches, fleet):
    now = int(datetime.now(UTC).timestamp())
    status, _ = await sync_to_async(http_get)(
        f"http://127.0.0.1:{slow_batches.ports['osmand']}/?id=phone-17&timestamp={now - 5}"
        "&lat=48.1374&lon=11.5755&driver=Ann%00Smith")
    assert status == 200
    stored = await db(lambda: Position.objects.get(device=fleet["osmand"]))
    assert stored.attributes["driver"] == "Ann\ufffdSmith"
