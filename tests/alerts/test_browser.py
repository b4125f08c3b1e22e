"""Geofences and the live event feed in a real browser.

A dispatcher draws a polygon with Leaflet.draw on the live map and names it; a Teltonika
unit then drives into it over a real TCP socket, and the enter event appears in the
feed over the websocket (decoder, pipeline, alert worker, channel layer, consumer,
live-map.js's message hook, event-feed.js). Same site and ingest as the dashboard's
browser test, with the strict Content-Security-Policy. Screenshots land in
``test-artifacts/geofences/``.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection
from playwright.sync_api import Page, expect, sync_playwright

import tests.dashboard.test_browser as dashboard
from telematics.models import Event, Geofence
from tests.dashboard.conftest import PASSWORD

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "geofences"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous"),
    pytest.mark.skipif(not dashboard.CHROMIUM.exists(),
                       reason="Debian's chromium is not installed (apt-get install chromium)"),
]

fleet_in_berlin = dashboard.fleet_in_berlin


@pytest.fixture
def site(transactional_db, settings, monkeypatch):
    """The dashboard test's site: uvicorn and the Teltonika listener on one loop."""
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False  # plain http here
    settings.MAP_TILE_URL = ""
    settings.INGEST_BATCH_WAIT_MS = 5
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    from fleet.asgi import application

    # The browsers' Origin check took ALLOWED_HOSTS when fleet.asgi was first imported
    # (behind the token/API-key handshake when there is one).
    websocket = application.application_mapping["websocket"]
    monkeypatch.setattr(getattr(websocket, "fallback", websocket), "allowed_origins",
                        settings.ALLOWED_HOSTS)
    server = dashboard.Site()
    server.start()
    yield server
    server.stop()

# A block in Berlin-Mitte, corners as (lat, lon).
BLOCK = [(52.5285, 13.4170), (52.5285, 13.4230), (52.5315, 13.4230), (52.5315, 13.4170)]


def orm(query):
    """Run an ORM query off the thread where Playwright's event loop runs."""
    def run():
        try:
            return query()
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result(30)


def point_of(page: Page, lat: float, lon: float) -> tuple[float, float]:
    """Where (lat, lon) is on the page, in CSS pixels."""
    return tuple(page.evaluate("""([lat, lon]) => {
        const element = document.getElementById('live-map');
        const p = element.liveMap.map.latLngToContainerPoint([lat, lon]);
        const box = element.getBoundingClientRect();
        return [box.left + p.x, box.top + p.y];
    }""", [lat, lon]))


def log_in(page: Page, url: str) -> None:
    page.goto(f"{url}/login/")
    page.fill("#id_username", "dora")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/")
    expect(page.locator("#live-connection")).to_have_text("Live")


