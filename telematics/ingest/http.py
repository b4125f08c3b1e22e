"""The unit HTTP listener, as a tiny ASGI app: the OsmAnd protocol (Traccar Client app
and many trackers) on any path, and ``POST /fleet/<identifier>/<kind>`` for units that
send the platform's own bodies (JSON positions, NMEA lines, CAN frames) over HTTP.

It runs under uvicorn in the ingest process, apart from the Django site, so a flood of
unit requests never competes with the dashboard's workers. Answers: 200 once stored,
400 with a plain-text message for anything wrong with the request (missing or unknown
id, bad values), 413 for an oversized body.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qsl

from django.db import Error as DatabaseError

from telematics import metrics
from telematics.ingest.directory import UnitDirectory
from telematics.ingest.messages import parse_topic
from telematics.ingest.pipeline import IngestPipeline, RecordsRefused
from telematics.ingest.unit_messages import BAD, STORED, receive_unit_message
from telematics.protocols.base import DecodeError
from telematics.protocols.osmand import decode_request

logger = logging.getLogger(__name__)


class QueryParams(dict):
    """Last value per name, plus ``getlist`` for the repeated ones (cell, wifi)."""

    def __init__(self, pairs: list[tuple[str, str]]):
        super().__init__(pairs)
        self._lists: dict[str, list[str]] = {}
        for key, value in pairs:
            self._lists.setdefault(key, []).append(value)

    def getlist(self, key: str) -> list[str]:
        return self._lists.get(key, [])


class OsmandApp:
    protocol = "osmand"

    def __init__(self, pipeline: IngestPipeline, directory: UnitDirectory,
                 max_body: int = 65536):
        self.pipeline = pipeline
        self.directory = directory
        self.max_body = max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        status, text = await self._answer(scope, receive)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
        await send({"type": "http.response.body", "body": text.encode()})

    async def _answer(self, scope, receive) -> tuple[int, str]:
        arrived = time.monotonic()
        client = scope.get("client") or ("?", 0)
        remote = f"{client[0]}:{client[1]}"
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > self.max_body:
                metrics.ERRORS.labels(self.protocol).inc()
                return 413, f"Request body over {self.max_body} bytes\n"
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                          keep_blank_values=True)
        secret = next((v for k, v in pairs if k == "secret"), None)
        authorization = headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            secret = authorization[7:].strip()
        path = scope.get("path", "/")
        if path.startswith("/fleet/"):
            return await self._unit_message(path, scope["method"], bytes(body), remote, secret)
        query = QueryParams([(k, v) for k, v in pairs if k != "secret"])
        try:
            decoded = decode_request(query, bytes(body), headers.get("content-type", ""))
        except DecodeError as error:
            metrics.ERRORS.labels(self.protocol).inc()
            logger.info("Bad OsmAnd request from %s: %s", remote, error)
            return 400, f"{error}\n"
        metrics.FRAMES.labels(self.protocol).inc()
        try:
            unit = await self.directory.authenticate(decoded.identifier or "", self.protocol,
                                                     remote, secret)
        except DatabaseError:
            return 503, "Storage unavailable, send again later\n"
        if unit is None:
            return 400, f"Unknown device id {decoded.identifier!r} (or wrong secret)\n"
        try:
            await self.pipeline.store(unit, self.protocol, decoded)
        except RecordsRefused as error:
            metrics.ERRORS.labels(self.protocol).inc()
            return 400, f"Not stored: {error}\n"
        metrics.ACK_LATENCY.labels(self.protocol).observe(time.monotonic() - arrived)
        return 200, "OK\n"

    async def _unit_message(self, path: str, method: str, body: bytes, remote: str,
                            secret: str | None) -> tuple[int, str]:
        """``POST /fleet/<identifier>/<kind>``: the same bodies MQTT and CoAP units send."""
        target = parse_topic(path.strip("/"))
        if target is None:
            return 404, "Use /fleet/<identifier>/position, /nmea or /can\n"
        if method != "POST":
            return 405, "Use POST\n"
        outcome = await receive_unit_message(self.pipeline, self.directory, "http", target[0],
                                             target[1], body, remote, secret)
        status = {STORED: 200, BAD: 400}.get(outcome.status, 401)
        return status, outcome.detail + "\n"
