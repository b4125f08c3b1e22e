import asyncio
import gc
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from telematics.simulator.load import (
    MODES,
    SUPPORTED_PROTOCOLS,
    LoadResult,
    load_imeis,
    percentile,
    register_units,
    run_units,
)


class Command(BaseCommand):
    help = (
        "Play simulated units against running ingest listeners over TCP: each logs in, "
        "sends AVL packets and waits for the acknowledgement, like a real unit. Prints "
        "progress and a summary (records acknowledged, acks/s, ack latency)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.INGEST_PORTS["teltonika"])
        parser.add_argument(
            "--protocol",
            default="teltonika",
            help=f"Unit protocol; supported: {', '.join(SUPPORTED_PROTOCOLS)}",
        )
        parser.add_argument("--units", type=int, default=100)
        parser.add_argument(
            "--first-unit",
            type=int,
            default=0,
            help="Number of the first unit (IMEIs are numbered from it)",
        )
        parser.add_argument(
            "--mode",
            choices=MODES,
            default="live",
            help="live: a record every 1/rate s; backlog: flush packets",
        )
        parser.add_argument(
            "--rate", type=float, default=1.0, help="Live: records per second per unit"
        )
        parser.add_argument("--duration", type=float, default=30.0, help="Live: seconds of records")
        parser.add_argument(
            "--records-per-packet", type=int, default=None, help="Default 1 live, 25 backlog"
        )
        parser.add_argument("--packets", type=int, default=40, help="Backlog: packets per unit")
        parser.add_argument(
            "--can", action="store_true", help="Units report CAN adapter IO (speed, fuel level)"
        )
        parser.add_argument(
            "--register",
            action="store_true",
            help="Register the units first (organisation 'Load Test')",
        )

    def handle(self, *args, **options) -> None:
        if options["protocol"] not in SUPPORTED_PROTOCOLS:
            raise CommandError(
                f"The simulator cannot play {options['protocol']!r} units yet; supported: "
                f"{', '.join(SUPPORTED_PROTOCOLS)}."
            )
        if options["units"] < 1:
            raise CommandError("--units must be at least 1.")
        try:
            imeis = load_imeis(options["units"], first=options["first_unit"])
        except ValueError as error:
            raise CommandError(str(error)) from error
        if options["register"]:
            added = register_units(imeis)
            self.stdout.write(f"Registered {added:,} units ({len(imeis) - added:,} already were).")
        self.stdout.write(
            f"{len(imeis):,} {options['protocol']} units, mode {options['mode']}, against "
            f"{options['host']}:{options['port']}"
        )
        try:
            result = asyncio.run(
                run_units(
                    options["host"],
                    options["port"],
                    imeis,
                    mode=options["mode"],
                    rate=options["rate"],
                    duration=options["duration"],
                    records_per_packet=options["records_per_packet"],
                    packets=options["packets"],
                    can=options["can"],
                    progress=_Progress(self.stdout.write),
                    # Thousands of units' objects live for the whole run: frozen, they are not
                    # rescanned by every full collection, which would stall all units at once.
                    on_start=gc.freeze,
                )
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(result.summary())
        if result.refused and not options["register"]:
            self.stdout.write("Refused units are not registered: add --register.")
        if not result.complete:
            raise CommandError("Not every unit connected and had every record acknowledged.")


class _Progress:
    """Prints one line a second: acks and latency since the previous line."""

    def __init__(self, write) -> None:
        self.write = write
        self.started = time.monotonic()
        self.previous = (self.started, 0)  # time, packets acked

    def __call__(self, result: LoadResult) -> None:
        now = time.monotonic()
        seconds = max(now - self.previous[0], 1e-9)
        recent = result.latencies[self.previous[1] :]  # one latency per acked packet
        self.previous = (now, len(result.latencies))
        latency = f"p99 {percentile(recent, 0.99) * 1000:,.0f} ms" if recent else ""
        self.write(
            f"{now - self.started:6.1f} s  connected {result.connected:,}/{result.units:,}  "
            f"records acked {result.records_acked:,}  {len(recent) / seconds:,.0f} acks/s  "
            f"{latency}"
        )
