"""Webhooks: the API (admins only), and deliveries to a real local HTTP server — signed,
retried with backoff, at least once under one idempotency key, logged with the answers."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from fleet import webhooks
from fleet.jobs import change_status, create_job
from fleet.models import Webhook, WebhookDelivery
from fleet.webhooks import WebhookWorker, create_webhook, deliver_due, fan_out, verify
from telematics.models import Event
from tests.api.conftest import add_positions


@pytest.fixture
def fast_retries(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True  # the receiver is on 127.0.0.1
    settings.WEBHOOK_RETRY_BASE_S = 0.05
    settings.WEBHOOK_RETRY_MAX_S = 0.2
    settings.WEBHOOK_TIMEOUT_S = 5.0
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    return settings


def event(fleets, type_="fault_opened", organisation=None, **attributes) -> Event:
    return Event.objects.create(organisation=organisation or fleets.acme, vehicle=fleets.van,
                                type=type_, time=timezone.now(), attributes=attributes)


def deliver_until_settled(rounds: int = 40) -> None:
    """Run the worker's two steps until nothing is pending (retries wait their backoff)."""
    for _ in range(rounds):
        fan_out()
        deliver_due()
        if not WebhookDelivery.objects.filter(status="pending").exists():
            return
        time.sleep(0.05)


# --- the API --------------------------------------------------------------------------


def test_admin_registers_a_webhook_and_sees_the_secret_once(fleets, fast_retries, receiver):
    client = fleets.client("admin")
    r = client.post("/api/v1/webhooks/", {"url": receiver.url, "event_types": [
        "job_status", "fault_opened", "job_status"], "description": "ERP"}, format="json")
    assert r.status_code == 201, r.json()
    created = r.json()
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["event_types"] == ["fault_opened", "job_status"]
    assert created["created_by"] == "alice" and created["organisation"] == fleets.acme.pk
    shown = client.get(f"/api/v1/webhooks/{created['id']}/").json()
    assert "secret" not in shown and shown["url"] == receiver.url
    assert "secret" not in client.get("/api/v1/webhooks/").json()["results"][0]
    r = client.post(f"/api/v1/webhooks/{created['id']}/rotate-secret/")
    assert r.status_code == 200 and r.json()["secret"] != created["secret"]
    assert Webhook.objects.get().secret == r.json()["secret"]


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"url": "ftp://example.com/x", "event_types": ["job_status"]}, "url", "http"),
    ({"url": "https://example.com/x", "event_types": ["job_stauts"]}, "event_types",
     "not a valid choice"),
    ({"url": "https://example.com/x", "event_types": []}, "event_types", "empty"),
    ({"url": "https://user:pw@example.com/x", "event_types": ["job_status"]}, "url",
     "no credentials"),
    ({"url": "http://127.0.0.1:6379/", "event_types": ["job_status"]}, "url", "internal"),
    ({"url": "http://localhost/x", "event_types": ["job_status"]}, "url", "internal"),
    ({"url": "http://[::ffff:10.0.0.1]/x", "event_types": ["job_status"]}, "url", "internal"),
])
def test_webhook_validation(fleets, body, field, message):
    r = fleets.client("admin").post("/api/v1/webhooks/", body, format="json")
    assert r.status_code == 400
    assert message in str(r.json()[field])


@pytest.mark.parametrize("role", ["dispatcher", "driver"])
def test_only_admins_manage_webhooks(fleets, role):
    hook, _ = create_webhook(fleets.acme, url="https://example.com/h", event_types=["offline"])
    client = fleets.client(role)
    assert client.get("/api/v1/webhooks/").status_code == 403
    assert client.post("/api/v1/webhooks/", {"url": "https://example.com/x",
                                             "event_types": ["offline"]},
                       format="json").status_code == 403
    assert client.get(f"/api/v1/webhooks/{hook.pk}/").status_code in (403, 404)
    assert client.get(f"/api/v1/webhooks/{hook.pk}/deliveries/").status_code in (403, 404)
    assert client.delete(f"/api/v1/webhooks/{hook.pk}/").status_code in (403, 404)
    assert Webhook.objects.filter(pk=hook.pk).exists()


def test_an_api_key_registers_its_own_webhook(fleets):
    r = fleets.client("api_key").post("/api/v1/webhooks/", {
        "url": "https://dispatch.example.com/fleet", "event_types": ["job_arrived"]},
        format="json")
    assert r.status_code == 201 and r.json()["created_by"] is None


