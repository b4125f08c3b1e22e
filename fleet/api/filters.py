"""Query-string filters of the lists.

Related objects are filtered by id (``IdFilter``) rather than a choice of objects:
a choice would be checked against every organisation's rows and so tell an id that
exists elsewhere from one that does not.
"""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django_filters import rest_framework as filters

from fleet.models import ApiKey, Driver, Organisation, Role, Vehicle
from telematics.models import Device, Protocol


class IdFilter(filters.NumberFilter):
    """A whole number that fits an id column (anything else answers 400, not 500)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", 2**63 - 1)
        super().__init__(*args, **kwargs)


class OrganisationFilter(filters.FilterSet):
    name = filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Organisation
        fields = ["name"]


class UserFilter(filters.FilterSet):
    username = filters.CharFilter(lookup_expr="icontains")
    role = filters.ChoiceFilter(field_name="membership__role", choices=Role.choices)
    organisation = IdFilter(field_name="membership__organisation_id")

    class Meta:
        model = get_user_model()
        fields = ["username", "role", "is_active", "organisation"]


class VehicleFilter(filters.FilterSet):
    name = filters.CharFilter(lookup_expr="icontains")
    licence_plate = filters.CharFilter(lookup_expr="icontains")
    default_driver = IdFilter(field_name="default_driver_id")
    organisation = IdFilter(field_name="organisation_id")

    class Meta:
        model = Vehicle
        fields = ["name", "licence_plate", "default_driver", "organisation"]


class DeviceFilter(filters.FilterSet):
    identifier = filters.CharFilter()
    protocol = filters.ChoiceFilter(choices=Protocol.choices)
    vehicle = IdFilter(field_name="vehicle_id")
    organisation = IdFilter(field_name="organisation_id")

    class Meta:
        model = Device
        fields = ["identifier", "protocol", "vehicle", "active", "organisation"]


class DriverFilter(filters.FilterSet):
    name = filters.CharFilter(lookup_expr="icontains")
    organisation = IdFilter(field_name="organisation_id")

    class Meta:
        model = Driver
        fields = ["name", "identification_key", "organisation"]


class ApiKeyFilter(filters.FilterSet):
    active = filters.BooleanFilter(field_name="revoked", lookup_expr="isnull",
                                   label="Only live keys (true) or only revoked ones (false)")

    class Meta:
        model = ApiKey
        fields = ["active"]
