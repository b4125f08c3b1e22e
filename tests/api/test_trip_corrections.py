"""Trip corrections in the API (issue 5): cancel, merge and split; nothing deleted.

``POST trips/{id}/cancel/``, ``POST trips/merge/`` and ``POST trips/{id}/split/`` answer
the resulting trip(s); the originals stay, with their status and links both ways.
Another organisation's trip is not found; dispatchers and API keys never correct;
someone else's private trip only its driver; a locked or corrected trip is a 409 with
the reason; bad input a 400 per field.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient

from fleet.models import Role
from logbook.models import Interface, Trip, TripRevision
from logbook.services import lock_due_trips, pauses_in, split_points, verify_chain
from telematics.models import Position
from tests.api.conftest import add_positions, client_for
from tests.logbook.factories import ago, make_trip
from tests.logbook.test_corrections_ui import make_trip_with_stop

pytestmark = pytest.mark.django_db
SECRET = "Secret Garden"


def z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def day(fleets, acme, make_user):
    """Dana's trips in Van 7 two days ago (window open), one of them with a delivery stop
    the parking rule missed, a private one, one past the window; Otto's in Van 7 later."""
    van, dana = fleets.van, fleets.dana
    start = ago(days=2).replace(hour=6, minute=0, second=0, microsecond=0)
    otto = make_user("otto", acme, Role.DRIVER)
    trips = {
        "old": make_trip(van, ago(days=12), driver=dana, suggested="business"),
        "first": make_trip(van, start, driver=dana, category="business", purpose="Delivery",
                           partner="Schulz GmbH", destination="Schulz GmbH, Berlin"),
        "second": make_trip(van, start + timedelta(hours=1), driver=dana,
                            category="business", purpose="Pick-up", partner="Meyer KG",
                            destination="Meyer KG, Potsdam"),
        "stop": make_trip_with_stop(van, start + timedelta(hours=2), driver=dana),
        "private": make_trip(van, start + timedelta(hours=8), driver=dana,
                             category="private", end_address=SECRET),
        "ottos": make_trip(van, start + timedelta(hours=10), driver=otto.driver,
                           suggested="business"),
        "car": make_trip(fleets.car, start + timedelta(hours=1, minutes=30), driver=dana,
                         suggested="business"),
    }
    return {**trips, "otto": otto}


def post(client: APIClient, path: str, body: dict | None = None):
    return client.post(f"/api/v1/trips/{path}", body or {}, format="json")


def status_of(trip: Trip) -> str:
    return Trip.objects.get(pk=trip.pk).status


# --------------------------------------------------------------------------- cancel


