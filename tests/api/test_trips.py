"""Trips, revisions and stops in the API; positions of private trips left out (issue 5)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient

from fleet.models import Role
from logbook.models import Interface, Trip, TripRevision
from telematics.models import Position
from tests.api.conftest import add_positions, client_for
from tests.logbook.factories import ago, make_trip

pytestmark = pytest.mark.django_db
SECRET = "Secret Garden"


def z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def trips(fleets, acme, make_user):
    """Dana's trips in Van 7 (business, private, unclassified, one past the window) and
    Otto's in the pool car."""
    otto = make_user("otto", acme, Role.DRIVER)
    van, car = fleets.van, fleets.car
    dana = fleets.dana
    made = {
        "old": make_trip(van, ago(days=10), driver=dana, suggested="business"),
        "business": make_trip(van, ago(days=3), driver=dana, category="business",
                              purpose="Delivery", partner="Schulz GmbH",
                              destination="Schulz GmbH, Berlin"),
        "private": make_trip(van, ago(days=2), driver=dana, category="private",
                             end_address=SECRET),
        "open": make_trip(van, ago(days=1), driver=dana, suggested="business",
                          end_address="Meyer KG, Potsdam"),
        "otto": make_trip(car, ago(days=1), driver=otto.driver, suggested="business"),
    }
    return {**made, "otto_user": otto}


def ids(response) -> set[int]:
    assert response.status_code == 200, response.content
    return {t["id"] for t in response.json()["results"]}


def get_trips(client: APIClient, **params):
    return client.get("/api/v1/trips/", params)


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("who", ["admin", "dispatcher", "api_key"])
def test_the_fleet_sees_every_trip_private_ones_redacted(fleets, trips, who):
    client = fleets.client(who)
    assert ids(get_trips(client)) == {trips[n].pk for n in
                                      ("old", "business", "private", "open", "otto")}
    private = client.get(f"/api/v1/trips/{trips['private'].pk}/").json()
    assert private["redacted"] is True and private["category"] == "private"
    assert private["distance_m"] == 10000.0 and private["distance_km"] == 10.0
    assert private["start_odometer_km"] is not None and private["date"]
    for hidden in ("start_time", "end_time", "start_address", "end_address", "route",
                   "start_latitude", "end_longitude", "driver", "driver_name", "duration_s",
                   "max_speed_kmh", "purpose", "editable_until"):
        assert private[hidden] is None, hidden
    assert SECRET not in str(client.get(f"/api/v1/trips/{trips['private'].pk}/revisions/")
                             .json())
    business = client.get(f"/api/v1/trips/{trips['business'].pk}/").json()
    assert business["redacted"] is False and business["partner"] == "Schulz GmbH"
    assert business["driver"] == fleets.dana.pk and business["driver_name"] == "dana"
    assert len(business["route"]) == 7 and business["end_address"] == "Schulz GmbH, Berlin"
    assert business["revisions"].endswith(f"/api/v1/trips/{trips['business'].pk}/revisions/")
    assert business["editable_until"] is not None and business["locked"] is False
    old = client.get(f"/api/v1/trips/{trips['old'].pk}/").json()
    assert old["locked"] is True and old["category"] == "private"  # locked on reading


def test_the_driver_sees_only_their_own_in_full(fleets, trips):
    client = fleets.client("driver")
    assert ids(get_trips(client)) == {trips[n].pk for n in
                                      ("old", "business", "private", "open")}
    private = client.get(f"/api/v1/trips/{trips['private'].pk}/").json()
    assert private["redacted"] is False and private["end_address"] == SECRET
    assert private["route"] and private["start_time"]
    assert client.get(f"/api/v1/trips/{trips['otto'].pk}/").status_code == 404
    otto = client_for(trips["otto_user"])
    assert ids(get_trips(otto)) == {trips["otto"].pk}
    assert otto.get(f"/api/v1/trips/{trips['private'].pk}/").status_code == 404


def test_another_organisation_finds_nothing(fleets, trips):
    client = fleets.client("globex_admin")
    assert ids(get_trips(client)) == set()
    for path in (f"/api/v1/trips/{trips['business'].pk}/",
                 f"/api/v1/trips/{trips['business'].pk}/revisions/"):
        assert client.get(path).status_code == 404
    assert client.patch(f"/api/v1/trips/{trips['open'].pk}/",
                        {"category": "private"}).status_code == 404
    globex_key = client_for(api_key=fleets.globex_key)
    assert globex_key.get(f"/api/v1/trips/{trips['business'].pk}/").status_code == 404
    assert client.get("/api/v1/stops/", {"vehicle": fleets.van.pk}).json()["results"] == []


