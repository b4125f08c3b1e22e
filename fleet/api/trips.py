"""The logbook in the API: trips, their revisions, and the stops between them.

Every trip is read through ``logbook.selectors`` and shown as ``trip_view`` builds it for
the caller, so the privacy rules are those of the dashboard and the exports: fleet
managers, dispatchers and API keys see of a private trip only its date, distance and
odometer readings; a driver sees only their own trips. Classification goes through
``logbook.services.classify`` (one revision per changed field, interface "api"), which
also enforces the edit window: a trip that has locked answers 409 with the reason.
"""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, PermissionDenied, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from fleet.api.authentication import actor_for
from fleet.api.permissions import EVERY_ROLE, RolePermission
from fleet.api.serializers import UtcDateTimeField, rfc3339
from fleet.selectors import Actor
from logbook.models import Category, Interface, Trip, TripStatus
from logbook.selectors import (
    is_redacted_for,
    logbook_vehicles_for,
    redacted_q,
    revisions_of,
    stops_visible_to,
    trip_view,
    trips_in_window,
    trips_visible_to,
)
from logbook.services import LogbookError, classify, edit_deadline, logbook_settings_for

ID_MAX = 2**63 - 1
CATEGORY_CHOICES = [c.value for c in Category]
FILTER_CATEGORIES = [*CATEGORY_CHOICES, "unclassified"]


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The trip can no longer be changed."
    default_code = "conflict"


# --------------------------------------------------------------------------- shapes


class TripSerializer(serializers.Serializer):
    """A logbook entry as the caller may see it. Written out by hand from
    ``logbook.selectors.trip_view``; hidden values of a redacted trip are null."""

    id = serializers.IntegerField()
    vehicle = serializers.IntegerField()
    vehicle_name = serializers.CharField()
    date = serializers.DateField(help_text="The day the trip started, in the organisation's "
                                 "time zone.")
    start_time = UtcDateTimeField(allow_null=True)
    end_time = UtcDateTimeField(allow_null=True)
    duration_s = serializers.FloatField(allow_null=True)
    start_address = serializers.CharField(allow_null=True)
    end_address = serializers.CharField(allow_null=True)
    start_latitude = serializers.FloatField(allow_null=True)
    start_longitude = serializers.FloatField(allow_null=True)
    end_latitude = serializers.FloatField(allow_null=True)
    end_longitude = serializers.FloatField(allow_null=True)
    start_odometer_km = serializers.FloatField()
    end_odometer_km = serializers.FloatField()
    distance_m = serializers.FloatField(help_text="By the odometer readings.")
    distance_km = serializers.FloatField(help_text="End minus start odometer, as printed.")
    odometer_source = serializers.CharField(allow_null=True)
    max_speed_kmh = serializers.FloatField(allow_null=True)
    average_speed_kmh = serializers.FloatField(allow_null=True)
    category = serializers.ChoiceField(
        choices=CATEGORY_CHOICES, allow_null=True,
        help_text="Null while unclassified. A redacted unclassified trip shows what it "
        "becomes unless its driver says otherwise: private.",
    )
    purpose = serializers.CharField(allow_null=True)
    partner = serializers.CharField(allow_null=True, help_text="The business partner.")
    destination = serializers.CharField(allow_null=True)
    note = serializers.CharField(allow_null=True)
    driver = serializers.IntegerField(allow_null=True)
    driver_name = serializers.CharField(allow_null=True)
    status = serializers.CharField(
        help_text="active; or cancelled, merged, split, superseded: replaced by the trips "
        "that list it in `corrects`.")
    status_reason = serializers.CharField(allow_null=True)
    corrects = serializers.ListField(child=serializers.IntegerField(), allow_null=True,
                                     help_text="The trips this one replaced.")
    locked = serializers.BooleanField()
    editable_until = UtcDateTimeField(
        allow_null=True, help_text="Purpose, partner and category can be changed until "
        "then (null once locked, or when hidden).")
    redacted = serializers.BooleanField(
        help_text="True: a private trip you see only the date, distance and odometer of.")
    revisions = serializers.URLField(help_text="This trip's revision history.")
    route = serializers.ListField(
        child=serializers.ListField(), allow_null=True,
        help_text="[[time, latitude, longitude], ...], thinned; only on a single trip "
        "(null in lists and when hidden).",
    )

    def to_representation(self, trip: Trip) -> dict:
        actor: Actor = self.context["actor"]
        view = trip_view(trip, actor, with_route=self.context.get("with_route", False))
        redacted = view["redacted"]
        request = self.context.get("request")
        link = reverse("api-trip-revisions", args=[trip.pk])
        deadline = None
        if not redacted and trip.locked_at is None and trip.status == TripStatus.ACTIVE:
            settings = self.context.get("logbook_settings", {})
            found = settings.get(trip.organisation_id)
            if found is None:
                found = settings[trip.organisation_id] = logbook_settings_for(
                    trip.organisation_id)
            moment = edit_deadline(trip, found)
            deadline = moment if moment > self.context.get("now", timezone.now()) else None
        return {
            "id": trip.pk,
            "vehicle": trip.vehicle_id,
            "vehicle_name": view["vehicle"],
            "date": view["date"],
            "start_time": rfc3339(view["start_time"]),
            "end_time": rfc3339(view["end_time"]),
            "duration_s": view["duration_s"],
            "start_address": view["start_address"],
            "end_address": view["end_address"],
            "start_latitude": view["start_latitude"],
            "start_longitude": view["start_longitude"],
            "end_latitude": view["end_latitude"],
            "end_longitude": view["end_longitude"],
            "start_odometer_km": view["start_odometer_km"],
            "end_odometer_km": view["end_odometer_km"],
            "distance_m": round(trip.distance_m, 1),
            "distance_km": view["distance_km"],
            "odometer_source": view["odometer_source"],
            "max_speed_kmh": view["max_speed_kmh"],
            "average_speed_kmh": view["average_speed_kmh"],
            "category": view["category"],
            "purpose": view["purpose"],
            "partner": view["partner"],
            "destination": view["destination"],
            "note": view["note"],
            "driver": None if redacted else trip.driver_id,
            "driver_name": view["driver"],
            "status": view["status"],
            "status_reason": view["status_reason"],
            "corrects": view["corrects"],
            "locked": view["locked"],
            "editable_until": rfc3339(deadline),
            "redacted": redacted,
            "revisions": request.build_absolute_uri(link) if request is not None else link,
            "route": view["route"],
        }


