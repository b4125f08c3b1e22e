"""Geofences, events and alert rules through the API.

``geofences/``: GeoJSON geometry in and out (a ``Polygon``, or a ``Point`` with
``radius_m`` for a circle), validated: a polygon that is not closed, crosses itself or
leaves the globe answers 400 with what is wrong. Admins and dispatchers draw them.

``events/``: what the fleet did (geofence enter/exit, overspeed, idling, low fuel, unit
offline, faults, service due), ``?type=&vehicle=&from=&to=`` and ``order=asc|desc``,
paged with cursors by (time, id) like positions. Events during a private trip come
without their places, or not at all when their type tells the place
(``logbook.event_privacy``); a page may then hold fewer rows than asked for, and its
cursor still continues after the last row read.

``alert-rules/``: which events to watch with which thresholds, and whom to e-mail.
Admins change them; dispatchers may read them.
"""

from __future__ import annotations

import re
from datetime import timedelta

from django.db.models import Q, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, viewsets
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import IsAuthenticated

from fleet.api.authentication import actor_for
from fleet.api.pagination import KeysetPagination, decode_cursor
from fleet.api.permissions import ADMINS, EVERY_ROLE, RolePermission
from fleet.api.serializers import (
    OrganisationOwnedSerializer,
    TimeWindowSerializer,
    UtcDateTimeField,
    in_organisation,
)
from fleet.models import Role
from fleet.selectors import Actor, actor_of, organisations_visible_to, vehicles_visible_to
from logbook.event_privacy import redact_events
from telematics.alerts.engine import EVENT_TYPES
from telematics.alerts.geometry import GeometryError, parse_geometry
from telematics.alerts.presentation import label, summary
from telematics.alerts.rules import rule_problems
from telematics.models import AlertRule, Event, Geofence

WRITERS = frozenset({Role.ADMIN, Role.DISPATCHER})
COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


# --- Selectors ---------------------------------------------------------------------------

def geofences_visible_to(principal) -> QuerySet[Geofence]:
    return Geofence.objects.filter(organisation__in=organisations_visible_to(principal))


def alert_rules_visible_to(principal) -> QuerySet[AlertRule]:
    actor = actor_of(principal)
    if actor.role == Role.DRIVER:
        return AlertRule.objects.none()
    return AlertRule.objects.filter(organisation__in=organisations_visible_to(actor))


def events_visible_to(principal) -> QuerySet[Event]:
    """The organisation's events; a driver sees those of the vehicles they drive."""
    actor = actor_of(principal)
    events = Event.objects.filter(organisation__in=organisations_visible_to(actor))
    if actor.role == Role.DRIVER and not actor.is_superuser:
        events = events.filter(vehicle__in=vehicles_visible_to(actor))
    return events


# --- Serializers -------------------------------------------------------------------------

class GeofenceSerializer(OrganisationOwnedSerializer):
    geometry = serializers.JSONField(
        help_text='GeoJSON geometry: {"type": "Polygon", "coordinates": [[[lon, lat], ...]]} '
        '(closed rings, outer first), or {"type": "Point", "coordinates": [lon, lat]} '
        "with radius_m for a circle.")
    radius_m = serializers.FloatField(required=False, allow_null=True, min_value=1,
                                      max_value=100_000)
    speed_limit_kmh = serializers.FloatField(required=False, allow_null=True, min_value=1,
                                             max_value=400)

    class Meta:
        model = Geofence
        fields = ["id", "organisation", "name", "geometry", "radius_m", "speed_limit_kmh",
                  "colour", "revision", "created", "updated"]
        read_only_fields = ["revision", "created", "updated"]
        validators = []

    def validate_colour(self, colour: str) -> str:
        if not COLOUR.match(colour):
            raise serializers.ValidationError("A colour like #0b6bcb.")
        return colour.lower()

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        geometry = attrs.get("geometry", getattr(self.instance, "geometry", None))
        radius = attrs.get("radius_m", getattr(self.instance, "radius_m", None))
        new_geometry = attrs.get("geometry")
        if (isinstance(new_geometry, dict) and new_geometry.get("type") == "Polygon"
                and "radius_m" not in attrs):
            radius = attrs["radius_m"] = None  # a circle redrawn as a polygon
        try:
            parse_geometry(geometry, radius)
        except GeometryError as error:
            raise serializers.ValidationError({error.field: [str(error)]}) from error
        name = attrs.get("name", getattr(self.instance, "name", None))
        clash = Geofence.objects.filter(organisation=attrs["organisation"], name=name)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise serializers.ValidationError(
                {"name": ["The organisation has a geofence of this name already."]})
        return attrs


