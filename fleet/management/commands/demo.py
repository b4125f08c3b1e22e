import asyncio

from django.core.management import call_command
from django.core.management.base import BaseCommand

from fleet.demo import DEMO_LOGINS, OPERATOR, seed_demo_organisation


class Command(BaseCommand):
    help = (
        "Run the demo: migrate, create the demo organisation and its logins, then serve the "
        "dashboard, the ingest listeners and a simulated fleet in one process."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--vehicles", type=int, default=20)
        parser.add_argument(
            "--setup-only", action="store_true", help="Migrate and seed, then exit."
        )

    def handle(self, *args, **options) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        organisation = seed_demo_organisation(options["vehicles"])
        url = f"http://{options['host']}:{options['port']}/"
        self.stdout.write(self.style.SUCCESS(f"Fleetbook demo for {organisation.name}: {url}"))
        for login in (*DEMO_LOGINS, OPERATOR):
            self.stdout.write(f"  {login.role:<11} {login.username} / {login.password}")
        if options["setup_only"]:
            return
        from fleet.server import serve

        try:
            asyncio.run(serve(options["host"], options["port"], with_ingest=True,
                              simulated_vehicles=options["vehicles"]))
        except KeyboardInterrupt:
            self.stdout.write("Demo stopped.")
