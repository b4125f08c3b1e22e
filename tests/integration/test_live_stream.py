"""The dashboard's websocket for integrations: authenticated by a token or an API key."""

from __future__ import annotations

import pytest
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from fleet.api.services import issue_token, revoke_api_key
from fleet.live import organisation_group
from fleet.models import ApiKey
from fleet.routing import websocket_urlpatterns
from fleet.ws_auth import WebsocketAuthStack, credentials_of
from tests.dashboard.conftest import close_thread_connection
from tests.support import db

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def _close_connections():
    yield
    await close_thread_connection()


def application():
    """The websocket stack exactly as fleet.asgi builds it (with this test's settings)."""
    return WebsocketAuthStack(URLRouter(websocket_urlpatterns))


async def token_of(user) -> str:
    return (await db(lambda: issue_token(user)))[1]


async def snapshot_names(communicator) -> set[str]:
    message = await communicator.receive_json_from(5)
    assert message["type"] == "snapshot"
    return {v["name"] for v in message["vehicles"]}


def test_credentials_are_read_from_header_subprotocol_or_query():
    assert credentials_of({"headers": [(b"authorization", b"Bearer abc")]}) == ("abc", None)
    assert credentials_of({"headers": [(b"Authorization", b"Api-Key fbk_1.x")]}) == (
        "fbk_1.x", None)
    assert credentials_of({"subprotocols": ["bearer", "abc"]}) == ("abc", "bearer")
    assert credentials_of({"subprotocols": ["bearer.abc"]}) == ("abc", "bearer.abc")
    assert credentials_of({"query_string": b"token=abc"}) == ("abc", None)
    assert credentials_of({"query_string": b"api_key=fbk_1.x"}) == ("fbk_1.x", None)
    assert credentials_of({"headers": [(b"cookie", b"sessionid=1")]}) == (None, None)
    assert credentials_of({"headers": [(b"authorization", b"Basic eDp5")]}) == (None, None)


async def test_token_in_the_query_string(fleets):
    token = await token_of(fleets.dispatcher)
    communicator = WebsocketCommunicator(application(), f"/ws/live/?token={token}")
    connected, _ = await communicator.connect()
    assert connected  # no Origin header: an integration, not a browser
    assert await snapshot_names(communicator) == {"Van 7", "Pool car"}
    await communicator.disconnect()


async def test_bearer_token_header_and_live_updates(fleets):
    token = await token_of(fleets.driver_user)
    communicator = WebsocketCommunicator(
        application(), "/ws/live/", headers=[(b"authorization", f"Bearer {token}".encode())])
    connected, _ = await communicator.connect()
    assert connected
    assert await snapshot_names(communicator) == {"Van 7"}  # a driver: their vehicle only
    await get_channel_layer().group_send(organisation_group(fleets.acme.pk), {
        "type": "vehicles.update", "vehicles": [
            {"id": fleets.van.pk, "fix_time": "2026-03-02T08:00:00+00:00", "latitude": 52.6,
             "longitude": 13.5, "speed_kmh": 50.0, "course": 0.0, "ignition": True},
            {"id": fleets.car.pk, "fix_time": "2026-03-02T08:00:00+00:00", "latitude": 52.7,
             "longitude": 13.6, "speed_kmh": 0.0, "course": 0.0, "ignition": False},
        ]})
    update = await communicator.receive_json_from(5)
    assert update["type"] == "update" and [v["id"] for v in update["vehicles"]] == [
        fleets.van.pk]
    await communicator.disconnect()


async def test_api_key_as_header_and_as_subprotocol(fleets):
    communicator = WebsocketCommunicator(
        application(), "/ws/live/", headers=[(b"authorization",
                                              f"Api-Key {fleets.acme_key}".encode())])
    connected, _ = await communicator.connect()
    assert connected
    assert await snapshot_names(communicator) == {"Van 7", "Pool car"}
    await communicator.disconnect()

    # A browser's WebSocket can only send subprotocols; the answer names the marker.
    communicator = WebsocketCommunicator(application(), "/ws/live/",
                                         subprotocols=["bearer", fleets.globex_key])
    connected, subprotocol = await communicator.connect()
    assert connected and subprotocol == "bearer"
    assert await snapshot_names(communicator) == {"Truck 1"}
    await communicator.disconnect()


async def test_the_production_application_takes_an_api_key(fleets):
    from fleet.asgi import application as asgi_application

    communicator = WebsocketCommunicator(asgi_application,
                                         f"/ws/live/?token={fleets.acme_key}")
    connected, _ = await communicator.connect()
    assert connected
    assert await snapshot_names(communicator) == {"Van 7", "Pool car"}
    await communicator.disconnect()


@pytest.mark.parametrize("how", ["wrong_token", "wrong_key", "revoked_key", "inactive_user"])
async def test_bad_credentials_are_refused(fleets, how):
    credential = {"wrong_token": "0" * 40, "wrong_key": fleets.acme_key[:-2] + "xx"}.get(how)
    if how == "revoked_key":
        await db(lambda: revoke_api_key(ApiKey.objects.get(organisation=fleets.acme)))
        credential = fleets.acme_key
    if how == "inactive_user":
        credential = await token_of(fleets.admin)
        await db(lambda: type(fleets.admin).objects.filter(pk=fleets.admin.pk).update(
            is_active=False))
    communicator = WebsocketCommunicator(application(), f"/ws/live/?token={credential}")
    connected, code = await communicator.connect()
    assert not connected and code == 4401


async def test_without_credentials_the_browser_rules_apply(fleets, client, settings):
    """No credentials: the Origin check and the session, as for the dashboard."""
    communicator = WebsocketCommunicator(application(), "/ws/live/")
    connected, _ = await communicator.connect()
    assert not connected  # no Origin, no session
    settings.ALLOWED_HOSTS = ["fleet.example.com"]
    await db(lambda: client.force_login(fleets.admin))
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={client.cookies['sessionid'].value}"
    for origin, expected in (("https://evil.example.net", False),
                             ("https://fleet.example.com", True)):
        communicator = WebsocketCommunicator(application(), "/ws/live/", headers=[
            (b"cookie", cookie.encode()), (b"origin", origin.encode())])
        connected, _ = await communicator.connect()
        assert connected is expected, origin
        if connected:
            assert await snapshot_names(communicator) == {"Van 7", "Pool car"}
            await communicator.disconnect()
