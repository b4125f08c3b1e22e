from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from fleet.models import Role
from fleet.services import create_user, get_or_create_organisation


class Command(BaseCommand):
    help = "Create a login with a role in an organisation (created when missing)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--organisation", required=True)
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--password", help="Generated and printed when omitted.")
        parser.add_argument("--email", default="")

    def handle(self, *args, **options) -> None:
        try:
            organisation = get_or_create_organisation(options["organisation"])
            user, password = create_user(
                options["username"], organisation, options["role"],
                password=options["password"], email=options["email"],
            )
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from error
        self.stdout.write(self.style.SUCCESS(
            f"Created {options['role']} {user.username!r} in {organisation.name!r}."
        ))
        if not options["password"]:
            self.stdout.write(f"Password: {password}")
