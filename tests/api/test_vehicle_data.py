"""Signals, fault codes and service plans through the API, scoped like everything else."""

from __future__ import annotations

from datetime import timedelta

import pytest

from telematics.can.signals import FaultCode
from telematics.can.signals import SignalSample as Sample
from telematics.ingest.store import CanRows, store_batch
from telematics.models import Fault, ServicePlan
from tests.api.conftest import T0


def report(fleets, samples=(), faults=(), reports=None):
    latest = {s.signal: s for s in samples}
    store_batch([], [], set(), T0, [CanRows(
        fleets.van.pk, fleets.acme.pk, fleets.van_unit.pk, list(samples), latest,
        list(faults), reports or {})])


@pytest.fixture
def van_data(fleets):
    report(fleets, samples=[
        Sample("fuel_level", 61.5, T0, "j1939:DD:17"),
        Sample("odometer", 24_500.0, T0, "j1939:VDHR:EE"),
        Sample("engine_hours", 812.5, T0, "j1939:HOURS:00"),
    ], faults=[FaultCode("P0104", "obd2:7E8:stored", T0, "Mass air flow circuit intermittent")],
        reports={"obd2:7E8:stored": T0})
    for minute in range(1, 4):
        at = T0 + timedelta(minutes=minute)
        report(fleets, samples=[Sample("fuel_level", 61.5 - minute * 2, at, "j1939:DD:17")])
    return fleets


def test_latest_signals_with_units(van_data):
    body = van_data.client("dispatcher").get(
        f"/api/v1/vehicles/{van_data.van.pk}/signals/").json()
    by_signal = {entry["signal"]: entry for entry in body}
    assert by_signal["fuel_level"] == {
        "signal": "fuel_level", "label": "Fuel level", "unit": "%", "value": 55.5,
        "time": (T0 + timedelta(minutes=3)).isoformat().replace("+00:00", "Z"),
        "source": "j1939:DD:17"}
    assert by_signal["odometer"]["unit"] == "km" and by_signal["odometer"]["value"] == 24_500


def test_signal_history_in_a_time_range(van_data):
    url = f"/api/v1/vehicles/{van_data.van.pk}/signals/fuel_level/"
    body = van_data.client("admin").get(url, {
        "from": (T0 + timedelta(seconds=30)).isoformat(),
        "to": (T0 + timedelta(hours=1)).isoformat()}).json()
    assert [point["value"] for point in body["results"]] == [59.5, 57.5, 55.5]
    bad = van_data.client("admin").get(f"/api/v1/vehicles/{van_data.van.pk}/signals/fuel/")
    assert bad.status_code == 400 and "Unknown signal 'fuel'" in bad.json()["signal"][0]


def test_other_organisation_sees_no_signals_or_faults(van_data):
    client = van_data.client("globex_admin")
    assert client.get(f"/api/v1/vehicles/{van_data.van.pk}/signals/").status_code == 404
    assert client.get("/api/v1/faults/").json()["results"] == []
    fault = Fault.objects.get(vehicle=van_data.van)
    assert client.get(f"/api/v1/faults/{fault.pk}/").status_code == 404


def test_open_and_closed_faults(van_data):
    client = van_data.client("admin")
    [fault] = client.get("/api/v1/faults/", {"open": "true"}).json()["results"]
    assert (fault["code"], fault["is_open"], fault["vehicle"]) == ("P0104", True, van_data.van.pk)
    assert fault["description"] == "Mass air flow circuit intermittent"
    report(van_data, reports={"obd2:7E8:stored": T0 + timedelta(hours=1)})  # cleared
    assert client.get("/api/v1/faults/", {"open": "true"}).json()["results"] == []
    [closed] = client.get("/api/v1/faults/", {"open": "false"}).json()["results"]
    assert closed["closed_at"] == (T0 + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert client.get("/api/v1/faults/", {"open": "maybe"}).status_code == 400


def test_service_plan_lifecycle(van_data):
    admin = van_data.client("admin")
    created = admin.post("/api/v1/service-plans/", {
        "vehicle": van_data.van.pk, "name": "Oil change", "interval_km": 15000,
        "last_done_at": T0.isoformat(), "last_done_odometer_km": 10_000}, format="json")
    assert created.status_code == 201, created.json()
    plan = created.json()
    assert plan["status"]["state"] == "due_soon" and plan["status"]["remaining_km"] == 500
    done = admin.post(f"/api/v1/service-plans/{plan['id']}/complete/", {"note": "5W-30"},
                      format="json")
    assert done.status_code == 200
    assert done.json()["last_done_odometer_km"] == 24_500
    assert done.json()["status"]["state"] == "ok"
    assert ServicePlan.objects.get().records.get().recorded_by == "alice"


def test_service_plan_validation_and_roles(van_data):
    admin, dispatcher = van_data.client("admin"), van_data.client("dispatcher")
    no_interval = admin.post("/api/v1/service-plans/", {
        "vehicle": van_data.van.pk, "name": "Check", "last_done_at": T0.isoformat()},
        format="json")
    assert no_interval.status_code == 400
    assert "interval" in no_interval.json()["non_field_errors"][0]
    foreign = admin.post("/api/v1/service-plans/", {
        "vehicle": van_data.truck.pk, "name": "Check", "interval_days": 30,
        "last_done_at": T0.isoformat()}, format="json")
    assert foreign.status_code == 400 and "vehicle" in foreign.json()
    denied = dispatcher.post("/api/v1/service-plans/", {
        "vehicle": van_data.van.pk, "name": "Check", "interval_days": 30,
        "last_done_at": T0.isoformat()}, format="json")
    assert denied.status_code == 403
