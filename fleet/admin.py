from django.contrib import admin, messages

from fleet.api.services import create_api_key, revoke_api_key
from fleet.models import (
    ApiKey,
    Driver,
    Job,
    JobStop,
    Membership,
    Organisation,
    UnitCommand,
    Vehicle,
    Webhook,
    WebhookDelivery,
)


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "time_zone", "created"]
    search_fields = ["name"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organisation", "role"]
    list_filter = ["organisation", "role"]
    search_fields = ["user__username"]


@admin.register(Vehicle)
class VehicleAdmin(admin.ModelAdmin):
    list_display = ["name", "licence_plate", "organisation", "make", "model"]
    list_filter = ["organisation"]
    search_fields = ["name", "licence_plate", "vin"]


@admin.register(Driver)
class DriverAdmin(admin.ModelAdmin):
    list_display = ["name", "organisation", "user", "identification_key"]
    list_filter = ["organisation"]
    search_fields = ["name", "identification_key"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are made here or through the API; the full key is shown once, on saving."""

    list_display = ["name", "prefix", "organisation", "created_by", "created", "last_used",
                    "revoked"]
    list_filter = ["organisation"]
    search_fields = ["name", "prefix"]
    fields = ["organisation", "name", "prefix", "created_by", "created", "last_used", "revoked"]
    readonly_fields = ["prefix", "created_by", "created", "last_used", "revoked"]
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "organisation"] if obj else self.readonly_fields

    def save_model(self, request, obj, form, change) -> None:
        if change:
            obj.save(update_fields=["name"])
            return
        key, raw_key = create_api_key(obj.organisation, obj.name, created_by=request.user)
        obj.pk, obj.prefix = key.pk, key.prefix
        messages.warning(
            request, f"The new key is {raw_key} . Copy it now: it is not shown again."
        )

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead, so the audit trail stays

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset) -> None:
        for key in queryset:
            revoke_api_key(key)
        messages.success(request, f"Revoked {queryset.count()} key(s).")


# --- Dispatch (made through the API; here to look at, and to switch webhooks off) ----


class JobStopInline(admin.TabularInline):
    model = JobStop
    extra = 0
    readonly_fields = ["arrived_at", "departed_at"]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["title", "reference", "organisation", "vehicle", "driver", "status",
                    "status_changed"]
    list_filter = ["organisation", "status"]
    search_fields = ["title", "reference"]
    readonly_fields = ["status", "status_changed", "created_by", "created", "updated"]
    inlines = [JobStopInline]


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(UnitCommand)
class UnitCommandAdmin(ReadOnlyAdmin):
    list_display = ["text", "device", "status", "requested_by", "created", "sent_at",
                    "answered_at"]
    list_filter = ["status"]
    search_fields = ["text", "device__identifier", "requested_by"]


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ["url", "organisation", "active", "created"]
    list_filter = ["organisation", "active"]
    fields = ["organisation", "url", "description", "event_types", "active", "created_by",
              "created"]
    readonly_fields = ["organisation", "url", "event_types", "created_by", "created"]

    def has_add_permission(self, request) -> bool:
        return False  # made through the API, which shows the secret once


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["event_type", "webhook", "status", "attempts", "response_status",
                    "next_attempt_at", "created"]
    list_filter = ["status", "event_type"]
