"""The live websocket: who may connect, what each user hears, and how updates are batched."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from channels.auth import AuthMiddlewareStack
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings

from fleet.consumers import FLUSH_INTERVAL_S, LiveConsumer
from fleet.live import organisation_group
from fleet.routing import websocket_urlpatterns
from tests.dashboard.conftest import PASSWORD, close_thread_connection, in_thread

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def _close_connections():
    yield
    await close_thread_connection()


async def connect_as(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


def fix(vehicle_id: int, seconds_ago: float, **fields) -> dict:
    fields.setdefault("latitude", 52.5)
    fields.setdefault("longitude", 13.4)
    fields.setdefault("speed_kmh", 0.0)
    fields.setdefault("course", None)
    fields.setdefault("ignition", None)
    when = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return {"id": vehicle_id, "fix_time": when.isoformat(), **fields}


async def publish(organisation_id: int, *vehicles: dict) -> None:
    """What the ingest pipeline sends after storing a batch."""
    await get_channel_layer().group_send(
        organisation_group(organisation_id), {"type": "vehicles.update", "vehicles": list(vehicles)}
    )


async def test_anonymous_is_refused():
    application = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
    communicator = WebsocketCommunicator(application, "/ws/live/")
    connected, _ = await communicator.connect()
    assert not connected


async def test_session_login_is_accepted(world, client):
    """Through the real stack: the browser's session cookie is what logs the socket in."""
    await in_thread(client.login, username="dora", password=PASSWORD)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    application = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
    communicator = WebsocketCommunicator(application, "/ws/live/",
                                         headers=[(b"cookie", cookie.encode())])
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_json_from(5))["type"] == "snapshot"
    await communicator.disconnect()


async def test_snapshot_is_exactly_the_organisations_vehicles(world):
    communicator = await connect_as(world["dora"])
    snapshot = await communicator.receive_json_from(5)
    assert snapshot["type"] == "snapshot"
    by_name = {v["name"]: v for v in snapshot["vehicles"]}
    assert set(by_name) == {"Van 1", "Van 2", "Van 3"}
    assert by_name["Van 1"]["status"] == "moving"
    assert by_name["Van 2"]["status"] == "stopped"
    assert by_name["Van 3"]["status"] == "offline"
    assert by_name["Van 1"]["driver"] == "dana"
    assert by_name["Van 1"]["latitude"] == 52.52 and by_name["Van 1"]["course"] == 90.0
    await communicator.disconnect()


async def test_another_organisations_update_never_arrives(world):
    communicator = await connect_as(world["dora"])
    await communicator.receive_json_from(5)
    await publish(world["globex"].pk, fix(world["truck"].pk, 1, speed_kmh=80.0))
    assert await communicator.receive_nothing(timeout=FLUSH_INTERVAL_S * 2 + 0.2)
    await communicator.disconnect()


async def test_updates_within_a_flush_interval_arrive_as_one_message(world):
    communicator = await connect_as(world["dora"])
    await communicator.receive_json_from(5)
    van1, van2 = world["van1"].pk, world["van2"].pk
    await publish(world["acme"].pk, fix(van1, 3, latitude=52.1, speed_kmh=10.0))
    await publish(world["acme"].pk, fix(van2, 3, latitude=52.2, ignition=True))
    await publish(world["acme"].pk, fix(van1, 2, latitude=52.3, speed_kmh=20.0))
    await asyncio.sleep(0.05)
    await publish(world["acme"].pk, fix(van1, 1, latitude=52.4, speed_kmh=30.0, course=270.0))
    # An older fix arriving late (another ingest process) must not win.
    await publish(world["acme"].pk, fix(van1, 5, latitude=51.0, speed_kmh=99.0))

    message = await communicator.receive_json_from(2)
    assert message["type"] == "update"
    by_id = {v["id"]: v for v in message["vehicles"]}
    assert set(by_id) == {van1, van2}
    assert by_id[van1]["latitude"] == 52.4 and by_id[van1]["speed_kmh"] == 30.0
    assert by_id[van1]["course"] == 270.0 and by_id[van1]["status"] == "moving"
    assert by_id[van2]["latitude"] == 52.2 and by_id[van2]["status"] == "stopped"
    assert await communicator.receive_nothing(timeout=FLUSH_INTERVAL_S * 2)

    # The next change after a flush is sent in its own message.
    await publish(world["acme"].pk, fix(van2, 0, latitude=52.25, ignition=False))
    message = await communicator.receive_json_from(2)
    assert [(v["id"], v["status"]) for v in message["vehicles"]] == [(van2, "parked")]
    await communicator.disconnect()


