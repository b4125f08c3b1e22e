"""Webhooks: an organisation's URLs told about events, signed, retried, logged.

Event rows are written by many parts of the system (the ingest, the alert worker, the
logbook, the API), so deliveries are not pushed by the writers: a ``WebhookWorker``
polls the Event table by id (``fan_out``) and turns each new event of a subscribed type
into a ``WebhookDelivery`` per webhook, then POSTs the due deliveries (``deliver_due``).
It runs as a thread of the ingest process (``start_webhook_worker``) and as
``manage.py deliver_webhooks`` beside a web-only deployment; several may run at once.

The contract a receiver sees:

* ``POST`` of a JSON body ``{"id", "type", "created", "organisation", "event": {...}}``
  (``"positions": [...]`` instead of ``event`` for the ``position`` type, up to 100 a
  delivery), with ``X-Fleetbook-Event: <type>``, ``Idempotency-Key: <id>`` and
  ``X-Fleetbook-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>``.
* Any 2xx answer is success. Anything else, or no answer within ``WEBHOOK_TIMEOUT_S``,
  is retried after ``WEBHOOK_RETRY_BASE_S * 2^(attempt-1)`` (at most
  ``WEBHOOK_RETRY_MAX_S``), up to ``WEBHOOK_MAX_ATTEMPTS`` attempts. Every attempt sends
  the same body and id: delivery is at least once, so receivers drop ids they have seen.
  Order is not guaranteed; the event's ``time`` is.

The id cursor: ids are allocated when a row is inserted but become visible when its
transaction commits, so a lower id can appear after a higher one. ``fan_out`` therefore
stops at a gap in the ids until the row after the gap is ``GAP_WAIT`` old (a rolled
back insert leaves a gap for ever); events are delayed, not skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import secrets
import socket
import ssl
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import Max, Q, QuerySet
from django.utils import timezone

from fleet.models import DeliveryStatus, Organisation, Role, Webhook, WebhookDelivery
from fleet.selectors import Actor, Principal, actor_of, position_feed_for
from telematics.models import Event

logger = logging.getLogger(__name__)

EVENT_TYPES: dict[str, str] = {
    "trip_started": "Trip started",
    "trip_ended": "Trip ended",
    "geofence_enter": "Geofence entered",
    "geofence_exit": "Geofence left",
    "job_status": "Job status changed",
    "job_arrived": "Arrived at a job stop",
    "job_departed": "Left a job stop",
    "fault_opened": "Fault opened",
    "fault_closed": "Fault closed",
    "offline": "Unit offline",
    "overspeed": "Overspeed",
    "idle": "Long idling",
    "low_fuel": "Low fuel",
    "service_due_soon": "Service due soon",
    "service_overdue": "Service overdue",
    "position": "Every position (batches of up to 100)",
}
EVENT_TYPE_CHOICES = list(EVENT_TYPES.items())
POSITION = "position"
PING = "ping"
POSITIONS_PER_DELIVERY = 100
GAP_WAIT = timedelta(seconds=30)
EXCERPT = 1000
USER_AGENT = "Fleetbook-Webhooks/1"
_KEY_NAMESPACE = uuid.UUID("6f1d3c52-4a5e-4c1b-9a43-9f6d0b7e2c11")


def webhooks_visible_to(principal: Principal) -> QuerySet[Webhook]:
    """Webhooks are an admin's business (an API key acts as one)."""
    actor = actor_of(principal)
    if actor.is_superuser:
        return Webhook.objects.all()
    if actor.organisation_id is None or actor.role != Role.ADMIN:
        return Webhook.objects.none()
    return Webhook.objects.filter(organisation_id=actor.organisation_id)


