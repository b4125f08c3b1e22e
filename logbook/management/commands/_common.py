"""Argument parsing shared by the logbook commands."""

from __future__ import annotations

from datetime import UTC, date, datetime

from django.core.management.base import CommandError
from django.db.models import QuerySet

from fleet.models import Vehicle


def parse_moment(value: str | None) -> datetime | None:
    """An ISO date or date-time; naive values are UTC."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        try:
            moment = datetime.combine(date.fromisoformat(value), datetime.min.time())
        except ValueError as error:
            raise CommandError(f"{value!r} is not an ISO date or date-time") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def select_vehicles(spec: str | None) -> QuerySet[Vehicle]:
    """All vehicles, or the one named by id, name or licence plate."""
    vehicles = Vehicle.objects.select_related("organisation", "default_driver").order_by("pk")
    if not spec:
        return vehicles
    found = vehicles.filter(pk=int(spec)) if spec.isdigit() else vehicles.none()
    if not found.exists():
        found = vehicles.filter(name=spec) | vehicles.filter(licence_plate=spec)
    if not found.exists():
        raise CommandError(f"No vehicle {spec!r} (give its id, name or licence plate).")
    return found
