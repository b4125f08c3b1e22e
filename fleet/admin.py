from django.contrib import admin

from fleet.models import Driver, Membership, Organisation, Vehicle


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
