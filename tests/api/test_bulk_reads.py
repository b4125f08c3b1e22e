"""The fast paths of the two bulk reads (all vehicles; pages of positions) answer exactly
what the serializers and DRF's JSON would, with a fixed number of queries."""

from __future__ import annotations

import json
import zoneinfo
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone as django_timezone
from django.utils.translation import gettext_lazy
from rest_framework.renderers import JSONRenderer

from fleet.api.renderers import FastJSONRenderer
from fleet.models import Vehicle
from telematics.models import Position, VehicleState
from telematics.services import register_unit
from tests.api.conftest import T0, add_positions, client_for

PAYLOADS = [
    {"count": 2, "next": None, "results": [{"id": 1, "name": "Van 7", "speed": 42.5}]},
    [datetime(2026, 3, 2, 8, 0, tzinfo=UTC), datetime(2026, 3, 2, 8, 0, 0, 1500, tzinfo=UTC),
     datetime(2026, 3, 2, 8, 0, tzinfo=zoneinfo.ZoneInfo("UTC")),
     datetime(2026, 3, 2, 8, 0, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin")),
     datetime(2026, 3, 2, 8, 0, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
     datetime(2026, 3, 2, 8, 0), date(2026, 3, 2)],
    {"detail": gettext_lazy("Not found."), "amount": Decimal("12.50"), "nothing": None},
    {"text": "Straße ✓ line\u2028break\u2029end", "nested": {"list": [1, 2.0, True, None]}},
    {"big": 2**63 - 1, "small": -(2**63), "float": 0.1, "large": 1e16, "neg": -52.25},
    {"attributes": {"io1": 1, "raw": "0a1b", "list": [{"a": []}]}},
]


@pytest.mark.parametrize("data", PAYLOADS)
def test_fast_json_is_drfs_json(data):
    assert FastJSONRenderer().render(data) == JSONRenderer().render(data)


def test_tiny_floats_are_the_same_numbers():
    """The one difference in the text: 1e-05 is written 0.00001 (the same number)."""
    data = {"course": 1e-05, "hdop": 2.5e-7}
    fast = FastJSONRenderer().render(data)
    assert fast == b'{"course":0.00001,"hdop":2.5e-7}'
    assert json.loads(fast) == json.loads(JSONRenderer().render(data)) == data


def test_fast_json_falls_back_for_what_orjson_refuses():
    data = {"huge": 2**70}
    assert FastJSONRenderer().render(data) == JSONRenderer().render(data) == b'{"huge":' \
        + str(2**70).encode() + b"}"


def test_fast_json_pretty_prints_on_request():
    body = FastJSONRenderer().render({"a": 1}, "application/json; indent=2")
    assert body == b'{\n  "a": 1\n}'


@pytest.mark.parametrize("who", ["admin", "dispatcher", "driver", "api_key"])
def test_vehicle_list_shows_each_vehicle_as_its_detail_does(fleets, who):
    VehicleState.objects.filter(vehicle=fleets.van).update(fix_time=django_timezone.now())
    client = fleets.client(who)
    listed = client.get("/api/v1/vehicles/").json()["results"]
    assert listed
    for vehicle in listed:
        assert client.get(f"/api/v1/vehicles/{vehicle['id']}/").json() == vehicle


def test_vehicle_list_bytes_are_the_serializers(fleets):
    """Same keys in the same order, same time format: a client diffing bodies sees none."""
    client = fleets.client("admin")
    listed = client.get("/api/v1/vehicles/?name=Van").content
    one = client.get(f"/api/v1/vehicles/{fleets.van.pk}/").content
    assert listed.endswith(b'"results":[' + one + b"]}")


def queries_of(client, url: str) -> list[str]:
    assert client.get(url).status_code == 200  # the credential is remembered after this
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return [q["sql"] for q in queries.captured_queries]


def test_vehicle_list_queries_do_not_grow_with_the_fleet(fleets):
    client = fleets.client("dispatcher")
    few = queries_of(client, "/api/v1/vehicles/?page_size=1000")
    now = django_timezone.now()
    vehicles = Vehicle.objects.bulk_create(
        Vehicle(organisation=fleets.acme, name=f"Extra {i}") for i in range(40))
    VehicleState.objects.bulk_create(
        VehicleState(vehicle=v, fix_time=now, server_time=now, latitude=52.0, longitude=13.0)
        for v in vehicles)
    many = queries_of(client, "/api/v1/vehicles/?page_size=1000")
    assert len(many) == len(few) <= 5
    assert client.get("/api/v1/vehicles/?page_size=1000").json()["count"] == 42


def test_position_page_queries_do_not_grow_with_the_page(fleets):
    client = fleets.client("dispatcher")
    url = (f"/api/v1/vehicles/{fleets.van.pk}/positions/"
           "?from=2026-03-02T00:00:00Z&to=2026-03-03T00:00:00Z")
    few = queries_of(client, url)
    add_positions(fleets.van_unit, T0 + timedelta(hours=1), 500, step_s=1)
    many = queries_of(client, url)
    assert len(many) == len(few) <= 3
    assert len(client.get(url).json()["results"]) == 530


def test_position_rows_keep_every_value(fleets, acme):
    """JSON attributes, missing values and microseconds survive the plain-row read."""
    unit = register_unit("356307042441077", "teltonika", acme, vehicle_name="Pool car")
    Position.objects.create(
        device=unit, vehicle=fleets.car, fix_time=T0 + timedelta(microseconds=250),
        server_time=T0 + timedelta(seconds=1), latitude=-33.5, longitude=-70.25,
        valid=False, attributes={"io239": 1, "driver": "Dana Ö", "nested": {"a": [1, 2]}},
    )
    client = fleets.client("admin")
    body = client.get(f"/api/v1/vehicles/{fleets.car.pk}/positions/"
                      "?from=2026-03-02T00:00:00Z&to=2026-03-03T00:00:00Z").json()
    assert body["results"] == [{
        "id": body["results"][0]["id"], "vehicle": fleets.car.pk, "device": unit.pk,
        "fix_time": "2026-03-02T08:00:00.000250Z", "server_time": "2026-03-02T08:00:01Z",
        "latitude": -33.5, "longitude": -70.25, "altitude_m": None, "speed_kmh": None,
        "course": None, "satellites": None, "hdop": None, "valid": False, "ignition": None,
        "odometer_km": None,
        "attributes": {"io239": 1, "driver": "Dana Ö", "nested": {"a": [1, 2]}},
    }]
    feed = client.get("/api/v1/positions/feed/?since=2026-03-02T08:00:01Z").json()
    assert body["results"][0] in feed["results"]
    assert json.loads(client.get(f"/api/v1/vehicles/{fleets.car.pk}/positions/"
                                 "?from=2026-03-02T00:00:00Z&to=2026-03-03T00:00:00Z"
                                 "&format=json").content) == body


def test_vehicle_pages_count_and_link_as_before(fleets):
    Vehicle.objects.bulk_create(Vehicle(organisation=fleets.acme, name=f"Extra {i}")
                                for i in range(3))
    client = fleets.client("admin")
    names = sorted(["Pool car", "Van 7", "Extra 0", "Extra 1", "Extra 2"])
    for size in (1, 2, 4, 5, 6):
        seen, url, pages = [], f"/api/v1/vehicles/?page_size={size}", 0
        while url:
            body = client.get(url).json()
            assert body["count"] == 5
            assert (body["previous"] is None) == (pages == 0)
            seen += [v["name"] for v in body["results"]]
            url, pages = body["next"], pages + 1
        assert seen == names and pages == -(-5 // size)
    last = client.get("/api/v1/vehicles/?page_size=2&page=last").json()
    assert [v["name"] for v in last["results"]] == ["Van 7"] and last["count"] == 5
    for page in ("4", "0", "x", "99999999999999999999999"):
        r = client.get(f"/api/v1/vehicles/?page_size=2&page={page}")
        assert r.status_code == 404 and r.json()["detail"].startswith("Invalid page"), page
    empty = client.get("/api/v1/vehicles/?name=nothing-like-it").json()
    assert empty == {"count": 0, "next": None, "previous": None, "results": []}


def test_filters_still_filter_and_refuse_bad_values(fleets):
    """Without a filter in the query django-filter is skipped; with one it works as ever."""
    client = fleets.client("admin")
    assert [v["name"] for v in client.get("/api/v1/vehicles/?name=van").json()["results"]] \
        == ["Van 7"]
    r = client.get("/api/v1/vehicles/?default_driver=abc")
    assert r.status_code == 400 and "default_driver" in r.json()
    everything = client.get("/api/v1/vehicles/?unknown=1&page_size=10").json()
    assert everything["count"] == 2


def test_rows_of_an_empty_query_and_of_the_operator(fleets, operator):
    from fleet.api.rows import fetch

    assert fetch(Vehicle.objects.none(), ["id", "name"]) == []
    listed = client_for(operator).get("/api/v1/vehicles/").json()
    assert sorted(v["name"] for v in listed["results"]) == ["Pool car", "Truck 1", "Van 7"]
