"""Who a websocket belongs to: the browser's session, or an integration's token or API key.

The live websocket (``/ws/live/``) serves the dashboard (session cookie) and
integrations, which present either a login token (``POST /api/v1/auth/token/``) or an
organisation API key, in any of these ways:

* ``Authorization: Bearer <token>`` or ``Authorization: Api-Key <key>`` (a key given as
  Bearer works too);
* ``Sec-WebSocket-Protocol: bearer, <token-or-key>`` (what a browser's ``WebSocket`` can
  send; the server answers with the ``bearer`` subprotocol), or ``bearer.<token-or-key>``;
* ``?token=<token-or-key>`` in the URL (last resort: URLs end up in logs).

A connection that presents credentials is authenticated by them alone: a wrong or
revoked one is refused (close code 4401), never let through on a session. Such a
connection skips the Origin check, which exists against other sites using the
browser's cookie; a connection carrying its own credentials cannot be that. Everything
else goes the browser's way: Origin check, then the session.

``scope["user"]`` is the token's user, or for an API key the ``Actor`` the REST API uses
(an admin of the key's organisation, with no user), so the consumer's selectors scope
both exactly as they scope the API.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.security.websocket import AllowedHostsOriginValidator
from django.contrib.auth.models import AnonymousUser

SUBPROTOCOL_MARKERS = ("bearer", "api-key")


def credentials_of(scope: dict) -> tuple[str | None, str | None]:
    """(credential, subprotocol to answer with) presented by a websocket handshake."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"authorization":
            scheme, _, credential = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() in ("bearer", "api-key", "token") and credential.strip():
                return credential.strip(), None
    offered = list(scope.get("subprotocols") or ())
    for index, protocol in enumerate(offered):
        marker, dot, credential = protocol.partition(".")
        if marker.lower() in SUBPROTOCOL_MARKERS:
            if dot and credential:
                return credential, protocol
            if index + 1 < len(offered):
                return offered[index + 1], protocol
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    for name in ("token", "api_key"):
        if query.get(name) and query[name][0]:
            return query[name][0], None
    return None, None


@database_sync_to_async
def principal_for(credential: str):
    """The user of a login token, the Actor of an API key, or AnonymousUser."""
    from fleet.api.services import api_key_for, user_for_token
    from fleet.selectors import Actor

    if "." in credential:  # API keys read fbk_<prefix>.<secret>; tokens have no dot
        key = api_key_for(credential)
        return Actor.for_api_key(key) if key is not None else AnonymousUser()
    return user_for_token(credential) or AnonymousUser()  # None when expired or unknown


class CredentialsMiddleware:
    """Send a handshake with credentials to ``inner`` with ``scope["user"]`` set from
    them, and every other one to ``fallback`` (origin check and session)."""

    def __init__(self, inner, fallback):
        self.inner = inner
        self.fallback = fallback

    @property
    def allowed_origins(self) -> list:
        """The browsers' origin check (a test that changes ALLOWED_HOSTS updates it)."""
        return self.fallback.allowed_origins

    @allowed_origins.setter
    def allowed_origins(self, origins: list) -> None:
        self.fallback.allowed_origins = origins

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.fallback(scope, receive, send)
        credential, subprotocol = credentials_of(scope)
        if credential is None:
            return await self.fallback(scope, receive, send)
        scope = dict(scope, user=await principal_for(credential))

        async def send_with_subprotocol(message):
            # A browser drops a connection whose answer names none of the subprotocols
            # it offered: answer with the marker ("bearer"), or with the one entry of
            # the "bearer.<credential>" form.
            if message["type"] == "websocket.accept" and subprotocol and not message.get(
                    "subprotocol"):
                message = {**message, "subprotocol": subprotocol}
            await send(message)

        return await self.inner(scope, receive, send_with_subprotocol)


def WebsocketAuthStack(inner):
    """Token and API key for integrations; Origin check and session for browsers.

    Named like Channels' ``AuthMiddlewareStack``, which it wraps.
    """
    return CredentialsMiddleware(inner, AllowedHostsOriginValidator(AuthMiddlewareStack(inner)))
