"""The logbook on a phone in a real browser: the driver classifies a trip in one go.

The site runs under uvicorn behind a strict Content-Security-Policy (as in
``tests/dashboard/test_browser.py``), so an inline script would fail here too.
Screenshots land in ``test-artifacts/logbook/``.
"""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.utils import timezone
from playwright.sync_api import expect, sync_playwright

from fleet.models import Organisation, Role, Vehicle
from fleet.services import create_user
from logbook.models import NamedPlace, PlaceKind, Trip, VehicleLogbook
from tests.dashboard.test_browser import CHROMIUM, CHROMIUM_ARGS, Site, report
from tests.logbook.factories import ago, make_gap, make_trip

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "logbook"
PASSWORD = "pw-logbook-1"
BERLIN = ZoneInfo("Europe/Berlin")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous"),
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="Debian's chromium is not installed (apt-get install chromium)"),
]


@pytest.fixture
def site(transactional_db, settings, monkeypatch):
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    settings.MAP_TILE_URL = ""
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    from fleet.asgi import application

    # The websocket's origin check took ALLOWED_HOSTS when fleet.asgi was first imported.
    websocket = application.application_mapping["websocket"]
    monkeypatch.setattr(getattr(websocket, "fallback", websocket), "allowed_origins",
                        settings.ALLOWED_HOSTS)
    server = Site()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def drivers_day(transactional_db) -> dict:
    acme = Organisation.objects.create(name="Acme Logistics", time_zone="Europe/Berlin")
    dana = create_user("dana", acme, Role.DRIVER, password=PASSWORD)[0]
    create_user("adam", acme, Role.ADMIN, password=PASSWORD)
    van = Vehicle.objects.create(organisation=acme, name="Van 7", licence_plate="B-AC 7",
                                 default_driver=dana.driver)
    Vehicle.objects.create(organisation=acme, name="Pool car", licence_plate="B-AC 12")
    VehicleLogbook.objects.create(vehicle=van, default_purpose="Delivery")
    lager = NamedPlace.objects.create(organisation=acme, name="Lager Nord",
                                      kind=PlaceKind.SUPPLIER, latitude=52.59, longitude=13.33,
                                      address="Reinickendorf")
    now = timezone.now()
    midnight = datetime.combine(now.astimezone(BERLIN).date(), time(), BERLIN)
    today = max(midnight + timedelta(minutes=1), now - timedelta(minutes=50))
    soon = make_trip(van, ago(days=6, hours=21), minutes=25, km=14.2, driver=dana.driver,
                     suggested="business", start_address="Depot Tempelhof, Berlin",
                     end_address="Lager Nord, Reinickendorf", end_place=lager)
    make_trip(van, ago(days=2), km=8.4, driver=dana.driver, category="business",
              purpose="Delivery", partner="Schulz GmbH", destination="Schulz GmbH, Berlin",
              start_address="Depot Tempelhof, Berlin", end_address="Schulz GmbH, Berlin")
    make_gap(van, make_trip(van, ago(days=1), km=5.1, driver=dana.driver,
                            category="private", end_address="Am See 4, Potsdam"))
    trip = make_trip(van, today, minutes=22, km=11.7, driver=dana.driver,
                     suggested="business", start_address="Depot Tempelhof, Berlin",
                     end_address="Meyer KG, Friedrichstraße 12, Berlin")
    return {"van": van, "trip": trip, "soon": soon}


