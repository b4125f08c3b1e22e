"""Real processes and real outages: an ingest subprocess, a cuttable link to PostgreSQL.

The ingest process reaches the test database through a TCP proxy on loopback that the
test can cut and restore, so a database outage is a real one as the process sees it
(connections reset, new ones refused) without stopping the PostgreSQL server that other
test runs and the demo may share.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


class CuttableProxy:
    """Forwards loopback TCP connections to a target until cut."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.cut_off = False
        self._pairs: set[asyncio.StreamWriter] = set()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _accept(self, reader, writer) -> None:
        if self.cut_off:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._pairs.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader, writer) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._pairs.discard(writer)
            writer.close()

    def cut(self) -> None:
        def close_all() -> None:
            self.cut_off = True
            for writer in list(self._pairs):
                writer.transport.abort()
            self._pairs.clear()

        self.loop.call_soon_threadsafe(close_all)

    def restore(self) -> None:
        self.loop.call_soon_threadsafe(setattr, self, "cut_off", False)

    def close(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class IngestProcess:
    """``manage.py ingest`` in its own process; ports read back from its log."""

    def __init__(self, database_url: str, protocols: str = "teltonika", extra_env=None):
        env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": "reliability-test",
               "TELTONIKA_PORT": "0", "GT06_PORT": "0", "NMEA_PORT": "0",
               "OSMAND_PORT": "0", "COAP_PORT": "0", "INGEST_BIND": "127.0.0.1",
               "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "ingest", "--protocols", protocols,
             "--metrics-port", "0"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.log: list[str] = []
        self.ports: dict[str, int] = {}
        self._ready = threading.Event()
        wanted = set(protocols.split(","))
        self._wanted_ports = len(wanted & {"teltonika", "gt06", "nmea"})
        self._wants_mqtt = "mqtt" in wanted
        self._mqtt_ready = False
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(30):
            self.stop()
            raise RuntimeError("ingest did not start:\n" + "".join(self.log[-30:]))

    def _read(self) -> None:
        for line in self.process.stdout:
            self.log.append(line)
            match = re.search(r"(\w+) listening on [\d.]+:(\d+)/tcp", line)
            if match:
                self.ports[match.group(1)] = int(match.group(2))
            self._mqtt_ready = self._mqtt_ready or "MQTT subscribed" in line
            if len(self.ports) >= self._wanted_ports and (
                    self._mqtt_ready or not self._wants_mqtt):
                self._ready.set()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL; CI does)")


@pytest.fixture
def db_proxy(postgres_only):
    settings_dict = connection.settings_dict
    proxy = CuttableProxy(settings_dict["HOST"] or "127.0.0.1", int(settings_dict["PORT"] or 5432))
    yield proxy
    proxy.close()


def database_url_via(proxy: CuttableProxy) -> str:
    settings_dict = connection.settings_dict
    user = settings_dict["USER"] or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict["PASSWORD"] else ""
    return f"postgres://{user}{password}@127.0.0.1:{proxy.port}/{settings_dict['NAME']}"
