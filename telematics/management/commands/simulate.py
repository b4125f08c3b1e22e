import asyncio
import contextlib
import gc
import json
import subprocess
import sys
import time
from datetime import UTC, datetime

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from telematics.simulator.load import (
    MIXED,
    MODES,
    SUPPORTED_PROTOCOLS,
    UNIT_PROTOCOLS,
    LoadResult,
    LoadUnit,
    Stored,
    load_units,
    percentile,
    register_load_units,
    run_fleet,
    wait_for_stored,
)


class Command(BaseCommand):
    help = (
        "Play simulated units against running ingest listeners: Teltonika, GT06, NMEA or "
        "OsmAnd units, or a mixed fleet. Each connects, logs in where its protocol has a "
        "login, sends its records and waits for the acknowledgement, like a real unit "
        "(NMEA over TCP has none). Prints progress and a summary per protocol (records "
        "acknowledged, rate, ack latency); --count-stored checks the database too."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument(
            "--protocol",
            default="teltonika",
            help=f"Unit protocol; supported: {', '.join(SUPPORTED_PROTOCOLS)} (mixed: every "
            "fourth unit of each)",
        )
        parser.add_argument(
            "--port",
            type=int,
            default=None,
            help="Listener port for a single-protocol run (default: the protocol's setting)",
        )
        parser.add_argument(
            "--ports",
            default="",
            help="Listener ports per protocol, e.g. teltonika=5027,gt06=5023,nmea=5005,"
            "osmand=5055 (default: the *_PORT settings)",
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
            "--rate",
            type=float,
            default=1.0,
            help="Live: records per second per unit (GT06 units: at most 1)",
        )
        parser.add_argument("--duration", type=float, default=30.0, help="Live: seconds of records")
        parser.add_argument(
            "--records-per-packet", type=int, default=None, help="Default 1 live, 25 backlog"
        )
        parser.add_argument("--packets", type=int, default=40, help="Backlog: packets per unit")
        parser.add_argument(
            "--can",
            action="store_true",
            help="Teltonika units report CAN adapter IO (speed, fuel level)",
        )
        parser.add_argument(
            "--register",
            action="store_true",
            help="Register the units first (organisation 'Load Test')",
        )
        parser.add_argument(
            "--count-stored",
            action="store_true",
            help="Afterwards, count the positions stored in this process' database (the "
            "listeners' database): the only check NMEA units have",
        )
        parser.add_argument(
            "--flood",
            type=float,
            default=0.0,
            metavar="RATE",
            help="While the units run, flood every listener port with this many junk "
            "connections a second (garbage, half-open, oversized; telematics.simulator.flood "
            "in a process of its own)",
        )
        parser.add_argument(
            "--settle",
            type=float,
            default=5.0,
            help="--count-stored: give up when the count has not grown for this many seconds",
        )

    def handle(self, *args, **options) -> None:
        protocol = options["protocol"]
        if protocol not in SUPPORTED_PROTOCOLS:
            raise CommandError(
                f"The simulator cannot play {protocol!r} units; supported: "
                f"{', '.join(SUPPORTED_PROTOCOLS)}."
            )
        if options["units"] < 1:
            raise CommandError("--units must be at least 1.")
        if options["can"] and protocol not in ("teltonika", MIXED):
            raise CommandError("--can: only Teltonika units report CAN adapter IO.")
        try:
            units = load_units(options["units"], first=options["first_unit"], protocol=protocol)
        except ValueError as error:
            raise CommandError(str(error)) from error
        ports = self._ports(protocol, options["port"], options["ports"])
        if options["register"]:
            added = register_load_units(units)
            self.stdout.write(f"Registered {added:,} units ({len(units) - added:,} already were).")
        counts = {name: sum(1 for u in units if u.protocol == name) for name in UNIT_PROTOCOLS}
        fleet = ", ".join(f"{name} {n:,} on :{ports[name]}" for name, n in counts.items() if n)
        self.stdout.write(
            f"{len(units):,} units ({fleet}), mode {options['mode']}, against {options['host']}"
        )
        started_wall: list[datetime] = []

        def on_start() -> None:
            started_wall.append(datetime.now(UTC))
            # Thousands of units' objects live for the whole run: frozen, they are not
            # rescanned by every full collection, which would stall all units at once.
            gc.freeze()

        flood = self._start_flood(options["host"], ports, options["flood"])
        since = datetime.now(UTC)  # the listeners stamp each position as they store it
        try:
            result = asyncio.run(
                run_fleet(
                    options["host"],
                    ports,
                    units,
                    mode=options["mode"],
                    rate=options["rate"],
                    duration=options["duration"],
                    records_per_packet=options["records_per_packet"],
                    packets=options["packets"],
                    can=options["can"],
                    progress=_Progress(self.stdout.write),
                    on_start=on_start,
                )
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        finally:
            gc.unfreeze()
            if flood is not None:
                self._stop_flood(flood)
        self.stdout.write(result.summary())
        if result.refused and not options["register"]:
            self.stdout.write("Refused units are not registered: add --register.")
        short = []
        if options["count_stored"]:
            short = self._count_stored(
                units, result, since, started_wall[0] if started_wall else since,
                options["settle"],
            )
        if not result.complete:
            raise CommandError("Not every unit connected and had every record acknowledged.")
        if short:
            raise CommandError(f"Fewer positions stored than sent: {', '.join(short)}.")

    def _ports(self, protocol: str, port: int | None, listed: str) -> dict[str, int]:
        known = (*UNIT_PROTOCOLS, "coap")  # CoAP: only the flood goes there
        ports = {name: settings.INGEST_PORTS[name] for name in known}
        for item in filter(None, (part.strip() for part in listed.split(","))):
            name, _, number = item.partition("=")
            if name.strip() not in known or not number.strip().isdigit():
                raise CommandError(
                    f"--ports: {item!r} is not <protocol>=<port> with a protocol of "
                    f"{', '.join(known)}."
                )
            ports[name.strip()] = int(number)
        if port is not None:
            if protocol == MIXED:
                raise CommandError("--port names one listener: use --ports for a mixed fleet.")
            ports[protocol] = port
        return ports

    def _start_flood(self, host: str, ports: dict[str, int], rate: float):
        """The flood as a child process, or None; it runs until stopped."""
        if rate <= 0:
            return None
        targets = {**ports, "teltonika_udp": ports["teltonika"]}  # UDP shares the number
        self.stdout.write(f"Flooding every port with {rate:g} junk connections a second.")
        return subprocess.Popen(
            [sys.executable, "-m", "telematics.simulator.flood", "--host", host,
             "--ports", ",".join(f"{name}={port}" for name, port in targets.items()),
             "--rate", str(rate), "--duration", str(7 * 24 * 3600)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def _stop_flood(self, flood: subprocess.Popen) -> None:
        flood.terminate()  # it stops, then reports what it did
        try:
            out, err = flood.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            flood.kill()
            out, err = flood.communicate()
        report = None
        with contextlib.suppress(ValueError, IndexError):
            report = json.loads(out.strip().splitlines()[-1])
        if report is None:
            self.stderr.write(f"The flood did not report: {err.strip()[-500:]}")
            return
        answers = ", ".join(f"{n:,} x {status}" for status, n in report["answers"].items())
        self.stdout.write(
            f"flood: {report['connections']:,} junk connections ({report['cut']:,} cut by the "
            f"listeners, {report['not_accepted']:,} not accepted, {report['half_open']:,} "
            f"held half-open), {report['datagrams']:,} junk datagrams, "
            f"{report['bytes_sent'] / 1e6:,.1f} MB; HTTP answers: {answers or 'none'}"
        )

    def _count_stored(
        self,
        units: list[LoadUnit],
        result: LoadResult,
        since: datetime,
        started: datetime,
        settle: float,
    ) -> list[str]:
        """Print what the database holds of this run; returns the protocols short of it."""
        expected = result.records_acked + result.records_without_ack
        self.stdout.write("Counting stored positions...")
        windows = {name: child.fix_window for name, child in result.protocols.items()}
        stored = wait_for_stored(units, since, expected, windows=windows, settle=settle)
        short = []
        for name, child in result.protocols.items():
            found = stored.get(name, Stored(0, None))
            if child.records_without_ack:
                wanted, what = child.records_sent, "written (no acks in NMEA)"
            else:
                wanted, what = child.records_acked, "acked"
            span = (found.last_stored - started).total_seconds() if found.last_stored else 0.0
            rate = f", {found.count / span:,.0f}/s" if span > 0 else ""
            self.stdout.write(f"  stored {name:<9} {found.count:,} of {wanted:,} {what}{rate}")
            missing = wanted - found.count
            if missing > 0 and found.earlier >= missing:
                self.stdout.write(
                    f"    the other {missing:,} repeat fix times an earlier run stored "
                    f"({found.earlier:,} of its positions lie among this run's fix times): "
                    "acknowledged, and rightly not stored twice"
                )
            elif missing > 0:
                short.append(f"{name} {found.count:,} of {wanted:,}")
        return short


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
        written = (
            f"  NMEA records written {result.records_without_ack:,}"
            if result.records_without_ack
            else ""
        )
        self.write(
            f"{now - self.started:6.1f} s  connected {result.connected:,}/{result.units:,}  "
            f"records acked {result.records_acked:,}  {len(recent) / seconds:,.0f} acks/s  "
            f"{latency}{written}"
        )
