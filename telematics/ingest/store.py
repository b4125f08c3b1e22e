"""Writing a batch of decoded records in one transaction.

PostgreSQL gets binary COPY into a per-connection staging table followed by one
``INSERT ... SELECT ... ON CONFLICT DO NOTHING``: that is what lets a resend after a
lost acknowledgement store nothing twice at tens of thousands of rows a second (one
INSERT a row manages a few thousand). SQLite, the embedded default, gets a plain bulk
insert that ignores conflicts. The vehicle's latest state is one upsert per batch that
only ever moves forward in fix time, so a late fix is stored but never moves the live
marker back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction
from psycopg.types.json import set_json_dumps

from telematics.can.signals import SIGNALS, FaultCode, SignalSample
from telematics.models import (
    CommandResponse,
    Device,
    Event,
    Fault,
    Position,
    VehicleState,
)
from telematics.models import (
    SignalSample as SampleModel,
)
from telematics.protocols.base import Fix

COUNTER_SIGNALS = {"odometer", "engine_hours"}

POSITION_COLUMNS = (
    "device_id", "vehicle_id", "fix_time", "server_time", "latitude", "longitude",
    "altitude", "speed_kmh", "course", "satellites", "hdop", "valid", "ignition",
    "odometer_km", "attributes",
)
POSITION_TYPES = (
    "int8", "int8", "timestamptz", "timestamptz", "float8", "float8", "float8", "float8",
    "float8", "int2", "float8", "bool", "bool", "float8", "jsonb",
)
STAGING_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS position_staging ("
    + ", ".join(f"{c} {t}" for c, t in zip(POSITION_COLUMNS, POSITION_TYPES, strict=True))
    + ") ON COMMIT DELETE ROWS"
)
STATE_COLUMNS = (
    "vehicle_id", "device_id", "fix_time", "server_time", "latitude", "longitude", "altitude",
    "speed_kmh", "course", "valid", "ignition", "odometer_km", "attributes",
)


# JSON's escape for NUL, not preceded by an escaped backslash: PostgreSQL's jsonb cannot
# hold U+0000, and one unit's text with a NUL in it must not refuse the whole frame.
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def attributes_json(attributes: Any) -> str:
    """A fix's attributes as JSON PostgreSQL accepts: anything unusual as text, no NUL."""
    text = json.dumps(attributes, default=str, separators=(",", ":"))
    if "\\u0000" in text:
        text = _JSON_NUL.sub(r"\1\\ufffd", text)
    return text


@dataclass(slots=True)
class PositionRow:
    device_id: int
    vehicle_id: int | None
    organisation_id: int
    fix: Fix
    server_time: datetime


@dataclass(slots=True)
class ResponseRow:
    device_id: int
    response_text: str
    received_time: datetime


@dataclass(slots=True)
class CanRows:
    """Signals and faults of one vehicle from one frame or message."""

    vehicle_id: int
    organisation_id: int
    device_id: int
    stored: list[SignalSample]  # thinned: these become rows
    latest: dict[str, SignalSample]  # newest value per signal: the vehicle's state
    faults: list[FaultCode]
    fault_reports: dict[str, datetime]


@dataclass(slots=True)
class UnitReport:
    """What a unit said about itself rather than where it is: status and alarms.

    ``status`` (battery, GSM signal, charging, external voltage... from heartbeats and
    alarm packets) is merged into the vehicle state's ``unit_status``; each alarm (SOS,
    power cut, ...) becomes an ``alarm`` event.
    """

    vehicle_id: int | None
    organisation_id: int
    device_id: int
    time: datetime
    status: dict[str, Any]
    alarms: list[dict[str, Any]]


def store_batch(
    positions: list[PositionRow],
    responses: list[ResponseRow],
    seen: set[int],
    now: datetime,
    can_rows: list[CanRows] | None = None,
    reports: list[UnitReport] | None = None,
) -> set[int]:
    """Store everything in one transaction; returns the vehicles whose state moved forward."""
    with transaction.atomic():
        moved: set[int] = set()
        if positions:
            if connection.vendor == "postgresql":
                moved = _copy_positions(positions)
            else:
                _bulk_insert_positions(positions)
                moved = _advance_vehicle_states(positions)
        # After the positions: both take vehicle-state row locks in vehicle order, and
        # a frame's CAN vehicles are its positions' vehicles, so two ingest processes
        # do not lock each other's rows in opposite orders.
        if can_rows:
            _store_can(can_rows, now)
        if reports:
            _store_reports(reports)
        if responses:
            CommandResponse.objects.bulk_create(
                CommandResponse(device_id=r.device_id,
                                text=r.response_text.replace("\x00", "\ufffd"),
                                received_time=r.received_time)
                for r in responses
            )
        if seen:
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("UPDATE telematics_device SET last_seen = %s "
                                   "WHERE id = ANY(%s)", [now, sorted(seen)])
            else:
                Device.objects.filter(pk__in=seen).update(last_seen=now)
    return moved


