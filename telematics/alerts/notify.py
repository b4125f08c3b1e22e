"""E-mail per alert rule, through Django's mail backend (EMAIL_* settings).

Each rule whose event types, vehicles and geofences match an event tells its recipients.
An event a rule fired itself (overspeed, idling, low fuel, offline: its ``rule``
attribute) goes to that rule alone. Events are collected per rule, so a burst becomes one
message per rule rather than one per event.
"""

from __future__ import annotations

import logging
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.utils import timezone

from telematics.alerts.engine import Rule
from telematics.alerts.presentation import summary

logger = logging.getLogger(__name__)


def rule_matches(rule: Rule, event) -> bool:
    attributes = event.attributes or {}
    if "rule" in attributes and attributes["rule"] != rule.id:
        return False
    if not rule.watches(event.type, event.vehicle_id):
        return False
    if event.type.startswith("geofence_") and "geofence" in attributes:
        return rule.covers_fence(attributes["geofence"])
    return True


def messages_for(events: Iterable, rules_of: dict[int, list[tuple[Rule, list[str]]]],
                 time_zones: dict[int, str]) -> list[EmailMessage]:
    """One message per rule with recipients and matching events."""
    per_rule: dict[int, tuple[Rule, list[str], list]] = {}
    collected: dict[int, list] = defaultdict(list)
    for event in events:
        for rule, recipients in rules_of.get(event.organisation_id, []):
            if recipients and rule_matches(rule, event):
                per_rule[rule.id] = (rule, recipients, [])
                collected[rule.id].append(event)
    messages = []
    base = getattr(settings, "SITE_URL", "").rstrip("/")
    for rule_id, (rule, recipients, _) in per_rule.items():
        events_of_rule = collected[rule_id]
        zone = zoneinfo.ZoneInfo(time_zones.get(events_of_rule[0].organisation_id) or "UTC")
        lines = []
        for event in events_of_rule:
            name = event.vehicle.name if event.vehicle_id and event.vehicle else None
            when = timezone.localtime(event.time, zone).strftime("%Y-%m-%d %H:%M:%S")
            lines.append(f"{when}  {summary(event.type, event.attributes, name)}")
        if len(events_of_rule) == 1:
            subject = f"[Fleetbook] {lines[0].split('  ', 1)[1]}"
        else:
            subject = f"[Fleetbook] {len(events_of_rule)} events: {rule.name}"
        body = "\n".join([
            f"Alert rule \"{rule.name}\":", "", *lines, "",
            f"Times are {zone.key}.",
            *([f"All events: {base}/events/"] if base else []),
        ])
        messages.append(EmailMessage(subject[:200], body, to=list(recipients)))
    return messages


def send(messages: list[EmailMessage]) -> int:
    """Send through one connection; a mail server failure is logged, never raised."""
    if not messages:
        return 0
    try:
        connection = get_connection(fail_silently=False)
        return connection.send_messages(messages) or 0
    except Exception:
        logger.exception("Sending %d alert e-mails failed", len(messages))
        return 0
