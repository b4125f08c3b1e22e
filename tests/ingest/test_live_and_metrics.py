"""What operators and the live map see of ingest: channel-layer updates, counters, TLS."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from datetime import UTC, datetime, timedelta

from channels.layers import get_channel_layer
from prometheus_client import generate_latest

from fleet.live import organisation_group
from telematics.ingest.runner import start_ingest
from telematics.management.commands.ingest import format_stats
from telematics.models import Position, UnknownUnit
from telematics.simulator.encoders import fix_at, teltonika_avl, teltonika_login
from tests.support import IMEI, db


async def login(port: int, imei: str = IMEI):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(teltonika_login(imei))
    assert await asyncio.wait_for(reader.readexactly(1), 5) == b"\x01"
    return reader, writer


async def test_stored_fix_is_published_to_the_organisation(ingest, fleet):
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(organisation_group(fleet["acme"].pk), channel)
    reader, writer = await login(ingest.ports["teltonika"])
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=3)
    writer.write(teltonika_avl([fix_at(52.52, 13.405, when, speed_kmh=30.0, course=180.0)]))
    await reader.readexactly(4)
    writer.close()
    message = await asyncio.wait_for(layer.receive(channel), 5)
    assert message["type"] == "vehicles.update"
    assert message["vehicles"] == [{
        "id": fleet["teltonika"].vehicle_id, "fix_time": when.isoformat(),
        "latitude": 52.52, "longitude": 13.405, "speed_kmh": 30.0, "course": 180.0,
        "ignition": None,
    }]
    await layer.group_discard(organisation_group(fleet["acme"].pk), channel)


async def test_other_organisations_hear_nothing(ingest, fleet, globex):
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(organisation_group(globex.pk), channel)
    reader, writer = await login(ingest.ports["teltonika"])
    writer.write(teltonika_avl([fix_at(52.52, 13.405, datetime.now(UTC) - timedelta(seconds=2))]))
    await reader.readexactly(4)
    writer.close()
    try:
        await asyncio.wait_for(layer.receive(channel), 0.5)
        raise AssertionError("another organisation received the update")
    except TimeoutError:
        pass


async def test_unknown_unit_attempts_are_throttled(ingest):
    port = ingest.ports["teltonika"]
    for _ in range(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(teltonika_login("490154203237518"))
        assert await asyncio.wait_for(reader.read(1), 5) == b"\x00"
        writer.close()
    unknown = await db(lambda: UnknownUnit.objects.get(identifier="490154203237518"))
    assert unknown.attempts == 1  # recorded once per throttle window, refused every time


async def test_counters_and_stats_table(ingest, fleet):
    reader, writer = await login(ingest.ports["teltonika"])
    corrupt = bytearray(teltonika_avl([fix_at(52.0, 13.0, datetime.now(UTC))]))
    corrupt[-1] ^= 1
    writer.write(bytes(corrupt))
    writer.write(teltonika_avl([fix_at(52.0, 13.0, datetime.now(UTC) - timedelta(seconds=1))]))
    await reader.readexactly(4)
    writer.close()
    text = generate_latest().decode()
    assert 'fleetbook_ingest_errors_total{protocol="teltonika"}' in text
    assert 'fleetbook_ingest_records_stored_total{protocol="teltonika"}' in text
    table = format_stats(text)
    row = next(line for line in table.splitlines() if line.startswith("teltonika"))
    connections, frames, stored, errors, _refused = (int(v) for v in row.split()[1:])
    assert connections >= 1 and frames >= 2 and stored >= 1 and errors >= 1


def test_metrics_endpoint(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"fleetbook_ingest_frames_total" in response.content


async def test_tls_listener(fleet, settings, tmp_path):
    cert, key = tmp_path / "unit.crt", tmp_path / "unit.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    settings.INGEST_TLS_CERT, settings.INGEST_TLS_KEY = str(cert), str(key)
    service = await start_ingest(("teltonika",), host="127.0.0.1", ports={"teltonika": 0},
                                 mqtt_url="")
    try:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", service.ports["teltonika"], ssl=context)
        writer.write(teltonika_login(IMEI))
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"\x01"
        writer.write(teltonika_avl([fix_at(52.0, 13.0, datetime.now(UTC) - timedelta(seconds=1))]))
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"\x00\x00\x00\x01"
        writer.close()
    finally:
        await service.stop()
    assert await db(lambda: Position.objects.filter(device=fleet["teltonika"]).count()) == 1
