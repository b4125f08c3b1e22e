"""Logging in for a token, Bearer tokens, API keys, sessions and the token rate limit."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings
from rest_framework.test import APIClient

from fleet.api.services import api_key_for, create_api_key, revoke_api_key
from fleet.models import ApiKey
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
    r = client.post(TOKEN_URL, {"username": "alice", "password": "pw-alice"}, format="json")
    assert r.status_code == 200
    token = r.json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    names = [v["name"] for v in client.get("/api/v1/vehicles/").json()["results"]]
    assert names == ["Pool car", "Van 7"]
    # The same token again until it is deleted.
    again = APIClient().post(TOKEN_URL, {"username": "alice", "password": "pw-alice"})
    assert again.json()["token"] == token


def test_token_logout(fleets):
    client = client_for(fleets.admin)
    assert client.delete(TOKEN_URL).status_code == 204
    assert client.get("/api/v1/vehicles/").status_code == 401


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
