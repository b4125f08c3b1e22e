"""API endpoints: thin views over the selectors, serializers and services.

Every queryset comes from a ``fleet.selectors`` function given the request's actor, so
another organisation's object is simply not found (404), and lists never include it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth import authenticate
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import ProtectedError
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotAuthenticated, ValidationError
from rest_framework.fields import get_error_detail
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from fleet.api import filters, rows, services
from fleet.api.authentication import BearerTokenAuthentication, actor_for
from fleet.api.pagination import KeysetPagination
from fleet.api.permissions import ADMINS, EVERY_ROLE, RolePermission
from fleet.api.renderers import FastJSONRenderer, PositionCsvRenderer, PositionGpxRenderer
from fleet.api.serializers import (
    ApiKeySerializer,
    DeviceSerializer,
    DriverAssignmentSerializer,
    DriverSerializer,
    FeedStartSerializer,
    NewApiKeySerializer,
    OrganisationSerializer,
    PositionSerializer,
    TimeWindowSerializer,
    TokenRequestSerializer,
    TokenSerializer,
    UserSerializer,
    VehicleSerializer,
)
from fleet.api.throttling import TokenThrottle
from fleet.live import positions_hidden_from
from fleet.models import LoginToken
from fleet.selectors import (
    Actor,
    api_keys_visible_to,
    devices_visible_to,
    drivers_visible_to,
    organisations_visible_to,
    position_feed_for,
    positions_of_vehicle,
    users_visible_to,
    vehicles_visible_to,
    vehicles_with_state_visible_to,
)
from logbook.selectors import without_private_positions

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def exception_handler(exc, context):
    """DRF's handler, plus Django's ValidationError from services as a 400 per field."""
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {
            "non_field_errors": exc.messages}
        exc = ValidationError(detail=get_error_detail(DjangoValidationError(detail)))
    elif isinstance(exc, ProtectedError):  # e.g. a vehicle with logbook trips, kept for years
        kinds = sorted({str(o._meta.verbose_name_plural) for o in exc.protected_objects})
        exc = APIException(f"It cannot be deleted: {', '.join(kinds)} refer to it and are kept.")
        exc.status_code = status.HTTP_409_CONFLICT
    return drf_exception_handler(exc, context)


def position_page_serializer(name: str):
    return inline_serializer(name, fields={
        "next": serializers.URLField(
            allow_null=True, help_text="The next page (also sent as a Link header)."
        ),
        "has_more": serializers.BooleanField(),
        "results": PositionSerializer(many=True),
    })


class ApiViewSet(viewsets.ModelViewSet):
    """Role checks, the actor in the serializer context, ids that fit a bigint."""

    permission_classes = [IsAuthenticated, RolePermission]
    renderer_classes = [FastJSONRenderer]
    read_roles = EVERY_ROLE
    write_roles = ADMINS
    lookup_value_regex = "[0-9]{1,18}"

    @property
    def actor(self) -> Actor:
        return actor_for(self.request)

    def get_serializer_context(self) -> dict:
        context = super().get_serializer_context()
        context["actor"] = self.actor
        context["now"] = timezone.now()
        return context

    def filter_queryset(self, queryset):
        """Skip django-filter when the query names none of the view's filters: building
        its form costs more than the query of a small list, on every poll."""
        filterset = getattr(self, "filterset_class", None)
        if (filterset is not None and self.filter_backends == [DjangoFilterBackend]
                and not set(self.request.query_params) & set(filterset.base_filters)):
            return queryset
        return super().filter_queryset(queryset)


@extend_schema_view(
    create=extend_schema(description="The platform operator (superuser) only."),
    update=extend_schema(description="An admin of the organisation, or the operator."),
    partial_update=extend_schema(description="An admin of the organisation, or the operator."),
)
class OrganisationViewSet(ApiViewSet):
    """Organisations: each login sees its own; the platform operator sees and creates all."""

    serializer_class = OrganisationSerializer
    filterset_class = filters.OrganisationFilter
    superuser_creates = True
    http_method_names = ["get", "post", "put", "patch", "head", "options"]

    def get_queryset(self):
        return organisations_visible_to(self.actor)


class UserViewSet(ApiViewSet):
    """Logins of the organisation, each with a role. Admins only; API keys may not."""

    serializer_class = UserSerializer
    filterset_class = filters.UserFilter
    read_roles = ADMINS
    people_only = True

    def get_queryset(self):
        return users_visible_to(self.actor).order_by("username")

    def perform_create(self, serializer) -> None:
        data = serializer.validated_data
        serializer.instance = services.create_member(
            organisation=data["organisation"], username=data["username"], role=data["role"],
            password=data["password"], email=data.get("email", ""),
            first_name=data.get("first_name", ""), last_name=data.get("last_name", ""),
            is_active=data.get("is_active", True),
        )

    def perform_update(self, serializer) -> None:
        data = dict(serializer.validated_data)
        data.pop("organisation", None)
        serializer.instance = services.update_member(serializer.instance, **data)

    def perform_destroy(self, instance) -> None:
        if instance.pk == getattr(self.actor.user, "pk", None):
            raise ValidationError({"non_field_errors": ["You cannot delete your own login."]})
        instance.delete()


class VehicleViewSet(ApiViewSet):
    """Vehicles with their latest position and status; a driver sees the ones they drive."""

    serializer_class = VehicleSerializer
    filterset_class = filters.VehicleFilter

    def get_queryset(self):
        if self.action == "positions":  # the vehicle only: its state is not shown
            return vehicles_visible_to(self.actor)
        return vehicles_with_state_visible_to(self.actor)

    def list(self, request, *args, **kwargs):
        """Every vehicle of the fleet, a page at a time, read as plain rows
        (``fleet.api.rows``): a dispatch board asks for all of them every few seconds.
        The same representation as ``VehicleSerializer``."""
        queryset = self.filter_queryset(self.get_queryset())
        vehicles = self.paginator.paginate_queryset(queryset, request, view=self,
                                                    fetch=rows.vehicle_rows)
        paginated = vehicles is not None
        if not paginated:
            vehicles = rows.vehicle_rows(queryset)
        fix_time = rows.VEHICLE_FIELDS.index("last_fix_time")
        hidden = positions_hidden_from(self.actor, {v[0]: v[fix_time] for v in vehicles})
        data = rows.vehicle_dicts(vehicles, now=timezone.now(), hidden=hidden)
        if not paginated:
            return Response(data)
        return self.paginator.get_paginated_response(data)

    # A vehicle on a private trip shows no last position (logbook/README.md).
    def get_object(self):
        vehicle = super().get_object()
        self.positions_hidden = positions_hidden_from(
            self.actor, {vehicle.pk: vehicle.last_fix_time})
        return vehicle

    def get_serializer_context(self) -> dict:
        return {**super().get_serializer_context(),
                "positions_hidden": getattr(self, "positions_hidden", set())}

    def perform_create(self, serializer) -> None:
        serializer.save()
        self._reread(serializer)

    def perform_update(self, serializer) -> None:
        serializer.save()
        self._reread(serializer)

    def _reread(self, serializer) -> None:
        """Answer a write with the vehicle as a read shows it (status, last position)."""
        serializer.instance = self.get_queryset().get(pk=serializer.instance.pk)

    @extend_schema(
        request=DriverAssignmentSerializer,
        responses={200: VehicleSerializer},
        description="Assign the vehicle's default driver (null clears it). Same as a PATCH "
        "of `default_driver`.",
    )
    @action(detail=True, methods=["post"], url_path="driver")
    def assign_driver(self, request, pk=None):
        vehicle = self.get_object()
        assignment = DriverAssignmentSerializer(
            data=request.data, context={"actor": self.actor, "vehicle": vehicle}
        )
        assignment.is_valid(raise_exception=True)
        services.assign_driver(vehicle, assignment.validated_data["driver"])
        return Response(self.get_serializer(vehicle).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATETIME,
                             description="Start, inclusive (fix time). Default: 24 h before `to`."),
            OpenApiParameter("to", OpenApiTypes.DATETIME,
                             description="End, exclusive (fix time). Default: now."),
            OpenApiParameter("cursor", OpenApiTypes.STR,
                             description="From the previous page's `next` link."),
            OpenApiParameter("page_size", OpenApiTypes.INT,
                             description="Rows a page; at most (and by default) 1000."),
            OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv", "gpx"],
                             description="Instead of an Accept header: text/csv or "
                             "application/gpx+xml."),
        ],
        responses={
            (200, "application/json"): position_page_serializer("PositionPage"),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV, one row a fix"),
            (200, "application/gpx+xml"): OpenApiResponse(OpenApiTypes.STR,
                                                          description="A GPX 1.1 track"),
        },
        description="The vehicle's positions by fix time, oldest first, a page of up to "
        "1000 at a time. Follow `next` (or the `Link` header) until it is null. Positions "
        "inside a trip that is private to you are left out, so a page may hold fewer.",
    )
    @action(
        detail=True, methods=["get"], pagination_class=None, filter_backends=[],
        renderer_classes=[FastJSONRenderer, PositionCsvRenderer, PositionGpxRenderer],
    )
    def positions(self, request, pk=None):
        # The vehicle as any detail finds it (scoped, 404 elsewhere, role checked), but
        # without its last position: only the page's positions are shown.
        vehicle = super().get_object()
        self.gpx_track_name = lambda: vehicle.name
        window = TimeWindowSerializer(data=request.query_params)
        window.is_valid(raise_exception=True)
        start, end = window.validated_data["from"], window.validated_data["to"]
        paginator = KeysetPagination(time_field="fix_time")
        page = paginator.paginate_queryset(positions_of_vehicle(vehicle, start, end), request,
                                           fetch=rows.position_rows)
        page = without_private_positions(self.actor, page)  # a private trip's are left out
        return paginator.get_paginated_response(rows.position_dicts(page), extra_params={
            "from": _rfc3339(start), "to": _rfc3339(end),
        })


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class DeviceViewSet(ApiViewSet):
    """Telematics units. Registering refuses an identifier that is registered already.

    There is no DELETE: removing a unit would remove its positions; set ``active`` false.
    """

    serializer_class = DeviceSerializer
    filterset_class = filters.DeviceFilter
    http_method_names = ["get", "post", "put", "patch", "head", "options"]

    def get_queryset(self):
        return devices_visible_to(self.actor)

    def perform_create(self, serializer) -> None:
        data = serializer.validated_data
        try:
            serializer.instance = services.register_device(
                organisation=data["organisation"], identifier=data["identifier"],
                protocol=data["protocol"], vehicle=data.get("vehicle"),
                secret=data.get("secret", ""), active=data.get("active", True),
            )
        except services.DuplicateUnit as error:
            raise ValidationError({"identifier": [
                f"Unit {data['identifier'].strip()} is registered already; a unit can "
                "feed only one vehicle's history. Edit that unit instead."
            ]}) from error
        except DjangoValidationError as error:
            field = "protocol" if "protocol" in " ".join(error.messages) else "identifier"
            raise ValidationError({field: error.messages}) from error


class DriverViewSet(ApiViewSet):
    """Drivers of the organisation; a driver's login sees only its own record."""

    serializer_class = DriverSerializer
    filterset_class = filters.DriverFilter

    def get_queryset(self):
        return drivers_visible_to(self.actor)


