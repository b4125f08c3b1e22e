"""The live websocket (``/ws/live/``): vehicle states pushed as the ingest stores fixes.

The ingest pipeline sends one ``vehicles.update`` message per organisation per stored
batch (never one per fix, which a Redis channel layer could not keep up with); each
client receives only the vehicles its user may see.

A browser is told ``{"type": "snapshot", "vehicles": [...]}`` once, then
``{"type": "update", "vehicles": [...]}`` at most ``FLUSH_INTERVAL_S`` apart: updates are
collected and only the newest state of each changed vehicle is sent, so a busy fleet
costs a browser four small messages a second rather than one per batch.

Fan-out happens once per process, not once per browser (``LiveHub``): each web process
has one channel per organisation that has browsers connected to it, in that
organisation's group, so a stored batch crosses Redis once per process rather than once
per browser, and each flush is prepared once for all of them: statuses, the vehicles
that could be on a private trip (one query, shared, ``CANDIDATES_TTL_S``), and the
encoded message for every browser that sees the whole fleet and nothing hidden. Only a
browser with something to hide (or a driver's subset) costs work of its own. Measured
in ``benchmarks/bench_fanout.py``: one channel per browser and a privacy query per
browser per flush could not keep up with 50 browsers at 5,000 positions a second.

The consumers themselves have no channel (``channel_layer_alias``): the hub receives
for them, and retries a receive that the Redis client timed out (redis-py 8 reads with
a 5 s timeout, exactly the channel layer's blocking pop, so an idle receive may fail;
the hub just receives again, where a consumer's own receive would have died with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from datetime import UTC, datetime
from typing import Any, ClassVar

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer

from fleet.live import (
    live_snapshots_for,
    may_be_hidden_in,
    organisation_group,
    positions_hidden_from,
    with_status,
    without_position,
)
from fleet.selectors import organisations_visible_to, vehicles_visible_to

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.25
# How long the organisation's vehicles that could be on a private trip are reused (and,
# while a refresh is slow, at most how old they may get). A vehicle becomes one when a
# trip of it is stored (minutes after it came to rest, its position shown all that
# while, as logbook/README.md says) or classified private afterwards, so a few seconds'
# delay shows nothing that was not shown a moment before.
CANDIDATES_TTL_S = 1.0
CANDIDATES_MAX_AGE_S = 5.0
NO_LAYER = "fleetbook-live-hub-only"  # an alias with no layer: consumers get no channel


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
    """A task runs beside the consumers, so nothing else would hear it fail."""
    if not task.cancelled() and task.exception() is not None:
        logger.warning("Sending a live update failed", exc_info=task.exception())


def _background(coroutine) -> asyncio.Task:
    task = asyncio.ensure_future(coroutine)
    task.add_done_callback(_log_failure)
    return task


class OrganisationFeed:
    """One organisation's group, received once for this process's browsers in it."""

    def __init__(self, hub: LiveHub, organisation_id: int):
        self.hub = hub
        self.organisation_id = organisation_id
        self.group = organisation_group(organisation_id)
        self.members: set[LiveConsumer] = set()
        self.pending: dict[int, dict[str, Any]] = {}
        self.channel: str | None = None
        self.receiver: asyncio.Task | None = None
        self.flusher: asyncio.Task | None = None
        self.candidates: tuple[float, set[int]] | None = None
        self.refreshing: asyncio.Task | None = None
        self.started: asyncio.Future = asyncio.ensure_future(self._start())

    async def _start(self) -> None:
        layer = self.hub.layer
        self.channel = await layer.new_channel()
        await layer.group_add(self.group, self.channel)
        self.receiver = _background(self._receive())

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.started
        for task in (self.receiver, self.flusher, self.refreshing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.channel is not None:
            with contextlib.suppress(Exception):
                await self.hub.layer.group_discard(self.group, self.channel)

    async def _receive(self) -> None:
        layer = self.hub.layer
        while True:
            try:
                message = await layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # redis-py's read timeout ends an idle blocking pop: receive again.
                if "Timeout" not in type(error).__name__:
                    logger.warning("Receiving live updates failed, retrying: %r", error)
                    await asyncio.sleep(1.0)
                continue
            kind = message.get("type")
            if kind == "vehicles.update":
                self._collect(message.get("vehicles") or [])
            elif kind == "events.new":
                for consumer in list(self.members):
                    _background(consumer.events_new(message))

    def _collect(self, vehicles: list[dict[str, Any]]) -> None:
        for vehicle in vehicles:
            current = self.pending.get(vehicle["id"])
            if current is None or _is_newer(vehicle, current):
                self.pending[vehicle["id"]] = vehicle
        if self.pending and self.flusher is None:
            self.flusher = _background(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(FLUSH_INTERVAL_S)
        pending, self.pending = self.pending, {}
        self.flusher = None
        try:
            candidates = await self._candidates()
        except Exception:
            logger.warning("Reading the private vehicles failed; asking per browser",
                           exc_info=True)
            candidates = None
        now = datetime.now(UTC)
        updates = {pk: with_status(v, now) for pk, v in pending.items()}
        shared = SharedUpdate(updates)
        for consumer in list(self.members):
            try:
                await consumer.offer(updates, candidates, shared)
            except Exception:  # a browser gone mid-send: the others still get theirs
                logger.debug("A live update was not sent", exc_info=True)

    async def _candidates(self) -> set[int]:
        """The organisation's vehicles that could be hidden, read at most once a
        ``CANDIDATES_TTL_S`` for all of its browsers here. Once read, a refresh runs
        beside the flushes (a slow database must not delay every browser's update);
        the previous answer serves meanwhile, but never one older than
        ``CANDIDATES_MAX_AGE_S``: then the flush waits for the database."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.candidates is not None:
            read_at, found = self.candidates
            if now - read_at < CANDIDATES_TTL_S:
                return found
            if self.refreshing is None:
                self.refreshing = _background(self._refresh())
            if now - read_at < CANDIDATES_MAX_AGE_S:
                return found
        if self.refreshing is None:
            self.refreshing = _background(self._refresh())
        await asyncio.shield(self.refreshing)
        return self.candidates[1]

    async def _refresh(self) -> None:
        try:
            started = asyncio.get_running_loop().time()
            found = await database_sync_to_async(may_be_hidden_in)([self.organisation_id])
            self.candidates = (started, found)
        finally:
            self.refreshing = None


class SharedUpdate:
    """A flush's message for browsers that see every vehicle in it with nothing to
    hide, encoded once for all of them."""

    def __init__(self, updates: dict[int, dict[str, Any]]):
        self.updates = updates
        self._text: str | None = None

    def text(self) -> str:
        if self._text is None:
            self._text = encode({"type": "update", "vehicles": [
                without_position(v, False) for v in self.updates.values()]})
        return self._text


class LiveHub:
    """The process's (event loop's) organisation feeds, joined by the consumers."""

    _hubs: ClassVar[weakref.WeakKeyDictionary] = weakref.WeakKeyDictionary()

    def __init__(self, layer):
        self.layer = layer
        self.feeds: dict[int, OrganisationFeed] = {}

    @classmethod
    def current(cls) -> LiveHub | None:
        layer = get_channel_layer()
        if layer is None:
            return None
        loop = asyncio.get_running_loop()
        hub = cls._hubs.get(loop)
        if hub is None or hub.layer is not layer:
            hub = cls._hubs[loop] = cls(layer)
        return hub

    async def join(self, consumer: LiveConsumer, organisation_ids: list[int]) -> None:
        feeds = []
        for pk in organisation_ids:
            feed = self.feeds.get(pk)
            if feed is None:
                feed = self.feeds[pk] = OrganisationFeed(self, pk)
            feed.members.add(consumer)
            feeds.append(feed)
        for feed in feeds:
            await feed.started

    async def leave(self, consumer: LiveConsumer) -> None:
        for pk, feed in list(self.feeds.items()):
            feed.members.discard(consumer)
            if not feed.members and self.feeds.get(pk) is feed:
                del self.feeds[pk]
                await feed.stop()


def encode(content: Any) -> str:
    """JSON without the spaces ``json.dumps`` puts after separators (a tenth of an
    update's bytes)."""
    return json.dumps(content, separators=(",", ":"))


class LiveConsumer(AsyncJsonWebsocketConsumer):
    channel_layer_alias = NO_LAYER
    flush_interval = FLUSH_INTERVAL_S

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return encode(content)

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.user = user
        self.ready = False
        self.sending: asyncio.Task | None = None
        self.backlog: dict[int, dict[str, Any]] = {}
        self.candidates: set[int] | None = None
        self.visible_vehicle_ids: set[int] = set()
        self.hub = LiveHub.current()
        # Join the feeds before reading the snapshot, so that a fix stored in between
        # arrives as an update (kept in the backlog until the snapshot is out).
        if self.hub is not None:
            await self.hub.join(self, await self._organisation_ids(user))
        try:
            self.visible_vehicle_ids, initial = await self._vehicles(user)
            await self.accept()
            await self.send_json({
                "type": "snapshot", "vehicles": initial,
                "server_time": datetime.now(UTC).isoformat(),
            })
        except BaseException:  # no disconnect follows a failed connect: leave now
            if self.hub is not None:
                await self.hub.leave(self)
            raise
        self.ready = True
        self._send_backlog()

    async def disconnect(self, code: int) -> None:
        hub = getattr(self, "hub", None)
        if hub is not None:
            await hub.leave(self)
        task = getattr(self, "sending", None)
        if task is not None:
            task.cancel()

    async def offer(self, updates: dict[int, dict[str, Any]], candidates: set[int] | None,
                    shared: SharedUpdate | None) -> None:
        """A flush of the organisation's feed: send what this browser may see of it.

        Never waits for the browser: one that has not taken the last message yet (a
        slow phone; the socket's buffer is full) gets the newest state of everything
        that changed meanwhile when it has, instead of holding up every other browser.
        ``candidates``: the vehicles that could be hidden (None: unknown, so every one
        is checked). Most browsers see all of it and nothing hidden: they get the
        shared, already encoded message.
        """
        self.candidates = candidates
        if not self.ready or self.sending is not None:
            for pk, vehicle in updates.items():
                current = self.backlog.get(pk)
                if current is None or _is_newer(vehicle, current):
                    self.backlog[pk] = vehicle
            return
        self._start(self._deliver(updates, candidates, shared))

    def _start(self, coroutine) -> None:
        self.sending = asyncio.ensure_future(coroutine)
        self.sending.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task) -> None:
        self.sending = None
        if task.cancelled():
            return
        if task.exception() is not None:
            logger.debug("A live update was not sent", exc_info=task.exception())
            return
        self._send_backlog()

    def _send_backlog(self) -> None:
        if self.backlog and self.ready and self.sending is None:
            backlog, self.backlog = self.backlog, {}
            now = datetime.now(UTC)
            self._start(self._deliver({pk: with_status(v, now) for pk, v in backlog.items()},
                                      self.candidates, None))

    async def _deliver(self, updates: dict[int, dict[str, Any]], candidates: set[int] | None,
                       shared: SharedUpdate | None) -> None:
        visible = [v for pk, v in updates.items() if pk in self.visible_vehicle_ids]
        if not visible:
            return
        doubtful = {v["id"]: _fix_time(v) for v in visible
                    if candidates is None or v["id"] in candidates}
        if not doubtful and shared is not None and len(visible) == len(updates):
            await self.send(text_data=shared.text())
            return
        hidden = await self._hidden(doubtful) if doubtful else set()
        await self.send_json({"type": "update", "vehicles": [
            without_position(v, v["id"] in hidden) for v in visible]})

    async def events_new(self, event: dict) -> None:
        """Alerts and other events (telematics.alerts.worker), sent on at once; those
        during a private trip say nothing of where the vehicle was
        (``logbook.event_privacy``)."""
        if not getattr(self, "ready", False):
            return
        events = [e for e in event["events"]
                  if e.get("vehicle") is None or e["vehicle"] in self.visible_vehicle_ids]
        if events:
            events = await self._events_for_user(events)
        if events:
            await self.send_json({"type": "events", "events": events})

    @database_sync_to_async
    def _events_for_user(self, events: list[dict]) -> list[dict]:
        from logbook.event_privacy import redact_payloads
        from telematics.alerts.presentation import with_summary

        untouched = {id(e) for e in events}
        return [e if id(e) in untouched else with_summary(e)
                for e in redact_payloads(self.user, events)]

    @database_sync_to_async
    def _hidden(self, latest: dict[int, datetime | None]) -> set[int]:
        """Vehicles on a private trip (logbook/README.md): sent without a position."""
        return positions_hidden_from(self.user, latest)

    @database_sync_to_async
    def _organisation_ids(self, user) -> list[int]:
        return list(organisations_visible_to(user).values_list("pk", flat=True))

    @database_sync_to_async
    def _vehicles(self, user) -> tuple[set[int], list[dict]]:
        snapshots = live_snapshots_for(user, vehicles_visible_to(user).order_by("name", "pk"))
        return {v["id"] for v in snapshots}, snapshots
