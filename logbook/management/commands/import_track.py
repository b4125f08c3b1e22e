"""Import a recorded track (NMEA log or GPX) as a unit's positions, then derive its trips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import gpxpy
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from fleet.models import Vehicle
from logbook.derivation import replay
from logbook.geocoding import geocode_pending_trips
from logbook.models import Interface
from telematics.ingest.filters import FixFilter
from telematics.ingest.store import PositionRow, store_batch
from telematics.models import Device
from telematics.protocols.base import Fix
from telematics.protocols.nmea import decode_lines

CHUNK = 5000


def read_gpx(text: str) -> list[Fix]:
    """Track points (and route points) with a time, as fixes; GPX speed is in m/s."""
    gpx = gpxpy.parse(text)
    fixes = []
    points = [p for track in gpx.tracks for segment in track.segments for p in segment.points]
    points += [p for route in gpx.routes for p in route.points]
    for point in points:
        if point.time is None:
            continue
        when = point.time if point.time.tzinfo else point.time.replace(tzinfo=UTC)
        fixes.append(Fix(
            fix_time=when.astimezone(UTC), latitude=point.latitude, longitude=point.longitude,
            altitude=point.elevation, speed_kmh=None if point.speed is None else point.speed * 3.6,
            course=getattr(point, "course", None), satellites=point.satellites,
            hdop=point.horizontal_dilution,
        ))
    return fixes


def read_track(path: Path, kind: str) -> tuple[list[Fix], list[str]]:
    text = path.read_text(encoding="utf-8", errors="replace")
    if kind == "auto":
        kind = "gpx" if path.suffix.lower() == ".gpx" or text.lstrip().startswith("<") else "nmea"
    if kind == "gpx":
        try:
            return read_gpx(text), []
        except gpxpy.gpx.GPXException as error:
            raise CommandError(f"{path}: not a readable GPX file: {error}") from error
    return decode_lines(text)


class Command(BaseCommand):
    help = (
        "Import an NMEA log or a GPX file as the positions of a unit, through the same "
        "filter as live ingest, and derive the vehicle's trips from them."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file")
        parser.add_argument("--device", required=True, help="Unit identifier (IMEI) or id")
        parser.add_argument("--format", choices=["auto", "nmea", "gpx"], default="auto")
        parser.add_argument("--no-trips", action="store_true",
                            help="Only store the positions")

    def handle(self, *args, **options) -> None:
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        spec = options["device"]
        device = Device.objects.filter(identifier=spec).first()
        if device is None and spec.isdigit():
            device = Device.objects.filter(pk=int(spec)).first()
        if device is None:
            raise CommandError(f"No unit {spec!r} is registered.")
        fixes, errors = read_track(path, options["format"])
        fixes.sort(key=lambda f: f.fix_time)
        now = datetime.now(UTC)
        fix_filter = FixFilter(settings.INGEST_MAX_SPEED_KMH,
                               timedelta(seconds=settings.INGEST_MAX_FUTURE_S))
        rows = [PositionRow(device.pk, device.vehicle_id, device.organisation_id, fix, now)
                for fix in fixes if fix_filter.reason_to_drop(device.pk, fix, now) is None]
        with tqdm(total=len(rows), unit=" fixes", unit_scale=True, disable=None,
                  desc=path.name) as progress:
            for start in range(0, len(rows), CHUNK):
                chunk = rows[start:start + CHUNK]
                store_batch(chunk, [], set(), now)
                progress.update(len(chunk))
        message = (f"{len(fixes)} fixes read, {len(rows)} stored (duplicates ignored), "
                   f"{len(fixes) - len(rows)} filtered out, {len(errors)} unreadable lines.")
        if rows and device.vehicle_id is not None and not options["no_trips"]:
            vehicle = Vehicle.objects.select_related("organisation").get(pk=device.vehicle_id)
            with tqdm(total=None, unit=" fixes", unit_scale=True, disable=None,
                      desc="trips") as progress:
                outcome = replay(vehicle, since=rows[0].fix.fix_time,
                                 converge_after=rows[-1].fix.fix_time,
                                 interface=Interface.IMPORT, progress=progress.update)
            geocode_pending_trips(limit=None)
            message += (f" Trips: {outcome.created} created, {outcome.kept} unchanged, "
                        f"{outcome.superseded} superseded.")
        self.stdout.write(self.style.SUCCESS(message))
