"""UDP listener for datagram protocols (Teltonika UDP): every packet names its unit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from django.db import Error as DatabaseError

from telematics import metrics
from telematics.ingest.directory import UnitDirectory
from telematics.ingest.logthrottle import BadInputLog
from telematics.ingest.pipeline import IngestPipeline, RecordsRefused
from telematics.protocols.base import Decoded, DecodeError

logger = logging.getLogger(__name__)
bad_input = BadInputLog(logger)


class DatagramListener(asyncio.DatagramProtocol):
    """Decodes each datagram, stores its records and only then sends the acknowledgement.

    While the database is down a packet is neither stored nor acknowledged: the unit
    sends it again, as it does for any lost UDP acknowledgement.
    """

    def __init__(self, protocol: str, decode: Callable[[bytes], Decoded],
                 pipeline: IngestPipeline, directory: UnitDirectory, max_in_flight: int = 2000):
        self.protocol = protocol
        self.decode = decode
        self.pipeline = pipeline
        self.directory = directory
        self.transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task] = set()
        self._max_in_flight = max_in_flight

    async def start(self, host: str, port: int) -> asyncio.DatagramTransport:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        return transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, packet: bytes, addr: tuple) -> None:
        if len(self._tasks) >= self._max_in_flight:  # shed load rather than grow unbounded
            metrics.ERRORS.labels(self.protocol).inc()
            return
        task = asyncio.get_running_loop().create_task(self._receive(packet, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _receive(self, packet: bytes, addr: tuple) -> None:
        arrived = time.monotonic()
        remote = f"{addr[0]}:{addr[1]}"
        try:
            decoded = self.decode(packet)
        except DecodeError as error:
            metrics.ERRORS.labels(self.protocol).inc()
            bad_input.warning(self.protocol, "Malformed %s datagram from %s (%s): %s",
                              self.protocol, remote, error, packet[:512].hex())
            return
        metrics.FRAMES.labels(self.protocol).inc()
        try:
            unit = await self.directory.authenticate(decoded.identifier or "", self.protocol,
                                                     remote)
        except DatabaseError as error:
            logger.warning("Cannot authenticate %s unit, database down: %s", self.protocol, error)
            return
        if unit is None:
            if decoded.refusal and self.transport is not None:
                self.transport.sendto(decoded.refusal, addr)
            return
        self.pipeline.attach_raw(decoded, packet)
        try:
            await self.pipeline.store(unit, self.protocol, decoded)
        except RecordsRefused as error:  # no acknowledgement: the unit sends it again
            metrics.ERRORS.labels(self.protocol).inc()
            logger.warning("%s datagram from %s not stored: %s", self.protocol, remote, error)
            return
        if decoded.reply and self.transport is not None:
            self.transport.sendto(decoded.reply, addr)
            metrics.ACK_LATENCY.labels(self.protocol).observe(time.monotonic() - arrived)
