"""The live map page and the vehicle page: who sees what, and nothing inline to execute."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.contrib.staticfiles import finders

from fleet.views import format_age
from tests.dashboard.conftest import PASSWORD

pytestmark = pytest.mark.django_db


class Assets(HTMLParser):
    """Collects the scripts and stylesheets a page loads, and any inline script."""

    def __init__(self):
        super().__init__()
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.inline_scripts = 0
        self._in_inline_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script":
            if attributes.get("src"):
                self.scripts.append(attributes["src"])
            else:
                self.inline_scripts += 1
        elif tag == "link" and attributes.get("rel") == "stylesheet":
            self.styles.append(attributes["href"])
        if any(name.startswith("on") for name in attributes):
            self.inline_scripts += 1  # an onclick= is inline script too


def assets_of(html: str) -> Assets:
    parser = Assets()
    parser.feed(html)
    return parser


def logged_in(client, username: str):
    assert client.login(username=username, password=PASSWORD)
    return client


@pytest.mark.parametrize("username", ["adam", "dora", "dana"])
def test_map_page_renders_for_each_role(client, world, username):
    page = logged_in(client, username).get("/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="live-map"' in html and 'data-ws-path="/ws/live/"' in html
    assert 'data-time-zone="Europe/Berlin"' in html
    assert "Van 1" in html
    if username == "dana":
        assert "Van 2" not in html and "Van 3" not in html
    else:
        assert "Van 2" in html and "Van 3" in html
    assert "Truck 9" not in html


def test_map_page_for_the_operator(client, world, django_user_model):
    django_user_model.objects.create_superuser("operator", "", PASSWORD)
    html = logged_in(client, "operator").get("/").content.decode()
    assert "Truck 9" in html and "Van 1" in html
    assert 'data-time-zone="UTC"' in html


def test_map_page_lists_status_speed_age_and_counts(client, world):
    html = logged_in(client, "dora").get("/").content.decode()
    van1_row = html[html.index(f'data-vehicle="{world["van1"].pk}"'):]
    van1_row = van1_row[:van1_row.index("</tr>")]
    assert 'data-status="moving"' in van1_row and "48 km/h" in van1_row
    assert re.search(r'class="age num">\d+ s<', van1_row)
    assert "52.52000, 13.40500" in van1_row
    assert '<option value="moving">Moving (1)</option>' in html
    assert '<option value="stopped">Stopped (1)</option>' in html
    assert '<option value="offline">Offline (1)</option>' in html


def test_anonymous_is_sent_to_log_in(client, world):
    for url in ("/", f"/vehicles/{world['van1'].pk}/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_vehicle_page(client, world):
    page = logged_in(client, "dora").get(f"/vehicles/{world['van1'].pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Van 1" in html and "B-AC 1" in html
    assert "48 km/h" in html and "52.52000, 13.40500" in html
    assert ">on<" in html  # ignition
    assert "dana" in html  # the driver
    assert f'data-focus="{world["van1"].pk}"' in html


def test_vehicle_page_is_404_across_organisations(client, world):
    assert logged_in(client, "gus").get(f"/vehicles/{world['van1'].pk}/").status_code == 404
    assert client.get(f"/vehicles/{world['truck'].pk}/").status_code == 200


def test_driver_sees_only_the_vehicle_they_drive(client, world):
    logged_in(client, "dana")
    assert client.get(f"/vehicles/{world['van1'].pk}/").status_code == 200
    assert client.get(f"/vehicles/{world['van2'].pk}/").status_code == 404


def test_vehicle_without_a_fix(client, world):
    from fleet.models import Vehicle

    new = Vehicle.objects.create(organisation=world["acme"], name="Van 4")
    html = logged_in(client, "dora").get(f"/vehicles/{new.pk}/").content.decode()
    assert "No fix yet" in html and "offline" in html
    assert "No fix yet" in client.get("/").content.decode()


def test_pages_run_no_inline_script_and_load_nothing_from_elsewhere(client, world):
    pages = [client.get("/login/").content.decode()]
    logged_in(client, "dora")
    pages += [client.get(url).content.decode() for url in ("/", f"/vehicles/{world['van1'].pk}/")]
    for html in pages:
        assets = assets_of(html)
        assert assets.inline_scripts == 0
        for url in assets.scripts + assets.styles:
            assert url.startswith("/static/"), url  # no CDN
    assets = assets_of(pages[1])
    assert "/static/fleet/live-map.js" in assets.scripts
    for url in assets.scripts + assets.styles:
        assert finders.find(url.removeprefix("/static/")), f"{url} is not in static/"


def test_live_map_module_is_served(client, world):
    response = logged_in(client, "dora").get("/static/fleet/live-map.js")
    assert response.status_code == 200
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"/ws/live/" in body


def test_format_age():
    assert [format_age(s) for s in (-3, 0, 59, 60, 3599, 3600, 86399, 86400 * 3)] == [
        "0 s", "0 s", "59 s", "1 min", "59 min", "1 h", "23 h", "3 d"]
