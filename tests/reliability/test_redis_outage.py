"""Redis (the channel layer) goes away: storing and acknowledging never pause."""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import pytest

from fleet.models import Organisation
from telematics.models import Position
from telematics.services import register_unit
from telematics.simulator.encoders import fix_at, teltonika_avl, teltonika_login
from tests.reliability.conftest import CuttableProxy, IngestProcess, database_url_via
from tests.reliability.test_database_outage import IMEI, read_exactly

REDIS_URL = os.environ.get("REDIS_URL", "")


@pytest.fixture
def unit(transactional_db):
    return register_unit(IMEI, "teltonika", Organisation.objects.create(name="Acme"), "Van 7")


@pytest.mark.skipif(not REDIS_URL, reason="REDIS_URL is not set (CI sets it)")
def test_acknowledgements_go_on_while_redis_is_down(unit, db_proxy):
    redis = urlparse(REDIS_URL)
    redis_proxy = CuttableProxy(redis.hostname or "127.0.0.1", redis.port or 6379)
    ingest = IngestProcess(database_url_via(db_proxy), extra_env={
        "REDIS_URL": f"redis://127.0.0.1:{redis_proxy.port}{redis.path or '/0'}"})
    try:
        sock = socket.create_connection(("127.0.0.1", ingest.ports["teltonika"]), timeout=5)
        sock.sendall(teltonika_login(IMEI))
        assert read_exactly(sock, 1) == b"\x01"
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        redis_proxy.cut()
        for i in range(5):
            began = time.monotonic()
            sock.sendall(teltonika_avl([fix_at(52.0 + i * 0.0001, 13.0,
                                               start + timedelta(seconds=i))]))
            assert read_exactly(sock, 4) == b"\x00\x00\x00\x01"
            assert time.monotonic() - began < 1.0
        redis_proxy.restore()
        sock.close()
        assert Position.objects.filter(device=unit).count() == 5
        assert ingest.process.poll() is None
    finally:
        ingest.stop()
        redis_proxy.close()
