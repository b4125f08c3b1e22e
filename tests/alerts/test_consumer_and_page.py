"""Events reach the browsers of the organisation over /ws/live/, and the events page
lists them with filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from fleet.consumers import LiveConsumer
from fleet.live import organisation_group
from telematics.alerts.presentation import event_payload
from telematics.models import Event
from tests.dashboard.conftest import PASSWORD, close_thread_connection, in_thread


async def connect_as(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    snapshot = await communicator.receive_json_from(timeout=5)
    assert snapshot["type"] == "snapshot"
    return communicator


def payloads(world) -> list[dict]:
    now = datetime.now(UTC)
    events = [
        Event.objects.create(organisation=world["acme"], vehicle=world["van1"],
                             type="geofence_enter", time=now,
                             attributes={"geofence": 1, "geofence_name": "Depot"}),
        Event.objects.create(organisation=world["acme"], vehicle=world["van2"],
                             type="overspeed", time=now + timedelta(seconds=1),
                             attributes={"max_speed_kmh": 97, "limit_kmh": 80}),
    ]
    return [event_payload(e) for e in events]


@pytest.mark.django_db(transaction=True)
async def test_events_are_forwarded_to_the_organisation_and_drivers_get_their_own(world):
    try:
        events = await in_thread(payloads, world)
        dora = await connect_as(world["dora"])  # dispatcher of Acme
        dana = await connect_as(world["dana"])  # drives Van 1 only
        gus = await connect_as(world["gus"])  # Globex
        await get_channel_layer().group_send(organisation_group(world["acme"].pk),
                                             {"type": "events.new", "events": events})
        message = await dora.receive_json_from(timeout=5)
        assert message == {"type": "events", "events": events}
        assert message["events"][0]["summary"] == "Van 1 entered Depot"
        assert message["events"][1]["summary"] == "Van 2 at 97 km/h (limit 80 km/h)"
        mine = await dana.receive_json_from(timeout=5)
        assert [e["vehicle"] for e in mine["events"]] == [world["van1"].pk]
        assert await gus.receive_nothing(timeout=0.3)
        for communicator in (dora, dana, gus):
            await communicator.disconnect()
    finally:
        await close_thread_connection()


def test_events_page_lists_and_filters(client, world):
    now = datetime.now(UTC)
    Event.objects.create(organisation=world["acme"], vehicle=world["van1"],
                         type="geofence_enter", time=now - timedelta(hours=1),
                         attributes={"geofence_name": "Depot"})
    Event.objects.create(organisation=world["acme"], vehicle=world["van2"], type="idle",
                         time=now - timedelta(hours=2), attributes={"minutes": 12})
    Event.objects.create(organisation=world["acme"], vehicle=world["van2"], type="offline",
                         time=now - timedelta(days=20), attributes={"minutes": 30})
    Event.objects.create(organisation=world["globex"], vehicle=world["truck"],
                         type="geofence_enter", time=now, attributes={"geofence_name": "Wien"})
    assert client.login(username="dora", password=PASSWORD)
    page = client.get("/events/").content.decode()
    assert "Van 1 entered Depot" in page and "Van 2 idling for 12 min" in page
    assert "Wien" not in page and "Truck 9" not in page
    assert "silent" not in page  # 20 days ago: outside the default week
    page = client.get("/events/", {"type": "idle"}).content.decode()
    assert "idling for" in page and "entered Depot" not in page
    page = client.get("/events/", {"vehicle": world["van1"].pk}).content.decode()
    assert "entered Depot" in page and "idling for" not in page
    page = client.get("/events/", {"from": (now - timedelta(days=21)).date().isoformat(),
                                   "to": (now - timedelta(days=19)).date().isoformat()})
    page = page.content.decode()
    assert "Van 2 silent for 30 min" in page and "entered Depot" not in page
    # A driver sees the events of the vehicle they drive.
    client.logout()
    assert client.login(username="dana", password=PASSWORD)
    page = client.get("/events/").content.decode()
    assert "Van 1 entered Depot" in page and "idling for" not in page


def test_events_page_pages_by_cursor(client, world):
    now = datetime.now(UTC)
    Event.objects.bulk_create(
        Event(organisation=world["acme"], vehicle=world["van1"], type="idle",
              time=now - timedelta(minutes=i), attributes={"minutes": i}) for i in range(130))
    assert client.login(username="adam", password=PASSWORD)
    response = client.get("/events/")
    rows = response.content.decode().count('data-event="')
    assert rows == 100
    older = response.context["older"]
    assert older
    rest = client.get("/events/" + older).content.decode()
    assert rest.count('data-event="') == 30
    assert "idling for 129 min" in rest and "idling for 99 min" not in rest
    assert client.get("/events/?before=nonsense").status_code == 200


def test_the_map_page_has_the_feed_and_drawing_tools_for_dispatchers(client, world):
    assert client.login(username="dora", password=PASSWORD)
    page = client.get("/").content.decode()
    assert 'id="event-feed"' in page and 'data-can-draw="true"' in page
    assert "vendor/leaflet-draw/leaflet.draw.js" in page and "fleet/geofences.js" in page
    client.logout()
    assert client.login(username="dana", password=PASSWORD)
    assert 'data-can-draw="false"' in client.get("/").content.decode()


@pytest.mark.django_db(transaction=True)
async def test_a_private_vehicles_events_say_nothing_of_where_it_is(world):
    from logbook.models import Category, VehicleLogbook

    try:
        def setup():
            VehicleLogbook.objects.create(vehicle=world["van2"],
                                          default_category=Category.PRIVATE)
            now = datetime.now(UTC)
            events = [
                Event.objects.create(organisation=world["acme"], vehicle=world["van2"],
                                     type="geofence_enter", time=now,
                                     attributes={"geofence": 1, "geofence_name": "Home"}),
                Event.objects.create(organisation=world["acme"], vehicle=world["van2"],
                                     type="overspeed", time=now, attributes={
                                         "max_speed_kmh": 97, "limit_kmh": 30,
                                         "geofence_name": "School", "latitude": 52.5,
                                         "longitude": 13.4}),
            ]
            return [event_payload(e) for e in events]

        events = await in_thread(setup)
        dora = await connect_as(world["dora"])
        await get_channel_layer().group_send(organisation_group(world["acme"].pk),
                                             {"type": "events.new", "events": events})
        message = await dora.receive_json_from(timeout=5)
        assert [e["type"] for e in message["events"]] == ["overspeed"]
        overspeed = message["events"][0]
        assert overspeed["summary"] == "Van 2 at 97 km/h (limit 30 km/h)"
        assert "latitude" not in overspeed["attributes"]
        assert "geofence_name" not in overspeed["attributes"]
        await dora.disconnect()
    finally:
        await close_thread_connection()
