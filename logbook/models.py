"""The electronic logbook (Fahrtenbuch): trips, their revisions, and what derives them.

What the tax office needs, and how the models hold it:

- ``Trip``: one entry, derived from the position stream by ``logbook.tripstate``. Its
  base data (times, positions, addresses, odometer, distance, route) is written once
  when the trip is derived and never edited; the driver adds category, purpose,
  partner, destination and note within the edit window. Trips are never deleted: a
  correction cancels a trip visibly (``status``) and points at what replaced it.
- ``TripRevision``: every change to a trip, creation included, as an append-only row,
  chained per vehicle by SHA-256 (see ``logbook.chain``); ``verify_logbook`` recomputes
  the chain and the trips from it.
- ``OdometerGap``: the odometer moved between two trips without a recorded trip; an
  explicit entry the fleet manager explains.
- ``VehicleTripState`` and ``TripCheckpoint``: the derivation's state machine per
  vehicle, saved so a restart continues and a late fix replays from the trip boundary
  before it.
- ``LogbookSettings`` (per organisation), ``VehicleLogbook`` (per vehicle),
  ``NamedPlace``, ``AddressCache`` and ``DriverSession``: what derivation, geocoding,
  driver assignment and classification rules read.
"""

from __future__ import annotations

from dataclasses import fields as dataclass_fields
from datetime import time

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from fleet.models import Driver, Organisation, Vehicle
from logbook.tripstate import TripSettings

_DEFAULTS = TripSettings()


class Category(models.TextChoices):
    BUSINESS = "business", "Business"
    PRIVATE = "private", "Private"
    COMMUTE = "commute", "Commute"


