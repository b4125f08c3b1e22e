"""The live map and a private trip: managers do not follow a vehicle to a private place.

The rule (logbook/README.md): a trip being driven is unclassified, so it is shown; the
position is hidden within a stored trip redacted for the viewer and after it while the
vehicle stands where it ended, and always for a vehicle whose default category is
private. The driver who drove sees their own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from fleet.consumers import FLUSH_INTERVAL_S, LiveConsumer
from fleet.live import organisation_group
from fleet.models import Vehicle
from logbook.models import VehicleLogbook, VehicleTripState
from telematics.models import VehicleState
from tests.dashboard.conftest import close_thread_connection, in_thread
from tests.logbook.factories import ago, make_trip

pytestmark = pytest.mark.django_db(transaction=True)
PARKED = (52.6123, 13.4567)  # where the private trip ended


@pytest.fixture(autouse=True)
async def _close_connections():
    yield
    await close_thread_connection()


@pytest.fixture
def fleet_now(acme, acme_van, alice, people):
    """Van 7 parked where Alice's private trip ended ten minutes ago; the pool car (a
    private company car: default category private) driving; Van 2 driving."""
    acme_van.default_driver = alice
    acme_van.save()
    make_trip(acme_van, ago(minutes=70), minutes=20, driver=alice, category="business",
              purpose="Delivery", partner="Schulz GmbH", destination="Berlin")
    private = make_trip(acme_van, ago(minutes=40), minutes=30, driver=alice,
                        category="private", end_address="Secret Garden")
    VehicleState.objects.create(vehicle=acme_van, fix_time=ago(minutes=2), latitude=PARKED[0],
                                longitude=PARKED[1], speed_kmh=0.0, ignition=False)
    company_car = Vehicle.objects.create(organisation=acme, name="Company car")
    VehicleLogbook.objects.create(vehicle=company_car, default_category="private")
    VehicleState.objects.create(vehicle=company_car, fix_time=ago(seconds=20),
                                latitude=52.40, longitude=13.20, speed_kmh=50.0, ignition=True)
    van2 = Vehicle.objects.create(organisation=acme, name="Van 2")
    VehicleState.objects.create(vehicle=van2, fix_time=ago(seconds=20), latitude=52.45,
                                longitude=13.30, speed_kmh=40.0, ignition=True)
    return {"van": acme_van, "private": private, "company_car": company_car, "van2": van2}


async def connect_as(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def publish(organisation_id: int, *vehicles: dict) -> None:
    await get_channel_layer().group_send(
        organisation_group(organisation_id),
        {"type": "vehicles.update", "vehicles": list(vehicles)})


def fix(vehicle_id: int, **fields) -> dict:
    return {"id": vehicle_id, "fix_time": datetime.now(UTC).isoformat(), "latitude": PARKED[0],
            "longitude": PARKED[1], "speed_kmh": 0.0, "course": None, "ignition": False,
            **fields}


async def test_snapshot_hides_a_vehicle_parked_after_a_private_trip(fleet_now, people):
    communicator = await connect_as(people["dispatcher"])
    snapshot = {v["name"]: v for v in (await communicator.receive_json_from(5))["vehicles"]}
    for name in ("Van 7", "Company car"):
        hidden = snapshot[name]
        assert hidden["private"] is True and hidden["status"] == "private", name
        assert hidden["latitude"] is None and hidden["longitude"] is None, name
        assert hidden["fix_time"] is None and hidden["speed_kmh"] is None, name
    assert snapshot["Van 7"]["driver"] == "alice"  # who, not where
    assert snapshot["Van 2"]["private"] is False and snapshot["Van 2"]["latitude"] == 52.45
    await communicator.disconnect()

    # The driver who drove it sees her own van where it is.
    communicator = await connect_as(people["driver"])
    (van,) = (await communicator.receive_json_from(5))["vehicles"]
    assert van["latitude"] == PARKED[0] and van["private"] is False
    await communicator.disconnect()


async def test_updates_hidden_until_the_vehicle_drives_again(fleet_now, people, acme):
    van = fleet_now["van"]
    communicator = await connect_as(people["admin"])
    await communicator.receive_json_from(5)
    await publish(acme.pk, fix(van.pk), fix(fleet_now["van2"].pk, latitude=52.46),
                  fix(fleet_now["company_car"].pk, latitude=52.41, speed_kmh=60.0))
    message = await communicator.receive_json_from(2)
    by_id = {v["id"]: v for v in message["vehicles"]}
    assert by_id[van.pk]["latitude"] is None and by_id[van.pk]["status"] == "private"
    assert by_id[fleet_now["company_car"].pk]["latitude"] is None
    assert by_id[fleet_now["van2"].pk]["latitude"] == 52.46
    assert by_id[fleet_now["van2"].pk]["private"] is False

    # A new trip starts (not classified yet, so it cannot be private): shown again.
    started = datetime.now(UTC) - timedelta(seconds=30)
    await in_thread(VehicleTripState.objects.update_or_create, vehicle=van,
                    defaults={"driving_since": started})
    await publish(acme.pk, fix(van.pk, latitude=52.62, speed_kmh=35.0))
    message = await communicator.receive_json_from(2)
    (update,) = message["vehicles"]
    assert update["latitude"] == 52.62 and update["private"] is False
    assert update["status"] == "moving"
    assert await communicator.receive_nothing(timeout=FLUSH_INTERVAL_S * 2)
    await communicator.disconnect()


async def test_a_business_trips_end_is_not_hidden(fleet_now, people, acme):
    private = fleet_now["private"]
    await in_thread(lambda: type(private).objects.filter(pk=private.pk).update(
        category="business"))  # as if it had been a business trip
    communicator = await connect_as(people["dispatcher"])
    snapshot = {v["name"]: v for v in (await communicator.receive_json_from(5))["vehicles"]}
    assert snapshot["Van 7"]["latitude"] == PARKED[0]
    await communicator.disconnect()


def test_pages_leave_the_position_out(client, fleet_now, people):
    van = fleet_now["van"]
    assert client.login(username="desk", password="pw-desk")
    html = client.get("/").content.decode()
    row = html[html.index(f'data-vehicle="{van.pk}"'):]
    row = row[:row.index("</tr>")]
    assert 'data-status="private"' in row and "52.61230" not in row
    assert '<option value="private">Private (2)</option>' in html
    html = client.get(f"/vehicles/{van.pk}/").content.decode()
    assert "52.61230" not in html and ">private</span>" in html
    client.logout()
    assert client.login(username="alice", password="pw-alice")
    html = client.get(f"/vehicles/{van.pk}/").content.decode()
    assert "52.61230, 13.45670" in html
