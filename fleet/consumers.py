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

from fleet.live import organisation_group, vehicle_snapshot, with_status
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

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.flush_interval)
        pending, self.pending = self.pending, {}
        self.flush_task = None
        now = datetime.now(UTC)
        await self.send_json({
            "type": "update", "vehicles": [with_status(v, now) for v in pending.values()],
        })

    @database_sync_to_async
    def _organisation_ids(self, user) -> list[int]:
        return list(organisations_visible_to(user).values_list("pk", flat=True))

    @database_sync_to_async
    def _vehicles(self, user) -> tuple[set[int], list[dict]]:
        vehicles = list(
            vehicles_visible_to(user).select_related("state", "default_driver").order_by("name")
        )
        now = datetime.now(UTC)
        return {v.pk for v in vehicles}, [vehicle_snapshot(v, now) for v in vehicles]