# --- registering ----------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def check_url(url: str) -> str:
    """Refuse what can never be delivered to, or must not be: other schemes, credentials
    in the URL, and (unless WEBHOOK_ALLOW_PRIVATE_ADDRESSES) internal addresses given
    literally. Host names are checked again, resolved, at every delivery."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError({"url": ["An http:// or https:// URL."]})
    if parts.username or parts.password:
        raise ValidationError({"url": ["Put no credentials in the URL; verify the signature."]})
    if not settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        host = parts.hostname
        try:
            internal = not _public(ipaddress.ip_address(host))
        except ValueError:
            internal = host == "localhost" or host.endswith((".localhost", ".local"))
        if internal:
            raise ValidationError({"url": ["Webhooks may not call internal addresses."]})
    return url


def check_event_types(event_types: list[str]) -> list[str]:
    unknown = sorted(set(event_types) - set(EVENT_TYPES))
    if unknown:
        raise ValidationError({"event_types": [
            f"Unknown event type(s) {', '.join(unknown)}; choose from "
            f"{', '.join(EVENT_TYPES)}."]})
    if not event_types:
        raise ValidationError({"event_types": ["Choose at least one event type."]})
    return sorted(set(event_types))


def _latest_event_id() -> int:
    """The last Event id handed out, committed or not: a webhook made now starts after it
    (and so never waits for a gap in front of its first event)."""
    allocated = None
    table = Event._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_sequence_last_value(pg_get_serial_sequence(%s, 'id'))",
                           [table])
            allocated = cursor.fetchone()[0]
        elif connection.vendor == "sqlite":
            cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = %s", [table])
            row = cursor.fetchone()
            allocated = row[0] if row else None
    return max(allocated or 0, Event.objects.aggregate(last=Max("id"))["last"] or 0)


def create_webhook(organisation: Organisation, *, url: str, event_types: list[str],
                   description: str = "", active: bool = True,
                   created_by: Any = None) -> tuple[Webhook, str]:
    """A webhook told about events from now on; returns it and its secret (shown once)."""
    secret = new_secret()
    webhook = Webhook.objects.create(
        organisation=organisation, url=check_url(url), description=description,
        event_types=check_event_types(event_types), active=active, secret=secret,
        created_by=created_by if getattr(created_by, "pk", None) else None,
        event_cursor=_latest_event_id(), position_after_time=timezone.now(),
    )
    return webhook, secret


def update_webhook(webhook: Webhook, **fields: Any) -> Webhook:
    """Edit a webhook. Switched back on, it starts from now (no backlog of what happened
    while it was off); subscribed to positions anew, from now too."""
    if "url" in fields:
        fields["url"] = check_url(fields["url"])
    if "event_types" in fields:
        fields["event_types"] = check_event_types(fields["event_types"])
    reactivated = fields.get("active") is True and not webhook.active
    positions_added = POSITION in fields.get("event_types", ()) and (
        POSITION not in webhook.event_types)
    for name, value in fields.items():
        setattr(webhook, name, value)
    if reactivated:
        webhook.event_cursor = _latest_event_id()
    if reactivated or positions_added:
        webhook.position_after_time, webhook.position_after_id = timezone.now(), 0
    webhook.save()
    return webhook


def rotate_secret(webhook: Webhook) -> str:
    webhook.secret = new_secret()
    webhook.save(update_fields=["secret"])
    return webhook.secret


def ping(webhook: Webhook) -> WebhookDelivery:
    """A test delivery, sent by the next worker cycle."""
    now = timezone.now()
    key = str(uuid.uuid4())
    return WebhookDelivery.objects.create(
        webhook=webhook, event_type=PING, idempotency_key=key, next_attempt_at=now,
        payload={"id": key, "type": PING, "created": _rfc3339(now),
                 "organisation": webhook.organisation_id, "event": None},
    )


# --- signing --------------------------------------------------------------------------


def body_of(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): canonical JSON, the same on every attempt."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does (shown here for the docs and the tests)."""
    return hmac.compare_digest(sign(secret, body), header or "")


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _key(webhook_id: int, what: str) -> str:
    return str(uuid.uuid5(_KEY_NAMESPACE, f"{webhook_id}:{what}"))


# --- fan-out: events and positions into deliveries ------------------------------------


