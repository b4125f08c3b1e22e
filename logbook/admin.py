"""Admin for the logbook. Trips, revisions and derivation state are read-only here.

A trip is changed only through ``logbook.services`` (which appends revisions to the
hash chain); an admin form that saved a trip directly would show up as tampering in
``verify_logbook``.
"""

from django.contrib import admin

from logbook.models import (
    AddressCache,
    DriverSession,
    LogbookSettings,
    NamedPlace,
    OdometerGap,
    Trip,
    TripCheckpoint,
    TripRevision,
    VehicleLogbook,
    VehicleTripState,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class RevisionInline(admin.TabularInline):
    model = TripRevision
    fields = ["seq", "time", "actor_name", "interface", "field", "old_value", "new_value",
              "reason"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["seq"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Trip)
class TripAdmin(ReadOnlyAdmin):
    list_display = ["id", "vehicle", "start_time", "end_time", "distance_m", "category",
                    "driver", "status", "locked_at"]
    list_filter = ["organisation", "category", "status", "origin"]
    date_hierarchy = "start_time"
    search_fields = ["vehicle__name", "start_address", "end_address", "purpose", "partner"]
    inlines = [RevisionInline]


@admin.register(TripRevision)
class TripRevisionAdmin(ReadOnlyAdmin):
    list_display = ["vehicle", "seq", "trip", "time", "actor_name", "interface", "field"]
    list_filter = ["interface", "field"]
    search_fields = ["trip__id", "actor_name"]


@admin.register(OdometerGap)
class OdometerGapAdmin(ReadOnlyAdmin):
    list_display = ["vehicle", "from_time", "to_time", "from_km", "to_km", "source", "status",
                    "note"]
    list_filter = ["status", "source"]


@admin.register(VehicleTripState)
class VehicleTripStateAdmin(ReadOnlyAdmin):
    list_display = ["vehicle", "last_fix_time", "closed", "driving_since", "chain_seq",
                    "updated"]


@admin.register(TripCheckpoint)
class TripCheckpointAdmin(ReadOnlyAdmin):
    list_display = ["vehicle", "time", "last_fix_time"]


@admin.register(AddressCache)
class AddressCacheAdmin(admin.ModelAdmin):
    list_display = ["address", "provider", "lat_key", "lon_key", "created"]
    search_fields = ["address"]


@admin.register(LogbookSettings)
class LogbookSettingsAdmin(admin.ModelAdmin):
    list_display = ["organisation", "edit_window_days", "parking_s", "stop_radius_m",
                    "close_after_s"]


@admin.register(VehicleLogbook)
class VehicleLogbookAdmin(admin.ModelAdmin):
    list_display = ["vehicle", "default_category", "default_purpose"]


@admin.register(NamedPlace)
class NamedPlaceAdmin(admin.ModelAdmin):
    list_display = ["name", "organisation", "kind", "latitude", "longitude", "radius_m",
                    "default_category", "partner"]
    list_filter = ["organisation", "kind"]
    search_fields = ["name", "address", "partner"]


@admin.register(DriverSession)
class DriverSessionAdmin(admin.ModelAdmin):
    list_display = ["vehicle", "driver", "since", "until", "source"]
    list_filter = ["source"]
