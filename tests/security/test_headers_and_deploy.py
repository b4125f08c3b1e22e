"""Production settings pass Django's deployment checklist, and every page is served with a
Content Security Policy that the pages themselves obey (no inline scripts)."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import uvicorn
from django.db import connection

from fleet.models import Role

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")


def test_deployment_checklist_passes_with_production_settings():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(SECRET_KEY=secrets.token_urlsafe(50), DEBUG="0",
               ALLOWED_HOSTS="fleet.example.com")
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.django_db
def test_pages_carry_a_strict_policy(client, acme, make_user):
    make_user("alice", acme, Role.ADMIN)
    client.login(username="alice", password="pw-alice")
    for url in ("/", "/login/", "/api/v1/docs/"):
        policy = client.get(url)["Content-Security-Policy"]
        assert "script-src 'self';" in policy and "object-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy
    assert "style-src 'self';" in client.get("/")["Content-Security-Policy"]


@pytest.mark.django_db
def test_map_tiles_host_is_allowed(client, settings):
    settings.MAP_TILE_URL = "https://{s}.tiles.example.org/{z}/{x}/{y}.png"
    from fleet.middleware import content_security_policy

    assert "img-src 'self' data: blob: https://*.tiles.example.org;" in \
        content_security_policy()


@pytest.fixture
def served_site(transactional_db, settings, monkeypatch):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    from fleet.asgi import application

    loop = asyncio.new_event_loop()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(application, lifespan="off", log_level="warning"))
    server.config.setup_event_loop = lambda: None
    thread = threading.Thread(target=loop.run_until_complete,
                              args=(server.serve(sockets=[sock]),), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous")
def test_admin_and_api_docs_obey_the_policy(served_site, django_user_model):
    from playwright.sync_api import sync_playwright

    django_user_model.objects.create_superuser("operator", "", "pw-operator-1")
    violations: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page()
        page.on("console", lambda message: violations.append(message.text)
                if "Content Security Policy" in message.text else None)
        page.goto(f"{served_site}/admin/login/")
        page.fill("#id_username", "operator")
        page.fill("#id_password", "pw-operator-1")
        page.click("input[type=submit]")
        page.wait_for_url(f"{served_site}/admin/")
        page.goto(f"{served_site}/admin/telematics/device/add/")
        page.goto(f"{served_site}/api/v1/docs/")
        page.wait_for_selector(".swagger-ui .info", timeout=10_000)
        browser.close()
    assert violations == []


@pytest.mark.django_db
def test_failed_logins_are_rate_limited(client, acme, make_user, settings):
    settings.LOGIN_ATTEMPTS_PER_WINDOW = 3
    make_user("alice", acme, Role.ADMIN)
    for _ in range(3):
        assert client.post("/login/", {"username": "alice", "password": "guess"}).status_code \
            == 200
    blocked = client.post("/login/", {"username": "alice", "password": "pw-alice"})
    assert blocked.status_code == 429
    assert "Too many failed logins" in blocked.content.decode()
    other = client.post("/login/", {"username": "alice", "password": "pw-alice"},
                        REMOTE_ADDR="10.9.8.7")
    assert other.status_code == 302  # another address logs in as usual


@pytest.mark.django_db
def test_metrics_only_for_monitoring_hosts_and_staff(client, acme, make_user):
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.5").status_code == 404
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    make_user("alice", acme, Role.ADMIN)
    client.login(username="alice", password="pw-alice")
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.5").status_code == 404