def _row(p: PositionRow) -> tuple:
    f = p.fix
    return (
        p.device_id, p.vehicle_id, f.fix_time, p.server_time, f.latitude, f.longitude,
        f.altitude, f.speed_kmh, f.course, f.satellites, f.hdop, f.valid, f.ignition,
        f.odometer_km, f.attributes,
    )


def _copy_positions(positions: list[PositionRow]) -> set[int]:
    """COPY into staging, insert what is new, advance vehicle states; returns the moved.

    The vehicle states come from the staging table too (the newest fix per vehicle by
    ``DISTINCT ON``), in vehicle order, so no row of parameters is built in Python.
    """
    columns = ", ".join(POSITION_COLUMNS)
    with connection.cursor() as cursor:
        raw = cursor.cursor  # the psycopg cursor, for COPY
        raw.execute(STAGING_TABLE)
        set_json_dumps(attributes_json, context=raw)
        with raw.copy(f"COPY position_staging ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(POSITION_TYPES)
            for p in positions:
                copy.write_row(_row(p))
        raw.execute(
            f"INSERT INTO telematics_position ({columns}) SELECT {columns} "
            "FROM position_staging ON CONFLICT (device_id, fix_time) DO NOTHING"
        )
        state_columns = ", ".join(STATE_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in STATE_COLUMNS[1:])
        raw.execute(
            f"INSERT INTO telematics_vehiclestate ({state_columns}, signals, unit_status) "
            f"SELECT DISTINCT ON (vehicle_id) {state_columns}, '{{}}'::jsonb, '{{}}'::jsonb "
            "FROM position_staging WHERE vehicle_id IS NOT NULL "
            "ORDER BY vehicle_id, fix_time DESC "
            f"ON CONFLICT (vehicle_id) DO UPDATE SET {updates} "
            "WHERE telematics_vehiclestate.fix_time IS NULL "
            "OR telematics_vehiclestate.fix_time < excluded.fix_time "
            "RETURNING vehicle_id"
        )
        return {row[0] for row in raw.fetchall()}


def _bulk_insert_positions(positions: list[PositionRow]) -> None:
    def position(p: PositionRow) -> Position:
        fields = dict(zip(POSITION_COLUMNS, _row(p), strict=True))
        fields["attributes"] = json.loads(attributes_json(fields["attributes"]))
        return Position(**fields)

    Position.objects.bulk_create(
        (position(p) for p in positions),
        batch_size=500,
        ignore_conflicts=True,
    )


def _advance_vehicle_states(positions: list[PositionRow]) -> set[int]:
    """The embedded database's vehicle-state upsert (PostgreSQL's is in _copy_positions)."""
    newest: dict[int, PositionRow] = {}
    for p in positions:
        if p.vehicle_id is None:
            continue
        current = newest.get(p.vehicle_id)
        if current is None or p.fix.fix_time > current.fix.fix_time:
            newest[p.vehicle_id] = p
    if not newest:
        return set()
    json_placeholder = "%s::jsonb" if connection.vendor == "postgresql" else "%s"
    placeholders = "(" + ", ".join(["%s"] * (len(STATE_COLUMNS) - 1) + [json_placeholder])
    placeholders += f", {json_placeholder}, {json_placeholder})"
    updates = ", ".join(f"{c} = excluded.{c}" for c in STATE_COLUMNS[1:])
    moved: set[int] = set()
    rows = [newest[vehicle_id] for vehicle_id in sorted(newest)]
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 500):
            chunk = rows[start:start + 500]
            params: list = []
            for p in chunk:
                f = p.fix
                params += [
                    p.vehicle_id, p.device_id, f.fix_time, p.server_time, f.latitude,
                    f.longitude, f.altitude, f.speed_kmh, f.course, f.valid, f.ignition,
                    f.odometer_km, attributes_json(f.attributes), "{}", "{}",
                ]
            cursor.execute(
                f"INSERT INTO telematics_vehiclestate ({', '.join(STATE_COLUMNS)}, signals, "
                "unit_status) "
                f"VALUES {', '.join([placeholders] * len(chunk))} "
                f"ON CONFLICT (vehicle_id) DO UPDATE SET {updates} "
                "WHERE telematics_vehiclestate.fix_time IS NULL "
                "OR telematics_vehiclestate.fix_time < excluded.fix_time "
                "RETURNING vehicle_id",
                params,
            )
            moved.update(row[0] for row in cursor.fetchall())
    return moved



