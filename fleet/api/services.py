"""What the API changes beyond plain field edits: logins, units, drivers and API keys.

The admin uses the API key functions too, so a key made in either place is the same.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.contrib.auth.models import AbstractUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from fleet.models import ApiKey, Driver, Organisation, Role, Vehicle
from fleet.services import create_user
from telematics.models import Device
from telematics.services import register_unit

# Writing last_used on every request would turn each read into a write; a minute is
# precise enough to tell a live key from a forgotten one.
LAST_USED_PRECISION = timedelta(minutes=1)


def create_member(
    *,
    organisation: Organisation,
    username: str,
    role: str,
    password: str,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
    is_active: bool = True,
) -> AbstractUser:
    """A login with a role in an organisation (and a Driver record for a driver)."""
    with transaction.atomic():
        user, _ = create_user(username, organisation, role, password=password, email=email)
        user.first_name, user.last_name, user.is_active = first_name, last_name, is_active
        user.save(update_fields=["first_name", "last_name", "is_active"])
    return user


@transaction.atomic
def update_member(user: AbstractUser, *, role: str | None = None,
                  password: str | None = None, **fields: object) -> AbstractUser:
    """Change a login's details, role or password.

    Becoming a driver gives the login a Driver record, as ``create_user`` does, so that
    vehicles can be assigned to it.
    """
    for name, value in fields.items():
        setattr(user, name, value)
    if password:
        user.set_password(password)
    user.save()
    if role is not None:
        membership = user.membership
        if membership.role != role:
            membership.role = role
            membership.save(update_fields=["role"])
        if role == Role.DRIVER and not Driver.objects.filter(user=user).exists():
            Driver.objects.create(
                organisation_id=membership.organisation_id, user=user, name=user.username
            )
    return user


class DuplicateUnit(Exception):
    """The identifier is registered already (here or in another organisation)."""


def register_device(
    *,
    organisation: Organisation,
    identifier: str,
    protocol: str,
    vehicle: Vehicle | None = None,
    secret: str = "",
    active: bool = True,
) -> Device:
    """Register a unit through ``register_unit`` (so it is claimed from the unknown
    units list), fitted to an existing vehicle of the organisation or to none.

    Raises ``DuplicateUnit`` for an identifier already registered, and Django's
    ValidationError for anything else ``register_unit`` refuses.
    """
    if Device.objects.filter(identifier=identifier.strip()).exists():
        raise DuplicateUnit(identifier)
    try:
        device = register_unit(
            identifier, protocol, organisation,
            vehicle_name=vehicle.name if vehicle else None, secret=secret,
        )
    except IntegrityError as error:  # registered by someone else a moment ago
        raise DuplicateUnit(identifier) from error
    if not active:
        device.active = False
        device.save(update_fields=["active"])
    return device


def assign_driver(vehicle: Vehicle, driver: Driver | None) -> Vehicle:
    """Make ``driver`` the vehicle's default driver (None clears it).

    The caller has checked that the driver belongs to the vehicle's organisation.
    """
    vehicle.default_driver = driver
    vehicle.save(update_fields=["default_driver"])
    return vehicle


def hash_api_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def create_api_key(
    organisation: Organisation, name: str, created_by: AbstractUser | None = None
) -> tuple[ApiKey, str]:
    """A new key for an organisation; returns the row and the full key, which only the
    caller ever sees (only its digest is stored).

    The key reads ``fbk_<prefix>.<secret>``: the prefix finds the row, the secret is
    256 random bits.
    """
    for _ in range(5):
        prefix = "fbk_" + secrets.token_hex(6)
        raw_key = f"{prefix}.{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    organisation=organisation, name=name, prefix=prefix,
                    hashed_key=hash_api_key(raw_key), created_by=created_by,
                )
        except IntegrityError:  # a prefix collision: 48 random bits, but still
            continue
        return key, raw_key
    raise RuntimeError("Could not find a free API key prefix")


def revoke_api_key(key: ApiKey) -> ApiKey:
    """Revoke a key for good; the row stays for the audit trail."""
    if key.revoked is None:
        key.revoked = timezone.now()
        key.save(update_fields=["revoked"])
    return key


def api_key_for(raw_key: str) -> ApiKey | None:
    """The live key a client presented, or None for an unknown, wrong or revoked one."""
    prefix, dot, _ = raw_key.partition(".")
    if not dot or not prefix:
        return None
    key = ApiKey.objects.select_related("organisation").filter(prefix=prefix).first()
    if key is None or key.revoked is not None:
        return None
    if not hmac.compare_digest(key.hashed_key, hash_api_key(raw_key)):
        return None
    now = timezone.now()
    if key.last_used is None or now - key.last_used > LAST_USED_PRECISION:
        ApiKey.objects.filter(pk=key.pk).update(last_used=now)
        key.last_used = now
    return key
