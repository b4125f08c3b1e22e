"""The OpenAPI schema, the docs page (no CDN), and a schemathesis run against the schema."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from rest_framework.test import APIClient
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from fleet.api.services import issue_token
from fleet.jobs import create_job
from fleet.models import ApiKey
from fleet.webhooks import create_webhook
from telematics.models import DbcFile, Fault, ServicePlan
from tests.api.conftest import add_positions
from tests.logbook.factories import ago, make_trip


def test_schema_is_openapi_3_and_lists_every_resource(db):
    r = APIClient().get("/api/v1/schema/?format=json")
    assert r.status_code == 200
    schema = r.json()
    assert schema["openapi"].startswith("3.")
    paths = set(schema["paths"])
    for path in (
        "/api/v1/auth/token/", "/api/v1/organizations/", "/api/v1/users/{id}/",
        "/api/v1/vehicles/{id}/", "/api/v1/vehicles/{id}/positions/",
        "/api/v1/vehicles/{id}/driver/", "/api/v1/devices/", "/api/v1/drivers/{id}/",
        "/api/v1/api-keys/{id}/", "/api/v1/positions/feed/",
    ):
        assert path in paths
    schemes = schema["components"]["securitySchemes"]
    assert schemes["tokenAuth"]["scheme"] == "bearer"
    assert schemes["apiKey"]["name"] == "X-Api-Key"
    feed = schema["paths"]["/api/v1/positions/feed/"]["get"]
    assert "neither skips nor repeats" in feed["description"]
    positions = schema["paths"]["/api/v1/vehicles/{id}/positions/"]["get"]
    assert set(positions["responses"]["200"]["content"]) == {
        "application/json", "text/csv", "application/gpx+xml"}
    vehicle = schema["components"]["schemas"]["Vehicle"]["properties"]
    assert {"status", "last_position", "odometer_km"} <= set(vehicle)


def test_docs_are_served_without_a_cdn(client, db):
    r = client.get("/api/v1/docs/")
    assert r.status_code == 200
    page = r.content.decode()
    assert "<script>" not in page  # no inline script: the page obeys the site's CSP
    assert "/api/v1/schema/" in client.get("/api/v1/docs/?script=").content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and all(a.startswith("/") for a in assets), assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset


# --- schemathesis ---------------------------------------------------------------------
# One bounded run over every operation, as an organisation admin with data present:
# whatever the input, the API must never answer 500.


def operations() -> list[tuple[str, str]]:
    from drf_spectacular.generators import SchemaGenerator

    spec = SchemaGenerator().get_schema(request=None, public=True)
    return [
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    ]


@pytest.fixture
def api_schema(fleets, settings):
    settings.ALLOWED_HOSTS = ["*"]
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {
        "anon": None, "user": None, "token": None}}
    add_positions(fleets.van_unit, fleets.van.created, 5)
    # As Django's test client does: the test's transaction must outlive each request.
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json",
                                         get_wsgi_application())
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


def alert_ids(fleets) -> dict[str, int]:
    """A geofence, an event and an alert rule of the admin's organisation."""
    from telematics.models import AlertRule, Event, Geofence

    depot = Geofence.objects.create(organisation=fleets.acme, name="Depot", geometry={
        "type": "Point", "coordinates": [13.4, 52.5]}, radius_m=100)
    return {
        "geofences": depot.pk,
        "events": Event.objects.create(organisation=fleets.acme, vehicle=fleets.van,
                                       type="geofence_enter", time=fleets.van.created,
                                       attributes={"geofence": depot.pk}).pk,
        "alert-rules": AlertRule.objects.create(organisation=fleets.acme, name="Depot",
                                                event_types=["geofence_enter"]).pk,
    }


@pytest.mark.parametrize(("method", "path"), operations())
def test_api_never_answers_500(api_schema, fleets, method, path):
    _, token = issue_token(fleets.admin)
    headers = {"Authorization": f"Bearer {token}"}
    operation = api_schema[path][method]
    # Random ids mostly miss (404); half the runs use an object that exists.
    own_ids = {
        "organizations": fleets.acme.pk, "users": fleets.dispatcher.pk,
        "vehicles": fleets.van.pk, "devices": fleets.van_unit.pk,
        "drivers": fleets.dana.pk, "api-keys": ApiKey.objects.filter(
            organisation=fleets.acme).values_list("pk", flat=True).first(),
        "faults": Fault.objects.create(
            vehicle=fleets.van, code="P0104", source="obd2:7E8:stored",
            first_seen=fleets.van.created, last_seen=fleets.van.created).pk,
        "dbc-files": DbcFile.objects.create(
            organisation=fleets.acme, name="RX-8", mapping={}, dbc_text=(
                Path(__file__).parent.parent / "data/can/mazda_rx8.dbc").read_text()).pk,
        "service-plans": ServicePlan.objects.create(
            vehicle=fleets.van, name="Oil", interval_km=15000,
            last_done_at=fleets.van.created).pk,
        "jobs": create_job(fleets.acme, title="Deliver", vehicle=fleets.van, stops=[
            {"address": "Hauptstr. 1", "latitude": 52.5, "longitude": 13.4}]).pk,
        "webhooks": create_webhook(fleets.acme, url="https://example.com/hook",
                                   event_types=["job_status"])[0].pk,
        # Nobody drove it, so the admin may classify it: PATCH reaches the logbook rules.
        "trips": make_trip(fleets.van, ago(days=1)).pk,
        **alert_ids(fleets),
    }
    runs = [(mode, None) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    real_ids = {}
    if "{vehicle_pk}" in path:
        real_ids["vehicle_pk"] = fleets.van.pk
        if "{id}" in path:
            real_ids["id"] = "fuel_level"
    elif "{id}" in path:
        real_ids["id"] = own_ids[path.split("/")[3]]
    if real_ids:
        runs += [(GenerationMode.POSITIVE, real_ids), (GenerationMode.NEGATIVE, real_ids)]
    for mode, path_parameters in runs:

        @given(case=operation.as_strategy(generation_mode=mode,
                                          path_parameters=path_parameters))
        @hypothesis_settings(
            max_examples=10, deadline=None, derandomize=True, database=None,
            phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
        )
        def check(case):
            response = case.call(headers=headers)
            case.validate_response(response, checks=[not_a_server_error])

        try:
            check()
        except Unsatisfiable:  # nothing to get wrong: no parameters and no body
            assert mode == GenerationMode.NEGATIVE


def test_hand_written_representations_match_the_schema(fleets):
    """Vehicles and positions are written out by hand for speed; the schema must agree."""
    client = APIClient()
    schema = client.get("/api/v1/schema/?format=json").json()["components"]["schemas"]
    client = fleets.client("admin")
    vehicle = client.get(f"/api/v1/vehicles/{fleets.van.pk}/").json()
    assert set(vehicle) == set(schema["Vehicle"]["properties"])
    assert set(vehicle["last_position"]) == set(schema["LastPosition"]["properties"])
    page = client.get(f"/api/v1/vehicles/{fleets.van.pk}/positions/"
                      "?from=2026-03-01T00:00:00Z&to=2026-03-03T00:00:00Z").json()
    assert set(page["results"][0]) == set(schema["Position"]["properties"])
