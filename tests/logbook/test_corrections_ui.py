"""Correcting trips on the logbook pages (issue 5): cancel, split, merge; nothing deleted.

The trip page offers the corrections to whoever may make them (the trip's driver, the
fleet manager) while the window is open; corrected trips stay in the lists, the trip
page and both exports, struck through or labelled, linked to what replaced them.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta
from html import unescape
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.test import Client

from fleet.models import Vehicle
from logbook.exports import export_csv, export_pdf
from logbook.models import DriverSource, Interface, Trip, TripRevision
from logbook.services import create_trip, lock_due_trips, verify_chain
from tests.dashboard.test_views import assets_of
from tests.logbook.factories import START, ago, make_trip
from tests.logbook.test_privacy_and_exports import pdf_text

pytestmark = pytest.mark.django_db
BERLIN = ZoneInfo("Europe/Berlin")
SECRET = "Secret Garden"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "logbook"


def make_trip_with_stop(
    vehicle: Vehicle, start: datetime, *, driver=None, stop_minutes: int = 6,
    category: str = "", suggested: str = "business", odometer_km: float | None = None,
    end_address: str = "Meyer KG, Potsdam",
) -> Trip:
    """A 9 km trip north that stands ``stop_minutes`` (a delivery the parking rule missed)
    after 4 km, 10 minutes in; its route keeps a point a minute while standing."""
    lat, lon = START
    moment = start
    route = [[moment.isoformat(), lat, lon]]

    def add(metres: float, minutes: float, drift: float = 0.0) -> None:
        nonlocal lat, moment
        lat += metres / 111_250.0
        moment += timedelta(minutes=minutes)
        route.append([moment.isoformat(), round(lat + drift, 7), lon])

    for _ in range(5):
        add(800.0, 2)
    for minute in range(stop_minutes):  # parked receivers drift by a few metres
        add(0.0, 1, drift=0.00003 if minute % 2 else 0.0)
    for _ in range(5):
        add(1000.0, 2)
    if odometer_km is None:
        last = (Trip.objects.filter(vehicle=vehicle, status="active")
                .order_by("-end_time").first())
        odometer_km = last.end_odometer_km if last is not None else 1000.0
    trip = Trip(
        organisation_id=vehicle.organisation_id, vehicle=vehicle, driver=driver,
        driver_source=DriverSource.DEFAULT if driver else "",
        start_time=start, end_time=moment,
        start_latitude=route[0][1], start_longitude=lon,
        end_latitude=route[-1][1], end_longitude=lon,
        start_address="Depot, Berlin", end_address=end_address,
        start_odometer_km=odometer_km, end_odometer_km=odometer_km + 9.0,
        distance_m=9000.0, gps_distance_m=9000.0, odometer_source="unit",
        max_speed_kmh=60.0, route=route, fix_count=120, end_reason="parking",
        category=category, decided_at=moment + timedelta(minutes=5), addresses_pending=False,
        suggested_category=suggested,
    )
    return create_trip(trip)


def login(client: Client, user) -> Client:
    assert client.login(username=user.username, password=f"pw-{user.username}")
    return client


def page(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def text_of(html: str) -> str:
    """What a person reads: tags dropped, entities decoded, spaces collapsed."""
    words = " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())
    return re.sub(r" ([,.)])", r"\1", words)


def local(moment: datetime, fmt: str = "%H:%M") -> str:
    return moment.astimezone(BERLIN).strftime(fmt)


@pytest.fixture
def day(acme, acme_van, alice, bob, people):
    """Alice's day in Van 7, two days ago (window open): a morning trip, a trip with a
    missed delivery stop, an afternoon trip; a private one; and one past the window."""
    acme_van.default_driver = alice
    acme_van.save()
    start = ago(days=2).replace(hour=6, minute=0, second=0, microsecond=0)
    trips = {
        "old": make_trip(acme_van, ago(days=12), driver=alice, category="business",
                         purpose="Delivery", partner="Schulz GmbH", destination="Berlin"),
        "morning": make_trip(acme_van, start, driver=alice, category="business",
                             purpose="Delivery", partner="Schulz GmbH",
                             destination="Schulz GmbH, Berlin"),
        "stop": make_trip_with_stop(acme_van, start + timedelta(hours=1), driver=alice),
        "afternoon": make_trip(acme_van, start + timedelta(hours=3), driver=alice,
                               suggested="business", end_address="Lager Nord"),
        "private": make_trip(acme_van, start + timedelta(hours=9), driver=alice,
                             category="private", end_address=SECRET),
    }
    return {"van": acme_van, **trips}


def detail(client: Client, trip: Trip) -> str:
    return page(client, f"/logbook/trips/{trip.pk}/")


# --------------------------------------------------------------------------- what is offered


def test_the_driver_is_offered_every_correction_on_a_phone_friendly_page(client, day, people):
    html = detail(login(client, people["driver"]), day["stop"])
    assets = assets_of(html)
    assert assets.inline_scripts == 0
    section = html[html.index('id="corrections"'):html.index('id="revisions"')]
    # Every correction is a POST form with its CSRF token.
    forms = re.findall(r'<form method="post" action="([^"]+)"', section)
    stop = day["stop"].pk
    assert forms == [f"/logbook/trips/{stop}/split/", f"/logbook/trips/{stop}/merge/",
                     f"/logbook/trips/{stop}/merge/", f"/logbook/trips/{stop}/cancel/"]
    assert section.count("csrfmiddlewaretoken") == len(forms)
    words = text_of(section)
    # The stop the parking rule missed is offered as a split point, in local time.
    arrival = day["stop"].start_time + timedelta(minutes=10)
    assert f"Stop {local(arrival)}–{local(arrival + timedelta(minutes=6))} (6 min)" in words
    morning, afternoon = day["morning"], day["afternoon"]
    assert (f"Merge with the previous trip ({local(morning.start_time, '%a %d.%m. %H:%M')}–"
            f"{local(morning.end_time)})") in words
    assert f"Merge with the next trip ({local(afternoon.start_time, '%a %d.%m. %H:%M')}–" \
        in words
    assert "Cancel: this trip did not happen like this" in words


def test_nothing_is_offered_to_a_dispatcher_or_for_someone_elses_private_trip(
        client, day, people):
    desk = login(Client(), people["dispatcher"])
    assert 'id="corrections"' not in detail(desk, day["stop"])
    boss = login(Client(), people["admin"])
    assert 'id="corrections"' in detail(boss, day["stop"])  # the fleet manager may
    private = detail(boss, day["private"])
    assert 'id="corrections"' not in private and SECRET not in private


def test_a_locked_trip_says_why_it_cannot_be_corrected(client, day, people):
    html = detail(login(client, people["driver"]), day["old"])
    assert 'id="corrections"' not in html
    notice = re.search(r'<p class="notice" id="locked-notice">(.*?)</p>', html).group(1)
    assert text_of(notice).startswith("Locked: the edit window of 7 days closed on ")
    assert text_of(notice).endswith("Nothing can be changed any more.")


# --------------------------------------------------------------------------- cancel


def test_the_driver_cancels_a_trip_which_stays_visible(client, day, people):
    login(client, people["driver"])
    trip = day["afternoon"]
    response = client.post(f"/logbook/trips/{trip.pk}/cancel/",
                           {"reason": "Unit was in the pool car"})
    assert response.status_code == 302 and response["Location"] == f"/logbook/trips/{trip.pk}/"
    html = page(client, response["Location"])
    words = text_of(html)
    assert "Cancelled: the trip of" in words and "stays in the logbook" in words  # message
    assert "Cancelled. Reason: Unit was in the pool car" in words
    revisions = text_of(html[html.index('id="revisions"'):])
    assert "status: active → cancelled" in revisions
    assert "status_reason: — → Unit was in the pool car" in revisions
    assert "alice via web" in revisions
    assert 'id="corrections"' not in html  # nothing more to correct
    # Still listed, struck through and labelled.
    listing = page(client, "/logbook/trips/?start=" + local(trip.start_time, "%Y-%m-%d"))
    row = re.search(rf'<li class="[^"]*inactive status-cancelled[^"]*" data-trip="{trip.pk}"'
                    r'.*?</li>', listing, re.S)
    assert row is not None
    assert re.search(r'<s class="when">', row.group(0))
    assert "Cancelled" in text_of(row.group(0))
    saved = Trip.objects.get(pk=trip.pk)
    assert (saved.status, saved.status_reason) == ("cancelled", "Unit was in the pool car")
    assert saved.revisions.get(field="status").interface == Interface.WEB
    assert verify_chain(trip.vehicle_id).ok


def test_a_cancellation_needs_a_reason(client, day, people):
    login(client, people["driver"])
    trip = day["afternoon"]
    response = client.post(f"/logbook/trips/{trip.pk}/cancel/", {"reason": "   "})
    assert response.status_code == 400
    html = response.content.decode()
    assert '<details class="classify" id="cancel" open>' in html
    assert "Say why the trip is cancelled." in text_of(html)
    assert Trip.objects.get(pk=trip.pk).status == "active"


# --------------------------------------------------------------------------- split


def test_the_driver_splits_at_the_missed_stop(client, day, people):
    login(client, people["driver"])
    trip = day["stop"]
    response = client.post(f"/logbook/trips/{trip.pk}/split/",
                           {"split": "5", "reason": "Delivery at Meyer KG"})
    assert response.status_code == 302
    first, second = Trip.objects.filter(corrects=trip).order_by("start_time")
    assert response["Location"] == f"/logbook/trips/{first.pk}/"
    arrival = trip.start_time + timedelta(minutes=10)
    # The first part ends on arrival, the second starts on departure; odometer carried.
    assert (first.start_time, first.end_time) == (trip.start_time, arrival)
    assert (second.start_time, second.end_time) == (arrival + timedelta(minutes=6),
                                                   trip.end_time)
    assert first.end_odometer_km == second.start_odometer_km
    assert first.distance_m == pytest.approx(4000.0, abs=20)  # the stop's drift is the rest
    assert first.distance_m + second.distance_m == pytest.approx(trip.distance_m)
    html = page(client, response["Location"])
    words = text_of(html)
    assert (f"Split: the trip of {local(trip.start_time, '%d.%m. %H:%M')}–"
            f"{local(trip.end_time)} is now two trips") in words
    assert f"Replaces a part of trip {trip.pk}" in words
    # The original's page links to both parts.
    original = detail(client, trip)
    assert "Split into two trips. Reason: Delivery at Meyer KG" in text_of(original)
    assert re.findall(r'data-replacement="(\d+)"', original) == [str(first.pk),
                                                                str(second.pk)]
    # The vehicle's logbook lists the struck-through original and both parts.
    logbook = page(client, f"/logbook/vehicles/{trip.vehicle_id}/?start="
                   + local(trip.start_time, "%Y-%m-%d"))
    assert f'data-trip="{trip.pk}" data-status="split"' in logbook
    assert f'data-trip="{first.pk}"' in logbook and f'data-trip="{second.pk}"' in logbook
    replaced = re.search(rf'<li class="replaced-by muted" data-replaced="{trip.pk}">.*?</li>',
                         logbook, re.S).group(0)
    assert f"Replaced by the trip of {local(first.start_time, '%a %d.%m. %H:%M')}" in \
        text_of(replaced)
    assert verify_chain(trip.vehicle_id).ok


def test_the_driver_splits_at_a_time_of_day(client, day, people):
    login(client, people["driver"])
    trip = day["afternoon"]  # 20 minutes, a route point every 3 min 20 s
    at = trip.start_time + timedelta(minutes=11)
    response = client.post(f"/logbook/trips/{trip.pk}/split/",
                           {"split": "time", "time": local(at)})
    assert response.status_code == 302
    first, second = Trip.objects.filter(corrects=trip).order_by("start_time")
    # Cut at the last route point at or before 11 minutes in: 10 minutes in.
    assert first.end_time == second.start_time == trip.start_time + timedelta(minutes=10)
    assert first.category == second.category == ""  # the original's, unclassified


def test_a_split_outside_the_trip_is_refused_with_the_trip_times(client, day, people):
    login(client, people["driver"])
    trip = day["afternoon"]
    before = trip.start_time - timedelta(minutes=30)
    response = client.post(f"/logbook/trips/{trip.pk}/split/",
                           {"split": "time", "time": local(before)})
    assert response.status_code == 400
    words = text_of(response.content.decode())
    assert (f"Choose a time between the trip's start ({local(trip.start_time, '%d.%m.%Y %H:%M')})"
            f" and end ({local(trip.end_time, '%d.%m.%Y %H:%M')}).") in words
    response = client.post(f"/logbook/trips/{trip.pk}/split/", {"split": "time"})
    assert response.status_code == 400
    assert "Give the time to split at." in text_of(response.content.decode())
    assert Trip.objects.get(pk=trip.pk).status == "active"
    assert not Trip.objects.filter(corrects=trip).exists()


# --------------------------------------------------------------------------- merge


def test_the_driver_merges_with_the_next_trip(client, day, people):
    login(client, people["driver"])
    stop, afternoon = day["stop"], day["afternoon"]
    response = client.post(f"/logbook/trips/{stop.pk}/merge/",
                           {"neighbour": str(afternoon.pk), "reason": "Waited at the gate"})
    assert response.status_code == 302
    merged = Trip.objects.get(corrects=stop)
    assert response["Location"] == f"/logbook/trips/{merged.pk}/"
    assert set(merged.corrects.values_list("pk", flat=True)) == {stop.pk, afternoon.pk}
    assert (merged.start_time, merged.end_time) == (stop.start_time, afternoon.end_time)
    words = text_of(page(client, response["Location"]))
    assert f"Replaces a merge of trip {stop.pk}, trip {afternoon.pk}" in words
    for original in (stop, afternoon):
        saved = Trip.objects.get(pk=original.pk)
        assert (saved.status, saved.status_reason) == ("merged", "Waited at the gate")
        assert "Merged into another trip. Reason: Waited at the gate" in text_of(
            detail(client, original))


def test_merging_with_a_trip_that_is_not_next_to_it_is_refused(client, day, people):
    login(client, people["driver"])
    response = client.post(f"/logbook/trips/{day['morning'].pk}/merge/",
                           {"neighbour": str(day["afternoon"].pk)})
    assert response.status_code == 400
    assert "Only consecutive trips are merged: another trip lies between" in text_of(
        response.content.decode())
    assert Trip.objects.filter(status="merged").count() == 0


# --------------------------------------------------------------------------- who may not


def test_refusals_keep_the_logbook_as_it_was(client, day, people):
    stop, private = day["stop"], day["private"]
    lock_due_trips()  # what any page does first: the old trip locks now, not below
    revisions = TripRevision.objects.count()
    desk = login(Client(), people["dispatcher"])
    response = desk.post(f"/logbook/trips/{stop.pk}/cancel/", {"reason": "x"})
    assert response.status_code == 403
    assert "Dispatchers do not correct the logbook" in text_of(response.content.decode())
    boss = login(Client(), people["admin"])
    response = boss.post(f"/logbook/trips/{private.pk}/split/", {"split": "3"})
    assert response.status_code == 403
    body = response.content.decode()
    assert "A private trip: only its driver corrects it." in text_of(body)
    assert SECRET not in body
    bob = login(Client(), people["other_driver"])
    assert bob.post(f"/logbook/trips/{stop.pk}/cancel/", {"reason": "x"}).status_code == 404
    eve = login(Client(), people["other_organisation"])
    for action, data in (("cancel", {"reason": "x"}), ("split", {"split": "5"}),
                         ("merge", {"neighbour": str(day["afternoon"].pk)})):
        assert eve.post(f"/logbook/trips/{stop.pk}/{action}/", data).status_code == 404
    alice = login(Client(), people["driver"])
    response = alice.post(f"/logbook/trips/{day['old'].pk}/cancel/", {"reason": "x"})
    assert response.status_code == 409
    assert "The trip is locked: it could be corrected for 7 days" in text_of(
        response.content.decode())
    assert TripRevision.objects.count() == revisions
    assert set(Trip.objects.values_list("status", flat=True)) == {"active"}


def test_a_correction_needs_the_csrf_token(day, people):
    client = Client(enforce_csrf_checks=True)
    login(client, people["driver"])
    response = client.post(f"/logbook/trips/{day['afternoon'].pk}/cancel/",
                           {"reason": "Unit was in the pool car"})
    assert response.status_code == 403
    assert Trip.objects.get(pk=day["afternoon"].pk).status == "active"
    assert client.get(f"/logbook/trips/{day['afternoon'].pk}/cancel/").status_code == 405


def test_the_fleet_manager_corrects_a_drivers_business_trip(client, day, people):
    login(client, people["admin"])
    response = client.post(f"/logbook/trips/{day['morning'].pk}/cancel/",
                           {"reason": "Test drive after the workshop"})
    assert response.status_code == 302
    revision = TripRevision.objects.get(trip=day["morning"], field="status_reason")
    assert (revision.actor_name, revision.new_value) == ("boss", "Test drive after the workshop")
    assert Trip.objects.get(pk=day["morning"].pk).status == "cancelled"


def test_corrected_trips_cost_no_query_each_in_the_lists(client, day, people):
    """What replaced a corrected trip comes prefetched: ten more corrections, no more
    queries for the trip list or the vehicle's logbook."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from logbook.services import cancel_trip, merge_trips

    login(client, people["driver"])
    van, alice = day["van"], day["morning"].driver
    urls = ["/logbook/trips/", f"/logbook/vehicles/{van.pk}/?start="
            + local(day["old"].start_time, "%Y-%m-%d")]

    def correct_some(hours: float) -> None:
        start = day["private"].end_time + timedelta(hours=hours)
        made = [make_trip(van, start + timedelta(minutes=30 * i), minutes=10, driver=alice,
                          category="business", purpose="Delivery", partner="Schulz GmbH",
                          destination="Berlin") for i in range(6)]
        for trip in made[:2]:
            cancel_trip(trip, "Towed", actor=people["driver"])
        merge_trips(made[2:4], actor=people["driver"])
        merge_trips(made[4:], actor=people["driver"])

    def queries() -> list[int]:
        counts = []
        for url in urls:
            page(client, url)  # locks what is due first, so both counts see the same
            with CaptureQueriesContext(connection) as captured:
                page(client, url)
            counts.append(len(captured))
        return counts

    correct_some(1)
    before = queries()
    correct_some(6)
    assert queries() == before
    html = page(client, urls[0])
    assert html.count('class="replaced-by muted"') == 8  # 4 merged originals per round