def _store_can(can_rows: list[CanRows], now: datetime) -> None:
    SampleModel.objects.bulk_create(
        (
            SampleModel(vehicle_id=r.vehicle_id, device_id=r.device_id, signal=sample.signal,
                        time=sample.time, value=sample.value, source=sample.source[:64])
            for r in can_rows for sample in r.stored
        ),
        batch_size=1000, ignore_conflicts=True,
    )
    latest: dict[int, dict[str, SignalSample]] = {}
    for r in can_rows:
        newest = latest.setdefault(r.vehicle_id, {})
        for key, sample in r.latest.items():
            if key not in newest or sample.time > newest[key].time:
                newest[key] = sample
    counters_moved = set()
    vehicle_ids = sorted(vehicle_id for vehicle_id, newest in latest.items() if newest)
    states = _locked_states(vehicle_ids)
    changed = []
    for vehicle_id in vehicle_ids:
        state = states[vehicle_id]
        signals = dict(state.signals or {})
        for key, sample in latest[vehicle_id].items():
            known = signals.get(key)
            if known is None or known.get("time", "") < sample.time.isoformat():
                unit = SIGNALS[key].unit if key in SIGNALS else ""
                signals[key] = {"value": sample.value, "time": sample.time.isoformat(),
                                "unit": unit, "source": sample.source}
                if key in COUNTER_SIGNALS:
                    counters_moved.add(vehicle_id)
        if signals != state.signals:
            state.signals = signals
            changed.append(state)
    if changed:
        VehicleState.objects.bulk_update(changed, ["signals"], batch_size=500)
    events: list[Event] = []
    for r in can_rows:
        if r.faults or r.fault_reports:
            events += _apply_faults(r)
    Event.objects.bulk_create(events)
    if counters_moved:
        from telematics.maintenance import evaluate_plans

        evaluate_plans(counters_moved, now)


def _store_reports(reports: list[UnitReport]) -> None:
    """Merge unit status into the vehicle states (newest report wins); write alarms."""
    newest: dict[int, dict[str, Any]] = {}
    for report in sorted(reports, key=lambda r: r.time):
        if report.vehicle_id is not None and report.status:
            merged = newest.setdefault(report.vehicle_id, {})
            merged.update(report.status)
            merged["time"] = report.time.isoformat()
    states = _locked_states(sorted(newest))
    changed = []
    for vehicle_id, status in newest.items():
        state = states[vehicle_id]
        known = state.unit_status or {}
        if known.get("time", "") <= status["time"]:
            state.unit_status = {**known, **status}
            changed.append(state)
    if changed:
        VehicleState.objects.bulk_update(changed, ["unit_status"], batch_size=500)
    Event.objects.bulk_create(
        Event(organisation_id=report.organisation_id, vehicle_id=report.vehicle_id,
              type="alarm", time=alarm.get("time") or report.time,
              attributes={k: v for k, v in alarm.items() if k != "time"})
        for report in reports for alarm in report.alarms
    )


def _locked_states(vehicle_ids: list[int]) -> dict[int, VehicleState]:
    """The vehicles' state rows, locked in vehicle order; created where missing."""
    if not vehicle_ids:
        return {}

    def lock() -> dict[int, VehicleState]:
        rows = (VehicleState.objects.select_for_update().filter(vehicle_id__in=vehicle_ids)
                .order_by("vehicle_id").only("vehicle_id", "signals", "unit_status"))
        return {state.vehicle_id: state for state in rows}

    states = lock()
    missing = [vehicle_id for vehicle_id in vehicle_ids if vehicle_id not in states]
    if missing:
        VehicleState.objects.bulk_create(
            [VehicleState(vehicle_id=vehicle_id) for vehicle_id in missing],
            ignore_conflicts=True,
        )
        states = lock()
    return states


def _apply_faults(rows: CanRows) -> list[Event]:
    """Open newly reported faults, refresh known ones, close the ones a report left out."""
    events = []
    reported: dict[str, set[str]] = {}
    for fault in rows.faults:
        reported.setdefault(fault.source, set()).add(fault.code)
        seen_at = fault.time or datetime.now(UTC)
        lamps = {name: value for name in ("mil_lamp", "red_stop_lamp", "amber_warning_lamp",
                                          "protect_lamp")
                 if (value := getattr(fault, name)) is not None}
        known = Fault.objects.filter(vehicle_id=rows.vehicle_id, code=fault.code,
                                     source=fault.source, closed_at=None).first()
        if known is not None:
            if seen_at > known.last_seen:
                known.last_seen = seen_at
                known.occurrence = fault.occurrence
                known.lamps = lamps
                known.save(update_fields=["last_seen", "occurrence", "lamps"])
            continue
        Fault.objects.create(
            vehicle_id=rows.vehicle_id, code=fault.code, source=fault.source,
            description=(fault.description or "")[:200], spn=fault.spn, fmi=fault.fmi,
            occurrence=fault.occurrence, lamps=lamps, first_seen=seen_at, last_seen=seen_at,
        )
        events.append(Event(organisation_id=rows.organisation_id, vehicle_id=rows.vehicle_id,
                            type="fault_opened", time=seen_at,
                            attributes={"code": fault.code, "description": fault.description,
                                        "source": fault.source}))
    for source, reported_at in rows.fault_reports.items():
        cleared = Fault.objects.filter(
            vehicle_id=rows.vehicle_id, source=source, closed_at=None, last_seen__lt=reported_at
        ).exclude(code__in=reported.get(source, set()))
        for fault in cleared:
            fault.closed_at = reported_at
            fault.save(update_fields=["closed_at"])
            events.append(Event(organisation_id=rows.organisation_id,
                                vehicle_id=rows.vehicle_id, type="fault_closed",
                                time=reported_at,
                                attributes={"code": fault.code, "source": source}))
    return events