class LogbookSettings(models.Model):
    """Every logbook threshold of one organisation; the defaults are for cars.

    Created on demand with the defaults (``logbook.services.logbook_settings_for``). The
    trip-derivation thresholds are those of ``logbook.tripstate.TripSettings`` (its
    docstring says why each default); changing them applies to live derivation from the
    next fix, and ``rebuild_trips`` re-derives history with them.
    """

    organisation = models.OneToOneField(
        Organisation, on_delete=models.CASCADE, related_name="logbook_settings"
    )
    # --- trip derivation (logbook.tripstate.TripSettings) ---------------------------------
    stop_speed_kmh = models.FloatField(
        default=_DEFAULTS.stop_speed_kmh, help_text="Below this a fix is at rest (km/h)."
    )
    moving_speed_kmh = models.FloatField(
        default=_DEFAULTS.moving_speed_kmh,
        help_text="Speed that proves real movement, above a parked receiver's noise (km/h).",
    )
    stop_radius_m = models.FloatField(
        default=_DEFAULTS.stop_radius_m,
        help_text="Fixes within this of where the vehicle came to rest belong to the stop.",
    )
    depart_radius_m = models.FloatField(
        default=_DEFAULTS.depart_radius_m,
        help_text="Without ignition, a trip starts only this far from the parked point.",
    )
    parking_s = models.FloatField(
        default=_DEFAULTS.parking_s,
        help_text="A stop this long (seconds) is a parking: the trip ends there.",
    )
    gap_max_s = models.FloatField(
        default=_DEFAULTS.gap_max_s, help_text="Longest silence (seconds) a trip bridges."
    )
    gap_speed_kmh = models.FloatField(
        default=_DEFAULTS.gap_speed_kmh,
        help_text="Speed assumed through a silence when deciding whether it is bridged.",
    )
    max_speed_kmh = models.FloatField(
        default=_DEFAULTS.max_speed_kmh, help_text="Faster apparent movement is a GPS jump."
    )
    jitter_m = models.FloatField(
        default=_DEFAULTS.jitter_m,
        help_text="Noise per step when the speed of fixes without speed is estimated.",
    )
    confirm_fixes = models.PositiveSmallIntegerField(
        default=_DEFAULTS.confirm_fixes,
        help_text="Fixes outside the stop radius needed to start a trip.",
    )
    odometer_tolerance_km = models.FloatField(
        default=_DEFAULTS.odometer_tolerance_km,
        help_text="Consecutive trips agree on the odometer within this; more is a gap entry.",
    )
    route_tolerance_m = models.FloatField(
        default=_DEFAULTS.route_tolerance_m,
        help_text="The stored route keeps a fix where the path bends by more than this.",
    )
    route_interval_s = models.FloatField(
        default=_DEFAULTS.route_interval_s,
        help_text="The stored route keeps at least one fix this often (seconds).",
    )
    # --- live derivation -------------------------------------------------------------------
    close_after_s = models.FloatField(
        default=3600.0,
        validators=[MinValueValidator(60.0)],
        help_text=(
            "A vehicle silent this long (seconds after its last fix) has its trip closed, so "
            "a unit that sleeps when parked still gets its trip into the logbook. Must be "
            "longer than gap_max_s. Decided on fix times, so history replays the same."
        ),
    )
    can_odometer_max_age_s = models.FloatField(
        default=600.0,
        help_text=(
            "A CAN odometer sample gives a fix its reading only if it is at most this old "
            "(seconds); older ones are stale (CAN adapter asleep or unplugged)."
        ),
    )
    # --- the logbook rules -----------------------------------------------------------------
    edit_window_days = models.PositiveSmallIntegerField(
        default=7,
        validators=[MinValueValidator(1), MaxValueValidator(366)],
        help_text=(
            "Purpose, partner and category may be changed this many days after a trip's "
            "end; then unclassified trips become private and every trip is locked."
        ),
    )
    work_days = models.CharField(
        max_length=7,
        default="12345",
        help_text="ISO weekdays (1 = Monday) that are working days, e.g. '12345'.",
    )
    work_start = models.TimeField(
        default=time(7, 0), help_text="Trips starting from this time on a working day..."
    )
    work_end = models.TimeField(
        default=time(19, 0), help_text="...and before this are suggested as business."
    )
    commute_note = models.CharField(
        max_length=200,
        default="Home – workplace",
        help_text="Note suggested for a commute between home and a depot or office.",
    )

    class Meta:
        verbose_name = "logbook settings"
        verbose_name_plural = "logbook settings"

    def __str__(self) -> str:
        return f"Logbook settings of {self.organisation}"

    def trip_settings(self) -> TripSettings:
        names = [f.name for f in dataclass_fields(TripSettings)]
        return TripSettings(**{name: getattr(self, name) for name in names})

    def clean(self) -> None:
        try:
            trip = self.trip_settings()
        except ValueError as error:
            raise ValidationError(str(error)) from error
        if self.close_after_s <= trip.gap_max_s:
            raise ValidationError({"close_after_s": "Must be longer than gap_max_s."})
        if not self.work_days or any(c not in "1234567" for c in self.work_days):
            raise ValidationError({"work_days": "ISO weekday digits 1-7, e.g. '12345'."})


class VehicleLogbook(models.Model):
    """Per-vehicle logbook defaults: a pool van that is only ever used for business."""

    vehicle = models.OneToOneField(Vehicle, on_delete=models.CASCADE, related_name="logbook")
    default_category = models.CharField(max_length=20, choices=Category.choices, blank=True)
    default_purpose = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return f"Logbook defaults of {self.vehicle}"


class PlaceKind(models.TextChoices):
    CUSTOMER = "customer", "Customer"
    SUPPLIER = "supplier", "Supplier"
    DEPOT = "depot", "Depot"
    OFFICE = "office", "Office"
    HOME = "home", "Home"
    OTHER = "other", "Other"


