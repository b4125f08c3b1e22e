"""Registering telematics units."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from fleet.models import Organisation, Vehicle
from telematics.models import Device, Protocol, UnknownUnit


@transaction.atomic
def register_unit(
    identifier: str,
    protocol: str,
    organisation: Organisation,
    vehicle_name: str | None = None,
    secret: str = "",
) -> Device:
    """Register a unit, fitted to a vehicle (created when missing) of the organisation.

    Refuses a duplicate identifier: a unit can only ever feed one vehicle's history.
    """
    identifier = identifier.strip()
    if not identifier or len(identifier) > 64 or any(ch.isspace() for ch in identifier):
        raise ValidationError(
            f"{identifier!r} is not a unit identifier: use the IMEI or the id the unit "
            "reports (1-64 characters, no spaces)."
        )
    if protocol not in Protocol.values:
        raise ValidationError(
            f"Unknown protocol {protocol!r}: choose one of {', '.join(Protocol.values)}."
        )
    existing = Device.objects.filter(identifier=identifier).select_related("organisation").first()
    if existing is not None:
        raise ValidationError(
            f"Unit {identifier} is already registered ({existing.protocol}, "
            f"organisation {existing.organisation.name!r})."
        )
    vehicle = None
    if vehicle_name:
        vehicle, _ = Vehicle.objects.get_or_create(organisation=organisation, name=vehicle_name)
    device = Device.objects.create(
        organisation=organisation, identifier=identifier, protocol=protocol,
        vehicle=vehicle, secret=secret,
    )
    UnknownUnit.objects.filter(identifier=identifier).delete()
    return device
