"""Security headers Django 5.2 does not set itself: a Content Security Policy.

The site's pages load scripts only from its own static files (no inline scripts, no
CDN), so the policy can forbid everything else. Map tiles come from MAP_TILE_URL's host.
Swagger UI (drf-spectacular's split view, no inline script) needs inline styles.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse


def content_security_policy(relaxed_styles: bool = False) -> str:
    tile_host = ""
    if settings.MAP_TILE_URL:
        parts = urlsplit(settings.MAP_TILE_URL.replace("{s}", "a"))
        tile_host = f" {parts.scheme}://{parts.netloc}".replace("://a.", "://*.")
    style = "'self' 'unsafe-inline'" if relaxed_styles else "'self'"
    return (
        "default-src 'self'; script-src 'self'; "
        f"style-src {style}; img-src 'self' data: blob:{tile_host}; font-src 'self' data:; "
        "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'self'; "
        "frame-ancestors 'none'; form-action 'self'"
    )


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response
        self.strict = content_security_policy()
        self.relaxed = content_security_policy(relaxed_styles=True)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            relaxed = request.path.startswith(("/api/v1/docs", "/admin/"))
            response["Content-Security-Policy"] = self.relaxed if relaxed else self.strict
        return response
