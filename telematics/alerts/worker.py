"""Geofence and alert evaluation in the ingest process, off the event loop.

``attach_alert_worker(pipeline)`` (one line in ``telematics.ingest.runner.start_ingest``)
registers an ``AlertWorker`` as a stored-records listener of the ingest pipeline, like
the logbook's trip tracker. The listener runs in the event loop after each committed
batch and only queues the batch's fixes; the worker's own thread then, per round:

1. evaluates the fixes of each vehicle whose organisation has geofences or alert rules
   (``telematics.alerts.engine``), with the vehicle's ``VehicleAlertState`` locked, and
   writes the resulting ``Event`` rows in the same transaction;
2. dispatches every undispatched event, its own and those others wrote (faults opened by
   the store, service plans falling due): claims them (``FOR UPDATE SKIP LOCKED`` on
   PostgreSQL, so several ingest processes never tell twice), publishes them to the
   organisation's live group as ``{"type": "events.new", "events": [...]}`` (through the
   event loop, where the channel layer lives) and e-mails the matching rules'
   recipients;
3. every ``ALERTS_CHECK_S`` seconds, checks the rules that need no fix: units silent for
   too long (``offline``) and fuel levels reported without a fix (CAN over HTTP/MQTT).

Events are dispatched at most once: a crash between claiming and sending loses that
round's e-mails rather than sending them twice. Geofences and rules are re-read when
their count or newest change differs, so an edit in the web process applies to the next
fix. A database outage only delays alerts; the round is retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import Count, Max
from django.utils import timezone

from fleet.live import organisation_group
from fleet.models import Organisation, Vehicle
from logbook.event_privacy import organisation_viewer, redact_events
from telematics.alerts import notify
from telematics.alerts.engine import (
    Fence,
    NewEvent,
    Rule,
    Sample,
    evaluate_fixes,
    evaluate_fuel,
    evaluate_offline,
)
from telematics.alerts.geometry import GeometryError
from telematics.alerts.presentation import event_payload
from telematics.ingest.workers import STOP, StoredRecordsWorker, attach_worker
from telematics.models import AlertRule, Event, Geofence, VehicleAlertState, VehicleState

logger = logging.getLogger(__name__)

DISPATCH_BATCH = 500


@dataclass
class OrgConfig:
    fences: list[Fence] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    recipients: dict[int, list[str]] = field(default_factory=dict)
    time_zone: str = "UTC"

    @property
    def empty(self) -> bool:
        return not self.fences and not self.rules

    def watches(self, event_type: str) -> bool:
        return any(event_type in rule.types for rule in self.rules)


def margin_m() -> float:
    return float(getattr(settings, "GEOFENCE_HYSTERESIS_M", 25.0))


def fence_of(geofence: Geofence, margin: float) -> Fence | None:
    try:
        shape = geofence.shape()
    except GeometryError as error:  # saved around validation (admin, shell): skip it
        logger.warning("Geofence %s is unusable: %s", geofence.pk, error)
        return None
    return Fence(geofence.pk, geofence.name, geofence.revision, shape, shape.bbox(margin),
                 geofence.speed_limit_kmh)


def rule_of(rule: AlertRule, vehicle_ids: list[int], geofence_ids: list[int]) -> Rule:
    return Rule(
        id=rule.pk, name=rule.name, types=frozenset(rule.event_types or ()),
        vehicle_ids=frozenset(vehicle_ids) if vehicle_ids else None,
        geofence_ids=frozenset(geofence_ids) if geofence_ids else None,
        overspeed_kmh=rule.overspeed_kmh, overspeed_min_s=rule.overspeed_min_s or 0,
        idle_minutes=rule.idle_minutes, low_fuel_percent=rule.low_fuel_percent,
        offline_minutes=rule.offline_minutes,
    )


class ConfigCache:
    """Geofences and active rules per organisation, re-read when they change."""

    def __init__(self):
        self._configs: dict[int, OrgConfig] = {}
        self._versions: dict[int, tuple] = {}

    def get(self, organisation_ids: set[int]) -> dict[int, OrgConfig]:
        if not organisation_ids:
            return {}
        versions: dict[int, list] = {pk: [0, None, 0, None] for pk in organisation_ids}
        for row in (Geofence.objects.filter(organisation_id__in=organisation_ids)
                    .values("organisation_id").annotate(n=Count("id"), u=Max("updated"))):
            versions[row["organisation_id"]][0:2] = [row["n"], row["u"]]
        for row in (AlertRule.objects.filter(organisation_id__in=organisation_ids)
                    .values("organisation_id").annotate(n=Count("id"), u=Max("updated"))):
            versions[row["organisation_id"]][2:4] = [row["n"], row["u"]]
        stale = {pk for pk in organisation_ids
                 if self._versions.get(pk) != tuple(versions[pk]) or pk not in self._configs}
        if stale:
            self._load(stale)
            for pk in stale:
                self._versions[pk] = tuple(versions[pk])
        return {pk: self._configs[pk] for pk in organisation_ids}

    def _load(self, organisation_ids: set[int]) -> None:
        margin = margin_m()
        configs = {pk: OrgConfig() for pk in organisation_ids}
        for pk, zone in Organisation.objects.filter(pk__in=organisation_ids).values_list(
                "pk", "time_zone"):
            configs[pk].time_zone = zone
        for geofence in Geofence.objects.filter(organisation_id__in=organisation_ids):
            fence = fence_of(geofence, margin)
            if fence is not None:
                configs[geofence.organisation_id].fences.append(fence)
        rules = list(AlertRule.objects.filter(organisation_id__in=organisation_ids,
                                              active=True))
        vehicles: dict[int, list[int]] = defaultdict(list)
        fences: dict[int, list[int]] = defaultdict(list)
        through_v = AlertRule.vehicles.through.objects.filter(alertrule__in=rules)
        for rule_id, vehicle_id in through_v.values_list("alertrule_id", "vehicle_id"):
            vehicles[rule_id].append(vehicle_id)
        through_g = AlertRule.geofences.through.objects.filter(alertrule__in=rules)
        for rule_id, geofence_id in through_g.values_list("alertrule_id", "geofence_id"):
            fences[rule_id].append(geofence_id)
        for rule in rules:
            config = configs[rule.organisation_id]
            config.rules.append(rule_of(rule, vehicles[rule.pk], fences[rule.pk]))
            config.recipients[rule.pk] = [r for r in (rule.recipients or []) if r]
        self._configs.update(configs)


class AlertWorker(StoredRecordsWorker):
    """Evaluates geofences and alert rules from stored fixes; see the module doc.

    A ``StoredRecordsWorker`` like the logbook's trip tracker: ``listener`` queues a
    batch's fixes (``submit``), the worker's thread takes them (``take``, ``done``), and
    ``wait_idle`` and ``stop`` come from the base.
    """

    thread_name = "alerts"

    def __init__(self, *, loop: asyncio.AbstractEventLoop | None = None, channel_layer=None,
                 check_s: float | None = None):
        super().__init__()
        self.loop = loop
        self.channel_layer = channel_layer
        self.check_s = (check_s if check_s is not None
                        else float(getattr(settings, "ALERTS_CHECK_S", 30.0)))
        self.config = ConfigCache()
        self._last_fix: dict[int, datetime] = {}
        self.failures = 0
        self.sent_messages = 0

    # ------------------------------------------------------------- event-loop side

    def listener(self, positions: list, moved: set[int]) -> None:
        """The pipeline's stored listener: queue the batch's fixes, return at once.

        Called for every committed batch, fixes or not: a batch of CAN data may have
        opened a fault, whose event the next round dispatches.
        """
        rows = []
        for p in positions:
            if p.vehicle_id is None:
                continue
            f = p.fix
            rows.append((p.organisation_id, p.vehicle_id, Sample(
                f.fix_time, f.latitude, f.longitude, f.speed_kmh, f.ignition, f.valid)))
        self.submit(rows)

    # ------------------------------------------------------------- worker side

    def run(self) -> None:
        pending: list = []
        taken = 0
        backoff = 0.0
        last_check = time.monotonic()
        try:
            with contextlib.suppress(DatabaseError):
                self.dispatch()  # events written while no worker ran
            stop = False
            while not stop:
                timeout = max(0.05, backoff or (self.check_s - (time.monotonic() - last_check)))
                item = self.take(timeout)
                while item is not None:  # everything queued meanwhile makes one round
                    if item is STOP:
                        stop = True
                    else:
                        taken += 1
                        pending.extend(item)
                    item = self.take(0)
                try:
                    if pending:
                        self.process(pending)
                        pending = []
                    self.dispatch()
                    if time.monotonic() - last_check >= self.check_s:
                        last_check = time.monotonic()
                        self.check(timezone.now())
                        self.dispatch()
                    backoff = 0.0
                except DatabaseError as error:
                    self.failures += 1
                    logger.warning("Alert evaluation failed, will retry: %s", error)
                    self._reset_connection()
                    backoff = min(max(backoff * 2, 0.5), 30.0)
                    if not stop:
                        continue
                except Exception:
                    self.failures += 1
                    logger.exception("Alert evaluation failed; these fixes are skipped")
                    pending = []
                self.done(taken)
                taken = 0
        finally:
            self.done(10**9)  # nothing more will be done: release every waiter
            with contextlib.suppress(DatabaseError):
                connection.close()

    @staticmethod
    def _reset_connection() -> None:
        with contextlib.suppress(DatabaseError):
            connection.close()
        close_old_connections()

    # --- 1. fixes ------------------------------------------------------------------

    def process(self, rows: list[tuple[int, int, Sample]]) -> int:
        """Evaluate queued fixes; returns the number of events written."""
        by_vehicle: dict[int, list[Sample]] = defaultdict(list)
        organisation_of: dict[int, int] = {}
        for organisation_id, vehicle_id, sample in rows:
            by_vehicle[vehicle_id].append(sample)
            organisation_of[vehicle_id] = organisation_id
        configs = self.config.get(set(organisation_of.values()))
        wanted = {v for v, o in organisation_of.items() if not configs[o].empty}
        if not wanted:
            return 0
        fuel_wanted = {v for v in wanted if configs[organisation_of[v]].watches("low_fuel")}
        with transaction.atomic():
            states = self._lock_states(wanted)
            fuel = {}
            if fuel_wanted:
                fuel = {v: (s or {}).get("fuel_level") for v, s in VehicleState.objects.filter(
                    vehicle_id__in=fuel_wanted).values_list("vehicle_id", "signals")}
            events: list[Event] = []
            changed = []
            for vehicle_id in wanted:
                config = configs[organisation_of[vehicle_id]]
                row = states[vehicle_id]
                before = copy.deepcopy(row.state)
                last = max(filter(None, [row.last_fix_time, self._last_fix.get(vehicle_id)]),
                           default=None)
                samples = sorted((s for s in by_vehicle[vehicle_id]
                                  if last is None or s.time > last), key=lambda s: s.time)
                new = evaluate_fixes(row.state, vehicle_id, samples, config.fences,
                                     config.rules, margin_m())
                reading = fuel.get(vehicle_id)
                if reading and reading.get("value") is not None:
                    new += evaluate_fuel(row.state, vehicle_id, float(reading["value"]),
                                         datetime.fromisoformat(reading["time"]), config.rules)
                if samples:
                    self._last_fix[vehicle_id] = samples[-1].time
                if row.state != before:
                    if samples:
                        row.last_fix_time = samples[-1].time
                    changed.append(row)
                events += self._events(organisation_of[vehicle_id], vehicle_id, new)
            self._save(changed, events)
        return len(events)

    @staticmethod
    def _lock_states(vehicle_ids: set[int]) -> dict[int, VehicleAlertState]:
        VehicleAlertState.objects.bulk_create(
            [VehicleAlertState(vehicle_id=v) for v in vehicle_ids], ignore_conflicts=True)
        return VehicleAlertState.objects.select_for_update().in_bulk(list(vehicle_ids))

    @staticmethod
    def _events(organisation_id: int, vehicle_id: int, new: list[NewEvent]) -> list[Event]:
        return [Event(organisation_id=organisation_id, vehicle_id=vehicle_id, type=e.type,
                      time=e.time, attributes=e.attributes) for e in new]

    @staticmethod
    def _save(changed: list[VehicleAlertState], events: list[Event]) -> None:
        if changed:
            now = timezone.now()
            for row in changed:
                row.updated = now
            VehicleAlertState.objects.bulk_update(
                changed, ["state", "last_fix_time", "updated"], batch_size=500)
        if events:
            Event.objects.bulk_create(events)

    # --- 3. rules without a fix ----------------------------------------------------

    def check(self, now: datetime) -> int:
        """Offline units and fuel levels of every organisation with such rules."""
        organisation_ids = set(AlertRule.objects.filter(active=True).values_list(
            "organisation_id", flat=True).distinct())
        configs = {pk: c for pk, c in self.config.get(organisation_ids).items()
                   if c.watches("offline") or c.watches("low_fuel")}
        if not configs:
            return 0
        vehicles = list(Vehicle.objects.filter(organisation_id__in=configs).annotate(
            last_seen=Max("devices__last_seen")).values_list("pk", "organisation_id",
                                                              "last_seen"))
        fuel = {v: (s or {}).get("fuel_level") for v, s in VehicleState.objects.filter(
            vehicle__organisation_id__in=configs).values_list("vehicle_id", "signals")}
        written = 0
        with transaction.atomic():
            states = self._lock_states({pk for pk, _, _ in vehicles})
            changed, events = [], []
            for vehicle_id, organisation_id, last_seen in vehicles:
                config = configs[organisation_id]
                row = states[vehicle_id]
                before = copy.deepcopy(row.state)
                new = evaluate_offline(row.state, vehicle_id, last_seen, now, config.rules)
                reading = fuel.get(vehicle_id)
                if reading and reading.get("value") is not None:
                    new += evaluate_fuel(row.state, vehicle_id, float(reading["value"]),
                                         datetime.fromisoformat(reading["time"]), config.rules)
                if row.state != before:
                    changed.append(row)
                events += self._events(organisation_id, vehicle_id, new)
            self._save(changed, events)
            written = len(events)
        return written

    # --- 2. dispatching ------------------------------------------------------------

    def dispatch(self) -> int:
        """Claim undispatched events, publish them live and e-mail the rules' recipients."""
        total = 0
        while True:
            # A plain read first (the partial index makes it cheap): on SQLite every
            # transaction takes the write lock the store thread needs.
            if not Event.objects.filter(dispatched=False).exists():
                return total
            with transaction.atomic():
                ids = list(Event.objects.select_for_update(skip_locked=True)
                           .filter(dispatched=False).order_by("id")
                           .values_list("id", flat=True)[:DISPATCH_BATCH])
                if ids:
                    Event.objects.filter(id__in=ids).update(dispatched=True)
            if not ids:
                return total
            total += len(ids)
            events = list(Event.objects.filter(id__in=ids).select_related("vehicle")
                          .order_by("time", "id"))
            self._publish(events)
            self._notify(events)
            if len(ids) < DISPATCH_BATCH:
                return total

    def _notify(self, events: list[Event]) -> None:
        """E-mail the rules' recipients, who see no place of a private trip: they get
        what a fleet manager who drove none of the trips sees (logbook.event_privacy)."""
        by_organisation: dict[int, list[Event]] = defaultdict(list)
        for event in events:
            by_organisation[event.organisation_id].append(event)
        events = sorted(
            (shown for organisation_id, group in by_organisation.items()
             for shown in redact_events(organisation_viewer(organisation_id), group)),
            key=lambda e: (e.time, e.pk))
        configs = self.config.get({e.organisation_id for e in events})
        rules_of = {pk: [(rule, c.recipients.get(rule.id, [])) for rule in c.rules]
                    for pk, c in configs.items()}
        zones = {pk: c.time_zone for pk, c in configs.items()}
        self.sent_messages += notify.send(notify.messages_for(events, rules_of, zones))

    def _publish(self, events: list[Event]) -> None:
        if self.channel_layer is None or self.loop is None or self.loop.is_closed():
            return
        by_organisation: dict[int, list[dict]] = defaultdict(list)
        for event in events:
            by_organisation[event.organisation_id].append(event_payload(event))
        for organisation_id, payloads in by_organisation.items():
            coroutine = asyncio.wait_for(self.channel_layer.group_send(
                organisation_group(organisation_id),
                {"type": "events.new", "events": payloads}), timeout=2.0)
            try:
                future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
            except RuntimeError:  # the loop is shutting down
                coroutine.close()
                return
            future.add_done_callback(_log_publish_failure)


def _log_publish_failure(future) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("Publishing events live failed: %r", future.exception())


def attach_alert_worker(pipeline) -> AlertWorker | None:
    """Evaluate geofences and alert rules from what ``pipeline`` stores (``ALERTS_LIVE``,
    on by default). Call from the running event loop (``start_ingest``).

    The worker is stopped after the pipeline stops, so ``IngestService.stop`` needs no
    change; it is reachable as ``pipeline.alert_worker``.
    """
    if not getattr(settings, "ALERTS_LIVE", True):
        return None
    worker = AlertWorker(loop=asyncio.get_running_loop(), channel_layer=pipeline.channel_layer)
    attach_worker(pipeline, worker, "alert_worker")
    return worker
