"""What a newcomer sees: the login page, the admin, the vehicle list."""

import subprocess
import sys

import pytest
from django.utils import timezone

from fleet.models import Role
from telematics.models import VehicleState


@pytest.mark.django_db
def test_login_page_and_redirect(client):
    assert client.get("/").status_code == 302
    page = client.get("/login/")
    assert page.status_code == 200
    assert b"Log in" in page.content


@pytest.mark.django_db
def test_wrong_password_says_so(client, acme, make_user):
    make_user("alice", acme)
    page = client.post("/login/", {"username": "alice", "password": "nope"})
    assert b"didn't match" in page.content


@pytest.mark.django_db
def test_admin_login_page(client):
    assert client.get("/admin/login/").status_code == 200


@pytest.mark.django_db
def test_admin_lists_every_model(admin_client):
    for model in ("fleet/organisation", "fleet/vehicle", "fleet/driver", "fleet/membership",
                  "telematics/device", "telematics/position", "telematics/unknownunit",
                  "telematics/vehiclestate", "telematics/signalsample", "telematics/fault",
                  "telematics/event", "telematics/dbcfile", "telematics/serviceplan",
                  "logbook/trip"):
        assert admin_client.get(f"/admin/{model}/").status_code == 200, model


@pytest.mark.django_db
def test_home_shows_latest_fix(client, acme, acme_van, make_user):
    make_user("alice", acme, Role.DISPATCHER)
    VehicleState.objects.create(vehicle=acme_van, fix_time=timezone.now(), latitude=52.52,
                                longitude=13.405, speed_kmh=42.0, ignition=True)
    client.login(username="alice", password="pw-alice")
    page = client.get("/").content.decode()
    assert "Van 7" in page and "52.52000, 13.40500" in page and "42 km/h" in page


@pytest.mark.django_db
def test_health(client):
    assert client.get("/health/").json() == {"status": "ok"}


def test_production_refuses_to_start_without_secret_key(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DEBUG": "0", "DJANGO_SETTINGS_MODULE": "fleet.settings",
           "FLEETBOOK_VAR_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"],
                            env=env, capture_output=True, text=True, cwd=".")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
