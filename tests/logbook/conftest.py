"""Fixtures for logbook tests: Acme's people in every role, and a van with a unit."""

from __future__ import annotations

import pytest

from fleet.models import Driver, Role


@pytest.fixture
def people(acme, globex, make_user):
    """Everyone the privacy rules speak about."""
    users = {
        "admin": make_user("boss", acme, Role.ADMIN),
        "dispatcher": make_user("desk", acme, Role.DISPATCHER),
        "driver": make_user("alice", acme, Role.DRIVER),
        "other_driver": make_user("bob", acme, Role.DRIVER),
        "other_organisation": make_user("eve", globex, Role.ADMIN),
    }
    alice = Driver.objects.get(user=users["driver"])
    alice.identification_key = "00000000A11CE000"
    alice.save()
    return users


@pytest.fixture
def alice(people) -> Driver:
    return Driver.objects.get(user=people["driver"])


@pytest.fixture
def bob(people) -> Driver:
    return Driver.objects.get(user=people["other_driver"])
