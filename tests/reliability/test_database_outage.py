"""PostgreSQL goes away under a connected unit: nothing is acknowledged until it is back,
the connection stays up, storing resumes by itself and nothing is stored twice."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta

import pytest

from fleet.models import Organisation
from telematics.models import Position
from telematics.services import register_unit
from telematics.simulator.encoders import fix_at, teltonika_avl, teltonika_login
from tests.reliability.conftest import IngestProcess, database_url_via

IMEI = "356307042441013"


@pytest.fixture
def unit(transactional_db):
    return register_unit(IMEI, "teltonika", Organisation.objects.create(name="Acme"), "Van 7")


def read_exactly(sock: socket.socket, size: int) -> bytes:
    received = b""
    while len(received) < size:
        chunk = sock.recv(size - len(received))
        if not chunk:
            raise ConnectionError("the ingest process hung up")
        received += chunk
    return received


def test_outage_holds_acknowledgements_and_resumes(unit, db_proxy):
    ingest = IngestProcess(database_url_via(db_proxy))
    try:
        sock = socket.create_connection(("127.0.0.1", ingest.ports["teltonika"]), timeout=5)
        sock.sendall(teltonika_login(IMEI))
        assert read_exactly(sock, 1) == b"\x01"
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
        sock.sendall(teltonika_avl([fix_at(52.0, 13.0, start)]))
        assert read_exactly(sock, 4) == b"\x00\x00\x00\x01"

        db_proxy.cut()
        sock.sendall(teltonika_avl([fix_at(52.0001, 13.0, start + timedelta(seconds=i))
                                    for i in range(1, 6)]))
        sock.settimeout(3)
        with pytest.raises(TimeoutError):  # stored nowhere, so acknowledged never
            sock.recv(4)

        db_proxy.restore()
        sock.settimeout(30)
        began = time.monotonic()
        assert read_exactly(sock, 4) == b"\x00\x00\x00\x05"  # same connection, no resend
        assert time.monotonic() - began < 20
        assert Position.objects.filter(device=unit).count() == 6
        sock.close()
        assert ingest.process.poll() is None, "the ingest process must survive the outage"
        assert any("Database is back" in line for line in ingest.log)
    finally:
        ingest.stop()
