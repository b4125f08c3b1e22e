from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from telematics.can.decoder import VehicleCanDecoder
from telematics.can.frames import read_log_file
from telematics.ingest.store import CanRows, store_batch
from telematics.ingest.thinning import SignalThinner
from telematics.ingest.unit_messages import build_dbc_decoder, dbc_for_vehicle
from telematics.models import Device

CHUNK = 5000


class Command(BaseCommand):
    help = (
        "Import a CAN log recorded with a CAN interface (candump -L .log, Vector .asc, "
        ".blf, ...) as the vehicle signals and faults of a unit's vehicle."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file")
        parser.add_argument("--device", required=True, help="Identifier (IMEI) of the unit")

    def handle(self, *args, **options) -> None:
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        device = Device.objects.filter(identifier=options["device"]).first()
        if device is None:
            raise CommandError(f"No unit {options['device']!r} is registered.")
        if device.vehicle_id is None:
            raise CommandError(f"Unit {device.identifier} is not fitted to a vehicle.")
        dbc_row = dbc_for_vehicle(device.vehicle_id)
        decoder = VehicleCanDecoder(dbc=build_dbc_decoder(dbc_row) if dbc_row else None)
        thinner = SignalThinner()
        read_errors: list[str] = []
        frames = read_log_file(path, read_errors)
        decode_errors = stored = total = 0
        with tqdm(unit=" frames", unit_scale=True, desc=path.name, disable=None) as progress:
            while chunk := list(islice(frames, CHUNK)):
                total += len(chunk)
                result = decoder.decode(chunk)
                decode_errors += len(result.errors)
                latest = {}
                for sample in result.samples:
                    if sample.signal not in latest or sample.time > latest[sample.signal].time:
                        latest[sample.signal] = sample
                kept = [s for s in result.samples if thinner.keep(device.vehicle_id, s)]
                stored += len(kept)
                store_batch([], [], set(), datetime.now(UTC), [CanRows(
                    device.vehicle_id, device.organisation_id, device.pk, kept, latest,
                    result.faults, result.fault_reports)])
                progress.update(len(chunk))
        self.stdout.write(self.style.SUCCESS(
            f"{total} frames read, {stored} signal samples stored, "
            f"{decode_errors} frames not decoded, {len(read_errors)} unreadable lines."
        ))
        for line in read_errors[:10]:
            self.stdout.write(f"  {line}")

