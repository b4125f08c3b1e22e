"""``manage.py deliver_webhooks``: the webhook worker on its own, for web-only deployments.

The ingest process delivers webhooks too (``WEBHOOKS_IN_INGEST``); running both is safe:
each delivery is claimed before it is sent.
"""

import contextlib

from django.core.management.base import BaseCommand

from fleet.webhooks import WebhookWorker


class Command(BaseCommand):
    help = "Deliver webhooks: turn new events into signed POSTs, retrying with backoff."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true",
                            help="One cycle (new events, due deliveries), then exit")
        parser.add_argument("--poll", type=float, default=None,
                            help="Seconds between cycles (default WEBHOOK_POLL_S)")

    def handle(self, *args, **options) -> None:
        worker = WebhookWorker(poll_s=options["poll"])
        try:
            if options["once"]:
                attempted = worker.run_once()
                self.stdout.write(f"{attempted} deliveries attempted")
                return
            self.stdout.write("Delivering webhooks; Ctrl-C to stop")
            with contextlib.suppress(KeyboardInterrupt):
                worker.run()
        finally:
            worker.stop()
