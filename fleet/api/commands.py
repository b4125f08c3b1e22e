"""``devices/{id}/commands/``: text commands to a unit, queued until the ingest sends them.

Admins only (an API key acts as one). The command is delivered over the unit's open
connection by the ingest process, or when the unit next connects; its answer appears
on the command (``status`` answered, ``response``). See ``fleet.unit_commands``.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers

from fleet import unit_commands as services
from fleet.api.permissions import ADMINS
from fleet.api.serializers import ApiModelSerializer
from fleet.api.views import ApiViewSet
from fleet.models import ApiKey, CommandStatus, UnitCommand
from fleet.selectors import devices_visible_to

COMMAND_HELP = (
    "Teltonika: a Codec 12 text command such as `getinfo`, `getio` or `setdigout 1`. "
    "GT06: an online command such as `DYD,000000#` or `Relay,1#`. MQTT: any text, "
    "published to `fleet/<identifier>/command` (the unit answers on "
    "`fleet/<identifier>/response`)."
)


class UnitCommandSerializer(ApiModelSerializer):
    text = serializers.CharField(max_length=services.MAX_TEXT, help_text=COMMAND_HELP)
    status = serializers.ChoiceField(
        choices=CommandStatus.choices, read_only=True,
        help_text="queued (until the unit is connected), sent, answered, failed.",
    )
    response = serializers.CharField(
        source="response_text", read_only=True,
        help_text="The unit's answer, once `status` is answered.",
    )

    class Meta:
        model = UnitCommand
        fields = ["id", "device", "text", "status", "requested_by", "created", "sent_at",
                  "answered_at", "response", "error"]
        read_only_fields = ["device", "requested_by", "created", "sent_at", "answered_at",
                            "error"]


DEVICE_PK = OpenApiParameter("device_pk", OpenApiTypes.INT, OpenApiParameter.PATH,
                             description="The unit's id.")


@extend_schema_view(
    list=extend_schema(parameters=[DEVICE_PK], description="Commands sent to the unit, "
                       "newest first, with who sent them and the unit's answers."),
    retrieve=extend_schema(parameters=[DEVICE_PK]),
    create=extend_schema(parameters=[DEVICE_PK], description="Queue a command. It is sent "
                         "over the unit's open connection within a second, or when the "
                         "unit next connects. Admins only. " + COMMAND_HELP),
)
class UnitCommandViewSet(ApiViewSet):
    serializer_class = UnitCommandSerializer
    read_roles = ADMINS
    write_roles = ADMINS
    http_method_names = ["get", "post", "head", "options"]

    def device(self):
        if not hasattr(self, "_device"):
            self._device = get_object_or_404(devices_visible_to(self.actor),
                                             pk=self.kwargs["device_pk"])
        return self._device

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return UnitCommand.objects.none()
        return services.commands_visible_to(self.actor).filter(device=self.device())

    def create(self, request, *args, **kwargs):
        self.device()  # another organisation's unit: 404 before any validation
        return super().create(request, *args, **kwargs)

    def perform_create(self, serializer) -> None:
        auth = self.request.auth
        serializer.instance = services.queue_command(
            self.device(), serializer.validated_data["text"], user=self.actor.user,
            api_key=auth if isinstance(auth, ApiKey) else None,
        )
