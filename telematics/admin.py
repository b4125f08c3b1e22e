import re
from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.core.validators import validate_email
from django.urls import reverse
from django.utils.html import format_html

from telematics.alerts.engine import EVENT_TYPES
from telematics.models import (
    AlertRule,
    CommandResponse,
    DbcFile,
    Device,
    Event,
    Fault,
    Geofence,
    Position,
    ServicePlan,
    ServiceRecord,
    SignalSample,
    UnknownUnit,
    VehicleState,
)


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ["identifier", "protocol", "vehicle", "organisation", "active", "last_seen"]
    list_filter = ["organisation", "protocol", "active"]
    search_fields = ["identifier", "vehicle__name"]

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        # A claimed unit is no longer unknown.
        UnknownUnit.objects.filter(identifier=obj.identifier).delete()


@admin.register(UnknownUnit)
class UnknownUnitAdmin(admin.ModelAdmin):
    list_display = ["identifier", "protocol", "remote_address", "attempts", "first_seen",
                    "last_seen", "claim"]
    list_filter = ["protocol"]
    search_fields = ["identifier"]
    readonly_fields = ["identifier", "protocol", "remote_address", "first_seen", "last_seen",
                       "attempts"]

    @admin.display(description="Claim")
    def claim(self, obj: UnknownUnit) -> str:
        """One click opens the device form with the identifier and protocol filled in."""
        query = urlencode({"identifier": obj.identifier, "protocol": obj.protocol})
        url = reverse("admin:telematics_device_add") + "?" + query
        return format_html('<a class="button" href="{}">Register this unit</a>', url)

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Position)
class PositionAdmin(admin.ModelAdmin):
    list_display = ["device", "vehicle", "fix_time", "latitude", "longitude", "speed_kmh",
                    "ignition", "valid"]
    list_filter = ["device__organisation"]
    search_fields = ["device__identifier"]
    raw_id_fields = ["device", "vehicle"]
    show_full_result_count = False


@admin.register(VehicleState)
class VehicleStateAdmin(admin.ModelAdmin):
    list_display = ["vehicle", "fix_time", "latitude", "longitude", "speed_kmh", "ignition"]


@admin.register(CommandResponse)
class CommandResponseAdmin(admin.ModelAdmin):
    list_display = ["device", "received_time", "text"]
    search_fields = ["device__identifier", "text"]


@admin.register(SignalSample)
class SignalSampleAdmin(admin.ModelAdmin):
    list_display = ["vehicle", "signal", "value", "time", "source"]
    list_filter = ["signal"]
    raw_id_fields = ["vehicle", "device"]
    show_full_result_count = False


@admin.register(Fault)
class FaultAdmin(admin.ModelAdmin):
    list_display = ["vehicle", "code", "description", "first_seen", "last_seen", "closed_at"]
    list_filter = ["closed_at", "source"]
    search_fields = ["code", "vehicle__name"]


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["type", "vehicle", "time", "organisation"]
    list_filter = ["type", "organisation"]
    date_hierarchy = "time"


@admin.register(DbcFile)
class DbcFileAdmin(admin.ModelAdmin):
    """Upload a DBC and map its signals, e.g. {"EEC1.EngSpeed": "engine_speed"}."""

    list_display = ["name", "organisation", "uploaded"]
    filter_horizontal = ["vehicles"]


class ServiceRecordInline(admin.TabularInline):
    model = ServiceRecord
    extra = 0


@admin.register(ServicePlan)
class ServicePlanAdmin(admin.ModelAdmin):
    list_display = ["name", "vehicle", "state", "interval_km", "interval_hours",
                    "interval_days", "last_done_at"]
    list_filter = ["state"]
    inlines = [ServiceRecordInline]


class AlertRuleForm(forms.ModelForm):
    event_types = forms.MultipleChoiceField(choices=list(EVENT_TYPES.items()),
                                            widget=forms.CheckboxSelectMultiple)
    recipients = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="E-mail addresses, one a line or separated by commas.")

    class Meta:
        model = AlertRule
        fields = ["organisation", "name", "active", "event_types", "vehicles", "geofences",
                  "overspeed_kmh", "overspeed_min_s", "idle_minutes", "low_fuel_percent",
                  "offline_minutes", "recipients"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["recipients"] = "\n".join(self.instance.recipients or [])

    def clean_recipients(self) -> list[str]:
        addresses = [a.strip() for a in re.split(r"[\s,;]+", self.cleaned_data["recipients"])
                     if a.strip()]
        for address in addresses:
            validate_email(address)
        return addresses


@admin.register(Geofence)
class GeofenceAdmin(admin.ModelAdmin):
    list_display = ("name", "organisation", "radius_m", "speed_limit_kmh", "updated")
    list_filter = ("organisation",)
    search_fields = ("name",)
    readonly_fields = ("revision",)


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    form = AlertRuleForm
    list_display = ("name", "organisation", "active", "updated")
    list_filter = ("organisation", "active")
    filter_horizontal = ("vehicles", "geofences")