def test_the_driver_cancels_with_a_reason_and_the_trip_stays(fleets, day):
    client = fleets.client("driver")
    trip = day["first"]
    response = post(client, f"{trip.pk}/cancel/", {"reason": "Towed to the workshop"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["id"], body["status"], body["status_reason"]) == (
        trip.pk, "cancelled", "Towed to the workshop")
    assert body["replaced_by"] == [] and body["editable_until"] is None
    assert body["route"] and body["purpose"] == "Delivery"  # as it was
    listed = {t["id"]: t for t in client.get("/api/v1/trips/").json()["results"]}
    assert listed[trip.pk]["status"] == "cancelled"
    revisions = client.get(f"/api/v1/trips/{trip.pk}/revisions/").json()
    changed = {r["field"]: r for r in revisions[1:]}
    assert changed["status"]["new"] == "cancelled" and changed["status"]["actor"] == "dana"
    assert changed["status_reason"]["new"] == "Towed to the workshop"
    assert {r["interface"] for r in changed.values()} == {Interface.API}
    assert verify_chain(fleets.van.pk).ok
    again = post(client, f"{trip.pk}/cancel/", {"reason": "Twice"})
    assert again.status_code == 409
    assert again.json()["detail"] == ("The trip is cancelled already: it stays in the "
                                      "logbook as it is.")


def test_a_cancellation_needs_a_reason(fleets, day):
    client = fleets.client("driver")
    trip = day["first"]
    assert post(client, f"{trip.pk}/cancel/").json() == {"reason": ["This field is required."]}
    response = post(client, f"{trip.pk}/cancel/", {"reason": "   "})
    assert response.status_code == 400
    assert response.json() == {"reason": ["This field may not be blank."]}
    response = post(client, f"{trip.pk}/cancel/", {"reason": "x" * 301})
    assert response.status_code == 400 and list(response.json()) == ["reason"]
    assert status_of(trip) == "active"


# --------------------------------------------------------------------------- merge


def test_merging_consecutive_trips_keeps_the_originals(fleets, day):
    client = fleets.client("driver")
    first, second = day["first"], day["second"]
    response = post(client, "merge/", {"trips": [second.pk, first.pk],
                                       "reason": "Waited at the barrier"})
    assert response.status_code == 201, response.content
    merged = response.json()
    assert merged["status"] == "active" and merged["origin"] == "merge"
    assert sorted(merged["corrects"]) == sorted([first.pk, second.pk])
    assert (merged["start_time"], merged["end_time"]) == (z(first.start_time),
                                                          z(second.end_time))
    assert merged["start_odometer_km"] == round(first.start_odometer_km, 1)
    assert merged["end_odometer_km"] == round(second.end_odometer_km, 1)
    assert merged["distance_km"] == 20.0
    # Both business, but different purposes: it keeps the first trip's classification.
    assert (merged["category"], merged["purpose"], merged["destination"]) == (
        "business", "Delivery", "Meyer KG, Potsdam")
    assert len(merged["route"]) == len(first.route) + len(second.route)
    for original in (first, second):
        shown = client.get(f"/api/v1/trips/{original.pk}/").json()
        assert (shown["status"], shown["status_reason"]) == ("merged", "Waited at the barrier")
        assert shown["replaced_by"] == [merged["id"]]
    assert verify_chain(fleets.van.pk).ok


@pytest.mark.parametrize(("names", "message"), [
    (["first"], "Ensure this field has at least 2 elements."),
    (["first", "first"], "Name each trip once."),
    (["first", "car"], "The trips belong to different vehicles: only one vehicle's trips are "
                       "merged."),
    (["first", "stop"], "Only consecutive trips are merged: another trip lies between the "
                        "trip of "),
])
def test_merge_refusals_say_what_is_wrong_with_the_trips(fleets, day, names, message):
    client = fleets.client("driver")
    response = post(client, "merge/", {"trips": [day[n].pk for n in names]})
    assert response.status_code == 400, response.content
    (text,) = response.json()["trips"]
    assert text.startswith(message), text
    assert Trip.objects.filter(status="merged").count() == 0


def test_trips_of_two_drivers_are_not_merged(fleets, day):
    """Dana's business trip right before Otto's: consecutive, but each driver's own."""
    danas = make_trip(fleets.van, day["ottos"].start_time - timedelta(minutes=40),
                      driver=fleets.dana, category="business", purpose="Delivery",
                      partner="Schulz GmbH", destination="Berlin",
                      odometer_km=day["ottos"].start_odometer_km - 10.0)
    response = post(fleets.client("admin"), "merge/", {"trips": [danas.pk, day["ottos"].pk]})
    assert response.status_code == 400
    assert response.json() == {"trips": [
        "The trips have different drivers: each driver's trips stay their own."]}


def test_trips_around_an_odometer_gap_are_not_merged(fleets, day):
    ottos = day["ottos"]
    later = make_trip(fleets.van, ottos.end_time + timedelta(hours=1), driver=ottos.driver,
                      suggested="business", odometer_km=ottos.end_odometer_km + 12.0)
    response = post(fleets.client("admin"), "merge/", {"trips": [ottos.pk, later.pk]})
    assert response.status_code == 400
    (text,) = response.json()["trips"]
    assert text.startswith("The odometer jumps by 12.0 km between the trip ending ")
    assert text.endswith(": trips around an odometer gap are not merged.")
    otto = client_for(day["otto"])  # the driver's own trips, the same refusal
    assert post(otto, "merge/", {"trips": [ottos.pk, later.pk]}).json() == response.json()


def test_the_private_trip_of_a_driver_is_not_the_fleet_managers_to_merge(fleets, day):
    response = post(fleets.client("admin"), "merge/",
                    {"trips": [day["private"].pk, day["ottos"].pk]})
    assert response.status_code == 403
    assert response.json()["detail"] == "A private trip: only its driver corrects it."
    assert status_of(day["private"]) == status_of(day["ottos"]) == "active"


def test_merge_finds_only_your_own_trips(fleets, day):
    driver = fleets.client("driver")
    response = post(driver, "merge/", {"trips": [day["private"].pk, day["ottos"].pk]})
    assert response.status_code == 404  # Otto's trip does not exist for Dana
    assert post(driver, "merge/", {"trips": [day["first"].pk, 2**62]}).status_code == 404
    globex = fleets.client("globex_admin")
    response = post(globex, "merge/", {"trips": [day["first"].pk, day["second"].pk]})
    assert response.status_code == 404
    assert Trip.objects.filter(status="merged").count() == 0


# --------------------------------------------------------------------------- split


def test_the_trip_shows_its_pauses_and_splits_at_one(fleets, day):
    client = fleets.client("driver")
    trip = day["stop"]
    shown = client.get(f"/api/v1/trips/{trip.pk}/").json()
    (pause,) = shown["pauses"]
    arrival = trip.start_time + timedelta(minutes=10)
    assert (pause["point"], pause["resume_point"]) == (5, 11)
    assert (pause["arrival"], pause["departure"], pause["duration_s"]) == (
        z(arrival), z(arrival + timedelta(minutes=6)), 360.0)
    assert client.get("/api/v1/trips/").json()["results"][0]["pauses"] is None  # lists: no
    response = post(client, f"{trip.pk}/split/", {"at": pause["point"],
                                                  "reason": "Delivery at Meyer KG"})
    assert response.status_code == 201, response.content
    first, second = response.json()
    assert (first["start_time"], first["end_time"]) == (z(trip.start_time), z(arrival))
    assert (second["start_time"], second["end_time"]) == (
        z(arrival + timedelta(minutes=6)), z(trip.end_time))
    assert first["end_odometer_km"] == second["start_odometer_km"]
    assert first["distance_m"] + second["distance_m"] == pytest.approx(9000.0, abs=0.2)
    assert first["corrects"] == second["corrects"] == [trip.pk]
    assert first["origin"] == second["origin"] == "split"
    original = client.get(f"/api/v1/trips/{trip.pk}/").json()
    assert (original["status"], original["status_reason"]) == ("split", "Delivery at Meyer KG")
    assert original["replaced_by"] == [first["id"], second["id"]]
    assert verify_chain(fleets.van.pk).ok


def test_split_at_a_time_within_a_pause_cuts_at_the_pause(fleets, day):
    trip = day["stop"]
    at = trip.start_time + timedelta(minutes=13)  # standing, 3 minutes after arrival
    response = post(fleets.client("driver"), f"{trip.pk}/split/", {"at": z(at)})
    assert response.status_code == 201
    first, second = response.json()
    assert first["end_time"] == z(trip.start_time + timedelta(minutes=10))
    assert second["start_time"] == z(trip.start_time + timedelta(minutes=16))
    assert Trip.objects.get(pk=trip.pk).status_reason == "A destination within the trip."


def test_split_at_a_time_while_driving(fleets, day):
    trip = day["first"]  # route points every 3 min 20 s
    response = post(fleets.client("driver"), f"{trip.pk}/split/",
                    {"at": z(trip.start_time + timedelta(minutes=7))})
    assert response.status_code == 201
    first, second = response.json()
    cut = z(trip.start_time + timedelta(minutes=6, seconds=40))
    assert first["end_time"] == second["start_time"] == cut
    assert (first["category"], second["purpose"]) == ("business", "Delivery")


@pytest.mark.parametrize(("at", "message"), [
    ("before", "Choose a time between the trip's start ("),
    ("after", "Choose a time between the trip's start ("),
    ("first-minute", "No position was recorded between the trip's start ("),
    (0, "Choose a point of the trip's route from 1 to 5 (0 is its start, the last one its "
        "end)."),
    (6, "Choose a point of the trip's route from 1 to 5"),
    (2**63 - 1, "Choose a point of the trip's route from 1 to 5"),
    ("yesterday", "Give an RFC 3339 time within the trip"),
    (True, "Give an RFC 3339 time within the trip"),
    (2.5, "Give an RFC 3339 time within the trip"),
    (-1, "Give an RFC 3339 time within the trip"),
    ("2026-13-45T99:00:00Z", "Give an RFC 3339 time within the trip"),
])
def test_split_refusals_name_the_field(fleets, day, at, message):
    trip = day["first"]
    at = {"before": z(trip.start_time - timedelta(minutes=5)),
          "after": z(trip.end_time + timedelta(minutes=5)),
          "first-minute": z(trip.start_time + timedelta(minutes=1))}.get(at, at)
    response = post(fleets.client("driver"), f"{trip.pk}/split/", {"at": at})
    assert response.status_code == 400, response.content
    (text,) = response.json()["at"]
    assert text.startswith(message), text
    assert status_of(trip) == "active"


def test_split_needs_a_point(fleets, day):
    response = post(fleets.client("driver"), f"{day['first'].pk}/split/", {"reason": "x"})
    assert response.status_code == 400
    assert response.json() == {"at": ["This field is required."]}


def _route() -> list[list]:
    """Parked at the start, a light, three minutes at a customer, parked at the end."""
    t0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

    def at(minutes: float, north_m: float) -> list:
        return [(t0 + timedelta(minutes=minutes)).isoformat(), 52.5 + north_m / 111_250, 13.4]

    return [at(0, 0), at(1, 5), at(2, 3),  # the parking it left
            at(4, 900), at(6, 1800), at(6.5, 1805),  # 30 s at a light: no destination
            at(8, 2700), at(9, 2702), at(10, 2699), at(11, 2703),  # the customer
            at(13, 3600), at(14, 3601), at(15, 3600)]  # the parking it reached


def test_pauses_are_standstills_between_the_parkings():
    pauses = pauses_in(_route(), 100.0)
    assert [(p.arrival, p.departure, p.duration_s) for p in pauses] == [(6, 9, 180.0)]
    assert pauses_in(_route(), 100.0, min_s=20.0)[0].arrival == 4  # the light, if asked
    assert pauses_in(_route()[:2], 100.0) == []


def test_split_points_cut_at_a_pause_or_a_single_point():
    route = _route()
    trip = Trip(route=route, start_time=datetime.fromisoformat(route[0][0]),
                end_time=datetime.fromisoformat(route[-1][0]))
    customer = datetime.fromisoformat(route[7][0]) + timedelta(seconds=20)
    assert split_points(trip, customer, 100.0) == (6, 9)
    assert split_points(trip, 8, 100.0) == (6, 9)
    assert split_points(trip, 4, 100.0) == (4, 4)
    assert split_points(trip, datetime.fromisoformat(route[4][0]) + timedelta(seconds=10),
                        100.0) == (4, 4)


# --------------------------------------------------------------------------- who and when


def test_dispatchers_and_api_keys_never_correct(fleets, day):
    trip = day["first"]
    for who, text in (("dispatcher", "Dispatchers do not correct the logbook"),
                      ("api_key", "An API key does not correct the logbook")):
        client = fleets.client(who)
        for path, body in ((f"{trip.pk}/cancel/", {"reason": "x"}),
                           (f"{trip.pk}/split/", {"at": 3}),
                           ("merge/", {"trips": [trip.pk, day["second"].pk]})):
            response = post(client, path, body)
            assert response.status_code == 403, (who, path)
            assert response.json()["detail"].startswith(text)
    assert status_of(trip) == "active"


def test_the_fleet_manager_corrects_but_not_a_private_trip(fleets, day):
    admin = fleets.client("admin")
    response = post(admin, f"{day['second'].pk}/cancel/", {"reason": "Test drive"})
    assert response.status_code == 200
    assert TripRevision.objects.get(trip=day["second"], field="status").actor_name == "alice"
    for path, body in ((f"{day['private'].pk}/cancel/", {"reason": "x"}),
                       (f"{day['private'].pk}/split/", {"at": 3})):
        response = post(admin, path, body)
        assert response.status_code == 403
        assert response.json() == {"detail": "A private trip: only its driver corrects it."}
    assert status_of(day["private"]) == "active"


def test_another_drivers_or_organisations_trip_is_not_found(fleets, day):
    otto = client_for(day["otto"])
    assert post(otto, f"{day['first'].pk}/cancel/", {"reason": "x"}).status_code == 404
    globex = fleets.client("globex_admin")
    for path in ("cancel/", "split/"):
        assert post(globex, f"{day['first'].pk}/{path}", {"reason": "x", "at": 3}
                    ).status_code == 404
    assert status_of(day["first"]) == "active"


def test_a_locked_trip_is_a_clear_409(fleets, day):
    client = fleets.client("driver")
    old = day["old"]
    for path, body in ((f"{old.pk}/cancel/", {"reason": "x"}), (f"{old.pk}/split/", {"at": 3})):
        response = post(client, path, body)
        assert response.status_code == 409
        assert response.json()["detail"].startswith(
            "The trip is locked: it could be corrected for 7 days after it ended, until ")
    first_after = make_trip(fleets.van, old.end_time + timedelta(hours=1), driver=fleets.dana,
                            suggested="business", odometer_km=old.end_odometer_km)
    lock_due_trips()
    response = post(client, "merge/", {"trips": [old.pk, first_after.pk]})
    assert response.status_code == 409
    assert response.json()["detail"].startswith(f"Trip {old.pk}: The trip is locked")


# --------------------------------------------------------------------------- privacy


def test_merging_with_a_private_trip_keeps_the_route_hidden(fleets, day):
    """Dana merges her private evening trip with the business trip before it: until she
    classifies the result, the fleet sees it like a private trip."""
    before = make_trip(fleets.van, day["private"].start_time - timedelta(minutes=40),
                       driver=fleets.dana, category="business", purpose="Delivery",
                       partner="Schulz GmbH", destination="Berlin",
                       odometer_km=day["private"].start_odometer_km - 10.0)
    response = post(fleets.client("driver"), "merge/",
                    {"trips": [before.pk, day["private"].pk]})
    assert response.status_code == 201
    merged = response.json()
    assert merged["category"] is None and merged["end_address"] == SECRET  # hers to see
    for who in ("admin", "dispatcher", "api_key"):
        shown = fleets.client(who).get(f"/api/v1/trips/{merged['id']}/").json()
        assert shown["redacted"] is True and shown["route"] is None, who
        assert shown["pauses"] is None and shown["start_time"] is None
        # The business original names its replacement, which shows nothing more.
        original = fleets.client(who).get(f"/api/v1/trips/{before.pk}/").json()
        assert original["replaced_by"] == [merged["id"]]
        assert SECRET not in str(original) + str(shown)


def test_a_cancelled_private_trip_keeps_its_positions_hidden(fleets, day):
    private = day["private"]
    Position.objects.filter(vehicle=fleets.van).delete()
    add_positions(fleets.van_unit, private.start_time, 12, step_s=100)
    response = post(fleets.client("driver"), f"{private.pk}/cancel/",
                    {"reason": "Drove my neighbour to hospital in the wrong car"})
    assert response.status_code == 200
    window = {"from": z(private.start_time - timedelta(hours=1)),
              "to": z(private.end_time + timedelta(hours=1))}
    for who, count in (("dispatcher", 0), ("admin", 0), ("driver", 12)):
        client = fleets.client(who)
        rows = client.get(f"/api/v1/vehicles/{fleets.van.pk}/positions/", window).json()
        assert len(rows["results"]) == count, who
        shown = client.get(f"/api/v1/trips/{private.pk}/").json()
        assert shown["status"] == "cancelled"
        assert (shown["status_reason"] is None) is (who != "driver")
        revisions = str(client.get(f"/api/v1/trips/{private.pk}/revisions/").json())
        assert ("neighbour" in revisions) is (who == "driver")


# --------------------------------------------------------------------------- schema


def test_the_schema_documents_the_corrections(fleets, day):
    schema = APIClient().get("/api/v1/schema/?format=json").json()
    paths = schema["paths"]
    for path, code in (("/api/v1/trips/{id}/cancel/", "200"), ("/api/v1/trips/merge/", "201"),
                       ("/api/v1/trips/{id}/split/", "201")):
        operation = paths[path]["post"]
        assert {code, "400", "403", "404", "409"} <= set(operation["responses"]), path
        assert operation["description"]
    components = schema["components"]["schemas"]
    assert components["CancelRequest"]["required"] == ["reason"]
    assert components["MergeRequest"]["properties"]["trips"]["minItems"] == 2
    at = components["SplitRequest"]["properties"]["at"]
    assert [choice["type"] for choice in at["oneOf"]] == ["string", "integer"]
    split = paths["/api/v1/trips/{id}/split/"]["post"]["responses"]["201"]
    assert split["content"]["application/json"]["schema"]["type"] == "array"
    # What the API answers matches what the schema says it answers.
    shown = fleets.client("driver").get(f"/api/v1/trips/{day['stop'].pk}/").json()
    assert set(shown["pauses"][0]) == set(components["Pause"]["properties"])
    body = post(fleets.client("driver"), f"{day['stop'].pk}/split/", {"at": 5}).json()
    assert set(body[0]) == set(components["Trip"]["properties"])
