"""The alert rule pages: fleet managers list, create, change and switch off rules;
dispatchers read them; drivers and other organisations get nothing."""

from __future__ import annotations

import pytest

from telematics.alerts.worker import ConfigCache
from telematics.models import AlertRule, Geofence
from tests.dashboard.conftest import PASSWORD

CIRCLE = {"type": "Point", "coordinates": [13.405, 52.52]}


@pytest.fixture
def rules(world) -> dict:
    school = Geofence.objects.create(organisation=world["acme"], name="School",
                                     geometry=CIRCLE, radius_m=200, speed_limit_kmh=30)
    speeding = AlertRule.objects.create(
        organisation=world["acme"], name="Speeding", event_types=["overspeed"],
        overspeed_kmh=80, overspeed_min_s=20, recipients=["safety@acme.example"])
    speeding.vehicles.add(world["van1"])
    parked = AlertRule.objects.create(organisation=world["acme"], name="Silent units",
                                      event_types=["offline"], offline_minutes=30,
                                      active=False)
    theirs = AlertRule.objects.create(organisation=world["globex"], name="Wien watch",
                                      event_types=["fault_opened"])
    return {"school": school, "speeding": speeding, "parked": parked, "theirs": theirs}


def login(client, name: str):
    assert client.login(username=name, password=PASSWORD)
    return client