@pytest.mark.parametrize("role", ["admin", "api_key"])
def test_other_organisations_webhooks_are_not_found(fleets, role):
    theirs, _ = create_webhook(fleets.globex, url="https://globex.example.com/h",
                               event_types=["offline"])
    client = fleets.client(role)
    base = f"/api/v1/webhooks/{theirs.pk}/"
    for response in (client.get(base), client.patch(base, {"active": False}, format="json"),
                     client.delete(base), client.get(base + "deliveries/"),
                     client.post(base + "rotate-secret/"), client.post(base + "ping/")):
        assert response.status_code == 404
    assert client.get("/api/v1/webhooks/").json()["results"] == []
    assert Webhook.objects.get(pk=theirs.pk).active


# --- deliveries to a real HTTP server -------------------------------------------------


def test_delivery_is_signed_and_carries_the_event(fleets, fast_retries, receiver):
    hook, secret = create_webhook(fleets.acme, url=receiver.url, event_types=["fault_opened"])
    fault = event(fleets, code="P0300")
    event(fleets, "overspeed")  # not subscribed
    event(fleets, organisation=fleets.globex)  # another organisation's
    deliver_until_settled()
    [request] = receiver.wait(1)
    headers = request["headers"]
    assert request["path"] == "/hooks/fleet"
    assert headers["content-type"] == "application/json"
    assert headers["x-fleetbook-event"] == "fault_opened"
    assert headers["x-fleetbook-signature"].startswith("sha256=")
    assert verify(secret, request["body"], headers["x-fleetbook-signature"])
    assert not verify("whsec_wrong", request["body"], headers["x-fleetbook-signature"])
    body = request["json"]
    assert body["id"] == headers["idempotency-key"] and body["type"] == "fault_opened"
    assert body["organisation"] == fleets.acme.pk
    assert body["event"]["id"] == fault.pk and body["event"]["vehicle"] == fleets.van.pk
    assert body["event"]["attributes"] == {"code": "P0300"}
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == (
        "succeeded", 1, 200)
    assert delivery.response_body == '{"ok": true}' and delivery.event_id == fault.pk
    time.sleep(0.2)
    deliver_until_settled()
    assert len(receiver.requests) == 1  # delivered once, not again
    Webhook.objects.get(pk=hook.pk, event_cursor__gte=fault.pk)


def test_a_500_is_retried_with_backoff_under_the_same_idempotency_key(
        fleets, fast_retries, receiver):
    receiver.answers = [500, 503]
    hook, secret = create_webhook(fleets.acme, url=receiver.url, event_types=["job_status"])
    job = create_job(fleets.acme, title="Deliver", vehicle=fleets.van)
    change_status(job, "en_route", by=fleets.driver_user)
    deliver_until_settled()
    requests = receiver.wait(3)
    assert [r["answered"] for r in requests] == [500, 503, 200]
    assert len({r["headers"]["idempotency-key"] for r in requests}) == 1
    assert len({r["body"] for r in requests}) == 1  # the very same bytes every time
    assert [r["headers"]["x-fleetbook-attempt"] for r in requests] == ["1", "2", "3"]
    assert all(verify(secret, r["body"], r["headers"]["x-fleetbook-signature"])
               for r in requests)
    assert requests[0]["json"]["event"]["attributes"]["to"] == "en_route"
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("succeeded", 3)
    log = delivery.attempt_log
    assert [(a["attempt"], a["status"]) for a in log] == [(1, 500), (2, 503), (3, 200)]
    assert log[0]["error"] == "HTTP 500" and log[2]["error"] == ""
    # The API shows it all, to admins.
    rows = fleets.client("admin").get(f"/api/v1/webhooks/{hook.pk}/deliveries/").json()
    assert rows["results"][0]["attempts"] == 3
    assert rows["results"][0]["attempt_log"][0]["status"] == 500


