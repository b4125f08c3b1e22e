"""Each resource: list, read, create, change, delete, and the 400 messages per field."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.models import ApiKey, Driver, Organisation, Role, Vehicle
from telematics.models import Device, UnknownUnit, VehicleState
from tests.api.conftest import client_for

# --- organisations --------------------------------------------------------------------


def test_members_see_their_own_organisation(fleets):
    body = fleets.client("dispatcher").get("/api/v1/organizations/").json()
    assert [o["name"] for o in body["results"]] == ["Acme Logistics"]
    assert body["results"][0]["time_zone"] == "Europe/Berlin"


def test_only_the_operator_creates_organisations(fleets, operator):
    r = fleets.client("admin").post("/api/v1/organizations/", {"name": "Initech"})
    assert r.status_code == 403
    r = client_for(operator).post("/api/v1/organizations/", {"name": "Initech",
                                                              "time_zone": "Europe/Paris"})
    assert r.status_code == 201
    assert r.json()["slug"] == "initech"
    r = client_for(operator).get("/api/v1/organizations/")
    assert r.json()["count"] == 3


def test_organisation_validation(operator, fleets):
    r = client_for(operator).post("/api/v1/organizations/",
                                  {"name": "Acme Logistics", "time_zone": "Mars/Olympus"})
    assert r.status_code == 400
    assert set(r.json()) == {"name", "time_zone"}
    assert "IANA" in r.json()["time_zone"][0]


def test_admin_edits_own_organisation_dispatcher_may_not(fleets):
    url = f"/api/v1/organizations/{fleets.acme.pk}/"
    assert fleets.client("dispatcher").patch(url, {"time_zone": "UTC"}).status_code == 403
    r = fleets.client("admin").patch(url, {"time_zone": "UTC"})
    assert r.status_code == 200
    assert Organisation.objects.get(pk=fleets.acme.pk).time_zone == "UTC"
    assert fleets.client("admin").delete(url).status_code == 405


# --- users ----------------------------------------------------------------------------


def test_admin_creates_a_driver_login(fleets):
    r = fleets.client("admin").post("/api/v1/users/", {
        "username": "dave", "password": "a-long-pass-phrase", "role": "driver",
        "email": "dave@example.com",
    }, format="json")
    assert r.status_code == 201, r.json()
    body = r.json()
    assert "password" not in body
    assert body["role"] == "driver" and body["organisation"] == fleets.acme.pk
    assert Driver.objects.get(pk=body["driver"]).user.username == "dave"
    token = client_for().post("/api/v1/auth/token/", {"username": "dave",
                                                      "password": "a-long-pass-phrase"})
    assert token.status_code == 200


def test_user_validation_messages(fleets):
    r = fleets.client("admin").post("/api/v1/users/", {
        "username": "alice", "password": "123", "role": "captain",
    }, format="json")
    assert r.status_code == 400
    errors = r.json()
    assert set(errors) == {"username", "password", "role"}
    assert "already exists" in errors["username"][0]
    assert any("too short" in m for m in errors["password"])
    assert "not a valid choice" in errors["role"][0]
    r = fleets.client("admin").post("/api/v1/users/", {"username": "eve"}, format="json")
    assert r.status_code == 400
    assert r.json() == {"password": ["A new login needs a password."]}


def test_users_list_is_for_admins_only(fleets):
    body = fleets.client("admin").get("/api/v1/users/").json()
    assert [u["username"] for u in body["results"]] == ["alice", "dana", "dirk"]
    assert fleets.client("dispatcher").get("/api/v1/users/").status_code == 403
    assert fleets.client("driver").get("/api/v1/users/").status_code == 403
    url = f"/api/v1/users/{fleets.driver_user.pk}/"
    assert fleets.client("dispatcher").get(url).status_code == 403


def test_admin_changes_role_and_password(fleets):
    url = f"/api/v1/users/{fleets.dispatcher.pk}/"
    r = fleets.client("admin").patch(url, {"role": "driver", "password": "another-long-one"})
    assert r.status_code == 200
    assert r.json()["role"] == "driver" and r.json()["driver"] is not None
    fleets.dispatcher.refresh_from_db()
    assert fleets.dispatcher.check_password("another-long-one")


def test_admin_cannot_demote_lock_out_or_delete_themselves(fleets):
    url = f"/api/v1/users/{fleets.admin.pk}/"
    client = fleets.client("admin")
    assert client.patch(url, {"role": "dispatcher"}).json() == {
        "role": ["You cannot demote yourself."]}
    assert client.patch(url, {"is_active": False}).status_code == 400
    assert client.delete(url).status_code == 400
    assert client.delete(f"/api/v1/users/{fleets.dispatcher.pk}/").status_code == 204


def test_operator_must_name_the_organisation(operator, fleets):
    client = client_for(operator)
    r = client.post("/api/v1/users/", {"username": "olga", "password": "a-long-pass-phrase",
                                       "role": "admin"})
    assert r.status_code == 400
    assert "Name the organisation" in r.json()["organisation"][0]
    r = client.post("/api/v1/users/", {"username": "olga", "password": "a-long-pass-phrase",
                                       "role": "admin", "organisation": fleets.globex.pk})
    assert r.status_code == 201
    assert r.json()["organisation"] == fleets.globex.pk
    r = client.post("/api/v1/vehicles/", {"name": "Truck 2"})
    assert r.status_code == 400 and "organisation" in r.json()
    r = client.post("/api/v1/vehicles/", {"name": "Truck 2", "organisation": fleets.globex.pk})
    assert r.status_code == 201


# --- vehicles -------------------------------------------------------------------------


def test_vehicle_has_status_and_last_position(fleets):
    VehicleState.objects.filter(vehicle=fleets.van).update(fix_time=timezone.now())
    body = fleets.client("dispatcher").get(f"/api/v1/vehicles/{fleets.van.pk}/").json()
    assert body["status"] == "moving"
    assert body["last_position"]["speed_kmh"] == 42.0
    assert body["last_position"]["fix_time"].endswith("Z")
    assert body["odometer_km"] == 1000.0
    assert body["default_driver"] == fleets.dana.pk


def test_vehicle_without_fix_is_offline(fleets):
    body = fleets.client("admin").get(f"/api/v1/vehicles/{fleets.car.pk}/").json()
    assert body["status"] == "offline" and body["last_position"] is None


def test_vehicle_create_update_delete(fleets):
    client = fleets.client("admin")
    r = client.post("/api/v1/vehicles/", {"name": "Van 9", "licence_plate": "B-AC 9",
                                          "default_driver": fleets.dana.pk}, format="json")
    assert r.status_code == 201, r.json()
    url = f"/api/v1/vehicles/{r.json()['id']}/"
    assert client.patch(url, {"make": "Ford"}, format="json").json()["make"] == "Ford"
    assert client.put(url, {"name": "Van 9b"}, format="json").json()["name"] == "Van 9b"
    assert client.delete(url).status_code == 204
    assert not Vehicle.objects.filter(name="Van 9b").exists()


def test_vehicle_validation_messages(fleets):
    r = fleets.client("admin").post("/api/v1/vehicles/", {
        "name": "Van 7", "vin": "X" * 18, "odometer_offset_km": "lots",
        "default_driver": fleets.greta.pk,
    }, format="json")
    assert r.status_code == 400
    errors = r.json()
    assert set(errors) == {"vin", "odometer_offset_km", "default_driver"}
    assert "no more than 17" in errors["vin"][0]
    assert "number" in errors["odometer_offset_km"][0]
    assert "does not exist" in errors["default_driver"][0]  # Globex's driver is not found
    r = fleets.client("admin").post("/api/v1/vehicles/", {"name": "Van 7"}, format="json")
    assert r.json() == {"name": ["The organisation already has a vehicle named 'Van 7'."]}
    r = fleets.client("admin").post("/api/v1/vehicles/", {"name": ""}, format="json")
    assert r.json() == {"name": ["This field may not be blank."]}


def test_dispatcher_and_driver_cannot_write_vehicles(fleets):
    for who in ("dispatcher", "driver"):
        client = fleets.client(who)
        assert client.post("/api/v1/vehicles/", {"name": "X"}).status_code == 403
        r = client.patch(f"/api/v1/vehicles/{fleets.van.pk}/", {"name": "X"})
        assert r.status_code == 403


def test_driver_sees_only_their_vehicle(fleets):
    client = fleets.client("driver")
    assert [v["name"] for v in client.get("/api/v1/vehicles/").json()["results"]] == ["Van 7"]
    assert client.get(f"/api/v1/vehicles/{fleets.car.pk}/").status_code == 404


def test_assign_driver_by_patch_and_action(fleets):
    client = fleets.client("admin")
    r = client.patch(f"/api/v1/vehicles/{fleets.car.pk}/", {"default_driver": fleets.dana.pk},
                     format="json")
    assert r.json()["default_driver"] == fleets.dana.pk
    url = f"/api/v1/vehicles/{fleets.car.pk}/driver/"
    assert client.post(url, {"driver": None}, format="json").json()["default_driver"] is None
    r = client.post(url, {"driver": fleets.dana.pk}, format="json")
    assert r.status_code == 200 and r.json()["default_driver"] == fleets.dana.pk
    r = client.post(url, {"driver": fleets.greta.pk}, format="json")
    assert r.status_code == 400 and "driver" in r.json()
    r = client.post(url, {}, format="json")
    assert r.json() == {"driver": ["This field is required."]}
    assert fleets.client("dispatcher").post(url, {"driver": None},
                                            format="json").status_code == 403


def test_operator_cannot_cross_organisations(operator, fleets):
    r = client_for(operator).patch(f"/api/v1/vehicles/{fleets.van.pk}/",
                                   {"default_driver": fleets.greta.pk}, format="json")
    assert r.status_code == 400
    assert r.json() == {"default_driver": ["The driver belongs to another organisation."]}


def test_vehicle_filters_and_page_size(fleets):
    client = fleets.client("admin")
    Vehicle.objects.bulk_create(Vehicle(organisation=fleets.acme, name=f"Bus {i:02}")
                                for i in range(12))
    body = client.get("/api/v1/vehicles/?name=bus&page_size=5").json()
    assert body["count"] == 12 and len(body["results"]) == 5 and "page=2" in body["next"]
    body = client.get(f"/api/v1/vehicles/?default_driver={fleets.dana.pk}").json()
    assert [v["name"] for v in body["results"]] == ["Van 7"]
    body = client.get("/api/v1/vehicles/?page_size=5000").json()
    assert len(body["results"]) == 14  # capped at 1000, all fit


# --- devices --------------------------------------------------------------------------


def test_register_device(fleets):
    UnknownUnit.objects.create(identifier="860000000000001", protocol="gt06",
                               first_seen=timezone.now(), last_seen=timezone.now())
    r = fleets.client("admin").post("/api/v1/devices/", {
        "identifier": "860000000000001", "protocol": "gt06", "vehicle": fleets.car.pk,
        "secret": "s3cret",
    }, format="json")
    assert r.status_code == 201, r.json()
    body = r.json()
    assert "secret" not in body and body["has_secret"] is True
    assert body["vehicle"] == fleets.car.pk and body["organisation"] == fleets.acme.pk
    assert not UnknownUnit.objects.exists()  # claimed, as register_unit does


def test_duplicate_device_is_a_clear_400(fleets):
    r = fleets.client("admin").post("/api/v1/devices/", {
        "identifier": fleets.truck_unit.identifier, "protocol": "gt06",
    }, format="json")
    assert r.status_code == 400
    message = r.json()["identifier"][0]
    assert "registered already" in message
    assert "Globex" not in message  # another organisation's name stays private


def test_device_validation_messages(fleets):
    r = fleets.client("admin").post("/api/v1/devices/", {
        "identifier": "has space", "protocol": "carrier-pigeon", "vehicle": fleets.truck.pk,
    }, format="json")
    assert r.status_code == 400
    assert set(r.json()) == {"protocol", "vehicle"}
    r = fleets.client("admin").post("/api/v1/devices/", {
        "identifier": "has space", "protocol": "gt06"}, format="json")
    assert r.status_code == 400
    assert "no spaces" in r.json()["identifier"][0]


def test_device_update_and_no_delete(fleets):
    url = f"/api/v1/devices/{fleets.van_unit.pk}/"
    client = fleets.client("admin")
    r = client.patch(url, {"active": False, "identifier": "changed"}, format="json")
    assert r.status_code == 200
    assert r.json()["active"] is False and r.json()["identifier"] == "356307042441013"
    assert client.delete(url).status_code == 405
    assert Device.objects.filter(pk=fleets.van_unit.pk).exists()


def test_dispatcher_reads_devices_but_cannot_register(fleets):
    client = fleets.client("dispatcher")
    assert client.get("/api/v1/devices/").json()["count"] == 1
    r = client.post("/api/v1/devices/", {"identifier": "1", "protocol": "gt06"})
    assert r.status_code == 403


def test_device_filters(fleets):
    client = fleets.client("admin")
    assert client.get("/api/v1/devices/?protocol=gt06").json()["count"] == 0
    assert client.get("/api/v1/devices/?protocol=teltonika").json()["count"] == 1
    assert client.get(f"/api/v1/devices/?vehicle={fleets.car.pk}").json()["count"] == 0
    assert client.get("/api/v1/devices/?protocol=nope").status_code == 400


# --- drivers --------------------------------------------------------------------------


def test_driver_crud(fleets):
    client = fleets.client("admin")
    r = client.post("/api/v1/drivers/", {"name": "Dora", "identification_key": "K1"})
    assert r.status_code == 201
    url = f"/api/v1/drivers/{r.json()['id']}/"
    assert client.patch(url, {"name": "Dora D"}).json()["name"] == "Dora D"
    r = client.post("/api/v1/drivers/", {"name": "Dirk", "identification_key": "K1"})
    assert r.json() == {"identification_key": ["Another driver of the organisation has this key."]}
    # Greta of Globex has "G1": another organisation's key does not clash.
    assert client.post("/api/v1/drivers/", {"name": "Gil", "identification_key": "G1"}
                       ).status_code == 201
    assert client.delete(url).status_code == 204


def test_drivers_by_role(fleets):
    assert fleets.client("dispatcher").get("/api/v1/drivers/").json()["count"] == 1
    body = fleets.client("driver").get("/api/v1/drivers/").json()
    assert [d["name"] for d in body["results"]] == ["dana"]
    assert fleets.client("dispatcher").post("/api/v1/drivers/", {"name": "x"}).status_code == 403


# --- API keys -------------------------------------------------------------------------


def test_api_key_create_shows_key_once_then_revoke(fleets):
    client = fleets.client("admin")
    r = client.post("/api/v1/api-keys/", {"name": "Route planner"})
    assert r.status_code == 201
    body = r.json()
    raw = body["key"]
    assert raw.startswith(body["prefix"]) and body["created_by"] == "alice"
    listed = client.get("/api/v1/api-keys/").json()["results"]
    assert {k["name"] for k in listed} == {"Dispatch", "Route planner"}
    assert all("key" not in k for k in listed)
    assert client_for(api_key=raw).get("/api/v1/vehicles/").status_code == 200
    assert client.delete(f"/api/v1/api-keys/{body['id']}/").status_code == 204
    assert ApiKey.objects.get(pk=body["id"]).revoked is not None
    assert client_for(api_key=raw).get("/api/v1/vehicles/").status_code == 401
    assert client.get("/api/v1/api-keys/?active=true").json()["count"] == 1


def test_api_keys_are_for_admins(fleets):
    assert fleets.client("dispatcher").get("/api/v1/api-keys/").status_code == 403
    assert fleets.client("driver").post("/api/v1/api-keys/", {"name": "x"}).status_code == 403
    r = fleets.client("admin").post("/api/v1/api-keys/", {"name": ""})
    assert r.json() == {"name": ["This field may not be blank."]}


@pytest.mark.parametrize("role", [Role.ADMIN, Role.DISPATCHER])
def test_page_numbers_do_not_leak_counts(fleets, role):
    body = fleets.client("admin" if role == Role.ADMIN else "dispatcher").get(
        "/api/v1/vehicles/").json()
    assert body["count"] == 2


def test_recent_fix_ages_into_offline(fleets, settings):
    settings.VEHICLE_OFFLINE_AFTER_S = 60
    VehicleState.objects.filter(vehicle=fleets.van).update(
        fix_time=timezone.now() - timedelta(seconds=120))
    body = fleets.client("admin").get(f"/api/v1/vehicles/{fleets.van.pk}/").json()
    assert body["status"] == "offline"


def test_organisation_names_that_make_the_same_slug(operator, fleets):
    r = client_for(operator).post("/api/v1/organizations/", {"name": "Acme  logistics"})
    assert r.status_code == 400
    assert "similar" in r.json()["name"][0]


def test_django_validation_errors_from_services_answer_400_per_field():
    from django.core.exceptions import ValidationError

    from fleet.api.views import exception_handler

    response = exception_handler(ValidationError({"username": "Taken."}), {})
    assert response.status_code == 400 and response.data == {"username": ["Taken."]}
    response = exception_handler(ValidationError("Nope."), {})
    assert response.data == {"non_field_errors": ["Nope."]}


def test_single_objects_of_every_resource(fleets):
    client = fleets.client("admin")
    key = ApiKey.objects.get(organisation=fleets.acme)
    for url, field, value in (
        (f"/api/v1/organizations/{fleets.acme.pk}/", "name", "Acme Logistics"),
        (f"/api/v1/users/{fleets.dispatcher.pk}/", "role", "dispatcher"),
        (f"/api/v1/vehicles/{fleets.car.pk}/", "name", "Pool car"),
        (f"/api/v1/devices/{fleets.van_unit.pk}/", "protocol", "teltonika"),
        (f"/api/v1/drivers/{fleets.dana.pk}/", "user", fleets.driver_user.pk),
        (f"/api/v1/api-keys/{key.pk}/", "prefix", key.prefix),
    ):
        r = client.get(url)
        assert r.status_code == 200 and r.json()[field] == value, url
    r = client.patch(f"/api/v1/api-keys/{key.pk}/", {"name": "Dispatch (old)"})
    assert r.json()["name"] == "Dispatch (old)" and "key" not in r.json()
