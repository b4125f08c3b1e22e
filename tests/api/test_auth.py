"""Logging in for a token, Bearer tokens, API keys, sessions and the token rate limit."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from fleet.api.services import api_key_for, create_api_key, revoke_api_key, user_for_token
from fleet.models import ApiKey, LoginToken
from tests.api.conftest import client_for

TOKEN_URL = "/api/v1/auth/token/"


def rates(**overrides):
    return override_settings(REST_FRAMEWORK={
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
                                   **overrides},
    })


def test_token_login_then_bearer(fleets):
    client = APIClient()
    before = timezone.now()
    r = client.post(TOKEN_URL, {"username": "alice", "password": "pw-alice"}, format="json")
    assert r.status_code == 200
    token = r.json()["token"]
    expires_at = datetime.fromisoformat(r.json()["expires_at"])
    assert r.json()["expires_at"].endswith("Z")
    # Twelve hours from issue by default (API_TOKEN_TTL_S).
    assert timedelta(hours=12) <= expires_at - before <= timedelta(hours=12, seconds=30)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    names = [v["name"] for v in client.get("/api/v1/vehicles/").json()["results"]]
    assert names == ["Pool car", "Van 7"]


def test_each_login_gets_its_own_token_and_logs_out_alone(fleets):
    tokens = [login("alice") for _ in range(2)]
    assert tokens[0] != tokens[1]
    phone, laptop = (bearer(token) for token in tokens)
    assert phone.get("/api/v1/vehicles/").status_code == 200
    assert phone.delete(TOKEN_URL).status_code == 204
    assert phone.get("/api/v1/vehicles/").status_code == 401
    assert laptop.get("/api/v1/vehicles/").status_code == 200


def test_token_lifetime_is_a_setting(fleets, settings):
    settings.API_TOKEN_TTL_S = 600
    before = timezone.now()
    r = APIClient().post(TOKEN_URL, {"username": "alice", "password": "pw-alice"})
    expires_at = datetime.fromisoformat(r.json()["expires_at"])
    assert timedelta(minutes=10) <= expires_at - before <= timedelta(minutes=10, seconds=30)


def later(monkeypatch, delta: timedelta) -> None:
    """Move the clock forward, for everything that asks django.utils.timezone."""
    now = timezone.now() + delta
    monkeypatch.setattr(timezone, "now", lambda: now)


def test_expired_token_answers_401_saying_so(fleets, monkeypatch):
    client = bearer(login("alice"))
    assert client.get("/api/v1/vehicles/").status_code == 200  # checked and remembered
    later(monkeypatch, timedelta(hours=12, seconds=1))
    r = client.get("/api/v1/vehicles/")
    assert r.status_code == 401
    assert r["WWW-Authenticate"] == "Bearer"
    detail = r.json()["detail"]
    assert detail.startswith("The token expired at 20") and "log in again" in detail
    assert client.delete(TOKEN_URL).status_code == 401
    # Logging in again works even with the stale token still sent along.
    r = client.post(TOKEN_URL, {"username": "alice", "password": "pw-alice"})
    assert r.status_code == 200
    assert bearer(r.json()["token"]).get("/api/v1/vehicles/").status_code == 200


def test_long_expired_tokens_are_swept_out(fleets, monkeypatch):
    login("alice")
    later(monkeypatch, timedelta(days=9))
    login("dirk")  # issuing sweeps tokens that expired more than a week ago
    assert list(LoginToken.objects.values_list("user__username", flat=True)) == ["dirk"]


def test_token_is_stored_hashed(fleets):
    token = login("alice")
    row = LoginToken.objects.get(user=fleets.admin)
    assert row.digest == hashlib.sha256(token.encode()).hexdigest()
    assert not LoginToken.objects.filter(digest=token).exists()


def test_logout_everywhere(fleets):
    phone, laptop = bearer(login("alice")), bearer(login("alice"))
    colleague = bearer(login("dirk"))
    for client in (phone, laptop, colleague):
        assert client.get("/api/v1/vehicles/").status_code == 200
    assert phone.delete(f"{TOKEN_URL}?everywhere=true").status_code == 204
    assert phone.get("/api/v1/vehicles/").status_code == 401
    assert laptop.get("/api/v1/vehicles/").status_code == 401
    assert colleague.get("/api/v1/vehicles/").status_code == 200
    assert bearer(login("alice")).delete(f"{TOKEN_URL}?everywhere=maybe").json() == {
        "everywhere": ["true or false."]}


def test_logout_needs_a_token(fleets):
    for client in (fleets.client("api_key"), bearer(fleets.acme_key), APIClient()):
        r = client.delete(TOKEN_URL)
        assert r.status_code == 401
        assert "Authorization: Bearer <token>" in r.json()["detail"]
    assert fleets.client("api_key").get("/api/v1/vehicles/").status_code == 200  # untouched


def test_deactivated_login_token_stops_working(fleets):
    client = bearer(login("dirk"))
    fleets.dispatcher.is_active = False
    fleets.dispatcher.save()
    r = client.get("/api/v1/vehicles/")
    assert r.status_code == 401 and r.json()["detail"] == "Invalid token."


def test_locking_a_login_or_changing_its_password_ends_its_tokens(fleets):
    dirk = bearer(login("dirk"))
    assert dirk.get("/api/v1/vehicles/").status_code == 200  # remembered now
    admin = fleets.client("admin")
    url = f"/api/v1/users/{fleets.dispatcher.pk}/"
    assert admin.patch(url, {"is_active": False}, format="json").status_code == 200
    assert dirk.get("/api/v1/vehicles/").status_code == 401
    assert admin.patch(url, {"is_active": True}, format="json").status_code == 200
    dirk = bearer(login("dirk"))
    assert dirk.get("/api/v1/vehicles/").status_code == 200
    r = admin.patch(url, {"password": "a-new-long-password-7"}, format="json")
    assert r.status_code == 200
    assert dirk.get("/api/v1/vehicles/").status_code == 401


def test_a_new_role_applies_at_once(fleets):
    dirk = bearer(login("dirk"))
    assert dirk.get("/api/v1/users/").status_code == 403  # a dispatcher; remembered
    r = fleets.client("admin").patch(f"/api/v1/users/{fleets.dispatcher.pk}/",
                                     {"role": "admin"}, format="json")
    assert r.status_code == 200
    assert dirk.get("/api/v1/users/").status_code == 200


def test_api_key_as_bearer_credential(fleets):
    names = [v["name"] for v in bearer(fleets.acme_key).get("/api/v1/vehicles/").json()["results"]]
    assert names == ["Pool car", "Van 7"]


def test_a_recent_credential_costs_no_query(fleets):
    """A checked token or key is remembered for API_AUTH_CACHE_S: a dispatch board
    polling every few seconds is not looked up (token, login, membership) each time."""
    for client in (bearer(login("dirk")), fleets.client("api_key")):
        assert client.get("/api/v1/vehicles/").status_code == 200
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/api/v1/vehicles/").status_code == 200
        looked_up = [q["sql"] for q in queries.captured_queries
                     if "fleet_logintoken" in q["sql"] or "fleet_apikey" in q["sql"]
                     or "fleet_membership" in q["sql"] or "auth_user" in q["sql"]]
        assert looked_up == []


def test_revoking_is_immediate_for_a_remembered_key(fleets):
    client = fleets.client("api_key")
    assert client.get("/api/v1/vehicles/").status_code == 200  # remembered now
    key = ApiKey.objects.get(prefix=fleets.acme_key.split(".")[0])
    r = fleets.client("admin").delete(f"/api/v1/api-keys/{key.pk}/")
    assert r.status_code == 204
    r = client.get("/api/v1/vehicles/")
    assert r.status_code == 401 and r.json()["detail"] == "Invalid or revoked API key."


def test_without_the_memory_every_request_checks(fleets, settings):
    settings.API_AUTH_CACHE_S = 0
    client = bearer(login("dirk"))
    assert client.get("/api/v1/vehicles/").status_code == 200
    LoginToken.objects.filter(user=fleets.dispatcher).delete()  # e.g. by another process
    assert client.get("/api/v1/vehicles/").status_code == 401


def test_live_stream_login_ends_with_the_token(fleets, monkeypatch):
    """The websocket (fleet.ws_auth) asks user_for_token: an expired token is nobody."""
    token = login("dirk")
    assert user_for_token(token) == fleets.dispatcher
    later(monkeypatch, timedelta(hours=13))
    assert user_for_token(token) is None
    assert user_for_token("made-up") is None


def login(username: str) -> str:
    r = APIClient().post(TOKEN_URL, {"username": username, "password": f"pw-{username}"})
    assert r.status_code == 200, r.json()
    return r.json()["token"]


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_wrong_password_and_missing_fields(fleets):
    r = APIClient().post(TOKEN_URL, {"username": "alice", "password": "nope"}, format="json")
    assert r.status_code == 400
    assert "Unable to log in" in r.json()["non_field_errors"][0]
    r = APIClient().post(TOKEN_URL, {}, format="json")
    assert r.status_code == 400
    assert set(r.json()) == {"username", "password"}


def test_no_credentials_or_bad_token_answer_401(fleets):
    r = APIClient().get("/api/v1/vehicles/")
    assert r.status_code == 401
    assert r["WWW-Authenticate"] == "Bearer"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert client.get("/api/v1/vehicles/").status_code == 401


def test_token_endpoint_answers_429_over_its_rate(fleets):
    with rates(token="3/min"):
        client = APIClient()
        codes = [
            client.post(TOKEN_URL, {"username": "alice", "password": "nope"}).status_code
            for _ in range(5)
        ]
    assert codes == [400, 400, 400, 429, 429]


def test_user_rate_limit(fleets):
    with rates(user="2/min"):
        client = fleets.client("admin")
        codes = [client.get("/api/v1/vehicles/").status_code for _ in range(3)]
        over = client.get("/api/v1/vehicles/")
        # Another login has its own allowance, even from the same address.
        assert fleets.client("dispatcher").get("/api/v1/vehicles/").status_code == 200
    assert codes == [200, 200, 429]
    assert over["Retry-After"] and int(over["Retry-After"]) <= 60
    assert "throttled" in over.json()["detail"]


def test_api_key_rate_limit_is_per_key(fleets):
    with rates(user="2/min"):
        acme, globex = fleets.client("api_key"), client_for(api_key=fleets.globex_key)
        codes = [acme.get("/api/v1/vehicles/").status_code for _ in range(3)]
        assert globex.get("/api/v1/vehicles/").status_code == 200
    assert codes == [200, 200, 429]


def test_anonymous_rate_limit(fleets):
    with rates(anon="2/min"):
        codes = [APIClient().get("/api/v1/schema/").status_code for _ in range(3)]
    assert codes == [200, 200, 429]


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
def test_api_key_acts_as_organisation_admin(fleets, header):
    client = APIClient()
    if header == "authorization":
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {fleets.acme_key}")
    else:
        client.credentials(HTTP_X_API_KEY=fleets.acme_key)
    names = [v["name"] for v in client.get("/api/v1/vehicles/").json()["results"]]
    assert names == ["Pool car", "Van 7"]  # all of them, as an admin; no Globex truck
    r = client.post("/api/v1/vehicles/", {"name": "Van 8"}, format="json")
    assert r.status_code == 201
    assert r.json()["organisation"] == fleets.acme.pk
    assert ApiKey.objects.get(prefix=fleets.acme_key.split(".")[0]).last_used is not None


def test_api_key_may_not_manage_people_or_keys(fleets):
    client = fleets.client("api_key")
    assert client.get("/api/v1/users/").status_code == 403
    assert client.post("/api/v1/api-keys/", {"name": "x"}).status_code == 403


def test_revoked_or_wrong_key_answers_401(fleets):
    key = ApiKey.objects.get(prefix=fleets.acme_key.split(".")[0])
    revoke_api_key(key)
    r = client_for(api_key=fleets.acme_key).get("/api/v1/vehicles/")
    assert r.status_code == 401
    assert r.json()["detail"] == "Invalid or revoked API key."
    tampered = fleets.globex_key[:-4] + "AAAA"
    assert client_for(api_key=tampered).get("/api/v1/vehicles/").status_code == 401
    assert client_for(api_key="garbage").get("/api/v1/vehicles/").status_code == 401


def test_api_key_is_stored_hashed(acme):
    key, raw = create_api_key(acme, "Dispatch")
    assert raw.startswith(key.prefix + ".")
    assert raw not in key.hashed_key and len(key.hashed_key) == 64
    assert api_key_for(raw) == key


def test_session_login_works_for_the_browser(client, fleets):
    client.login(username="dirk", password="pw-dirk")
    r = client.get("/api/v1/vehicles/")
    assert r.status_code == 200
    assert r.json()["count"] == 2


def test_session_writes_need_csrf(fleets):
    client = APIClient(enforce_csrf_checks=True)
    client.login(username="alice", password="pw-alice")
    assert client.post("/api/v1/vehicles/", {"name": "x"}).status_code == 403


def test_user_without_organisation_is_refused(fleets, django_user_model):
    stranger = django_user_model.objects.create_user("stranger", password="x")
    r = client_for(stranger).get("/api/v1/vehicles/")
    assert r.status_code == 403
