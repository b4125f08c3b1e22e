"""The live websocket (``/ws/live/``): vehicle states pushed as the ingest stores fixes.

The ingest pipeline sends one ``vehicles.update`` message per organisation per stored
batch (never one per fix, which a Redis channel layer could not keep up with); each
client receives only the vehicles its user may see.

A browser is told ``{"type": "snapshot", "vehicles": [...]}`` once, then
``{"type": "update", "vehicles": [...]}`` at most ``FLUSH_INTERVAL_S`` apart: updates are
collected per client and only the newest state of each changed vehicle is sent, so a
busy fleet costs a browser four small messages a second rather than one per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from fleet.live import (
    organisation_group,
    positions_hidden_from,
    vehicle_snapshot,
    with_status,
    without_position,
)
from fleet.selectors import organisations_visible_to, vehicles_visible_to

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.25


def _is_newer(update: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether ``update`` is at least as new as ``current`` (several ingest processes
    may publish out of order)."""
    try:
        return datetime.fromisoformat(update["fix_time"]) >= datetime.fromisoformat(
            current["fix_time"])
    except (KeyError, TypeError, ValueError):
        return True


def _fix_time(update: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(update["fix_time"])
    except (KeyError, TypeError, ValueError):
        return None


def _log_failure(task: asyncio.Task) -> None:
    """A flush runs beside the consumer, so nothing else would hear it fail."""
    if not task.cancelled() and task.exception() is not None:
        logger.warning("Sending a live update failed", exc_info=task.exception())


class LiveConsumer(AsyncJsonWebsocketConsumer):
    groups: list[str]
    flush_interval = FLUSH_INTERVAL_S

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.user = user
        self.pending: dict[int, dict[str, Any]] = {}
        self.flush_task: asyncio.Task | None = None
        # Join the groups before reading the snapshot, so that a fix stored in between
        # arrives as an update instead of being lost.
        self.groups = [organisation_group(pk) for pk in await self._organisation_ids(user)]
        for group in self.groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.visible_vehicle_ids, initial = await self._vehicles(user)
        await self.accept()
        await self.send_json({
            "type": "snapshot", "vehicles": initial,
            "server_time": datetime.now(UTC).isoformat(),
        })

    async def disconnect(self, code: int) -> None:
        task = getattr(self, "flush_task", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for group in getattr(self, "groups", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def vehicles_update(self, event: dict) -> None:
        for vehicle in event["vehicles"]:
            if vehicle["id"] not in self.visible_vehicle_ids:
                continue
            current = self.pending.get(vehicle["id"])
            if current is None or _is_newer(vehicle, current):
                self.pending[vehicle["id"]] = vehicle
        if self.pending and self.flush_task is None:
            self.flush_task = asyncio.create_task(self._flush_later())
            self.flush_task.add_done_callback(_log_failure)

    async def events_new(self, event: dict) -> None:
        """Alerts and other events (telematics.alerts.worker), sent on at once; those of
        a vehicle whose position the user may not see now say nothing of where it is."""
        events = [e for e in event["events"]
                  if e.get("vehicle") is None or e["vehicle"] in self.visible_vehicle_ids]
        if events:
            events = await self._events_without_places(events)
        if events:
            await self.send_json({"type": "events", "events": events})

    @database_sync_to_async
    def _events_without_places(self, events: list[dict]) -> list[dict]:
        from telematics.alerts.presentation import without_place

        latest = {e["vehicle"]: _fix_time({"fix_time": e["time"].replace("Z", "+00:00")})
                  for e in events if e.get("vehicle") is not None}
        hidden = positions_hidden_from(self.user, latest)
        return [e for e in (without_place(e) if e.get("vehicle") in hidden else e
                            for e in events) if e is not None]

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.flush_interval)
        pending, self.pending = self.pending, {}
        self.flush_task = None
        hidden = await self._hidden({pk: _fix_time(v) for pk, v in pending.items()})
        now = datetime.now(UTC)
        await self.send_json({
            "type": "update",
            "vehicles": [without_position(with_status(v, now), v["id"] in hidden)
                         for v in pending.values()],
        })

    @database_sync_to_async
    def _hidden(self, latest: dict[int, datetime | None]) -> set[int]:
        """Vehicles on a private trip (logbook/README.md): sent without a position."""
        return positions_hidden_from(self.user, latest)

    @database_sync_to_async
    def _organisation_ids(self, user) -> list[int]:
        return list(organisations_visible_to(user).values_list("pk", flat=True))

    @database_sync_to_async
    def _vehicles(self, user) -> tuple[set[int], list[dict]]:
        vehicles = list(
            vehicles_visible_to(user).select_related("state", "default_driver").order_by("name")
        )
        now = datetime.now(UTC)
        hidden = positions_hidden_from(user, {
            v.pk: getattr(getattr(v, "state", None), "fix_time", None) for v in vehicles})
        return {v.pk for v in vehicles}, [
            without_position(vehicle_snapshot(v, now), v.pk in hidden) for v in vehicles]
