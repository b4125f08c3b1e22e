"""verify_logbook: a clean logbook passes; tampering with a trip or a revision is found."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from itertools import pairwise

import pytest
from django.core.management import CommandError, call_command

from logbook.models import CREATED, Trip, TripRevision
from logbook.services import classify, verify_chain
from tests.logbook.support import T0, Track, feed_live

pytestmark = pytest.mark.django_db


@pytest.fixture
def logbook(acme_unit, alice, people):
    vehicle = acme_unit.vehicle
    vehicle.default_driver = alice
    vehicle.save()
    track = Track()
    track.emit(0.0)
    track.park(600).drive(3000).park(900).drive(2000, heading=0.0).park(900)
    feed_live(acme_unit, track.fixes)
    first, second = Trip.objects.filter(vehicle=vehicle).order_by("start_time")
    classify([first], "business", purpose="Delivery", partner="Schulz GmbH",
             destination="Hauptstr. 1", actor=people["driver"], now=T0 + timedelta(hours=2))
    classify([second], "private", actor=people["driver"], now=T0 + timedelta(hours=3))
    return vehicle, first, second


def verify() -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("verify_logbook", stdout=out)
    except CommandError as error:
        return error.returncode, out.getvalue() + str(error)
    return 0, out.getvalue()


def test_clean_logbook_passes(logbook):
    vehicle, _, _ = logbook
    code, output = verify()
    assert code == 0, output
    assert f"{vehicle} (id {vehicle.pk}):" in output and ": ok" in output
    report = verify_chain(vehicle.pk)
    assert report.ok and report.trips == 2
    revisions = list(TripRevision.objects.filter(vehicle=vehicle).order_by("seq"))
    assert [r.seq for r in revisions] == list(range(1, len(revisions) + 1))
    assert revisions[0].field == CREATED and revisions[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in pairwise(revisions))


@pytest.mark.parametrize("change", [
    {"distance_m": 2500.0},
    {"end_odometer_km": 1.0},
    {"category": "business"},
    {"start_address": "Somewhere else"},
    {"driver": None},
])
def test_tampered_trip_is_detected(logbook, change):
    _, _, second = logbook
    Trip.objects.filter(pk=second.pk).update(**change)
    code, output = verify()
    assert code == 1
    assert "BROKEN" in output and f"trip {second.pk}" in output
    field = next(iter(change))
    assert (field if field != "driver" else "driver_id") in output


def test_tampered_route_is_detected(logbook):
    _, first, _ = logbook
    route = first.route
    route[1][1] += 0.001
    Trip.objects.filter(pk=first.pk).update(route=route)
    code, output = verify()
    assert code == 1 and "route" in output


@pytest.mark.parametrize("change", [
    {"new_value": "Pleasure"},
    {"actor_name": "boss"},
    {"time": T0},
])
def test_tampered_revision_is_detected(logbook, change):
    _, first, _ = logbook
    revision = first.revisions.get(field="purpose")
    TripRevision.objects.filter(pk=revision.pk).update(**change)
    code, output = verify()
    assert code == 1
    assert f"revision #{revision.seq}" in output and "altered" in output


def test_deleted_or_rehashed_revision_is_detected(logbook):
    _, first, _ = logbook
    revision = first.revisions.get(field="partner")
    # Deleting a revision leaves a hole in the chain.
    TripRevision.objects.filter(pk=revision.pk).delete()
    code, output = verify()
    assert code == 1 and "missing" in output


def test_rewritten_revision_with_a_fresh_hash_breaks_the_next_link(logbook):
    from logbook import chain

    _, first, _ = logbook
    revision = first.revisions.get(field="purpose")
    revision.new_value = "Pleasure"
    revision.hash = chain.revision_hash(revision.prev_hash, chain.revision_payload(revision),
                                        revision.trip_hash)
    revision.save()
    code, output = verify()
    assert code == 1 and "BROKEN" in output
