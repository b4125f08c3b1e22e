"""geofences/, events/ and alert-rules/ through the API: GeoJSON in and out, validation,
roles, and one organisation never seeing another's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from telematics.models import AlertRule, Event, Geofence
from tests.api.conftest import client_for

pytestmark = pytest.mark.django_db

SQUARE = {"type": "Polygon", "coordinates": [[
    [13.400, 52.520], [13.403, 52.520], [13.403, 52.5218], [13.400, 52.5218], [13.400, 52.520],
]]}
CIRCLE = {"type": "Point", "coordinates": [13.405, 52.52]}
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def test_geofences_round_trip_geojson(fleets):
    admin = fleets.client("admin")
    response = admin.post("/api/v1/geofences/", {"name": "Depot", "geometry": SQUARE,
                                                 "speed_limit_kmh": 20}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["geometry"] == SQUARE and body["radius_m"] is None
    assert body["organisation"] == fleets.acme.pk and body["revision"] == 1
    response = fleets.client("dispatcher").post(
        "/api/v1/geofences/", {"name": "Customer", "geometry": CIRCLE, "radius_m": 150},
        format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["geometry"] == CIRCLE and response.json()["radius_m"] == 150
    names = [g["name"] for g in fleets.client("driver").get("/api/v1/geofences/").json()[
        "results"]]
    assert names == ["Customer", "Depot"]

    # A new shape is a new revision (vehicles' inside/outside state starts afresh).
    moved = {"type": "Point", "coordinates": [13.41, 52.53]}
    response = admin.patch(f"/api/v1/geofences/{body['id']}/",
                           {"geometry": moved, "radius_m": 80}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["revision"] == 2
    # Renaming keeps the revision.
    response = admin.patch(f"/api/v1/geofences/{body['id']}/", {"name": "Yard"},
                           format="json")
    assert response.json()["revision"] == 2
    # A circle redrawn as a polygon drops its radius.
    response = admin.patch(f"/api/v1/geofences/{body['id']}/", {"geometry": SQUARE},
                           format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["radius_m"] is None


@pytest.mark.parametrize(("payload", "field", "text"), [
    ({"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1],
                                                        [0, 0]]]}}, "geometry", "crosses itself"),
    ({"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}},
     "geometry", "not closed"),
    ({"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}},
     "geometry", "at least 4"),
    ({"geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}}, "geometry",
     "Unsupported"),
    ({"geometry": {"type": "Point", "coordinates": [13.4, 52.5]}}, "radius_m", "radius_m"),
    ({"geometry": {"type": "Point", "coordinates": [13.4, 95]}, "radius_m": 10}, "geometry",
     "latitude"),
    ({"geometry": "POLYGON((0 0, 1 0, 1 1, 0 0))"}, "geometry", "GeoJSON object"),
    ({"geometry": SQUARE, "colour": "red"}, "colour", "#0b6bcb"),
])
def test_bad_geofences_answer_400_with_the_reason(fleets, payload, field, text):
    response = fleets.client("admin").post("/api/v1/geofences/", {"name": "Bad", **payload},
                                           format="json")
    assert response.status_code == 400
    assert text in " ".join(response.json()[field]), response.json()


def test_geofence_names_are_unique_per_organisation(fleets):
    Geofence.objects.create(organisation=fleets.acme, name="Depot", geometry=SQUARE)
    response = fleets.client("admin").post("/api/v1/geofences/",
                                           {"name": "Depot", "geometry": SQUARE}, format="json")
    assert response.status_code == 400 and "name" in response.json()
    response = fleets.client("globex_admin").post(
        "/api/v1/geofences/", {"name": "Depot", "geometry": SQUARE}, format="json")
    assert response.status_code == 201


def test_another_organisations_geofence_is_not_found(fleets):
    theirs = Geofence.objects.create(organisation=fleets.globex, name="Vienna",
                                     geometry=CIRCLE, radius_m=100)
    admin = fleets.client("admin")
    url = f"/api/v1/geofences/{theirs.pk}/"
    assert admin.get(url).status_code == 404
    assert admin.patch(url, {"name": "Mine"}, format="json").status_code == 404
    assert admin.delete(url).status_code == 404
    assert admin.get("/api/v1/geofences/").json()["results"] == []
    assert Geofence.objects.get(pk=theirs.pk).name == "Vienna"
    # A driver reads geofences but does not draw them.
    response = fleets.client("driver").post("/api/v1/geofences/",
                                            {"name": "X", "geometry": SQUARE}, format="json")
    assert response.status_code == 403


def make_events(fleets) -> list[Event]:
    rows = [
        (fleets.acme, fleets.van, "geofence_enter", 0),
        (fleets.acme, fleets.van, "overspeed", 60),
        (fleets.acme, fleets.car, "geofence_exit", 120),
        (fleets.acme, fleets.van, "geofence_exit", 180),
        (fleets.acme, fleets.car, "idle", 240),
        (fleets.globex, fleets.truck, "geofence_enter", 30),
    ]
    return Event.objects.bulk_create(
        Event(organisation=o, vehicle=v, type=t, time=T0 + timedelta(seconds=s),
              attributes={"geofence_name": "Depot"}) for o, v, t, s in rows)


def events_of(client, query: str) -> list[tuple[str, str]]:
    body = client.get(f"/api/v1/events/?{query}").json()
    return [(e["vehicle_name"], e["type"]) for e in body["results"]]


def test_event_filters_and_cursor_pages(fleets):
    make_events(fleets)
    admin = fleets.client("admin")
    window = "from=2026-03-02T07:00:00Z&to=2026-03-02T09:00:00Z"
    assert events_of(admin, window) == [
        ("Van 7", "geofence_enter"), ("Van 7", "overspeed"), ("Pool car", "geofence_exit"),
        ("Van 7", "geofence_exit"), ("Pool car", "idle")]
    assert events_of(admin, f"{window}&type=geofence_enter,geofence_exit") == [
        ("Van 7", "geofence_enter"), ("Pool car", "geofence_exit"), ("Van 7", "geofence_exit")]
    assert events_of(admin, f"{window}&vehicle={fleets.car.pk}") == [
        ("Pool car", "geofence_exit"), ("Pool car", "idle")]
    assert events_of(admin, "from=2026-03-02T08:01:00Z&to=2026-03-02T08:03:00Z") == [
        ("Van 7", "overspeed"), ("Pool car", "geofence_exit")]
    assert events_of(admin, f"{window}&order=desc")[0] == ("Pool car", "idle")
    # The default window is the last 7 days: these are older.
    assert events_of(admin, "") == []

    for order in ("asc", "desc"):
        seen, url = [], f"/api/v1/events/?{window}&page_size=2&order={order}"
        while url:
            body = admin.get(url).json()
            seen += [e["id"] for e in body["results"]]
            url = body["next"]
        assert len(seen) == len(set(seen)) == 5
    first = admin.get(f"/api/v1/events/?{window}").json()["results"][0]
    assert first["summary"] == "Van 7 entered Depot" and first["label"] == "Geofence entered"
    assert first["time"] == "2026-03-02T08:00:00Z"


def test_events_stay_in_their_organisation_and_drivers_see_their_own(fleets):
    events = make_events(fleets)
    window = "from=2026-03-02T07:00:00Z&to=2026-03-02T09:00:00Z"
    assert events_of(fleets.client("globex_admin"), window) == [("Truck 1", "geofence_enter")]
    theirs = next(e for e in events if e.organisation_id == fleets.globex.pk)
    assert fleets.client("admin").get(f"/api/v1/events/{theirs.pk}/").status_code == 404
    # Dana drives Van 7 only.
    assert {v for v, _ in events_of(fleets.client("driver"), window)} == {"Van 7"}
    assert events_of(fleets.client("api_key"), window)[0] == ("Van 7", "geofence_enter")


@pytest.mark.parametrize(("query", "field"), [
    ("type=DROP TABLE", "type"), ("vehicle=abc", "vehicle"), ("from=yesterday", "from"),
    ("cursor=xyz", "cursor"), ("order=sideways", "order"), ("page_size=0", "page_size"),
])
def test_bad_event_queries_answer_400(fleets, query, field):
    response = fleets.client("admin").get(f"/api/v1/events/?{query}")
    assert response.status_code == 400 and field in response.json()


def test_alert_rules_validation_roles_and_isolation(fleets):
    admin = fleets.client("admin")
    depot = Geofence.objects.create(organisation=fleets.acme, name="Depot", geometry=SQUARE,
                                    speed_limit_kmh=20)
    rule = {"name": "Depot speed", "event_types": ["overspeed", "geofence_enter"],
            "geofences": [depot.pk], "vehicles": [fleets.van.pk],
            "recipients": ["yard@example.com"], "overspeed_min_s": 10}
    response = admin.post("/api/v1/alert-rules/", rule, format="json")
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["geofences"] == [depot.pk] and created["vehicles"] == [fleets.van.pk]

    bad = admin.post("/api/v1/alert-rules/", {"name": "x", "event_types": [
        "idle", "low_fuel", "offline", "overspeed"]}, format="json")
    assert bad.status_code == 400
    assert set(bad.json()) == {"idle_minutes", "low_fuel_percent", "offline_minutes",
                               "overspeed_kmh"}
    for payload, field in (
        ({"event_types": ["teleported"]}, "event_types"),
        ({"event_types": []}, "event_types"),
        ({"event_types": ["offline"], "offline_minutes": 5, "recipients": ["not-mail"]},
         "recipients"),
        ({"event_types": ["offline"], "offline_minutes": 5, "vehicles": [fleets.truck.pk]},
         "vehicles"),
        ({"event_types": ["low_fuel"], "low_fuel_percent": 150}, "low_fuel_percent"),
    ):
        response = admin.post("/api/v1/alert-rules/", {"name": "x", **payload}, format="json")
        assert response.status_code == 400 and field in response.json(), (payload, response.json())

    url = f"/api/v1/alert-rules/{created['id']}/"
    assert fleets.client("dispatcher").get(url).status_code == 200
    assert fleets.client("dispatcher").patch(url, {"active": False},
                                             format="json").status_code == 403
    assert fleets.client("driver").get("/api/v1/alert-rules/").status_code == 403
    assert fleets.client("globex_admin").get(url).status_code == 404
    assert fleets.client("globex_admin").delete(url).status_code == 404
    response = admin.patch(url, {"active": False, "event_types": ["geofence_enter"]},
                           format="json")
    assert response.status_code == 200 and response.json()["active"] is False
    assert AlertRule.objects.get(pk=created["id"]).event_types == ["geofence_enter"]


def test_operator_names_the_organisation(fleets, operator):
    client = client_for(operator)
    response = client.post("/api/v1/geofences/", {"name": "Depot", "geometry": SQUARE},
                           format="json")
    assert response.status_code == 400 and "organisation" in response.json()
    response = client.post("/api/v1/geofences/", {"name": "Depot", "geometry": SQUARE,
                                                  "organisation": fleets.globex.pk},
                           format="json")
    assert response.status_code == 201
    assert Geofence.objects.get().organisation == fleets.globex


def test_schema_lists_the_new_endpoints(fleets):
    schema = fleets.client("admin").get("/api/v1/schema/?format=json").json()
    for path in ("/api/v1/geofences/", "/api/v1/events/", "/api/v1/alert-rules/"):
        assert path in schema["paths"]


def test_admin_pages_for_geofences_and_rules(client, fleets, operator):
    depot = Geofence.objects.create(organisation=fleets.acme, name="Depot", geometry=SQUARE)
    client.force_login(operator)
    assert client.get(f"/admin/telematics/geofence/{depot.pk}/change/").status_code == 200
    response = client.post("/admin/telematics/alertrule/add/", {
        "organisation": fleets.acme.pk, "name": "Depot", "active": "on",
        "event_types": ["geofence_enter", "geofence_exit"], "geofences": [depot.pk],
        "overspeed_min_s": 0, "recipients": "a@example.com, b@example.com"})
    assert response.status_code == 302, response.content.decode()[:2000]
    rule = AlertRule.objects.get()
    assert rule.recipients == ["a@example.com", "b@example.com"]
    assert rule.event_types == ["geofence_enter", "geofence_exit"]
    assert client.get(f"/admin/telematics/alertrule/{rule.pk}/change/").status_code == 200
