from django.contrib import admin, messages

from fleet.api.services import create_api_key, revoke_api_key
from fleet.models import ApiKey, Driver, Membership, Organisation, Vehicle


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
