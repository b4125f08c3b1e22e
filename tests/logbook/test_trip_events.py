"""Trip events: live derivation tells the fleet when a trip starts and ends (the event
feed, e-mails, webhooks); a history replay tells nobody anything."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from fleet.webhooks import create_webhook, verify
from logbook.derivation import LiveFleet, close_silent_vehicles, live_row
from logbook.live import TripTracker
from logbook.models import (
    DriverSession,
    LogbookSettings,
    NamedPlace,
    PlaceKind,
    Trip,
    TripStatus,
)
from telematics.ingest.store import PositionRow, store_batch
from telematics.models import Event
from tests.integration.conftest import receiver  # noqa: F401  (a real HTTP receiver)
from tests.logbook.support import DEPOT, T0, Track, feed_live, store
from tests.logbook.test_live import send
from tests.support import db

TRIP_TYPES = ("trip_started", "trip_ended")


def trip_events(vehicle_id: int) -> list[Event]:
    return list(Event.objects.filter(vehicle_id=vehicle_id, type__in=TRIP_TYPES)
                .order_by("time", "id"))


def two_trips(t0: datetime = T0, **kwargs) -> Track:
    """Depot -> 3 km east, parked 15 minutes, -> 2 km north, parked."""
    track = Track(t0, **kwargs)
    track.emit(0.0)
    track.park(600).drive(3000).park(900).drive(2000, heading=0.0).park(900)
    return track


@pytest.fixture
def tracker(transactional_db):
    started = TripTracker(housekeeping_s=3600, geocode=False)
    started.start()
    yield started
    started.stop()


def deliver(tracker: TripTracker, device, fixes, batch: int = 25) -> None:
    """As the ingest pipeline does: store each batch, then hand it to the listener."""
    for start in range(0, len(fixes), batch):
        stored_at = timezone.now()
        rows = [PositionRow(device.pk, device.vehicle_id, device.organisation_id, f, stored_at)
                for f in fixes[start:start + batch]]
        tracker.listener(rows, store_batch(rows, [], set(), stored_at))


def test_each_live_trip_is_announced_when_it_starts_and_when_it_ends(
        tracker, acme, acme_unit, alice):
    NamedPlace.objects.create(organisation=acme, name="Depot", kind=PlaceKind.DEPOT,
                              latitude=DEPOT[0], longitude=DEPOT[1], address="Hafenstr. 1")
    vehicle_id = acme_unit.vehicle_id
    track = two_trips(odometer_km=48_000.0, driver_key=alice.identification_key)
    deliver(tracker, acme_unit, track.fixes)
    assert tracker.wait_idle(30)

    first, second = Trip.objects.filter(vehicle_id=vehicle_id).order_by("start_time")
    events = trip_events(vehicle_id)
    assert [e.type for e in events] == ["trip_started", "trip_ended"] * 2
    assert {e.organisation_id for e in events} == {acme.pk}
    started, ended = events[0], events[1]
    assert started.time == first.start_time and ended.time == first.end_time
    assert started.attributes == {
        "trip_id": first.pk,  # filled in when the trip was written
        "start_time": first.start_time.isoformat(),
        "start_latitude": first.start_latitude, "start_longitude": first.start_longitude,
        "start_address": "Depot, Hafenstr. 1", "start_odometer_km": 48_000.0,
        "driver_id": alice.pk, "driver_name": "alice",
    }
    assert ended.attributes == {
        "trip_id": first.pk,
        "start_time": first.start_time.isoformat(), "end_time": first.end_time.isoformat(),
        "start_latitude": first.start_latitude, "start_longitude": first.start_longitude,
        "end_latitude": first.end_latitude, "end_longitude": first.end_longitude,
        "start_address": "Depot, Hafenstr. 1", "end_address": "",
        "start_odometer_km": 48_000.0, "end_odometer_km": 48_003.0,
        "distance_m": 3000.0, "duration_s": first.duration_s, "max_speed_kmh": 50.0,
        "average_speed_kmh": round(first.average_speed_kmh, 1), "end_reason": "parked",
        "driver_id": alice.pk, "driver_name": "alice",
    }
    assert 200 < ended.attributes["duration_s"] < 260 and ended.attributes[
        "average_speed_kmh"] == pytest.approx(45, abs=5)
    assert events[2].attributes["trip_id"] == events[3].attributes["trip_id"] == second.pk
    assert events[3].attributes["start_odometer_km"] == 48_003.0
    assert events[3].attributes["distance_m"] == 2000.0


def test_the_driver_in_trip_events_is_the_logbooks(tracker, acme_unit, alice, bob):
    """The vehicle's default driver, unless someone chose the vehicle in the app."""
    vehicle = acme_unit.vehicle
    vehicle.default_driver = bob
    vehicle.save()
    DriverSession.objects.create(vehicle=vehicle, driver=alice, since=T0 + timedelta(minutes=20))
    deliver(tracker, acme_unit, two_trips().fixes)
    assert tracker.wait_idle(30)

    first, second = Trip.objects.filter(vehicle=vehicle).order_by("start_time")
    assert (first.driver, second.driver) == (bob, alice)
    events = trip_events(vehicle.pk)
    assert [(e.attributes["driver_id"], e.attributes["driver_name"]) for e in events] == [
        (bob.pk, "bob"), (bob.pk, "bob"), (alice.pk, "alice"), (alice.pk, "alice")]