def form_data(**changes) -> dict:
    data = {"name": "Fuel and idling", "event_types": ["low_fuel", "idle"],
            "low_fuel_percent": "15", "idle_minutes": "10", "overspeed_min_s": "0",
            "recipients": "fleet@acme.example\nboss@acme.example, fleet@acme.example",
            "active": "on"}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_the_manager_sees_the_rules_in_words(client, world, rules):
    page = login(client, "adam").get("/alert-rules/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Overspeed above 80 km/h for 20 s" in text and "Van 1" in text
    assert "safety@acme.example" in text and "silent over 30 min" in text
    assert "Wien watch" not in text  # Globex's
    assert 'id="new-rule"' in text and "Switch off" in text and "Switch on" in text
    # Active rules first.
    assert text.index("Speeding") < text.index("Silent units")


def test_the_manager_creates_a_rule_the_alert_worker_then_uses(client, world, rules):
    login(client, "adam")
    assert client.get("/alert-rules/new/").status_code == 200
    response = client.post("/alert-rules/new/", form_data(
        vehicles=[world["van2"].pk, world["van3"].pk]))
    assert response.status_code == 302 and response["Location"] == "/alert-rules/"
    rule = AlertRule.objects.get(name="Fuel and idling")
    assert rule.organisation == world["acme"] and rule.active
    assert sorted(rule.event_types) == ["idle", "low_fuel"]
    assert (rule.low_fuel_percent, rule.idle_minutes) == (15.0, 10)
    assert rule.recipients == ["fleet@acme.example", "boss@acme.example"]  # once each
    assert set(rule.vehicles.values_list("name", flat=True)) == {"Van 2", "Van 3"}
    assert "Saved “Fuel and idling”." in client.get("/alert-rules/").content.decode()
    config = ConfigCache().get({world["acme"].pk})[world["acme"].pk]
    mine = next(r for r in config.rules if r.id == rule.pk)
    assert mine.low_fuel_percent == 15.0 and mine.vehicle_ids == {world["van2"].pk,
                                                                  world["van3"].pk}
    assert config.recipients[rule.pk] == ["fleet@acme.example", "boss@acme.example"]


@pytest.mark.parametrize(("changes", "message"), [
    ({"event_types": ["overspeed"]},
     "Overspeed needs a limit in km/h (or geofences with a speed limit)."),
    ({"event_types": ["offline"]}, "Offline needs minutes."),
    ({"low_fuel_percent": None}, "Low fuel needs a %."),
    ({"event_types": []}, "Choose at least one kind of event."),
    ({"event_types": ["teleported"]}, "Select a valid choice."),
    ({"name": "   "}, "This field is required."),
    ({"low_fuel_percent": "lots"}, "Enter a number."),
    ({"idle_minutes": "-4"}, "Ensure this value is greater than or equal to 1."),
    ({"recipients": "boss@acme.example, not-an-address"},
     "Not an e-mail address: not-an-address."),
    ({"recipients": "\n".join(f"p{i}@acme.example" for i in range(51))},
     "At most 50 addresses."),
])
def test_a_rule_that_could_never_fire_is_refused_with_the_reason(client, world, changes,
                                                                 message):
    response = login(client, "adam").post("/alert-rules/new/", form_data(**changes))
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not AlertRule.objects.filter(organisation=world["acme"]).exists()


def test_overspeed_may_use_the_geofences_limits(client, world, rules):
    response = login(client, "adam").post("/alert-rules/new/", form_data(
        name="School zones", event_types=["overspeed"], geofences=[rules["school"].pk]))
    assert response.status_code == 302
    rule = AlertRule.objects.get(name="School zones")
    assert rule.overspeed_kmh is None and list(rule.geofences.all()) == [rules["school"]]
    assert "Overspeed above the geofence limits" in client.get(
        "/alert-rules/").content.decode()


def test_another_organisations_vehicles_cannot_be_named(client, world, rules):
    response = login(client, "adam").post("/alert-rules/new/", form_data(
        vehicles=[world["truck"].pk]))
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()


def test_the_manager_edits_and_switches_a_rule_off_and_on(client, world, rules):
    login(client, "adam")
    speeding = rules["speeding"]
    page = client.get(f"/alert-rules/{speeding.pk}/").content.decode()
    assert 'value="80.0"' in page and "safety@acme.example" in page
    response = client.post(f"/alert-rules/{speeding.pk}/", form_data(
        name="Speeding", event_types=["overspeed"], overspeed_kmh="90", overspeed_min_s="5",
        recipients="", vehicles=[]))
    assert response.status_code == 302
    speeding.refresh_from_db()
    assert (speeding.overspeed_kmh, speeding.overspeed_min_s) == (90.0, 5)
    assert speeding.recipients == [] and not speeding.vehicles.exists()  # every vehicle now
    client.post(f"/alert-rules/{speeding.pk}/active/", {"active": "0"})
    speeding.refresh_from_db()
    assert not speeding.active
    assert "“Speeding” is off." in client.get("/alert-rules/").content.decode()
    config = ConfigCache().get({world["acme"].pk})[world["acme"].pk]
    assert speeding.pk not in {r.id for r in config.rules}  # switched off: not evaluated
    client.post(f"/alert-rules/{speeding.pk}/active/", {"active": "1"})
    speeding.refresh_from_db()
    assert speeding.active
    page = client.post(f"/alert-rules/{speeding.pk}/active/", {"active": "maybe"},
                       follow=True).content.decode()
    assert "Say active=1 or active=0." in page


def test_dispatchers_read_the_rules_but_change_nothing(client, world, rules):
    login(client, "dora")
    text = client.get("/alert-rules/").content.decode()
    assert "Speeding" in text and "safety@acme.example" in text
    assert 'id="new-rule"' not in text and "Switch off" not in text
    detail = client.get(f"/alert-rules/{rules['speeding'].pk}/")
    assert detail.status_code == 200
    page = detail.content.decode()
    assert "Only fleet managers change alert rules." in page
    assert 'type="submit">Save' not in page and "disabled" in page
    speeding = rules["speeding"]
    for url, data in ((f"/alert-rules/{speeding.pk}/", form_data()),
                      (f"/alert-rules/{speeding.pk}/active/", {"active": "0"}),
                      ("/alert-rules/new/", form_data())):
        response = client.post(url, data)
        assert response.status_code == 403, url
        assert "Only fleet managers change alert rules." in response.content.decode()
    assert client.get("/alert-rules/new/").status_code == 403
    speeding.refresh_from_db()
    assert speeding.active and speeding.overspeed_kmh == 80
    assert AlertRule.objects.count() == 3


def test_drivers_are_told_the_rules_are_not_theirs(client, world, rules):
    login(client, "dana")
    for url in ("/alert-rules/", "/alert-rules/new/", f"/alert-rules/{rules['speeding'].pk}/"):
        response = client.get(url)
        assert response.status_code == 403, url
        text = response.content.decode()
        assert "Alert rules are for fleet managers and dispatchers." in text
        assert "Speeding" not in text
    assert client.post(f"/alert-rules/{rules['speeding'].pk}/active/",
                       {"active": "0"}).status_code == 403
    rules["speeding"].refresh_from_db()
    assert rules["speeding"].active


def test_another_organisations_rule_is_not_found(client, world, rules):
    login(client, "gus")
    assert client.get(f"/alert-rules/{rules['speeding'].pk}/").status_code == 404
    assert client.post(f"/alert-rules/{rules['speeding'].pk}/active/",
                       {"active": "0"}).status_code == 404
    assert client.post(f"/alert-rules/{rules['speeding'].pk}/",
                       form_data()).status_code == 404
    assert "Wien watch" in client.get("/alert-rules/").content.decode()
    rules["speeding"].refresh_from_db()
    assert rules["speeding"].active


def test_the_top_bar_and_the_events_page_link_to_the_rules(client, world):
    for name, linked in (("adam", True), ("dora", True), ("dana", False)):
        login(client, name)
        for url in ("/", "/events/"):
            assert ('href="/alert-rules/"' in client.get(url).content.decode()) is linked
        client.logout()
    assert client.get("/alert-rules/").status_code == 302  # anonymous: to the login