# --------------------------------------------------------------------------- exports


def test_exports_mark_corrections_and_count_only_what_stands(client, day, people):
    login(client, people["driver"])
    van = day["van"]
    client.post(f"/logbook/trips/{day['morning'].pk}/cancel/", {"reason": "Towed"})
    client.post(f"/logbook/trips/{day['stop'].pk}/merge/",
                {"neighbour": str(day["afternoon"].pk)})
    merged = Trip.objects.get(corrects=day["stop"])
    the_day = day["morning"].start_time.astimezone(BERLIN).date()
    rows = list(csv.DictReader(io.StringIO(export_csv(van, the_day, the_day,
                                                      people["driver"]))))
    trips = {int(r["id"]): r for r in rows if r["record"] == "trip"}
    assert set(trips) == {day[n].pk for n in ("morning", "stop", "afternoon", "private")} | {
        merged.pk}
    assert trips[day["morning"].pk]["status"] == "cancelled (Towed)"
    assert trips[day["morning"].pk]["correction"] == "CANCELLED: Towed"
    for name in ("stop", "afternoon"):
        assert trips[day[name].pk]["replaced_by"] == str(merged.pk)
        assert trips[day[name].pk]["correction"].startswith(f"MERGED into trip {merged.pk}")
    assert trips[merged.pk]["correction"] == (
        f"Merge of trips {day['stop'].pk}, {day['afternoon'].pk}")
    assert trips[merged.pk]["corrects"] == f"{day['stop'].pk} {day['afternoon'].pk}"
    # Totals: the merged trip (19 km) and the private one (10 km); nothing cancelled.
    month = {r["category"]: r["distance_km"] for r in rows if r["record"] == "month"}
    assert month == {"business": "0.0", "commute": "0.0", "private": "10.0",
                     "unclassified": "19.0"}
    text = " ".join(pdf_text(export_pdf(van, the_day, the_day, people["driver"])).split())
    assert "CANCELLED: Towed" in text
    assert f"MERGED into trip {merged.pk}" in text
    assert f"Merge of trips {day['stop'].pk}, {day['afternoon'].pk}" in text
    assert "Struck-through trips were corrected" in text


