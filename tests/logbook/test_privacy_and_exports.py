"""Privacy per role in selectors and exports; PDF and CSV read back."""

from __future__ import annotations

import csv
import io
import re
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from pypdf import PdfReader

from fleet.models import ApiKey, Vehicle
from fleet.selectors import Actor
from logbook.exports import export_csv, export_pdf
from logbook.models import Interface, NamedPlace, PlaceKind, Trip
from logbook.selectors import (
    VIEW_FIELDS,
    private_periods,
    revisions_of,
    trip_view,
    trips_visible_to,
)
from logbook.services import change_trip, classify
from telematics.services import register_unit
from tests.logbook.support import DEPOT, T0, Track, feed_live

pytestmark = pytest.mark.django_db
DAY = date(2024, 5, 6)
SECRET = "Secret Garden"


@pytest.fixture
def logbook(acme, acme_unit, alice, bob, people):
    """Alice: a business trip and a private one in Van 7; Bob: a trip in Car 3."""
    vehicle = acme_unit.vehicle
    vehicle.default_driver = alice
    vehicle.save()
    track = Track()
    track.emit(0.0)
    track.park(600).drive(3000)
    customer = track.position()
    track.park(900).drive(2000, heading=0.0)
    garden = track.position()
    track.park(900)
    NamedPlace.objects.create(organisation=acme, name="Depot", kind=PlaceKind.DEPOT,
                              latitude=DEPOT[0], longitude=DEPOT[1])
    NamedPlace.objects.create(organisation=acme, name="Schulz GmbH", kind=PlaceKind.CUSTOMER,
                              latitude=customer[0], longitude=customer[1])
    NamedPlace.objects.create(organisation=acme, name=SECRET, latitude=garden[0],
                              longitude=garden[1])
    feed_live(acme_unit, track.fixes)
    business, private = Trip.objects.filter(vehicle=vehicle).order_by("start_time")
    classify([business], "business", purpose="Delivery", partner="Schulz GmbH",
             destination="Schulz GmbH, Berlin", actor=people["driver"],
             now=T0 + timedelta(hours=2))
    classify([private], "private", actor=people["driver"], now=T0 + timedelta(hours=3))

    car = register_unit("359710049095095", "gt06", acme, vehicle_name="Car 3")
    car.vehicle.default_driver = bob
    car.vehicle.save()
    other = Track(at=(52.40, 13.30))
    other.emit(0.0)
    other.park(600).drive(2500).park(900)
    feed_live(car, other.fixes)
    (bobs,) = Trip.objects.filter(vehicle=car.vehicle)
    return {"vehicle": vehicle, "business": business, "private": private, "bobs": bobs}


def principal(people, role: str):
    if role == "api_key":
        key = ApiKey.objects.create(organisation=people["admin"].membership.organisation,
                                    name="Dispatch", prefix="abc123", hashed_key="x" * 64)
        return Actor.for_api_key(key)
    if role == "operator":
        return get_user_model().objects.create_superuser("root", password="pw-root")
    return people[role]


EXPECTED = {
    # role: (sees, private trip redacted)
    "admin": ({"business", "private", "bobs"}, True),
    "dispatcher": ({"business", "private", "bobs"}, True),
    "api_key": ({"business", "private", "bobs"}, True),
    "operator": ({"business", "private", "bobs"}, True),
    "driver": ({"business", "private"}, False),
    "other_driver": ({"bobs"}, None),
    "other_organisation": (set(), None),
}


@pytest.mark.parametrize("role", EXPECTED)
def test_privacy_per_role(logbook, people, role):
    who = principal(people, role)
    sees, redacted = EXPECTED[role]
    visible = set(trips_visible_to(who).values_list("pk", flat=True))
    assert visible == {logbook[name].pk for name in sees}
    if "private" not in sees:
        return
    private = trips_visible_to(who).get(pk=logbook["private"].pk)
    view = trip_view(private, who)
    assert set(view) == set(VIEW_FIELDS)
    assert view["redacted"] is redacted
    assert view["date"] == "2024-05-06" and view["category"] == "private"
    assert view["distance_km"] == pytest.approx(2.0, abs=0.05)
    assert view["start_odometer_km"] is not None and view["end_odometer_km"] is not None
    hidden = ("start_time", "end_time", "start_address", "end_address", "route",
              "start_latitude", "end_longitude", "driver", "duration_s", "max_speed_kmh")
    if redacted:
        assert all(view[key] is None for key in hidden)
        assert private_periods(who, logbook["vehicle"], private.start_time - timedelta(1),
                               private.end_time + timedelta(1)) == [
            (private.start_time, private.end_time)]
        for revision in revisions_of(private, who):
            assert SECRET not in str(revision["new"]) + str(revision["old"])
    else:
        assert view["end_address"] == SECRET and view["route"]
        assert view["driver"] == "alice"
    business = trip_view(trips_visible_to(who).get(pk=logbook["business"].pk), who)
    assert business["redacted"] is False and business["partner"] == "Schulz GmbH"