@extend_schema_view(
    create=extend_schema(responses={201: NewApiKeySerializer},
                         description="The response holds the full key, this once."),
    destroy=extend_schema(description="Revokes the key at once; it stays listed, revoked."),
)
class ApiKeyViewSet(ApiViewSet):
    """Organisation API keys for integrations. Admins only, logged in as a person."""

    serializer_class = ApiKeySerializer
    filterset_class = filters.ApiKeyFilter
    read_roles = ADMINS
    people_only = True
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return api_keys_visible_to(self.actor)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key, raw_key = services.create_api_key(
            serializer.validated_data["organisation"], serializer.validated_data["name"],
            created_by=self.actor.user,
        )
        key.key = raw_key
        return Response(NewApiKeySerializer(key, context=self.get_serializer_context()).data,
                        status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance) -> None:
        services.revoke_api_key(instance)


class TokenView(APIView):
    """Log in for a token: ``Authorization: Bearer <token>`` on every later request."""

    permission_classes = [AllowAny]
    throttle_classes = [TokenThrottle]

    def get_authenticators(self):
        # Logging in needs no credentials, and a stale token a client still sends along
        # must not stand in the way of getting a new one.
        if self.request is not None and self.request.method == "POST":
            return []
        return [BearerTokenAuthentication()]

    @extend_schema(
        request=TokenRequestSerializer, responses={200: TokenSerializer}, auth=[],
        description="A new token for each login (each app or script its own), valid "
        "until `expires_at`: API_TOKEN_TTL_S after issue (12 hours by default), however "
        "much it is used. An expired token answers 401 saying it expired; log in again "
        "then. Integrations that run unattended use an organisation API key instead. "
        "Limited to a few tries a minute per client address (429 beyond).",
    )
    def post(self, request):
        credentials = TokenRequestSerializer(data=request.data)
        credentials.is_valid(raise_exception=True)
        user = authenticate(request._request, **credentials.validated_data)
        if user is None:
            raise ValidationError({"non_field_errors": [
                "Unable to log in with that username and password."
            ]})
        token, raw = services.issue_token(user)
        return Response(TokenSerializer({"token": raw, "expires_at": token.expires_at}).data)

    @extend_schema(
        parameters=[OpenApiParameter(
            "everywhere", OpenApiTypes.BOOL,
            description="true: every token of the login stops working, not just this one.",
        )],
        responses={204: None},
        description="Log out: the token sent as `Authorization: Bearer` stops working "
        "(API keys are revoked under /api/v1/api-keys/ instead).",
    )
    def delete(self, request):
        if not isinstance(request.auth, LoginToken):
            raise NotAuthenticated(
                "Send the token to log out as 'Authorization: Bearer <token>'.")
        everywhere = request.query_params.get("everywhere", "false").lower()
        if everywhere not in ("true", "false", "1", "0"):
            raise ValidationError({"everywhere": ["true or false."]})
        if everywhere in ("true", "1"):
            services.revoke_tokens_of(request.user)
        else:
            services.revoke_token(request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)


