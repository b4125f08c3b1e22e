"""Creating organisations and users: shared by the admin commands, the demo and the API."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import transaction

from fleet.models import Driver, Membership, Organisation, Role


def get_or_create_organisation(name: str) -> Organisation:
    name = name.strip()
    if not name:
        raise ValidationError("An organisation needs a name.")
    organisation, _ = Organisation.objects.get_or_create(name=name)
    return organisation


@transaction.atomic
def create_user(
    username: str,
    organisation: Organisation,
    role: str,
    password: str | None = None,
    email: str = "",
) -> tuple[AbstractUser, str]:
    """Create a user with a role in an organisation; returns the user and the password.

    A driver login also gets a Driver record, so trips can be assigned to it.
    Without a password a random one is generated (and returned once).
    """
    if role not in Role.values:
        raise ValidationError(f"Unknown role {role!r}: choose one of {', '.join(Role.values)}.")
    user_model = get_user_model()
    if user_model.objects.filter(username=username).exists():
        raise ValidationError(f"A user named {username!r} already exists.")
    password = password or secrets.token_urlsafe(12)
    user = user_model.objects.create_user(username=username, email=email, password=password)
    Membership.objects.create(user=user, organisation=organisation, role=role)
    if role == Role.DRIVER:
        Driver.objects.create(organisation=organisation, user=user, name=username)
    return user, password
