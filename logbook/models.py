"""Trips derived from the position stream: the entries of a driver's logbook.

First cut: the base data a trip carries. The logbook issue adds classification,
revisions and locking on top.
"""

from __future__ import annotations

from django.db import models

from fleet.models import Driver, Organisation, Vehicle


class Category(models.TextChoices):
    BUSINESS = "business", "Business"
    PRIVATE = "private", "Private"
    COMMUTE = "commute", "Commute"


class Trip(models.Model):
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="trips")
    vehicle = models.ForeignKey(Vehicle, on_delete=models.CASCADE, related_name="trips")
    driver = models.ForeignKey(
        Driver, null=True, blank=True, on_delete=models.SET_NULL, related_name="trips"
    )
    start_time = models.DateTimeField()
    end_time = models.DateTimeField(null=True, blank=True)
    start_latitude = models.FloatField()
    start_longitude = models.FloatField()
    end_latitude = models.FloatField(null=True, blank=True)
    end_longitude = models.FloatField(null=True, blank=True)
    start_address = models.CharField(max_length=300, blank=True)
    end_address = models.CharField(max_length=300, blank=True)
    start_odometer_km = models.FloatField(null=True, blank=True)
    end_odometer_km = models.FloatField(null=True, blank=True)
    distance_m = models.FloatField(default=0.0)
    max_speed_kmh = models.FloatField(null=True, blank=True)
    category = models.CharField(max_length=20, choices=Category.choices, blank=True)

    class Meta:
        ordering = ["-start_time"]
        constraints = [
            models.UniqueConstraint(fields=["vehicle", "start_time"], name="trip_unique_start")
        ]
        indexes = [models.Index(fields=["vehicle", "start_time"], name="trip_vehicle_start")]

    def __str__(self) -> str:
        return f"{self.vehicle} {self.start_time:%Y-%m-%d %H:%M}"