def _settled(events: list[Event], start: int, now: datetime) -> list[Event]:
    """The events up to the first gap in the ids that may still fill (see module doc)."""
    settled = []
    previous = start
    for event in events:
        if event.pk != previous + 1 and now - event.created < GAP_WAIT:
            break
        settled.append(event)
        previous = event.pk
    return settled


def fan_out(now: datetime | None = None, batch: int = 1000) -> int:
    """Make the deliveries of new events (and positions); returns how many were made."""
    now = now or timezone.now()
    made = 0
    if not Webhook.objects.filter(active=True).exists():  # no write transaction for nothing
        return 0
    with transaction.atomic():
        hooks = list(Webhook.objects.select_for_update().filter(active=True).order_by("pk"))
        if not hooks:
            return 0
        start = min(h.event_cursor for h in hooks)
        events = _settled(list(Event.objects.filter(pk__gt=start).order_by("pk")[:batch]),
                          start, now)
        rows = []
        as_sent = _as_sent(events, {hook.organisation_id for hook in hooks})
        for hook in hooks:
            types = set(hook.event_types)
            for event in events:
                if (event.pk > hook.event_cursor and event.type in types
                        and event.organisation_id == hook.organisation_id
                        and as_sent.get(event.pk) is not None):
                    rows.append(_event_delivery(hook, as_sent[event.pk], now))
            if events and events[-1].pk > hook.event_cursor:
                hook.event_cursor = events[-1].pk
                Webhook.objects.filter(pk=hook.pk).update(event_cursor=hook.event_cursor)
        WebhookDelivery.objects.bulk_create(rows, ignore_conflicts=True)
        made += len(rows)
        for hook in hooks:
            if POSITION in hook.event_types:
                made += _fan_out_positions(hook, now)
    return made


def _as_sent(events: list[Event], organisation_ids: set[int]) -> dict[int, Event | None]:
    """The events as a receiver gets them, by id: during a private trip without their
    places, or None when withheld (``logbook.event_privacy``; a receiver is nobody in
    particular, so it sees what a fleet manager who drove none of the trips sees)."""
    from logbook.event_privacy import organisation_viewer, redact_events

    sent: dict[int, Event | None] = {}
    for organisation_id in organisation_ids:
        group = [e for e in events if e.organisation_id == organisation_id]
        if not group:
            continue
        sent.update(dict.fromkeys((e.pk for e in group), None))
        sent.update((e.pk, e) for e in redact_events(organisation_viewer(organisation_id),
                                                      group))
    return sent


def _event_delivery(hook: Webhook, event: Event, now: datetime) -> WebhookDelivery:
    key = _key(hook.pk, f"event:{event.pk}")
    return WebhookDelivery(
        webhook=hook, event_id=event.pk, event_type=event.type, idempotency_key=key,
        next_attempt_at=now, payload={
            "id": key, "type": event.type, "created": _rfc3339(now),
            "organisation": hook.organisation_id,
            "event": {"id": event.pk, "type": event.type, "time": _rfc3339(event.time),
                      "vehicle": event.vehicle_id, "attributes": event.attributes},
        },
    )


def _fan_out_positions(hook: Webhook, now: datetime, batches: int = 10) -> int:
    """Positions of the organisation in storage order (as the API feed), 100 a delivery;
    those of a private trip are left out, as from the API feed."""
    from logbook.selectors import without_private_positions

    actor = Actor(organisation_id=hook.organisation_id, role=Role.ADMIN)
    stored_before = now - timedelta(seconds=settings.API_FEED_SETTLE_S)
    after_time = hook.position_after_time or hook.created
    after_id = hook.position_after_id
    made = 0
    moved_on = False
    for _ in range(batches):
        rows = list(
            position_feed_for(actor, stored_before)
            .filter(server_time__gte=after_time)
            .filter(Q(server_time__gt=after_time) | Q(id__gt=after_id))[:POSITIONS_PER_DELIVERY]
        )
        if not rows:
            break
        key = _key(hook.pk, f"positions:{rows[0].pk}:{rows[-1].pk}")
        after_time, after_id = rows[-1].server_time, rows[-1].pk
        moved_on = True
        shown = without_private_positions(actor, rows)
        if not shown:
            continue
        WebhookDelivery.objects.create(
            webhook=hook, event_type=POSITION, idempotency_key=key, next_attempt_at=now,
            payload={"id": key, "type": POSITION, "created": _rfc3339(now),
                     "organisation": hook.organisation_id,
                     "positions": [_position(p) for p in shown]},
        )
        made += 1
    if moved_on:
        Webhook.objects.filter(pk=hook.pk).update(position_after_time=after_time,
                                                  position_after_id=after_id)
    return made


