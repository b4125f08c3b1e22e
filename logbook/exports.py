"""The logbook for the tax office: a PDF per vehicle and period, and the same as CSV.

Both are built from one ``LogbookExport`` assembled through ``logbook.selectors``, so
they honour the privacy rules for whoever exports (a fleet manager's export shows
private trips as date, odometer and distance only). The PDF holds the trip table with
every field the tax office requires, odometer gaps in line, monthly and yearly totals
per category, the revision history of the trips listed, and a SHA-256 of the export's
content together with the head of the vehicle's revision chain, so a later export of
the same period can be compared with a printed one.

Corrections (issue 5) are never silent: a cancelled, merged, split or superseded trip
stays in both exports as it was, marked (struck through in the PDF) with its reason and
the trips that replaced it, and counts in no total; a trip made by a merge or split
names the trips it replaces.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.core.exceptions import PermissionDenied
from django.utils import timezone

from fleet.models import Vehicle
from fleet.selectors import Principal, actor_of
from logbook import chain
from logbook.models import Category, TripStatus, VehicleTripState
from logbook.selectors import (
    odometer_gaps_visible_to,
    period_bounds,
    revisions_of,
    trip_view,
    trips_visible_to,
)

CATEGORIES = (Category.BUSINESS, Category.COMMUTE, Category.PRIVATE, "")
CATEGORY_LABELS = {
    Category.BUSINESS: "Business", Category.COMMUTE: "Commute", Category.PRIVATE: "Private",
    "": "Unclassified",
}


@dataclass(slots=True)
class LogbookExport:
    vehicle: Vehicle
    start: date
    end: date
    exported_by: str
    exported_at: datetime
    trips: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    revisions: list[dict[str, Any]] = field(default_factory=list)
    monthly: dict[str, dict[str, float]] = field(default_factory=dict)
    yearly: dict[str, dict[str, float]] = field(default_factory=dict)
    chain_head: tuple[int, str] = (0, chain.GENESIS)
    content_hash: str = ""


def _as_date(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value


def build_export(
    vehicle: Vehicle, start: date | datetime, end: date | datetime, actor: Principal,
) -> LogbookExport:
    """Everything an export shows, for the period [start, end] (days, inclusive)."""
    acting = actor_of(actor)
    if not acting.is_superuser and acting.organisation_id != vehicle.organisation_id:
        raise PermissionDenied("The vehicle belongs to another organisation.")
    start, end = _as_date(start), _as_date(end)
    lower, upper = period_bounds(vehicle.organisation, start, end)
    zone = ZoneInfo(vehicle.organisation.time_zone)
    name = getattr(acting.user, "username", None) or (
        f"api-key:{acting.api_key_id}" if acting.api_key_id else "system")
    export = LogbookExport(vehicle, start, end, name, timezone.now())
    trips = list(trips_visible_to(actor, vehicle=vehicle, start=lower, end=upper)
                 .prefetch_related("corrects", "corrected_by"))
    monthly: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(CATEGORIES, 0.0))
    yearly: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(CATEGORIES, 0.0))
    for trip in trips:
        view = trip_view(trip, actor, with_route=False)
        view["route_hash"] = None if view["redacted"] else chain.route_hash(trip.route)
        view["origin"] = trip.origin
        if view["corrects"] is not None:  # oldest first, as a person reads them
            view["corrects"] = [t.pk for t in sorted(trip.corrects.all(),
                                                     key=lambda t: (t.start_time, t.pk))]
        view["replaced_by"] = None if view["redacted"] else [
            t.pk for t in sorted(trip.corrected_by.all(), key=lambda t: (t.start_time, t.pk))]
        export.trips.append(view)
        if trip.status == TripStatus.ACTIVE:
            category = view["category"] or ""
            local = trip.start_time.astimezone(zone)
            monthly[f"{local:%Y-%m}"][category] += view["distance_km"]
            yearly[f"{local:%Y}"][category] += view["distance_km"]
        for revision in revisions_of(trip, actor):
            export.revisions.append({"trip": trip.pk, **revision})
    # A gap's ends are the times of the trips around it: hidden next to a redacted trip.
    hidden = {moment for trip, view in zip(trips, export.trips, strict=True) if view["redacted"]
              for moment in (trip.start_time, trip.end_time)}
    for gap in odometer_gaps_visible_to(actor, vehicle=vehicle, start=lower, end=upper):
        shown = gap.from_time not in hidden and gap.to_time not in hidden
        export.gaps.append({
            "id": gap.pk, "from_time": gap.from_time if shown else None,
            "to_time": gap.to_time if shown else None,
            "date": gap.to_time.astimezone(zone).date().isoformat(),
            "from_km": round(gap.from_km, 1), "to_km": round(gap.to_km, 1),
            "km": round(round(gap.to_km, 1) - round(gap.from_km, 1), 1),
            "source": gap.source, "status": gap.status, "note": gap.note,
        })
    export.monthly = {k: {c: round(v, 1) for c, v in d.items()} for k, d in sorted(monthly.items())}
    export.yearly = {k: {c: round(v, 1) for c, v in d.items()} for k, d in sorted(yearly.items())}
    state = VehicleTripState.objects.filter(vehicle=vehicle).first()
    if state is not None:
        export.chain_head = (state.chain_seq, state.chain_hash)
    export.content_hash = chain.sha256(chain.canonical(_jsonable({
        "vehicle": vehicle.pk, "start": start.isoformat(), "end": end.isoformat(),
        "trips": export.trips, "gaps": export.gaps, "revisions": export.revisions,
        "monthly": export.monthly, "yearly": export.yearly,
    })))
    return export


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return chain.json_value(value)


def _local(value: datetime | None, zone: ZoneInfo, fmt: str = "%H:%M") -> str:
    return "" if value is None else value.astimezone(zone).strftime(fmt)


def _km(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _details(view: dict[str, Any]) -> str:
    if view["redacted"]:
        return ""
    if view["category"] == Category.BUSINESS:
        return f"Purpose: {view['purpose']}; partner: {view['partner']}; " \
               f"destination: {view['destination']}"
    return view["note"] or ""


def _status(view: dict[str, Any]) -> str:
    if view["status"] == TripStatus.ACTIVE:
        return "locked" if view["locked"] else "open"
    text = view["status"]
    if view.get("status_reason"):
        text += f" ({view['status_reason']})"
    return text


def _ids(ids: list[int] | None) -> str:
    return ", ".join(str(i) for i in ids or [])


def _correction(view: dict[str, Any]) -> str:
    """What a correction did to the trip, for a person reading the printed logbook."""
    status, replaced_by = view["status"], _ids(view.get("replaced_by"))
    reason = f": {view['status_reason']}" if view.get("status_reason") else ""
    if status == TripStatus.ACTIVE:
        corrects = _ids(view.get("corrects"))
        if not corrects:
            return ""
        if view.get("origin") == "merge":
            return f"Merge of trips {corrects}"
        if view.get("origin") == "split":
            return f"Part of split trip {corrects}"
        return f"Replaces trip {corrects}"
    text = {
        TripStatus.CANCELLED: "CANCELLED",
        TripStatus.MERGED: "MERGED" + (f" into trip {replaced_by}" if replaced_by else ""),
        TripStatus.SPLIT: "SPLIT" + (f" into trips {replaced_by}" if replaced_by else ""),
        TripStatus.SUPERSEDED: "SUPERSEDED" + (f" by trip {replaced_by}" if replaced_by
                                                 else ""),
    }.get(status, status.upper())
    return text + reason


# --------------------------------------------------------------------------- CSV

CSV_COLUMNS = (
    "record", "id", "date", "start_time", "end_time", "start_address", "end_address",
    "start_odometer_km", "end_odometer_km", "distance_km", "category", "purpose", "partner",
    "destination", "note", "driver", "status", "corrects", "revisions", "replaced_by",
    "correction",
)


def export_csv(
    vehicle: Vehicle, start: date | datetime, end: date | datetime, actor: Principal
) -> str:
    """The logbook as CSV: one row per trip and odometer gap, then totals and the hash.

    The ``record`` column says what a row is: ``trip``, ``gap``, ``month``, ``year``
    (totals per category in the category columns' place) or ``hash``. A corrected trip
    keeps its row: ``status`` is its status (with the reason), ``replaced_by`` the trips
    that replaced it, ``corrects`` those a merge or split trip replaces, ``correction``
    the same in words.
    """
    export = build_export(vehicle, start, end, actor)
    zone = ZoneInfo(vehicle.organisation.time_zone)
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    revisions = defaultdict(list)
    for revision in export.revisions:
        revisions[revision["trip"]].append(revision)
    for view in export.trips:
        history = "; ".join(
            f"#{r['seq']} {chain.json_value(r['time'])} {r['actor']} via {r['interface']}: "
            f"{r['field']}" + ("" if r["field"] == "__created__" else f" {r['old']!r} -> "
                                                                        f"{r['new']!r}")
            for r in revisions[view["id"]]
        )
        writer.writerow({
            "record": "trip", "id": view["id"], "date": view["date"],
            "start_time": _local(view["start_time"], zone),
            "end_time": _local(view["end_time"], zone),
            "start_address": view["start_address"] or "",
            "end_address": view["end_address"] or "",
            "start_odometer_km": _km(view["start_odometer_km"]),
            "end_odometer_km": _km(view["end_odometer_km"]),
            "distance_km": _km(view["distance_km"]), "category": view["category"] or "",
            "purpose": view["purpose"] or "", "partner": view["partner"] or "",
            "destination": view["destination"] or "", "note": view["note"] or "",
            "driver": view["driver"] or "", "status": _status(view),
            "corrects": " ".join(str(i) for i in view["corrects"] or []),
            "revisions": history,
            "replaced_by": " ".join(str(i) for i in view["replaced_by"] or []),
            "correction": _correction(view),
        })
    for gap in export.gaps:
        writer.writerow({
            "record": "gap", "id": gap["id"], "date": gap["date"],
            "start_time": _local(gap["from_time"], zone),
            "end_time": _local(gap["to_time"], zone),
            "start_odometer_km": _km(gap["from_km"]), "end_odometer_km": _km(gap["to_km"]),
            "distance_km": _km(gap["km"]), "note": gap["note"], "status": gap["status"],
        })
    for record, totals in (("month", export.monthly), ("year", export.yearly)):
        for period, by_category in totals.items():
            for category, km in by_category.items():
                writer.writerow({"record": record, "date": period,
                                 "category": category or "unclassified",
                                 "distance_km": _km(km)})
    writer.writerow({"record": "hash", "id": "sha256", "note": export.content_hash,
                     "revisions": f"chain #{export.chain_head[0]} {export.chain_head[1]}"})
    return out.getvalue()


# --------------------------------------------------------------------------- PDF


def export_pdf(
    vehicle: Vehicle, start: date | datetime, end: date | datetime, actor: Principal
) -> bytes:
    """The logbook as a PDF for the tax office (A4 landscape)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    export = build_export(vehicle, start, end, actor)
    zone = ZoneInfo(vehicle.organisation.time_zone)
    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=7, leading=8.5)
    bold = small.clone("smallbold", fontName="Helvetica-Bold")
    corrected = small.clone("corrected", textColor=colors.grey)

    def p(text: Any, style=small, strike: bool = False) -> Paragraph:
        escaped = (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
        if strike and escaped:
            escaped = f"<strike>{escaped}</strike>"
        return Paragraph(escaped, style)

    def cells(row: list[Any]) -> list[Paragraph]:
        """A row; a corrected trip's (marked by a leading None) grey and struck through,
        all but its number and what became of it."""
        if row and row[0] is None:
            *values, status = row[1:]
            return [p(values[0], corrected), *[p(c, corrected, strike=True) for c in values[1:]],
                    p(status, corrected)]
        return [p(c) for c in row]

    def table(rows: list[list[Any]], widths: list[float]) -> Table:
        t = Table([[p(c, bold) for c in rows[0]], *[cells(r) for r in rows[1:]]],
                  colWidths=[w * mm for w in widths], repeatRows=1)
        t.setStyle(TableStyle([
            ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
            ("BACKGROUND", (0, 0), (-1, 0), colors.whitesmoke),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]))
        return t

    story: list[Any] = [
        Paragraph(f"Logbook (Fahrtenbuch) {vehicle.name}"
                  + (f" — {vehicle.licence_plate}" if vehicle.licence_plate else ""),
                  styles["Title"]),
        p(f"Organisation: {vehicle.organisation.name}. Period: {export.start.isoformat()} to "
          f"{export.end.isoformat()} (times in {zone.key}). Exported "
          f"{export.exported_at.astimezone(zone):%Y-%m-%d %H:%M} by {export.exported_by}."),
        Spacer(1, 4 * mm),
    ]
    rows: list[tuple[datetime, int, list[Any]]] = []
    for view in export.trips:
        when = view["start_time"] or datetime.fromisoformat(view["date"]).replace(tzinfo=zone)
        active = view["status"] == TripStatus.ACTIVE
        status = _status(view) if active else ""
        correction = _correction(view)
        status = f"{status}; {correction}" if status and correction else status or correction
        # A corrected trip right before what replaced it (same start): 0 sorts first.
        rows.append((when, 1 if active else 0, [
            *([] if active else [None]), view["id"], view["date"],
            "" if view["redacted"] else
            f"{_local(view['start_time'], zone)}–{_local(view['end_time'], zone)}",
            view["start_address"] or "", view["end_address"] or "",
            _km(view["start_odometer_km"]), _km(view["end_odometer_km"]),
            _km(view["distance_km"]), CATEGORY_LABELS[view["category"] or ""],
            _details(view), view["driver"] or "", status,
        ]))
    for gap in export.gaps:
        rows.append((gap["to_time"] or datetime.fromisoformat(gap["date"]).replace(tzinfo=zone),
                     0, [
            "gap", gap["date"],
            "" if gap["to_time"] is None else
            f"{_local(gap['from_time'], zone)}–{_local(gap['to_time'], zone)}",
            "Odometer gap (no trip recorded)", "", _km(gap["from_km"]), _km(gap["to_km"]),
            _km(gap["km"]), "", gap["note"] or "to be explained", "", gap["status"],
        ]))
    rows.sort(key=lambda r: (r[0], r[1]))
    header = ["Trip", "Date", "Time", "From", "To", "Odo start", "Odo end", "km", "Category",
              "Purpose, partner, destination / note", "Driver", "Status"]
    story.append(table([header, *[r for _, _, r in rows]],
                       [10, 17, 17, 38, 38, 15, 15, 11, 16, 50, 20, 30]))
    if any(view["status"] != TripStatus.ACTIVE for view in export.trips):
        story.append(p("Struck-through trips were corrected (cancelled, merged, split or "
                       "derived again): they stay listed as they were, with the reason and "
                       "the trips that replaced them, and count in no total."))
    story += [Spacer(1, 5 * mm), Paragraph("Totals per category (km)", styles["Heading3"])]
    totals = [["Period", "Business", "Commute", "Private", "Unclassified", "Total"]]
    for period_totals in (export.monthly, export.yearly):
        for period, by_category in period_totals.items():
            totals.append([period, *[_km(by_category[c]) for c in CATEGORIES],
                           _km(sum(by_category.values()))])
    story.append(table(totals, [25, 25, 25, 25, 25, 25]))
    story += [Spacer(1, 5 * mm), Paragraph("Revision history", styles["Heading3"])]
    history = [["Trip", "#", "Time", "Who", "Via", "Change", "Reason"]]
    for r in export.revisions:
        if r["field"] == "__created__":
            change = "created"
        else:
            change = f"{r['field']}: {r['old']!r} → {r['new']!r}"
        history.append([r["trip"], r["seq"], _local(r["time"], zone, "%Y-%m-%d %H:%M:%S"),
                        r["actor"], r["interface"], change, r["reason"]])
    story.append(table(history, [12, 10, 32, 28, 20, 120, 50]))
    story += [
        Spacer(1, 5 * mm),
        p(f"Content SHA-256: {export.content_hash}", bold),
        p(f"Revision chain head: #{export.chain_head[0]} {export.chain_head[1]}"),
        p("Base data (times, positions, addresses, odometer, distance) is derived from the "
          "vehicle's positions and never edited; every change is a revision in a hash chain "
          "that verify_logbook checks."),
    ]
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer, pagesize=landscape(A4), leftMargin=10 * mm, rightMargin=10 * mm,
        topMargin=10 * mm, bottomMargin=10 * mm,
        title=f"Logbook {vehicle.name} {export.start}–{export.end}", author="Fleetbook",
    )
    document.build(story)
    return buffer.getvalue()
