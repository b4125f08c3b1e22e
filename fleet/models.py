"""Organisations, the people in them and the vehicles they run.

Every object a user can see hangs off an Organisation; selectors scope every query to
the requesting user's organisation (``fleet.selectors``).
"""

from __future__ import annotations

import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
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


class LoginToken(models.Model):
    """A bearer token a person got from ``POST /api/v1/auth/token/`` with their password.

    One per login (each app or script logging in gets its own, so logging out one does
    not log out the others), valid for ``API_TOKEN_TTL_S`` from issue: a token is a
    password stand-in that leaks into shell histories and config files, so it must run
    out; an integration that runs for months uses an organisation API key instead.
    Only a SHA-256 digest is stored, as for API keys. An expired row is kept a while so
    the API can tell its client that the token expired rather than that it is unknown.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="login_tokens"
    )
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    last_used = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["expires_at"], name="login_token_expiry")]

    def __str__(self) -> str:
        return f"token of {self.user_id} until {self.expires_at:%Y-%m-%d %H:%M}"


# --- Dispatch: jobs with stops, unit commands, webhooks ----------------------------------
# The services live in fleet.jobs, fleet.unit_commands and fleet.webhooks.


class JobStatus(models.TextChoices):
    PLANNED = "planned", "Planned"
    ASSIGNED = "assigned", "Assigned"
    EN_ROUTE = "en_route", "En route"
    ARRIVED = "arrived", "Arrived"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Job(models.Model):
    """A dispatch job: ordered stops, assigned to a vehicle or a driver (or both).

    Status changes go through ``fleet.jobs.change_status`` (which checks the transition
    and records a ``job_status`` event); ``status`` is never written directly.
    """

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE,
                                     related_name="jobs")
    reference = models.CharField(
        max_length=100, blank=True,
        help_text="The dispatch system's own id of the job (order number, ...).",
    )
    title = models.CharField(max_length=200)
    notes = models.TextField(blank=True)
    vehicle = models.ForeignKey(Vehicle, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="jobs")
    driver = models.ForeignKey(Driver, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="jobs")
    status = models.CharField(max_length=10, choices=JobStatus.choices,
                              default=JobStatus.PLANNED, editable=False)
    status_changed = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+", editable=False,
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [
            models.Index(fields=["organisation", "status"], name="job_org_status"),
            models.Index(fields=["status", "vehicle"], name="job_status_vehicle"),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.get_status_display()})"


class JobStop(models.Model):
    """One stop of a job: an address and/or coordinates, a time window, notes.

    Arrival and departure are detected from the assigned vehicle's positions when the
    stop has coordinates (``fleet.jobs.JobTracker``): inside ``radius_m`` is arrival,
    beyond the larger exit radius is departure.
    """

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="stops")
    sequence = models.PositiveIntegerField(help_text="Order of the stop in the job, from 1.")
    address = models.CharField(max_length=300, blank=True)
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    radius_m = models.FloatField(
        default=150.0, help_text="Arrival is reported within this distance of the point."
    )
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    notes = models.TextField(blank=True)
    arrived_at = models.DateTimeField(null=True, blank=True, editable=False)
    departed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["job", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["job", "sequence"], name="job_stop_sequence_once"),
        ]

    def __str__(self) -> str:
        return f"{self.job_id}#{self.sequence} {self.address or (self.latitude, self.longitude)}"

    @property
    def state(self) -> str:
        """pending, arrived (at the stop now) or departed."""
        if self.arrived_at is None:
            return "pending"
        return "arrived" if self.departed_at is None else "departed"


class CommandStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENT = "sent", "Sent"
    ANSWERED = "answered", "Answered"
    FAILED = "failed", "Failed"


class UnitCommand(models.Model):
    """A text command for a unit, who asked for it, and the unit's answer.

    Written ``queued`` by the API; the ingest process holding the unit's connection
    sends it (``fleet.unit_commands``) and links the unit's response.
    """

    device = models.ForeignKey("telematics.Device", on_delete=models.CASCADE,
                               related_name="commands")
    text = models.CharField(max_length=500)
    status = models.CharField(max_length=10, choices=CommandStatus.choices,
                              default=CommandStatus.QUEUED)
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    sent_by_api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
    )
    requested_by = models.CharField(
        max_length=200, help_text="Who asked for it, kept even if the login is deleted."
    )
    created = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    response = models.ForeignKey(
        "telematics.CommandResponse", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="unit_commands",
    )
    response_text = models.TextField(blank=True)
    error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [
            models.Index(fields=["status", "created"], name="unit_command_status"),
        ]

    def __str__(self) -> str:
        return f"{self.text!r} to {self.device_id} ({self.status})"


class Webhook(models.Model):
    """A URL of an organisation's that is told about events of the chosen types.

    Deliveries are signed with ``secret`` (HMAC-SHA256 of the body), which the API shows
    once, when the webhook is made or its secret rotated. ``event_cursor`` is the id of
    the last Event row considered for it; ``position_after_*`` the same for positions.
    """

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE,
                                     related_name="webhooks")
    url = models.URLField(max_length=500)
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(default=list)
    secret = models.CharField(max_length=100, editable=False)
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+", editable=False,
    )
    created = models.DateTimeField(auto_now_add=True)
    event_cursor = models.BigIntegerField(default=0, editable=False)
    position_after_time = models.DateTimeField(null=True, blank=True, editable=False)
    position_after_id = models.BigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return self.url


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One event (or batch of positions) for one webhook, until it is delivered.

    The payload is frozen when the delivery is made, so every attempt sends the same body
    with the same ``Idempotency-Key``; ``attempt_log`` keeps each attempt's outcome.
    """

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.BigIntegerField(null=True, blank=True,
                                      help_text="The Event row delivered (none for positions).")
    event_type = models.CharField(max_length=40)
    idempotency_key = models.CharField(max_length=64, unique=True)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices,
                              default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True, help_text="The start of the last answer.")
    error = models.CharField(max_length=300, blank=True)
    attempt_log = models.JSONField(default=list, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["webhook", "event_id"],
                                    condition=models.Q(event_id__isnull=False),
                                    name="webhook_event_once"),
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="webhook_delivery_due"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} to {self.webhook_id} ({self.status})"
