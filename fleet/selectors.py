"""Queries on behalf of a user, always scoped to the user's organisation.

Views, the API and the live map read through these functions, never through bare
``Model.objects``, so that no page can show one organisation's data to another.
A superuser (the platform operator) sees every organisation.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from fleet.models import Driver, Membership, Organisation, Role, Vehicle

User = AbstractBaseUser | AnonymousUser


def membership_of(user: User) -> Membership | None:
    if not user.is_authenticated:
        return None
    try:
        return user.membership  # type: ignore[union-attr]
    except Membership.DoesNotExist:
        return None


def role_of(user: User) -> str | None:
    if user.is_authenticated and user.is_superuser:  # type: ignore[union-attr]
        return Role.ADMIN
    membership = membership_of(user)
    return membership.role if membership else None


def organisations_visible_to(user: User) -> QuerySet[Organisation]:
    if user.is_authenticated and user.is_superuser:  # type: ignore[union-attr]
        return Organisation.objects.all()
    membership = membership_of(user)
    if membership is None:
        return Organisation.objects.none()
    return Organisation.objects.filter(pk=membership.organisation_id)


def vehicles_visible_to(user: User) -> QuerySet[Vehicle]:
    """Vehicles of the user's organisation; a driver sees only the vehicles they drive."""
    if user.is_authenticated and user.is_superuser:  # type: ignore[union-attr]
        return Vehicle.objects.all()
    membership = membership_of(user)
    if membership is None:
        return Vehicle.objects.none()
    vehicles = Vehicle.objects.filter(organisation_id=membership.organisation_id)
    if membership.role == Role.DRIVER:
        vehicles = vehicles.filter(default_driver__user=user)
    return vehicles


def drivers_visible_to(user: User) -> QuerySet[Driver]:
    if user.is_authenticated and user.is_superuser:  # type: ignore[union-attr]
        return Driver.objects.all()
    membership = membership_of(user)
    if membership is None:
        return Driver.objects.none()
    drivers = Driver.objects.filter(organisation_id=membership.organisation_id)
    if membership.role == Role.DRIVER:
        drivers = drivers.filter(user=user)
    return drivers