async def test_at_most_four_messages_a_second(world):
    communicator = await connect_as(world["dora"])
    await communicator.receive_json_from(5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(40):  # one batch every 25 ms for a second
        await publish(world["acme"].pk, fix(world["van1"].pk, 2 - i / 40, latitude=52 + i / 100))
        await asyncio.sleep(0.025)
    messages = []
    while not await communicator.receive_nothing(timeout=FLUSH_INTERVAL_S * 2):
        messages.append(await communicator.receive_json_from())
    elapsed = loop.time() - started - FLUSH_INTERVAL_S * 2
    assert len(messages) <= elapsed / FLUSH_INTERVAL_S + 1
    assert messages[-1]["vehicles"][0]["latitude"] == pytest.approx(52.39)
    await communicator.disconnect()


async def test_driver_sees_only_their_own_vehicle(world):
    communicator = await connect_as(world["dana"])
    snapshot = await communicator.receive_json_from(5)
    assert [v["name"] for v in snapshot["vehicles"]] == ["Van 1"]
    await publish(world["acme"].pk, fix(world["van2"].pk, 1, latitude=52.0),
                  fix(world["van1"].pk, 1, latitude=52.6))
    message = await communicator.receive_json_from(2)
    assert [(v["id"], v["latitude"]) for v in message["vehicles"]] == [(world["van1"].pk, 52.6)]
    await publish(world["acme"].pk, fix(world["van3"].pk, 0))
    assert await communicator.receive_nothing(timeout=FLUSH_INTERVAL_S * 2 + 0.2)
    await communicator.disconnect()


async def test_superuser_hears_every_organisation(world, django_user_model):
    operator = await in_thread(django_user_model.objects.create_superuser, "operator", "", "pw")
    communicator = await connect_as(operator)
    snapshot = await communicator.receive_json_from(5)
    assert {v["name"] for v in snapshot["vehicles"]} == {"Van 1", "Van 2", "Van 3", "Truck 9"}
    await publish(world["globex"].pk, fix(world["truck"].pk, 1, speed_kmh=60.0))
    message = await communicator.receive_json_from(2)
    assert message["vehicles"][0]["id"] == world["truck"].pk
    await communicator.disconnect()


# --- fan-out once per process (fleet.consumers.LiveHub) ------------------------------


def feed_of(organisation_id: int):
    from fleet.consumers import LiveHub

    return LiveHub.current().feeds.get(organisation_id)


async def test_one_channel_per_organisation_however_many_browsers(world):
    """A stored batch crosses the channel layer once per process, not once per browser."""
    acme = world["acme"].pk
    browsers = [await connect_as(world[name]) for name in ("adam", "dora", "dana", "adam")]
    for browser in browsers:
        await browser.receive_json_from(5)
    feed = feed_of(acme)
    assert len(feed.members) == 4
    layer = get_channel_layer()
    if hasattr(layer, "groups"):  # the in-memory layer shows its groups
        assert list(layer.groups[organisation_group(acme)]) == [feed.channel]
    await publish(acme, fix(world["van1"].pk, 1, latitude=52.61))
    for browser in browsers:
        message = await browser.receive_json_from(2)
        assert [(v["id"], v["latitude"]) for v in message["vehicles"]] == [
            (world["van1"].pk, 52.61)]
    for browser in browsers:
        await browser.disconnect()
    assert feed_of(acme) is None  # the last one gone: the feed leaves the group
    if hasattr(layer, "groups"):
        assert not layer.groups.get(organisation_group(acme))


async def test_a_slow_browser_holds_up_nobody_and_then_gets_the_newest(world):
    """One whose socket is still full when the next flush comes gets the newest state of
    each vehicle once it has taken the last message; the others get every flush."""
    adam, dora = await connect_as(world["adam"]), await connect_as(world["dora"])
    for browser in (adam, dora):
        await browser.receive_json_from(5)
    slow = next(c for c in feed_of(world["acme"].pk).members if c.user == world["dora"])
    unblocked = asyncio.Event()
    send = slow.send

    async def stuck_send(*args, **kwargs):
        await unblocked.wait()
        await send(*args, **kwargs)

    slow.send = stuck_send
    van1, van2 = world["van1"].pk, world["van2"].pk
    for step in range(3):
        await publish(world["acme"].pk, fix(van1, 3 - step, latitude=52.0 + step),
                      *([fix(van2, 3 - step, latitude=51.0)] if step == 1 else []))
        message = await adam.receive_json_from(2)  # the quick one: every flush
        assert message["vehicles"][0]["latitude"] == 52.0 + step
    assert await dora.receive_nothing(timeout=0.1)
    unblocked.set()
    first = await dora.receive_json_from(2)
    assert [v["latitude"] for v in first["vehicles"]] == [52.0]
    rest = await dora.receive_json_from(2)  # the rest in one message, newest only
    assert sorted((v["id"], v["latitude"]) for v in rest["vehicles"]) == sorted(
        [(van1, 54.0), (van2, 51.0)])
    assert await dora.receive_nothing(timeout=FLUSH_INTERVAL_S * 2)
    for browser in (adam, dora):
        await browser.disconnect()


async def test_a_timed_out_receive_is_retried(world, monkeypatch):
    """redis-py reads with a 5 s timeout, as long as the layer's blocking pop: an idle
    receive may fail with a TimeoutError, and the feed simply receives again."""
    layer = get_channel_layer()
    receive = layer.receive
    failures = []

    class TimeoutError(Exception):  # named as redis.exceptions' one
        pass

    async def flaky_receive(channel):
        if len(failures) < 2:
            failures.append(channel)
            raise TimeoutError("Timeout reading from 127.0.0.1:6379")
        return await receive(channel)

    monkeypatch.setattr(layer, "receive", flaky_receive)
    communicator = await connect_as(world["dora"])
    await communicator.receive_json_from(5)
    await publish(world["acme"].pk, fix(world["van2"].pk, 1, latitude=52.7))
    message = await communicator.receive_json_from(2)
    assert message["vehicles"][0]["latitude"] == 52.7
    assert len(failures) == 2
    await communicator.disconnect()


async def test_updates_are_compact(world):
    """No spaces after separators, positions to 6 decimals (0.1 m), speed and course to
    a tenth: every byte goes to every browser and through its compression."""
    communicator = await connect_as(world["dora"])
    await communicator.receive_json_from(5)
    await publish(world["acme"].pk, fix(world["van2"].pk, 1, latitude=52.123456789,
                                        longitude=13.987654321, speed_kmh=47.26,
                                        course=181.04))
    raw = (await communicator.receive_output(2))["text"]
    assert raw.startswith('{"type":"update","vehicles":[{') and ", " not in raw
    vehicle = json.loads(raw)["vehicles"][0]
    assert (vehicle["latitude"], vehicle["longitude"]) == (52.123457, 13.987654)
    assert (vehicle["speed_kmh"], vehicle["course"]) == (47.3, 181.0)
    await communicator.disconnect()


def test_batches_published_late_go_as_one_with_the_newest_of_each_vehicle():
    from fleet.live import merged_updates

    old = {1: [{"id": 7, "fix_time": "2026-03-02T08:00:01+00:00", "latitude": 1.0},
               {"id": 8, "fix_time": "2026-03-02T08:00:01+00:00", "latitude": 2.0}]}
    new = {1: [{"id": 7, "fix_time": "2026-03-02T08:00:02+00:00", "latitude": 3.0}],
           2: [{"id": 9, "fix_time": "2026-03-02T08:00:02+00:00", "latitude": 4.0}]}
    late = {1: [{"id": 8, "fix_time": "2026-03-02T08:00:00+00:00", "latitude": 5.0}]}
    merged = merged_updates([old, new, late])
    assert {v["id"]: v["latitude"] for v in merged[1]} == {7: 3.0, 8: 2.0}  # 8: not back
    assert merged[2] == new[2]
    assert merged_updates([old]) is old
