"""Rate limits: per client address when anonymous, per login or API key otherwise.

The rates come from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` at request time (DRF
reads them once at import), so a test can lower one with ``override_settings``.
"""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle


class RateFromSettings:
    scope: str

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class AnonThrottle(RateFromSettings, AnonRateThrottle):
    pass


class UserThrottle(RateFromSettings, UserRateThrottle):
    def get_cache_key(self, request, view) -> str | None:
        key = getattr(request.user, "key", None)
        if key is not None:  # an API key: it has no user id of its own
            return self.cache_format % {"scope": self.scope, "ident": f"key-{key.pk}"}
        return super().get_cache_key(request, view)


class TokenThrottle(RateFromSettings, SimpleRateThrottle):
    """Password guesses at the token endpoint: a strict limit per client address."""

    scope = "token"

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