@pytest.mark.parametrize("role", EXPECTED)
def test_exports_honour_privacy_per_role(logbook, people, role):
    who = principal(people, role)
    vehicle = logbook["vehicle"]
    sees, redacted = EXPECTED[role]
    if role == "other_organisation":
        with pytest.raises(PermissionDenied):
            export_csv(vehicle, DAY, DAY, who)
        with pytest.raises(PermissionDenied):
            export_pdf(vehicle, DAY, DAY, who)
        return
    rows = list(csv.DictReader(io.StringIO(export_csv(vehicle, DAY, DAY, who))))
    trip_ids = {int(r["id"]) for r in rows if r["record"] == "trip"}
    assert trip_ids == {logbook[n].pk for n in sees if n != "bobs"}
    text = pdf_text(export_pdf(vehicle, DAY, DAY, who))
    if "private" in sees:
        row = next(r for r in rows if r["id"] == str(logbook["private"].pk))
        assert row["category"] == "private" and row["distance_km"] == "2.0"
        assert (SECRET in text) is (not redacted)
        assert any(SECRET in v for v in row.values()) is (not redacted)
        assert (row["start_time"] == "") is redacted
    else:
        assert SECRET not in text and "Schulz GmbH" not in text


def pdf_text(data: bytes) -> str:
    assert data.startswith(b"%PDF-")
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def test_pdf_for_the_tax_office_reads_back(logbook, people):
    vehicle: Vehicle = logbook["vehicle"]
    business, private = logbook["business"], logbook["private"]
    text = pdf_text(export_pdf(vehicle, DAY, DAY, people["driver"]))
    flat = " ".join(text.split())
    assert "Logbook (Fahrtenbuch) Van 7 — B-AC 7" in flat
    assert "Period: 2024-05-06 to 2024-05-06 (times in Europe/Berlin)" in flat
    # The trip table: date, local times, addresses, odometer, distance, category, details.
    assert "2024-05-06" in flat
    start = business.start_time.astimezone(ZoneInfo("Europe/Berlin"))
    assert f"{start:%H:%M}" in flat
    assert "Depot" in flat and "Schulz GmbH" in flat and SECRET in flat
    assert f"{business.start_odometer_km:.1f}" in flat and f"{business.end_odometer_km:.1f}" in flat
    assert "Purpose: Delivery; partner: Schulz GmbH; destination: Schulz GmbH, Berlin" in flat
    assert f"{private.end_odometer_km:.1f}" in flat
    # Totals per month and year, per category.
    assert "Totals per category (km)" in flat
    assert re.search(r"2024-05 3\.0 0\.0 2\.0 0\.0 5\.0", flat), flat
    assert re.search(r"2024 3\.0 0\.0 2\.0 0\.0 5\.0", flat)
    # The revision history and the content hash.
    assert "Revision history" in flat
    assert "purpose: '' → 'Delivery'" in flat and "alice" in flat
    digest = re.search(r"Content SHA-256: ([0-9a-f]{64})", flat)
    assert digest is not None
    rows = list(csv.DictReader(io.StringIO(export_csv(vehicle, DAY, DAY, people["driver"]))))
    assert rows[-1]["record"] == "hash" and rows[-1]["note"] == digest.group(1)


def test_csv_reads_back(logbook, people):
    vehicle = logbook["vehicle"]
    business, private = logbook["business"], logbook["private"]
    text = export_csv(vehicle, DAY, DAY, people["admin"])
    rows = list(csv.DictReader(io.StringIO(text)))
    trips = [r for r in rows if r["record"] == "trip"]
    assert [int(r["id"]) for r in trips] == [business.pk, private.pk]
    first = trips[0]
    assert first["date"] == "2024-05-06" and first["category"] == "business"
    assert (first["purpose"], first["partner"]) == ("Delivery", "Schulz GmbH")
    assert first["start_address"] == "Depot" and first["end_address"] == "Schulz GmbH"
    assert float(first["distance_km"]) == pytest.approx(
        float(first["end_odometer_km"]) - float(first["start_odometer_km"]))
    assert trips[1]["start_odometer_km"] == first["end_odometer_km"]  # continuous
    assert "purpose '' -> 'Delivery'" in first["revisions"]
    assert first["driver"] == "alice"
    assert first["status"] == "locked"  # read years after 2024: the window has closed
    months = {r["category"]: r["distance_km"] for r in rows if r["record"] == "month"}
    assert months == {"business": "3.0", "commute": "0.0", "private": "2.0",
                      "unclassified": "0.0"}
    assert rows[-1]["record"] == "hash" and len(rows[-1]["note"]) == 64
    # The same export twice hashes the same; a change to the logbook changes the hash.
    assert export_csv(vehicle, DAY, DAY, people["admin"]).splitlines()[-1] == text.splitlines()[-1]
    change_trip(business, {"note": "late note"}, interface=Interface.ADMIN)
    assert export_csv(vehicle, DAY, DAY, people["admin"]).splitlines()[-1] != text.splitlines()[-1]


def test_unclassified_trip_the_rules_call_private_is_hidden_too(acme_unit, alice, people):
    """A Sunday trip stays hidden from the fleet manager before the driver confirms it."""
    from datetime import UTC, datetime

    vehicle = acme_unit.vehicle
    vehicle.default_driver = alice
    vehicle.save()
    track = Track(datetime(2024, 5, 5, 10, 0, tzinfo=UTC))
    track.emit(0.0)
    track.park(600).drive(3000).park(900)
    feed_live(acme_unit, track.fixes)
    (trip,) = Trip.objects.filter(vehicle=vehicle)
    assert trip.category == "" and trip.suggested_category == "private"
    for role in ("admin", "dispatcher"):
        view = trip_view(trip, people[role])
        assert view["redacted"] and view["route"] is None and view["start_time"] is None
    assert not trip_view(trip, people["driver"])["redacted"]
