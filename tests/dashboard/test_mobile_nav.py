"""The top bar on a phone (375 x 812) in Debian's Chromium, under the strict CSP: one
line with a "Menu" button that opens the links as a list (CSS only, no script), and the
alert rule pages fit the screen. Screenshots land in ``test-artifacts/dashboard/``."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from fleet.models import Role
from fleet.services import create_user
from telematics.models import AlertRule
from tests.dashboard.conftest import PASSWORD
from tests.dashboard.test_browser import (  # noqa: F401  (fixtures)
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    fleet_in_berlin,
    report,
    site,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous"),
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="Debian's chromium is not installed (apt-get install chromium)"),
]
PHONE = {"width": 375, "height": 812}
LINKS = ["Map", "Events", "Alert rules", "Jobs", "Reports", "Logbook"]


def log_in(page: Page, url: str, username: str) -> None:
    page.goto(f"{url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/")


def box(page: Page, selector: str) -> dict:
    return page.locator(selector).bounding_box()


def overflows(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth > window.innerWidth")


def test_the_top_bar_is_a_menu_on_a_phone(site, fleet_in_berlin):  # noqa: F811
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    acme = fleet_in_berlin["van7"].organisation
    create_user("adam", acme, Role.ADMIN, password=PASSWORD)
    AlertRule.objects.create(organisation=acme, name="Speeding in town",
                             event_types=["overspeed", "idle"], overspeed_kmh=50,
                             idle_minutes=10, recipients=["dispatch@acme.example"])
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=CHROMIUM_ARGS, headless=True)
        try:
            phone = browser.new_context(viewport=PHONE, device_scale_factor=2,
                                        is_mobile=True, has_touch=True)
            page = phone.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda message: report(message, problems))
            log_in(page, site.url, "dora")
            expect(page.locator("#live-connection")).to_have_text("Live")

            # Closed: brand and the menu button on one line, no link showing.
            bar = box(page, ".topbar")
            assert bar["height"] < 60, bar
            button = page.locator("label.nav-button")
            expect(button).to_be_visible()
            expect(page.locator("#site-nav")).to_be_hidden()
            assert abs(box(page, ".brand")["y"] - box(page, "label.nav-button")["y"]) < 12
            assert not overflows(page)
            page.screenshot(path=str(ARTIFACTS / "phone-menu-closed.png"))

            # Open: every link a full-width row over the map, tappable.
            button.tap()
            nav = page.locator("#site-nav")
            expect(nav).to_be_visible()
            tops = []
            for name in LINKS:
                link = nav.get_by_role("link", name=name, exact=True)
                expect(link).to_be_visible()
                link_box = link.bounding_box()
                assert link_box["height"] >= 40 and link_box["width"] > 300, (name, link_box)
                tops.append(link_box["y"])
            assert tops == sorted(tops) and len(set(tops)) == len(tops)  # one column
            expect(nav.get_by_role("button", name="Log out")).to_be_visible()
            assert box(page, ".topbar")["height"] == bar["height"]  # over the map, not pushing
            expect(nav.get_by_role("link", name="Map")).to_have_attribute("aria-current", "page")
            page.screenshot(path=str(ARTIFACTS / "phone-menu-open.png"))

            # The keyboard works too: the checkbox behind the button takes Space.
            button.tap()
            expect(nav).to_be_hidden()
            page.focus("#nav-toggle")
            page.keyboard.press("Space")
            expect(nav).to_be_visible()

            nav.get_by_role("link", name="Alert rules").tap()
            page.wait_for_url(f"{site.url}/alert-rules/")
            expect(page.locator("#rule-list")).to_contain_text("Speeding in town")
            expect(page.locator("#site-nav")).to_be_hidden()
            assert not overflows(page)
            page.screenshot(path=str(ARTIFACTS / "phone-alert-rules-dispatcher.png"),
                            full_page=True)
            phone.close()

            # The fleet manager's form on the phone.
            phone = browser.new_context(viewport=PHONE, device_scale_factor=2,
                                        is_mobile=True, has_touch=True)
            page = phone.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda message: report(message, problems))
            log_in(page, site.url, "adam")
            page.goto(f"{site.url}/alert-rules/new/")
            assert not overflows(page)
            page.fill("#id_name", "Low fuel")
            page.check("input[name=event_types][value=low_fuel]")
            page.fill("#id_low_fuel_percent", "12")
            page.fill("#id_recipients", "fleet@acme.example")
            page.screenshot(path=str(ARTIFACTS / "phone-alert-rule-form.png"), full_page=True)
            page.get_by_role("button", name="Create rule").tap()
            page.wait_for_url(f"{site.url}/alert-rules/")
            expect(page.locator("#rule-list")).to_contain_text("fuel below 12 %")
            phone.close()

            # A desktop shows the links in the bar and no menu button.
            desktop = browser.new_context(viewport={"width": 1280, "height": 800})
            page = desktop.new_page()
            log_in(page, site.url, "dora")
            expect(page.locator("label.nav-button")).to_be_hidden()
            for name in LINKS:
                expect(page.locator("#site-nav").get_by_role("link", name=name,
                                                              exact=True)).to_be_visible()
            assert box(page, ".topbar")["height"] < 60
            page.screenshot(path=str(ARTIFACTS / "desktop-top-bar.png"))
            desktop.close()
        finally:
            browser.close()
    assert problems == []