def test_a_trip_in_progress_is_announced_before_it_ends(tracker, acme_unit):
    track = Track(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=15))
    track.emit(0.0)
    track.park(300).drive(3000)  # still driving
    deliver(tracker, acme_unit, track.fixes)
    assert tracker.wait_idle(30)

    (started,) = trip_events(acme_unit.vehicle_id)
    assert started.type == "trip_started" and started.attributes["trip_id"] is None
    assert started.attributes["driver_id"] is None and started.attributes["driver_name"] == ""
    assert not Trip.objects.exists()


def test_rebuilding_history_announces_nothing(transactional_db, acme, acme_unit):
    vehicle_id = acme_unit.vehicle_id
    store(acme_unit, two_trips().fixes)  # stored while no tracker ran, say by an import
    call_command("rebuild_trips", "--no-geocode")
    assert Trip.objects.filter(vehicle_id=vehicle_id).count() == 2
    assert trip_events(vehicle_id) == []

    # Different thresholds re-derive the history into other trips: still nothing said.
    LogbookSettings.objects.filter(organisation=acme).update(parking_s=1200.0, gap_max_s=1800)
    call_command("rebuild_trips", "--no-geocode")
    trips = Trip.objects.filter(vehicle_id=vehicle_id)
    assert trips.filter(status=TripStatus.SUPERSEDED).count() == 2
    assert trips.filter(status=TripStatus.ACTIVE).count() == 1  # the stop is no parking now
    assert trip_events(vehicle_id) == []


def test_a_rebuild_after_live_derivation_adds_no_events(tracker, acme_unit):
    deliver(tracker, acme_unit, two_trips().fixes)
    assert tracker.wait_idle(30)
    before = [(e.pk, e.type, e.attributes) for e in trip_events(acme_unit.vehicle_id)]
    assert len(before) == 4
    call_command("rebuild_trips", "--no-geocode")
    assert [(e.pk, e.type, e.attributes) for e in trip_events(acme_unit.vehicle_id)] == before


def test_the_first_derivation_of_a_vehicle_announces_only_what_arrives_live(
        tracker, acme_unit):
    yesterday = two_trips(T0 - timedelta(days=1))
    store(acme_unit, yesterday.fixes)  # before the tracker knew the vehicle
    today = two_trips(T0)
    deliver(tracker, acme_unit, today.fixes)
    assert tracker.wait_idle(30)

    trips = list(Trip.objects.filter(vehicle_id=acme_unit.vehicle_id).order_by("start_time"))
    assert len(trips) == 4
    events = trip_events(acme_unit.vehicle_id)
    assert [e.attributes["trip_id"] for e in events] == [
        trips[2].pk, trips[2].pk, trips[3].pk, trips[3].pk]


def test_late_fixes_announce_the_trip_they_reveal_and_repeat_nothing(tracker, acme_unit):
    """The unit buffered a trip while out of coverage and delivers it after the next one."""
    vehicle_id = acme_unit.vehicle_id
    track = Track(odometer_km=1000.0)
    track.emit(0.0)
    track.park(600).drive(3000).park(900)
    early = len(track.fixes)
    track.drive(2000, heading=0.0).drive(2000, heading=180.0).park(600)
    buffered = slice(early, len(track.fixes))
    track.drive(2500).park(900)
    deliver(tracker, acme_unit, track.fixes[:early] + track.fixes[buffered.stop:])
    assert tracker.wait_idle(30)
    announced = {e.pk for e in trip_events(vehicle_id)}
    assert len(announced) == 4

    deliver(tracker, acme_unit, track.fixes[buffered], batch=1000)
    assert tracker.wait_idle(30)

    active = list(Trip.objects.filter(vehicle_id=vehicle_id, status=TripStatus.ACTIVE)
                  .order_by("start_time"))
    assert len(active) == 3
    events = trip_events(vehicle_id)
    new = [e for e in events if e.pk not in announced]
    # The revealed trip, start and end; the trip after it changed (it now starts at the
    # revealed trip's end reading): its end again, saying what it replaces. Its start
    # was announced already, and now names the trip that replaced the one it named.
    late, corrected = active[1], active[2]
    assert [(e.type, e.attributes["trip_id"]) for e in new] == [
        ("trip_started", late.pk), ("trip_ended", late.pk), ("trip_ended", corrected.pk)]
    superseded = Trip.objects.get(vehicle_id=vehicle_id, status=TripStatus.SUPERSEDED)
    assert new[2].attributes["corrects"] == [superseded.pk]
    assert new[2].time == superseded.end_time  # the same end, other base data
    (started,) = [e for e in events if e.type == "trip_started" and e.time == corrected.start_time]
    assert started.attributes["trip_id"] == corrected.pk
    assert len(events) == 7


