"""A user of one organisation sees nothing of another, through every selector and page."""

import pytest

from fleet.models import Driver, Role, Vehicle
from fleet.selectors import (
    drivers_visible_to,
    organisations_visible_to,
    role_of,
    vehicles_visible_to,
)


@pytest.fixture
def two_fleets(acme, globex, make_user):
    Vehicle.objects.create(organisation=acme, name="Acme Van")
    Vehicle.objects.create(organisation=globex, name="Globex Truck")
    Driver.objects.create(organisation=globex, name="Greta")
    return make_user("alice", acme, Role.ADMIN), make_user("gus", globex, Role.DISPATCHER)


def test_each_user_sees_only_their_organisation(two_fleets):
    alice, gus = two_fleets
    assert [v.name for v in vehicles_visible_to(alice)] == ["Acme Van"]
    assert [v.name for v in vehicles_visible_to(gus)] == ["Globex Truck"]
    assert [o.name for o in organisations_visible_to(alice)] == ["Acme Logistics"]
    assert [d.name for d in drivers_visible_to(gus)] == ["Greta"]
    assert list(drivers_visible_to(alice)) == []


def test_dashboard_lists_only_own_vehicles(client, two_fleets):
    client.login(username="alice", password="pw-alice")
    page = client.get("/").content.decode()
    assert "Acme Van" in page
    assert "Globex Truck" not in page


def test_driver_sees_only_the_vehicle_they_drive(acme, make_user):
    dana = make_user("dana", acme, Role.DRIVER)
    theirs = Vehicle.objects.create(organisation=acme, name="Dana's car",
                                    default_driver=dana.driver)
    Vehicle.objects.create(organisation=acme, name="Pool car")
    assert list(vehicles_visible_to(dana)) == [theirs]
    assert role_of(dana) == Role.DRIVER


def test_user_without_membership_sees_nothing(db, acme, django_user_model):
    Vehicle.objects.create(organisation=acme, name="Acme Van")
    stranger = django_user_model.objects.create_user("stranger", password="x")
    assert list(vehicles_visible_to(stranger)) == []
    assert list(organisations_visible_to(stranger)) == []
    assert role_of(stranger) is None


def test_superuser_sees_every_organisation(two_fleets, django_user_model):
    root = django_user_model.objects.create_superuser("root", "", "x")
    assert {v.name for v in vehicles_visible_to(root)} == {"Acme Van", "Globex Truck"}
