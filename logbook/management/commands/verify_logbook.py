"""Recompute every vehicle's revision chain and trips; non-zero exit on tampering."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from logbook.management.commands._common import select_vehicles
from logbook.models import Trip, TripRevision
from logbook.services import verify_chain


class Command(BaseCommand):
    help = (
        "Verify the logbook: each vehicle's revision hash chain, and every stored trip "
        "against what its revisions built. Reports the first broken link per vehicle and "
        "exits with status 1 if there is one."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--vehicle", help="Vehicle id, name or licence plate (default: all)")

    def handle(self, *args, **options) -> None:
        vehicles = select_vehicles(options["vehicle"])
        with_logbook = set(TripRevision.objects.values_list("vehicle_id", flat=True).distinct())
        with_logbook |= set(Trip.objects.values_list("vehicle_id", flat=True).distinct())
        broken = 0
        checked = 0
        for vehicle in vehicles:
            if vehicle.pk not in with_logbook:
                continue
            checked += 1
            report = verify_chain(vehicle.pk)
            if report.ok:
                self.stdout.write(f"{vehicle} (id {vehicle.pk}): {report.revisions} revisions, "
                                  f"{report.trips} trips: ok")
            else:
                broken += 1
                self.stdout.write(self.style.ERROR(
                    f"{vehicle} (id {vehicle.pk}): BROKEN at {report.problems[0]}"))
        if broken:
            raise CommandError(f"{broken} of {checked} vehicle logbooks failed verification.",
                               returncode=1)
        self.stdout.write(self.style.SUCCESS(f"{checked} vehicle logbooks verified."))
