"""Alert rules: what a rule needs to be usable, and saving one. Shared by the API
(``fleet.api.alerts.AlertRuleSerializer``) and the fleet manager's pages
(``telematics.alerts.rule_views``), so both refuse the same rules with the same words.

Who may do what: fleet managers (organisation admins) create, change and switch rules
off and on; dispatchers read them (they act on the alerts, so they should know what
raises one and who is told); drivers do not see them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from fleet.models import Organisation, Role, Vehicle
from fleet.selectors import Principal, actor_of, organisations_visible_to
from telematics.models import AlertRule, Geofence

READERS = frozenset({Role.ADMIN, Role.DISPATCHER})
EDITORS = frozenset({Role.ADMIN})
MAX_RECIPIENTS = 50

# The threshold each event type needs, and what to say when it is missing.
THRESHOLDS: dict[str, tuple[str, str]] = {
    "idle": ("idle_minutes", "Long idling needs minutes."),
    "low_fuel": ("low_fuel_percent", "Low fuel needs a %."),
    "offline": ("offline_minutes", "Offline needs minutes."),
}
OVERSPEED_NEEDS = "Overspeed needs a limit in km/h (or geofences with a speed limit)."
FIELDS = ("name", "event_types", "overspeed_kmh", "overspeed_min_s", "idle_minutes",
          "low_fuel_percent", "offline_minutes", "recipients", "active")


def can_read_rules(principal: Principal) -> bool:
    actor = actor_of(principal)
    return actor.is_superuser or actor.role in READERS


def can_edit_rules(principal: Principal) -> bool:
    actor = actor_of(principal)
    return actor.is_superuser or actor.role in EDITORS


def rules_visible_to(principal: Principal) -> QuerySet[AlertRule]:
    """The organisation's rules for managers and dispatchers; none for drivers."""
    if not can_read_rules(principal):
        return AlertRule.objects.none()
    return AlertRule.objects.filter(organisation__in=organisations_visible_to(principal))


def rule_problems(event_types: Iterable[str], *, overspeed_kmh: float | None,
                  geofences: Iterable[Geofence], idle_minutes: int | None,
                  low_fuel_percent: float | None,
                  offline_minutes: int | None) -> dict[str, list[str]]:
    """What keeps the rule from ever firing, by field: each watched type whose threshold
    is missing. Overspeed may do without a limit of its own when it watches geofences
    that have one (the limit inside them)."""
    types = set(event_types)
    values = {"idle_minutes": idle_minutes, "low_fuel_percent": low_fuel_percent,
              "offline_minutes": offline_minutes}
    problems: dict[str, list[str]] = {}
    if "overspeed" in types and overspeed_kmh is None and not any(
            g.speed_limit_kmh for g in geofences):
        problems["overspeed_kmh"] = [OVERSPEED_NEEDS]
    for kind, (name, message) in THRESHOLDS.items():
        if kind in types and values[name] is None:
            problems[name] = [message]
    return problems


@transaction.atomic
def save_rule(organisation: Organisation, data: dict[str, Any],
              rule: AlertRule | None = None) -> AlertRule:
    """Create (``rule`` None) or change a rule from checked data (``FIELDS`` plus
    ``vehicles`` and ``geofences``, the organisation's own). Empty vehicles or
    geofences mean all of them. The ingest's alert worker re-reads rules whose
    ``updated`` moved, so the change applies to the next fix."""
    rule = rule or AlertRule(organisation=organisation)
    for name in FIELDS:
        if name in data:
            setattr(rule, name, data[name])
    rule.recipients = list(dict.fromkeys(rule.recipients or []))
    rule.save()
    if "vehicles" in data:
        rule.vehicles.set(data["vehicles"])
    if "geofences" in data:
        rule.geofences.set(data["geofences"])
    return rule


def set_active(rule: AlertRule, active: bool) -> AlertRule:
    """Switch a rule off (nothing fires, nobody is mailed) or back on."""
    rule.active = active
    rule.save(update_fields=["active", "updated"])
    return rule


def choices_for(principal: Principal) -> tuple[QuerySet[Vehicle], QuerySet[Geofence]]:
    """The vehicles and geofences a rule of the principal's organisation may name."""
    from fleet.selectors import vehicles_visible_to

    organisations = organisations_visible_to(principal)
    return (vehicles_visible_to(principal).order_by("name", "pk"),
            Geofence.objects.filter(organisation__in=organisations).order_by("name", "pk"))