class EventSerializer(serializers.ModelSerializer):
    time = UtcDateTimeField()
    label = serializers.SerializerMethodField()
    vehicle_name = serializers.SerializerMethodField()
    summary = serializers.SerializerMethodField()

    class Meta:
        model = Event
        fields = ["id", "type", "label", "time", "vehicle", "vehicle_name", "summary",
                  "attributes"]

    def get_label(self, event: Event) -> str:
        return label(event.type)

    def get_vehicle_name(self, event: Event) -> str | None:
        return event.vehicle.name if event.vehicle_id else None

    def get_summary(self, event: Event) -> str:
        return summary(event.type, event.attributes, self.get_vehicle_name(event))


class AlertRuleSerializer(OrganisationOwnedSerializer):
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=list(EVENT_TYPES.items())), allow_empty=False)
    recipients = serializers.ListField(child=serializers.EmailField(), required=False,
                                       max_length=50)
    overspeed_kmh = serializers.FloatField(required=False, allow_null=True, min_value=1,
                                           max_value=400)
    low_fuel_percent = serializers.FloatField(required=False, allow_null=True, min_value=1,
                                              max_value=100)
    idle_minutes = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                            max_value=24 * 60)
    offline_minutes = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                               max_value=30 * 24 * 60)
    overspeed_min_s = serializers.IntegerField(required=False, min_value=0, max_value=3600)

    class Meta:
        model = AlertRule
        fields = ["id", "organisation", "name", "event_types", "vehicles", "geofences",
                  "overspeed_kmh", "overspeed_min_s", "idle_minutes", "low_fuel_percent",
                  "offline_minutes", "recipients", "active", "created", "updated"]
        read_only_fields = ["created", "updated"]
        extra_kwargs = {"vehicles": {"required": False}, "geofences": {"required": False}}

    def get_fields(self):
        fields = super().get_fields()
        if "actor" in self.context:
            fields["vehicles"].child_relation.queryset = vehicles_visible_to(self.actor)
            fields["geofences"].child_relation.queryset = geofences_visible_to(self.actor)
        return fields

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        organisation = attrs["organisation"]
        for vehicle in attrs.get("vehicles", []):
            in_organisation(vehicle, organisation, "vehicles", "vehicle")
        for geofence in attrs.get("geofences", []):
            in_organisation(geofence, organisation, "geofences", "geofence")

        def current(name):
            if name in attrs:
                return attrs[name]
            if self.instance is None:
                return None
            if name in ("vehicles", "geofences"):
                return list(getattr(self.instance, name).all())
            return getattr(self.instance, name)

        errors = rule_problems(
            current("event_types") or [], overspeed_kmh=current("overspeed_kmh"),
            geofences=current("geofences") or [], idle_minutes=current("idle_minutes"),
            low_fuel_percent=current("low_fuel_percent"),
            offline_minutes=current("offline_minutes"))
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


# --- Views -------------------------------------------------------------------------------

class AlertViewSet(viewsets.ModelViewSet):
    permission_classes = [IsAuthenticated, RolePermission]
    lookup_value_regex = "[0-9]{1,18}"
    filter_backends = []

    @property
    def actor(self) -> Actor:
        return actor_for(self.request)

    def get_serializer_context(self) -> dict:
        return {**super().get_serializer_context(), "actor": self.actor}


class GeofenceViewSet(AlertViewSet):
    """Geofences of the organisation: circles and polygons, with optional speed limits."""

    serializer_class = GeofenceSerializer
    read_roles = EVERY_ROLE
    write_roles = WRITERS

    def get_queryset(self):
        return geofences_visible_to(self.actor).order_by("name", "id")


class AlertRuleViewSet(AlertViewSet):
    """Alert rules: event types, optional vehicles and geofences, thresholds, e-mail."""

    serializer_class = AlertRuleSerializer
    read_roles = WRITERS
    write_roles = ADMINS

    def get_queryset(self):
        return alert_rules_visible_to(self.actor).prefetch_related(
            "vehicles", "geofences").order_by("name", "id")


