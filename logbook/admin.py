from django.contrib import admin

from logbook.models import Trip


@admin.register(Trip)
class TripAdmin(admin.ModelAdmin):
    list_display = ["vehicle", "start_time", "end_time", "distance_m", "category"]
    list_filter = ["organisation", "category"]
    date_hierarchy = "start_time"
