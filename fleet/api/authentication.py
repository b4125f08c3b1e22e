"""How API clients prove who they are: a login token, an organisation API key, a session.

Every view turns the result into an ``Actor`` with ``actor_for(request)`` and hands that
to the selectors, so a request made with an API key is scoped exactly like one made by
an admin of the key's organisation.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from fleet.api.serializers import rfc3339
from fleet.api.services import TokenExpired, api_key_for, token_for
from fleet.models import ApiKey
from fleet.selectors import Actor, actor_of

API_KEY_PREFIX = "fbk_"


class BearerTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <token>`` with a token from ``POST /api/v1/auth/token/``.

    An expired token answers 401 saying so (the client should log in again), which a
    client cannot tell from a typo otherwise. An API key sent as a Bearer credential
    works too, as on the live websocket.
    """

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[object, object] | None:
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise AuthenticationFailed("Send the token as 'Authorization: Bearer <token>'.")
        try:
            raw = header[1].decode()
        except UnicodeDecodeError as error:
            raise AuthenticationFailed("Invalid token.") from error
        if raw.startswith(API_KEY_PREFIX) and "." in raw:
            return ApiKeyAuthentication.for_key(raw)
        try:
            token = token_for(raw)
        except TokenExpired as expired:
            raise AuthenticationFailed(
                f"The token expired at {rfc3339(expired.expired_at)}; log in again at "
                "POST /api/v1/auth/token/ for a new one.", code="token_expired",
            ) from expired
        if token is None:
            raise AuthenticationFailed("Invalid token.")
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class ApiKeyUser:
    """``request.user`` for a request made with an API key: authenticated, but nobody.

    It is not a database user (an integration is not a person), so nothing may store it
    as one; code that needs the organisation and role uses ``actor_for(request)``.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = id = None

    def __init__(self, key: ApiKey):
        self.key = key
        self.username = f"api-key:{key.prefix}"

    def __str__(self) -> str:
        return self.username

    def get_username(self) -> str:
        return self.username

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return False


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Api-Key <key>`` or ``X-Api-Key: <key>``; a revoked key answers 401."""

    keyword = "Api-Key"

    def authenticate(self, request: Request) -> tuple[ApiKeyUser, ApiKey] | None:
        raw = self._presented_key(request)
        if raw is None:
            return None
        return self.for_key(raw)

    @staticmethod
    def for_key(raw: str) -> tuple[ApiKeyUser, ApiKey]:
        key = api_key_for(raw)
        if key is None:
            raise AuthenticationFailed("Invalid or revoked API key.")
        return ApiKeyUser(key), key

    def _presented_key(self, request: Request) -> str | None:
        header = get_authorization_header(request).split()
        if header and header[0].lower() == self.keyword.lower().encode():
            if len(header) != 2:
                raise AuthenticationFailed("Send the key as 'Authorization: Api-Key <key>'.")
            return header[1].decode(errors="replace")
        raw = request.META.get("HTTP_X_API_KEY", "").strip()
        return raw or None

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


def actor_for(request: Request) -> Actor:
    """The organisation and role a request acts with, whatever authenticated it."""
    actor = getattr(request, "_fleet_actor", None)
    if actor is None:
        if isinstance(request.auth, ApiKey):
            actor = Actor.for_api_key(request.auth)
        else:
            actor = actor_of(request.user)
        request._fleet_actor = actor
    return actor


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "fleet.api.authentication.BearerTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http", "scheme": "bearer",
            "description": "A token from POST /api/v1/auth/token/, valid until its "
            "`expires_at` (API_TOKEN_TTL_S, 12 hours by default); an expired one answers "
            "401 saying so.",
        }


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "fleet.api.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey", "in": "header", "name": "X-Api-Key",
            "description": "An organisation API key; 'Authorization: Api-Key <key>' works too.",
        }
