"""Walk every URL of the site and the API as each role of another organisation and as an
anonymous visitor: nothing of the first organisation may show, change or disappear.

Object URLs are filled with the first organisation's ids. A new URL whose parameters this
walk cannot fill fails the test, so every new page gets walked too.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from fleet.api.services import create_api_key, issue_token
from fleet.models import Driver, Job, JobStop, Role, UnitCommand, Vehicle, Webhook
from telematics.models import (
    AlertRule,
    DbcFile,
    Event,
    Fault,
    Geofence,
    Position,
    ServicePlan,
    VehicleState,
)
from telematics.services import register_unit
from tests.logbook.factories import make_gap, make_trip

MARK = "leakmark"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SKIPPED_PREFIXES = ("admin/", "static/", "api/v1/schema/", "api/v1/docs/")


def url_templates() -> list[str]:
    def walk(patterns, prefix=""):
        for pattern in patterns:
            route = prefix + str(pattern.pattern).lstrip("^").replace("$", "")
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern):
                yield route

    return sorted({u for u in walk(get_resolver().url_patterns)
                   if not u.startswith(SKIPPED_PREFIXES)})


@pytest.fixture
def secrets_of_acme(acme, make_user):
    """Acme's objects, each carrying the marker in a field a leak would show."""
    admin = make_user(f"{MARK}-admin", acme, Role.ADMIN)
    driver = Driver.objects.create(organisation=acme, name=f"{MARK} driver",
                                   identification_key="LEAKMARK01")
    van = Vehicle.objects.create(organisation=acme, name=f"{MARK} van",
                                 licence_plate="LEAKMARK-1", default_driver=driver)
    unit = register_unit("LEAKMARK-UNIT", "teltonika", acme, vehicle_name=van.name)
    Position.objects.create(device=unit, vehicle=van, fix_time=T0, server_time=T0,
                            latitude=52.5, longitude=13.4, attributes={"note": MARK})
    VehicleState.objects.create(vehicle=van, device=unit, fix_time=T0, latitude=52.5,
                                longitude=13.4, attributes={"note": MARK})
    trip = make_trip(van, T0, start_address=f"{MARK} street 1", end_address=f"{MARK} road 2")
    gap = make_gap(van, trip)
    fault = Fault.objects.create(vehicle=van, code="P0104", source="obd2:7E8:stored",
                                 description=f"{MARK} fault", first_seen=T0, last_seen=T0)
    event = Event.objects.create(organisation=acme, vehicle=van, type="fault_opened", time=T0,
                                 attributes={"description": MARK})
    plan = ServicePlan.objects.create(vehicle=van, name=f"{MARK} service", interval_km=1000,
                                      last_done_at=T0)
    fence = Geofence.objects.create(organisation=acme, name=f"{MARK} depot", radius_m=100,
                                    geometry={"type": "Point", "coordinates": [13.4, 52.5]})
    rule = AlertRule.objects.create(organisation=acme, name=f"{MARK} rule",
                                    event_types=["overspeed"], overspeed_kmh=80)
    job = Job.objects.create(organisation=acme, title=f"{MARK} delivery", vehicle=van)
    stop = JobStop.objects.create(job=job, sequence=1, address=f"{MARK} customer",
                                  latitude=52.5, longitude=13.4)
    hook = Webhook.objects.create(organisation=acme, url="https://leakmark.example/hook",
                                  event_types=["fault_opened"], secret="s")
    command = UnitCommand.objects.create(device=unit, text=f"{MARK} getinfo")
    dbc = DbcFile.objects.create(organisation=acme, name=f"{MARK} model", mapping={},
                                 dbc_text=f'VERSION "{MARK}"\n')
    dbc.vehicles.add(van)
    key, _ = create_api_key(acme, f"{MARK} key", created_by=admin)
    ids = {
        "vehicles": van.pk, "devices": unit.pk, "drivers": driver.pk, "users": admin.pk,
        "organizations": acme.pk, "trips": trip.pk, "gaps": gap.pk, "faults": fault.pk,
        "events": event.pk, "service-plans": plan.pk, "geofences": fence.pk,
        "alert-rules": rule.pk, "jobs": job.pk, "stops": stop.pk, "webhooks": hook.pk,
        "commands": command.pk, "api-keys": key.pk, "signals": "fuel_level",
        "dbc-files": dbc.pk,
    }
    counts = {model: model.objects.count() for model in (
        Vehicle, Driver, Position, Fault, Event, ServicePlan, Geofence, AlertRule, Job,
        JobStop, Webhook, UnitCommand, DbcFile)}
    return ids, counts


def concrete(template: str, ids: dict) -> str:
    """Fill each parameter with the id of the object named by the segment before it."""
    parts = template.split("/")
    filled = []
    for index, part in enumerate(parts):
        if re.fullmatch(r"<[^>]+>|\(\?P<[^>]+>[^)]+\)", part):
            owner = parts[index - 1] if index else ""
            assert owner in ids, f"the leak walk cannot fill {template!r}: add {owner!r}"
            part = str(ids[owner])
        filled.append(part)
    return "/" + "/".join(filled)


@pytest.fixture
def outsiders(globex, make_user):
    """Every kind of visitor from the other organisation, and an anonymous one."""
    clients = {"anonymous": APIClient()}
    for role in (Role.ADMIN, Role.DISPATCHER, Role.DRIVER):
        user = make_user(f"globex-{role}", globex, role)
        session, bearer = APIClient(), APIClient()
        session.force_login(user)
        bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_token(user)[1]}")
        clients[f"{role} (session)"], clients[f"{role} (token)"] = session, bearer
    _, key = create_api_key(globex, "Globex integration")
    clients["api key"] = APIClient()
    clients["api key"].credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return clients


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_nothing_of_one_organisation_reaches_another(outsiders, secrets_of_acme):
    ids, counts = secrets_of_acme
    templates = url_templates()
    assert len(templates) > 40  # the walk really covers the site and the API
    leaks = []
    for template in templates:
        url = concrete(template, ids)
        has_object = "<" in template or "(?P<" in template
        for who, client in outsiders.items():
            response = client.get(url, {"from": "2026-03-01T00:00:00Z",
                                        "to": "2026-03-03T00:00:00Z"})
            body = b"".join(response) if response.streaming else response.content
            if MARK.encode() in body.lower():
                leaks.append(f"GET {url} as {who}: {response.status_code} shows the marker")
            if who == "anonymous" and response.status_code == 200 and url not in (
                    "/login/", "/health/", "/metrics"):
                leaks.append(f"GET {url} as anonymous answered 200")
            if has_object and response.status_code == 200:
                leaks.append(f"GET {url} as {who} answered 200 for another organisation")
            if has_object:
                for method in ("post", "put", "patch", "delete"):
                    answer = getattr(client, method)(url, {}, format="json")
                    if 200 <= answer.status_code < 300:
                        leaks.append(f"{method.upper()} {url} as {who}: "
                                     f"{answer.status_code}")
    assert leaks == []
    # The control: Acme's own admin does see the marker, so its absence above means
    # something.
    from django.contrib.auth import get_user_model

    insider = APIClient()
    insider.force_login(get_user_model().objects.get(username=f"{MARK}-admin"))
    for url in ("/api/v1/vehicles/", f"/api/v1/trips/{ids['trips']}/", "/api/v1/jobs/",
                f"/vehicles/{ids['vehicles']}/"):
        assert MARK.encode() in insider.get(url).content.lower(), url
    assert counts == {model: model.objects.count() for model in counts}
    assert set(Vehicle.objects.filter(name__startswith=MARK).values_list("name", flat=True)) \
        == {f"{MARK} van"}