def _position(p) -> dict[str, Any]:
    return {"id": p.pk, "vehicle": p.vehicle_id, "device": p.device_id,
            "fix_time": _rfc3339(p.fix_time), "server_time": _rfc3339(p.server_time),
            "latitude": p.latitude, "longitude": p.longitude, "altitude_m": p.altitude,
            "speed_kmh": p.speed_kmh, "course": p.course, "ignition": p.ignition,
            "odometer_km": p.odometer_km}


# --- sending --------------------------------------------------------------------------


class Refused(Exception):
    """The URL may not be called (an internal address)."""


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return address.is_global and not address.is_multicast


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float,
         allow_private: bool) -> tuple[int, str]:
    """POST to ``url`` and return (status, the start of the body). No redirects.

    The host is resolved here and the connection made to an address that passed the
    check, so a name that resolves to an internal address (or is changed to, between a
    check and the request) is refused.
    """
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    sock = None
    error: Exception = Refused(f"{host} has no address")
    for family, kind, proto, _, address in socket.getaddrinfo(host, port,
                                                              type=socket.SOCK_STREAM):
        if not allow_private and not _public(ipaddress.ip_address(address[0].split("%")[0])):
            error = Refused(f"{host} resolves to an internal address ({address[0]})")
            continue
        candidate = socket.socket(family, kind, proto)
        candidate.settimeout(timeout)
        try:
            candidate.connect(address)
        except OSError as failure:
            candidate.close()
            error = failure
            continue
        sock = candidate
        break
    if sock is None:
        raise error
    if https:
        context = ssl.create_default_context()
        sock = context.wrap_socket(sock, server_hostname=host)
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.sock = sock
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        text = response.read(EXCERPT * 4).decode("utf-8", "replace")[:EXCERPT]
        return response.status, text
    finally:
        conn.close()


def backoff(attempts: int) -> timedelta:
    seconds = settings.WEBHOOK_RETRY_BASE_S * 2 ** max(0, attempts - 1)
    return timedelta(seconds=min(seconds, settings.WEBHOOK_RETRY_MAX_S))


@dataclass
class _Outcome:
    status: int | None
    body: str
    error: str
    duration_ms: int


def _send(delivery: WebhookDelivery) -> _Outcome:
    """One attempt (no database: runs in the sending pool)."""
    body = body_of(delivery.payload)
    headers = {
        "Content-Type": "application/json", "User-Agent": USER_AGENT,
        "X-Fleetbook-Event": delivery.event_type,
        "X-Fleetbook-Signature": sign(delivery.webhook.secret, body),
        "X-Fleetbook-Delivery": str(delivery.pk),
        "X-Fleetbook-Attempt": str(delivery.attempts + 1),
        "Idempotency-Key": delivery.idempotency_key,
    }
    started = time.monotonic()
    try:
        status, text = post(delivery.webhook.url, body, headers,
                            timeout=settings.WEBHOOK_TIMEOUT_S,
                            allow_private=settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES)
        error = "" if 200 <= status < 300 else f"HTTP {status}"
    except (OSError, http.client.HTTPException, Refused, ValueError) as failure:
        status, text, error = None, "", f"{type(failure).__name__}: {failure}"
    return _Outcome(status, text, error[:300], round((time.monotonic() - started) * 1000))