class NamedPlace(models.Model):
    """An organisation's own place: matched before any geocoder, so the logbook works offline.

    A trip that starts or ends within ``radius_m`` gets the place's name as its address
    (the nearest place wins) and its default category and partner as suggestions.
    """

    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="named_places"
    )
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=PlaceKind.choices, default=PlaceKind.OTHER)
    latitude = models.FloatField(validators=[MinValueValidator(-90), MaxValueValidator(90)])
    longitude = models.FloatField(validators=[MinValueValidator(-180), MaxValueValidator(180)])
    radius_m = models.FloatField(default=150.0, validators=[MinValueValidator(1.0)])
    address = models.CharField(max_length=300, blank=True, help_text="Postal address, if any.")
    default_category = models.CharField(max_length=20, choices=Category.choices, blank=True)
    partner = models.CharField(
        max_length=200, blank=True, help_text="Business partner suggested for trips here."
    )
    driver = models.ForeignKey(
        Driver, null=True, blank=True, on_delete=models.CASCADE, related_name="places",
        help_text="For a home: whose home it is (it only matches that driver's trips).",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def label(self) -> str:
        """What the logbook shows as the address."""
        return f"{self.name}, {self.address}" if self.address else self.name


class AddressCache(models.Model):
    """Reverse-geocoded addresses by rounded coordinates, so each spot is asked once."""

    provider = models.CharField(max_length=100)
    lat_key = models.IntegerField()
    lon_key = models.IntegerField()
    address = models.CharField(max_length=300)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "lat_key", "lon_key"], name="address_cache_once"
            )
        ]
        verbose_name_plural = "address cache"

    def __str__(self) -> str:
        return self.address


class DriverSource(models.TextChoices):
    KEY = "key", "Identification key"
    APP = "app", "Chosen in the app"
    DEFAULT = "default", "Vehicle's default driver"
    MANUAL = "manual", "Set by hand"


class DriverSession(models.Model):
    """A driver took a vehicle (chose it in the app) from ``since`` until ``until``."""

    vehicle = models.ForeignKey(Vehicle, on_delete=models.CASCADE, related_name="driver_sessions")
    driver = models.ForeignKey(Driver, on_delete=models.CASCADE, related_name="sessions")
    since = models.DateTimeField()
    until = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=20, choices=DriverSource.choices, default=DriverSource.APP)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-since"]
        indexes = [models.Index(fields=["vehicle", "since"], name="driver_session_vehicle")]

    def __str__(self) -> str:
        return f"{self.driver} in {self.vehicle} since {self.since:%Y-%m-%d %H:%M}"


class TripStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    CANCELLED = "cancelled", "Cancelled"
    MERGED = "merged", "Merged into another trip"
    SPLIT = "split", "Split into trips"
    SUPERSEDED = "superseded", "Superseded (re-derived from corrected positions)"


class TripOrigin(models.TextChoices):
    DERIVED = "derived", "Derived from positions"
    MERGE = "merge", "Merge of trips"
    SPLIT = "split", "Part of a split trip"


