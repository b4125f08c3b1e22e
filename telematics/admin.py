from urllib.parse import urlencode

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from telematics.models import CommandResponse, Device, Position, UnknownUnit, VehicleState


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