def test_a_dispatchers_export_shows_a_cancelled_private_trip_redacted(day, people):
    from logbook.services import cancel_trip

    cancel_trip(day["private"], "Wrong vehicle", actor=people["driver"])
    the_day = day["private"].start_time.astimezone(BERLIN).date()
    text = export_csv(day["van"], the_day, the_day, people["dispatcher"])
    row = next(r for r in csv.DictReader(io.StringIO(text))
               if r["id"] == str(day["private"].pk))
    assert row["status"] == "cancelled" and row["correction"] == "CANCELLED"
    assert SECRET not in text and "Wrong vehicle" not in text
    pdf = " ".join(pdf_text(export_pdf(day["van"], the_day, the_day,
                                       people["dispatcher"])).split())
    assert "CANCELLED" in pdf and "Wrong vehicle" not in pdf and SECRET not in pdf
    # The driver's own export tells her why.
    assert "CANCELLED: Wrong vehicle" in export_csv(day["van"], the_day, the_day,
                                                    people["driver"])


# --------------------------------------------------------------------------- a real phone


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous")
def test_a_driver_splits_and_cancels_on_a_phone(day, people, live_site):
    """In Chromium, under the site's strict CSP: expand, choose, submit; no script."""
    from playwright.sync_api import expect, sync_playwright

    from tests.dashboard.test_browser import CHROMIUM, CHROMIUM_ARGS, report

    url, problems = live_site, []
    trip = day["stop"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=CHROMIUM_ARGS, headless=True)
        try:
            phone = browser.new_context(viewport={"width": 390, "height": 844},
                                        is_mobile=True, has_touch=True)
            tab = phone.new_page()
            tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            tab.on("console", lambda message: report(message, problems))
            tab.goto(f"{url}/login/?next=/logbook/trips/{trip.pk}/")
            tab.fill("#id_username", "alice")
            tab.fill("#id_password", "pw-alice")
            tab.click("button[type=submit]")
            tab.wait_for_url(f"{url}/logbook/trips/{trip.pk}/")
            tab.get_by_text("Split: I reached a destination on the way").tap()
            tab.locator("#split input[name=reason]").fill("Delivery at Meyer KG")
            tab.locator("#split").scroll_into_view_if_needed()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=ARTIFACTS / "8-split-at-a-stop.png")
            tab.get_by_role("button", name="Split into two trips").tap()
            tab.wait_for_url(re.compile(r".*/logbook/trips/\d+/$"))
            expect(tab.locator("#messages")).to_contain_text("is now two trips")
            expect(tab.locator("#replaces")).to_contain_text(f"trip {trip.pk}")
            tab.get_by_text("Cancel: this trip did not happen like this").tap()
            tab.locator("#cancel-reason").fill("Unit was in the pool car")
            tab.get_by_role("button", name="Cancel the trip").tap()
            expect(tab.locator("#correction-status")).to_contain_text(
                "Cancelled. Reason: Unit was in the pool car")
            tab.goto(f"{url}/logbook/trips/")
            expect(tab.locator(f'[data-trip="{trip.pk}"] [data-status-label]')).to_have_text(
                "Split")
            tab.screenshot(path=ARTIFACTS / "9-corrected-trips.png", full_page=True)
        finally:
            browser.close()
    assert not problems, problems
    first, second = Trip.objects.filter(corrects=trip).order_by("start_time")
    assert (first.status, second.status) == ("cancelled", "active")
    assert Trip.objects.get(pk=trip.pk).status == "split"


@pytest.fixture
def live_site(transactional_db, settings, monkeypatch):
    from django.db import connection

    from tests.dashboard.test_browser import CHROMIUM, Site

    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    server = Site()
    server.start()
    yield server.url
    server.stop()

