"""import_can from a log file, and service plans driven by the CAN odometer and hours."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from telematics.can.signals import SignalSample
from telematics.ingest.store import CanRows, store_batch
from telematics.maintenance import (
    DUE_SOON,
    OK,
    OVERDUE,
    Reading,
    complete_service,
    plan_status,
)
from telematics.models import Event, Fault, ServicePlan
from telematics.models import SignalSample as StoredSample

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def test_import_can_log(acme_unit, tmp_path):
    log = tmp_path / "drive.log"
    lines = [f"({(T0 + timedelta(seconds=i)).timestamp():.6f}) can0 18FEF1FE#FF00"
             f"{(10 + i * 3):02X}0000000000" for i in range(50)]  # 10..157 km/h/256 steps
    lines.insert(10, "this is not a candump line")
    lines.append(f"({(T0 + timedelta(seconds=60)).timestamp():.6f}) can0 18FECA00#"
                 "04FF6E0000037FFF")  # DM1: SPN 110 FMI 0
    log.write_text("\n".join(lines) + "\n")
    out = StringIO()
    call_command("import_can", str(log), "--device", acme_unit.identifier, stdout=out)
    assert "51 frames read" in out.getvalue() and "1 unreadable lines" in out.getvalue()
    speeds = list(StoredSample.objects.filter(vehicle=acme_unit.vehicle, signal="vehicle_speed")
                  .order_by("time").values_list("value", flat=True))
    # CCVS byte 3 is the high byte: (10 + 3 i) * 256 / 256 km/h, stored on changes >= 2 km/h
    assert speeds[0] == 10.0 and speeds[-1] == 157.0
    assert all(b - a >= 2 for a, b in itertools.pairwise(speeds))
    assert Fault.objects.get(vehicle=acme_unit.vehicle).code == "SPN110-FMI0"


def test_import_can_refuses_unknown_device_and_missing_file(acme_unit, tmp_path):
    with pytest.raises(CommandError, match="No unit 'nope'"):
        call_command("import_can", __file__, "--device", "nope")
    with pytest.raises(CommandError, match="No such file"):
        call_command("import_can", str(tmp_path / "missing.log"), "--device",
                     acme_unit.identifier)


def make_plan(vehicle, **fields) -> ServicePlan:
    defaults = {"name": "Oil change", "last_done_at": T0, "last_done_odometer_km": 10_000.0,
                "last_done_engine_hours": 500.0}
    return ServicePlan.objects.create(vehicle=vehicle, **{**defaults, **fields})


@pytest.mark.django_db
def test_whichever_interval_runs_out_first_decides(acme_van):
    plan = make_plan(acme_van, interval_km=15_000, interval_hours=250, interval_days=365)
    assert plan_status(plan, Reading(T0 + timedelta(days=10), 12_000, 600)).state == OK
    status = plan_status(plan, Reading(T0 + timedelta(days=10), 24_200, 600))
    assert status.state == DUE_SOON and status.remaining_km == 800
    assert plan_status(plan, Reading(T0 + timedelta(days=10), 12_000, 751)).state == OVERDUE
    assert plan_status(plan, Reading(T0 + timedelta(days=360), 12_000, 600)).state == DUE_SOON
    assert plan_status(plan, Reading(T0 + timedelta(days=366), None, None)).state == OVERDUE


def odometer_rows(unit, km: float, hours: float, at: datetime) -> CanRows:
    samples = {"odometer": SignalSample("odometer", km, at, "j1939:VDHR:EE"),
               "engine_hours": SignalSample("engine_hours", hours, at, "j1939:HOURS:00")}
    return CanRows(unit.vehicle_id, unit.organisation_id, unit.pk, list(samples.values()),
                   samples, [], {})


@pytest.mark.django_db
def test_can_odometer_raises_due_soon_then_overdue_and_service_resets(acme_unit):
    vehicle = acme_unit.vehicle
    plan = make_plan(vehicle, interval_km=15_000)
    store_batch([], [], set(), T0, [odometer_rows(acme_unit, 24_500, 700, T0)])
    plan.refresh_from_db()
    assert plan.state == DUE_SOON
    store_batch([], [], set(), T0, [odometer_rows(acme_unit, 25_100, 710, T0 + timedelta(1))])
    plan.refresh_from_db()
    assert plan.state == OVERDUE
    assert list(Event.objects.filter(vehicle=vehicle).order_by("time")
                .values_list("type", flat=True)) == ["service_due_soon", "service_overdue"]
    record = complete_service(plan, T0 + timedelta(days=2), note="5W-30", recorded_by="alice")
    plan.refresh_from_db()
    assert (record.odometer_km, plan.last_done_odometer_km, plan.state) == (25_100, 25_100, OK)
    assert plan_status(plan, Reading(T0 + timedelta(days=3), 39_200)).state == DUE_SOON
