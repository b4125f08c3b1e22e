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
        indexes = [
            models.Index(fields=["vehicle", "fix_time"], name="position_vehicle_time"),
            # The API's position feed pages through (server_time, id).
            models.Index(fields=["server_time", "id"], name="position_server_time"),
        ]

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
    unit_status = models.JSONField(
        default=dict, blank=True,
        help_text="What the unit last said about itself (heartbeats, alarm packets): "
        "battery and GSM level, charging, external voltage..., with the time it said it.",
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


class SignalSample(models.Model):
    """One stored value of a vehicle signal (thinned: see telematics.ingest.thinning)."""

    vehicle = models.ForeignKey(Vehicle, on_delete=models.CASCADE, related_name="samples")
    device = models.ForeignKey(Device, null=True, on_delete=models.SET_NULL, related_name="+")
    signal = models.CharField(max_length=64)
    time = models.DateTimeField()
    value = models.FloatField()
    source = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["time"]
        constraints = [
            models.UniqueConstraint(fields=["vehicle", "signal", "time"], name="sample_once")
        ]

    def __str__(self) -> str:
        return f"{self.vehicle_id} {self.signal}={self.value} @ {self.time:%Y-%m-%d %H:%M:%S}"


class Fault(models.Model):
    """A diagnostic trouble code: open from first report until its source stops listing it."""

    vehicle = models.ForeignKey(Vehicle, on_delete=models.CASCADE, related_name="faults")
    code = models.CharField(max_length=32)
    source = models.CharField(max_length=64)
    description = models.CharField(max_length=200, blank=True)
    spn = models.PositiveIntegerField(null=True, blank=True)
    fmi = models.PositiveSmallIntegerField(null=True, blank=True)
    occurrence = models.PositiveSmallIntegerField(null=True, blank=True)
    lamps = models.JSONField(default=dict, blank=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-first_seen"]
        constraints = [
            models.UniqueConstraint(
                fields=["vehicle", "code", "source"], condition=models.Q(closed_at=None),
                name="fault_open_once",
            )
        ]

    def __str__(self) -> str:
        return f"{self.code} on {self.vehicle_id} ({'open' if self.is_open else 'closed'})"

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


class Event(models.Model):
    """Something a fleet manager is told about: fault opened, service due, and so on."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE,
                                     related_name="events")
    vehicle = models.ForeignKey(Vehicle, null=True, blank=True, on_delete=models.CASCADE,
                                related_name="events")
    type = models.CharField(max_length=40)
    time = models.DateTimeField()
    attributes = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    dispatched = models.BooleanField(
        default=False, editable=False,
        help_text="Sent to the live feed and the alert rules' e-mail recipients "
        "(telematics.alerts.worker claims undispatched events, whoever wrote them).",
    )

    class Meta:
        ordering = ["-time"]
        indexes = [
            models.Index(fields=["organisation", "time"], name="event_org_time"),
            models.Index(fields=["vehicle", "time"], name="event_vehicle_time"),
            models.Index(fields=["id"], condition=models.Q(dispatched=False),
                         name="event_undispatched"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.vehicle_id} @ {self.time:%Y-%m-%d %H:%M}"


class DbcFile(models.Model):
    """A DBC file for a vehicle model, and which of its signals are which platform signal.

    ``mapping`` is ``{"MessageName.SignalName": "<canonical signal key>"}``; the vehicles
    listed decode their raw CAN frames with it (before the generic OBD-II/J1939 decoders).
    """

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE,
                                     related_name="dbc_files")
    name = models.CharField(max_length=200)
    dbc_text = models.TextField("DBC file")
    mapping = models.JSONField(default=dict, blank=True)
    vehicles = models.ManyToManyField(Vehicle, blank=True, related_name="dbc_files")
    uploaded = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "DBC file"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from telematics.can.dbc import DbcDecoder
        from telematics.can.errors import CanDecodeError

        try:
            DbcDecoder(self.dbc_text, self.mapping or {})
        except CanDecodeError as error:
            raise ValidationError({"dbc_text": str(error)}) from error


class ServicePlan(models.Model):
    """Maintenance due every so many km, engine hours and/or days, whichever comes first."""

    vehicle = models.ForeignKey(Vehicle, on_delete=models.CASCADE,
                                related_name="service_plans")
    name = models.CharField(max_length=100)
    interval_km = models.FloatField(null=True, blank=True)
    interval_hours = models.FloatField(null=True, blank=True)
    interval_days = models.PositiveIntegerField(null=True, blank=True)
    due_soon_km = models.FloatField(default=1000.0)
    due_soon_hours = models.FloatField(default=25.0)
    due_soon_days = models.PositiveIntegerField(default=14)
    last_done_at = models.DateTimeField()
    last_done_odometer_km = models.FloatField(null=True, blank=True)
    last_done_engine_hours = models.FloatField(null=True, blank=True)
    state = models.CharField(max_length=10, default="ok", editable=False)

    class Meta:
        ordering = ["vehicle", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.vehicle})"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if not (self.interval_km or self.interval_hours or self.interval_days):
            raise ValidationError("A service plan needs an interval in km, hours or days.")


class ServiceRecord(models.Model):
    plan = models.ForeignKey(ServicePlan, on_delete=models.CASCADE, related_name="records")
    done_at = models.DateTimeField()
    odometer_km = models.FloatField(null=True, blank=True)
    engine_hours = models.FloatField(null=True, blank=True)
    note = models.TextField(blank=True)
    recorded_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-done_at"]

    def __str__(self) -> str:
        return f"{self.plan.name} done {self.done_at:%Y-%m-%d}"


class Geofence(models.Model):
    """A named area: a GeoJSON Polygon, or a circle (a GeoJSON Point and ``radius_m``).

    Vehicles entering and leaving it become ``geofence_enter``/``geofence_exit`` events
    (see ``telematics.alerts``); an optional speed limit applies inside it to the alert
    rules that watch overspeed. ``revision`` goes up whenever the shape changes, which
    makes every vehicle's inside/outside state with it start afresh.
    """

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE,
                                     related_name="geofences")
    name = models.CharField(max_length=100)
    geometry = models.JSONField(help_text="GeoJSON: a Polygon, or a Point with radius_m.")
    radius_m = models.FloatField(null=True, blank=True,
                                 help_text="Radius of a circle (a Point) in metres.")
    speed_limit_kmh = models.FloatField(null=True, blank=True)
    colour = models.CharField(max_length=7, default="#0b6bcb")
    revision = models.PositiveIntegerField(default=1, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["organisation", "name"],
                                    name="geofence_name_unique_in_organisation")
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            old = Geofence.objects.filter(pk=self.pk).values("geometry", "radius_m").first()
            if old and (old["geometry"] != self.geometry or old["radius_m"] != self.radius_m):
                self.revision += 1
                if kwargs.get("update_fields") is not None:
                    kwargs["update_fields"] = {*kwargs["update_fields"], "revision"}
        super().save(*args, **kwargs)

    def shape(self):
        from telematics.alerts.geometry import parse_geometry

        return parse_geometry(self.geometry, self.radius_m)

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from telematics.alerts.geometry import GeometryError

        try:
            self.shape()
        except GeometryError as error:
            raise ValidationError({"geometry": str(error)}) from error


class AlertRule(models.Model):
    """Which events to watch, with which thresholds, and whom to e-mail about them.

    Empty ``vehicles`` or ``geofences`` mean all of the organisation's. Thresholds:
    ``overspeed_kmh`` for at least ``overspeed_min_s``, ``idle_minutes`` (ignition on,
    standing), ``low_fuel_percent``, ``offline_minutes``; see ``telematics.alerts.engine``.
    """

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE,
                                     related_name="alert_rules")
    name = models.CharField(max_length=100)
    event_types = models.JSONField(default=list, help_text="Event types the rule watches.")
    vehicles = models.ManyToManyField(Vehicle, blank=True, related_name="+")
    geofences = models.ManyToManyField(Geofence, blank=True, related_name="alert_rules")
    overspeed_kmh = models.FloatField(null=True, blank=True)
    overspeed_min_s = models.PositiveIntegerField(default=0)
    idle_minutes = models.PositiveIntegerField(null=True, blank=True)
    low_fuel_percent = models.FloatField(null=True, blank=True)
    offline_minutes = models.PositiveIntegerField(null=True, blank=True)
    recipients = models.JSONField(default=list, blank=True,
                                  help_text="E-mail addresses told of every event.")
    active = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class VehicleAlertState(models.Model):
    """Where a vehicle stands with each geofence and rule (see telematics.alerts.engine).

    Kept so that a restarted ingest neither forgets that a vehicle is inside a geofence
    nor fires an alert twice.
    """

    vehicle = models.OneToOneField(Vehicle, primary_key=True, on_delete=models.CASCADE,
                                   related_name="alert_state")
    last_fix_time = models.DateTimeField(null=True, blank=True)
    state = models.JSONField(default=dict, blank=True)
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"alert state of {self.vehicle_id}"
