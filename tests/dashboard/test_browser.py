"""The live map in a real browser: log in, see the fleet, watch a fix arrive and move it.

The site (``fleet.asgi:application`` under uvicorn) and a Teltonika listener run in one
event loop on a background thread of the test process, as ``manage.py demo`` runs them,
so they share the channel layer; the fix travels over a real TCP socket through the real
decoder, pipeline, database, consumer and websocket into Debian's Chromium. The pages are
served with a strict Content-Security-Policy, so an inline script would fail here too.

Screenshots land in ``test-artifacts/dashboard/``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from django.db import connection
from playwright.sync_api import ConsoleMessage, Page, expect, sync_playwright

from fleet.models import Organisation, Role, Vehicle
from fleet.services import create_user
from telematics.ingest.runner import start_ingest
from telematics.models import VehicleState
from telematics.services import register_unit
from telematics.simulator.encoders import fix_at, teltonika_avl, teltonika_login
from tests.dashboard.conftest import PASSWORD, close_thread_connection, place

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
IMEI = "356307042441013"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")

pytestmark = [
    pytest.mark.slow,
    # WhiteNoise hands Django's ASGI handler a synchronous file iterator; harmless here.
    pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous"),
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="Debian's chromium is not installed (apt-get install chromium)"),
]


class Site:
    """uvicorn serving the site plus the Teltonika listener, on one loop in a thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="site", daemon=True)
        self.port = 0
        self.teltonika_port = 0

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    async def _start(self) -> None:
        from fleet.asgi import application

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(
            with_csp(application), lifespan="off", log_level="warning", access_log=False,
            ws="websockets-sansio", timeout_graceful_shutdown=2,
        ))
        self.server.config.setup_event_loop = lambda: None  # share this loop
        self.serving = asyncio.create_task(self.server.serve(sockets=[sock]))
        for _ in range(500):
            if self.server.started:
                break
            await asyncio.sleep(0.01)
        self.ingest = await start_ingest(("teltonika",), host="127.0.0.1",
                                         ports={"teltonika": 0}, mqtt_url="")
        self.teltonika_port = self.ingest.ports["teltonika"]

    async def _stop(self) -> None:
        await self.ingest.stop()
        self.server.should_exit = True
        await self.serving
        await close_thread_connection()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def send_teltonika_fix(port: int, **fix_fields) -> None:
    """What a Teltonika unit does: log in with its IMEI, send one AVL record, read the ack."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as unit:
        unit.sendall(teltonika_login(IMEI))
        assert unit.recv(1) == b"\x01"
        unit.sendall(teltonika_avl([fix_at(**fix_fields)]))
        ack = b""
        while len(ack) < 4:
            ack += unit.recv(4 - len(ack))
        assert ack == b"\x00\x00\x00\x01"


@pytest.fixture
def site(transactional_db, settings, monkeypatch):
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False  # plain http here
    settings.MAP_TILE_URL = ""  # no tile server reachable: the plain background
    settings.INGEST_BATCH_WAIT_MS = 5
    # Under ASGI every request runs in a thread of its own, so a persistent connection is
    # never reused: it would linger past the test and keep PostgreSQL from dropping the
    # test database. Every thread shares this dict, so all of them close at request end.
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    from fleet.asgi import application

    # The websocket's origin check took ALLOWED_HOSTS when fleet.asgi was first imported.
    monkeypatch.setattr(application.application_mapping["websocket"], "allowed_origins",
                        settings.ALLOWED_HOSTS)
    server = Site()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fleet_in_berlin(transactional_db) -> dict:
    acme = Organisation.objects.create(name="Acme Logistics", time_zone="Europe/Berlin")
    globex = Organisation.objects.create(name="Globex Haulage")
    create_user("dora", acme, Role.DISPATCHER, password=PASSWORD)
    dana = create_user("dana", acme, Role.DRIVER, password=PASSWORD)[0]
    device = register_unit(IMEI, "teltonika", acme, vehicle_name="Van 7")
    van7 = Vehicle.objects.get(pk=device.vehicle_id)
    van7.licence_plate, van7.default_driver = "B-AC 7", dana.driver
    van7.save()
    place(van7, 52.5200, 13.4050, age_s=60, speed_kmh=0.0, course=0.0, ignition=False)
    others = [
        ("Van 2", 52.5310, 13.3850, 42.0, 135.0, True),
        ("Van 3", 52.5090, 13.4300, 0.0, 270.0, True),
        ("Truck 11", 52.4750, 13.3600, 78.0, 20.0, True),
        ("Car 4", 52.5450, 13.4550, 0.0, None, False),
    ]
    for name, latitude, longitude, speed, course, ignition in others:
        vehicle = Vehicle.objects.create(organisation=acme, name=name)
        place(vehicle, latitude, longitude, speed_kmh=speed, course=course, ignition=ignition)
    offline = Vehicle.objects.create(organisation=acme, name="Van 9 (workshop)")
    place(offline, 52.4900, 13.3300, age_s=7200)
    Vehicle.objects.create(organisation=acme, name="Van 10 (new)")
    secret = Vehicle.objects.create(organisation=globex, name="Globex Truck")
    place(secret, 52.5150, 13.4000, speed_kmh=30.0, course=90.0, ignition=True)
    return {"van7": van7, "count": 7, "secret": secret}


def with_csp(application):
    """The site behind a strict Content-Security-Policy, as a production proxy may add."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return await application(scope, receive, send)

        async def send_with_policy(message):
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"content-security-policy", CSP.encode())]
                message = {**message, "headers": headers}
            await send(message)

        return await application(scope, receive, send_with_policy)

    return app