class EventWindowSerializer(TimeWindowSerializer):
    DEFAULT_SPAN = timedelta(days=7)


class EventPagination(KeysetPagination):
    """(time, id) cursors, oldest first; ``order=desc`` pages newest first."""

    time_field = "time"

    def paginate_queryset(self, queryset, request, view=None):
        order = request.query_params.get("order", "asc")
        if order not in ("asc", "desc"):
            raise ValidationError({"order": ["asc or desc."]})
        if order == "asc":
            return super().paginate_queryset(queryset, request, view)
        self.request = request
        self.page_size = self.get_page_size(request)
        raw = request.query_params.get(self.cursor_query_param)
        self.position = decode_cursor(raw, self.cursor_query_param) if raw else None
        queryset = queryset.order_by("-time", "-id")
        if self.position is not None:
            time, pk = self.position
            queryset = queryset.filter(Q(time__lte=time) & (Q(time__lt=time) | Q(id__lt=pk)))
        rows = list(queryset[: self.page_size + 1])
        self.has_more = len(rows) > self.page_size
        rows = rows[: self.page_size]
        if rows:
            self.position = (rows[-1].time, rows[-1].pk)
        return rows


class EventViewSet(viewsets.ReadOnlyModelViewSet):
    """Events of the fleet, oldest first (``order=desc``: newest first), by cursor."""

    serializer_class = EventSerializer
    permission_classes = [IsAuthenticated, RolePermission]
    read_roles = EVERY_ROLE
    lookup_value_regex = "[0-9]{1,18}"
    filter_backends = []
    pagination_class = EventPagination

    @extend_schema(
        parameters=[
            OpenApiParameter("type", OpenApiTypes.STR,
                             description="Event type(s), comma-separated: "
                             + ", ".join(EVENT_TYPES)),
            OpenApiParameter("vehicle", OpenApiTypes.INT),
            OpenApiParameter("from", OpenApiTypes.DATETIME,
                             description="Start, inclusive. Default: 7 days before `to`."),
            OpenApiParameter("to", OpenApiTypes.DATETIME,
                             description="End, exclusive. Default: now."),
            OpenApiParameter("order", OpenApiTypes.STR, enum=["asc", "desc"]),
            OpenApiParameter("cursor", OpenApiTypes.STR),
            OpenApiParameter("page_size", OpenApiTypes.INT),
        ],
        responses=inline_serializer("EventPage", fields={
            "next": serializers.URLField(allow_null=True),
            "has_more": serializers.BooleanField(),
            "results": EventSerializer(many=True),
        }),
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def paginate_queryset(self, queryset):
        """A page as the caller may see it (private trips: ``logbook.event_privacy``)."""
        page = super().paginate_queryset(queryset)
        return None if page is None else redact_events(actor_for(self.request), page)

    def get_object(self):
        shown = redact_events(actor_for(self.request), [super().get_object()])
        if not shown:  # its type alone would tell where a private trip went
            raise NotFound()
        return shown[0]

    def get_queryset(self):
        events = events_visible_to(actor_for(self.request)).select_related("vehicle")
        if self.action != "list":
            return events
        return filter_events(events, self.request.query_params)


def filter_events(events: QuerySet[Event], params) -> QuerySet[Event]:
    """``type`` (comma-separated), ``vehicle`` and the ``from``/``to`` window."""
    if params.get("type"):
        types = [t.strip() for t in params["type"].split(",") if t.strip()]
        if any(not re.fullmatch(r"[a-z_]{1,40}", t) for t in types):
            raise ValidationError({"type": ["Event types such as geofence_enter,overspeed."]})
        events = events.filter(type__in=types)
    if params.get("vehicle"):
        if not params["vehicle"].isdigit() or len(params["vehicle"]) > 18:
            raise ValidationError({"vehicle": ["Not a vehicle id."]})
        events = events.filter(vehicle_id=int(params["vehicle"]))
    window = EventWindowSerializer(data={k: params[k] for k in ("from", "to") if params.get(k)})
    window.is_valid(raise_exception=True)
    return events.filter(time__gte=window.validated_data["from"],
                         time__lt=window.validated_data["to"])
