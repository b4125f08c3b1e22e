"""Lock trips whose edit window has closed (run daily; reads and changes also lock lazily)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from fleet.models import Organisation
from logbook.services import lock_due_trips


class Command(BaseCommand):
    help = "Lock every trip past its edit window; unclassified trips become private."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--organisation", help="Organisation name or slug (default: all)")

    def handle(self, *args, **options) -> None:
        organisation = None
        if options["organisation"]:
            organisation = (Organisation.objects.filter(slug=options["organisation"]).first()
                            or Organisation.objects.filter(name=options["organisation"]).first())
            if organisation is None:
                raise CommandError(f"No organisation {options['organisation']!r}.")
        locked = lock_due_trips(organisation=organisation)
        self.stdout.write(self.style.SUCCESS(f"{locked} trips locked."))
