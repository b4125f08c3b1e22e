"""TCP listeners for stream protocols (Teltonika, GT06, NMEA).

A connection only frames bytes, authenticates the unit a frame names, hands records to
the pipeline and sends the decoder's reply once they are stored. Everything about the
protocol lives in its session class (``telematics.protocols``). A malformed frame is
logged with its hex and counted; the connection carries on with the next frame. An
oversized frame, an unknown unit or a silent connection ends only that connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Protocol

from telematics import metrics
from telematics.ingest.directory import Unit, UnitDirectory, authenticate_patiently
from telematics.ingest.logthrottle import BadInputLog
from telematics.ingest.pipeline import IngestPipeline, RecordsRefused
from telematics.protocols.base import Decoded, DecodeError, FrameTooLarge

logger = logging.getLogger(__name__)
bad_input = BadInputLog(logger)

FLUSH_AFTER_SECONDS = 2.0  # a line protocol's pending fix is stored after this much quiet


class StreamSession(Protocol):
    def split(self, buffer: bytearray) -> list[bytes]: ...
    def decode(self, frame: bytes) -> Decoded: ...


class StreamListener:
    def __init__(
        self,
        protocol: str,
        session_factory: Callable[[], StreamSession],
        pipeline: IngestPipeline,
        directory: UnitDirectory,
        *,
        idle_timeout: float = 600.0,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.protocol = protocol
        self.session_factory = session_factory
        self.pipeline = pipeline
        self.directory = directory
        self.idle_timeout = idle_timeout
        self.ssl_context = ssl_context
        self.connections: dict[asyncio.StreamWriter, Unit | None] = {}
        # Called with (protocol, unit) once a unit is authenticated (queued commands).
        self.login_hooks: list[Callable[[str, Unit], None]] = []

    async def start(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(
            self._serve, host, port, ssl=self.ssl_context, limit=1 << 20
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        remote = f"{peer[0]}:{peer[1]}" if peer else "?"
        metrics.CONNECTIONS.labels(self.protocol).inc()
        metrics.OPEN_CONNECTIONS.labels(self.protocol).inc()
        self.connections[writer] = None
        try:
            await self._converse(reader, writer, remote)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except RecordsRefused as error:  # not acknowledged; the unit resends after reconnecting
            metrics.ERRORS.labels(self.protocol).inc()
            logger.warning("Closing %s connection from %s: %s", self.protocol, remote, error)
        except Exception:
            logger.exception("%s connection from %s failed", self.protocol, remote)
        finally:
            metrics.OPEN_CONNECTIONS.labels(self.protocol).dec()
            self.connections.pop(writer, None)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        remote: str) -> None:
        session = self.session_factory()
        flush = getattr(session, "flush", None)
        buffer = bytearray()
        unit: Unit | None = None
        quiet = 0.0
        while True:
            wait = FLUSH_AFTER_SECONDS if flush is not None else self.idle_timeout
            try:
                # asyncio.timeout, not wait_for: no extra task per read, which counts at
                # ten thousand connections each reading once a second.
                async with asyncio.timeout(wait):
                    chunk = await reader.read(65536)
            except TimeoutError:
                quiet += wait
                if flush is not None:
                    await self._store(unit, flush(), writer, remote, time.monotonic())
                if quiet >= self.idle_timeout:
                    logger.info("Closing idle %s connection from %s", self.protocol, remote)
                    return
                continue
            quiet = 0.0
            if not chunk:
                if flush is not None:
                    await self._store(unit, flush(), writer, remote, time.monotonic())
                return
            arrived = time.monotonic()
            buffer += chunk
            try:
                frames = session.split(buffer)
            except FrameTooLarge as error:
                metrics.ERRORS.labels(self.protocol).inc()
                bad_input.warning(self.protocol, "%s frame too large from %s: %s (first bytes %s)",
                                  self.protocol, remote, error, bytes(buffer[:32]).hex())
                return
            # Records of frames that expect no reply (NMEA lines) wait here and are stored
            # together, once per chunk: one commit for a burst instead of one per line.
            unanswered = Decoded()
            for frame in frames:
                try:
                    decoded = session.decode(frame)
                except DecodeError as error:
                    metrics.ERRORS.labels(self.protocol).inc()
                    bad_input.warning(self.protocol, "Malformed %s frame from %s (%s): %s",
                                      self.protocol, remote, error, frame[:512].hex())
                    continue
                metrics.FRAMES.labels(self.protocol).inc()
                self.pipeline.attach_raw(decoded, frame)
                if decoded.identifier is not None:
                    await self._store(unit, unanswered, writer, remote, arrived)
                    unanswered = Decoded()
                    unit = await authenticate_patiently(
                        self.directory, decoded.identifier, self.protocol, remote
                    )
                    if unit is None:
                        if decoded.refusal:
                            writer.write(decoded.refusal)
                            await writer.drain()
                        return
                    self.connections[writer] = unit
                    for hook in self.login_hooks:
                        hook(self.protocol, unit)
                unanswered.fixes += decoded.fixes
                unanswered.responses += decoded.responses
                unanswered.events += decoded.events
                if decoded.reply:
                    unanswered.reply = decoded.reply
                    await self._store(unit, unanswered, writer, remote, arrived)
                    unanswered = Decoded()
            await self._store(unit, unanswered, writer, remote, arrived)

    async def _store(self, unit: Unit | None, decoded: Decoded,
                     writer: asyncio.StreamWriter, remote: str, arrived: float) -> None:
        """Store the records, then send the decoder's reply."""
        if decoded.fixes or decoded.responses or decoded.events:
            if unit is None:
                if not (decoded.fixes or decoded.responses):
                    return  # a login's own event, or status before it: nothing to keep
                metrics.ERRORS.labels(self.protocol).inc()
                logger.warning("%s records from %s before the unit identified itself; "
                               "dropped", self.protocol, remote)
                return
            await self.pipeline.store(unit, self.protocol, decoded)
        if decoded.reply:
            writer.write(decoded.reply)
            await writer.drain()
            metrics.ACK_LATENCY.labels(self.protocol).observe(time.monotonic() - arrived)

    def close_connections(self) -> None:
        """Hang up on every unit (at shutdown: they reconnect to another process)."""
        for writer in list(self.connections):
            writer.close()

    async def send_command(self, identifier: str, payload: bytes) -> bool:
        """Write a command to the unit's open connection; False when it is not connected."""
        for writer, unit in list(self.connections.items()):
            if unit is not None and unit.identifier == identifier:
                writer.write(payload)
                await writer.drain()
                return True
        return False


def server_ssl_context(cert_path: str, key_path: str) -> ssl.SSLContext | None:
    """A TLS context for the unit listeners, or None when no certificate is configured."""
    if not cert_path:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path or None)
    return context