def test_backoff_doubles_and_gives_up_after_the_last_attempt(fleets, fast_retries, receiver):
    fast_retries.WEBHOOK_RETRY_BASE_S = 10
    fast_retries.WEBHOOK_RETRY_MAX_S = 25
    assert [webhooks.backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [10, 20, 25, 25]
    fast_retries.WEBHOOK_RETRY_BASE_S = 0.01
    receiver.answers = [500] * 10
    create_webhook(fleets.acme, url=receiver.url, event_types=["offline"])
    event(fleets, "offline")
    deliver_until_settled()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("failed", 3, 500)
    assert delivery.response_body == "receiver broke"
    assert len(receiver.requests) == 3


def test_a_unreachable_receiver_is_logged_and_retried(fleets, fast_retries):
    create_webhook(fleets.acme, url="http://127.0.0.1:9/nothing-listens", event_types=["idle"])
    event(fleets, "idle")
    fan_out()
    assert deliver_due() == 1
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "pending" and delivery.response_status is None
    assert "ConnectionRefusedError" in delivery.error
    assert delivery.next_attempt_at > timezone.now() - timedelta(seconds=1)


def test_internal_addresses_are_refused_at_delivery(fleets, fast_retries, receiver):
    create_webhook(fleets.acme, url=receiver.url.replace("127.0.0.1", "localhost"),
                   event_types=["offline"])
    fast_retries.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    event(fleets, "offline")
    fan_out()
    deliver_due()
    assert "internal address" in WebhookDelivery.objects.get().error
    assert receiver.requests == []


def test_every_position_in_batches(fleets, fast_retries, receiver, settings):
    settings.API_FEED_SETTLE_S = 0
    hook, _ = create_webhook(fleets.acme, url=receiver.url, event_types=["position"])
    now = timezone.now()
    add_positions(fleets.van_unit, now - timedelta(hours=1), 150, server_time=now)
    add_positions(fleets.truck_unit, now - timedelta(hours=1), 5, server_time=now)
    time.sleep(0.01)
    deliver_until_settled()
    requests = receiver.wait(2)
    assert [len(r["json"]["positions"]) for r in requests] == [100, 50]
    ids = [p["id"] for r in requests for p in r["json"]["positions"]]
    assert len(set(ids)) == 150
    assert {p["device"] for r in requests for p in r["json"]["positions"]} == {
        fleets.van_unit.pk}
    assert requests[0]["headers"]["x-fleetbook-event"] == "position"
    deliver_until_settled()
    assert len(receiver.requests) == 2
    assert Webhook.objects.get(pk=hook.pk).position_after_id == max(ids)


def test_a_new_webhook_starts_from_now_and_ping_tests_it(fleets, fast_retries, receiver):
    event(fleets, "offline")  # before the webhook: not delivered
    hook, secret = create_webhook(fleets.acme, url=receiver.url, event_types=["offline"])
    r = fleets.client("admin").post(f"/api/v1/webhooks/{hook.pk}/ping/")
    assert r.status_code == 202 and r.json()["event_type"] == "ping"
    deliver_until_settled()
    [request] = receiver.wait(1)
    assert request["json"]["type"] == "ping"
    assert verify(secret, request["body"], request["headers"]["x-fleetbook-signature"])


def test_switched_off_it_gets_nothing_and_on_again_no_backlog(fleets, fast_retries, receiver):
    hook, _ = create_webhook(fleets.acme, url=receiver.url, event_types=["offline"])
    client = fleets.client("admin")
    assert client.patch(f"/api/v1/webhooks/{hook.pk}/", {"active": False},
                        format="json").status_code == 200
    event(fleets, "offline")
    deliver_until_settled()
    client.patch(f"/api/v1/webhooks/{hook.pk}/", {"active": True}, format="json")
    deliver_until_settled()
    assert receiver.requests == [] and not WebhookDelivery.objects.exists()
    event(fleets, "offline", n=2)
    deliver_until_settled()
    assert receiver.wait(1)[0]["json"]["event"]["attributes"] == {"n": 2}


def test_a_gap_in_event_ids_is_waited_for_then_passed(fleets):
    """An id handed out but not yet committed may appear later; a gap is waited out."""
    hook, _ = create_webhook(fleets.acme, url="https://example.com/h", event_types=["offline"])
    start = hook.event_cursor
    now = timezone.now()
    early = Event(pk=start + 1, organisation=fleets.acme, type="offline", time=now)
    late = Event(pk=start + 3, organisation=fleets.acme, type="offline", time=now)
    late.created = now
    assert webhooks._settled([early, late], start, now) == [early]
    assert webhooks._settled([early, late], start, now + webhooks.GAP_WAIT) == [early, late]


@pytest.mark.django_db(transaction=True)
def test_the_worker_thread_and_the_management_command(fleets, fast_retries, receiver):
    create_webhook(fleets.acme, url=receiver.url, event_types=["geofence_enter"])
    event(fleets, "geofence_enter", geofence=1)
    call_command("deliver_webhooks", "--once")
    assert receiver.wait(1)[0]["json"]["type"] == "geofence_enter"
    worker = WebhookWorker(poll_s=0.05)
    worker.start()
    try:
        event(fleets, "geofence_enter", geofence=2)
        requests = receiver.wait(2)
    finally:
        worker.stop()
    assert [r["json"]["event"]["attributes"]["geofence"] for r in requests] == [1, 2]
