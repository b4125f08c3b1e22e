"""Request and response shapes. Times are RFC 3339 in UTC; units are in the field names.

Serializers validate and shape; anything that changes more than the row in hand goes
through ``fleet.api.services``. The acting organisation and role come in the context as
``actor`` (see ``fleet.api.views.ApiViewSet``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.utils import timezone
from django.utils.text import slugify
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.relations import PKOnlyObject

from fleet.api.rows import vehicle_dicts, vehicle_row_of
from fleet.models import ApiKey, Driver, Organisation, Role, Vehicle
from fleet.selectors import (
    Actor,
    drivers_visible_to,
    organisations_visible_to,
    vehicles_visible_to,
)
from fleet.status import VehicleStatus
from telematics.models import Device, Position, Protocol


class UtcDateTimeField(serializers.DateTimeField):
    """Always UTC ("...Z"), whatever time zone a page may have activated."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("default_timezone", UTC)
        super().__init__(*args, **kwargs)


def rfc3339(moment: datetime | None) -> str | None:
    """What UtcDateTimeField writes, for the hand-written representations below."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class ApiModelSerializer(serializers.ModelSerializer):
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.DateTimeField: UtcDateTimeField,
    }

    @property
    def actor(self) -> Actor:
        return self.context["actor"]


class OrganisationOwnedSerializer(ApiModelSerializer):
    """An object of one organisation: the caller's own, or the one a superuser names.

    A member never names an organisation (another one's id is simply not found); the
    platform operator must, since they belong to none. The organisation never changes
    after creation.
    """

    organisation = serializers.PrimaryKeyRelatedField(
        queryset=Organisation.objects.none(), required=False,
        help_text="Required for the platform operator; others always create in their own.",
    )

    def get_fields(self):
        fields = super().get_fields()
        if self.instance is not None and not isinstance(self.instance, list | models.QuerySet):
            fields["organisation"].read_only = True
        elif "actor" in self.context:
            fields["organisation"].queryset = organisations_visible_to(self.actor)
        return fields

    def target_organisation(self, attrs: dict) -> Organisation:
        if self.instance is not None:
            return self.instance.organisation
        organisation = attrs.get("organisation")
        if organisation is not None:
            return organisation
        if self.actor.is_superuser:
            raise serializers.ValidationError(
                {"organisation": ["Name the organisation: the platform operator belongs to none."]}
            )
        return organisations_visible_to(self.actor).get()

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        attrs["organisation"] = self.target_organisation(attrs)
        return attrs


def in_organisation(obj, organisation: Organisation, field: str, what: str) -> None:
    """Refuse a related object of another organisation (only the operator can pick one)."""
    if obj is not None and obj.organisation_id != organisation.pk:
        raise serializers.ValidationError({field: [f"The {what} belongs to another organisation."]})


class OrganisationSerializer(ApiModelSerializer):
    class Meta:
        model = Organisation
        fields = ["id", "name", "slug", "time_zone", "created"]
        read_only_fields = ["slug", "created"]

    def validate_name(self, name: str) -> str:
        """The slug is made from the name once, on creation, and must be unique too."""
        if self.instance is None:
            slug = slugify(name)[:200] or "organisation"
            if Organisation.objects.filter(slug=slug).exists():
                raise serializers.ValidationError(
                    f"An organisation with a name this similar exists already ({slug!r})."
                )
        return name


class MembershipOrganisationField(serializers.PrimaryKeyRelatedField):
    """A login's organisation, which lives on its membership."""

    def get_attribute(self, user):
        membership = getattr(user, "membership", None)
        return PKOnlyObject(membership.organisation_id if membership else None)


class MembershipRoleField(serializers.ChoiceField):
    """A login's role, which lives on its membership (the operator: admin of all)."""

    def get_attribute(self, user):
        membership = getattr(user, "membership", None)
        if membership is not None:
            return membership.role
        return Role.ADMIN.value if user.is_superuser else None


class UserSerializer(OrganisationOwnedSerializer):
    organisation = MembershipOrganisationField(
        queryset=Organisation.objects.none(), required=False, allow_null=False,
        help_text="Required for the platform operator; others always create in their own.",
    )
    role = MembershipRoleField(choices=Role.choices, required=False)
    password = serializers.CharField(
        write_only=True, required=False, style={"input_type": "password"},
        help_text="Required when creating a login; never returned.",
    )
    driver = serializers.SerializerMethodField(
        help_text="The driver record of a driver's login (assign vehicles to it)."
    )

    class Meta:
        model = get_user_model()
        fields = [
            "id", "username", "email", "first_name", "last_name", "organisation", "role",
            "password", "is_active", "driver", "date_joined", "last_login",
        ]
        read_only_fields = ["date_joined", "last_login"]

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_driver(self, user) -> int | None:
        driver = getattr(user, "driver", None)
        return driver.pk if driver else None

    def target_organisation(self, attrs: dict) -> Organisation | None:
        if self.instance is not None:  # None for the operator's own login
            membership = getattr(self.instance, "membership", None)
            if membership is None and "role" in attrs:
                raise serializers.ValidationError(
                    {"role": ["This login belongs to no organisation."]}
                )
            return membership.organisation if membership else None
        return super().target_organisation(attrs)

    def validate_password(self, value: str) -> str:
        try:
            password_validation.validate_password(value, self.instance)
        except DjangoValidationError as error:
            raise serializers.ValidationError(list(error.messages)) from error
        return value

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        if self.instance is None:
            if not attrs.get("password"):
                raise serializers.ValidationError({"password": ["A new login needs a password."]})
            if "role" not in attrs:
                raise serializers.ValidationError({"role": ["This field is required."]})
        elif self.instance.pk == getattr(self.actor.user, "pk", None):
            if attrs.get("role", Role.ADMIN) != Role.ADMIN:
                raise serializers.ValidationError({"role": ["You cannot demote yourself."]})
            if attrs.get("is_active") is False:
                raise serializers.ValidationError({"is_active": ["You cannot lock yourself out."]})
        return attrs


class LastPositionSerializer(serializers.Serializer):
    fix_time = UtcDateTimeField()
    latitude = serializers.FloatField()
    longitude = serializers.FloatField()
    speed_kmh = serializers.FloatField(allow_null=True)
    course = serializers.FloatField(allow_null=True)
    ignition = serializers.BooleanField(allow_null=True)


class VehicleSerializer(OrganisationOwnedSerializer):
    default_driver = serializers.PrimaryKeyRelatedField(
        queryset=Driver.objects.none(), required=False, allow_null=True,
        help_text="The driver who normally drives it; a driver's login sees only these.",
    )
    status = serializers.SerializerMethodField(
        help_text="moving; stopped (ignition on, below 3 km/h); parked; offline (no fix "
        "for longer than VEHICLE_OFFLINE_AFTER_S)."
    )
    last_position = serializers.SerializerMethodField(
        help_text="Null before the first fix, and while the vehicle is on (or parked at the "
        "end of) a trip that is private to you: see logbook/README.md.")
    odometer_km = serializers.SerializerMethodField(
        help_text="The unit's odometer plus odometer_offset_km."
    )

    class Meta:
        model = Vehicle
        fields = [
            "id", "organisation", "name", "licence_plate", "vin", "make", "model",
            "odometer_offset_km", "odometer_km", "default_driver", "status",
            "last_position", "created",
        ]
        read_only_fields = ["created"]
        validators = []  # the organisation is settled in validate(); names are checked there

    def get_fields(self):
        fields = super().get_fields()
        if "actor" in self.context:
            fields["default_driver"].queryset = drivers_visible_to(self.actor)
        return fields

    def to_representation(self, vehicle: Vehicle) -> dict:
        """Written out by hand (``fleet.api.rows.vehicle_dicts``, which the vehicle list
        uses on plain rows): a dispatch board loads all of a fleet's vehicles every few
        seconds, and DRF's field-by-field path costs about ten times as much a row. The
        declared fields still validate input and describe the schema;
        ``tests/api/test_schema.py`` checks that both name the same fields.

        Reads the ``last_*`` annotations of ``vehicles_with_state_visible_to``.
        """
        data = vehicle_dicts([vehicle_row_of(vehicle)], now=self._now(),
                             hidden=self.context.get("positions_hidden", ()))[0]
        data["created"] = rfc3339(data["created"])
        if data["last_position"] is not None:
            data["last_position"]["fix_time"] = rfc3339(data["last_position"]["fix_time"])
        return data

    def _now(self) -> datetime:
        if "now" not in self.context:
            self.context["now"] = timezone.now()
        return self.context["now"]

    # The schema of the read-only fields (the values come from to_representation).
    @extend_schema_field(serializers.ChoiceField(choices=[s.value for s in VehicleStatus]))
    def get_status(self, vehicle) -> str:  # pragma: no cover - schema only
        raise NotImplementedError

    @extend_schema_field(LastPositionSerializer(allow_null=True))
    def get_last_position(self, vehicle) -> dict | None:  # pragma: no cover - schema only
        raise NotImplementedError

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_odometer_km(self, vehicle) -> float | None:  # pragma: no cover - schema only
        raise NotImplementedError

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        organisation = attrs["organisation"]
        in_organisation(attrs.get("default_driver"), organisation, "default_driver", "driver")
        name = attrs.get("name")
        if name is not None:
            clash = Vehicle.objects.filter(organisation=organisation, name=name)
            if self.instance is not None:
                clash = clash.exclude(pk=self.instance.pk)
            if clash.exists():
                raise serializers.ValidationError(
                    {"name": [f"The organisation already has a vehicle named {name!r}."]}
                )
        return attrs


class DriverAssignmentSerializer(serializers.Serializer):
    driver = serializers.PrimaryKeyRelatedField(
        queryset=Driver.objects.none(), allow_null=True,
        help_text="The new default driver; null takes the vehicle off its driver.",
    )

    def get_fields(self):
        fields = super().get_fields()
        if "actor" in self.context:
            fields["driver"].queryset = drivers_visible_to(self.context["actor"])
        return fields

    def validate_driver(self, driver: Driver | None) -> Driver | None:
        vehicle = self.context["vehicle"]
        if driver is not None and driver.organisation_id != vehicle.organisation_id:
            raise serializers.ValidationError("The driver belongs to another organisation.")
        return driver


class DeviceSerializer(OrganisationOwnedSerializer):
    vehicle = serializers.PrimaryKeyRelatedField(
        queryset=Vehicle.objects.none(), required=False, allow_null=True,
        help_text="The vehicle the unit is fitted to; its positions are that vehicle's.",
    )
    protocol = serializers.ChoiceField(choices=Protocol.choices)
    secret = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=128,
        help_text="HTTP/MQTT/CoAP units must present it; never returned.",
    )
    has_secret = serializers.SerializerMethodField()

    class Meta:
        model = Device
        fields = [
            "id", "organisation", "identifier", "protocol", "vehicle", "secret",
            "has_secret", "active", "last_seen", "created",
        ]
        read_only_fields = ["last_seen", "created"]
        extra_kwargs = {
            "identifier": {
                "validators": [],  # a duplicate answers with register_unit's reasoning
                "help_text": "The IMEI or the id the unit reports; fixed once registered.",
            },
        }

    def get_fields(self):
        fields = super().get_fields()
        if "actor" in self.context:
            fields["vehicle"].queryset = vehicles_visible_to(self.actor)
        if self.instance is not None and not isinstance(self.instance, list | models.QuerySet):
            fields["identifier"].read_only = True
        return fields

    def get_has_secret(self, device) -> bool:
        return bool(device.secret)

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        in_organisation(attrs.get("vehicle"), attrs["organisation"], "vehicle", "vehicle")
        return attrs