class TripChangeSerializer(serializers.Serializer):
    """What a driver adds to a trip. Unnamed fields keep their values; a business trip
    needs purpose, partner and destination, a commute a note, a private trip nothing
    (it keeps no purpose, partner, destination or note)."""

    category = serializers.ChoiceField(choices=CATEGORY_CHOICES, required=False)
    purpose = serializers.CharField(max_length=300, allow_blank=True, required=False)
    partner = serializers.CharField(max_length=300, allow_blank=True, required=False,
                                    help_text="The business partner visited.")
    destination = serializers.CharField(max_length=300, allow_blank=True, required=False)
    note = serializers.CharField(max_length=300, allow_blank=True, required=False)


class RevisionSerializer(serializers.Serializer):
    seq = serializers.IntegerField(help_text="Position in the vehicle's hash chain.")
    time = UtcDateTimeField()
    actor = serializers.CharField()
    interface = serializers.ChoiceField(choices=[i.value for i in Interface])
    field = serializers.CharField(help_text="A trip field, or __created__ for the creation.")
    old = serializers.JSONField(allow_null=True)
    new = serializers.JSONField(allow_null=True)
    reason = serializers.CharField(allow_blank=True)
    hash = serializers.CharField()


class StopSerializer(serializers.Serializer):
    """A parked period between two trips; null where it would tell a hidden trip's
    times or place."""

    vehicle = serializers.IntegerField(source="vehicle_id")
    vehicle_name = serializers.CharField(source="vehicle")
    date = serializers.DateField()
    start_time = UtcDateTimeField(allow_null=True)
    end_time = UtcDateTimeField(allow_null=True, help_text="Null while still parked.")
    duration_s = serializers.FloatField(allow_null=True)
    latitude = serializers.FloatField(allow_null=True)
    longitude = serializers.FloatField(allow_null=True)
    address = serializers.CharField(allow_null=True)
    previous_trip = serializers.IntegerField()
    next_trip = serializers.IntegerField(allow_null=True)
    ongoing = serializers.BooleanField()
    redacted = serializers.BooleanField()