def report(message: ConsoleMessage, problems: list[str]) -> None:
    if message.type == "error":
        problems.append(f"{message.text} ({message.location.get('url', '')})")


def in_clear_view(page: Page, vehicle_id: int) -> bool:
    """Whether the vehicle's marker is drawn inside the map and not under the panel."""
    return page.evaluate("""(id) => {
        const element = document.getElementById('live-map');
        const live = element.liveMap;
        if (!live.isDrawn(id)) return false;
        const point = live.map.latLngToContainerPoint(live.marker(id).getLatLng());
        const m = element.getBoundingClientRect();
        const x = m.left + point.x, y = m.top + point.y;
        const inside = (r) => x >= r.left && x <= r.right && y >= r.top && y <= r.bottom;
        const panel = document.getElementById('vehicle-panel');
        return inside(m) && !(panel && !panel.hidden && inside(panel.getBoundingClientRect()));
    }""", vehicle_id)


def live_map(page: Page, expression: str, arg=None):
    return page.evaluate(
        f"(arg) => {{ const live = document.getElementById('live-map').liveMap; "
        f"return {expression}; }}", arg)


def test_live_map_in_a_browser(site, fleet_in_berlin):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    van7 = fleet_in_berlin["van7"].pk
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda message: report(message, problems))

            page.goto(f"{site.url}/login/")
            page.fill("#id_username", "dora")
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{site.url}/")
            expect(page.locator("#live-connection")).to_have_text("Live")

            rows = page.locator("#vehicle-rows tr[data-vehicle]")
            expect(rows).to_have_count(fleet_in_berlin["count"])
            expect(page.locator("#vehicle-rows")).not_to_contain_text("Globex")
            row = page.locator(f'#vehicle-rows tr[data-vehicle="{van7}"]')
            expect(row.locator(".badge")).to_have_text("parked")
            expect(row.locator(".position")).to_have_text("52.52000, 13.40500")
            with_position = live_map(
                page, "[...document.querySelectorAll('#vehicle-rows tr')]"
                ".filter((tr) => live.marker(Number(tr.dataset.vehicle))).length")
            assert with_position == fleet_in_berlin["count"] - 1  # Van 10 has no fix yet
            page.wait_for_timeout(400)  # let the cluster animation settle
            page.screenshot(path=ARTIFACTS / "1-fleet.png")

            # The status filter and the search box narrow the list.
            page.select_option("#status-filter", "moving")
            expect(page.locator("#vehicle-rows tr[data-vehicle]:visible")).to_have_count(2)
            page.select_option("#status-filter", "")
            page.fill("#vehicle-search", "truck")
            expect(page.locator("#vehicle-rows tr[data-vehicle]:visible")).to_have_count(1)
            page.fill("#vehicle-search", "")
            expect(page.locator("#vehicle-rows tr[data-vehicle]:visible")).to_have_count(
                fleet_in_berlin["count"])

            # Clicking a row follows the vehicle and opens its panel.
            row.locator(".speed").click()
            panel = page.locator("#vehicle-panel")
            expect(panel).to_be_visible()
            expect(panel.locator('[data-field="name"]')).to_have_text("Van 7")
            expect(panel.locator('[data-field="driver"]')).to_have_text("dana")
            expect(panel.locator('[data-field="ignition"]')).to_have_text("off")
            page.wait_for_function(
                f"() => document.getElementById('live-map').liveMap.isDrawn({van7})")
            page.wait_for_timeout(400)
            page.screenshot(path=ARTIFACTS / "2-selected.png")

            # A fix over a real socket: the marker moves and the row updates within 2 s.
            when = datetime.now(UTC) - timedelta(seconds=1)
            sent = time.monotonic()
            send_teltonika_fix(site.teltonika_port, latitude=52.5300, longitude=13.4200,
                               when=when, speed_kmh=50.0, course=90.0, ignition=True)
            page.wait_for_function(
                f"""() => {{
                    const m = document.getElementById('live-map').liveMap.marker({van7});
                    const p = m && m.getLatLng();
                    return p && Math.abs(p.lat - 52.53) < 1e-6 && Math.abs(p.lng - 13.42) < 1e-6;
                }}""", timeout=2000)
            expect(row.locator(".position")).to_have_text("52.53000, 13.42000", timeout=500)
            expect(row.locator(".speed")).to_have_text("50 km/h", timeout=500)
            expect(row.locator(".badge")).to_have_text("moving", timeout=500)
            assert time.monotonic() - sent < 2.0
            expect(panel.locator('[data-field="position"]')).to_have_text("52.53000, 13.42000")
            expect(panel.locator('[data-field="ignition"]')).to_have_text("on")
            assert live_map(page, f"live.marker({van7}).options.course") == 90
            # Followed: the map keeps the vehicle in view, clear of the panel.
            page.wait_for_timeout(400)
            assert in_clear_view(page, van7)
            page.wait_for_timeout(400)
            page.screenshot(path=ARTIFACTS / "3-moved.png")

            # The vehicle page: facts and a small map of its own.
            page.goto(f"{site.url}/vehicles/{van7}/")
            expect(page.locator('#vehicle-detail [data-field="speed"]')).to_have_text("50 km/h")
            page.wait_for_function(
                f"() => document.getElementById('live-map').liveMap.isDrawn({van7})")
            page.wait_for_timeout(300)
            page.screenshot(path=ARTIFACTS / "4-vehicle-page.png")
            secret = fleet_in_berlin["secret"].pk
            assert context.request.get(f"{site.url}/vehicles/{secret}/").status == 404

            # A phone: the map above the list, the panel over the map's foot.
            phone = browser.new_context(
                viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                has_touch=True, storage_state=context.storage_state())
            small = phone.new_page()
            small.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            small.on("console", lambda message: report(message, problems))
            small.goto(f"{site.url}/")
            expect(small.locator("#live-connection")).to_have_text("Live")
            small.wait_for_timeout(400)
            small.screenshot(path=ARTIFACTS / "5-phone.png", full_page=True)
            small.locator(f'#vehicle-rows tr[data-vehicle="{van7}"] .speed').tap()
            expect(small.locator("#vehicle-panel")).to_be_visible()
            small.wait_for_timeout(800)
            assert in_clear_view(small, van7)
            small.screenshot(path=ARTIFACTS / "6-phone-selected.png")
        finally:
            browser.close()
    assert not problems, json.dumps(problems, indent=2)




