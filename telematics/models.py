"""Telematics units, the positions they report, and each vehicle's latest state.

``Position`` grows to billions of rows. On PostgreSQL its table is range-partitioned by
fix time (see the 0002 migration); the unique (device, fix_time) constraint includes the
partition key so it holds across partitions and lets a resend be dropped with
``ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

from django.db import models

from fleet.models import Organisation, Vehicle


class Protocol(models.TextChoices):
    TELTONIKA = "teltonika", "Teltonika (Codec 8/8E/16)"
    GT06 = "gt06", "Concox GT06"
    NMEA = "nmea", "NMEA 0183"
    OSMAND = "osmand", "OsmAnd / Traccar Client (HTTP)"
    MQTT = "mqtt", "MQTT (JSON, NMEA, CAN)"
    COAP = "coap", "CoAP (JSON, NMEA)"


class Device(models.Model):
    """One telematics unit, identified by its IMEI or the identifier it reports."""

    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="devices"
    )
    identifier = models.CharField(max_length=64, unique=True)
    protocol = models.CharField(max_length=20, choices=Protocol.choices)
    vehicle = models.ForeignKey(
        Vehicle, null=True, blank=True, on_delete=models.SET_NULL, related_name="devices"
    )
    secret = models.CharField(
        max_length=128, blank=True,
        help_text="HTTP/MQTT/CoAP units must present this secret when it is set.",
    )
    active = models.BooleanField(default=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["identifier"]

    def __str__(self) -> str:
        return f"{self.identifier} ({self.protocol})"


class Position(models.Model):
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="positions")
    vehicle = models.ForeignKey(
        Vehicle, null=True, blank=True, on_delete=models.SET_NULL, related_name="positions"
    )
    fix_time = models.DateTimeField()
    server_time = models.DateTimeField()
    latitude = models.FloatField()
    longitude = models.FloatField()
    altitude = models.FloatField(null=True, blank=True)
    speed_kmh = models.FloatField(null=True, blank=True)
    course = models.FloatField(null=True, blank=True)
    satellites = models.SmallIntegerField(null=True, blank=True)
    hdop = models.FloatField(null=True, blank=True)
    valid = models.BooleanField(default=True)
    ignition = models.BooleanField(null=True, blank=True)
    odometer_km = models.FloatField(null=True, blank=True)
    attributes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["fix_time"]
        constraints = [
            models.UniqueConstraint(fields=["device", "fix_time"], name="position_unique_fix")
        ]
        indexes = [models.Index(fields=["vehicle", "fix_time"], name="position_vehicle_time")]

    def __str__(self) -> str:
        return f"{self.device_id} @ {self.fix_time:%Y-%m-%d %H:%M:%S}"


class VehicleState(models.Model):
    """The newest known fix and signals of a vehicle; never moved back by a late fix."""

    vehicle = models.OneToOneField(
        Vehicle, primary_key=True, on_delete=models.CASCADE, related_name="state"
    )
    device = models.ForeignKey(Device, null=True, on_delete=models.SET_NULL, related_name="+")
    fix_time = models.DateTimeField(null=True, blank=True)
    server_time = models.DateTimeField(null=True, blank=True)
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    altitude = models.FloatField(null=True, blank=True)
    speed_kmh = models.FloatField(null=True, blank=True)
    course = models.FloatField(null=True, blank=True)
    valid = models.BooleanField(null=True, blank=True)
    ignition = models.BooleanField(null=True, blank=True)
    odometer_km = models.FloatField(null=True, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    signals = models.JSONField(
        default=dict, blank=True, help_text="Latest value and time of each vehicle signal."
    )

    def __str__(self) -> str:
        return f"state of {self.vehicle_id}"


class UnknownUnit(models.Model):
    """A unit that tried to connect without being registered, so an admin can claim it."""

    identifier = models.CharField(max_length=64)
    protocol = models.CharField(max_length=20, choices=Protocol.choices)
    remote_address = models.CharField(max_length=100, blank=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["-last_seen"]
        constraints = [
            models.UniqueConstraint(fields=["identifier", "protocol"], name="unknown_unit_once")
        ]

    def __str__(self) -> str:
        return f"{self.identifier} ({self.protocol}, {self.attempts} attempts)"


class CommandResponse(models.Model):
    """A unit's answer to a server command (Teltonika Codec 12, GT06 0x15...)."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="responses")
    received_time = models.DateTimeField()
    text = models.TextField()

    class Meta:
        ordering = ["-received_time"]

    def __str__(self) -> str:
        return f"{self.device_id}: {self.text[:40]}"
