"""Dispatch integration: two organisations (``fleets``, as the API tests), an ingest service
on free ports, a real local HTTP server for webhooks, and a Teltonika unit over TCP."""

from __future__ import annotations

import asyncio
import json
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from telematics.ingest.runner import start_ingest
from telematics.protocols.teltonika import crc16_ibm
from tests.api import conftest as api_fixtures
from tests.support import db

# The API tests' two organisations with people of every role, vehicles, units and keys.
fleets = api_fixtures.fleets
fresh_rate_limits = api_fixtures.fresh_rate_limits


@pytest.fixture
async def dispatch_ingest(fleets, settings):
    """Teltonika and GT06 listeners with the job tracker, the command dispatcher and the
    webhook worker, all as ``manage.py ingest`` starts them."""
    settings.INGEST_BATCH_WAIT_MS = 5
    protocols = ("teltonika", "gt06")
    service = await start_ingest(protocols, host="127.0.0.1",
                                 ports=dict.fromkeys(protocols, 0), mqtt_url="")
    yield service
    await service.stop()


async def track_jobs_now(service) -> None:
    """The job tracker re-reads which vehicles have open jobs every 2 s; now, please."""
    await db(service.pipeline.job_tracker.refresh)


async def wait_for(query, predicate=bool, timeout: float = 8.0):
    """Poll an ORM query (in a thread) until ``predicate(result)`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await db(query)
        if predicate(result) or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.1)


class TeltonikaUnit:
    """The unit side of a Teltonika TCP session."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, imei: str) -> TeltonikaUnit:
        from telematics.simulator.encoders import teltonika_login

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(teltonika_login(imei))
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"\x01"
        return cls(reader, writer)

    async def send_fixes(self, fixes) -> None:
        from telematics.simulator.encoders import teltonika_avl

        self.writer.write(teltonika_avl(fixes))
        ack = await asyncio.wait_for(self.reader.readexactly(4), 5)
        assert ack == struct.pack(">I", len(fixes))

    async def read_packet(self, timeout: float = 5.0) -> bytes:
        head = await asyncio.wait_for(self.reader.readexactly(8), timeout)
        (length,) = struct.unpack(">I", head[4:])
        return head + await asyncio.wait_for(self.reader.readexactly(length + 4), timeout)

    async def answer(self, text: str) -> None:
        """A Codec 12 response (type 0x06), as a unit answers a command."""
        payload = text.encode()
        body = bytes((0x0C, 1, 0x06)) + struct.pack(">I", len(payload)) + payload + b"\x01"
        self.writer.write(b"\x00" * 4 + struct.pack(">I", len(body)) + body
                          + struct.pack(">I", crc16_ibm(body)))
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


@dataclass
class Receiver:
    """What a webhook receiver saw: every request, and the answers it is told to give."""

    url: str
    requests: list[dict] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # consumed in order; then 200
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait(self, count: int, timeout: float = 10.0) -> list[dict]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)


@pytest.fixture
def receiver():
    """A real HTTP server on 127.0.0.1:<free port>, in a thread."""
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with state.arrived:
                status = state.answers.pop(0) if state.answers else 200
                state.requests.append({
                    "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body, "json": json.loads(body), "answered": status,
                })
                state.arrived.notify_all()
            answer = b'{"ok": true}' if status < 300 else b"receiver broke"
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/fleet"
    yield state
    server.shutdown()
    server.server_close()