@pytest.fixture
def big_fleet(transactional_db) -> dict:
    """3,000 vehicles spread over Germany, a quarter of them moving."""
    acme = Organisation.objects.create(name="Acme Logistics", time_zone="Europe/Berlin")
    create_user("dora", acme, Role.DISPATCHER, password=PASSWORD)
    vehicles = Vehicle.objects.bulk_create(
        Vehicle(organisation=acme, name=f"Truck {n:04d}") for n in range(3000))
    now = datetime.now(UTC)
    VehicleState.objects.bulk_create(
        VehicleState(vehicle=v, fix_time=now - timedelta(seconds=n % 900),
                     latitude=47.5 + (n * 7919 % 3000) / 600,
                     longitude=6.5 + (n * 104729 % 3000) / 350,
                     speed_kmh=60.0 if n % 4 == 0 else 0.0, course=float(n % 360),
                     ignition=n % 3 != 0)
        for n, v in enumerate(vehicles))
    return {"acme": acme, "vehicles": vehicles}


def test_thousands_of_vehicles(site, big_fleet):
    """The snapshot of 3,000 vehicles and an update moving all of them stay quick."""
    from channels.layers import get_channel_layer

    from fleet.live import organisation_group

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    vehicles = big_fleet["vehicles"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{site.url}/login/")
            page.fill("#id_username", "dora")
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            started = time.monotonic()
            expect(page.locator("#live-connection")).to_have_text("Live", timeout=10000)
            snapshot_s = time.monotonic() - started
            expect(page.locator("#vehicle-rows tr[data-vehicle]")).to_have_count(3000)
            clusters = page.locator(".vehicle-cluster").count()
            assert 0 < clusters < 300  # clustered, not 3,000 things on the map
            page.wait_for_timeout(500)
            page.screenshot(path=ARTIFACTS / "7-thousands.png")

            when = datetime.now(UTC).isoformat()
            update = [{"id": v.pk, "fix_time": when, "latitude": 50.0 + i / 3000,
                       "longitude": 10.0, "speed_kmh": 30.0, "course": 90.0,
                       "ignition": True} for i, v in enumerate(vehicles)]
            sent = time.monotonic()
            asyncio.run_coroutine_threadsafe(get_channel_layer().group_send(
                organisation_group(big_fleet["acme"].pk),
                {"type": "vehicles.update", "vehicles": update}), site.loop).result(10)
            page.wait_for_function(
                f"""() => {{
                    const m = document.getElementById('live-map').liveMap.marker({vehicles[-1].pk});
                    return m && Math.abs(m.getLatLng().lat - {update[-1]["latitude"]}) < 1e-6;
                }}""", timeout=5000)
            update_s = time.monotonic() - sent
            expect(page.locator("#status-filter option[value=moving]")).to_have_text(
                "Moving (3000)")
            page.wait_for_timeout(500)
            page.screenshot(path=ARTIFACTS / "8-thousands-moved.png")
        finally:
            browser.close()
    print(f"3,000 vehicles: snapshot shown in {snapshot_s:.2f} s, "
          f"an update of all applied in {update_s:.2f} s")
    assert snapshot_s < 5 and update_s < 2
