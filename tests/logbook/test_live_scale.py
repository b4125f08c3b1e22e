"""The live trip tracker at fleet scale: many vehicles interleaved in every batch give the
logbook a rebuild gives, however the tracker gets there (machines kept in memory, a queue
that drops work and catches up from the database, a rebuild or a crash in between)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from fleet.models import Organisation, Vehicle
from logbook.derivation import LiveFleet, live_row, replay
from logbook.live import TripTracker
from logbook.models import OdometerGap, Trip, TripCheckpoint, TripRevision, VehicleTripState
from logbook.services import verify_chain
from telematics.ingest.store import PositionRow, store_batch
from telematics.models import Device, SignalSample
from tests.logbook.support import DEPOT, T0, Track

FLEET = 300


def story(index: int) -> Track:
    """One vehicle's morning, different for each: with or without ignition and a unit
    odometer, a tunnel, a long silence, parked for a while between two drives."""
    kind = index % 4
    track = Track(
        T0 + timedelta(seconds=(index * 7) % 600),
        (DEPOT[0] + (index % 20) * 0.01, DEPOT[1] + (index // 20) * 0.01),
        odometer_km=1000.0 + index if kind in (0, 2) else None,
        ignition=True if kind in (0, 3) else None,
        driver_key="00000000A11CE000" if kind == 3 else None,
    )
    track.emit(0.0)
    track.park(300 + 30 * (index % 5)).drive(1500 + 100 * (index % 7), heading=index * 37 % 360)
    if kind == 1:
        track.silence(90).drive(400, heading=index * 37 % 360)  # a tunnel
    track.park(420)
    if kind == 2:
        track.silence(1200)  # parked with the unit asleep
    track.drive(900, heading=(index * 37 + 90) % 360).park(360)
    return track


def make_fleet(count: int) -> list[Device]:
    organisation = Organisation.objects.create(name="Big Fleet", time_zone="Europe/Berlin")
    vehicles = Vehicle.objects.bulk_create(
        Vehicle(organisation=organisation, name=f"Van {i}") for i in range(count))
    return list(Device.objects.bulk_create(
        Device(organisation=organisation, vehicle=vehicle, identifier=f"35000000{i:07d}",
               protocol="teltonika") for i, vehicle in enumerate(vehicles)))


def interleaved(devices: list[Device], batch: int = 200) -> list[list[PositionRow]]:
    """Every vehicle's fixes in the order units report them, in pipeline-sized batches."""
    rows = [PositionRow(d.pk, d.vehicle_id, d.organisation_id, fix, T0)
            for i, d in enumerate(devices) for fix in story(i).fixes]
    rows.sort(key=lambda r: (r.fix.fix_time, r.device_id))
    return [rows[i:i + batch] for i in range(0, len(rows), batch)]


def deliver(tracker: TripTracker, rows: list[PositionRow]) -> None:
    """What the ingest pipeline does with a batch: store it, then call its listeners."""
    stored_at = timezone.now()
    for row in rows:
        row.server_time = stored_at
    moved = store_batch(rows, [], set(), stored_at)
    tracker.listener(rows, moved)


def logbook(vehicle_ids) -> dict:
    return {
        "trips": list(Trip.objects.filter(vehicle_id__in=vehicle_ids).order_by(
            "vehicle_id", "start_time", "id").values_list(
            "id", "vehicle_id", "status", "start_time", "end_time", "start_odometer_km",
            "end_odometer_km", "distance_m", "driver_id", "end_reason", "base_hash",
            "content_hash")),
        "gaps": list(OdometerGap.objects.filter(vehicle_id__in=vehicle_ids).order_by(
            "vehicle_id", "to_time").values_list("vehicle_id", "from_km", "to_km", "status")),
        "checkpoints": list(TripCheckpoint.objects.filter(vehicle_id__in=vehicle_ids).order_by(
            "vehicle_id", "time").values_list("vehicle_id", "time", "last_fix_time", "machine")),
        "machines": dict(VehicleTripState.objects.filter(vehicle_id__in=vehicle_ids)
                         .values_list("vehicle_id", "machine")),
    }


def assert_same_as_a_rebuild(devices: list[Device]) -> dict:
    """Replaying every vehicle's stored positions changes nothing: same trips (ids,
    content, revisions), gaps, checkpoints and saved machines."""
    vehicle_ids = [d.vehicle_id for d in devices]
    live = logbook(vehicle_ids)
    revisions = TripRevision.objects.count()
    for vehicle in Vehicle.objects.filter(pk__in=vehicle_ids).select_related("organisation"):
        replay(vehicle, close=False)
    assert logbook(vehicle_ids) == live
    assert TripRevision.objects.count() == revisions
    return live


@pytest.fixture
def tracker(transactional_db):
    started = TripTracker(housekeeping_s=3600, geocode=False)
    started.start()
    yield started
    started.stop()


def test_hundreds_of_vehicles_interleaved_give_the_trips_a_rebuild_gives(tracker):
    devices = make_fleet(FLEET)
    for rows in interleaved(devices):
        deliver(tracker, rows)
    assert tracker.wait_idle(120)

    live = assert_same_as_a_rebuild(devices)
    per_vehicle = {}
    for trip in live["trips"]:
        per_vehicle[trip[1]] = per_vehicle.get(trip[1], 0) + 1
    # Every vehicle drove twice (the tunnel is bridged, the long silence is a parking).
    assert set(per_vehicle.values()) == {2} and len(per_vehicle) == FLEET
    assert {(t[2], t[9]) for t in live["trips"]} == {("active", "parked")}
    assert tracker.dropped == 0 and tracker.fleet.stats["fixes"] > 0
    for device in devices[:10]:
        assert verify_chain(device.vehicle_id).ok


