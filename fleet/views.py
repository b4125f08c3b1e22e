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

from fleet.live import hide_private_vehicles
from fleet.models import Vehicle
from fleet.selectors import membership_of, organisations_visible_to, role_of, vehicles_visible_to
from fleet.status import STATUSES, offline_after_s, vehicle_status


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


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The live map: every vehicle the user may see, on a map and in a list."""
    now = datetime.now(UTC)
    vehicles = [
        _annotate(vehicle, now)
        for vehicle in vehicles_visible_to(request.user)
        .select_related("state", "default_driver").order_by("name")
    ]
    hide_private_vehicles(request.user, vehicles)  # on a private trip: no position
    counts = {status.value: 0 for status in STATUSES}
    for vehicle in vehicles:
        counts[vehicle.status] = counts.get(vehicle.status, 0) + 1
    return render(request, "fleet/home.html", {
        "vehicles": vehicles,
        "status_counts": counts,
        "organisations": organisations_visible_to(request.user),
        "role": role_of(request.user),
        "map": _map_config(request),
    })


@login_required
def vehicle_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One vehicle's latest state and a small live map; 404 for a vehicle the user may
    not see (another organisation's, or for a driver, one they do not drive)."""
    vehicle = get_object_or_404(
        vehicles_visible_to(request.user).select_related("state", "default_driver"), pk=pk
    )
    now = datetime.now(UTC)
    _annotate(vehicle, now)
    hide_private_vehicles(request.user, [vehicle])
    zone = zoneinfo.ZoneInfo(_time_zone_name(request))
    fix_time_local = timezone.localtime(vehicle.fix.fix_time, zone) if vehicle.fix else None
    return render(request, "fleet/vehicle.html", {
        "vehicle": vehicle,
        "fix_time_local": fix_time_local,
        "map": _map_config(request),
    })


def health(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers: answers 503 when the database does not."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:
        return JsonResponse({"status": "error", "database": str(error)}, status=503)
    return JsonResponse({"status": "ok"})
