"""Template context shared by every page."""

from django.conf import settings
from django.http import HttpRequest


def fleet_settings(request: HttpRequest) -> dict[str, object]:
    return {"MAP_TILE_URL": settings.MAP_TILE_URL}
