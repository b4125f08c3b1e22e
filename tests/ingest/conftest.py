"""An ingest service on ephemeral ports, against the real test database."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from fleet.models import Organisation
from telematics.ingest.runner import start_ingest
from telematics.services import register_unit

IMEI = "356307042441013"


@pytest.fixture
def fleet(transactional_db):
    """Acme with a Teltonika van, a GT06 car, an NMEA truck and an OsmAnd phone."""
    acme = Organisation.objects.create(name="Acme")
    return {
        "acme": acme,
        "teltonika": register_unit(IMEI, "teltonika", acme, vehicle_name="Van 7"),
        "gt06": register_unit("359710049095095", "gt06", acme, vehicle_name="Car 3"),
        "nmea": register_unit("NMEA42", "nmea", acme, vehicle_name="Truck 1"),
        "osmand": register_unit("phone-17", "osmand", acme, vehicle_name="Bike 2"),
        "secret": register_unit("phone-99", "osmand", acme, vehicle_name="Bike 9",
                                secret="s3cret"),
        "mqtt": register_unit("mqtt-5", "mqtt", acme, vehicle_name="Van 5"),
        "coap": register_unit("coap-6", "coap", acme, vehicle_name="Van 6"),
    }


@pytest.fixture
async def ingest(fleet, settings):
    settings.INGEST_BATCH_WAIT_MS = 5
    protocols = ("teltonika", "gt06", "nmea", "osmand", "coap")
    service = await start_ingest(protocols, host="127.0.0.1",
                                 ports=dict.fromkeys(protocols, 0), mqtt_url="")
    yield service
    await service.stop()


async def exchange(port: int, payload: bytes, reply_size: int, timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(reply_size), timeout)
    finally:
        writer.close()


def db(query):
    """Run an ORM query from an async test (the ORM is synchronous).

    It runs in a worker thread and closes that thread's connection afterwards, so the
    test database can be dropped at the end of the run.
    """

    def run():
        try:
            return query()
        finally:
            connection.close()

    return sync_to_async(run, thread_sensitive=False)()