class Trip(models.Model):
    """One logbook entry. Base data is written once; see the module docstring."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="trips")
    vehicle = models.ForeignKey(Vehicle, on_delete=models.CASCADE, related_name="trips")
    # PROTECT: a driver with logbook entries is kept, or the entries would change.
    driver = models.ForeignKey(
        Driver, null=True, blank=True, on_delete=models.PROTECT, related_name="trips"
    )
    driver_source = models.CharField(max_length=20, choices=DriverSource.choices, blank=True)
    # --- base data (never edited) ----------------------------------------------------------
    start_time = models.DateTimeField()
    end_time = models.DateTimeField()
    start_latitude = models.FloatField()
    start_longitude = models.FloatField()
    end_latitude = models.FloatField()
    end_longitude = models.FloatField()
    start_address = models.CharField(max_length=300, blank=True)
    end_address = models.CharField(max_length=300, blank=True)
    start_odometer_km = models.FloatField()
    end_odometer_km = models.FloatField()
    distance_m = models.FloatField()
    gps_distance_m = models.FloatField()
    odometer_source = models.CharField(max_length=10, help_text="'unit' (CAN/unit) or 'gps'.")
    max_speed_kmh = models.FloatField()
    route = models.JSONField(default=list, help_text="[[time, lat, lon], ...], thinned.")
    fix_count = models.PositiveIntegerField(default=0)
    end_reason = models.CharField(max_length=20)
    # --- what the driver adds --------------------------------------------------------------
    category = models.CharField(max_length=20, choices=Category.choices, blank=True)
    purpose = models.CharField(max_length=300, blank=True)
    partner = models.CharField("business partner", max_length=300, blank=True)
    destination = models.CharField(max_length=300, blank=True)
    note = models.CharField(max_length=300, blank=True)
    # --- corrections and locking -----------------------------------------------------------
    origin = models.CharField(max_length=20, choices=TripOrigin.choices, default=TripOrigin.DERIVED)
    status = models.CharField(max_length=20, choices=TripStatus.choices, default=TripStatus.ACTIVE)
    status_reason = models.CharField(max_length=300, blank=True)
    corrects = models.ManyToManyField(
        "self", symmetrical=False, blank=True, related_name="corrected_by",
        help_text="The trips this one replaces (re-derivation, merge or split).",
    )
    locked_at = models.DateTimeField(null=True, blank=True)
    # --- bookkeeping (not part of the entry) -----------------------------------------------
    decided_at = models.DateTimeField(help_text="Fix time that decided the trip's end.")
    start_place = models.ForeignKey(
        NamedPlace, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    end_place = models.ForeignKey(
        NamedPlace, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    base_hash = models.CharField(
        max_length=64, editable=False,
        help_text="Hash of the derived data, to match re-derivations.",
    )
    addresses_pending = models.BooleanField(default=True)
    suggested_category = models.CharField(max_length=20, choices=Category.choices, blank=True)
    content_hash = models.CharField(max_length=64, blank=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-start_time"]
        constraints = [
            models.UniqueConstraint(
                fields=["vehicle", "start_time"],
                condition=models.Q(status="active"),
                name="trip_unique_active_start",
            )
        ]
        indexes = [
            models.Index(fields=["vehicle", "start_time"], name="trip_vehicle_start"),
            models.Index(fields=["vehicle", "decided_at"], name="trip_vehicle_decided"),
            models.Index(fields=["locked_at", "end_time"], name="trip_lock_due"),
        ]

    def __str__(self) -> str:
        return f"{self.vehicle} {self.start_time:%Y-%m-%d %H:%M}"

    @property
    def duration_s(self) -> float:
        return (self.end_time - self.start_time).total_seconds()

    @property
    def distance_km(self) -> float:
        return self.distance_m / 1000.0

    @property
    def average_speed_kmh(self) -> float:
        duration = self.duration_s
        return self.distance_m / duration * 3.6 if duration > 0 else 0.0

    @property
    def is_active(self) -> bool:
        return self.status == TripStatus.ACTIVE


class Interface(models.TextChoices):
    DERIVATION = "derivation", "Trip derivation"
    REBUILD = "rebuild", "rebuild_trips"
    IMPORT = "import", "import_track"
    GEOCODER = "geocoder", "Address lookup"
    LOCK = "lock", "Locking"
    APP = "app", "Driver app"
    WEB = "web", "Web"
    API = "api", "API"
    ADMIN = "admin", "Admin"


CREATED = "__created__"


class TripRevision(models.Model):
    """One change to one trip, append-only and hash-chained per vehicle.

    ``field`` is a trip field name, or ``__created__`` for the creation (``new_value`` is
    then the whole entry). ``trip_hash`` is the trip's content hash after the change,
    ``hash`` = SHA-256(``prev_hash`` + canonical JSON of this row + ``trip_hash``). The
    actor is kept as id and name, not as a foreign key: deleting a user must not rewrite
    history.
    """

    vehicle = models.ForeignKey(Vehicle, on_delete=models.CASCADE, related_name="+")
    trip = models.ForeignKey(Trip, on_delete=models.PROTECT, related_name="revisions")
    seq = models.PositiveBigIntegerField()
    time = models.DateTimeField()
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_name = models.CharField(max_length=150)
    interface = models.CharField(max_length=20, choices=Interface.choices)
    field = models.CharField(max_length=50)
    old_value = models.JSONField(null=True, blank=True)
    new_value = models.JSONField(null=True, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    trip_hash = models.CharField(max_length=64)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["vehicle", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["vehicle", "seq"], name="revision_chain_unique")
        ]

    def __str__(self) -> str:
        return f"#{self.seq} trip {self.trip_id} {self.field}"


class GapStatus(models.TextChoices):
    OPEN = "open", "Open"
    EXPLAINED = "explained", "Explained"
    OBSOLETE = "obsolete", "Obsolete (re-derived away)"


class OdometerGap(models.Model):
    """The odometer moved between two trips without a recorded trip: an explicit entry.

    ``from_km`` is the previous trip's end reading, ``to_km`` the next trip's start. For
    GPS odometers the gap is the straight-line distance, a lower bound of what was driven.
    The fleet manager explains it (``note``); re-derivation never deletes one.
    """

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    vehicle = models.ForeignKey(Vehicle, on_delete=models.CASCADE, related_name="odometer_gaps")
    from_time = models.DateTimeField()
    from_latitude = models.FloatField(null=True)
    from_longitude = models.FloatField(null=True)
    from_km = models.FloatField()
    to_time = models.DateTimeField()
    to_latitude = models.FloatField()
    to_longitude = models.FloatField()
    to_km = models.FloatField()
    source = models.CharField(max_length=10)
    decided_at = models.DateTimeField()
    status = models.CharField(max_length=20, choices=GapStatus.choices, default=GapStatus.OPEN)
    note = models.CharField(max_length=300, blank=True)
    noted_by = models.CharField(max_length=150, blank=True)
    noted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-to_time"]
        indexes = [models.Index(fields=["vehicle", "decided_at"], name="gap_vehicle_decided")]

    def __str__(self) -> str:
        return f"{self.vehicle}: {self.km:.1f} km gap before {self.to_time:%Y-%m-%d %H:%M}"

    @property
    def km(self) -> float:
        return self.to_km - self.from_km


class VehicleTripState(models.Model):
    """The live derivation of one vehicle: its state machine and the chain's head.

    ``machine`` is ``TripStateMachine.to_dict()`` after the last fix fed; ``last_fix_time``
    the newest real fix fed (the machine's own time may be later after a close);
    ``stored_until`` the newest storage time seen, so a restarted tracker catches up.
    The row is also the per-vehicle lock of the logbook: derivation, classification and
    locking take it before appending to the revision chain.
    """

    vehicle = models.OneToOneField(
        Vehicle, primary_key=True, on_delete=models.CASCADE, related_name="trip_state"
    )
    machine = models.JSONField(null=True, blank=True)
    last_fix_time = models.DateTimeField(null=True, blank=True)
    closed = models.BooleanField(default=False)
    stored_until = models.DateTimeField(null=True, blank=True)
    driving_since = models.DateTimeField(null=True, blank=True)
    chain_seq = models.PositiveBigIntegerField(default=0)
    chain_hash = models.CharField(max_length=64, default="0" * 64)
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"trip state of {self.vehicle_id}"


class TripCheckpoint(models.Model):
    """The state machine right after a trip ended: where a late fix replays from."""

    vehicle = models.ForeignKey(Vehicle, on_delete=models.CASCADE, related_name="+")
    time = models.DateTimeField(help_text="The machine's time: every fix up to it was fed.")
    last_fix_time = models.DateTimeField()
    machine = models.JSONField()

    class Meta:
        ordering = ["vehicle", "time"]
        constraints = [
            models.UniqueConstraint(fields=["vehicle", "time"], name="checkpoint_once")
        ]

    def __str__(self) -> str:
        return f"checkpoint {self.vehicle_id} @ {self.time:%Y-%m-%d %H:%M:%S}"

