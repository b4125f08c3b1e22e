"""``jobs/`` for dispatch: jobs with ordered stops, their status, and each stop on its own.

Admins and dispatchers create and edit jobs; a driver sees the jobs assigned to them (or
to a vehicle they drive) and moves their status with ``POST jobs/{id}/status/``. An
invalid transition, or a change to a closed job, answers 409 with a message.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, PermissionDenied
from rest_framework.response import Response

from fleet import jobs as services
from fleet.api.filters import IdFilter
from fleet.api.permissions import EVERY_ROLE
from fleet.api.serializers import ApiModelSerializer, OrganisationOwnedSerializer, in_organisation
from fleet.api.views import ApiViewSet
from fleet.models import Driver, Job, JobStatus, JobStop, Role, Vehicle
from fleet.selectors import actor_of, drivers_visible_to, vehicles_visible_to

DISPATCH_ROLES = frozenset({Role.ADMIN, Role.DISPATCHER})


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The job's state does not allow this."
    default_code = "conflict"


def conflict(error: services.JobConflict) -> Conflict:
    return Conflict(detail=str(error))


class JobStopSerializer(ApiModelSerializer):
    sequence = serializers.IntegerField(
        required=False, min_value=1, max_value=10_000,
        help_text="Position in the job, from 1; new stops go last by default.",
    )
    latitude = serializers.FloatField(required=False, allow_null=True, min_value=-90,
                                      max_value=90)
    longitude = serializers.FloatField(required=False, allow_null=True, min_value=-180,
                                       max_value=180)
    radius_m = serializers.FloatField(
        required=False, min_value=10, max_value=50_000,
        help_text="Arrival is detected within this distance (default 150 m); departure "
        "beyond it times JOB_STOP_EXIT_FACTOR (1.5).",
    )
    state = serializers.ChoiceField(
        choices=["pending", "arrived", "departed"], read_only=True,
        help_text="pending; arrived (the vehicle is at the stop); departed.",
    )

    class Meta:
        model = JobStop
        fields = ["id", "sequence", "address", "latitude", "longitude", "radius_m",
                  "window_start", "window_end", "notes", "state", "arrived_at", "departed_at"]
        read_only_fields = ["arrived_at", "departed_at"]

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        merged = {name: getattr(self.instance, name) for name in (
            "address", "latitude", "longitude", "window_start", "window_end")
        } if self.instance is not None else {}
        merged.update(attrs)
        latitude, longitude = merged.get("latitude"), merged.get("longitude")
        if (latitude is None) != (longitude is None):
            raise serializers.ValidationError(
                {"longitude" if longitude is None else "latitude": [
                    "Give both latitude and longitude, or neither."]})
        if latitude is None and not (merged.get("address") or "").strip():
            raise serializers.ValidationError(
                {"address": ["A stop needs an address or coordinates."]})
        start, end = merged.get("window_start"), merged.get("window_end")
        if start and end and start > end:
            raise serializers.ValidationError({"window_end": ["Must not be before "
                                                              "window_start."]})
        return attrs


class JobSerializer(OrganisationOwnedSerializer):
    vehicle = serializers.PrimaryKeyRelatedField(
        queryset=Vehicle.objects.none(), required=False, allow_null=True,
        help_text="The vehicle doing the job; its positions detect arrivals.",
    )
    driver = serializers.PrimaryKeyRelatedField(
        queryset=Driver.objects.none(), required=False, allow_null=True,
        help_text="The driver doing the job (without a vehicle: the vehicles they are the "
        "default driver of detect arrivals).",
    )
    status = serializers.ChoiceField(
        choices=JobStatus.choices, read_only=True,
        help_text="Changed with POST jobs/{id}/status/ (and by arrivals at stops).",
    )
    next_statuses = serializers.SerializerMethodField(
        help_text="The statuses the job may move to now."
    )
    stops = JobStopSerializer(
        many=True, required=False,
        help_text="In order. On an update, replaces every stop (only while no stop has "
        "been reached); edit single stops under jobs/{id}/stops/.",
    )
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Job
        fields = ["id", "organisation", "reference", "title", "notes", "vehicle", "driver",
                  "status", "status_changed", "next_statuses", "stops", "created_by",
                  "created", "updated"]
        read_only_fields = ["status_changed", "created", "updated"]

    def get_fields(self):
        fields = super().get_fields()
        if "actor" in self.context:
            fields["vehicle"].queryset = vehicles_visible_to(self.actor)
            fields["driver"].queryset = drivers_visible_to(self.actor)
        return fields

    @extend_schema_field(serializers.ListField(child=serializers.ChoiceField(
        choices=JobStatus.choices)))
    def get_next_statuses(self, job: Job) -> list[str]:
        return services.next_statuses(job, self.context.get("actor"))

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        organisation = attrs["organisation"]
        in_organisation(attrs.get("vehicle"), organisation, "vehicle", "vehicle")
        in_organisation(attrs.get("driver"), organisation, "driver", "driver")
        return attrs


class JobStatusChangeSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=JobStatus.choices)
    note = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")


class JobFilter(filters.FilterSet):
    status = filters.MultipleChoiceFilter(choices=JobStatus.choices)
    vehicle = IdFilter(field_name="vehicle_id")
    driver = IdFilter(field_name="driver_id")
    reference = filters.CharFilter()
    open = filters.BooleanFilter(method="filter_open", label="Only open jobs (true) or only "
                                 "closed ones (false)")

    class Meta:
        model = Job
        fields = ["status", "vehicle", "driver", "reference", "open"]

    def filter_open(self, queryset, name, value):
        if value is None:
            return queryset
        if value:
            return queryset.filter(status__in=services.OPEN_STATUSES)
        return queryset.exclude(status__in=services.OPEN_STATUSES)


@extend_schema_view(
    create=extend_schema(description="Admins and dispatchers. With a vehicle or driver the "
                         "job starts `assigned`, otherwise `planned`."),
    update=extend_schema(description="Admins and dispatchers; 409 once the job is done or "
                         "failed."),
    partial_update=extend_schema(description="Admins and dispatchers; 409 once the job is "
                                 "done or failed."),
)
class JobViewSet(ApiViewSet):
    """Dispatch jobs. A driver sees the jobs assigned to them or to a vehicle they drive."""

    serializer_class = JobSerializer
    filterset_class = JobFilter

    @property
    def write_roles(self):
        return EVERY_ROLE if self.action == "set_status" else DISPATCH_ROLES

    def get_queryset(self):
        return services.jobs_visible_to(self.actor).prefetch_related("stops").select_related(
            "created_by")

    def perform_create(self, serializer) -> None:
        data = dict(serializer.validated_data)
        try:
            job = services.create_job(
                data.pop("organisation"), stops=data.pop("stops", []),
                created_by=self.actor.user if getattr(self.actor.user, "pk", None) else None,
                **data,
            )
        except services.JobConflict as error:
            raise conflict(error) from error
        serializer.instance = self.get_queryset().get(pk=job.pk)

    def perform_update(self, serializer) -> None:
        data = dict(serializer.validated_data)
        data.pop("organisation", None)
        try:
            job = services.update_job(serializer.instance, by=self.actor, **data)
        except services.JobConflict as error:
            raise conflict(error) from error
        serializer.instance = self.get_queryset().get(pk=job.pk)

    @extend_schema(
        request=JobStatusChangeSerializer, responses={200: JobSerializer},
        description="Move the job to another status. Admins, dispatchers and the driver of "
        "the job (who may set en_route, arrived, done and failed). An invalid transition "
        "answers 409 with a message naming the allowed ones. Recorded as a `job_status` "
        "event.",
    )
    @action(detail=True, methods=["post"], url_path="status")
    def set_status(self, request, pk=None):
        job = self.get_object()
        change = JobStatusChangeSerializer(data=request.data)
        change.is_valid(raise_exception=True)
        new = change.validated_data["status"]
        if actor_of(self.actor).role == Role.DRIVER and new not in services.DRIVER_STATUSES:
            raise PermissionDenied("A driver may set en_route, arrived, done or failed.")
        try:
            services.change_status(job, new, by=self.actor, note=change.validated_data["note"])
        except services.JobConflict as error:
            raise conflict(error) from error
        return Response(self.get_serializer(self.get_queryset().get(pk=job.pk)).data)


JOB_PK = OpenApiParameter("job_pk", OpenApiTypes.INT, OpenApiParameter.PATH,
                          description="The job's id.")


@extend_schema_view(**{name: extend_schema(parameters=[JOB_PK]) for name in (
    "list", "create", "retrieve", "update", "partial_update", "destroy")})
class JobStopViewSet(ApiViewSet):
    """The stops of one job, in order. A stop the vehicle reached cannot be deleted."""

    serializer_class = JobStopSerializer
    write_roles = DISPATCH_ROLES
    pagination_class = None

    def job(self) -> Job:
        if not hasattr(self, "_job"):
            self._job = get_object_or_404(services.jobs_visible_to(self.actor),
                                          pk=self.kwargs["job_pk"])
        return self._job

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return JobStop.objects.none()
        return JobStop.objects.filter(job=self.job()).order_by("sequence")

    def create(self, request, *args, **kwargs):
        self.job()  # 404 before 400 for another organisation's job
        return super().create(request, *args, **kwargs)

    def perform_create(self, serializer) -> None:
        try:
            serializer.instance = services.add_stop(self.job(), **serializer.validated_data)
        except services.JobConflict as error:
            raise conflict(error) from error

    def perform_update(self, serializer) -> None:
        try:
            serializer.instance = services.update_stop(serializer.instance,
                                                       **serializer.validated_data)
        except services.JobConflict as error:
            raise conflict(error) from error

    def perform_destroy(self, instance) -> None:
        try:
            services.delete_stop(instance)
        except services.JobConflict as error:
            raise conflict(error) from error
