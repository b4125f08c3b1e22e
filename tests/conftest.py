"""Shared fixtures: organisations with people, vehicles and units, built through services."""

from __future__ import annotations

import pytest

from fleet.models import Organisation, Role, Vehicle
from fleet.services import create_user
from telematics.ingest.runner import start_ingest
from telematics.services import register_unit
from tests.support import IMEI


@pytest.fixture(autouse=True)
def fresh_cache():
    """Rate-limit counters live in the (in-process) cache: no test inherits another's."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def acme(db) -> Organisation:
    return Organisation.objects.create(name="Acme Logistics", time_zone="Europe/Berlin")


@pytest.fixture
def globex(db) -> Organisation:
    return Organisation.objects.create(name="Globex Haulage", time_zone="Europe/Vienna")


@pytest.fixture
def make_user(db):
    def make(username: str, organisation: Organisation, role: str = Role.ADMIN):
        user, _ = create_user(username, organisation, role, password="pw-" + username)
        return user

    return make


@pytest.fixture
def acme_van(acme) -> Vehicle:
    return Vehicle.objects.create(organisation=acme, name="Van 7", licence_plate="B-AC 7")


@pytest.fixture
def acme_unit(acme, acme_van):
    return register_unit("356307042441013", "teltonika", acme, vehicle_name=acme_van.name)


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
