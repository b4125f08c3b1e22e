"""Shared fixtures: organisations with people, vehicles and units, built through services."""

from __future__ import annotations

import pytest

from fleet.models import Organisation, Role, Vehicle
from fleet.services import create_user
from telematics.services import register_unit


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
