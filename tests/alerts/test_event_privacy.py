"""Events during a private trip say nothing of where the vehicle was, on every path:
the events API, the events page, the map's live feed, alert e-mails and webhooks.

One day of Van 1 (``world``: Dana drives it; Adam manages, Dora dispatches Acme):

    5:00 business trip (Dana)      an overspeed: shown to everyone
    4:00 private trip (Dana)       an overspeed "in School", entering "Home": hidden from
                                   Adam and Dora, Dana sees her own trip whole
    3:20 parked after it           idling at the private destination: hidden as well
    3:00 business trip (Dana)      (ends the parking)
    2:00 private trip (Pat)        "trip ended" with its addresses: hidden from Dana too
    1:00 parked after it           idling: hidden from everyone but Pat
    0:20 driving again             (a trip in progress, not stored yet): shown
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from fleet.consumers import LiveConsumer
from fleet.live import organisation_group
from fleet.models import Role, WebhookDelivery
from fleet.services import create_user
from fleet.webhooks import create_webhook, fan_out
from logbook.event_privacy import (
    HIDDEN_FLAG,
    EventPrivacy,
    PrivateSpan,
    event_privacy_for,
    redacted,
    spans_of,
    without_location,
)
from logbook.models import Category, VehicleLogbook, VehicleTripState
from telematics.alerts.presentation import event_payload
from telematics.alerts.worker import AlertWorker
from telematics.models import AlertRule, Event
from tests.api.conftest import client_for
from tests.dashboard.conftest import PASSWORD, close_thread_connection, in_thread
from tests.logbook.factories import ago, make_trip

PLACE_WORDS = ("School", "Home", "Secret Garden", "Lindenweg", "52.61", "13.45")


def ev(world, vehicle, kind, when, **attributes) -> Event:
    return Event.objects.create(organisation=world["acme"], vehicle=world[vehicle], type=kind,
                                time=when, attributes=attributes)


def make_day(world) -> dict:
    van = world["van1"]
    dana = world["dana"].driver
    pat_user, _ = create_user("pat", world["acme"], Role.DRIVER, password=PASSWORD)
    pat = pat_user.driver
    business = make_trip(van, ago(hours=5), minutes=20, driver=dana, category="business",
                         purpose="Delivery", partner="Schulz", destination="Berlin")
    own_private = make_trip(van, ago(hours=4), minutes=30, driver=dana, category="private",
                            end_address="Lindenweg 3")
    make_trip(van, ago(hours=3), minutes=20, driver=dana, category="business",
              purpose="Delivery", partner="Schulz", destination="Berlin")
    pats_private = make_trip(van, ago(hours=2), minutes=30, driver=pat, category="private",
                             start_address="Secret Garden", end_address="Home sweet home")
    VehicleTripState.objects.update_or_create(vehicle=van,
                                              defaults={"driving_since": ago(minutes=20)})
    spot = {"latitude": 52.6123, "longitude": 13.4567}
    events = {
        "business": ev(world, "van1", "overspeed", business.start_time + timedelta(minutes=5),
                       max_speed_kmh=97, limit_kmh=80, geofence_name="Ring", **spot),
        "own_speed": ev(world, "van1", "overspeed",
                        own_private.start_time + timedelta(minutes=10), max_speed_kmh=61,
                        limit_kmh=30, geofence=7, geofence_name="School", **spot),
        "own_fence": ev(world, "van1", "geofence_enter",
                        own_private.start_time + timedelta(minutes=12), geofence=8,
                        geofence_name="Home", **spot),
        "own_parked": ev(world, "van1", "idle", own_private.end_time + timedelta(minutes=10),
                         minutes=12, **spot),
        "pats_end": ev(world, "van1", "trip_ended", pats_private.end_time,
                       trip_id=pats_private.pk, start_address="Secret Garden", driver_name="Pat",
                       end_address="Home sweet home", end_latitude=52.6123,
                       end_longitude=13.4567, distance_km=9.9,
                       stops=[{"address": "Secret Garden", "lat": 52.61, "lon": 13.45}]),
        "pats_parked": ev(world, "van1", "idle", ago(hours=1), minutes=15, **spot),
        "late_note": ev(world, "van1", "trip_classified", ago(minutes=5),
                        trip_id=str(pats_private.pk), address="Home sweet home"),
        "driving": ev(world, "van1", "overspeed", ago(minutes=10), max_speed_kmh=88,
                      limit_kmh=50, **spot),
        "van2": ev(world, "van2", "idle", ago(hours=2, minutes=10), minutes=9, **spot),
    }
    return {"events": events, "pat": pat_user, "own": own_private, "pats": pats_private}


PRIVATE_FOR_MANAGERS = {"own_speed", "own_parked", "pats_end", "pats_parked", "late_note"}
WITHHELD_FOR_MANAGERS = {"own_fence"}
PRIVATE_FOR_DANA = {"pats_end", "pats_parked", "late_note"}


def assert_no_place(attributes: dict) -> None:
    text = repr(attributes)
    for word in PLACE_WORDS:
        assert word not in text, (word, attributes)
    assert attributes[HIDDEN_FLAG] is True


# --- pure ---------------------------------------------------------------------------


def test_without_location_strips_every_kind_of_place_nested_too():
    attributes = {
        "latitude": 1, "lon": 2, "end_address": "x", "start_latitude": 3, "geofence": 4,
        "driver_name": "Pat", "purpose": "Visit",
        "geofence_name": "Home", "speed_kmh": 50, "trip_id": 9, "Coordinates": [1, 2],
        "stops": [{"address": "a", "lat": 1, "minutes": 3}], "nested": {"position": 1, "n": 2},
    }
    assert without_location(attributes) == {
        "speed_kmh": 50, "trip_id": 9, "stops": [{"minutes": 3}], "nested": {"n": 2}}
    assert redacted("overspeed", attributes, False) is attributes
    assert redacted("overspeed", {"latitude": 1, "limit_kmh": 3}, True) == {
        "limit_kmh": 3, HIDDEN_FLAG: True}
    for kind in ("geofence_enter", "geofence_exit", "job_arrived", "job_departed"):
        assert redacted(kind, {"geofence_name": "Home"}, True) is None


def test_a_span_covers_the_trip_and_the_parking_after_it():
    t = datetime(2026, 3, 2, 8, tzinfo=UTC)
    m = timedelta(minutes=1)

    class Trip:
        def __init__(self, pk, start, end):
            self.pk, self.start_time, self.end_time = pk, start, end

    trips = [Trip(1, t, t + 30 * m), Trip(2, t + 60 * m, t + 90 * m),
             Trip(3, t + 120 * m, t + 150 * m)]
    spans = spans_of(trips, {1, 3}, driving_since=t + 200 * m)
    assert spans == [PrivateSpan(t, t + 30 * m, t + 60 * m, 1),
                     PrivateSpan(t + 120 * m, t + 150 * m, t + 200 * m, 3)]
    privacy = EventPrivacy(spans={5: spans})
    hidden = [minute for minute in (-1, 0, 30, 59, 60, 119, 120, 150, 199, 200, 300)
              if privacy.hides(5, t + minute * m, {})]
    assert hidden == [0, 30, 59, 120, 150, 199]
    assert not privacy.hides(6, t + 10 * m, {})  # another vehicle
    # Not driving again yet: the parking goes on.
    assert spans_of(trips[2:], {3}, driving_since=None)[0].until is None
    # A "driving since" from before the trip's end is an old one: ignored.
    assert spans_of(trips[2:], {3}, driving_since=t)[0].until is None
    assert EventPrivacy(trip_ids=frozenset({3})).hides(None, t, {"trip_id": "3"})
    assert not EventPrivacy(trip_ids=frozenset({3})).hides(None, t, {"trip_id": True})


def test_the_selector_reads_in_a_few_queries_whatever_the_number_of_events(
        world, django_assert_max_num_queries):
    day = make_day(world)
    rows = [(e.vehicle_id, e.time, e.attributes) for e in day["events"].values()] * 50
    with django_assert_max_num_queries(5):
        privacy = event_privacy_for(world["adam"], rows)
    assert privacy.trip_ids == {day["own"].pk, day["pats"].pk}


# --- the API ----------------------------------------------------------------------------


def api_events(user) -> dict[int, dict]:
    response = client_for(user).get("/api/v1/events/", {"from": (timezone.now() - timedelta(
        hours=6)).isoformat(), "page_size": 100})
    assert response.status_code == 200, response.content
    return {e["id"]: e for e in response.json()["results"]}


@pytest.mark.parametrize("who", ["adam", "dora"])
def test_managers_and_dispatchers_get_no_place_of_a_private_trip_from_the_api(world, who):
    day = make_day(world)
    events = day["events"]
    shown = api_events(world[who])
    names = {events_name: e.pk for events_name, e in events.items()}
    assert set(shown) == {pk for name, pk in names.items() if name not in WITHHELD_FOR_MANAGERS}
    for name, pk in names.items():
        if name in PRIVATE_FOR_MANAGERS:
            assert_no_place(shown[pk]["attributes"])
            assert "School" not in shown[pk]["summary"]
        elif name not in WITHHELD_FOR_MANAGERS:
            assert shown[pk]["attributes"] == events[name].attributes
    assert shown[names["own_speed"]]["summary"] == "Van 1 at 61 km/h (limit 30 km/h)"
    assert shown[names["pats_end"]]["attributes"]["distance_km"] == 9.9
    assert "driver_name" not in shown[names["pats_end"]]["attributes"]  # who drove: hidden
    client = client_for(world[who])
    assert client.get(f"/api/v1/events/{names['own_fence']}/").status_code == 404
    one = client.get(f"/api/v1/events/{names['own_speed']}/").json()
    assert_no_place(one["attributes"])


def test_the_driver_sees_her_own_private_trip_whole_but_not_anothers(world):
    day = make_day(world)
    events = day["events"]
    shown = api_events(world["dana"])
    assert events["own_fence"].pk in shown
    for name, event in events.items():
        if name in PRIVATE_FOR_DANA:
            assert_no_place(shown[event.pk]["attributes"])
        elif name != "van2":  # not her vehicle
            assert shown[event.pk]["attributes"] == event.attributes, name
    assert "School" in shown[events["own_speed"].pk]["summary"]
    own_fence = client_for(world["dana"]).get(f"/api/v1/events/{events['own_fence'].pk}/")
    assert own_fence.json()["summary"] == "Van 1 entered Home"


def test_a_vehicle_whose_logbook_is_private_never_shows_event_places(world):
    VehicleLogbook.objects.create(vehicle=world["van2"], default_category=Category.PRIVATE)
    idle = ev(world, "van2", "idle", ago(minutes=3), minutes=4, latitude=52.61,
              longitude=13.45)
    assert_no_place(api_events(world["adam"])[idle.pk]["attributes"])


def test_an_api_key_sees_what_a_manager_sees(world):
    from fleet.api.services import create_api_key

    day = make_day(world)
    _, key = create_api_key(world["acme"], "ERP")
    response = client_for(api_key=key).get("/api/v1/events/", {"page_size": 100, "from": (
        timezone.now() - timedelta(hours=6)).isoformat()})
    shown = {e["id"]: e for e in response.json()["results"]}
    assert day["events"]["own_fence"].pk not in shown
    assert_no_place(shown[day["events"]["own_speed"].pk]["attributes"])


# --- the events page ----------------------------------------------------------------------


def test_the_events_page_hides_the_places_of_private_trips(client, world):
    make_day(world)
    assert client.login(username="adam", password=PASSWORD)
    page = client.get("/events/").content.decode()
    assert "Van 1 at 97 km/h in Ring" in page  # the business trip, whole
    assert "Van 1 at 61 km/h (limit 30 km/h)" in page
    assert "School" not in page and "entered Home" not in page
    assert page.count("place hidden: private trip") == len(PRIVATE_FOR_MANAGERS)
    client.logout()
    assert client.login(username="dana", password=PASSWORD)
    page = client.get("/events/").content.decode()
    assert "Van 1 at 61 km/h in School" in page and "Van 1 entered Home" in page
    assert page.count("place hidden: private trip") == len(PRIVATE_FOR_DANA)


# --- the live feed ----------------------------------------------------------------------


async def connect_as(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_json_from(timeout=5))["type"] == "snapshot"
    return communicator


@pytest.mark.django_db(transaction=True)
async def test_the_live_feed_hides_private_places_from_all_but_the_driver(world):
    try:
        day = await in_thread(make_day, world)
        events = day["events"]
        payloads = await in_thread(lambda: [event_payload(Event.objects.select_related(
            "vehicle").get(pk=e.pk)) for e in events.values()])
        adam, dana = await connect_as(world["adam"]), await connect_as(world["dana"])
        await get_channel_layer().group_send(organisation_group(world["acme"].pk),
                                             {"type": "events.new", "events": payloads})
        managers = {e["id"]: e for e in (await adam.receive_json_from(timeout=5))["events"]}
        assert events["own_fence"].pk not in managers
        for name in PRIVATE_FOR_MANAGERS:
            assert_no_place(managers[events[name].pk]["attributes"])
        assert managers[events["own_speed"].pk]["summary"] == "Van 1 at 61 km/h (limit 30 km/h)"
        assert managers[events["driving"].pk]["attributes"]["latitude"] == 52.6123
        drivers = {e["id"]: e for e in (await dana.receive_json_from(timeout=5))["events"]}
        assert drivers[events["own_fence"].pk]["summary"] == "Van 1 entered Home"
        assert drivers[events["own_speed"].pk]["attributes"]["geofence_name"] == "School"
        assert_no_place(drivers[events["pats_end"].pk]["attributes"])
        for communicator in (adam, dana):
            await communicator.disconnect()
    finally:
        await close_thread_connection()


# --- e-mail and webhooks ------------------------------------------------------------------


def test_alert_emails_carry_no_place_of_a_private_trip(world, mailoutbox):
    AlertRule.objects.create(organisation=world["acme"], name="Everything", event_types=[
        "overspeed", "idle", "geofence_enter", "trip_ended"], overspeed_kmh=30, idle_minutes=5,
        recipients=["boss@example.com"])
    make_day(world)
    AlertWorker().dispatch()
    assert len(mailoutbox) == 1
    body = mailoutbox[0].body
    assert "Van 1 at 97 km/h in Ring" in body and "Van 1 at 88 km/h" in body
    assert "Van 1 at 61 km/h (limit 30 km/h)" in body  # the private trip: no "in School"
    for word in PLACE_WORDS:
        assert word not in body and word not in mailoutbox[0].subject
    assert "entered" not in body  # entering a geofence would tell where


def test_webhooks_get_no_place_of_a_private_trip(world, settings):
    from telematics.services import register_unit
    from tests.api.conftest import add_positions

    hook, _ = create_webhook(world["acme"], url="https://erp.example.com/hook",
                             event_types=["overspeed", "geofence_enter", "trip_ended",
                                          "idle", "position"])
    settings.API_FEED_SETTLE_S = 0
    day = make_day(world)
    unit = register_unit("356307042441013", "teltonika", world["acme"],
                         vehicle_name=world["van1"].name)
    assert unit.vehicle_id == world["van1"].pk
    during_pats = add_positions(unit, day["pats"].start_time + timedelta(minutes=1), 3,
                                server_time=timezone.now())
    during_business = add_positions(unit, ago(hours=4, minutes=50), 2,
                                    server_time=timezone.now())
    fan_out(now=timezone.now() + timedelta(minutes=1))
    deliveries = list(WebhookDelivery.objects.filter(webhook=hook))
    by_event = {d.event_id: d.payload["event"] for d in deliveries if d.event_id}
    events = day["events"]
    assert events["own_fence"].pk not in by_event
    for name in PRIVATE_FOR_MANAGERS - {"late_note"}:  # trip_classified: not subscribed
        assert_no_place(by_event[events[name].pk]["attributes"])
    assert by_event[events["business"].pk]["attributes"]["geofence_name"] == "Ring"
    sent = [p["id"] for d in deliveries if d.event_type == "position"
            for p in d.payload["positions"]]
    assert sent == [p.pk for p in during_business]
    assert not {p.pk for p in during_pats} & set(sent)
    # Nothing is sent twice or later: the cursor moved past the private positions too.
    assert fan_out(now=timezone.now() + timedelta(minutes=2)) == 0

