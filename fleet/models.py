"""Organisations, the people in them and the vehicles they run.

Every object a user can see hangs off an Organisation; selectors scope every query to
the requesting user's organisation (``fleet.selectors``).
"""

from __future__ import annotations

import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.text import slugify


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone such as 'Europe/Berlin'.")


class Organisation(models.Model):
    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=200, unique=True)
    time_zone = models.CharField(
        max_length=64, default="UTC", validators=[validate_time_zone],
        help_text="Times are stored in UTC and shown in this zone.",
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        if not self.slug:
            self.slug = slugify(self.name)[:200] or "organisation"
        super().save(*args, **kwargs)


class Role(models.TextChoices):
    ADMIN = "admin", "Fleet manager (admin)"
    DISPATCHER = "dispatcher", "Dispatcher"
    DRIVER = "driver", "Driver"


class Membership(models.Model):
    """A user's place in an organisation. A user belongs to one organisation."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership"
    )
    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=20, choices=Role.choices)

    def __str__(self) -> str:
        return f"{self.user} ({self.get_role_display()}, {self.organisation})"


class Driver(models.Model):
    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="drivers"
    )
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="driver",
    )
    name = models.CharField(max_length=200)
    identification_key = models.CharField(
        max_length=64, blank=True,
        help_text="RFID card or iButton id the unit reports when this driver logs on.",
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "identification_key"],
                condition=~models.Q(identification_key=""),
                name="driver_key_unique_in_organisation",
            )
        ]

    def __str__(self) -> str:
        return self.name


class Vehicle(models.Model):
    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="vehicles"
    )
    name = models.CharField(max_length=200)
    licence_plate = models.CharField(max_length=32, blank=True)
    vin = models.CharField("VIN", max_length=17, blank=True)
    make = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=100, blank=True)
    odometer_offset_km = models.FloatField(
        default=0.0,
        help_text="Added to the unit's odometer so the platform shows the dashboard reading.",
    )
    default_driver = models.ForeignKey(
        Driver, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "name"], name="vehicle_name_unique_in_organisation"
            )
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.default_driver and self.default_driver.organisation_id != self.organisation_id:
            raise ValidationError({"default_driver": "The driver belongs to another organisation."})


class ApiKey(models.Model):
    """A key a dispatch system or other integration uses instead of a person's login.

    A key acts as an admin of its organisation, without a user. Only a SHA-256 digest of
    the key is stored (keys are long and random, so a slow password hash adds nothing but
    latency to every request); the full key is shown once, when it is created. The
    prefix, stored in clear, finds the row and tells keys apart in lists and logs.
    Revoking keeps the row so the audit trail (who created it, when it was last used)
    survives.
    """

    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100, help_text="What uses the key, e.g. 'Dispatch'.")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+", editable=False,
    )
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True, editable=False)
    revoked = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the key was revoked."
    )

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