class TripQuerySerializer(serializers.Serializer):
    vehicle = serializers.IntegerField(min_value=1, max_value=ID_MAX, required=False)
    driver = serializers.IntegerField(min_value=1, max_value=ID_MAX, required=False)
    to = UtcDateTimeField(required=False)
    category = serializers.ChoiceField(choices=FILTER_CATEGORIES, required=False)

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = UtcDateTimeField(required=False)
        return fields

    def validate(self, attrs: dict) -> dict:
        start, end = attrs.get("from"), attrs.get("to")
        if start is not None and end is not None and start >= end:
            raise ValidationError({"from": ["Must be before `to`."]})
        return attrs


class StopQuerySerializer(serializers.Serializer):
    DEFAULT_SPAN = timedelta(days=7)

    vehicle = serializers.IntegerField(min_value=1, max_value=ID_MAX, required=False)
    to = UtcDateTimeField(required=False, help_text="End (exclusive); default now.")

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = UtcDateTimeField(
            required=False, help_text="Start (inclusive); default 7 days before `to`.")
        return fields

    def validate(self, attrs: dict) -> dict:
        end = attrs.get("to") or timezone.now()
        start = attrs.get("from") or end - self.DEFAULT_SPAN
        if start >= end:
            raise ValidationError({"from": ["Must be before `to`."]})
        if end - start > timedelta(days=400):
            raise ValidationError({"from": ["At most 400 days at a time."]})
        return {**attrs, "from": start, "to": end}


ID_PARAMETERS = [
    OpenApiParameter("vehicle", OpenApiTypes.INT, description="Only this vehicle's trips."),
]
TRIP_PARAMETERS = [
    *ID_PARAMETERS,
    OpenApiParameter("driver", OpenApiTypes.INT,
                     description="Only this driver's trips (never matches a trip whose "
                     "driver is hidden from you)."),
    OpenApiParameter("from", OpenApiTypes.DATETIME,
                     description="Trips starting at or after this time (a redacted trip: "
                     "whose day ends after it)."),
    OpenApiParameter("to", OpenApiTypes.DATETIME,
                     description="Trips starting before this time (a redacted trip: whose "
                     "day begins before it)."),
    OpenApiParameter("category", OpenApiTypes.STR, enum=FILTER_CATEGORIES,
                     description="As the trips show it: a redacted unclassified trip "
                     "counts as private."),
]


# --------------------------------------------------------------------------- views


class LogbookViewSet(viewsets.GenericViewSet):
    permission_classes = [IsAuthenticated, RolePermission]
    read_roles = EVERY_ROLE
    # Who may classify which trip is the logbook's rule (logbook.services.can_edit).
    write_roles = EVERY_ROLE
    lookup_value_regex = "[0-9]{1,18}"

    @property
    def actor(self) -> Actor:
        return actor_for(self.request)

    def get_serializer_context(self) -> dict:
        context = super().get_serializer_context()
        context.update(actor=self.actor, now=timezone.now(), logbook_settings={})
        return context


class TripViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, LogbookViewSet):
    """Logbook trips, oldest first: a driver's own; every trip of the organisation for
    admins, dispatchers and API keys, private ones redacted to date, distance and
    odometer."""

    serializer_class = TripSerializer
    http_method_names = ["get", "patch", "head", "options"]

    def get_queryset(self):
        return trips_visible_to(self.actor).prefetch_related("corrects")

    def filter_queryset(self, queryset):
        if self.action != "list":
            return queryset
        query = TripQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        redacted = redacted_q(self.actor)
        if "vehicle" in params:
            queryset = queryset.filter(vehicle_id=params["vehicle"])
        if "driver" in params:
            queryset = queryset.filter(driver_id=params["driver"]).exclude(redacted)
        category = params.get("category")
        if category == "unclassified":
            queryset = queryset.filter(category="").exclude(redacted)
        elif category == Category.PRIVATE:
            # As shown: a redacted unclassified trip shows as private.
            queryset = queryset.filter(Q(category=Category.PRIVATE) | (Q(category="") & redacted))
        elif category:
            queryset = queryset.filter(category=category)
        return trips_in_window(queryset, self.actor, params.get("from"), params.get("to"))

    @extend_schema(parameters=TRIP_PARAMETERS)
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def retrieve(self, request, *args, **kwargs):
        trip = self.get_object()
        context = {**self.get_serializer_context(), "with_route": True}
        return Response(TripSerializer(trip, context=context).data)

    @extend_schema(
        request=TripChangeSerializer,
        responses={
            200: TripSerializer,
            400: OpenApiResponse(description="A field the category needs is missing."),
            403: OpenApiResponse(description="Not your trip to classify."),
            409: OpenApiResponse(description="The edit window has closed (or the trip was "
                                 "replaced): `detail` says until when it could be changed."),
        },
        description="Classify the trip or change its purpose, partner, destination or "
        "note, within the edit window (organisation setting, 7 days after the trip's end "
        "by default). Each changed field is a revision (interface `api`). The trip's "
        "driver classifies it; an admin only a trip nobody drove.",
    )
    def partial_update(self, request, *args, **kwargs):
        trip = self.get_object()
        change = TripChangeSerializer(data=request.data)
        change.is_valid(raise_exception=True)
        data = change.validated_data
        if is_redacted_for(trip, self.actor):
            raise PermissionDenied("Trip is not yours to classify.")
        category = data.get("category", trip.category)
        try:
            classify(
                [trip], category,
                purpose=data.get("purpose", trip.purpose),
                partner=data.get("partner", trip.partner),
                destination=data.get("destination", trip.destination),
                note=data.get("note", trip.note),
                actor=self.actor, interface=Interface.API,
            )
        except DjangoPermissionDenied as error:
            raise PermissionDenied(str(error)) from error
        except LogbookError as error:
            messages = error.messages_by_trip.get(trip.pk, {})
            if "__all__" in messages:
                raise Conflict(messages["__all__"]) from error
            raise ValidationError({k: [v] for k, v in messages.items()}) from error
        trip = self.get_queryset().get(pk=trip.pk)
        context = {**self.get_serializer_context(), "with_route": True}
        return Response(TripSerializer(trip, context=context).data)

    @extend_schema(responses={200: RevisionSerializer(many=True)},
                   description="Every change to the trip, its creation first, as the "
                   "vehicle's hash chain holds it. Of a redacted trip, the values of hidden "
                   "fields are null.")
    @action(detail=True, methods=["get"], pagination_class=None, url_path="revisions",
            url_name="revisions")
    def revisions(self, request, pk=None):
        trip = self.get_object()
        rows = revisions_of(trip, self.actor)
        return Response(RevisionSerializer(rows, many=True).data)


class StopViewSet(mixins.ListModelMixin, LogbookViewSet):
    """Where vehicles stood between trips: derived from consecutive trips."""

    serializer_class = StopSerializer

    def get_queryset(self):  # the stops are built in logbook.selectors, not queried
        return Trip.objects.none()

    @extend_schema(
        parameters=[
            OpenApiParameter("vehicle", OpenApiTypes.INT, description="Only this vehicle."),
            OpenApiParameter("from", OpenApiTypes.DATETIME,
                             description="Stops ending after this; default 7 days ago."),
            OpenApiParameter("to", OpenApiTypes.DATETIME,
                             description="Stops starting before this; default now."),
        ],
        description="The parked periods between each vehicle's consecutive trips that "
        "overlap the window (at most 400 days), oldest first; the last one of a vehicle "
        "is ongoing (`end_time` null) until it drives again. Listed to whoever sees the "
        "trip that ended there; next to a private trip, what would tell its times or "
        "place is null.",
    )
    def list(self, request, *args, **kwargs):
        query = StopQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        stops = []
        vehicle = None
        if "vehicle" in params:
            vehicle = logbook_vehicles_for(self.actor).filter(pk=params["vehicle"]).first()
        if vehicle is not None or "vehicle" not in params:
            stops = stops_visible_to(self.actor, params["from"], params["to"], vehicle=vehicle)
        page = self.paginate_queryset(stops)
        data = StopSerializer(page, many=True).data
        return self.get_paginated_response(data)