def test_a_trip_closed_because_the_vehicle_fell_silent_is_announced(transactional_db,
                                                                     acme_unit):
    track = Track()
    track.emit(0.0)
    track.park(600).drive(3000)  # the unit sleeps right after arriving
    vehicle = feed_live(acme_unit, track.fixes, now=track.t + timedelta(minutes=5))
    assert [e.type for e in trip_events(vehicle.pk)] == ["trip_started"]
    assert close_silent_vehicles(track.t + timedelta(hours=1), grace_s=0) == 1

    (trip,) = Trip.objects.filter(vehicle=vehicle)
    started, ended = trip_events(vehicle.pk)
    assert ended.type == "trip_ended" and ended.attributes["end_reason"] == "silent"
    assert ended.attributes["trip_id"] == started.attributes["trip_id"] == trip.pk


def test_the_tracker_closes_a_silent_trip_in_memory_and_announces_it(transactional_db,
                                                                     acme_unit):
    track = Track(datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3))
    track.emit(0.0)
    track.park(600).drive(3000)
    store(acme_unit, track.fixes)
    fleet = LiveFleet(grace_s=0.0)
    rows = [live_row(acme_unit.pk, timezone.now(), f) for f in track.fixes]
    assert fleet.feed({acme_unit.vehicle_id: rows}, timezone.now()) == ({}, True)
    assert not Trip.objects.exists()
    assert fleet.close_silent(timezone.now()) == ({}, True)

    (trip,) = Trip.objects.filter(vehicle_id=acme_unit.vehicle_id)
    assert trip.end_reason == "silent" and trip.end_time == track.fixes[-1].fix_time
    started, ended = trip_events(acme_unit.vehicle_id)
    assert (started.type, ended.type) == ("trip_started", "trip_ended")
    assert ended.attributes["trip_id"] == started.attributes["trip_id"] == trip.pk


async def test_a_webhook_subscribed_to_trip_ended_gets_a_signed_delivery_per_trip(
        ingest, fleet, settings, receiver):  # noqa: F811
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True  # the receiver is on 127.0.0.1
    _, secret = await db(lambda: create_webhook(
        fleet["acme"], url=receiver.url, event_types=["trip_ended"]))
    vehicle_id = fleet["teltonika"].vehicle_id
    track = two_trips(datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3),
                      odometer_km=12_000.0, ignition=True)

    await send(ingest.ports["teltonika"], track.fixes)
    assert await asyncio.to_thread(ingest.pipeline.trip_tracker.wait_idle, 20)
    await asyncio.to_thread(ingest.webhooks.run_once)  # what its next poll does
    requests = await asyncio.to_thread(receiver.wait, 2)
    requests.sort(key=lambda r: r["json"]["event"]["time"])  # sent in parallel

    trips = await db(lambda: list(Trip.objects.filter(vehicle_id=vehicle_id)
                                  .order_by("start_time")))
    assert len(requests) == 2  # trip_started is not subscribed
    for request, trip in zip(requests, trips, strict=True):
        headers = request["headers"]
        assert headers["x-fleetbook-event"] == "trip_ended"
        assert verify(secret, request["body"], headers["x-fleetbook-signature"])
        event = request["json"]["event"]
        assert request["json"]["organisation"] == fleet["acme"].pk
        assert event["type"] == "trip_ended" and event["vehicle"] == vehicle_id
        assert event["attributes"]["trip_id"] == trip.pk
        assert event["attributes"]["end_time"] == trip.end_time.isoformat()
        assert event["attributes"]["distance_m"] == trip.distance_m
        assert event["attributes"]["end_odometer_km"] == trip.end_odometer_km
    assert [r["json"]["event"]["attributes"]["distance_m"] for r in requests] == [3000.0,
                                                                                 2000.0]
