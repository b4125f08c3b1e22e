"""The vehicle page's signals, faults and service plans in Debian's Chromium under the
site's strict CSP: on a phone nothing pushes the page sideways, on a desk the cards sit
two abreast without scrolling; no console error (a CSP violation is one) is tolerated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.sync_api import sync_playwright

from fleet.models import Organisation, Role, Vehicle
from fleet.services import create_user
from telematics.models import Fault, ServicePlan, VehicleState
from telematics.services import register_unit

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "vehicle_data"
NOW = datetime.now(UTC).replace(microsecond=0)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="Debian's chromium is not installed (apt-get install chromium)"),
]


@pytest.fixture
def site(live_server, transactional_db, settings):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False  # plain http here
    settings.MAP_TILE_URL = ""
    acme = Organisation.objects.create(name="Acme", time_zone="Europe/Berlin")
    create_user("mia", acme, Role.ADMIN, password="pw-mia-phone")
    van = Vehicle.objects.create(organisation=acme, name="Van 7 with a rather long name",
                                 licence_plate="B-AC 7")
    unit = register_unit("356307042441013", "teltonika", acme, vehicle_name=van.name)
    signals = {key: {"value": value, "time": (NOW - timedelta(seconds=30)).isoformat(),
                     "unit": unit_name, "source": "j1939"}
               for key, value, unit_name in [
                   ("engine_speed", 1450.0, "rpm"), ("vehicle_speed", 82.0, "km/h"),
                   ("coolant_temperature", 88.0, "°C"), ("fuel_level", 61.5, "%"),
                   ("fuel_rate", 24.35, "L/h"), ("odometer", 854_934.1, "km"),
                   ("engine_hours", 21_305.55, "h"), ("distance_since_codes_cleared",
                                                      1_204.0, "km")]}
    VehicleState.objects.create(vehicle=van, device=unit, fix_time=NOW, server_time=NOW,
                                latitude=52.5, longitude=13.4, speed_kmh=82.0,
                                signals=signals)
    Fault.objects.create(vehicle=van, code="SPN3251-FMI16", source="j1939:DM1:00",
                         description="Aftertreatment diesel particulate filter differential "
                         "pressure above normal, moderately severe", spn=3251, fmi=16,
                         occurrence=12, first_seen=NOW - timedelta(days=2), last_seen=NOW)
    Fault.objects.create(vehicle=van, code="P0104", source="obd2:7E8:stored",
                         description="Mass air flow circuit intermittent",
                         first_seen=NOW - timedelta(days=9), last_seen=NOW - timedelta(days=8),
                         closed_at=NOW - timedelta(days=8))
    ServicePlan.objects.create(vehicle=van, name="Engine oil and filters", interval_km=100_000,
                               interval_hours=1_000, last_done_at=NOW - timedelta(days=200),
                               last_done_odometer_km=760_000, last_done_engine_hours=20_310)
    return live_server.url, van


def test_vehicle_health_on_a_phone_and_a_desk(site):
    url, van = site
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=CHROMIUM_ARGS, headless=True)
        try:
            for name, context in [
                ("phone", {"viewport": {"width": 360, "height": 780}, "is_mobile": True,
                           "has_touch": True, "device_scale_factor": 2}),
                ("desk", {"viewport": {"width": 1400, "height": 900}}),
            ]:
                page = browser.new_context(**context).new_page()
                page.on("console", lambda m: m.type == "error" and "WebSocket" not in m.text
                        and problems.append(m.text))
                page.on("pageerror", lambda error: problems.append(str(error)))
                path = f"/vehicles/{van.pk}/"
                page.goto(f"{url}/login/?{urlencode({'next': path})}")
                page.fill("#id_username", "mia")
                page.fill("#id_password", "pw-mia-phone")
                page.click("button[type=submit]")
                page.wait_for_url(f"{url}{path}")
                page.wait_for_selector("#vehicle-service")
                page.screenshot(path=str(ARTIFACTS / f"vehicle-health-{name}.png"),
                                full_page=True)
                overflow = page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth")
                assert overflow <= 0, f"{name}: the page scrolls sideways by {overflow}px"
                boxes = [page.locator(f"#{section}").bounding_box()
                         for section in ("vehicle-signals", "vehicle-faults", "vehicle-service")]
                lefts = {round(box["x"]) for box in boxes}
                if name == "phone":
                    assert len(lefts) == 1  # stacked, one column
                    assert all(box["width"] <= 360 for box in boxes)
                else:
                    assert len(lefts) == 2  # signals beside faults, plans below
                    for section in ("vehicle-signals", "vehicle-faults"):
                        cut = page.evaluate(f"(e => e.scrollWidth - e.clientWidth)"
                                            f"(document.getElementById('{section}'))")
                        assert cut <= 0, f"{section} scrolls sideways by {cut}px on a desk"
                badge = page.locator(".plan-state").first
                assert badge.inner_text() == "due soon"
                assert page.locator("#vehicle-signals tr[data-signal=odometer] td.num") \
                    .inner_text().replace("\xa0", " ") == "854,934.1 km"
        finally:
            browser.close()
    assert problems == []
