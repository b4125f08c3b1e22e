"""``python -m fleet.server``: how production serves the site and the API."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import uvicorn

from fleet import server


@pytest.mark.parametrize(("env", "cores", "expected"), [
    ({}, 8, 1),  # no Redis: one process, or each would have its own live map
    ({"REDIS_URL": "redis://r:6379/0"}, 8, 8),
    ({"REDIS_URL": "redis://r:6379/0", "WEB_WORKERS": "3"}, 8, 3),
    ({"WEB_WORKERS": "0"}, 8, 1),
])
def test_web_workers(monkeypatch, env, cores, expected):
    for name in ("REDIS_URL", "WEB_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(server.os, "cpu_count", lambda: cores)
    assert server.web_workers() == expected


def test_one_process_runs_uvicorn_with_the_sites_options(monkeypatch):
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append((app, options)))
    monkeypatch.setenv("WEB_WORKERS", "1")
    monkeypatch.delenv("DB_POOL_MAX", raising=False)
    server.main(["--host", "127.0.0.1", "--port", "8123", "--no-access-log"])
    assert os.environ["DB_POOL_MAX"] == "10"  # a connection pool in the web process
    app, options = calls[0]
    assert app == "fleet.asgi:application"
    assert options["workers"] == 1 and options["port"] == 8123
    assert options["access_log"] is False
    assert options["proxy_headers"] is True and options["lifespan"] == "off"
    assert options["ws"] == "websockets-sansio"


def test_an_explicit_pool_size_is_kept(monkeypatch):
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: None)
    monkeypatch.setenv("DB_POOL_MAX", "0")  # no pool
    server.main(["--workers", "1"])
    assert os.environ["DB_POOL_MAX"] == "0"


def database_options(**env: str) -> dict:
    """DATABASES["default"]["OPTIONS"] as fleet.settings makes them from ``env``."""
    script = ("import json; from fleet import settings; "
              "print(json.dumps(settings.DATABASES['default'].get('OPTIONS', {})))")
    environ = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "DB_POOL_MAX", "DJANGO_SETTINGS_MODULE")}
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[2],
                         env={**environ, "SECRET_KEY": "x" * 50, **env})
    return json.loads(out.stdout)


def test_pool_setting():
    postgres = "postgres://fleet@db.example:5432/fleet"
    assert "pool" not in database_options(DATABASE_URL=postgres)
    assert database_options(DATABASE_URL=postgres, DB_POOL_MAX="7")["pool"] == {
        "min_size": 1, "max_size": 7, "timeout": 10}
    assert "pool" not in database_options(DB_POOL_MAX="7")  # SQLite: no pool


def listening_pids(port: int) -> set[int]:
    out = subprocess.run(["ss", "-ltnpH", f"( sport = :{port} )"], capture_output=True,
                         text=True, check=True).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}


def two_listening(port: int, without: int | None = None) -> set[int] | None:
    pids = listening_pids(port)
    return pids if len(pids) == 2 and without not in pids else None


def wait_for(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.mark.skipif(not hasattr(__import__("socket"), "SO_REUSEPORT") or not shutil.which("ss"),
                    reason="Linux with iproute2's ss only")
def test_processes_listen_each_on_the_port_and_are_replaced_when_they_die(tmp_path):
    """Each web process has its own socket on the shared port (the kernel spreads the
    connections); one that dies is replaced; SIGTERM stops them all."""
    environ = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    environ.update(SECRET_KEY="x" * 50, ALLOWED_HOSTS="127.0.0.1", SECURE_SSL_REDIRECT="0",
                   FLEETBOOK_VAR_DIR=str(tmp_path), LOG_LEVEL="WARNING")
    environ.pop("DATABASE_URL", None)  # /health/ on an empty SQLite file is enough
    log = tmp_path / "server.log"
    with log.open("w") as out:
        parent = subprocess.Popen(
            [sys.executable, "-m", "fleet.server", "--host", "127.0.0.1", "--port", "0",
             "--workers", "2", "--log-level", "warning"],
            cwd=Path(__file__).resolve().parents[2], env=environ, stdout=out,
            stderr=subprocess.STDOUT)
    try:
        port = int(wait_for(lambda: re.search(r"Serving http://127.0.0.1:(\d+)",
                                              log.read_text()))[1])
        workers = wait_for(lambda: two_listening(port))
        assert parent.pid not in workers
        body = wait_for(lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{port}/health/", timeout=5).read())
        assert json.loads(body) == {"status": "ok"}
        time.sleep(server.FAILED_START_S)  # long enough up to count as started
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        replaced = wait_for(lambda: two_listening(port, without=victim))
        assert len(replaced - workers) == 1
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 0
        assert listening_pids(port) == set()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
