"""The fleet manager's alert rule pages: ``/alert-rules/`` lists the organisation's rules,
``new/`` and ``<id>/`` create and change one, ``<id>/active/`` switches it off or on.

Server-rendered plain forms (no script: the site's CSP allows none inline, and a phone
needs none). Fleet managers edit; dispatchers see the same pages read-only, since they
act on the alerts and should know what raises one and who is told; drivers are refused
with a 403 that says why. The rules themselves: ``telematics.alerts.rules``.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from fleet.models import Organisation
from fleet.selectors import membership_of
from telematics.alerts.engine import EVENT_TYPES
from telematics.alerts.forms import AlertRuleForm
from telematics.alerts.rules import (
    FIELDS,
    can_edit_rules,
    can_read_rules,
    rules_visible_to,
    save_rule,
    set_active,
)
from telematics.models import AlertRule

LIST = "fleet/_alert_rules.html"
FORM = "fleet/_alert_rule_form.html"
READ_ONLY = "Only fleet managers change alert rules."
NOT_FOR_DRIVERS = "Alert rules are for fleet managers and dispatchers."


def _refuse(request: HttpRequest, reason: str) -> HttpResponse:
    return render(request, LIST, {"refused": reason, "rules": []}, status=403)


def _described(rule: AlertRule) -> AlertRule:
    """What the list shows of a rule, in words."""
    thresholds = []
    types = list(rule.event_types or [])
    if "overspeed" in types:
        limit = (f"above {rule.overspeed_kmh:g} km/h" if rule.overspeed_kmh is not None
                 else "above the geofence limits")
        held = f" for {rule.overspeed_min_s} s" if rule.overspeed_min_s else ""
        thresholds.append(f"Overspeed {limit}{held}")
    if "idle" in types and rule.idle_minutes:
        thresholds.append(f"idling over {rule.idle_minutes} min")
    if "low_fuel" in types and rule.low_fuel_percent is not None:
        thresholds.append(f"fuel below {rule.low_fuel_percent:g} %")
    if "offline" in types and rule.offline_minutes:
        thresholds.append(f"silent over {rule.offline_minutes} min")
    others = [EVENT_TYPES.get(t, t) for t in types
              if t not in ("overspeed", "idle", "low_fuel", "offline")]
    rule.described = "; ".join([*thresholds, *others]) or "Nothing"
    vehicles = [v.name for v in rule.vehicles.all()]
    rule.scope = (", ".join(vehicles[:5]) + (f" and {len(vehicles) - 5} more"
                                             if len(vehicles) > 5 else "")
                  if vehicles else "All vehicles")
    fences = [g.name for g in rule.geofences.all()]
    rule.fences = ", ".join(fences) if fences else ""
    return rule


@login_required
def rule_list(request: HttpRequest) -> HttpResponse:
    if not can_read_rules(request.user):
        return _refuse(request, NOT_FOR_DRIVERS)
    rules = (rules_visible_to(request.user).prefetch_related("vehicles", "geofences")
             .order_by("-active", "name", "pk"))
    return render(request, LIST, {
        "rules": [_described(rule) for rule in rules],
        "can_edit": can_edit_rules(request.user),
    })


@login_required
def rule_new(request: HttpRequest) -> HttpResponse:
    if not can_read_rules(request.user):
        return _refuse(request, NOT_FOR_DRIVERS)
    if not can_edit_rules(request.user):
        return _refuse(request, READ_ONLY)
    membership = membership_of(request.user)
    if membership is None:  # the platform operator: rules belong to an organisation
        return _refuse(request, "Create rules as a member of the organisation, or in the "
                                "admin.")
    return _edit(request, membership.organisation, None)


@login_required
def rule_edit(request: HttpRequest, pk: int) -> HttpResponse:
    if not can_read_rules(request.user):
        return _refuse(request, NOT_FOR_DRIVERS)
    rule = get_object_or_404(rules_visible_to(request.user).select_related("organisation"),
                             pk=pk)
    if not can_edit_rules(request.user):
        if request.method == "POST":
            return _refuse(request, READ_ONLY)
        form = AlertRuleForm(instance=rule, organisation=rule.organisation).read_only()
        return render(request, FORM, {"form": form, "rule": rule, "can_edit": False})
    return _edit(request, rule.organisation, rule)


def _edit(request: HttpRequest, organisation: Organisation,
          rule: AlertRule | None) -> HttpResponse:
    if request.method == "POST":
        form = AlertRuleForm(request.POST, instance=rule or AlertRule(
            organisation=organisation), organisation=organisation)
        if form.is_valid():
            data = {name: form.cleaned_data[name] for name in (*FIELDS, "vehicles",
                                                                "geofences")}
            saved = save_rule(organisation, data, rule=form.instance)
            messages.success(request, f"Saved “{saved.name}”.")
            return redirect("alert-rules")
        status = 400
    else:
        form = AlertRuleForm(instance=rule, organisation=organisation,
                             initial=None if rule else {"active": True})
        status = 200
    return render(request, FORM, {"form": form, "rule": rule, "can_edit": True},
                  status=status)


@login_required
@require_POST
def rule_active(request: HttpRequest, pk: int) -> HttpResponse:
    """Switch a rule off or on: ``active=0`` or ``active=1``."""
    if not can_read_rules(request.user):
        return _refuse(request, NOT_FOR_DRIVERS)
    rule = get_object_or_404(rules_visible_to(request.user), pk=pk)
    if not can_edit_rules(request.user):
        return _refuse(request, READ_ONLY)
    wanted = request.POST.get("active")
    if wanted not in ("0", "1"):
        messages.error(request, "Say active=1 or active=0.")
        return redirect("alert-rules")
    set_active(rule, wanted == "1")
    messages.success(request, f"“{rule.name}” is {'on' if rule.active else 'off'}.")
    return redirect("alert-rules")
