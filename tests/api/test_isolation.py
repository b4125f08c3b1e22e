"""Another organisation's objects: 404 for every resource and role, and never in a list."""

from __future__ import annotations

import pytest

from fleet.models import ApiKey

ROLES = ["admin", "dispatcher", "driver", "api_key"]
RESOURCES = ["organizations", "users", "vehicles", "devices", "drivers", "api-keys"]


def globex_id(fleets, resource: str) -> int:
    return {
        "organizations": fleets.globex.pk,
        "users": fleets.globex_admin.pk,
        "vehicles": fleets.truck.pk,
        "devices": fleets.truck_unit.pk,
        "drivers": fleets.greta.pk,
        "api-keys": ApiKey.objects.get(organisation=fleets.globex).pk,
    }[resource]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("resource", RESOURCES)
def test_other_organisations_object_is_not_found(fleets, role, resource):
    client = fleets.client(role)
    url = f"/api/v1/{resource}/{globex_id(fleets, resource)}/"
    assert client.get(url).status_code == 404
    assert client.patch(url, {"name": "mine now"}, format="json").status_code in (404, 405)
    assert client.put(url, {"name": "mine now"}, format="json").status_code in (404, 405)
    assert client.delete(url).status_code in (404, 405)
    if resource == "vehicles":
        assert client.get(url + "positions/").status_code == 404
        assert client.post(url + "driver/", {"driver": None}, format="json").status_code == 404


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("resource", RESOURCES)
def test_lists_never_include_other_organisations(fleets, role, resource):
    r = fleets.client(role).get(f"/api/v1/{resource}/")
    if r.status_code == 403:  # the whole list is closed to this role
        assert resource in ("users", "api-keys")
        return
    assert r.status_code == 200
    ids = {row["id"] for row in r.json()["results"]}
    assert globex_id(fleets, resource) not in ids
    assert all(row.get("organisation", fleets.acme.pk) == fleets.acme.pk
               for row in r.json()["results"])


@pytest.mark.parametrize("role", ROLES)
def test_feed_never_includes_other_organisations(fleets, role):
    rows = fleets.client(role).get("/api/v1/positions/feed/").json()["results"]
    assert rows
    assert {row["device"] for row in rows} == {fleets.van_unit.pk}


def test_other_organisations_ids_are_not_found_in_related_fields(fleets):
    client = fleets.client("admin")
    r = client.post("/api/v1/devices/", {"identifier": "1", "protocol": "gt06",
                                         "vehicle": fleets.truck.pk}, format="json")
    assert r.status_code == 400
    assert "does not exist" in r.json()["vehicle"][0]
    r = client.post("/api/v1/vehicles/", {"name": "X", "organisation": fleets.globex.pk},
                    format="json")
    assert r.status_code == 400 and "does not exist" in r.json()["organisation"][0]


def test_globex_sees_its_own(fleets):
    client = fleets.client("globex_admin")
    assert client.get(f"/api/v1/vehicles/{fleets.truck.pk}/").status_code == 200
    assert client.get(f"/api/v1/vehicles/{fleets.van.pk}/").status_code == 404


def test_operator_sees_every_organisation(fleets, operator):
    from tests.api.conftest import client_for

    client = client_for(operator)
    assert client.get("/api/v1/vehicles/").json()["count"] == 3
    assert client.get(f"/api/v1/vehicles/{fleets.truck.pk}/").status_code == 200
