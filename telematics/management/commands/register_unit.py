from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from fleet.services import get_or_create_organisation
from telematics.models import Protocol
from telematics.services import register_unit


class Command(BaseCommand):
    help = (
        "Register a telematics unit by its identifier (IMEI), fitted to a vehicle. "
        "The organisation and vehicle are created when missing."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("identifier", help="IMEI or the id the unit reports")
        parser.add_argument("--protocol", required=True, choices=Protocol.values)
        parser.add_argument("--organisation", required=True)
        parser.add_argument("--vehicle", help="Vehicle name, e.g. 'Van 7'")
        parser.add_argument("--secret", default="", help="Secret HTTP/MQTT/CoAP units present")

    def handle(self, *args, **options) -> None:
        try:
            organisation = get_or_create_organisation(options["organisation"])
            device = register_unit(
                options["identifier"], options["protocol"], organisation,
                vehicle_name=options["vehicle"], secret=options["secret"],
            )
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from error
        fitted = f" fitted to {device.vehicle.name!r}" if device.vehicle else ""
        self.stdout.write(self.style.SUCCESS(
            f"Registered {device.protocol} unit {device.identifier}{fitted} "
            f"in {organisation.name!r}."
        ))
