"""Who is a unit: authenticating identifiers and recording the unknown ones.

Lookups are cached for a short while so a unit that logs in on every packet (UDP, HTTP,
MQTT) costs one database query a minute, not one a packet; deactivating a device takes
effect within that time. Unknown identifiers are recorded at most once per throttle
window each, so a misconfigured unit hammering the port cannot hammer the database.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import Error as DatabaseError
from django.db import transaction
from django.db.models import F

from telematics import metrics
from telematics.ingest.connections import drop_broken_connection
from telematics.models import Device, UnknownUnit

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Unit:
    """An authenticated unit, as the pipeline needs it (no ORM object on the hot path)."""

    device_id: int
    identifier: str
    organisation_id: int
    vehicle_id: int | None
    secret: str


class UnitDirectory:
    def __init__(self, executor: Executor, cache_seconds: float = 60.0,
                 unknown_throttle_seconds: float = 30.0):
        self._executor = executor
        self._cache_seconds = cache_seconds
        self._unknown_throttle = unknown_throttle_seconds
        self._cache: dict[str, tuple[float, Unit | None]] = {}
        self._unknown_seen: dict[tuple[str, str], float] = {}

    async def authenticate(
        self, identifier: str, protocol: str, remote: str, secret: str | None = None
    ) -> Unit | None:
        """The registered, active unit with this identifier, or None (refused and recorded).

        A unit with a secret must present it (compared in constant time). Database
        errors propagate: the caller must neither refuse nor accept while it is down.
        """
        unit = await self._lookup(identifier)
        if unit is None:
            metrics.REFUSED.labels(protocol).inc()
            await self._record_unknown(identifier, protocol, remote)
            return None
        if unit.secret and not hmac.compare_digest(unit.secret.encode(), (secret or "").encode()):
            metrics.REFUSED.labels(protocol).inc()
            logger.warning("Unit %s from %s presented a wrong secret", identifier, remote)
            return None
        return unit

    async def refresh(self, unit: Unit) -> Unit | None:
        """The unit as registered now (from the cache while it is fresh), None if gone.

        A TCP unit authenticates once per connection; the pipeline calls this for every
        frame so that a device moved to another vehicle, or deactivated, takes effect
        within the cache time on an open connection too. The secret was checked at login.
        """
        return await self._lookup(unit.identifier)

    def forget(self, identifier: str | None = None) -> None:
        """Drop cached lookups (all, or one unit's), e.g. after registering a unit."""
        if identifier is None:
            self._cache.clear()
        else:
            self._cache.pop(identifier, None)

    async def _lookup(self, identifier: str) -> Unit | None:
        now = time.monotonic()
        cached = self._cache.get(identifier)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached[1]
        loop = asyncio.get_running_loop()
        unit = await loop.run_in_executor(self._executor, _load_unit, identifier)
        self._cache[identifier] = (now, unit)
        return unit

    async def _record_unknown(self, identifier: str, protocol: str, remote: str) -> None:
        key = (identifier, protocol)
        now = time.monotonic()
        last = self._unknown_seen.get(key)
        if last is not None and now - last < self._unknown_throttle:
            return
        self._unknown_seen[key] = now
        if len(self._unknown_seen) > 100_000:  # bounded memory under a scan of random ids
            self._unknown_seen.clear()
        logger.warning("Refused unknown %s unit %s from %s", protocol, identifier, remote)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._executor, _record_unknown_unit, identifier, protocol, remote
        )


def _load_unit(identifier: str) -> Unit | None:
    drop_broken_connection()
    row = (
        Device.objects.filter(identifier=identifier, active=True)
        .values_list("pk", "organisation_id", "vehicle_id", "secret")
        .first()
    )
    if row is None:
        return None
    return Unit(row[0], identifier, row[1], row[2], row[3])


def _record_unknown_unit(identifier: str, protocol: str, remote: str) -> None:
    drop_broken_connection()
    now = datetime.now(UTC)
    identifier = identifier[:64]
    with transaction.atomic():
        updated = UnknownUnit.objects.filter(identifier=identifier, protocol=protocol).update(
            last_seen=now, remote_address=remote[:100], attempts=F("attempts") + 1
        )
        if not updated:
            UnknownUnit.objects.get_or_create(
                identifier=identifier, protocol=protocol,
                defaults={"remote_address": remote[:100], "first_seen": now, "last_seen": now},
            )


async def authenticate_patiently(directory: UnitDirectory, identifier: str, protocol: str,
                                 remote: str, secret: str | None = None) -> Unit | None:
    """Authenticate, waiting out a database outage instead of refusing or accepting."""
    delay = 0.5
    while True:
        try:
            return await directory.authenticate(identifier, protocol, remote, secret)
        except DatabaseError as error:
            logger.warning("Cannot authenticate %s unit %s, database down: %s",
                           protocol, identifier, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
