import asyncio
import contextlib
import urllib.request

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from prometheus_client.parser import text_string_to_metric_families

from telematics.ingest.runner import PROTOCOLS

STAT_COLUMNS = (
    ("fleetbook_ingest_connections", "connections"),
    ("fleetbook_ingest_frames", "frames"),
    ("fleetbook_ingest_records_stored", "stored"),
    ("fleetbook_ingest_errors", "errors"),
    ("fleetbook_ingest_refused_units", "refused"),
)


class Command(BaseCommand):
    help = (
        "Run the unit listeners (Teltonika, GT06, NMEA, OsmAnd, CoAP, and MQTT when MQTT_URL "
        "is set) in one process, or with --stats print the counters of a running one."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--protocols", default=",".join(PROTOCOLS),
            help=f"Comma-separated subset of: {', '.join(PROTOCOLS)}",
        )
        parser.add_argument("--metrics-port", type=int, default=settings.INGEST_METRICS_PORT,
                            help="Serve Prometheus metrics here (0: off)")
        parser.add_argument("--stats", action="store_true",
                            help="Print the counters of the ingest process running here")

    def handle(self, *args, **options) -> None:
        if options["stats"]:
            self._print_stats(options["metrics_port"])
            return
        protocols = [p.strip() for p in options["protocols"].split(",") if p.strip()]
        unknown = set(protocols) - set(PROTOCOLS)
        if unknown:
            raise CommandError(
                f"Unknown protocol(s) {', '.join(sorted(unknown))}; choose from "
                f"{', '.join(PROTOCOLS)}"
            )
        if options["metrics_port"]:
            from prometheus_client import start_http_server

            start_http_server(options["metrics_port"], addr="127.0.0.1")
            self.stdout.write(f"Metrics at http://127.0.0.1:{options['metrics_port']}/metrics")
        from telematics.ingest.runner import run_listeners

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_listeners(protocols))

    def _print_stats(self, port: int) -> None:
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except OSError as error:
            raise CommandError(f"No ingest process answers at {url}: {error}") from error
        self.stdout.write(format_stats(text))


def format_stats(metrics_text: str) -> str:
    """A table of the ingest counters per protocol, from Prometheus' text format."""
    table: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for name, column in STAT_COLUMNS:
            if family.name == name:
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        protocol = sample.labels.get("protocol", "")
                        table.setdefault(protocol, {})[column] = sample.value
    header = f"{'protocol':<12}" + "".join(f"{c:>13}" for _, c in STAT_COLUMNS)
    lines = [header]
    for protocol in sorted(table):
        lines.append(f"{protocol:<12}" + "".join(
            f"{int(table[protocol].get(c, 0)):>13}" for _, c in STAT_COLUMNS))
    if len(lines) == 1:
        lines.append("(no traffic yet)")
    return "\n".join(lines)