def test_filters(fleets, trips):
    client = fleets.client("admin")
    assert ids(get_trips(client, vehicle=fleets.car.pk)) == {trips["otto"].pk}
    assert ids(get_trips(client, category="business")) == {trips["business"].pk}
    # A redacted unclassified or private trip counts as private, as it shows.
    assert ids(get_trips(client, category="private")) == {trips["private"].pk,
                                                          trips["old"].pk}
    assert ids(get_trips(client, category="unclassified")) == {trips["open"].pk,
                                                               trips["otto"].pk}
    # The driver filter never matches a trip whose driver is hidden.
    assert ids(get_trips(client, driver=fleets.dana.pk)) == {
        trips["business"].pk, trips["open"].pk}
    start = trips["business"].start_time
    assert ids(get_trips(client, **{"from": z(start), "to": z(start + timedelta(hours=1))})
               ) == {trips["business"].pk}
    assert get_trips(client, category="nonsense").status_code == 400
    assert get_trips(client, vehicle="x").status_code == 400
    assert get_trips(client, **{"from": z(start), "to": z(start)}).status_code == 400


def test_a_window_does_not_tell_a_private_trips_time(fleets, trips):
    """Narrowing from/to around a private trip must not find its start: it is matched by
    its day, whichever way the window cuts that day."""
    client = fleets.client("admin")
    private = trips["private"]
    after = private.start_time + timedelta(minutes=1)
    before = private.start_time - timedelta(minutes=1)
    for window in ({"from": z(after)}, {"to": z(before)},
                   {"from": z(after), "to": z(after + timedelta(minutes=1))}):
        found = ids(get_trips(client, **window))
        assert private.pk in found, window
    # The driver sees hers by the minute.
    driver = fleets.client("driver")
    assert private.pk not in ids(get_trips(driver, **{"from": z(after)}))


# --------------------------------------------------------------------------- changing


