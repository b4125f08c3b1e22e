"""The load generator against a real in-process listener: acknowledged means stored."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Count

from telematics.ingest.runner import start_ingest
from telematics.models import Device, Position, VehicleState
from telematics.simulator.load import load_imeis, register_units, run_units
from tests.support import db

IMEIS = load_imeis(4, first=900_000)


@pytest.fixture
def units(transactional_db) -> list[str]:
    assert register_units(IMEIS) == len(IMEIS)
    assert register_units(IMEIS) == 0  # registering again is a no-op
    return IMEIS


@pytest.fixture
async def ingest(units, settings):
    settings.INGEST_BATCH_WAIT_MS = 5
    service = await start_ingest(
        ("teltonika",), host="127.0.0.1", ports={"teltonika": 0}, mqtt_url=""
    )
    yield service
    await service.stop()


def stored_by_unit() -> dict[str, int]:
    rows = (
        Position.objects.filter(device__identifier__in=IMEIS)
        .values_list("device__identifier")
        .annotate(n=Count("id"))
    )
    return dict(rows)


async def test_live_units_every_acked_record_is_stored(ingest, units):
    result = await run_units(
        "127.0.0.1", ingest.ports["teltonika"], units, mode="live", rate=5, duration=1.5
    )
    assert result.complete, result.summary()
    assert result.connected == 4 and result.records_acked == 4 * 8  # round(1.5 * 5) each
    assert result.latencies and result.latency_ms(0.99) > 0
    assert await db(stored_by_unit) == result.acked_by_unit == dict.fromkeys(units, 8)


async def test_backlog_units_flush_every_packet(ingest, units):
    result = await run_units(
        "127.0.0.1", ingest.ports["teltonika"], units, mode="backlog", packets=3
    )
    assert result.complete, result.summary()
    assert result.packets_acked == 4 * 3 and result.records_acked == 4 * 3 * 25
    assert await db(stored_by_unit) == result.acked_by_unit == dict.fromkeys(units, 75)
    # A plausible drive: fix times a second apart and nothing filtered as a jump.
    fixes = await db(
        lambda: list(
            Position.objects.filter(device__identifier=units[0]).values_list(
                "fix_time", "speed_kmh", "odometer_km"
            )
        )
    )
    gaps = {(b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(fixes)}
    assert gaps == {1.0} and fixes[0][1] > 0 and fixes[-1][2] > fixes[0][2]


async def test_unregistered_units_are_refused(ingest):
    strangers = load_imeis(2, first=990_000)
    result = await run_units("127.0.0.1", ingest.ports["teltonika"], strangers, duration=1)
    assert result.refused == 2 and result.connected == 0 and result.records_sent == 0


def test_imeis_are_valid_and_stable():
    imeis = load_imeis(3, first=41)
    assert imeis == load_imeis(3, first=41) and len(set(imeis)) == 3
    assert all(len(i) == 15 and i.isdigit() for i in imeis)
    assert load_imeis(1, prefix="49015420", first=323751)[0] == "490154203237518"  # Luhn


def test_devices_get_a_vehicle_each(transactional_db):
    register_units(IMEIS[:2])
    devices = Device.objects.filter(identifier__in=IMEIS[:2]).select_related("vehicle")
    assert {d.vehicle.name for d in devices} == {f"Load {i}" for i in IMEIS[:2]}
    assert {d.organisation.name for d in devices} == {"Load Test"}


async def test_a_listener_that_hangs_up_counts_as_lost():
    async def hang_up_after_login(reader, writer):
        await reader.read(64)
        writer.write(b"\x01")
        await reader.read(4096)  # the first packet: no ack, just gone
        writer.close()

    server = await asyncio.start_server(hang_up_after_login, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    result = await run_units("127.0.0.1", port, load_imeis(3), rate=4, duration=1)
    server.close()
    assert result.connected == 3 and result.lost == 3 and result.records_acked == 0
    assert not result.complete


def test_simulate_refuses_protocols_it_cannot_play():
    with pytest.raises(CommandError, match="supported: teltonika, gt06, nmea, osmand, mixed"):
        call_command("simulate", "--protocol", "coap", "--units", "1")


async def test_can_units_feed_vehicle_signals(ingest, units):
    result = await run_units(
        "127.0.0.1", ingest.ports["teltonika"], units[:2], rate=5, duration=1, can=True
    )
    assert result.complete, result.summary()
    states = await db(
        lambda: list(
            VehicleState.objects.filter(device__identifier__in=units[:2]).values_list(
                "signals", flat=True
            )
        )
    )
    assert len(states) == 2
    assert all({"vehicle_speed", "fuel_level"} <= set(signals) for signals in states)
