"""The replay, the charts and a report in Debian's Chromium, under the site's strict CSP.

The replay loads, plays (the marker moves), seeks with the slider and the keyboard; the
charts and the report chart draw with uPlot; phone-sized screenshots too. Every
screenshot lands in ``test-artifacts/history/``; no console error (a CSP violation is
one) is tolerated.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page, sync_playwright

from tests.history.conftest import build_world, t

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "history"
DAY_QUERY = "from=2024-05-06&to=2024-05-06"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="Debian's chromium is not installed (apt-get install chromium)"),
]


@pytest.fixture
def site(live_server, transactional_db, settings):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False  # plain http here
    settings.MAP_TILE_URL = ""  # no tile server reachable: the plain background
    return live_server.url, build_world()


@pytest.fixture
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser, url: str, path: str, username: str, problems: list[str],
              **context) -> Page:
    """Log in and go straight to ``path`` (the live map's websocket has no server here)."""
    page = browser.new_context(**context).new_page()
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda m: m.type == "error" and problems.append(
        f"{m.text} ({m.location.get('url', '')})"))
    page.goto(f"{url}/login/?{urlencode({'next': path})}")
    page.fill("#id_username", username)
    page.fill("#id_password", f"pw-{username}")
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}{path}")
    return page


def replay(page: Page, expression: str, arg=None):
    return page.evaluate(
        "(arg) => { const r = document.getElementById('replay-map').replay; "
        f"return {expression}; }}", arg)


def test_replay_plays_and_seeks(site, browser):
    url, world = site
    problems: list[str] = []
    path = f"/vehicles/{world['van'].pk}/replay/?{DAY_QUERY}"
    page = open_page(browser, url, path, "desk", problems,
                     viewport={"width": 1280, "height": 860})
    page.wait_for_selector("#replay-map[data-state=ready]", timeout=15000)
    assert page.locator("#replay-stops li").count() == 2
    assert page.locator(".replay-stop").count() == 2
    assert "12.5 km" in page.inner_text("#replay-summary")
    assert page.is_visible("#replay-private")
    start = replay(page, "r.state()")
    assert start["time"] == t("06:50:00").timestamp() and not start["playing"]

    # Play at 600x: the stop at the depot is skipped, the marker drives off.
    page.select_option("#replay-factor", "600")
    page.click("#replay-play")
    page.wait_for_function(
        "() => document.getElementById('replay-map').replay.state().time > "
        f"{t('07:03:00').timestamp()}", timeout=10000)
    moving = replay(page, "r.state()")
    assert moving["latlng"] != start["latlng"]
    assert page.get_attribute("#replay-play", "aria-label") == "Pause"
    page.screenshot(path=str(ARTIFACTS / "replay-playing.png"))
    page.click("#replay-play")
    paused = replay(page, "r.state()")
    assert not paused["playing"]
    page.wait_for_timeout(300)
    assert replay(page, "r.state().time") == paused["time"]

    # The slider seeks: to 07:05:00, fix 10 of the drive to the customer (3 km east).
    offset = int(t("07:05:00").timestamp() - start["time"])
    page.evaluate("(v) => { const s = document.getElementById('replay-slider'); s.value = v;"
                  " s.dispatchEvent(new Event('input', {bubbles: true})); }", offset)
    seeked = replay(page, "r.state()")
    assert seeked["time"] == t("07:05:00").timestamp()
    assert seeked["latlng"]["lat"] == pytest.approx(52.52, abs=1e-6)
    assert seeked["latlng"]["lng"] > start["latlng"]["lng"] + 0.04
    assert "36 km/h" in page.inner_text("#replay-readout")
    # ...and with the keyboard: End is the last fix, parked at E.
    page.focus("#replay-slider")
    page.keyboard.press("End")
    end = replay(page, "r.state()")
    assert end["latlng"]["lat"] == pytest.approx(world["e"][0], abs=1e-6)
    # A stop in the list seeks to it.
    page.click("#replay-stops li:first-child button")
    assert replay(page, "r.state().time") == t("06:50:00").timestamp()
    assert "Stop 1" in page.inner_text("#replay-readout")
    page.screenshot(path=str(ARTIFACTS / "replay-desktop.png"))

    phone = open_page(browser, url, path, "alice", problems,
                      viewport={"width": 390, "height": 844}, device_scale_factor=2,
                      is_mobile=True, has_touch=True)
    phone.wait_for_selector("#replay-map[data-state=ready]", timeout=15000)
    assert phone.locator("#replay-stops li").count() == 4  # her own day, in full
    width = phone.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
    phone.screenshot(path=str(ARTIFACTS / "replay-phone.png"), full_page=True)
    assert problems == []


def test_charts_and_report_chart_draw(site, browser):
    url, world = site
    problems: list[str] = []
    charts = f"/vehicles/{world['van'].pk}/charts/?{DAY_QUERY}"
    page = open_page(browser, url, charts, "alice", problems,
                     viewport={"width": 1280, "height": 900})
    page.wait_for_selector("#charts[data-state=ready]", timeout=15000)
    drawn = page.evaluate("() => document.getElementById('charts').charts.map(c => c.signal)")
    assert drawn == ["vehicle_speed", "coolant_temperature"]
    assert page.locator("#charts canvas").count() == 2
    assert page.inner_text("#charts-status") == (
        "No data in this period: Fuel level, Engine speed.")
    # The coolant chart holds the four samples (one a null break after each run).
    values = page.evaluate("() => document.getElementById('charts').charts[1].data[1]"
                           ".filter(v => v != null)")
    assert values == [70.0, 82.5, 88.0, 79.0]
    page.screenshot(path=str(ARTIFACTS / "charts-desktop.png"), full_page=True)

    query = (f"type=categories&subject=vehicle:{world['van'].pk}"
             "&start=2024-05-04&end=2024-05-08")
    page.goto(f"{url}/reports/?{query}")
    page.wait_for_selector("#report-chart[data-state=ready]", timeout=15000)
    assert page.locator("#report-chart canvas").count() == 1
    assert page.locator("#report-table tbody tr").count() == 5
    page.screenshot(path=str(ARTIFACTS / "report-desktop.png"), full_page=True)

    phone = open_page(browser, url, f"/reports/?type=mileage&subject=vehicle:{world['van'].pk}"
                      "&start=2024-05-04&end=2024-05-10", "desk", problems,
                      viewport={"width": 390, "height": 844}, device_scale_factor=2,
                      is_mobile=True, has_touch=True)
    phone.wait_for_selector("#report-chart[data-state=ready]", timeout=15000)
    phone.screenshot(path=str(ARTIFACTS / "report-phone.png"), full_page=True)
    phone.goto(f"{url}{charts}")
    phone.wait_for_selector("#charts[data-state=ready]", timeout=15000)
    phone.screenshot(path=str(ARTIFACTS / "charts-phone.png"), full_page=True)
    assert problems == []

    # The vehicle page links here (its live map has no websocket server in this test).
    phone.goto(f"{url}/vehicles/{world['van'].pk}/")
    phone.click("text=Replay a day")
    phone.wait_for_selector("#replay-map[data-state]", timeout=15000)
    page.goto(f"{url}/vehicles/{world['van'].pk}/")
    page.wait_for_selector(".history-links")
    page.screenshot(path=str(ARTIFACTS / "vehicle-desktop.png"))
    assert [p for p in problems if "WebSocket" not in p] == []
