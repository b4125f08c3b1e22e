"""The ingest process is killed (SIGKILL) while a unit streams to it, then restarted:
every record acknowledged to the unit is in the database, none twice, and the unit's
resend of what was not acknowledged is stored once."""

from __future__ import annotations

import signal
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from fleet.models import Organisation
from telematics.models import Position
from telematics.services import register_unit
from telematics.simulator.encoders import fix_at, teltonika_avl, teltonika_login
from tests.reliability.conftest import IngestProcess
from tests.reliability.test_database_outage import IMEI, read_exactly


@pytest.fixture
def unit(transactional_db):
    return register_unit(IMEI, "teltonika", Organisation.objects.create(name="Acme"), "Van 7")


def database_url() -> str:
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict["USER"] or "postgres"
    return f"postgres://{user}@{settings_dict['HOST'] or '127.0.0.1'}:" \
           f"{settings_dict['PORT'] or 5432}/{settings_dict['NAME']}"


class Unit:
    """A Teltonika unit that resends an unacknowledged packet after reconnecting."""

    def __init__(self) -> None:
        self.start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        self.next_record = 0
        self.acknowledged: list[datetime] = []
        self.unacknowledged: list[datetime] = []

    def packet(self, size: int = 5) -> tuple[bytes, list[datetime]]:
        times = [self.start + timedelta(seconds=self.next_record + i) for i in range(size)]
        fixes = [fix_at(52.0 + (self.next_record + i) * 1e-5, 13.0, t)
                 for i, t in enumerate(times)]
        return teltonika_avl(fixes), times

    def stream(self, port: int, stop: threading.Event, resend: bytes | None = None) -> bytes:
        """Send packets until the server goes away; returns the packet left unacknowledged."""
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            sock.sendall(teltonika_login(IMEI))
            assert read_exactly(sock, 1) == b"\x01"
            pending = resend
            while not stop.is_set():
                if pending is None:
                    pending, self.unacknowledged = self.packet()
                    self.next_record += len(self.unacknowledged)
                sock.sendall(pending)
                read_exactly(sock, 4)
                self.acknowledged += self.unacknowledged
                self.unacknowledged, pending = [], None
            return pending or b""
        except (ConnectionError, OSError):
            return pending or b""
        finally:
            sock.close()


def test_sigkill_under_load_loses_nothing_acknowledged(unit):
    url = database_url()
    device = IMEI
    first = IngestProcess(url)
    car = Unit()
    stop = threading.Event()
    leftover: list[bytes] = []
    worker = threading.Thread(
        target=lambda: leftover.append(car.stream(first.ports["teltonika"], stop)))
    worker.start()
    time.sleep(1.5)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    worker.join(10)
    acknowledged_before = len(car.acknowledged)
    assert acknowledged_before > 0, "the unit should have been acknowledged before the kill"

    second = IngestProcess(url)
    try:
        stop_after = threading.Timer(1.0, stop.set)
        stop_after.start()
        car.stream(second.ports["teltonika"], stop, resend=leftover[0] or None)
        stop_after.join()
    finally:
        second.stop()
    times = list(Position.objects.filter(device__identifier=device)
                 .values_list("fix_time", flat=True))
    assert len(times) == len(set(times)), "a record was stored twice"
    assert set(car.acknowledged) <= set(times), "an acknowledged record was lost"
    assert len(car.acknowledged) > acknowledged_before  # the unit carried on after restart
