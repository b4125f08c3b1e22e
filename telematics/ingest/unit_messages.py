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
from telematics.ingest.messages import decode_unit_message
from telematics.ingest.pipeline import IngestPipeline
from telematics.protocols.base import DecodeError

logger = logging.getLogger(__name__)

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
        logger.warning("Bad %s %s message from %s: %s (%s)", protocol, kind, identifier, error,
                       body[:256].hex())
        return Outcome(BAD, str(error))
    metrics.FRAMES.labels(protocol).inc()
    if errors:
        metrics.ERRORS.labels(protocol).inc(len(errors))
        logger.warning("Bad parts of a %s %s message from %s: %s", protocol, kind, identifier,
                       "; ".join(errors[:5]))
    pipeline.attach_raw(decoded, body)
    await pipeline.store(unit, protocol, decoded)
    metrics.ACK_LATENCY.labels(protocol).observe(time.monotonic() - arrived)
    stored = len(decoded.fixes) + len(decoded.samples) + len(decoded.faults)
    detail = f"{stored} records stored"
    if errors:
        detail += f"; {len(errors)} bad: " + "; ".join(errors[:5])
    return Outcome(STORED, detail)


class CanDecoderCache:
    """One CAN decoder per vehicle (it keeps multi-frame transfers), with the vehicle's DBC.

    The DBC assignment is re-read every ``refresh_seconds`` so an upload takes effect
    without restarting the ingest.
    """

    def __init__(self, executor: Executor, refresh_seconds: float = 300.0):
        self._executor = executor
        self._refresh = refresh_seconds
        self._decoders: dict[int, tuple[float, object, VehicleCanDecoder]] = {}

    async def for_unit(self, unit: Unit) -> VehicleCanDecoder:
        key = unit.vehicle_id or -unit.device_id
        now = time.monotonic()
        cached = self._decoders.get(key)
        if cached is not None and now - cached[0] < self._refresh:
            return cached[2]
        loop = asyncio.get_running_loop()
        dbc_row = (
            await loop.run_in_executor(self._executor, _dbc_in_thread, unit.vehicle_id)
            if unit.vehicle_id else None
        )
        stamp = dbc_row[0] if dbc_row else None
        if cached is not None and cached[1] == stamp:
            decoder = cached[2]
        else:
            decoder = VehicleCanDecoder(dbc=build_dbc_decoder(dbc_row) if dbc_row else None)
        self._decoders[key] = (now, stamp, decoder)
        return decoder


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