def deliver_due(now: datetime | None = None, limit: int = 50,
                pool: ThreadPoolExecutor | None = None) -> int:
    """Attempt the deliveries that are due; returns the number attempted."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.WEBHOOK_TIMEOUT_S * 2 + 30)
    due = list(
        WebhookDelivery.objects.select_related("webhook")
        .filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now, webhook__active=True)
        .order_by("next_attempt_at", "pk")[:limit]
    )
    # Claim each (another worker may be looking at the same rows): push its next attempt
    # past the time a send can take; the outcome then sets it properly.
    claimed = [d for d in due if WebhookDelivery.objects.filter(
        pk=d.pk, status=DeliveryStatus.PENDING, next_attempt_at=d.next_attempt_at,
    ).update(next_attempt_at=now + lease)]
    if not claimed:
        return 0
    outcomes = list((pool.map if pool is not None else map)(_send, claimed))
    for delivery, outcome in zip(claimed, outcomes, strict=True):
        _record(delivery, outcome)
    return len(claimed)


def _record(delivery: WebhookDelivery, outcome: _Outcome) -> None:
    now = timezone.now()
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.response_status = outcome.status
    delivery.response_body = outcome.body
    delivery.error = outcome.error
    delivery.attempt_log = [*delivery.attempt_log[-19:], {
        "attempt": delivery.attempts, "at": _rfc3339(now), "status": outcome.status,
        "error": outcome.error, "duration_ms": outcome.duration_ms,
    }]
    if not outcome.error:
        delivery.status = DeliveryStatus.SUCCEEDED
        delivery.delivered_at = now
    elif delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        delivery.status = DeliveryStatus.FAILED
        logger.warning("Webhook delivery %s to %s failed for good after %d attempts: %s",
                       delivery.pk, delivery.webhook.url, delivery.attempts, outcome.error)
    else:
        delivery.next_attempt_at = now + backoff(delivery.attempts)
    delivery.save(update_fields=[
        "attempts", "last_attempt_at", "response_status", "response_body", "error",
        "attempt_log", "status", "delivered_at", "next_attempt_at",
    ])


# --- the worker -----------------------------------------------------------------------


class WebhookWorker:
    """``fan_out`` and ``deliver_due`` every ``poll_s``, in a thread or in the foreground."""

    def __init__(self, poll_s: float | None = None, senders: int = 8):
        self.poll_s = settings.WEBHOOK_POLL_S if poll_s is None else poll_s
        self.pool = ThreadPoolExecutor(senders, thread_name_prefix="webhook-send")
        self.stopping = threading.Event()
        self.failures = 0
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """One cycle; returns the number of deliveries attempted."""
        fan_out()
        attempted = 0
        while True:  # a backlog goes out at once, not 50 a poll
            count = deliver_due(pool=self.pool)
            attempted += count
            if count == 0 or self.stopping.is_set():
                return attempted

    def run(self) -> None:
        failing = False
        try:
            while not self.stopping.is_set():
                try:
                    self.run_once()
                    if failing:
                        logger.info("Webhooks: database is back")
                    failing = False
                except DatabaseError as error:
                    self.failures += 1
                    if not failing:
                        logger.warning("Webhooks: database unavailable (%s); retrying", error)
                    failing = True
                    with contextlib.suppress(DatabaseError):
                        connection.close()
                    close_old_connections()
                except Exception:
                    self.failures += 1
                    logger.exception("Webhooks: a cycle failed")
                self.stopping.wait(self.poll_s)
        finally:
            with contextlib.suppress(DatabaseError):
                connection.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.pool.shutdown(wait=False)


def start_webhook_worker(service) -> WebhookWorker | None:
    """Deliver webhooks from the ingest process (``WEBHOOKS_IN_INGEST``); one line in
    ``start_ingest``. Reachable as ``service.webhooks``; stopped with the service."""
    if not getattr(settings, "WEBHOOKS_IN_INGEST", True):
        return None
    import asyncio

    worker = WebhookWorker()
    worker.start()

    async def stop() -> None:
        await asyncio.get_running_loop().run_in_executor(None, worker.stop)

    service._closers.append(stop)
    service.webhooks = worker
    return worker
