"""Server-rendered pages: the live map (home), a vehicle's page, and health.

The pages render everything they know at request time, so they read correctly before
(or without) JavaScript; ``static/fleet/live-map.js`` then keeps them current over the
websocket. Configuration reaches the script through ``data-`` attributes, never an inline
script, so a ``script-src 'self'`` policy holds.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.utils.formats import number_format

from fleet.live import hide_private_vehicles, live_snapshots_for
from fleet.models import Vehicle
from fleet.selectors import membership_of, organisations_visible_to, role_of, vehicles_visible_to
from fleet.status import STATUSES, offline_after_s, vehicle_status
from telematics.can.signals import latest_values
from telematics.maintenance import current_reading, faults_of_vehicle, plans_of_vehicle


def format_age(seconds: float) -> str:
    """A fix's age as the list shows it ("12 s", "5 min", "3 h", "2 d"); live-map.js
    formats it the same way when it takes over."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _time_zone_name(request: HttpRequest) -> str:
    """The zone times are shown in: the user's organisation's (UTC for the operator)."""
    membership = membership_of(request.user)
    return membership.organisation.time_zone if membership else "UTC"


def _annotate(vehicle: Vehicle, now: datetime) -> Vehicle:
    state = getattr(vehicle, "state", None)
    vehicle.status = vehicle_status(state, now).value
    vehicle.fix = state if state is not None and state.fix_time is not None else None
    vehicle.fix_age = format_age((now - state.fix_time).total_seconds()) if vehicle.fix else ""
    return vehicle


def _map_config(request: HttpRequest) -> dict[str, object]:
    return {
        "tile_url": settings.MAP_TILE_URL,
        "tile_attribution": getattr(settings, "MAP_TILE_ATTRIBUTION", ""),
        "offline_after_s": int(offline_after_s()),
        "time_zone": _time_zone_name(request),
    }


FIRST_PAINT = 100  # list rows rendered with the page; the websocket's snapshot brings all


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The live map: every vehicle the user may see, on a map and in a list. The page
    renders the list's first rows and the status counts; the websocket's snapshot then
    brings every vehicle (ten thousand rows rendered here would only delay it)."""
    now = datetime.now(UTC)
    visible = vehicles_visible_to(request.user).order_by("name", "pk")
    vehicles = [
        _annotate(vehicle, now)
        for vehicle in visible.select_related("state", "default_driver")[:FIRST_PAINT]
    ]
    hide_private_vehicles(request.user, vehicles)  # on a private trip: no position
    counts = {status.value: 0 for status in STATUSES}
    for snapshot in live_snapshots_for(request.user, visible, now):
        counts[snapshot["status"]] = counts.get(snapshot["status"], 0) + 1
    return render(request, "fleet/home.html", {
        "vehicles": vehicles,
        "vehicle_count": sum(counts.values()),
        "status_counts": counts,
        "organisations": organisations_visible_to(request.user),
        "role": role_of(request.user),
        "map": _map_config(request),
    })


@login_required
def vehicle_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One vehicle's latest state and a small live map, then what its engine bus says:
    the latest CAN signals, open and recently closed faults, and its service plans with
    what is left. 404 for a vehicle the user may not see (another organisation's, or for
    a driver, one they do not drive)."""
    vehicle = get_object_or_404(
        vehicles_visible_to(request.user).select_related("state", "default_driver"), pk=pk
    )
    now = datetime.now(UTC)
    _annotate(vehicle, now)
    hide_private_vehicles(request.user, [vehicle])
    zone = zoneinfo.ZoneInfo(_time_zone_name(request))
    fix_time_local = timezone.localtime(vehicle.fix.fix_time, zone) if vehicle.fix else None
    state = getattr(vehicle, "state", None)
    signals = [
        {"label": v.signal.label, "unit": v.signal.unit, "key": v.signal.key,
         "display": number_format(v.value, v.signal.decimals, force_grouping=True),
         "source": v.source,
         "time": timezone.localtime(v.time, zone) if v.time else None,
         "today": bool(v.time) and timezone.localtime(v.time, zone).date()
         == timezone.localtime(now, zone).date(),
         "age": format_age((now - v.time).total_seconds()) if v.time else ""}
        for v in latest_values(state.signals if state else None)
    ]
    open_faults, closed_faults = faults_of_vehicle(vehicle)
    reading = current_reading(state, vehicle.odometer_offset_km, now)
    can_odometer = bool(state and (state.signals or {}).get("odometer"))
    return render(request, "fleet/vehicle.html", {
        "vehicle": vehicle,
        "fix_time_local": fix_time_local,
        "map": _map_config(request),
        "signals": signals,
        "open_faults": open_faults,
        "closed_faults": closed_faults,
        "plans": plans_of_vehicle(vehicle, now),
        "reading": reading,
        "odometer_source": "CAN" if can_odometer else "GPS",
        "time_zone": zone,
    })


def health(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers: answers 503 when the database does not."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:
        return JsonResponse({"status": "error", "database": str(error)}, status=503)
    return JsonResponse({"status": "ok"})
