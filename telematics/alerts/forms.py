"""The alert rule form of the fleet manager's page (``telematics.alerts.rule_views``).

The checks a rule must pass are ``telematics.alerts.rules.rule_problems``, the same the
API applies; this form only reads the fields as a person types them (e-mail addresses
one a line or separated by commas).
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from fleet.models import Organisation, Vehicle
from telematics.alerts.engine import EVENT_TYPES
from telematics.alerts.rules import MAX_RECIPIENTS, rule_problems
from telematics.models import AlertRule, Geofence

# The kinds of event a rule watches, in the order a fleet manager thinks of them.
RULE_TYPES = ["overspeed", "idle", "low_fuel", "offline", "geofence_enter", "geofence_exit",
              "fault_opened", "fault_closed", "service_due_soon", "service_overdue"]


class RecipientsField(forms.CharField):
    widget = forms.Textarea(attrs={"rows": 3, "autocomplete": "off", "spellcheck": "false"})

    def to_python(self, value: Any) -> list[str]:
        text = super().to_python(value) or ""
        return [part for part in re.split(r"[\s,;]+", text) if part]

    def prepare_value(self, value: Any) -> str:
        if isinstance(value, list | tuple):
            return "\n".join(value)
        return value or ""

    def validate(self, value: list[str]) -> None:
        if len(value) > MAX_RECIPIENTS:
            raise ValidationError(f"At most {MAX_RECIPIENTS} addresses.")
        wrong = []
        for address in value:
            try:
                validate_email(address)
            except ValidationError:
                wrong.append(address)
        if wrong:
            raise ValidationError(f"Not an e-mail address: {', '.join(wrong[:5])}.")

    def run_validators(self, value: list[str]) -> None:  # max_length applies to the text
        return None


class AlertRuleForm(forms.ModelForm):
    event_types = forms.MultipleChoiceField(
        label="Tell me about", widget=forms.CheckboxSelectMultiple,
        choices=[(kind, EVENT_TYPES[kind]) for kind in RULE_TYPES],
        error_messages={"required": "Choose at least one kind of event."})
    overspeed_kmh = forms.FloatField(label="Speed limit", required=False, min_value=1,
                                     max_value=400)
    overspeed_min_s = forms.IntegerField(label="for at least", required=False, min_value=0,
                                         max_value=3600, initial=0)
    idle_minutes = forms.IntegerField(label="Idling longer than", required=False,
                                      min_value=1, max_value=24 * 60)
    low_fuel_percent = forms.FloatField(label="Fuel below", required=False, min_value=1,
                                        max_value=100)
    offline_minutes = forms.IntegerField(label="Silent longer than", required=False,
                                         min_value=1, max_value=30 * 24 * 60)
    vehicles = forms.ModelMultipleChoiceField(
        queryset=Vehicle.objects.none(), required=False,
        widget=forms.SelectMultiple(attrs={"size": 6}),
        help_text="None chosen: every vehicle, those added later too.")
    geofences = forms.ModelMultipleChoiceField(
        queryset=Geofence.objects.none(), required=False,
        widget=forms.SelectMultiple(attrs={"size": 4}),
        help_text="For geofence events and speed limits; none chosen: every geofence.")
    recipients = RecipientsField(
        label="E-mail to", required=False, max_length=50 * 260,
        help_text="One address a line (or separated by commas). None: the rule shows its "
                  "events on the map and the events page only.")

    class Meta:
        model = AlertRule
        fields = ["name", "event_types", "overspeed_kmh", "overspeed_min_s", "idle_minutes",
                  "low_fuel_percent", "offline_minutes", "vehicles", "geofences",
                  "recipients", "active"]
        labels = {"active": "Active (switched off, it fires nothing and mails nobody)"}

    def __init__(self, *args: Any, organisation: Organisation, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.organisation = organisation
        self.fields["vehicles"].queryset = Vehicle.objects.filter(
            organisation=organisation).order_by("name", "pk")
        self.fields["geofences"].queryset = Geofence.objects.filter(
            organisation=organisation).order_by("name", "pk")
        self.fields["name"].widget.attrs.update(autocomplete="off", maxlength=100)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise ValidationError("Give the rule a name.")
        return name

    def clean_overspeed_min_s(self) -> int:
        return self.cleaned_data.get("overspeed_min_s") or 0

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        problems = rule_problems(
            data.get("event_types") or [], overspeed_kmh=data.get("overspeed_kmh"),
            geofences=data.get("geofences") or [], idle_minutes=data.get("idle_minutes"),
            low_fuel_percent=data.get("low_fuel_percent"),
            offline_minutes=data.get("offline_minutes"))
        for field, messages in problems.items():
            if field not in self.errors:
                for message in messages:
                    self.add_error(field, message)
        return data

    def read_only(self) -> AlertRuleForm:
        """The same form for a dispatcher: every field shown, none editable."""
        for field in self.fields.values():
            field.disabled = True
        return self