def test_a_tracker_that_falls_behind_drops_work_and_catches_up_from_the_database(tracker):
    devices = make_fleet(100)
    batches = interleaved(devices)
    third = len(batches) // 3
    for number, rows in enumerate(batches):
        # For the middle third the tracker may hold nothing: every batch is dropped.
        tracker.max_queued = 0 if third <= number < 2 * third else 2_000
        deliver(tracker, rows)
        assert tracker.queued <= 2_000  # bounded, whatever the worker does
    assert tracker.wait_idle(120)

    assert tracker.dropped > 0 and tracker.caught_up > 0
    assert tracker.behind == 0 and tracker.queued == 0
    live = assert_same_as_a_rebuild(devices)
    assert len(live["trips"]) == 2 * len(devices)


def test_a_rebuild_while_the_tracker_runs_is_noticed_and_continued(tracker):
    devices = make_fleet(40)
    batches = interleaved(devices)
    half = len(batches) // 2
    for rows in batches[:half]:
        deliver(tracker, rows)
    assert tracker.wait_idle(60)
    # rebuild_trips for some vehicles while their machines are in the tracker's memory.
    for vehicle in Vehicle.objects.filter(pk__in=[d.vehicle_id for d in devices[:10]]):
        replay(vehicle, close=False)
    for rows in batches[half:]:
        deliver(tracker, rows)
    assert tracker.wait_idle(60)

    assert tracker.fleet.stats["stale"] >= 1  # it noticed, threw its machines away
    assert_same_as_a_rebuild(devices)
    for device in devices[:10]:
        assert verify_chain(device.vehicle_id).ok


def test_machines_lost_in_a_crash_are_derived_again_from_the_stored_positions(
        transactional_db):
    devices = make_fleet(30)
    batches = interleaved(devices)
    cut = len(batches) * 2 // 3
    # The first process derives (writing what is decided, saving machines rarely) ...
    crashed = LiveFleet(flush_s=3600)
    for rows in batches[:cut]:
        stored_at = timezone.now()
        store_batch(rows, [], set(), stored_at)
        batch: dict[int, list] = {}
        for row in rows:
            batch.setdefault(row.vehicle_id, []).append(live_row(row.device_id, stored_at, row.fix))
        assert crashed.feed(batch, timezone.now()) == ({}, True)
    assert crashed.dirty and Trip.objects.exists()  # progress that exists only in memory
    del crashed  # ... and dies without saving it.

    restarted = TripTracker(housekeeping_s=3600, geocode=False)
    restarted.start()
    try:
        for rows in batches[cut:]:
            deliver(restarted, rows)
        assert restarted.wait_idle(60)
    finally:
        restarted.stop()
    assert restarted.caught_up >= len(devices) - 1
    live = assert_same_as_a_rebuild(devices)
    assert len(live["trips"]) == 2 * len(devices)


def test_can_odometer_read_live_as_a_rebuild_reads_it(tracker):
    devices = make_fleet(3)
    for index in (0, 2):  # these units report an odometer; the CAN one overrides it
        device = devices[index]
        vehicle = device.vehicle
        vehicle.odometer_offset_km = 0.5 * index
        vehicle.save()
        SignalSample.objects.bulk_create(
            SignalSample(vehicle=vehicle, device=device, signal="odometer", time=f.fix_time,
                         value=round(f.odometer_km + 0.2 + index, 3))
            for f in story(index).fixes[::3])
    for rows in interleaved(devices):
        deliver(tracker, rows)
    assert tracker.wait_idle(60)

    live = assert_same_as_a_rebuild(devices)
    first = next(t for t in live["trips"] if t[1] == devices[2].vehicle_id)
    assert first[5] == pytest.approx(1002.0 + 0.2 + 2 + 1.0, abs=0.01)  # CAN + offset


def test_a_fix_that_decides_nothing_costs_no_query(transactional_db):
    (device,) = make_fleet(1)
    track = Track()
    track.emit(0.0)
    track.park(1800)
    rows = [live_row(device.pk, timezone.now(), f) for f in track.fixes]
    store_batch([PositionRow(device.pk, device.vehicle_id, device.organisation_id, f,
                             timezone.now()) for f in track.fixes], [], set(), timezone.now())
    fleet = LiveFleet(flush_s=0.0)
    missed, ok = fleet.feed({device.vehicle_id: rows[:10]}, timezone.now())
    assert ok and not missed
    assert fleet.flush()

    parked = Track(track.t, track.position())
    parked.park(600)
    more = [live_row(device.pk, timezone.now(), f) for f in parked.fixes]
    with CaptureQueriesContext(connection) as queries:
        missed, ok = fleet.feed({device.vehicle_id: more}, timezone.now())
    assert ok and not missed and len(queries) == 0
    with CaptureQueriesContext(connection) as queries:
        assert fleet.flush(everything=True)
    assert len(queries) == 1  # the saved machine: one UPDATE
    state = VehicleTripState.objects.get(vehicle_id=device.vehicle_id)
    assert state.last_fix_time == parked.fixes[-1].fix_time
