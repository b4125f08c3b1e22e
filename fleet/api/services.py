"""What the API changes beyond plain field edits: logins, units, drivers, login tokens
and API keys.

The admin uses the API key functions too, so a key made in either place is the same.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from fleet.models import ApiKey, Driver, LoginToken, Organisation, Role, Vehicle
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
    if password or not user.is_active:
        # A new password or a locked login: tokens got with the old state stop working.
        revoke_tokens_of(user)
    if role is not None:
        membership = user.membership
        if membership.role != role:
            membership.role = role
            membership.save(update_fields=["role"])
            forget_tokens_of(user)  # remembered with the old role
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
    """The stored digest of a key or token: SHA-256, since both are 256 random bits (a
    slow password hash would add latency to every request and no safety)."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


class RecentCredentials:
    """Tokens and API keys this process checked a moment ago, by digest.

    A dispatch board polls every few seconds and a bulk sync pages as fast as it can;
    looking the credential and the login's membership up on each request would cost
    two queries a request. An entry lives ``API_AUTH_CACHE_S`` and never beyond the
    credential's own expiry. Revoking drops the entry here at once; other web processes
    notice within ``API_AUTH_CACHE_S`` (the README's settings table says so).
    """

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> Any | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            self.discard(digest)
            return None
        return entry[1]

    def put(self, digest: str, value: Any, valid_until: datetime | None = None) -> None:
        lifetime = settings.API_AUTH_CACHE_S
        if valid_until is not None:
            lifetime = min(lifetime, (valid_until - timezone.now()).total_seconds())
        if lifetime <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[digest] = (time.monotonic() + lifetime, value)

    def discard(self, digest: str) -> None:
        with self._lock:
            self._entries.pop(digest, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


recent_credentials = RecentCredentials()


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
    recent_credentials.discard(key.hashed_key)
    return key


def api_key_for(raw_key: str) -> ApiKey | None:
    """The live key a client presented, or None for an unknown, wrong or revoked one."""
    prefix, dot, _ = raw_key.partition(".")
    if not dot or not prefix:
        return None
    digest = hash_api_key(raw_key)
    key = recent_credentials.get(digest)
    if not isinstance(key, ApiKey):
        key = ApiKey.objects.select_related("organisation").filter(prefix=prefix).first()
        if key is None or key.revoked is not None:
            return None
        if not hmac.compare_digest(key.hashed_key, digest):
            return None
        recent_credentials.put(digest, key)
    _touch(key, ApiKey)
    return key


def _touch(row: ApiKey | LoginToken, model: type) -> None:
    """Record when a key or token was last used, to the minute (not a write a request)."""
    now = timezone.now()
    if row.last_used is None or now - row.last_used > LAST_USED_PRECISION:
        model.objects.filter(pk=row.pk).update(last_used=now)
        row.last_used = now


# --- Login tokens ------------------------------------------------------------------------

# An expired token is kept this long, so that its client hears "expired" (and logs in
# again) rather than "invalid" (and suspects a bug); then it is deleted.
EXPIRED_TOKEN_KEPT = timedelta(days=7)


class TokenExpired(Exception):
    """The token was valid once; ``expired_at`` tells when it ran out."""

    def __init__(self, expired_at: datetime):
        super().__init__(expired_at)
        self.expired_at = expired_at


def issue_token(user: AbstractUser) -> tuple[LoginToken, str]:
    """A new login token for ``user``; returns the row and the token, which only the
    caller ever sees (only its digest is stored).

    Valid for ``API_TOKEN_TTL_S`` from now, whatever the use: fixed rather than sliding,
    so a leaked token is worth at most that long. Tokens that expired more than
    ``EXPIRED_TOKEN_KEPT`` ago are swept out on the way.
    """
    now = timezone.now()
    LoginToken.objects.filter(expires_at__lt=now - EXPIRED_TOKEN_KEPT).delete()
    raw = secrets.token_urlsafe(32)  # no "." in it: that tells tokens and API keys apart
    token = LoginToken.objects.create(
        user=user, digest=hash_api_key(raw),
        expires_at=now + timedelta(seconds=settings.API_TOKEN_TTL_S),
    )
    return token, raw


def token_for(raw: str) -> LoginToken | None:
    """The live login token a client presented (with ``user`` and its membership
    loaded), or None for an unknown token or one of a deactivated login.

    Raises ``TokenExpired`` for a token that ran out.
    """
    digest = hash_api_key(raw)
    token = recent_credentials.get(digest)
    if not isinstance(token, LoginToken):
        token = (LoginToken.objects.select_related("user", "user__membership")
                 .filter(digest=digest).first())
        if token is None or not token.user.is_active:
            return None
        recent_credentials.put(digest, token, valid_until=token.expires_at)
    if token.expires_at <= timezone.now():
        recent_credentials.discard(digest)
        raise TokenExpired(token.expires_at)
    _touch(token, LoginToken)
    return token


def user_for_token(raw: str) -> AbstractUser | None:
    """The login a live token belongs to; None for an unknown or expired one."""
    try:
        token = token_for(raw)
    except TokenExpired:
        return None
    return token.user if token is not None else None


def revoke_token(token: LoginToken) -> None:
    """Log a token out: it stops working at once (in other web processes within
    ``API_AUTH_CACHE_S``)."""
    recent_credentials.discard(token.digest)
    LoginToken.objects.filter(pk=token.pk).delete()


def revoke_tokens_of(user: AbstractUser) -> int:
    """Log the login out everywhere; returns how many tokens stopped working."""
    forget_tokens_of(user)
    deleted, _ = LoginToken.objects.filter(user=user).delete()
    return deleted


def forget_tokens_of(user: AbstractUser) -> None:
    """Drop this process' memory of the login's tokens, so that the next request reads
    the login (its role, whether it is active) afresh."""
    for digest in LoginToken.objects.filter(user=user).values_list("digest", flat=True):
        recent_credentials.discard(digest)
