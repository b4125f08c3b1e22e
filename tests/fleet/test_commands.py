"""register_unit and create_user: what an operator types, and the messages they get."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from fleet.models import Membership, Organisation, Vehicle
from telematics.models import Device, UnknownUnit


def run(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_register_unit_creates_organisation_and_vehicle():
    out = run("register_unit", "356307042441013", "--protocol", "teltonika",
              "--vehicle", "Van 7", "--organisation", "Acme")
    assert "Registered teltonika unit 356307042441013 fitted to 'Van 7' in 'Acme'" in out
    device = Device.objects.get(identifier="356307042441013")
    assert device.vehicle.name == "Van 7"
    assert device.organisation.name == "Acme"
    assert Vehicle.objects.filter(organisation__name="Acme").count() == 1


@pytest.mark.django_db
def test_register_unit_reuses_existing_vehicle():
    run("register_unit", "111", "--protocol", "gt06", "--vehicle", "Van 7",
        "--organisation", "Acme")
    run("register_unit", "222", "--protocol", "nmea", "--vehicle", "Van 7",
        "--organisation", "Acme")
    assert Vehicle.objects.count() == 1
    assert Organisation.objects.count() == 1


@pytest.mark.django_db
def test_register_unit_refuses_duplicate_identifier():
    run("register_unit", "356307042441013", "--protocol", "teltonika", "--organisation", "Acme")
    with pytest.raises(CommandError, match=r"already registered .*teltonika.*'Acme'"):
        run("register_unit", "356307042441013", "--protocol", "gt06", "--organisation", "Other")
    assert Device.objects.count() == 1


@pytest.mark.django_db
def test_register_unit_refuses_identifier_with_spaces():
    with pytest.raises(CommandError, match="not a unit identifier"):
        run("register_unit", "35630 7042", "--protocol", "teltonika", "--organisation", "Acme")
    assert Device.objects.count() == 0


@pytest.mark.django_db
def test_register_unit_refuses_unknown_protocol():
    with pytest.raises(CommandError, match="invalid choice: 'tk103'"):
        run("register_unit", "1", "--protocol", "tk103", "--organisation", "Acme")


@pytest.mark.django_db
def test_registering_claims_an_unknown_unit():
    from django.utils import timezone

    now = timezone.now()
    UnknownUnit.objects.create(identifier="999", protocol="gt06", first_seen=now, last_seen=now)
    run("register_unit", "999", "--protocol", "gt06", "--organisation", "Acme")
    assert not UnknownUnit.objects.exists()


@pytest.mark.django_db
def test_create_user_with_role(client):
    out = run("create_user", "dispatch1", "--organisation", "Acme", "--role", "dispatcher",
              "--password", "s3cret-pass")
    assert "Created dispatcher 'dispatch1' in 'Acme'" in out
    membership = Membership.objects.get(user__username="dispatch1")
    assert membership.role == "dispatcher"
    assert client.login(username="dispatch1", password="s3cret-pass")


@pytest.mark.django_db
def test_create_user_generates_and_prints_a_password(client):
    out = run("create_user", "dana", "--organisation", "Acme", "--role", "driver")
    password = out.split("Password: ")[1].strip()
    assert len(password) >= 12
    assert client.login(username="dana", password=password)
    assert Membership.objects.get(user__username="dana").user.driver.name == "dana"


@pytest.mark.django_db
def test_create_user_refuses_duplicate_and_bad_role():
    run("create_user", "dana", "--organisation", "Acme", "--role", "driver")
    with pytest.raises(CommandError, match="already exists"):
        run("create_user", "dana", "--organisation", "Acme", "--role", "admin")
    with pytest.raises(CommandError, match="invalid choice: 'boss'"):
        run("create_user", "eve", "--organisation", "Acme", "--role", "boss")
