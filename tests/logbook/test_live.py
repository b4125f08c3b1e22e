"""Live derivation through the real ingest: Teltonika records over TCP become trip rows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from logbook.derivation import replay
from logbook.models import Trip, TripRevision, VehicleTripState
from logbook.services import verify_chain
from telematics.simulator.encoders import teltonika_avl, teltonika_login
from tests.logbook.support import Track
from tests.support import IMEI, db


async def send(port: int, fixes, per_packet: int = 25) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(teltonika_login(IMEI))
    assert await asyncio.wait_for(reader.readexactly(1), 5) == b"\x01"
    for start in range(0, len(fixes), per_packet):
        chunk = fixes[start:start + per_packet]
        writer.write(teltonika_avl(chunk))
        ack = await asyncio.wait_for(reader.readexactly(4), 5)
        assert int.from_bytes(ack, "big") == len(chunk)
    writer.close()


def trips_of(vehicle_id: int) -> list[tuple]:
    return list(Trip.objects.filter(vehicle_id=vehicle_id).order_by("start_time").values_list(
        "id", "status", "start_time", "end_time", "start_odometer_km", "end_odometer_km",
        "distance_m", "content_hash"))


async def test_teltonika_drive_over_tcp_becomes_trips_like_a_rebuild(ingest, fleet):
    tracker = ingest.pipeline.trip_tracker
    vehicle_id = fleet["teltonika"].vehicle_id
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    track = Track(start, odometer_km=48_000.0, ignition=True)
    track.emit(0.0)
    track.park(600).drive(3000).park(900).drive(2000, heading=0.0).park(900)

    await send(ingest.ports["teltonika"], track.fixes)
    assert await asyncio.to_thread(tracker.wait_idle, 20)

    live = await db(lambda: trips_of(vehicle_id))
    assert len(live) == 2
    (_, status, trip_start, _, start_km, end_km, distance, _) = live[0]
    assert status == "active"
    assert start + timedelta(minutes=10) <= trip_start <= start + timedelta(minutes=11)
    assert (end_km - start_km) * 1000 == distance
    assert abs(distance - 3000) < 40  # unit odometer, whole metres per record
    assert live[1][4] == live[0][5]  # continuous odometer
    state = await db(lambda: VehicleTripState.objects.get(vehicle_id=vehicle_id))
    assert state.last_fix_time == track.fixes[-1].fix_time

    # rebuild_trips replays the stored positions through the same code: same trips.
    def rebuild():
        from fleet.models import Vehicle

        revisions = TripRevision.objects.count()
        replay(Vehicle.objects.select_related("organisation").get(pk=vehicle_id))
        return trips_of(vehicle_id), TripRevision.objects.count() - revisions

    rebuilt, new_revisions = await db(rebuild)
    assert rebuilt == live and new_revisions == 0
    assert (await db(lambda: verify_chain(vehicle_id))).ok


async def test_late_records_over_tcp_are_rederived(ingest, fleet):
    tracker = ingest.pipeline.trip_tracker
    vehicle_id = fleet["teltonika"].vehicle_id
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    track = Track(start, odometer_km=1_000.0)
    track.emit(0.0)
    track.park(600).drive(3000).park(900)
    cut = len(track.fixes)
    track.drive(2000, heading=0.0).park(900)
    # The second half first (the first half was buffered by the unit), then the rest.
    await send(ingest.ports["teltonika"], track.fixes[cut:])
    assert await asyncio.to_thread(tracker.wait_idle, 20)
    assert len(await db(lambda: trips_of(vehicle_id))) == 1
    await send(ingest.ports["teltonika"], track.fixes[:cut])
    assert await asyncio.to_thread(tracker.wait_idle, 20)

    trips = await db(lambda: trips_of(vehicle_id))
    assert [t[1] for t in trips].count("active") == 2
    active = [t for t in trips if t[1] == "active"]
    assert active[1][4] == active[0][5]
    assert (await db(lambda: verify_chain(vehicle_id))).ok


def test_restarted_tracker_catches_up_with_positions_stored_meanwhile(
        transactional_db, acme, acme_unit):
    import time

    from logbook.live import TripTracker
    from tests.logbook.support import feed_live, store

    track = Track(datetime(2024, 5, 6, 7, 0, tzinfo=UTC))
    track.emit(0.0)
    track.park(600).drive(3000).park(900).drive(2000, heading=0.0).park(900)
    cut = len(track.fixes) * 3 // 4
    feed_live(acme_unit, track.fixes[:cut])
    store(acme_unit, track.fixes[cut:])  # stored while no tracker ran
    assert Trip.objects.count() == 1
    tracker = TripTracker(housekeeping_s=3600)
    tracker.start()
    try:
        deadline = time.monotonic() + 10
        while Trip.objects.count() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        tracker.stop()
    assert Trip.objects.count() == 2
    state = VehicleTripState.objects.get(vehicle=acme_unit.vehicle)
    assert state.last_fix_time == track.fixes[-1].fix_time
