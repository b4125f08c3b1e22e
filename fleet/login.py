"""The login page, with failed attempts rate-limited per client address.

A guessing script gets a 429 with a plain message after LOGIN_ATTEMPTS_PER_WINDOW
failures within LOGIN_WINDOW_S seconds; a successful login is never counted.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse


def client_address(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR", "") or "unknown"


class RateLimitedLoginView(LoginView):
    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        key = f"login-failures:{client_address(request)}"
        if cache.get(key, 0) >= settings.LOGIN_ATTEMPTS_PER_WINDOW:
            return HttpResponse(
                "Too many failed logins from your address. Wait a few minutes and try again.",
                status=429, content_type="text/plain; charset=utf-8",
                headers={"Retry-After": str(settings.LOGIN_WINDOW_S)},
            )
        response = super().post(request, *args, **kwargs)
        if not request.user.is_authenticated and not cache.add(key, 1, settings.LOGIN_WINDOW_S):
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.add(key, 1, settings.LOGIN_WINDOW_S)
        return response
