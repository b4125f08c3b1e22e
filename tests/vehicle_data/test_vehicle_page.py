"""The vehicle page shows what the engine bus says: the latest CAN signals with units and
times, open and recently closed fault codes, and service plans with what is left; all in
the organisation's time zone, without inline script or style."""

from __future__ import annotations

import html as html_lib
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pytest
from django.test import Client

from fleet.models import Role, Vehicle
from telematics.models import Fault, ServicePlan, VehicleState
from telematics.services import register_unit

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(minutes=5)


@pytest.fixture(autouse=True)
def now():
    """NOW and T0 as of each test's start ("5 min ago" must not age during a long run)."""
    global NOW, T0
    NOW = datetime.now(UTC).replace(microsecond=0)
    T0 = NOW - timedelta(minutes=5)


class InlineCode(HTMLParser):
    """Counts what a strict CSP would block: inline scripts, on*= handlers, style=."""

    def __init__(self):
        super().__init__()
        self.blocked: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script" and not attributes.get("src"):
            self.blocked.append("<script> without src")
        if tag == "style":
            self.blocked.append("<style>")
        self.blocked += [f"{tag} {name}=" for name in attributes
                         if name == "style" or name.startswith("on")]


def state_signal(value: float, at: datetime, unit: str, source: str) -> dict:
    """An entry of ``VehicleState.signals`` as the ingest store writes it."""
    return {"value": value, "time": at.isoformat(), "unit": unit, "source": source}


@pytest.fixture
def van(acme, make_user):
    user = make_user("mia", acme, Role.ADMIN)
    vehicle = Vehicle.objects.create(organisation=acme, name="Van 7", licence_plate="B-AC 7")
    unit = register_unit("356307042441013", "teltonika", acme, vehicle_name=vehicle.name)
    VehicleState.objects.create(
        vehicle=vehicle, device=unit, fix_time=T0, server_time=T0, latitude=52.5,
        longitude=13.4, speed_kmh=0.0, odometer_km=1.0, signals={
            "engine_speed": state_signal(812.0, T0, "rpm", "j1939:EEC1:00"),
            "odometer": state_signal(24_512.345, T0 - timedelta(seconds=40), "km",
                                     "j1939:VDHR:EE"),
            "coolant_temperature": state_signal(-7.0, T0, "°C", "obd2:7E8:05"),
            "engine_hours": state_signal(812.5, T0, "h", "j1939:HOURS:00"),
            "retired_signal": state_signal(1.0, T0, "", "x"),
        })
    Fault.objects.create(vehicle=vehicle, code="P0104", source="obd2:7E8:stored",
                         description="Mass air flow circuit intermittent",
                         first_seen=datetime(2026, 3, 2, 7, 0, tzinfo=UTC),
                         last_seen=datetime(2026, 3, 2, 9, 30, tzinfo=UTC))
    Fault.objects.create(vehicle=vehicle, code="SPN110-FMI0", source="j1939:DM1:00",
                         description="<script>alert(1)</script>", spn=110, fmi=0, occurrence=3,
                         first_seen=datetime(2026, 3, 1, 6, 0, tzinfo=UTC),
                         last_seen=datetime(2026, 3, 1, 6, 10, tzinfo=UTC),
                         closed_at=datetime(2026, 3, 1, 6, 11, tzinfo=UTC))
    ServicePlan.objects.create(vehicle=vehicle, name="Oil change", interval_km=15_000,
                               last_done_at=NOW - timedelta(days=100),
                               last_done_odometer_km=10_000)  # 487.7 km left: due soon
    ServicePlan.objects.create(vehicle=vehicle, name="Brake check", interval_km=20_000,
                               interval_days=90, due_soon_days=14,
                               last_done_at=NOW - timedelta(days=95, hours=12),
                               last_done_odometer_km=20_000)  # 5.5 days past due
    ServicePlan.objects.create(vehicle=vehicle, name="Tachograph", interval_days=730,
                               last_done_at=NOW - timedelta(days=30))
    client = Client()
    client.force_login(user)
    return vehicle, client


def section(html: str, section_id: str) -> str:
    start = html.index(f'id="{section_id}"')
    return html[start:html.index("</section>", start)]


def text_of(fragment: str) -> str:
    text = html_lib.unescape(re.sub(r"<[^>]+>", " ", fragment)).replace("\xa0", " ")
    return re.sub(r"\s+", " ", text).strip()


