"""What the engine bus says, through the API: latest signals, a signal's history, fault
codes, service plans with how far each is from being due, the catalogue of signal keys,
and the DBC files that decode a vehicle model's own frames."""

from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet
from django.db.models.functions import Length
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from fleet.api.authentication import actor_for
from fleet.api.pagination import KeysetPagination
from fleet.api.permissions import ADMINS, EVERY_ROLE, RolePermission
from fleet.api.serializers import (
    OrganisationOwnedSerializer,
    TimeWindowSerializer,
    UtcDateTimeField,
    in_organisation,
)
from fleet.models import Role
from fleet.selectors import organisations_visible_to, vehicles_visible_to
from telematics.can.dbc import (
    DBC_MAX_BYTES,
    DbcDecoder,
    check_mapping_shape,
    dbc_text_from_upload,
    load_dbc,
)
from telematics.can.errors import DbcError, DbcMappingError
from telematics.can.signals import SIGNALS
from telematics.maintenance import complete_service, current_reading, plan_status
from telematics.models import DbcFile, Fault, ServicePlan, SignalSample, VehicleState

DBC_READERS = frozenset({Role.ADMIN, Role.DISPATCHER})


def faults_visible_to(principal) -> QuerySet[Fault]:
    return Fault.objects.filter(vehicle__in=vehicles_visible_to(principal))


def dbc_files_visible_to(principal) -> QuerySet[DbcFile]:
    return DbcFile.objects.filter(organisation__in=organisations_visible_to(principal))


def service_plans_visible_to(principal) -> QuerySet[ServicePlan]:
    return ServicePlan.objects.filter(vehicle__in=vehicles_visible_to(principal)).select_related(
        "vehicle", "vehicle__state")


class SignalValueSerializer(serializers.Serializer):
    signal = serializers.CharField()
    label = serializers.CharField()
    unit = serializers.CharField()
    value = serializers.FloatField()
    time = serializers.CharField(help_text="RFC 3339, UTC: when the vehicle reported it.")
    source = serializers.CharField()


class SamplePointSerializer(serializers.ModelSerializer):
    time = UtcDateTimeField()

    class Meta:
        model = SignalSample
        fields = ["time", "value", "source"]


class FaultSerializer(serializers.ModelSerializer):
    first_seen = UtcDateTimeField()
    last_seen = UtcDateTimeField()
    closed_at = UtcDateTimeField(allow_null=True)
    is_open = serializers.BooleanField()

    class Meta:
        model = Fault
        fields = ["id", "vehicle", "code", "description", "source", "spn", "fmi", "occurrence",
                  "lamps", "first_seen", "last_seen", "closed_at", "is_open"]


class ServicePlanStatusSerializer(serializers.Serializer):
    state = serializers.ChoiceField(["ok", "due_soon", "overdue"])
    remaining_km = serializers.FloatField(allow_null=True)
    remaining_hours = serializers.FloatField(allow_null=True)
    remaining_days = serializers.FloatField(allow_null=True)


class ServicePlanSerializer(serializers.ModelSerializer):
    last_done_at = UtcDateTimeField()
    status = serializers.SerializerMethodField()

    class Meta:
        model = ServicePlan
        fields = ["id", "vehicle", "name", "interval_km", "interval_hours", "interval_days",
                  "due_soon_km", "due_soon_hours", "due_soon_days", "last_done_at",
                  "last_done_odometer_km", "last_done_engine_hours", "status"]

    def get_fields(self):
        fields = super().get_fields()
        fields["vehicle"].queryset = vehicles_visible_to(self.context["actor"])
        return fields

    @extend_schema_field(ServicePlanStatusSerializer)
    def get_status(self, plan: ServicePlan) -> dict:
        now = timezone.now()
        state = getattr(plan.vehicle, "state", None)
        status = plan_status(plan, current_reading(state, plan.vehicle.odometer_offset_km, now))
        return {"state": status.state, "remaining_km": status.remaining_km,
                "remaining_hours": status.remaining_hours,
                "remaining_days": status.remaining_days}

    def validate(self, attrs: dict) -> dict:
        merged = {**({} if self.instance is None else {
            "interval_km": self.instance.interval_km,
            "interval_hours": self.instance.interval_hours,
            "interval_days": self.instance.interval_days}), **attrs}
        if not (merged.get("interval_km") or merged.get("interval_hours")
                or merged.get("interval_days")):
            raise ValidationError({"non_field_errors": [
                "A service plan needs an interval in km, hours or days."]})
        return attrs


