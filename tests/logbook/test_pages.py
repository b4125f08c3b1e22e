"""The logbook pages per role: the driver's day, one tap, the window, managers' overview."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, time, timedelta
from html import unescape
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from fleet.models import Vehicle
from logbook.models import (
    Category,
    DriverSession,
    GapStatus,
    Interface,
    NamedPlace,
    OdometerGap,
    PlaceKind,
    Trip,
    TripRevision,
    VehicleLogbook,
)
from tests.dashboard.test_views import assets_of
from tests.logbook.factories import ago, make_gap, make_trip

pytestmark = pytest.mark.django_db
BERLIN = ZoneInfo("Europe/Berlin")
SECRET = "Secret Garden"


def login(client, user):
    assert client.login(username=user.username, password=f"pw-{user.username}")
    return client


def two_days_ago_at_ten() -> datetime:
    """10:00 in Berlin two days ago: inside the default working hours."""
    day = timezone.now().astimezone(ZoneInfo("Europe/Berlin")).date() - timedelta(days=2)
    return datetime.combine(day, time(10), ZoneInfo("Europe/Berlin"))


def today_start() -> datetime:
    """A start time today (Berlin), at least 25 minutes before now when the day allows."""
    now = timezone.now()
    midnight = datetime.combine(now.astimezone(BERLIN).date(), time(), BERLIN)
    return max(midnight + timedelta(minutes=1), now - timedelta(minutes=45))


@pytest.fixture
def book(acme, acme_van, alice, bob, people):
    """Alice drives Van 7: trips of today, to classify, about to lock, past the window,
    private and business ones, and an odometer gap; Bob drives Car 3."""
    acme_van.default_driver = alice
    acme_van.save()
    car = Vehicle.objects.create(organisation=acme, name="Car 3", default_driver=bob)
    VehicleLogbook.objects.create(vehicle=acme_van, default_purpose="Delivery")
    customer = NamedPlace.objects.create(
        organisation=acme, name="Schulz GmbH", kind=PlaceKind.CUSTOMER, latitude=52.6,
        longitude=13.4)
    trips = {
        "old": make_trip(acme_van, ago(days=9), driver=alice, suggested="business"),
        "soon": make_trip(acme_van, ago(days=6, hours=20), driver=alice, suggested="business",
                          end_address="Lager Nord"),
        "business": make_trip(acme_van, ago(days=3), driver=alice, category="business",
                              purpose="Delivery", partner="Schulz GmbH",
                              destination="Schulz GmbH, Berlin"),
        # In working hours, whenever the suite runs: after hours the rules would suggest
        # "private", which needs nothing and so is rightly a one-tap button.
        "open": make_trip(acme_van, two_days_ago_at_ten(), driver=alice, suggested="business",
                          end_address="Meyer KG, Potsdam"),
        "private": make_trip(acme_van, ago(days=1), driver=alice, category="private",
                             end_address=SECRET),
        "tap": make_trip(acme_van, ago(hours=30), driver=alice, suggested="business",
                         end_place=customer, end_address="Schulz GmbH, Berlin"),
        "today": make_trip(acme_van, today_start(), minutes=15, driver=alice,
                           suggested="business", end_address="Bäckerei Kranz"),
        "bobs": make_trip(car, ago(days=1), driver=bob, suggested="business",
                          end_address="Bobs Baustelle"),
    }
    gap = make_gap(acme_van, trips["open"])
    return {"van": acme_van, "car": car, "gap": gap, **trips}


def text(response) -> str:
    return unescape(response.content.decode())


def page(client, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, response.status_code
    return response.content.decode()


# --------------------------------------------------------------------------- the driver


def test_driver_sees_today_and_what_to_classify_but_only_their_own(client, book, people):
    html = page(login(client, people["driver"]), "/logbook/")
    assert "My logbook" in html
    today = html[html.index('id="today"'):]
    assert f'data-trip="{book["today"].pk}"' in today and "Bäckerei Kranz" in today
    to_classify = html[html.index('id="to-classify"'):html.index('id="today"')]
    for name in ("open", "soon", "tap", "today"):
        assert f'id="trip-{book[name].pk}"' in to_classify, name
    for name in ("business", "private", "old"):  # classified, or locked private by now
        assert f'id="trip-{book[name].pk}"' not in to_classify, name
    assert "Bobs Baustelle" not in html and f'data-trip="{book["bobs"].pk}"' not in html
    # Her own private trip is hers to see in full.
    assert SECRET in page(client, f"/logbook/trips/{book['private'].pk}/")
    page(client, f"/logbook/trips/{book['bobs'].pk}/", 404)
    page(client, f"/logbook/vehicles/{book['car'].pk}/", 404)


def test_the_lock_reminder_names_trips_locking_within_a_day(client, book, people):
    html = page(login(client, people["driver"]), "/logbook/")
    reminder = html[html.index('id="lock-reminder"'):]
    reminder = reminder[:reminder.index("</section>")]
    assert "1 trip locks within 24 hours" in reminder
    card = html[html.index(f'id="trip-{book["soon"].pk}"'):]
    assert "locks-soon" in html[html.rindex("<article", 0, html.index(
        f'id="trip-{book["soon"].pk}"')):html.index(f'id="trip-{book["soon"].pk}"')]
    assert "locks " in card[:card.index("</article>")]
    # Classified, it no longer needs reminding.
    client.post(f"/logbook/trips/{book['soon'].pk}/classify/", {"category": "private"})
    assert 'id="lock-reminder"' not in page(client, "/logbook/")


def test_one_tap_takes_the_suggestion(client, book, people):
    login(client, people["driver"])
    html = page(client, "/logbook/")
    tap = html[html.index(f'id="trip-{book["tap"].pk}"'):]
    tap = tap[:tap.index("</article>")]
    assert f'action="/logbook/trips/{book["tap"].pk}/confirm/"' in tap
    assert "✓ Business · Schulz GmbH" in tap
    # A suggestion that lacks what the category needs is no one-tap button.
    opened = html[html.index(f'id="trip-{book["open"].pk}"'):]
    assert "/confirm/" not in opened[:opened.index("</article>")]

    response = client.post(f"/logbook/trips/{book['tap'].pk}/confirm/", follow=True)
    assert response.status_code == 200
    assert "is business." in response.content.decode()
    trip = Trip.objects.get(pk=book["tap"].pk)
    assert (trip.category, trip.purpose, trip.partner) == ("business", "Delivery", "Schulz GmbH")
    assert trip.destination == "Schulz GmbH"
    interfaces = set(TripRevision.objects.filter(trip=trip, field="category")
                     .values_list("interface", flat=True))
    assert interfaces == {Interface.WEB}


def test_classify_business_with_purpose_and_partner(client, book, people):
    login(client, people["driver"])
    response = client.post(f"/logbook/trips/{book['open'].pk}/classify/", {
        "category": "business", "purpose": "Quarterly review", "partner": "Meyer KG",
        "destination": "Meyer KG, Potsdam", "next": "/logbook/",
    })
    assert response.status_code == 302 and response["Location"] == "/logbook/"
    trip = Trip.objects.get(pk=book["open"].pk)
    assert (trip.category, trip.purpose, trip.partner) == (
        "business", "Quarterly review", "Meyer KG")
    html = page(client, "/logbook/")
    assert "Saved: the trip of" in html and f'id="trip-{trip.pk}"' not in html

    # What a business trip lacks is said per field, the entered values kept.
    response = client.post(f"/logbook/trips/{book['today'].pk}/classify/", {
        "category": "business", "purpose": "Bread run", "partner": "",
        "destination": "Bäckerei Kranz"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "A business trip needs the business partner visited." in html
    assert 'value="Bread run"' in html
    assert Trip.objects.get(pk=book["today"].pk).category == ""


def test_editing_within_the_window_and_refused_after_it(client, book, people):
    login(client, people["driver"])
    # Within the window: a classified trip can still be changed.
    html = page(client, f"/logbook/trips/{book['business'].pk}/")
    assert 'id="edit"' in html and "Can be changed until" in html
    response = client.post(f"/logbook/trips/{book['business'].pk}/classify/", {
        "category": "business", "purpose": "Delivery", "partner": "Schulz & Söhne",
        "destination": "Schulz GmbH, Berlin"})
    assert response.status_code == 302
    assert Trip.objects.get(pk=book["business"].pk).partner == "Schulz & Söhne"

    # After the window: refused, saying until when it could be changed.
    response = client.post(f"/logbook/trips/{book['old'].pk}/classify/", {
        "category": "business", "purpose": "Delivery", "partner": "Schulz GmbH",
        "destination": "Berlin"})
    assert response.status_code == 409
    html = response.content.decode()
    refused = html[html.index('id="refused"'):]
    assert re.search(r"The trip is locked: it could be changed for 7 days after it ended, "
                     r"until \d{4}-\d\d-\d\d \d\d:\d\d UTC\.", refused)
    trip = Trip.objects.get(pk=book["old"].pk)
    assert trip.category == Category.PRIVATE and trip.locked_at is not None
    html = page(client, f"/logbook/trips/{trip.pk}/")
    assert 'id="locked-notice"' in html and 'id="edit"' not in html


def test_several_trips_at_once_all_or_none(client, book, people):
    login(client, people["driver"])
    html = page(client, "/logbook/")
    assert 'id="bulk"' in html and 'form="bulk"' in html
    ids = [book["open"].pk, book["today"].pk]
    response = client.post("/logbook/trips/classify/", {
        "trip": ids, "category": "commute", "note": "Home – workplace", "next": "/logbook/"},
        follow=True)
    assert "Saved: 2 trips are commute." in response.content.decode()
    assert set(Trip.objects.filter(pk__in=ids).values_list("category", flat=True)) == {
        "commute"}
    # One locked trip among them: nothing is saved, and the page says why.
    response = client.post("/logbook/trips/classify/", {
        "trip": [book["soon"].pk, book["old"].pk], "category": "private",
        "next": "/logbook/trips/"}, follow=True)
    assert "Nothing was saved" in response.content.decode()
    assert Trip.objects.get(pk=book["soon"].pk).category == ""
    # Another driver's trip is not found.
    response = client.post("/logbook/trips/classify/", {
        "trip": [book["open"].pk, book["bobs"].pk], "category": "private"})
    assert response.status_code == 404


def test_the_driver_chooses_the_vehicle_for_the_day(client, book, people, alice):
    login(client, people["driver"])
    html = page(client, "/logbook/")
    assert "No vehicle chosen" in html and 'name="vehicle"' in html and "Car 3" in html
    response = client.post("/logbook/vehicle/", {"vehicle": book["car"].pk}, follow=True)
    assert "You drive Car 3 from now on" in response.content.decode()
    session = DriverSession.objects.get(driver=alice, until__isnull=True)
    assert session.vehicle_id == book["car"].pk
    assert "You drive <strong>Car 3</strong>" in page(client, "/logbook/")
    # Another organisation's vehicle cannot be chosen.
    other = Vehicle.objects.create(organisation=people["other_organisation"].membership
                                   .organisation, name="Globex 1")
    response = client.post("/logbook/vehicle/", {"vehicle": other.pk}, follow=True)
    assert "Choose one of your organisation's vehicles." in text(response)


def test_route_map_only_where_the_route_may_be_seen(client, book, people):
    login(client, people["driver"])
    html = page(client, f"/logbook/trips/{book['business'].pk}/")
    assert 'id="trip-map"' in html and "data-route=\"[[52.52" in html
    assert "/static/logbook/logbook.js" in html and "vendor/leaflet/leaflet.js" in html
    revisions = html[html.index('id="revisions"'):]
    assert "created" in revisions and "via derivation" in revisions
    client.logout()
    for role in ("admin", "dispatcher"):
        login(client, people[role])
        html = page(client, f"/logbook/trips/{book['private'].pk}/")
        assert 'id="trip-map"' not in html and "data-route" not in html
        assert SECRET not in html and "only its date, distance and odometer" in html
        assert 'id="edit"' not in html
        html = page(client, f"/logbook/trips/{book['business'].pk}/")
        assert 'id="trip-map"' in html  # a business trip's route is the fleet's
        client.logout()


# --------------------------------------------------------------------------- managers


@pytest.mark.parametrize("role", ["admin", "dispatcher"])
def test_managers_see_every_vehicle_and_what_is_missing(client, book, people, role):
    html = page(login(client, people[role]), "/logbook/")
    assert "Logbooks" in html
    van = html[html.index(f'<tr data-vehicle="{book["van"].pk}"'):]
    van = van[:van.index("</tr>")]
    # Open: today, open, soon, tap (old is locked private by now); soon locks within 24 h.
    assert 'data-field="unclassified">4<' in van
    assert 'data-field="locking_soon">1<' in van
    assert 'data-field="open_gaps">1<' in van and 'data-field="gap_km">12.0<' in van
    car = html[html.index(f'<tr data-vehicle="{book["car"].pk}"'):]
    assert 'data-field="unclassified">1<' in car[:car.index("</tr>")]
    assert '<span class="value" data-total="unclassified">5</span>' in html
    assert '<span class="value" data-total="open_gaps">1</span>' in html

    # The vehicle's logbook: every driver's trips, the private one redacted, gaps in line.
    start = (timezone.now() - timedelta(days=12)).astimezone(BERLIN).date().isoformat()
    html = page(client, f"/logbook/vehicles/{book['van'].pk}/?start={start}")
    assert f'data-trip="{book["private"].pk}"' in html and SECRET not in html
    assert "Private trip: only date, distance and odometer are shown." in html
    assert "Meyer KG, Potsdam" in html  # an unclassified working-hours trip
    assert f'id="gap-{book["gap"].pk}"' in html
    assert ('name="note"' in html) is (role == "admin")


def test_the_manager_explains_an_odometer_gap(client, book, people):
    gap = book["gap"]
    login(client, people["dispatcher"])
    response = client.post(f"/logbook/gaps/{gap.pk}/explain/", {"note": "Workshop"},
                           follow=True)
    assert "Only the organisation's fleet manager" in text(response)
    gap.refresh_from_db()
    assert gap.status == GapStatus.OPEN
    client.logout()
    login(client, people["admin"])
    response = client.post(f"/logbook/gaps/{gap.pk}/explain/", {
        "note": "Test drive by the workshop, unit unplugged"}, follow=True)
    assert "Odometer gap of 12.0 km explained." in response.content.decode()
    gap.refresh_from_db()
    assert (gap.status, gap.noted_by) == (GapStatus.EXPLAINED, "boss")
    html = page(client, "/logbook/")
    assert '<span class="value" data-total="open_gaps">0</span>' in html
    client.logout()
    login(client, people["driver"])  # drivers do not see gaps at all
    assert client.post(f"/logbook/gaps/{gap.pk}/explain/", {"note": "x"}).status_code == 404


def test_exports_per_vehicle_and_period(client, book, people):
    start = (timezone.now() - timedelta(days=12)).astimezone(BERLIN).date().isoformat()
    login(client, people["admin"])
    html = page(client, f"/logbook/vehicles/{book['van'].pk}/?start={start}")
    assert f'action="/logbook/vehicles/{book["van"].pk}/export/"' in html
    response = client.get(f"/logbook/vehicles/{book['van'].pk}/export/",
                          {"start": start, "format": "pdf"})
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    assert 'filename="logbook-Van-7-' in response["Content-Disposition"]
    response = client.get(f"/logbook/vehicles/{book['van'].pk}/export/",
                          {"start": start, "format": "csv"})
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    trips = {int(r["id"]): r for r in rows if r["record"] == "trip"}
    assert book["private"].pk in trips and book["bobs"].pk not in trips
    assert trips[book["private"].pk]["end_address"] == "" and SECRET not in str(rows)
    assert any(r["record"] == "gap" for r in rows)
    client.logout()
    login(client, people["other_organisation"])
    assert client.get(f"/logbook/vehicles/{book['van'].pk}/export/").status_code == 404


def test_another_organisation_finds_nothing(client, book, people):
    login(client, people["other_organisation"])
    html = page(client, "/logbook/")
    assert "Van 7" not in html
    page(client, f"/logbook/trips/{book['business'].pk}/", 404)
    page(client, f"/logbook/vehicles/{book['van'].pk}/", 404)
    response = client.post(f"/logbook/trips/{book['open'].pk}/confirm/")
    assert response.status_code == 404


def test_trip_list_filters_and_the_manager_cannot_classify(client, book, people):
    start = (timezone.now() - timedelta(days=12)).astimezone(BERLIN).date().isoformat()
    login(client, people["admin"])
    html = page(client, f"/logbook/trips/?start={start}&category=unclassified")
    assert f'data-trip="{book["open"].pk}"' in html
    assert f'data-trip="{book["business"].pk}"' not in html
    assert 'id="bulk"' not in html  # every trip here has a driver: theirs to classify
    response = client.post(f"/logbook/trips/{book['open'].pk}/classify/", {
        "category": "private"})
    assert response.status_code == 403
    assert Trip.objects.get(pk=book["open"].pk).category == ""
    html = page(client, f"/logbook/trips/?start={start}&vehicle={book['car'].pk}")
    assert f'data-trip="{book["bobs"].pk}"' in html
    assert f'data-trip="{book["open"].pk}"' not in html


@pytest.mark.parametrize("role", ["driver", "admin"])
def test_pages_load_no_inline_script(client, book, people, role):
    login(client, people[role])
    for url in ("/logbook/", "/logbook/trips/", f"/logbook/trips/{book['business'].pk}/",
                f"/logbook/vehicles/{book['van'].pk}/"):
        assets = assets_of(page(client, url))
        assert assets.inline_scripts == 0, url
        assert all(src.startswith("/static/") for src in assets.scripts), url
    html = page(client, "/logbook/")
    assert '<a href="/logbook/">Logbook</a>' in html  # in the navigation


def test_a_gap_next_to_a_private_trip_shows_only_its_day(client, book, people):
    """A gap runs from one trip's end to the next one's start: next to a private trip
    its times would be the private trip's."""
    private, after = book["private"], book["tap"]
    gap = OdometerGap.objects.create(
        organisation_id=private.organisation_id, vehicle=book["van"],
        from_time=private.end_time, from_km=private.end_odometer_km,
        to_time=after.start_time, to_latitude=52.5, to_longitude=13.4,
        to_km=private.end_odometer_km + 3.0, source="unit", decided_at=after.start_time)
    hidden = timezone.localtime(private.end_time, BERLIN).strftime("%H:%M")
    start = (timezone.now() - timedelta(days=12)).astimezone(BERLIN).date().isoformat()
    login(client, people["admin"])
    html = page(client, f"/logbook/vehicles/{book['van'].pk}/?start={start}")
    row = html[html.index(f'id="gap-{gap.pk}"'):]
    row = row[:row.index("</li>")]
    assert hidden not in row and "3.0 km" in row
    response = client.get(f"/logbook/vehicles/{book['van'].pk}/export/",
                          {"start": start, "format": "csv"})
    (gap_row,) = [r for r in csv.DictReader(io.StringIO(response.content.decode()))
                  if r["record"] == "gap" and r["id"] == str(gap.pk)]
    assert gap_row["start_time"] == gap_row["end_time"] == ""
    assert gap_row["distance_km"] == "3.0"
    client.logout()
    login(client, people["driver"])  # Alice's own trip: her export has no gaps at all
    assert client.get(f"/logbook/vehicles/{book['van'].pk}/export/",
                      {"start": start, "format": "pdf"}).status_code == 200


def test_the_trip_list_pages(client, book, people, monkeypatch):
    monkeypatch.setattr("logbook.views.LIST_PAGE_SIZE", 3)
    start = (timezone.now() - timedelta(days=12)).astimezone(BERLIN).date().isoformat()
    login(client, people["admin"])
    html = page(client, f"/logbook/trips/?start={start}&category=private")
    # The locked unclassified trip became private; the classified private one; no more.
    assert html.count('class="trip-row') == 2 and 'class="pager"' not in html
    html = page(client, f"/logbook/trips/?start={start}")
    assert html.count('class="trip-row') == 3 and "Page 1 of 3 · 8 trips" in html
    assert f"start={start}&amp;page=2" in html
    html = page(client, f"/logbook/trips/?start={start}&page=3")
    assert html.count('class="trip-row') == 2 and "← Earlier" in html
