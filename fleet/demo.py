"""The demo organisation: logins and vehicles a newcomer can look at straight away."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from fleet.models import Driver, Membership, Organisation, Role, Vehicle

DEMO_ORGANISATION = "Demo Fleet"
DEMO_PASSWORD = "fleetbook-demo"


@dataclass(frozen=True)
class DemoLogin:
    username: str
    role: str
    password: str


DEMO_LOGINS = (
    DemoLogin("manager", Role.ADMIN, DEMO_PASSWORD),
    DemoLogin("dispatcher", Role.DISPATCHER, DEMO_PASSWORD),
    DemoLogin("driver", Role.DRIVER, DEMO_PASSWORD),
)


def seed_operator() -> None:
    """The platform operator: a superuser for the Django admin (all organisations)."""
    user_model = get_user_model()
    if not user_model.objects.filter(username=OPERATOR.username).exists():
        user_model.objects.create_superuser(OPERATOR.username, "", OPERATOR.password)

OPERATOR = DemoLogin("operator", "superuser", DEMO_PASSWORD)


@transaction.atomic
def seed_demo_organisation(vehicle_count: int = 20) -> Organisation:
    """Create (or top up) the demo organisation; safe to run at every demo start."""
    seed_operator()
    organisation, _ = Organisation.objects.get_or_create(
        name=DEMO_ORGANISATION, defaults={"time_zone": "Europe/Berlin"}
    )
    user_model = get_user_model()
    for login in DEMO_LOGINS:
        user, created = user_model.objects.get_or_create(username=login.username)
        if created:
            user.set_password(login.password)
            user.save()
        Membership.objects.update_or_create(
            user=user, defaults={"organisation": organisation, "role": login.role}
        )
    driver_user = user_model.objects.get(username="driver")
    driver, _ = Driver.objects.get_or_create(
        organisation=organisation, user=driver_user,
        defaults={"name": "Dana Driver", "identification_key": "01A2B3C4D5E6F701"},
    )
    for number in range(1, vehicle_count + 1):
        vehicle, _ = Vehicle.objects.get_or_create(
            organisation=organisation, name=f"Van {number:02d}",
            defaults={"licence_plate": f"B-FB {1000 + number}"},
        )
        if number == 1 and vehicle.default_driver_id is None:
            vehicle.default_driver = driver
            vehicle.save(update_fields=["default_driver"])
    return organisation


def seed_demo_units(organisation: Organisation, units: list) -> None:
    """Register the simulated fleet's units, each fitted to its demo vehicle."""
    from telematics.models import Device
    from telematics.services import register_unit

    known = set(Device.objects.filter(identifier__in=[u.identifier for u in units])
                .values_list("identifier", flat=True))
    for unit in units:
        if unit.identifier not in known:
            register_unit(unit.identifier, unit.protocol, organisation,
                          vehicle_name=unit.vehicle_name)