def test_draw_a_geofence_and_see_the_enter_event_live(site, fleet_in_berlin):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(dashboard.CHROMIUM), args=dashboard.CHROMIUM_ARGS,
            headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda message: dashboard.report(message, problems))
            log_in(page, site.url)
            expect(page.locator("#event-feed")).to_be_visible()
            expect(page.locator('#event-feed [data-field="empty"]')).to_be_visible()
            page.evaluate("document.getElementById('live-map').liveMap.map"
                          ".setView([52.5300, 13.4200], 15, {animate: false})")
            page.wait_for_timeout(300)

            # Draw the block with the polygon tool: four corners, then the first again.
            page.click(".leaflet-draw-draw-polygon")
            for lat, lon in [*BLOCK, BLOCK[0]]:
                x, y = point_of(page, lat, lon)
                page.mouse.click(x, y)
                page.wait_for_timeout(150)
            form = page.locator("#geofence-form")
            expect(form).to_be_visible()
            page.screenshot(path=ARTIFACTS / "1-drawn-unnamed.png")
            form.locator('input[name="name"]').fill("Customer Mitte")
            form.locator('input[name="speed_limit_kmh"]').fill("30")
            form.locator("button[type=submit]").click()
            expect(form).to_be_hidden()
            page.wait_for_function("() => document.getElementById('live-map').geofences"
                                   ".byName('Customer Mitte')")
            fence = orm(lambda: Geofence.objects.get(name="Customer Mitte"))
            ring = fence.geometry["coordinates"][0]
            assert fence.geometry["type"] == "Polygon" and len(ring) == 5
            assert ring[0] == ring[-1] and fence.speed_limit_kmh == 30
            for (lat, lon), (x, y) in zip(BLOCK, ring, strict=False):
                assert abs(lat - y) < 0.0002 and abs(lon - x) < 0.0002
            expect(page.locator(".geofence-label")).to_have_text("Customer Mitte")

            # A circle named like the block: the API's answer shows in the form.
            page.click(".leaflet-draw-draw-circle")
            cx, cy = point_of(page, 52.5275, 13.4120)
            page.mouse.move(cx, cy)
            page.mouse.down()
            page.mouse.move(cx + 40, cy, steps=5)
            page.mouse.move(cx + 60, cy, steps=5)
            page.mouse.up()
            expect(form).to_be_visible()
            form.locator('input[name="name"]').fill("Customer Mitte")
            form.locator("button[type=submit]").click()
            error = form.locator('[data-field="error"]')
            expect(error).to_contain_text("geofence of this name already")
            page.screenshot(path=ARTIFACTS / "2-name-taken.png")
            # The browser logs that refused POST as an error: expected here, once.
            refused = [p for p in problems if "400 (Bad Request)" in p and "geofences" in p]
            assert len(refused) == 1
            problems.remove(refused[0])
            form.locator('input[name="name"]').fill("Bakery")
            form.locator("button[type=submit]").click()
            expect(form).to_be_hidden()
            bakery = orm(lambda: Geofence.objects.get(name="Bakery"))
            assert bakery.geometry["type"] == "Point" and 50 < bakery.radius_m < 400
            page.wait_for_timeout(300)
            page.screenshot(path=ARTIFACTS / "3-geofences.png")

            # Van 7 drives in over a real socket: outside, then two fixes inside.
            now = datetime.now(UTC) - timedelta(seconds=20)
            track = [(52.5270, 13.4200), (52.5288, 13.4200), (52.5295, 13.4200),
                     (52.5300, 13.4200)]
            for i, (lat, lon) in enumerate(track):
                dashboard.send_teltonika_fix(site.teltonika_port, latitude=lat, longitude=lon,
                                             when=now + timedelta(seconds=4 * i),
                                             speed_kmh=25.0, course=0.0, ignition=True)
            item = page.locator('#event-feed li[data-type="geofence_enter"]')
            expect(item).to_have_count(1, timeout=5000)
            expect(item).to_contain_text("Van 7 entered Customer Mitte")
            expect(item.locator(".event-type")).to_have_text("Geofence entered")
            expect(page.locator('#event-feed [data-field="empty"]')).to_be_hidden()
            page.wait_for_timeout(500)
            page.screenshot(path=ARTIFACTS / "4-enter-event-live.png")
            assert orm(lambda: Event.objects.filter(type="geofence_enter").count()) == 1

            # The events page lists it, filtered by type and vehicle.
            page.click("text=All events")
            # (The logbook's trip events of the drive are listed too.)
            expect(page.locator('#event-list tbody tr[data-type="geofence_enter"]')
                   ).to_have_count(1)
            page.select_option("#event-type", "geofence_enter")
            page.select_option("#event-vehicle", label="Van 7")
            page.click(".event-filters button[type=submit]")
            expect(page.locator("#event-list")).to_contain_text("Van 7 entered Customer Mitte")
            page.screenshot(path=ARTIFACTS / "5-events-page.png", full_page=True)

            # A phone: the feed starts folded away, a tap opens it.
            phone = browser.new_context(
                viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                has_touch=True, storage_state=context.storage_state())
            small = phone.new_page()
            small.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            small.goto(f"{site.url}/")
            expect(small.locator("#live-connection")).to_have_text("Live")
            expect(small.locator("#event-feed")).to_have_class("event-feed collapsed")
            small.locator('#event-feed [data-action="toggle"]').tap()
            expect(small.locator('#event-feed li[data-type="geofence_enter"]')).to_have_count(1)
            small.wait_for_timeout(300)
            small.screenshot(path=ARTIFACTS / "6-phone.png")
        finally:
            browser.close()
    assert not problems, json.dumps(problems, indent=2)
