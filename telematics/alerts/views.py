"""The events page: what the fleet did, newest first, filtered by type, vehicle and days."""

from __future__ import annotations

import zoneinfo
from datetime import date, datetime, time, timedelta

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import urlencode

from fleet.api.alerts import events_visible_to
from fleet.api.pagination import decode_cursor, encode_cursor
from fleet.selectors import membership_of, vehicles_visible_to
from logbook.event_privacy import redact_events
from telematics.alerts.engine import EVENT_TYPES
from telematics.alerts.presentation import label, summary

PAGE_SIZE = 100


def _day(raw: str | None) -> date | None:
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


@login_required
def events_page(request: HttpRequest) -> HttpResponse:
    membership = membership_of(request.user)
    zone = zoneinfo.ZoneInfo(membership.organisation.time_zone if membership else "UTC")
    vehicles = list(vehicles_visible_to(request.user).order_by("name").values_list("pk", "name"))
    params = request.GET
    wanted_type = params.get("type", "")
    wanted_vehicle = params.get("vehicle", "")
    today = timezone.localtime(timezone.now(), zone).date()
    first = _day(params.get("from")) or today - timedelta(days=6)
    last = _day(params.get("to")) or today
    errors = []
    if first > last:
        errors.append("The first day is after the last one.")
        first, last = last, first

    events = events_visible_to(request.user).select_related("vehicle").filter(
        time__gte=datetime.combine(first, time.min, zone),
        time__lt=datetime.combine(last + timedelta(days=1), time.min, zone),
    )
    if wanted_type in EVENT_TYPES:
        events = events.filter(type=wanted_type)
    if wanted_vehicle.isdigit() and len(wanted_vehicle) <= 18:
        events = events.filter(vehicle_id=int(wanted_vehicle))
    before = params.get("before")
    if before:
        try:
            moment, pk = decode_cursor(before, "before")
            events = events.filter(time__lte=moment).exclude(time=moment, id__gte=pk)
        except Exception:
            errors.append("That page link is not valid any more; showing the newest events.")
    rows = list(events.order_by("-time", "-id")[: PAGE_SIZE + 1])
    older = None
    if len(rows) > PAGE_SIZE:
        rows = rows[:PAGE_SIZE]
        query = {k: v for k, v in params.items() if k != "before"}
        query["before"] = encode_cursor(rows[-1].time, rows[-1].pk)
        older = "?" + urlencode(query)
    rows = redact_events(request.user, rows)  # private trips: no places
    for event in rows:
        name = event.vehicle.name if event.vehicle_id else None
        event.label = label(event.type)
        event.summary = summary(event.type, event.attributes, name)
        event.local_time = timezone.localtime(event.time, zone)
    return render(request, "fleet/events.html", {
        "events": rows, "older": older, "errors": errors, "time_zone": zone.key,
        "types": list(EVENT_TYPES.items()), "vehicles": vehicles,
        "wanted_type": wanted_type, "wanted_vehicle": wanted_vehicle,
        "first": first.isoformat(), "last": last.isoformat(), "paged": bool(before),
    })