def test_driver_classifies_a_trip_on_a_phone(site, drivers_day):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    trip = drivers_day["trip"]
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            phone = browser.new_context(viewport={"width": 390, "height": 844},
                                        device_scale_factor=2, is_mobile=True, has_touch=True)
            page = phone.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda message: report(message, problems))

            page.goto(f"{site.url}/login/?next=/logbook/trips/")
            page.fill("#id_username", "dana")
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{site.url}/logbook/trips/")
            page.get_by_role("link", name="Logbook", exact=True).tap()
            page.wait_for_url(f"{site.url}/logbook/")

            expect(page.locator("#lock-reminder")).to_contain_text(
                "1 trip locks within 24 hours")
            card = page.locator(f"#trip-{trip.pk}")
            expect(card).to_contain_text("Meyer KG, Friedrichstraße 12, Berlin")
            expect(card).to_contain_text("11.7 km")
            page.screenshot(path=ARTIFACTS / "1-driver-day.png", full_page=True)

            # A complete suggestion is one tap; this one needs purpose and partner.
            expect(page.locator(f"#trip-{drivers_day['soon'].pk} .one-tap button").first
                   ).to_have_text("✓ Business · Lager Nord")
            # Business, with purpose and partner, in one go; the destination is filled in.
            card.get_by_text("Classify…").tap()
            card.locator("label.seg-business").tap()
            expect(card.locator("input[name=destination]")).to_have_value(
                "Meyer KG, Friedrichstraße 12, Berlin")
            card.locator("input[name=purpose]").fill("Quarterly review")
            card.locator("input[name=partner]").fill("Meyer KG")
            card.scroll_into_view_if_needed()
            page.screenshot(path=ARTIFACTS / "2-filled-in.png")
            card.get_by_role("button", name="Save").tap()

            page.wait_for_url(f"{site.url}/logbook/")
            expect(page.locator("#messages")).to_contain_text("is business.")
            expect(page.locator(f"#trip-{trip.pk}")).to_have_count(0)
            today = page.locator(f'#today [data-trip="{trip.pk}"]')
            expect(today.locator(".cat-badge")).to_have_text("Business")
            expect(today).to_contain_text("Quarterly review (Meyer KG)")
            page.screenshot(path=ARTIFACTS / "3-confirmed.png", full_page=True)

            # Its page: the route on a map and the revisions just written.
            today.locator("a").tap()
            page.wait_for_url(f"{site.url}/logbook/trips/{trip.pk}/")
            page.wait_for_function(
                "() => document.getElementById('trip-map').tripMap !== undefined")
            expect(page.locator("#revisions")).to_contain_text("purpose")
            expect(page.locator("#revisions")).to_contain_text("via web")
            page.wait_for_timeout(300)
            page.screenshot(path=ARTIFACTS / "4-trip-page.png", full_page=True)

            # The fleet manager's overview, on a desk.
            desk = browser.new_context(viewport={"width": 1280, "height": 800})
            manager = desk.new_page()
            manager.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            manager.on("console", lambda message: report(message, problems))
            manager.goto(f"{site.url}/login/?next=/logbook/")
            manager.fill("#id_username", "adam")
            manager.fill("#id_password", PASSWORD)
            manager.click("button[type=submit]")
            manager.wait_for_url(f"{site.url}/logbook/")
            row = manager.locator(f'#completeness tr[data-vehicle="{drivers_day["van"].pk}"]')
            expect(row.locator('[data-field="unclassified"]')).to_have_text("1")
            expect(row.locator('[data-field="open_gaps"]')).to_have_text("1")
            manager.screenshot(path=ARTIFACTS / "5-manager.png", full_page=True)
            manager.locator(f'a[href="/logbook/vehicles/{drivers_day["van"].pk}/"]').click()
            expect(manager.locator("#entries")).to_contain_text("Private trip")
            expect(manager.locator("#entries")).not_to_contain_text("Am See")
            manager.screenshot(path=ARTIFACTS / "6-vehicle-logbook.png", full_page=True)
        finally:
            browser.close()
    saved = Trip.objects.get(pk=trip.pk)
    assert (saved.category, saved.purpose, saved.partner) == (
        "business", "Quarterly review", "Meyer KG")
    assert not problems, json.dumps(problems, indent=2)


def in_a_thread(function):
    """ORM work while Playwright's loop runs in this thread (Django refuses it here)."""
    from concurrent.futures import ThreadPoolExecutor

    def run():
        try:
            return function()
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result(30)


def test_the_live_map_drops_a_vehicle_once_its_trip_is_private(site, drivers_day):
    """The dispatcher follows Van 7 parked after a business trip; the driver marks the
    trip private: the marker leaves the map and the row says why."""
    import asyncio

    from channels.layers import get_channel_layer

    from fleet.live import organisation_group
    from telematics.models import VehicleState

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    van = drivers_day["van"]
    trip = drivers_day["trip"]
    Trip.objects.filter(pk=trip.pk).update(category="business")  # for the test only
    create_user("dora", van.organisation, Role.DISPATCHER, password=PASSWORD)
    fix_time = max(trip.end_time, timezone.now() - timedelta(seconds=30))
    VehicleState.objects.create(vehicle=van, fix_time=fix_time, latitude=52.53,
                                longitude=13.41, speed_kmh=0.0, ignition=False)
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda message: report(message, problems))
            page.goto(f"{site.url}/login/")
            page.fill("#id_username", "dora")
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{site.url}/")
            expect(page.locator("#live-connection")).to_have_text("Live")
            page.wait_for_function(
                f"() => document.getElementById('live-map').liveMap.isDrawn({van.pk})")

            in_a_thread(lambda: Trip.objects.filter(pk=trip.pk).update(category="private"))
            update = {"id": van.pk, "fix_time": timezone.now().isoformat(),
                      "latitude": 52.53, "longitude": 13.41, "speed_kmh": 0.0,
                      "course": None, "ignition": False}
            asyncio.run_coroutine_threadsafe(get_channel_layer().group_send(
                organisation_group(van.organisation_id),
                {"type": "vehicles.update", "vehicles": [update]}), site.loop).result(10)
            page.wait_for_function(
                f"() => !document.getElementById('live-map').liveMap.isDrawn({van.pk})")
            row = page.locator(f'#vehicle-rows tr[data-vehicle="{van.pk}"]')
            expect(row.locator(".badge")).to_have_text("private")
            expect(row.locator(".age")).to_have_text("Private trip")
            expect(row.locator(".position")).to_have_text("—")
            page.wait_for_timeout(300)
            page.screenshot(path=ARTIFACTS / "7-live-map-private.png")
        finally:
            browser.close()
    assert not problems, json.dumps(problems, indent=2)