FEED_DESCRIPTION = """
Every position of the organisation's fleet in the order the server stored it
(`server_time`, then `id`): an incremental sync that neither skips nor repeats a row.

1. Start without `after` (from the beginning, or from `since`).
2. Store the rows, then request the `next` URL. While `has_more` is true, follow it at
   once; when it is false you are up to date: poll the same `next` URL again later (it
   is always present, and stays valid however long you wait).
3. Keep the last `next` you processed; after a restart, resume from it.

Late fixes (a unit sending stored history after a gap) come in when the server stores
them, with their old `fix_time`, so nothing is missed. The newest few seconds (setting
`API_FEED_SETTLE_S`) are held back until batches still being written have committed.

Positions inside a trip that is private to you (the logbook's privacy rule) are left out,
so a page may hold fewer rows than asked for; `next` still continues after it.
"""


class PositionFeedView(APIView):
    permission_classes = [IsAuthenticated, RolePermission]
    renderer_classes = [FastJSONRenderer]
    read_roles = EVERY_ROLE

    @extend_schema(
        parameters=[
            OpenApiParameter("after", OpenApiTypes.STR,
                             description="The cursor from the previous response's `next`."),
            OpenApiParameter("since", OpenApiTypes.DATETIME,
                             description="Without `after`: start at this server time."),
            OpenApiParameter("page_size", OpenApiTypes.INT,
                             description="Rows a page; at most (and by default) 1000."),
        ],
        responses={200: position_page_serializer("PositionFeedPage")},
        description=FEED_DESCRIPTION,
    )
    def get(self, request):
        start = FeedStartSerializer(data=request.query_params)
        start.is_valid(raise_exception=True)
        since = start.validated_data.get("since")
        paginator = KeysetPagination(
            time_field="server_time", cursor_query_param="after", always_next=True
        )
        # A row at exactly `since` has an id above 0, so it is included.
        paginator.start_position = (since or EPOCH, 0)
        stored_before = timezone.now() - timedelta(seconds=settings.API_FEED_SETTLE_S)
        page = paginator.paginate_queryset(
            position_feed_for(actor_for(request), stored_before), request,
            fetch=rows.position_rows,
        )
        page = without_private_positions(actor_for(request), page)
        response = paginator.get_paginated_response(rows.position_dicts(page))
        # `since` has done its work once a cursor exists.
        if response.data["next"]:
            response.data["next"] = _without_param(response.data["next"], "since")
            response["Link"] = f'<{response.data["next"]}>; rel="next"'
        return response


def _without_param(url: str, name: str) -> str:
    return remove_query_param(url, name)

