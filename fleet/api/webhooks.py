"""``webhooks/``: URLs told about the organisation's events; admins only.

The secret that signs the deliveries is in the response to the creation (and to
``rotate-secret``), never again. ``webhooks/{id}/deliveries/`` lists what was sent, with
every attempt's outcome. See ``fleet.webhooks`` for what a receiver gets.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view, inline_serializer
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from fleet import webhooks as services
from fleet.api.pagination import PagePagination
from fleet.api.permissions import ADMINS
from fleet.api.serializers import ApiModelSerializer, OrganisationOwnedSerializer
from fleet.api.views import ApiViewSet
from fleet.models import DeliveryStatus, Webhook, WebhookDelivery

RECEIVER_HELP = (
    "Each delivery is a POST of JSON `{id, type, created, organisation, event}` "
    "(`positions` instead of `event` for `position`) with the headers "
    "`X-Fleetbook-Event`, `Idempotency-Key` (the same on every retry) and "
    "`X-Fleetbook-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed with the "
    "secret>`. Answer 2xx; anything else is retried with exponential backoff."
)


class WebhookSerializer(OrganisationOwnedSerializer):
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=services.EVENT_TYPE_CHOICES),
        allow_empty=False, max_length=len(services.EVENT_TYPES),
        help_text="Event types to deliver; `position` sends every stored position.",
    )
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Webhook
        fields = ["id", "organisation", "url", "description", "event_types", "active",
                  "created_by", "created"]
        read_only_fields = ["created"]


class NewWebhookSerializer(WebhookSerializer):
    secret = serializers.CharField(
        read_only=True, help_text="Signs the deliveries. Shown this once: keep it."
    )

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]


class WebhookDeliverySerializer(ApiModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = ["id", "event_id", "event_type", "idempotency_key", "status", "attempts",
                  "next_attempt_at", "last_attempt_at", "delivered_at", "response_status",
                  "response_body", "error", "attempt_log", "payload", "created"]
        read_only_fields = fields


SECRET_RESPONSE = inline_serializer("WebhookSecret", fields={
    "secret": serializers.CharField(help_text="The new secret; the old one stops working.")
})


@extend_schema_view(
    create=extend_schema(responses={201: NewWebhookSerializer},
                         description="The response holds the signing secret, this once. "
                         + RECEIVER_HELP),
    list=extend_schema(description="The organisation's webhooks. " + RECEIVER_HELP),
)
class WebhookViewSet(ApiViewSet):
    """Webhooks of the organisation. Admins only (an API key acts as one)."""

    serializer_class = WebhookSerializer
    read_roles = ADMINS
    write_roles = ADMINS

    def get_queryset(self):
        return services.webhooks_visible_to(self.actor).select_related("created_by")

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        webhook, secret = services.create_webhook(
            data["organisation"], url=data["url"], event_types=data["event_types"],
            description=data.get("description", ""), active=data.get("active", True),
            created_by=self.actor.user,
        )
        webhook.secret = secret
        return Response(NewWebhookSerializer(webhook, context=self.get_serializer_context())
                        .data, status=status.HTTP_201_CREATED)

    def perform_update(self, serializer) -> None:
        data = dict(serializer.validated_data)
        data.pop("organisation", None)
        serializer.instance = services.update_webhook(serializer.instance, **data)

    @extend_schema(
        responses={200: WebhookDeliverySerializer(many=True)},
        filters=False,
        description="Deliveries of this webhook, newest first, with the answer of the last "
        "attempt and a log of every attempt. `?status=pending|succeeded|failed`.",
    )
    @action(detail=True, methods=["get"], filter_backends=[],
            pagination_class=PagePagination)
    def deliveries(self, request, pk=None):
        webhook = self.get_object()
        rows = WebhookDelivery.objects.filter(webhook=webhook).order_by("-created", "-id")
        wanted = request.query_params.get("status")
        if wanted in DeliveryStatus.values:
            rows = rows.filter(status=wanted)
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)

    @extend_schema(request=None, responses={200: SECRET_RESPONSE},
                   description="A new signing secret, shown this once.")
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        return Response({"secret": services.rotate_secret(self.get_object())})

    @extend_schema(request=None, responses={202: WebhookDeliverySerializer},
                   description="Queue a `ping` delivery to test the URL and the signature.")
    @action(detail=True, methods=["post"])
    def ping(self, request, pk=None):
        delivery = services.ping(self.get_object())
        return Response(WebhookDeliverySerializer(delivery).data,
                        status=status.HTTP_202_ACCEPTED)
