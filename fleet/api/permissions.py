"""Who may do what: roles per view, checked after the object is found.

Lists and creation are checked up front. On a single object the role is checked only
once the object has been found through the organisation-scoped selectors: another
organisation's object then answers 404 whatever the role, never a 403 that would tell
that it exists.
"""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from fleet.api.authentication import actor_for
from fleet.models import Role

EVERY_ROLE = frozenset(Role.values)
ADMINS = frozenset({Role.ADMIN})


class RolePermission(BasePermission):
    """Reads need a role in ``view.read_roles``, writes one in ``view.write_roles``.

    ``view.people_only`` keeps API keys out (logins and API keys are managed by people,
    so a leaked key cannot mint itself successors); ``view.superuser_creates`` keeps
    creation to the platform operator.
    """

    message = "Your role may not do this."

    def has_permission(self, request, view) -> bool:
        actor = actor_for(request)
        if actor.role is None:
            self.message = "Your login belongs to no organisation."
            return False
        lookup = getattr(view, "lookup_url_kwarg", None) or getattr(view, "lookup_field", None)
        if lookup and lookup in view.kwargs:
            return True  # decided in has_object_permission, once the object is found
        return self._allowed(request, view, actor)

    def has_object_permission(self, request, view, obj) -> bool:
        return self._allowed(request, view, actor_for(request))

    def _allowed(self, request, view, actor) -> bool:
        if getattr(view, "people_only", False) and actor.api_key_id is not None:
            self.message = "An API key may not do this; log in as an admin."
            return False
        if request.method in SAFE_METHODS:
            return actor.role in getattr(view, "read_roles", EVERY_ROLE)
        if getattr(view, "action", None) == "create" and getattr(view, "superuser_creates", False):
            return actor.is_superuser
        return actor.role in getattr(view, "write_roles", ADMINS)
