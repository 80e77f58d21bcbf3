"""Faults under a live instance: PostgreSQL stopped and started again under gunicorn."""
from __future__ import annotations

import os
import tempfile
import time

import pytest
import requests

from .conftest import PASSWORD, TEST_SETTINGS, _migrate_template, remember
from .gunicornserver import Gunicorn
from .pgserver import PostgresServer

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def own_postgres(tmp_path):
    """A PostgreSQL of this test's own (the session's server must stay up for every other test)."""
    ram = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    server = PostgresServer(tempfile.mkdtemp(prefix="authsvc-pg-fault-", dir=ram))
    server.start()
    try:
        url = server.create_database("faults")
        _migrate_template(url, tmp_path / "migrate")
        yield server, url
    finally:
        server.stop()


def test_database_down_answers_503_fast_and_recovers_without_restart(own_postgres, tmp_path):
    server, url = own_postgres
    instance = Gunicorn({"AUTHSVC_ENV": "production", "SECRET_KEY": TEST_SETTINGS["SECRET_KEY"],
                         "DATABASE_URL": url, "INSTANCE_PATH": str(tmp_path / "i"), "RATELIMIT_ENABLED": "false",
                         "ARGON2_TIME_COST": "1", "ARGON2_MEMORY_COST": "1024", "MAIL_WORKER": "false",
                         "DB_CONNECT_TIMEOUT": "2"}, workers=1).start()
    try:
        remember(PASSWORD)
        body = {"email": "fault@example.com", "password": PASSWORD}
        assert requests.post(f"{instance.url}/api/v1/auth/register", json=body, timeout=10).status_code == 201
        pair = requests.post(f"{instance.url}/api/v1/auth/login", json=body, timeout=10).json()
        remember(pair["access_token"], pair["refresh_token"])

        server.stop_server_process()
        for method, path, kwargs in [
            ("post", "/api/v1/auth/login", {"json": body}),
            ("get", "/api/v1/users/me", {"headers": {"Authorization": f"Bearer {pair['access_token']}"}}),
            ("get", "/readyz", {}),
        ]:
            started = time.monotonic()
            response = requests.request(method, instance.url + path, timeout=30, **kwargs)
            took = time.monotonic() - started
            assert response.status_code == 503, (path, response.status_code, response.text)
            assert took < 6, (path, took)
            if path.startswith("/api/"):
                assert response.json()["error"]["code"] == "unavailable"
                assert "Traceback" not in response.text and "psycopg" not in response.text
        assert requests.get(f"{instance.url}/healthz", timeout=10).status_code == 200  # alive, not ready

        server.restart_server_process()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if requests.get(f"{instance.url}/readyz", timeout=10).status_code == 200:
                break
            time.sleep(0.2)
        # The same worker, no restart: pooled connections were dropped and new ones made (pre-ping).
        login = requests.post(f"{instance.url}/api/v1/auth/login", json=body, timeout=10)
        assert login.status_code == 200, login.text
        remember(login.json()["access_token"], login.json()["refresh_token"])
        me = requests.get(f"{instance.url}/api/v1/users/me", timeout=10,
                          headers={"Authorization": f"Bearer {pair['access_token']}"})
        assert me.status_code == 200
    finally:
        instance.stop()
