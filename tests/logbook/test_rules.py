"""The logbook rules: suggestions, classification, the edit window, locking, corrections."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command

from logbook.models import (
    Category,
    Interface,
    NamedPlace,
    PlaceKind,
    Trip,
    TripOrigin,
    TripStatus,
    VehicleLogbook,
)
from logbook.services import (
    LogbookError,
    cancel_trip,
    change_trip,
    classify,
    confirm_suggestions,
    lock_due_trips,
    merge_trips,
    split_trip,
    suggest_category,
    verify_chain,
)
from tests.logbook.support import DEPOT, T0, Track, feed_live

pytestmark = pytest.mark.django_db
SUNDAY = datetime(2024, 5, 5, 10, 0, tzinfo=UTC)  # 12:00 in Berlin


def drive(unit, t0=T0, legs=((3000, 90.0), (2000, 0.0))) -> list[Trip]:
    track = Track(t0)
    track.emit(0.0)
    track.park(600)
    for metres, heading in legs:
        track.drive(metres, heading=heading).park(900)
    feed_live(unit, track.fixes)
    return list(Trip.objects.filter(vehicle=unit.vehicle, start_time__gte=t0)
                .order_by("start_time"))


@pytest.fixture
def van(acme_unit, alice):
    vehicle = acme_unit.vehicle
    vehicle.default_driver = alice
    vehicle.save()
    return acme_unit


# --------------------------------------------------------------------------- suggestions


def test_working_hours_suggest_business_and_a_sunday_private(van):
    (sunday,) = drive(van, SUNDAY, legs=((3000, 90.0),))
    monday, _ = drive(van)
    assert suggest_category(monday).category == Category.BUSINESS
    assert suggest_category(monday).reason == "working hours"
    assert suggest_category(sunday).category == Category.PRIVATE
    assert (monday.suggested_category, sunday.suggested_category) == ("business", "private")


def test_named_place_and_vehicle_default_suggest(acme, van, alice):
    customer_at = Track().park(0).drive(3000).position()
    NamedPlace.objects.create(organisation=acme, name="Bäckerei Schulz",
                              kind=PlaceKind.CUSTOMER, latitude=customer_at[0],
                              longitude=customer_at[1], radius_m=150)
    NamedPlace.objects.create(organisation=acme, name="Depot", kind=PlaceKind.DEPOT,
                              latitude=DEPOT[0], longitude=DEPOT[1])
    to_customer, onwards = drive(van)
    s = suggest_category(to_customer)
    assert (s.category, s.partner, s.destination) == ("business", "Bäckerei Schulz",
                                                       "Bäckerei Schulz")
    assert to_customer.end_address == "Bäckerei Schulz"
    VehicleLogbook.objects.create(vehicle=van.vehicle, default_category=Category.BUSINESS,
                                  default_purpose="Deliveries")
    assert suggest_category(onwards).category == "business"
    assert suggest_category(onwards).reason == "vehicle default"
    assert suggest_category(to_customer).purpose == "Deliveries"


def test_home_to_depot_is_a_commute(acme, van, alice):
    home = Track().park(0).drive(3000).position()
    NamedPlace.objects.create(organisation=acme, name="Depot", kind=PlaceKind.DEPOT,
                              latitude=DEPOT[0], longitude=DEPOT[1])
    NamedPlace.objects.create(organisation=acme, name="Home", kind=PlaceKind.HOME,
                              latitude=home[0], longitude=home[1], driver=alice)
    first, _ = drive(van)
    s = suggest_category(first)
    assert (s.category, s.note) == ("commute", "Home – workplace")


# --------------------------------------------------------------------------- classification


def test_business_needs_purpose_partner_and_destination(van, people):
    first, second = drive(van)
    with pytest.raises(LogbookError) as error:
        classify([first, second], "business", purpose="Delivery", actor=people["driver"],
                 now=T0 + timedelta(hours=2))
    assert error.value.messages_by_trip == {
        trip.pk: {
            "partner": "A business trip needs the business partner visited.",
            "destination": "A business trip needs its destination.",
        } for trip in (first, second)
    }
    assert not Trip.objects.exclude(category="").exists()  # all or nothing
    with pytest.raises(LogbookError) as error:
        classify([first], "commute", actor=people["driver"], now=T0 + timedelta(hours=2))
    assert set(error.value.messages_by_trip[first.pk]) == {"note"}

    classify([first, second], "business", purpose="Delivery", partner="Schulz GmbH",
             destination="Hauptstr. 1, Berlin", actor=people["driver"],
             now=T0 + timedelta(hours=2))
    first.refresh_from_db()
    assert (first.category, first.purpose, first.partner) == ("business", "Delivery",
                                                              "Schulz GmbH")
    revision = first.revisions.get(field="purpose")
    assert (revision.old_value, revision.new_value) == ("", "Delivery")
    assert (revision.actor_name, revision.interface) == ("alice", Interface.APP)


def test_private_keeps_only_date_odometer_and_distance(van, people):
    first, _ = drive(van)
    classify([first], "business", purpose="x", partner="y", destination="z",
             actor=people["driver"], now=T0 + timedelta(hours=1))
    classify([first], "private", purpose="ignored", actor=people["driver"],
             now=T0 + timedelta(hours=2))
    first.refresh_from_db()
    assert (first.category, first.purpose, first.partner, first.destination) == (
        "private", "", "", "")


def test_one_tap_confirms_the_suggestions(van, people):
    (sunday,) = drive(van, SUNDAY, legs=((3000, 90.0),))
    confirm_suggestions([sunday], actor=people["driver"], now=SUNDAY + timedelta(hours=2))
    sunday.refresh_from_db()
    assert sunday.category == "private"
    monday, _ = drive(van)
    with pytest.raises(LogbookError) as error:  # business, but nobody knows the purpose yet
        confirm_suggestions([monday], actor=people["driver"], now=T0 + timedelta(hours=2))
    assert "purpose" in error.value.messages_by_trip[monday.pk]


def test_only_the_driver_classifies_their_trip(van, people):
    first, _ = drive(van)
    for role in ("other_driver", "admin", "dispatcher", "other_organisation"):
        with pytest.raises(PermissionDenied):
            classify([first], "private", actor=people[role], now=T0 + timedelta(hours=1))


def test_base_data_is_never_editable(van):
    first, _ = drive(van)
    for field, value in (("start_time", T0), ("distance_m", 1.0), ("start_odometer_km", 0.0),
                         ("end_latitude", 0.0), ("route", [])):
        with pytest.raises(ValueError, match="base data"):
            change_trip(first, {field: value}, interface=Interface.ADMIN)
    change_trip(first, {"end_address": "Somewhere"}, interface=Interface.GEOCODER)
    with pytest.raises(ValueError, match="base data"):
        change_trip(first, {"end_address": "Elsewhere"}, interface=Interface.ADMIN)


# --------------------------------------------------------------------------- the edit window


def test_edit_window_edge_exactly_seven_days(van, people):
    first, second = drive(van)
    window = timedelta(days=7)
    classify([first], "business", purpose="Delivery", partner="Schulz", destination="Mitte",
             actor=people["driver"], now=first.end_time + window - timedelta(seconds=1))
    with pytest.raises(LogbookError) as error:
        classify([second], "business", purpose="Delivery", partner="Schulz",
                 destination="Mitte", actor=people["driver"],
                 now=second.end_time + window + timedelta(seconds=1))
    assert "locked" in error.value.messages_by_trip[second.pk]["__all__"]
    second.refresh_from_db()
    assert second.locked_at == second.end_time + window + timedelta(seconds=1)
    assert second.category == "private"  # unclassified when the window closed
    first.refresh_from_db()
    assert first.category == "business" and first.locked_at is not None


def test_lock_logbook_turns_unclassified_into_private_and_locks_all(van, people):
    first, second = drive(van)
    classify([first], "business", purpose="Delivery", partner="Schulz", destination="Mitte",
             actor=people["driver"], now=T0 + timedelta(hours=1))
    assert lock_due_trips(now=second.end_time + timedelta(days=6)) == 0
    call_command("lock_logbook")  # today is years after 2024
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.category, second.category) == ("business", "private")
    assert first.locked_at and second.locked_at
    change = second.revisions.get(field="category")
    assert (change.old_value, change.new_value, change.interface) == ("", "private", "lock")
    assert change.reason == "unclassified when the edit window closed"
    assert verify_chain(van.vehicle_id).ok


# --------------------------------------------------------------------------- corrections


def test_cancellation_is_visible_and_needs_a_reason(van, people):
    first, _ = drive(van)
    now = T0 + timedelta(hours=2)
    with pytest.raises(ValidationError):
        cancel_trip(first, "  ", actor=people["driver"], now=now)
    cancel_trip(first, "Towed to the workshop", actor=people["admin"], now=now)
    first.refresh_from_db()
    assert (first.status, first.status_reason) == ("cancelled", "Towed to the workshop")
    assert Trip.objects.filter(pk=first.pk).exists()


def test_merge_and_split_keep_the_originals(van, people):
    first, second = drive(van)
    now = T0 + timedelta(hours=2)
    merged = merge_trips([first, second], actor=people["driver"], now=now)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (TripStatus.MERGED, TripStatus.MERGED)
    assert merged.origin == TripOrigin.MERGE
    assert set(merged.corrects.all()) == {first, second}
    assert (merged.start_time, merged.end_time) == (first.start_time, second.end_time)
    assert merged.start_odometer_km == first.start_odometer_km
    assert merged.end_odometer_km == second.end_odometer_km

    at = first.end_time + (second.start_time - first.end_time) / 2
    one, two = split_trip(merged, at, actor=people["driver"], now=now)
    merged.refresh_from_db()
    assert merged.status == TripStatus.SPLIT
    assert one.end_odometer_km == two.start_odometer_km
    assert one.distance_m + two.distance_m == pytest.approx(merged.distance_m)
    assert one.start_time == merged.start_time and two.end_time == merged.end_time
    assert verify_chain(van.vehicle_id).ok
    # A rebuild leaves the person's corrections alone.
    call_command("rebuild_trips", "--vehicle", str(van.vehicle_id))
    assert set(Trip.objects.filter(status="active").values_list("pk", flat=True)) == {
        one.pk, two.pk}
    assert verify_chain(van.vehicle_id).ok