class ServiceCompletionSerializer(serializers.Serializer):
    done_at = UtcDateTimeField(required=False, help_text="Default: now.")
    odometer_km = serializers.FloatField(required=False, allow_null=True,
                                         help_text="Default: the vehicle's odometer now.")
    engine_hours = serializers.FloatField(required=False, allow_null=True)
    note = serializers.CharField(required=False, allow_blank=True, default="")


VEHICLE_PK = OpenApiParameter("vehicle_pk", OpenApiTypes.INT, OpenApiParameter.PATH,
                              description="The vehicle's id.")
SIGNAL_KEY = OpenApiParameter("id", OpenApiTypes.STR, OpenApiParameter.PATH,
                              enum=sorted(SIGNALS), description="A signal's key.")


class VehicleSignalsViewSet(viewsets.ViewSet):
    """``vehicles/{id}/signals/``: the latest value of each signal, and one's history."""

    permission_classes = [IsAuthenticated, RolePermission]
    read_roles = EVERY_ROLE

    def _vehicle(self, request, vehicle_pk: str):
        if not vehicle_pk.isdigit() or len(vehicle_pk) > 18:
            raise ValidationError({"vehicle": ["Not a vehicle id."]})
        return get_object_or_404(vehicles_visible_to(actor_for(request)), pk=int(vehicle_pk))

    @extend_schema(parameters=[VEHICLE_PK], responses=SignalValueSerializer(many=True),
                   description="Latest value, unit and time of every signal the vehicle "
                   "has reported.")
    def list(self, request, vehicle_pk: str):
        vehicle = self._vehicle(request, vehicle_pk)
        state = VehicleState.objects.filter(vehicle=vehicle).first()
        values = []
        for key, entry in sorted(((state.signals if state else None) or {}).items()):
            signal = SIGNALS.get(key)
            values.append({"signal": key, "label": signal.label if signal else key,
                           "unit": entry.get("unit", ""), "value": entry["value"],
                           "time": entry["time"].replace("+00:00", "Z"),
                           "source": entry.get("source", "")})
        return Response(SignalValueSerializer(values, many=True).data)

    @extend_schema(
        parameters=[
            VEHICLE_PK, SIGNAL_KEY,
            OpenApiParameter("from", OpenApiTypes.DATETIME, description="Default: 24 h ago."),
            OpenApiParameter("to", OpenApiTypes.DATETIME, description="Default: now."),
            OpenApiParameter("cursor", OpenApiTypes.STR),
            OpenApiParameter("page_size", OpenApiTypes.INT),
        ],
        responses=inline_serializer("SignalHistoryPage", fields={
            "next": serializers.URLField(allow_null=True),
            "has_more": serializers.BooleanField(),
            "results": SamplePointSerializer(many=True),
        }),
        description="Stored samples of one signal (thinned: a value is stored when it "
        "moves by the signal's step or once a minute), oldest first.",
    )
    def retrieve(self, request, vehicle_pk: str, pk: str):
        vehicle = self._vehicle(request, vehicle_pk)
        if pk not in SIGNALS:
            raise ValidationError({"signal": [
                f"Unknown signal {pk!r}; one of: {', '.join(sorted(SIGNALS))}."]})
        window = TimeWindowSerializer(data=request.query_params)
        window.is_valid(raise_exception=True)
        samples = SignalSample.objects.filter(
            vehicle=vehicle, signal=pk, time__gte=window.validated_data["from"],
            time__lt=window.validated_data["to"])
        paginator = KeysetPagination(time_field="time")
        rows = paginator.paginate_queryset(samples, request)
        return paginator.get_paginated_response(SamplePointSerializer(rows, many=True).data)


class FaultViewSet(viewsets.ReadOnlyModelViewSet):
    """Fault codes of the fleet: ``?vehicle=``, ``?open=true|false``, ``?code=``."""

    serializer_class = FaultSerializer
    permission_classes = [IsAuthenticated, RolePermission]
    read_roles = EVERY_ROLE
    lookup_value_regex = "[0-9]{1,18}"
    filter_backends = []

    @extend_schema(parameters=[
        OpenApiParameter("vehicle", OpenApiTypes.INT),
        OpenApiParameter("open", OpenApiTypes.BOOL),
        OpenApiParameter("code", OpenApiTypes.STR),
    ])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def get_queryset(self):
        faults = faults_visible_to(actor_for(self.request)).order_by("-first_seen", "-id")
        params = self.request.query_params
        if "vehicle" in params:
            if not params["vehicle"].isdigit() or len(params["vehicle"]) > 18:
                raise ValidationError({"vehicle": ["Not a vehicle id."]})
            faults = faults.filter(vehicle_id=int(params["vehicle"]))
        if "open" in params:
            if params["open"] not in ("true", "false"):
                raise ValidationError({"open": ["Use true or false."]})
            faults = faults.filter(closed_at__isnull=params["open"] == "true")
        if params.get("code"):
            faults = faults.filter(code__iexact=params["code"])
        return faults


