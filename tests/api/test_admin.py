"""API keys in the Django admin: made there, shown once, revoked rather than deleted."""

from __future__ import annotations

from fleet.api.services import api_key_for
from fleet.models import ApiKey


def test_admin_creates_a_key_and_shows_it_once(client, operator, fleets):
    client.force_login(operator)
    r = client.post("/admin/fleet/apikey/add/", {"organisation": fleets.acme.pk,
                                                 "name": "Telematics bridge"}, follow=True)
    assert r.status_code == 200
    key = ApiKey.objects.get(name="Telematics bridge")
    shown = [str(m) for m in r.context["messages"]]
    raw = next(m.split("The new key is ")[1].split(" ")[0] for m in shown if "new key" in m)
    assert api_key_for(raw) == key and key.created_by == operator
    page = client.get(f"/admin/fleet/apikey/{key.pk}/change/").content.decode()
    assert raw not in page


def test_admin_revokes_keys(client, operator, fleets):
    client.force_login(operator)
    key = ApiKey.objects.get(organisation=fleets.acme)
    client.post("/admin/fleet/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.revoked is not None
    assert api_key_for(fleets.acme_key) is None
