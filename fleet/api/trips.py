"""The logbook in the API: trips, their revisions, and the stops between them.

Every trip is read through ``logbook.selectors`` and shown as ``trip_view`` builds it for
the caller, so the privacy rules are those of the dashboard and the exports: fleet
managers, dispatchers and API keys see of a private trip only its date, distance and
odometer readings; a driver sees only their own trips. Classification goes through
``logbook.services.classify`` (one revision per changed field, interface "api"), which
also enforces the edit window: a trip that has locked answers 409 with the reason.

Corrections (issue 5: trips are never deleted) go through ``logbook.services``:
``cancel``, ``merge`` and ``split`` answer with the resulting trip(s); the originals stay,
with their new status, and link to what replaced them (``replaced_by``). Another
organisation's trip is not found (404); who may correct is the logbook's rule
(``services.correction_refusal``: the trip's driver or a fleet manager, 403 otherwise);
a corrected or locked trip answers 409, bad input 400 with a message per field.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import (
    APIException,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from fleet.api.authentication import actor_for
from fleet.api.permissions import EVERY_ROLE, RolePermission
from fleet.api.serializers import UtcDateTimeField, rfc3339
from fleet.models import Role
from fleet.selectors import Actor
from logbook.models import Category, Interface, Trip, TripOrigin, TripStatus
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
from logbook.services import (
    MERGE_MAX_TRIPS,
    REASON_MAX,
    LogbookError,
    cancel_trip,
    classify,
    edit_deadline,
    logbook_settings_for,
    merge_trips,
    pauses_in,
    split_trip,
)

ID_MAX = 2**63 - 1
CATEGORY_CHOICES = [c.value for c in Category]
FILTER_CATEGORIES = [*CATEGORY_CHOICES, "unclassified"]


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The trip can no longer be changed."
    default_code = "conflict"


# --------------------------------------------------------------------------- shapes


class PauseSerializer(serializers.Serializer):
    """A standstill within a trip: a destination the parking rule may have missed."""

    point = serializers.IntegerField(help_text="Index in `route` where the vehicle came to "
                                     "rest: `split` there ends the first part on arrival.")
    resume_point = serializers.IntegerField(help_text="Index in `route` where it moved on: "
                                            "the second part starts there.")
    arrival = UtcDateTimeField()
    departure = UtcDateTimeField()
    duration_s = serializers.FloatField()
    latitude = serializers.FloatField()
    longitude = serializers.FloatField()


def pause_views(trip: Trip, radius_m: float) -> list[dict]:
    return [
        {"point": p.arrival, "resume_point": p.departure, "arrival": rfc3339(p.arrival_time),
         "departure": rfc3339(p.departure_time), "duration_s": p.duration_s,
         "latitude": p.latitude, "longitude": p.longitude}
        for p in pauses_in(trip.route, radius_m)
    ]


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
    replaced_by = serializers.ListField(
        child=serializers.IntegerField(), allow_null=True,
        help_text="The trips that replaced this one (a merge or split of it, or its "
        "re-derivation), oldest first; empty while it is active or when cancelled. Null "
        "when hidden.")
    origin = serializers.ChoiceField(
        choices=[o.value for o in TripOrigin],
        help_text="derived from positions; merge: a merge of the trips in `corrects`; "
        "split: a part of the trip in `corrects`.")
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
    pauses = PauseSerializer(
        many=True, allow_null=True,
        help_text="Standstills of a minute or more within the trip, where it may be split "
        "(`split` with `at` = a pause's `point`); only on a single trip (null in lists and "
        "when hidden).",
    )

    def to_representation(self, trip: Trip) -> dict:
        actor: Actor = self.context["actor"]
        view = trip_view(trip, actor, with_route=self.context.get("with_route", False))
        redacted = view["redacted"]
        request = self.context.get("request")
        link = reverse("api-trip-revisions", args=[trip.pk])
        deadline = None
        settings = self.context.setdefault("logbook_settings", {})
        found = settings.get(trip.organisation_id)
        if found is None:
            found = settings[trip.organisation_id] = logbook_settings_for(trip.organisation_id)
        if not redacted and trip.locked_at is None and trip.status == TripStatus.ACTIVE:
            moment = edit_deadline(trip, found)
            deadline = moment if moment > self.context.get("now", timezone.now()) else None
        pauses = None
        if view["route"] is not None:
            pauses = pause_views(trip, found.stop_radius_m)
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
            "replaced_by": None if redacted else [t.pk for t in sorted(
                trip.corrected_by.all(), key=lambda t: (t.start_time, t.pk))],
            "origin": trip.origin,
            "locked": view["locked"],
            "editable_until": rfc3339(deadline),
            "redacted": redacted,
            "revisions": request.build_absolute_uri(link) if request is not None else link,
            "route": view["route"],
            "pauses": pauses,
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


class CancelSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=REASON_MAX, help_text="Why the trip did not happen like this (towed, the "
        "unit was in another vehicle...): kept with the trip and in its revisions.")


class MergeSerializer(serializers.Serializer):
    trips = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=ID_MAX), min_length=2,
        max_length=MERGE_MAX_TRIPS,
        help_text="Consecutive trips of one vehicle and one driver, in any order.")
    reason = serializers.CharField(
        max_length=REASON_MAX, required=False, allow_blank=True,
        help_text="Why they are one trip; default: the stops between were no destinations.")


@extend_schema_field({
    "oneOf": [
        {"type": "string", "format": "date-time"},
        {"type": "integer", "minimum": 0, "maximum": ID_MAX},
    ],
    "description": "An RFC 3339 time within the trip, or a point of the trip's `route` "
    "(its index, e.g. a pause's `point`). Within a pause the trip is split at the pause: "
    "the first part ends on arrival, the second starts on departure.",
})
class SplitAtField(serializers.Field):
    """A time (RFC 3339) or a route point (an integer index)."""

    default_error_messages = {
        "invalid": "Give an RFC 3339 time within the trip (e.g. 2026-03-02T08:15:00Z) or the "
                   "index of a point of its route.",
    }

    def to_internal_value(self, data: object) -> datetime | int:
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, int):
            if not 0 <= data <= ID_MAX:
                self.fail("invalid")
            return data
        if isinstance(data, str):
            text = data.strip()
            if text.isascii() and text.isdigit() and len(text) <= 18:
                return int(text)
            try:
                return UtcDateTimeField().run_validation(text)
            except serializers.ValidationError:
                self.fail("invalid")
        self.fail("invalid")

    def to_representation(self, value: datetime | int) -> str | int:
        return value if isinstance(value, int) else rfc3339(value)


class SplitSerializer(serializers.Serializer):
    at = SplitAtField()
    reason = serializers.CharField(
        max_length=REASON_MAX, required=False, allow_blank=True,
        help_text="Why the trip is two; default: a destination within the trip.")


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


def _role_refusal(actor: Actor) -> str | None:
    """Who never corrects, whichever trip: decided before any trip is looked up."""
    if actor.api_key_id is not None:
        return ("An API key does not correct the logbook: the trip's driver or a fleet "
                "manager does, logged in.")
    if actor.is_superuser:
        return "The platform operator does not correct an organisation's logbook."
    if actor.role not in (Role.ADMIN, Role.DRIVER):
        return ("Dispatchers do not correct the logbook: the trip's driver or a fleet "
                "manager does.")
    return None


@contextmanager
def correction_errors(trip: Trip) -> Iterator[None]:
    """The logbook's refusals as API answers: who may not (403), a trip that cannot be
    corrected any more (409, with the reason), bad input (400, a message per field)."""
    try:
        yield
    except DjangoPermissionDenied as error:
        raise PermissionDenied(str(error)) from error
    except LogbookError as error:
        conflicts = [(pk, fields["__all__"]) for pk, fields in error.messages_by_trip.items()
                     if "__all__" in fields]
        if conflicts:
            if len(error.messages_by_trip) == 1 and conflicts[0][0] == trip.pk:
                raise Conflict(conflicts[0][1]) from error
            raise Conflict(" ".join(f"Trip {pk}: {text}" for pk, text in conflicts)) from error
        fields: dict[str, list[str]] = {}
        for messages in error.messages_by_trip.values():
            for name, text in messages.items():
                fields.setdefault(name, []).append(text)
        raise ValidationError(fields) from error


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
    http_method_names = ["get", "patch", "post", "head", "options"]

    def get_queryset(self):
        return trips_visible_to(self.actor).prefetch_related("corrects", "corrected_by")

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

    # ------------------------------------------------------------------ corrections

    def _check_role(self) -> None:
        """Decided before the body is read: a dispatcher learns that nothing they could
        send would do, rather than what is wrong with what they sent."""
        refusal = _role_refusal(self.actor)
        if refusal is not None:
            raise PermissionDenied(refusal)

    def _shown(self, trips: list[Trip]) -> list[dict]:
        """The trips as the caller sees them after a correction, each with its route."""
        fresh = {t.pk: t for t in self.get_queryset().filter(pk__in=[t.pk for t in trips])}
        context = {**self.get_serializer_context(), "with_route": True}
        return [TripSerializer(fresh[t.pk], context=context).data for t in trips]

    @extend_schema(
        request=CancelSerializer,
        responses={
            200: TripSerializer,
            400: OpenApiResponse(description="`reason` is missing or too long."),
            403: OpenApiResponse(description="Not yours to correct: the trip's driver or a "
                                 "fleet manager corrects it (never a dispatcher or an API "
                                 "key; someone else's private trip only its driver)."),
            404: OpenApiResponse(description="No such trip (or another organisation's)."),
            409: OpenApiResponse(description="The trip is locked (`detail` says until when "
                                 "it could be corrected) or was corrected already."),
        },
        examples=[OpenApiExample("Towed", value={"reason": "Towed to the workshop"},
                                 request_only=True)],
        description="Cancel the trip visibly: it stays in the logbook with status "
        "`cancelled` and the reason, counts in no total, and the change is a revision "
        "(interface `api`). Within the edit window only.",
    )
    @action(detail=True, methods=["post"], url_path="cancel", url_name="cancel",
            pagination_class=None)
    def cancel(self, request, pk=None):
        trip = self.get_object()
        self._check_role()
        body = CancelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        with correction_errors(trip):
            cancelled = cancel_trip(trip, body.validated_data["reason"], actor=self.actor,
                                    interface=Interface.API)
        return Response(self._shown([cancelled])[0])

    @extend_schema(
        request=MergeSerializer,
        responses={
            201: TripSerializer,
            400: OpenApiResponse(description="`trips`: fewer than two, named twice, of "
                                 "different vehicles or drivers, not consecutive, or with an "
                                 "odometer gap between them; `reason` too long."),
            403: OpenApiResponse(description="Not yours to correct."),
            404: OpenApiResponse(description="A trip that does not exist for you."),
            409: OpenApiResponse(description="A trip is locked or was corrected already."),
        },
        examples=[OpenApiExample("Two trips", value={"trips": [41, 42], "reason": "Waited "
                                 "at the barrier, no destination"}, request_only=True)],
        description="Merge consecutive trips of one vehicle and driver into one (a stop that "
        "was no destination). Answers the new trip: it runs from the first start to the last "
        "end, lists the originals in `corrects` and keeps their classification when they "
        "agree (else it is unclassified). The originals stay with status `merged`.",
    )
    @action(detail=False, methods=["post"], url_path="merge", url_name="merge",
            pagination_class=None)
    def merge(self, request):
        self._check_role()
        body = MergeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        ids = body.validated_data["trips"]
        found = {t.pk: t for t in self.get_queryset().filter(pk__in=ids)}
        missing = [pk for pk in ids if pk not in found]
        if missing:
            raise NotFound(f"No trip {missing[0]}.")
        trips = [found[pk] for pk in ids]
        with correction_errors(trips[0]):
            merged = merge_trips(trips, actor=self.actor, interface=Interface.API,
                                 reason=body.validated_data.get("reason", ""))
        return Response(self._shown([merged])[0], status=status.HTTP_201_CREATED)

    @extend_schema(
        request=SplitSerializer,
        responses={
            201: TripSerializer(many=True),
            400: OpenApiResponse(description="`at` is outside the trip, no point of its "
                                 "route, or malformed; `reason` too long."),
            403: OpenApiResponse(description="Not yours to correct."),
            404: OpenApiResponse(description="No such trip (or another organisation's)."),
            409: OpenApiResponse(description="The trip is locked or was corrected already."),
        },
        examples=[
            OpenApiExample("At a time", value={"at": "2026-03-02T08:15:00Z", "reason":
                                               "Delivery at Schulz GmbH"}, request_only=True),
            OpenApiExample("At a pause", value={"at": 17}, request_only=True),
        ],
        description="Split the trip in two at a time or a point of its route (a destination "
        "the parking rule missed; the trip's `pauses` are the likely ones). Answers both "
        "parts, oldest first: continuous odometer, distances adding up to the original's, "
        "the driver and classification of the original. The original stays with status "
        "`split`.",
    )
    @action(detail=True, methods=["post"], url_path="split", url_name="split",
            pagination_class=None)
    def split(self, request, pk=None):
        trip = self.get_object()
        self._check_role()
        body = SplitSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        with correction_errors(trip):
            parts = split_trip(trip, body.validated_data["at"], actor=self.actor,
                               interface=Interface.API,
                               reason=body.validated_data.get("reason", ""))
        return Response(self._shown(list(parts)), status=status.HTTP_201_CREATED)

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