class ServicePlanViewSet(viewsets.ModelViewSet):
    """Service plans per vehicle with their state; admins create, change and complete them."""

    serializer_class = ServicePlanSerializer
    permission_classes = [IsAuthenticated, RolePermission]
    read_roles = EVERY_ROLE
    write_roles = ADMINS
    lookup_value_regex = "[0-9]{1,18}"
    filter_backends = []

    def get_queryset(self):
        return service_plans_visible_to(actor_for(self.request)).order_by("vehicle", "name")

    def get_serializer_context(self) -> dict:
        return {**super().get_serializer_context(), "actor": actor_for(self.request)}

    @extend_schema(request=ServiceCompletionSerializer, responses=ServicePlanSerializer,
                   description="Record a service: the plan restarts from the readings at "
                   "completion (the vehicle's odometer and engine hours unless given).")
    @action(detail=True, methods=["post"])
    def complete(self, request, pk=None):
        plan = self.get_object()
        completion = ServiceCompletionSerializer(data=request.data)
        completion.is_valid(raise_exception=True)
        data = completion.validated_data
        user = getattr(actor_for(request), "user", None)
        complete_service(plan, data.get("done_at") or timezone.now(),
                         odometer_km=data.get("odometer_km"),
                         engine_hours=data.get("engine_hours"), note=data.get("note", ""),
                         recorded_by=getattr(user, "username", "") or "api key")
        plan.refresh_from_db()
        return Response(self.get_serializer(plan).data)


# --- Signal catalogue ----------------------------------------------------------------------

class SignalDefinitionSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="What the API, DBC mappings and alert rules use.")
    label = serializers.CharField()
    unit = serializers.CharField()


class SignalCatalogueView(APIView):
    """``signals/catalogue/``: every signal key the platform knows, with label and unit."""

    permission_classes = [IsAuthenticated, RolePermission]
    read_roles = EVERY_ROLE

    @extend_schema(responses=SignalDefinitionSerializer(many=True),
                   description="The signal keys a DBC mapping may target and the signals "
                   "endpoints return, with their labels and units.")
    def get(self, request):
        catalogue = [{"key": s.key, "label": s.label, "unit": s.unit} for s in SIGNALS.values()]
        return Response(SignalDefinitionSerializer(catalogue, many=True).data)


# --- DBC files -------------------------------------------------------------------------------

