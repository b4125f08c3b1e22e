"""Replay stored positions through trip derivation: the same code as live ingest."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from tqdm import tqdm

from logbook.derivation import replay
from logbook.geocoding import geocode_pending_trips
from logbook.management.commands._common import parse_moment, select_vehicles
from telematics.models import Position


class Command(BaseCommand):
    help = (
        "Re-derive trips from stored positions (all history, or from --from). Trips that "
        "come out the same keep their id, classification and revisions; changed ones become "
        "visible corrections. --to stops at the first trip end after it where the result "
        "meets what is stored (else the replay runs on to the newest position)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--vehicle", help="Vehicle id, name or licence plate (default: all)")
        parser.add_argument("--from", dest="start", help="ISO date or date-time (UTC if naive)")
        parser.add_argument("--to", dest="end", help="ISO date or date-time (UTC if naive)")
        parser.add_argument("--no-geocode", action="store_true",
                            help="Leave missing addresses for the live tracker")

    def handle(self, *args, **options) -> None:
        start = parse_moment(options["start"])
        end = parse_moment(options["end"])
        vehicles = list(select_vehicles(options["vehicle"]))
        positions = Position.objects.filter(vehicle__in=vehicles)
        if start is not None:
            positions = positions.filter(fix_time__gte=start)
        totals = {"created": 0, "kept": 0, "superseded": 0, "gaps": 0, "fixes": 0}
        with tqdm(total=positions.count(), unit=" fixes", unit_scale=True, disable=None,
                  desc="rebuild_trips") as progress:
            for vehicle in vehicles:
                outcome = replay(vehicle, since=start, converge_after=end,
                                 progress=progress.update)
                for key in totals:
                    totals[key] += getattr(outcome, key)
        geocoded = 0 if options["no_geocode"] else geocode_pending_trips(limit=None)
        self.stdout.write(self.style.SUCCESS(
            f"{len(vehicles)} vehicles, {totals['fixes']} fixes: {totals['created']} trips "
            f"created, {totals['kept']} unchanged, {totals['superseded']} superseded, "
            f"{totals['gaps']} odometer gaps, {geocoded} trips geocoded."
        ))