def test_latest_signals_with_units_and_local_times(van):
    vehicle, client = van
    page = client.get(f"/vehicles/{vehicle.pk}/")
    assert page.status_code == 200
    signals = section(page.content.decode(), "vehicle-signals")
    rows = re.findall(r"<tr data-signal=\"(\w+)\">(.*?)</tr>", signals, re.S)
    shown = {key: text_of(row) for key, row in rows}
    local = T0.astimezone(ZoneInfo("Europe/Berlin"))
    today = local.date() == NOW.astimezone(ZoneInfo("Europe/Berlin")).date()
    berlin = local.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M")  # date only if not today
    assert shown["engine_speed"].startswith(f"Engine speed 812 rpm {berlin}")
    assert shown["coolant_temperature"].startswith("Engine coolant temperature -7 °C")
    assert shown["odometer"].startswith("Odometer 24,512.3 km")
    assert "(5 min ago)" in shown["engine_speed"]
    assert shown["engine_hours"].startswith("Engine hours 812.5 h")
    assert "retired_signal" not in shown  # not in the catalogue: not shown half-understood
    assert list(shown)[:2] == ["engine_speed", "coolant_temperature"]  # catalogue order


def test_facts_give_the_can_odometer_engine_hours_and_the_local_fix_time(van):
    vehicle, client = van
    facts = client.get(f"/vehicles/{vehicle.pk}/").content.decode()
    facts = text_of(facts[facts.index('<dl class="facts">'):facts.index("</dl>")])
    assert "Odometer 24,512 km (CAN)" in facts and "Engine hours 812.5 h" in facts
    berlin = T0.astimezone(ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%d %H:%M:%S")
    assert f"Last fix {berlin} (5 min ago)" in facts  # the organisation's zone, not UTC


def test_open_and_recently_closed_faults(van):
    vehicle, client = van
    faults = section(client.get(f"/vehicles/{vehicle.pk}/").content.decode(), "vehicle-faults")
    assert "1 open" in text_of(faults[:faults.index("</h2>")])
    open_part, closed_part = faults.split("Recently closed")
    assert text_of(open_part).endswith(
        "P0104 Mass air flow circuit intermittent 2026-03-02 08:00 2026-03-02 10:30")
    closed = text_of(closed_part)
    assert "SPN110-FMI0" in closed and "2026-03-01 07:00 2026-03-01 07:11" in closed
    assert "<script>alert(1)</script>" not in faults  # escaped, never executed
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in faults


def test_service_plans_with_state_and_what_is_left(van):
    vehicle, client = van
    service = section(client.get(f"/vehicles/{vehicle.pk}/").content.decode(),
                      "vehicle-service")
    plans = [text_of(item) for item in re.findall(r'<li class="plan.*?</li>', service, re.S)]
    assert plans[0].startswith("Brake check overdue 15,488 km left · 6 days overdue")
    assert "Every 20,000 km, 90 days, whichever comes first" in plans[0]
    assert plans[1].startswith("Oil change due soon 488 km left")
    assert "at 10,000 km" in plans[1]
    assert plans[2].startswith("Tachograph ok 700 days left")
    assert 'class="badge plan-state plan-overdue"' in service


def test_a_plan_waiting_for_its_first_reading_says_so(acme, make_user):
    user = make_user("ole", acme, Role.ADMIN)
    vehicle = Vehicle.objects.create(organisation=acme, name="Trailer")
    ServicePlan.objects.create(vehicle=vehicle, name="Axle service", interval_km=50_000,
                               interval_hours=1_000, last_done_at=NOW)
    client = Client()
    client.force_login(user)
    html = client.get(f"/vehicles/{vehicle.pk}/").content.decode()
    service = text_of(section(html, "vehicle-service"))
    assert "Axle service ok no odometer reading yet · no engine hours reading yet" in service
    assert "No CAN data reported yet." in text_of(section(html, "vehicle-signals"))
    assert "No open faults." in text_of(section(html, "vehicle-faults"))


def test_page_needs_nothing_the_csp_blocks(van):
    vehicle, client = van
    page = client.get(f"/vehicles/{vehicle.pk}/")
    assert "style-src 'self';" in page["Content-Security-Policy"]
    parser = InlineCode()
    parser.feed(page.content.decode())
    assert parser.blocked == []
    assert '<link rel="stylesheet" href="/static/fleet/vehicle.css">' in page.content.decode()


def test_another_organisation_and_a_driver_of_another_vehicle_get_404(van, globex, make_user):
    vehicle, _ = van
    for user in (make_user("gus", globex, Role.ADMIN),
                 make_user("dan", vehicle.organisation, Role.DRIVER)):
        client = Client()
        client.force_login(user)
        assert client.get(f"/vehicles/{vehicle.pk}/").status_code == 404