class DbcFileSerializer(OrganisationOwnedSerializer):
    """A DBC file and its mapping; the text comes as ``dbc_text`` or as a ``file`` upload.

    Whatever changes, the DBC is parsed and the mapping resolved against it before
    anything is stored, so a file that does not parse or a mapping that names nothing
    answers 400 with the reason, on the field to fix.
    """

    dbc_text = serializers.CharField(
        required=False, trim_whitespace=False, max_length=DBC_MAX_BYTES,
        help_text="The DBC file's text (or upload it as `file`, multipart). Only in the "
        "answers for one file, not in lists.")
    file = serializers.FileField(
        required=False, write_only=True, allow_empty_file=False,
        help_text="The DBC file (multipart/form-data); instead of `dbc_text`.")
    mapping = serializers.JSONField(
        required=False, help_text='Which DBC signal is which platform signal: '
        '{"Message.Signal": "<signal key>"}, keys from GET /api/v1/signals/catalogue/.')
    size_chars = serializers.SerializerMethodField()
    warnings = serializers.SerializerMethodField()

    class Meta:
        model = DbcFile
        fields = ["id", "organisation", "name", "mapping", "vehicles", "uploaded",
                  "size_chars", "warnings", "dbc_text", "file"]
        read_only_fields = ["uploaded"]
        extra_kwargs = {"vehicles": {"required": False}}

    def get_fields(self):
        fields = super().get_fields()
        if "actor" in self.context:
            fields["vehicles"].child_relation.queryset = vehicles_visible_to(self.actor)
        return fields

    def get_size_chars(self, dbc: DbcFile) -> int:
        size = getattr(dbc, "size", None)
        return size if size is not None else len(dbc.dbc_text)

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_warnings(self, dbc: DbcFile) -> list[str]:
        """What the DBC loader forgave, in the answer to an upload or change."""
        return getattr(dbc, "dbc_warnings", [])

    def to_representation(self, dbc: DbcFile) -> dict:
        data = super().to_representation(dbc)
        if getattr(self.context.get("view"), "action", None) == "list":
            data.pop("dbc_text", None)  # a list of 800 kB files helps nobody
        return data

    def validate_mapping(self, mapping: object) -> dict[str, str]:
        try:
            return check_mapping_shape(mapping)
        except DbcMappingError as error:
            raise ValidationError(str(error)) from error

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        upload = attrs.pop("file", None)
        if upload is not None and "dbc_text" in attrs:
            raise ValidationError({"file": ["Send the DBC as `file` or as `dbc_text`, "
                                            "not both."]})
        if upload is not None:
            if upload.size > DBC_MAX_BYTES:
                raise ValidationError({"file": [f"The file has {upload.size:,} bytes; a DBC "
                                                f"file of at most {DBC_MAX_BYTES:,} bytes is "
                                                "accepted."]})
            try:
                attrs["dbc_text"] = dbc_text_from_upload(upload.read())
            except DbcError as error:
                raise ValidationError({"file": [str(error)]}) from error
        text_field = "file" if upload is not None else "dbc_text"
        instance = self.instance
        if instance is None and "dbc_text" not in attrs:
            raise ValidationError({"dbc_text": ["Send the DBC file: upload it as `file` "
                                                "(multipart) or give its text as `dbc_text`."]})
        organisation = attrs["organisation"]
        name = attrs.get("name", getattr(instance, "name", None))
        clash = DbcFile.objects.filter(organisation=organisation, name=name)
        if instance is not None:
            clash = clash.exclude(pk=instance.pk)
        if clash.exists():
            raise ValidationError({"name": ["The organisation has a DBC file of this name "
                                            "already."]})
        if "vehicles" in attrs:
            self._check_vehicles(attrs["vehicles"], organisation)
        if "dbc_text" in attrs or "mapping" in attrs:
            text = attrs.get("dbc_text", getattr(instance, "dbc_text", ""))
            mapping = attrs.get("mapping", getattr(instance, "mapping", None) or {})
            attrs["mapping"] = mapping
            try:
                database, warnings = load_dbc(text)
            except DbcError as error:
                raise ValidationError({text_field: [str(error)]}) from error
            try:
                DbcDecoder.from_database(database, mapping)
            except DbcMappingError as error:
                raise ValidationError({"mapping": [str(error)]}) from error
            self._warnings = warnings
        return attrs

    def _check_vehicles(self, vehicles: list, organisation) -> None:
        """A vehicle decodes with one DBC file; say which one holds it rather than let
        the newest upload win silently."""
        for vehicle in vehicles:
            in_organisation(vehicle, organisation, "vehicles", "vehicle")
        held = DbcFile.objects.filter(vehicles__in=vehicles).prefetch_related("vehicles")
        if self.instance is not None:
            held = held.exclude(pk=self.instance.pk)
        for other in held.distinct():
            names = sorted(v.name for v in other.vehicles.all() if v in vehicles)
            raise ValidationError({"vehicles": [
                f"{', '.join(names)} already decode{'s' if len(names) == 1 else ''} with DBC "
                f"file {other.name!r} (id {other.pk}); a vehicle uses one DBC file, so take "
                "it off that file first."]})

    def create(self, validated_data: dict) -> DbcFile:
        with transaction.atomic():
            dbc = super().create(validated_data)
        dbc.dbc_warnings = getattr(self, "_warnings", [])
        return dbc

    def update(self, instance: DbcFile, validated_data: dict) -> DbcFile:
        with transaction.atomic():
            dbc = super().update(instance, validated_data)
        dbc.dbc_warnings = getattr(self, "_warnings", [])
        return dbc


class DbcFileViewSet(viewsets.ModelViewSet):
    """DBC files of the organisation. Admins upload, change and delete them; the ingest
    decodes each assigned vehicle's frames with the new file within seconds, no restart."""

    serializer_class = DbcFileSerializer
    permission_classes = [IsAuthenticated, RolePermission]
    read_roles = DBC_READERS
    write_roles = ADMINS
    lookup_value_regex = "[0-9]{1,18}"
    filter_backends = []

    def get_queryset(self):
        dbc_files = dbc_files_visible_to(actor_for(self.request)).prefetch_related(
            "vehicles").order_by("name", "id")
        if self.action == "list":
            dbc_files = dbc_files.annotate(size=Length("dbc_text")).defer("dbc_text")
        return dbc_files

    def get_serializer_context(self) -> dict:
        return {**super().get_serializer_context(), "actor": actor_for(self.request)}