class DriverSerializer(OrganisationOwnedSerializer):
    class Meta:
        model = Driver
        fields = ["id", "organisation", "name", "identification_key", "user"]
        read_only_fields = ["user"]
        validators = []

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        key = attrs.get("identification_key")
        if key:
            clash = Driver.objects.filter(organisation=attrs["organisation"],
                                          identification_key=key)
            if self.instance is not None:
                clash = clash.exclude(pk=self.instance.pk)
            if clash.exists():
                raise serializers.ValidationError({"identification_key": [
                    "Another driver of the organisation has this key."
                ]})
        return attrs


class ApiKeySerializer(OrganisationOwnedSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ApiKey
        fields = ["id", "organisation", "name", "prefix", "created_by", "created",
                  "last_used", "revoked"]
        read_only_fields = ["prefix", "created", "last_used", "revoked"]


class NewApiKeySerializer(ApiKeySerializer):
    key = serializers.CharField(
        read_only=True, help_text="The full key. Shown this once: only a digest is stored."
    )

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]


class PositionSerializer(ApiModelSerializer):
    altitude_m = serializers.FloatField(source="altitude", allow_null=True)

    class Meta:
        model = Position
        fields = [
            "id", "vehicle", "device", "fix_time", "server_time", "latitude", "longitude",
            "altitude_m", "speed_kmh", "course", "satellites", "hdop", "valid", "ignition",
            "odometer_km", "attributes",
        ]
        read_only_fields = fields

    def to_representation(self, p: Position) -> dict:
        """By hand, as for vehicles: pages of 1,000 positions are the API's bulk reads."""
        return {
            "id": p.pk,
            "vehicle": p.vehicle_id,
            "device": p.device_id,
            "fix_time": rfc3339(p.fix_time),
            "server_time": rfc3339(p.server_time),
            "latitude": p.latitude,
            "longitude": p.longitude,
            "altitude_m": p.altitude,
            "speed_kmh": p.speed_kmh,
            "course": p.course,
            "satellites": p.satellites,
            "hdop": p.hdop,
            "valid": p.valid,
            "ignition": p.ignition,
            "odometer_km": p.odometer_km,
            "attributes": p.attributes,
        }


class TimeWindowSerializer(serializers.Serializer):
    """``from``/``to`` of a position query: the last 24 hours unless given."""

    DEFAULT_SPAN = timedelta(hours=24)

    to = UtcDateTimeField(required=False, help_text="End (exclusive); default now.")

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = UtcDateTimeField(
            required=False, help_text="Start (inclusive); default 24 hours before `to`."
        )
        return fields

    def validate(self, attrs: dict) -> dict:
        end = attrs.get("to") or timezone.now()
        start = attrs.get("from") or end - self.DEFAULT_SPAN
        if start >= end:
            raise serializers.ValidationError({"from": ["Must be before `to`."]})
        return {"from": start, "to": end}


class FeedStartSerializer(serializers.Serializer):
    since = UtcDateTimeField(
        required=False,
        help_text="Without a cursor: start with positions stored at or after this time.",
    )


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Send as 'Authorization: Bearer <token>'.")
    expires_at = UtcDateTimeField(
        help_text="When the token stops working (API_TOKEN_TTL_S after issue)."
    )
