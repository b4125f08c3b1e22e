"""What the live map is told about a vehicle, and where it is sent."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from django.db.models import QuerySet

from fleet.models import Vehicle
from fleet.status import offline_after_s, status_from, vehicle_status


def organisation_group(organisation_id: int) -> str:
    return f"live.org.{organisation_id}"


def merged_updates(batches: list[dict[int, list[dict[str, Any]]]],
                   ) -> dict[int, list[dict[str, Any]]]:
    """Stored batches' live updates (``{organisation id: [vehicle update, ...]}``, oldest
    batch first) as one: the newest fix of each vehicle, per organisation.

    The ingest publishes after each stored batch; when the channel layer falls behind
    (a busy event loop, a slow Redis), the batches waiting are sent as one message
    carrying the newest state of each vehicle, rather than one after another each
    already older than the last: a browser's marker is then never further behind than
    one publish.
    """
    if len(batches) == 1:
        return batches[0]
    merged: dict[int, dict[int, dict[str, Any]]] = {}
    for batch in batches:
        for organisation_id, vehicles in batch.items():
            newest = merged.setdefault(organisation_id, {})
            for vehicle in vehicles:
                current = newest.get(vehicle["id"])
                if current is None or (vehicle.get("fix_time") or "") >= (
                        current.get("fix_time") or ""):
                    newest[vehicle["id"]] = vehicle
    return {organisation_id: list(vehicles.values())
            for organisation_id, vehicles in merged.items()}


SNAPSHOT_COLUMNS = ("pk", "name", "licence_plate", "default_driver__name", "state__fix_time",
                    "state__latitude", "state__longitude", "state__speed_kmh",
                    "state__course", "state__ignition")


def vehicle_snapshots(vehicles: QuerySet[Vehicle], now: datetime | None = None,
                      ) -> list[dict[str, Any]]:
    """Everything the map and list show of each vehicle of the query, status included,
    read as plain rows: the websocket's first message carries the whole fleet (ten
    thousand vehicles), and model instances would cost it several times as long."""
    now = now or datetime.now(UTC)
    offline_after = offline_after_s()
    snapshots = []
    for (pk, name, plate, driver, fix_time, latitude, longitude, speed, course,
         ignition) in vehicles.values_list(*SNAPSHOT_COLUMNS):
        snapshot: dict[str, Any] = {
            "id": pk, "name": name, "licence_plate": plate, "driver": driver,
            "status": status_from(fix_time, speed, ignition, now, offline_after).value,
        }
        if fix_time is not None:
            snapshot.update(fix_time=fix_time.isoformat(), latitude=latitude,
                            longitude=longitude, speed_kmh=speed, course=course,
                            ignition=ignition)
            rounded(snapshot)
        snapshots.append(snapshot)
    return snapshots


def live_snapshots_for(principal: Any, vehicles: QuerySet[Vehicle],
                       now: datetime | None = None) -> list[dict[str, Any]]:
    """The snapshot of ``vehicles`` as the principal may see it: the websocket's first
    message, and the map page's status counts. Those on a private trip come without a
    position (``without_position``)."""
    snapshots = vehicle_snapshots(vehicles, now)
    hidden = positions_hidden_from(principal, {
        v["id"]: datetime.fromisoformat(v["fix_time"]) if v.get("fix_time") else None
        for v in snapshots})
    return [without_position(v, v["id"] in hidden) for v in snapshots]


# Digits the map needs: 6 decimals of a degree are 0.1 m, speed and course to a tenth.
# Every update goes to every browser (and through each one's compression), so the bytes
# a fleet's second of fixes takes are worth counting.
DIGITS = {"latitude": 6, "longitude": 6, "speed_kmh": 1, "course": 1}


def rounded(vehicle: dict[str, Any]) -> dict[str, Any]:
    """A snapshot or update with its numbers cut to what the map shows."""
    for key, digits in DIGITS.items():
        value = vehicle.get(key)
        if isinstance(value, float):
            vehicle[key] = round(value, digits)
    return vehicle


def with_status(update: dict[str, Any], now: datetime) -> dict[str, Any]:
    """An ingest update (one vehicle's newest fix) with its status added.

    Computed when the update is sent rather than when it was stored, so a batch that sat
    in the consumer for a moment is judged against the time the browser receives it.
    """
    fix_time = update.get("fix_time")
    state = SimpleNamespace(
        fix_time=datetime.fromisoformat(fix_time) if fix_time else None,
        speed_kmh=update.get("speed_kmh"), ignition=update.get("ignition"),
    )
    return rounded({**update, "status": vehicle_status(state, now).value})


# --- Privacy (issue 5): what the map may not show of a private trip -----------------

PRIVATE_STATUS = "private"
POSITION_KEYS = ("fix_time", "latitude", "longitude", "speed_kmh", "course", "ignition")


NARROW_ABOVE = 50  # vehicles asked about at once before the candidates are read first


def positions_hidden_from(principal: Any, latest: dict[int, datetime | None]) -> set[int]:
    """Vehicles (``{id: newest fix time}``) whose live position the principal may not
    see; the rule is ``logbook.selectors.live_positions_hidden``.

    Asked about many vehicles at once (a snapshot of the fleet, a busy update), it first
    reads which of the organisation's vehicles can be hidden at all, in one query
    without a list of ids, and asks the rule about those alone: ten thousand ids in
    every query cost the snapshot and each update a second of database work.
    """
    from logbook.selectors import live_positions_hidden

    if len(latest) > NARROW_ABOVE:
        candidates = may_be_hidden(principal)
        latest = {pk: fix_time for pk, fix_time in latest.items() if pk in candidates}
        if not latest:
            return set()
    return live_positions_hidden(principal, latest)


def may_be_hidden(principal: Any) -> set[int]:
    """The principal's vehicles that ``live_positions_hidden`` could ever hide: those
    with a private (or suggested private) trip, or a private logbook default. Any other
    vehicle's position is shown whatever its fix time."""
    from fleet.selectors import organisations_visible_to

    return may_be_hidden_in(organisations_visible_to(principal))


def may_be_hidden_in(organisations: Any) -> set[int]:
    """``may_be_hidden`` for every vehicle of the organisations (ids or a query)."""
    from django.db.models import Exists, OuterRef, Q

    from logbook.models import Category, Trip, TripStatus, VehicleLogbook
    from logbook.selectors import PRIVATE_Q

    private_trip = Trip.objects.filter(PRIVATE_Q, status=TripStatus.ACTIVE,
                                       vehicle_id=OuterRef("pk"))
    private_default = VehicleLogbook.objects.filter(vehicle_id=OuterRef("pk"),
                                                    default_category=Category.PRIVATE)
    return set(Vehicle.objects.filter(organisation__in=organisations)
               .filter(Q(Exists(private_trip)) | Q(Exists(private_default)))
               .values_list("pk", flat=True))


def without_position(vehicle: dict[str, Any], hidden: bool) -> dict[str, Any]:
    """A snapshot or update as the map gets it: a hidden vehicle keeps its name, plate
    and driver, and shows status "private" without fix time, position or speed."""
    if not hidden:
        return {**vehicle, "private": False}
    return {**vehicle, **dict.fromkeys(POSITION_KEYS), "status": PRIVATE_STATUS,
            "private": True}


def hide_private_vehicles(principal: Any, vehicles: list[Vehicle]) -> set[int]:
    """For the server-rendered pages: clear the fix of each vehicle (annotated by
    ``fleet.views._annotate``) the principal may not follow now."""
    hidden = positions_hidden_from(principal, {
        v.pk: v.fix.fix_time if getattr(v, "fix", None) is not None else None
        for v in vehicles
    })
    for vehicle in vehicles:
        if vehicle.pk in hidden:
            vehicle.status, vehicle.fix, vehicle.fix_age = PRIVATE_STATUS, None, ""
    return hidden