def test_patch_within_the_window_writes_api_revisions(fleets, trips):
    client = fleets.client("driver")
    trip = trips["open"]
    response = client.patch(f"/api/v1/trips/{trip.pk}/", {
        "category": "business", "purpose": "Quarterly review", "partner": "Meyer KG",
        "destination": "Meyer KG, Potsdam"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["category"], body["purpose"], body["partner"]) == (
        "business", "Quarterly review", "Meyer KG")
    revisions = client.get(f"/api/v1/trips/{trip.pk}/revisions/").json()
    assert revisions[0]["field"] == "__created__"
    changed = {r["field"]: r for r in revisions[1:]}
    assert set(changed) == {"category", "purpose", "partner", "destination"}
    assert {r["interface"] for r in changed.values()} == {Interface.API}
    assert changed["partner"]["old"] == "" and changed["partner"]["new"] == "Meyer KG"
    assert changed["partner"]["actor"] == "dana"
    # A partial change keeps the other fields.
    response = client.patch(f"/api/v1/trips/{trip.pk}/", {"partner": "Meyer & Co KG"})
    assert response.status_code == 200
    assert response.json()["purpose"] == "Quarterly review"
    assert TripRevision.objects.filter(trip=trip).count() == len(revisions) + 1


def test_patch_after_the_window_is_a_clear_409(fleets, trips):
    client = fleets.client("driver")
    response = client.patch(f"/api/v1/trips/{trips['old'].pk}/", {
        "category": "business", "purpose": "Delivery", "partner": "Schulz GmbH",
        "destination": "Berlin"})
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert detail.startswith("The trip is locked: it could be changed for 7 days after it "
                             "ended, until ")
    assert Trip.objects.get(pk=trips["old"].pk).category == "private"


def test_patch_refusals(fleets, trips):
    driver = fleets.client("driver")
    response = driver.patch(f"/api/v1/trips/{trips['open'].pk}/", {"category": "business"})
    assert response.status_code == 400
    assert set(response.json()) == {"purpose", "partner", "destination"}
    assert driver.patch(f"/api/v1/trips/{trips['open'].pk}/",
                        {"category": "sideways"}).status_code == 400
    # Nobody else classifies a driver's trip: not the admin, not an API key.
    for who in ("admin", "dispatcher", "api_key"):
        response = fleets.client(who).patch(f"/api/v1/trips/{trips['open'].pk}/",
                                            {"category": "private"})
        assert response.status_code == 403, who
    assert Trip.objects.get(pk=trips["open"].pk).category == ""
    assert driver.put(f"/api/v1/trips/{trips['open'].pk}/", {}).status_code == 405
    assert driver.delete(f"/api/v1/trips/{trips['open'].pk}/").status_code == 405


# --------------------------------------------------------------------------- stops


def test_stops_between_trips_redacted_next_to_a_private_one(fleets, trips):
    window = {"vehicle": fleets.van.pk, "from": z(ago(days=11)), "to": z(ago(seconds=0))}
    stops = fleets.client("driver").get("/api/v1/stops/", window).json()["results"]
    assert [(s["previous_trip"], s["next_trip"]) for s in stops] == [
        (trips["old"].pk, trips["business"].pk),
        (trips["business"].pk, trips["private"].pk),
        (trips["private"].pk, trips["open"].pk),
        (trips["open"].pk, None),
    ]
    after_private = stops[2]
    assert after_private["address"] == SECRET and after_private["redacted"] is False
    assert after_private["duration_s"] == pytest.approx(
        (trips["open"].start_time - trips["private"].end_time).total_seconds())
    assert stops[-1]["ongoing"] is True and stops[-1]["end_time"] is None

    stops = fleets.client("dispatcher").get("/api/v1/stops/", window).json()["results"]
    before_private, after_private = stops[1], stops[2]
    assert before_private["address"] == "Schulz GmbH, Berlin"
    assert before_private["end_time"] is None and before_private["redacted"] is True
    assert after_private["address"] is None and after_private["start_time"] is None
    assert after_private["latitude"] is None and after_private["end_time"] is not None
    assert SECRET not in str(stops)
    # Without a vehicle: every vehicle's stops; the pool car's too.
    every = fleets.client("admin").get("/api/v1/stops/", {"from": window["from"]}).json()
    assert {s["vehicle"] for s in every["results"]} == {fleets.van.pk, fleets.car.pk}
    assert fleets.client("admin").get("/api/v1/stops/", {"from": "x"}).status_code == 400


# --------------------------------------------------------------------------- positions


@pytest.fixture
def tracked(fleets, trips):
    """Positions of Van 7 through its business and private trips."""
    Position.objects.filter(vehicle=fleets.van).delete()
    for name in ("business", "private"):
        trip = trips[name]
        add_positions(fleets.van_unit, trip.start_time, 12, step_s=100)  # 20 min
    return trips


def _fix_times(rows) -> set[str]:
    return {r["fix_time"] for r in rows}


@pytest.mark.parametrize("who", ["admin", "dispatcher", "api_key", "driver"])
def test_positions_leave_out_private_trips(fleets, tracked, who):
    client = fleets.client(who)
    window = {"from": z(ago(days=4)), "to": z(ago(seconds=0))}
    rows = client.get(f"/api/v1/vehicles/{fleets.van.pk}/positions/", window).json()["results"]
    private = tracked["private"]
    inside = [r for r in rows if z(private.start_time) <= r["fix_time"] <= z(private.end_time)]
    if who == "driver":
        assert len(rows) == 24 and len(inside) == 12  # her own
    else:
        assert len(rows) == 12 and inside == []
    for fmt in ("csv", "gpx"):
        text = client.get(f"/api/v1/vehicles/{fleets.van.pk}/positions/",
                          {**window, "format": fmt}).content.decode()
        if fmt == "csv":
            assert len(list(csv.DictReader(io.StringIO(text)))) == len(rows)
        else:
            assert text.count("<trkpt") == len(rows)


@pytest.mark.parametrize("who", ["admin", "api_key", "driver"])
def test_the_feed_leaves_out_private_trips(fleets, tracked, who, settings):
    settings.API_FEED_SETTLE_S = 0
    client = fleets.client(who)
    rows = client.get("/api/v1/positions/feed/").json()["results"]
    van = [r for r in rows if r["vehicle"] == fleets.van.pk]
    private = tracked["private"]
    inside = [r for r in van if z(private.start_time) <= r["fix_time"] <= z(private.end_time)]
    assert len(van) == (24 if who == "driver" else 12)
    assert bool(inside) is (who == "driver")


# --------------------------------------------------------------------------- schema


def test_trip_representation_matches_the_schema(fleets, trips):
    schema = APIClient().get("/api/v1/schema/?format=json").json()
    paths = schema["paths"]
    for path in ("/api/v1/trips/", "/api/v1/trips/{id}/", "/api/v1/trips/{id}/revisions/",
                 "/api/v1/stops/"):
        assert path in paths, path
    assert set(paths["/api/v1/trips/{id}/"]) >= {"get", "patch"}
    assert "409" in paths["/api/v1/trips/{id}/"]["patch"]["responses"]
    components = schema["components"]["schemas"]
    client = fleets.client("admin")
    trip = client.get(f"/api/v1/trips/{trips['business'].pk}/").json()
    assert set(trip) == set(components["Trip"]["properties"])
    revision = client.get(f"/api/v1/trips/{trips['business'].pk}/revisions/").json()[0]
    assert set(revision) == set(components["Revision"]["properties"])
    stop = client.get("/api/v1/stops/", {"from": z(ago(days=11))}).json()["results"][0]
    assert set(stop) == set(components["Stop"]["properties"])


def test_a_vehicle_with_a_logbook_is_not_deleted(fleets, trips):
    response = fleets.client("admin").delete(f"/api/v1/vehicles/{fleets.van.pk}/")
    assert response.status_code == 409
    assert "cannot be deleted" in response.json()["detail"]
    assert Trip.objects.filter(vehicle=fleets.van).count() == 4


def test_a_vehicle_on_a_private_trip_shows_no_last_position(fleets, trips):
    """Van 7's state (from the fixture) is its newest fix; put it inside the private trip."""
    from telematics.models import VehicleState

    private = trips["private"]
    VehicleState.objects.filter(vehicle=fleets.van).update(
        fix_time=private.start_time + timedelta(minutes=5))
    for who, hidden in (("admin", True), ("api_key", True), ("driver", False)):
        client = fleets.client(who)
        one = client.get(f"/api/v1/vehicles/{fleets.van.pk}/").json()
        listed = {v["id"]: v for v in client.get("/api/v1/vehicles/").json()["results"]}
        for vehicle in (one, listed[fleets.van.pk]):
            assert (vehicle["last_position"] is None) is hidden, who
            assert vehicle["odometer_km"] is not None
