"""One message from a unit that names itself in its address (``fleet/<id>/<kind>``).

MQTT, CoAP and the HTTP listener all receive such messages; this is the one place that
authenticates the unit, decodes the body by kind, keeps the good parts of a partly bad
body and stores them, so the three transports only translate the outcome into their own
answer (PUBACK, 2.04/4.00, 200/400).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass

from telematics import metrics
from telematics.can.dbc import DbcDecoder
from telematics.can.decoder import VehicleCanDecoder
from telematics.can.errors import CanDecodeError
from telematics.ingest.directory import Unit, UnitDirectory, authenticate_patiently
from telematics.ingest.logthrottle import BadInputLog
from telematics.ingest.messages import decode_unit_message
from telematics.ingest.pipeline import IngestPipeline, RecordsRefused
from telematics.protocols.base import DecodeError

logger = logging.getLogger(__name__)
bad_input = BadInputLog(logger)

STORED, BAD, REFUSED = "stored", "bad", "refused"


@dataclass(frozen=True)
class Outcome:
    status: str
    detail: str


async def receive_unit_message(
    pipeline: IngestPipeline, directory: UnitDirectory, protocol: str, identifier: str,
    kind: str, body: bytes, remote: str, secret: str | None = None,
) -> Outcome:
    arrived = time.monotonic()
    unit = await authenticate_patiently(directory, identifier, protocol, remote, secret)
    if unit is None:
        return Outcome(REFUSED, f"Unknown unit {identifier!r} (or wrong secret)")
    can_decoder = await pipeline.can_decoders.for_unit(unit) if kind == "can" else None
    try:
        decoded, errors = decode_unit_message(kind, body, can_decoder)
    except DecodeError as error:
        metrics.ERRORS.labels(protocol).inc()
        bad_input.warning(protocol, "Bad %s %s message from %s: %s (%s)", protocol, kind,
                          identifier, error, body[:256].hex())
        return Outcome(BAD, str(error))
    metrics.FRAMES.labels(protocol).inc()
    if errors:
        metrics.ERRORS.labels(protocol).inc(len(errors))
        bad_input.warning(protocol, "Bad parts of a %s %s message from %s: %s", protocol,
                          kind, identifier, "; ".join(errors[:5]))
    pipeline.attach_raw(decoded, body)
    try:
        await pipeline.store(unit, protocol, decoded)
    except RecordsRefused as error:
        metrics.ERRORS.labels(protocol).inc()
        return Outcome(BAD, f"Not stored: {error}")
    metrics.ACK_LATENCY.labels(protocol).observe(time.monotonic() - arrived)
    stored = len(decoded.fixes) + len(decoded.samples) + len(decoded.faults)
    detail = f"{stored} records stored"
    if errors:
        detail += f"; {len(errors)} bad: " + "; ".join(errors[:5])
    return Outcome(STORED, detail)


class CanDecoderCache:
    """One CAN decoder per vehicle (it keeps multi-frame transfers), with the vehicle's DBC.

    A DBC uploaded, changed or unassigned (API or admin, in any process) takes effect
    within ``check_seconds``: that often one cheap query fingerprints all DBC uploads and
    assignments, and when it changes every vehicle re-reads its DBC on its next frame. A
    vehicle whose DBC did not change keeps its decoder (and any BAM transfer under way).
    ``refresh_seconds`` re-reads a vehicle's DBC regardless, as a backstop. Vehicles that
    share a DBC share one parsed decoder, so a big file is parsed once.
    """

    def __init__(self, executor: Executor, refresh_seconds: float = 300.0,
                 check_seconds: float = 2.0):
        self._executor = executor
        self._refresh = refresh_seconds
        self.check_seconds = check_seconds
        self._checked_at = float("-inf")
        self._fingerprint: tuple | None = None
        self._decoders: dict[int, tuple[float, object, VehicleCanDecoder]] = {}
        self._dbc_decoders: dict[object, DbcDecoder | None] = {}

    async def for_unit(self, unit: Unit) -> VehicleCanDecoder:
        key = unit.vehicle_id or -unit.device_id
        now = time.monotonic()
        loop = asyncio.get_running_loop()
        if now - self._checked_at >= self.check_seconds:
            self._checked_at = now
            fingerprint = await loop.run_in_executor(self._executor, _fingerprint_in_thread)
            if fingerprint is not None and fingerprint != self._fingerprint:
                if self._fingerprint is not None:  # something changed: re-read on next use
                    self._decoders = {k: (float("-inf"), stamp, decoder)
                                      for k, (_, stamp, decoder) in self._decoders.items()}
                    self._dbc_decoders.clear()
                self._fingerprint = fingerprint
        cached = self._decoders.get(key)
        if cached is not None and now - cached[0] < self._refresh:
            return cached[2]
        dbc_row = (
            await loop.run_in_executor(self._executor, _dbc_in_thread, unit.vehicle_id)
            if unit.vehicle_id else None
        )
        stamp = dbc_row[0] if dbc_row else None
        if cached is not None and cached[1] == stamp:
            decoder = cached[2]
        else:
            dbc = None
            if dbc_row:
                if stamp not in self._dbc_decoders:  # parse off the event loop
                    self._dbc_decoders[stamp] = await loop.run_in_executor(
                        self._executor, build_dbc_decoder, dbc_row)
                dbc = self._dbc_decoders[stamp]
            decoder = VehicleCanDecoder(dbc=dbc)
        self._decoders[key] = (now, stamp, decoder)
        return decoder


def _fingerprint_in_thread() -> tuple | None:
    from django.db import DatabaseError

    from telematics.ingest.connections import drop_broken_connection

    drop_broken_connection()
    try:
        return dbc_fingerprint()
    except DatabaseError:  # the store reports an outage; decoding carries on as it was
        logger.debug("DBC fingerprint not read", exc_info=True)
        return None


def dbc_fingerprint() -> tuple:
    """Changes whenever a DBC file is uploaded, edited, deleted or (un)assigned."""
    from django.db.models import Count, Max

    from telematics.models import DbcFile

    files = DbcFile.objects.aggregate(n=Count("id"), last=Max("uploaded"), top=Max("id"))
    links = DbcFile.vehicles.through.objects.aggregate(n=Count("id"), top=Max("id"))
    return (files["n"], files["last"], files["top"], links["n"], links["top"])


def _dbc_in_thread(vehicle_id: int) -> tuple | None:
    from telematics.ingest.connections import drop_broken_connection

    drop_broken_connection()
    return dbc_for_vehicle(vehicle_id)


def dbc_for_vehicle(vehicle_id: int) -> tuple | None:
    """The vehicle's newest DBC upload as (stamp, name, text, mapping), or None."""
    from telematics.models import DbcFile

    dbc = DbcFile.objects.filter(vehicles=vehicle_id).order_by("-uploaded").first()
    if dbc is None:
        return None
    return ((dbc.pk, dbc.uploaded), dbc.name, dbc.dbc_text, dbc.mapping)


def build_dbc_decoder(row: tuple) -> DbcDecoder | None:
    """A decoder for a DBC upload; None (and an error logged) when it no longer loads."""
    _stamp, name, text, mapping = row
    try:
        return DbcDecoder(text, mapping or {})
    except CanDecodeError as error:
        logger.error("DBC file %r cannot be used: %s", name, error)
        return None
