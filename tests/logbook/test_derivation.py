"""Trips into the database: import, live batches, late fixes, rebuilds and the odometer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import call_command

from logbook.derivation import close_silent_vehicles, replay
from logbook.models import (
    GapStatus,
    OdometerGap,
    Trip,
    TripCheckpoint,
    TripRevision,
    TripStatus,
    VehicleTripState,
)
from logbook.services import assign_driver, classify, verify_chain
from logbook.tripstate import TripEnded, TripStateMachine
from telematics.models import SignalSample
from telematics.protocols.nmea import decode_lines
from tests.logbook.support import T0, Track, feed_live, store

JOSM = Path(__file__).resolve().parent.parent / "data" / "nmea" / "josm-1433-drive-2008-08-14.nmea"
pytestmark = pytest.mark.django_db


def snapshot(vehicle) -> list[tuple]:
    return list(Trip.objects.filter(vehicle=vehicle).order_by("start_time", "id").values_list(
        "id", "status", "start_time", "end_time", "start_odometer_km", "end_odometer_km",
        "distance_m", "base_hash", "content_hash"))


def two_trips(t0=T0, odometer_km=None, key=None) -> Track:
    """Depot -> customer 3 km east -> 2 km north, parked 10 minutes between and after."""
    track = Track(t0, odometer_km=odometer_km, driver_key=key)
    track.emit(0.0)
    track.park(600).drive(3000).park(900).drive(2000, heading=0.0).park(900)
    return track


# --------------------------------------------------------------------------- history


def test_josm_drive_imported_with_import_track_is_one_trip(acme, acme_unit, tmp_path):
    call_command("import_track", str(JOSM), "--device", acme_unit.identifier)

    (trip,) = Trip.objects.filter(vehicle=acme_unit.vehicle)
    # The same fixes through the pure state machine, closed after the vehicle fell silent.
    fixes, errors = decode_lines(JOSM.read_text())
    assert errors == []
    machine = TripStateMachine(odometer_km=0.0)
    events = [e for f in fixes for e in machine.feed(f)]
    events += machine.finish(fixes[-1].fix_time + timedelta(hours=1))
    (expected,) = [e.trip for e in events if isinstance(e, TripEnded)]
    assert trip.start_time == expected.start_time == datetime(2008, 8, 14, 15, 9, 28, tzinfo=UTC)
    assert trip.end_time == expected.end_time == datetime(2008, 8, 14, 15, 26, 11, tzinfo=UTC)
    assert trip.distance_m == expected.distance_m
    assert 7100 < trip.distance_m < 7300
    assert trip.duration_s == 16 * 60 + 43
    assert trip.max_speed_kmh == expected.max_speed_kmh
    assert (trip.start_odometer_km, trip.end_odometer_km) == (0.0, expected.end_odometer_km)
    assert trip.odometer_source == "gps" and trip.end_reason == "parked"
    assert len(trip.route) == len(expected.route)
    assert trip.status == TripStatus.ACTIVE and trip.category == ""
    # Imported again: nothing new, nothing changed.
    before = snapshot(acme_unit.vehicle)
    call_command("import_track", str(JOSM), "--device", acme_unit.identifier)
    assert snapshot(acme_unit.vehicle) == before
    assert verify_chain(acme_unit.vehicle_id).ok


def test_gpx_import(acme, acme_unit, tmp_path):
    track = two_trips()
    points = "\n".join(
        f'<trkpt lat="{f.latitude}" lon="{f.longitude}"><time>{f.fix_time:%Y-%m-%dT%H:%M:%SZ}'
        f"</time><speed>{f.speed_kmh / 3.6}</speed></trkpt>" for f in track.fixes)
    path = tmp_path / "drive.gpx"
    path.write_text(
        '<?xml version="1.0"?><gpx version="1.0" creator="test" '
        'xmlns="http://www.topografix.com/GPX/1/0"><trk><trkseg>'
        f"{points}</trkseg></trk></gpx>")
    call_command("import_track", str(path), "--device", acme_unit.identifier)
    trips = list(Trip.objects.filter(vehicle=acme_unit.vehicle).order_by("start_time"))
    assert len(trips) == 2
    assert trips[0].distance_m == pytest.approx(3000, rel=0.02)
    assert trips[1].distance_m == pytest.approx(2000, rel=0.02)


# --------------------------------------------------------------------------- live and rebuild


def test_live_batches_and_rebuild_give_the_same_trips(acme, acme_unit):
    track = two_trips()
    vehicle = feed_live(acme_unit, track.fixes, batch=37)
    live = snapshot(vehicle)
    assert len(live) == 2
    first, second = Trip.objects.filter(vehicle=vehicle).order_by("start_time")
    assert first.distance_m == pytest.approx(3000, rel=0.01)
    assert second.start_odometer_km == first.end_odometer_km  # continuous
    assert first.end_reason == second.end_reason == "parked"
    revisions = TripRevision.objects.count()

    call_command("rebuild_trips", "--vehicle", str(vehicle.pk))
    assert snapshot(vehicle) == live  # same ids, same content, nothing superseded
    assert TripRevision.objects.count() == revisions
    call_command("rebuild_trips", "--from", (T0 + timedelta(minutes=20)).isoformat())
    assert snapshot(vehicle) == live
    assert verify_chain(vehicle.pk).ok


def test_restart_continues_from_the_saved_state(acme, acme_unit):
    """Each batch loads the machine from the database: a new process continues it."""
    track = two_trips()
    half = len(track.fixes) // 2
    feed_live(acme_unit, track.fixes[:half])
    state = VehicleTripState.objects.get(vehicle=acme_unit.vehicle)
    assert state.machine is not None and state.last_fix_time == track.fixes[half - 1].fix_time
    feed_live(acme_unit, track.fixes[half:])
    assert Trip.objects.filter(vehicle=acme_unit.vehicle).count() == 2


def test_a_silent_vehicle_gets_its_trip_closed(acme, acme_unit):
    track = Track()
    track.emit(0.0)
    track.park(600).drive(3000)  # the unit sleeps right after arriving
    vehicle = feed_live(acme_unit, track.fixes, now=track.t + timedelta(minutes=5))
    assert not Trip.objects.filter(vehicle=vehicle).exists()
    assert VehicleTripState.objects.get(vehicle=vehicle).driving_since is not None
    assert close_silent_vehicles(track.t + timedelta(minutes=59), grace_s=0) == 0
    assert close_silent_vehicles(track.t + timedelta(hours=1)) == 0  # updated just now
    assert close_silent_vehicles(track.t + timedelta(hours=1), grace_s=0) == 1
    (trip,) = Trip.objects.filter(vehicle=vehicle)
    assert trip.end_time == track.fixes[-1].fix_time and trip.end_reason == "silent"
    # A rebuild closes it at the same moment (last fix + close_after_s).
    before = snapshot(vehicle)
    replay(vehicle, now=track.t + timedelta(hours=2))
    assert snapshot(vehicle) == before


# --------------------------------------------------------------------------- late fixes


def test_late_fixes_rederive_only_the_affected_trips(acme, acme_unit, people, alice):
    """The unit buffered a trip while out of coverage and delivers it after the next one."""
    track = Track(odometer_km=1000.0)
    track.emit(0.0)
    track.park(600).drive(3000).park(900)  # trip 1: depot -> customer
    early = len(track.fixes)
    track.drive(2000, heading=0.0).drive(2000, heading=180.0)  # buffered: there and back
    track.park(600)
    buffered = slice(early, len(track.fixes))
    track.drive(2500, heading=90.0).park(900)  # trip 3: after coverage returned
    delivered = track.fixes[:early] + track.fixes[buffered.stop:]
    vehicle = feed_live(acme_unit, delivered)
    trips = list(Trip.objects.filter(vehicle=vehicle).order_by("start_time"))
    assert len(trips) == 2
    (gap,) = OdometerGap.objects.filter(vehicle=vehicle)
    assert gap.km == pytest.approx(4.0, abs=0.05) and gap.status == GapStatus.OPEN
    assign_driver(vehicle, alice, T0, now=T0 + timedelta(hours=2))
    classify([trips[0]], "business", purpose="Delivery", partner="Customer",
             destination="Customer site", actor=people["driver"], now=T0 + timedelta(hours=2))

    # The buffer arrives late (the tracker waits for a backlog to settle: one batch).
    feed_live(acme_unit, track.fixes[buffered], batch=10_000)

    after = list(Trip.objects.filter(vehicle=vehicle, status=TripStatus.ACTIVE)
                 .order_by("start_time"))
    assert len(after) == 3
    assert after[0].pk == trips[0].pk and after[0].category == "business"  # untouched
    late = after[1]
    assert late.distance_m == pytest.approx(4000, abs=30)
    assert late.start_odometer_km == after[0].end_odometer_km
    # The trip after it now starts at the late trip's end reading (the 28 m the unit
    # counted while manoeuvring are absorbed): changed base data, a visible correction.
    trips[1].refresh_from_db()
    assert trips[1].status == TripStatus.SUPERSEDED
    assert after[2].corrects.get() == trips[1]
    assert after[2].start_time == trips[1].start_time
    assert after[2].start_odometer_km == late.end_odometer_km
    gap.refresh_from_db()
    assert gap.status == GapStatus.OBSOLETE  # the gap is explained by the late trip
    assert verify_chain(vehicle.pk).ok


def test_late_fix_that_changes_a_trip_supersedes_it_visibly(acme, acme_unit, people, alice):
    track = two_trips()
    fixes = track.fixes
    # Hold back the fixes of the first drive's last minute: the trip ends early.
    first_stop = next(i for i, f in enumerate(fixes) if i > 30 and f.speed_kmh == 0.0)
    held = fixes[first_stop - 30:first_stop]
    vehicle = feed_live(acme_unit, fixes[:first_stop - 30] + fixes[first_stop:])
    original = Trip.objects.filter(vehicle=vehicle).order_by("start_time").first()
    assign_driver(vehicle, alice, T0, now=T0 + timedelta(hours=2))
    classify([original], "business", purpose="Delivery", partner="ACME", destination="Site",
             actor=people["driver"], now=T0 + timedelta(hours=2))

    feed_live(acme_unit, held, batch=10_000)

    original.refresh_from_db()
    assert original.status == TripStatus.SUPERSEDED  # kept, visibly
    replacement = original.corrected_by.get()
    assert replacement.status == TripStatus.ACTIVE
    assert replacement.distance_m > original.distance_m
    # The driver's classification carries over, as a revision that says so.
    assert (replacement.category, replacement.purpose) == ("business", "Delivery")
    assert replacement.revisions.filter(reason__startswith="carried over").exists()
    # Same as a rebuild of the complete history.
    current = snapshot(vehicle)
    call_command("rebuild_trips", "--vehicle", str(vehicle.pk))
    assert snapshot(vehicle) == current
    assert verify_chain(vehicle.pk).ok


# --------------------------------------------------------------------------- odometer


def test_gps_odometer_is_continuous_and_a_jump_is_an_explicit_gap(acme, acme_unit):
    acme_unit.vehicle.odometer_offset_km = 12_000.0
    acme_unit.vehicle.save()
    track = Track()
    track.emit(0.0)
    track.park(600).drive(3000).park(900)
    track.silence(4 * 3600)
    track.move(5000, 0.0)  # moved unseen (unit unplugged)
    track.park(300).drive(2000).park(900)
    vehicle = feed_live(acme_unit, track.fixes)
    first, second = Trip.objects.filter(vehicle=vehicle).order_by("start_time")
    assert first.start_odometer_km == 12_000.0
    assert first.end_odometer_km == pytest.approx(12_003.0, abs=0.03)
    (gap,) = OdometerGap.objects.filter(vehicle=vehicle)
    assert gap.from_km == first.end_odometer_km
    assert gap.to_km == second.start_odometer_km
    assert gap.km == pytest.approx(5.0, abs=0.05)
    assert gap.source == "gps" and gap.status == GapStatus.OPEN


def test_can_odometer_is_the_logbook_odometer(acme, acme_unit):
    vehicle = acme_unit.vehicle
    vehicle.odometer_offset_km = 0.5
    vehicle.save()
    track = two_trips(odometer_km=5000.0)
    # The unit's own odometer is ignored once the vehicle reports a CAN odometer (+0.2 km).
    can = [SignalSample(vehicle=vehicle, device=acme_unit, signal="odometer", time=f.fix_time,
                        value=round(f.odometer_km + 0.2, 3)) for f in track.fixes]
    SignalSample.objects.bulk_create(can)
    feed_live(acme_unit, track.fixes)
    first, second = Trip.objects.filter(vehicle=vehicle).order_by("start_time")
    assert first.odometer_source == "unit"
    assert first.start_odometer_km == pytest.approx(5000.7)
    assert first.end_odometer_km == pytest.approx(5003.7, abs=0.01)
    assert first.distance_m == pytest.approx(3000, abs=10)
    assert second.start_odometer_km == first.end_odometer_km


# --------------------------------------------------------------------------- drivers


def test_driver_from_key_app_session_or_default(acme, acme_unit, people, alice, bob):
    vehicle = acme_unit.vehicle
    vehicle.default_driver = bob
    vehicle.save()
    track = Track(driver_key=alice.identification_key)
    track.emit(0.0)
    track.park(600).drive(3000).park(900)
    track.driver_key = None
    track.drive(2000).park(900)
    feed_live(acme_unit, track.fixes)
    first, second = Trip.objects.filter(vehicle=vehicle).order_by("start_time")
    assert (first.driver, first.driver_source) == (alice, "key")
    assert (second.driver, second.driver_source) == (bob, "default")
    # Alice chose the van in the app before the second trip: it becomes hers, as a revision.
    assign_driver(vehicle, alice, second.start_time - timedelta(minutes=1),
                  actor=people["driver"], now=second.end_time + timedelta(hours=1))
    second.refresh_from_db()
    assert (second.driver, second.driver_source) == (alice, "app")
    assert second.revisions.filter(field="driver_id", actor_name="alice").exists()


def test_checkpoints_are_saved_at_trip_ends(acme, acme_unit):
    feed_live(acme_unit, two_trips().fixes)
    assert TripCheckpoint.objects.filter(vehicle=acme_unit.vehicle).count() == 2
    store(acme_unit, [])  # nothing stored, nothing happens


def test_fleet_manager_explains_an_odometer_gap(acme, acme_unit, people):
    from django.core.exceptions import PermissionDenied

    from logbook.services import explain_gap

    track = Track(odometer_km=100.0)
    track.emit(0.0)
    track.park(600).drive(3000).park(900)
    track.silence(3600)
    track.move(8000, 0.0)
    track.park(300).drive(1000).park(900)
    feed_live(acme_unit, track.fixes)
    (gap,) = OdometerGap.objects.filter(vehicle=acme_unit.vehicle)
    assert gap.source == "unit" and gap.km == pytest.approx(8.0, abs=0.05)
    with pytest.raises(PermissionDenied):
        explain_gap(gap, "Test drive", actor=people["driver"])
    explain_gap(gap, "Workshop test drive", actor=people["admin"])
    gap.refresh_from_db()
    assert (gap.status, gap.note, gap.noted_by) == ("explained", "Workshop test drive", "boss")
    # A rebuild keeps the explained gap.
    call_command("rebuild_trips", "--vehicle", str(acme_unit.vehicle_id))
    gap.refresh_from_db()
    assert gap.status == "explained"
