"""Two gunicorn instances on one PostgreSQL and one Redis behave as one service."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
import requests

from .conftest import PASSWORD, TEST_SETTINGS, remember
from .gunicornserver import ROOT, Gunicorn
from .redisserver import RedisServer

pytestmark = pytest.mark.postgres_only
SECRET = TEST_SETTINGS["SECRET_KEY"]  # the migrated template's signing key is encrypted under it


@pytest.fixture
def redis_url():
    """A Redis for the instances' shared rate-limit counts."""
    server = RedisServer()
    server.start()
    yield server.url
    server.stop()


def _settings(database_url, redis_url, tmp_path, **extra) -> dict:
    # One public address for every instance, as behind a load balancer: the tokens' issuer is the same on each.
    return {"AUTHSVC_ENV": "production", "SECRET_KEY": SECRET, "DATABASE_URL": database_url,
            "PUBLIC_BASE_URL": "http://127.0.0.1", "REDIS_URL": redis_url, "INSTANCE_PATH": str(tmp_path), "COOKIE_SECURE": "false",
            "ARGON2_TIME_COST": "1", "ARGON2_MEMORY_COST": "1024", "MAIL_WORKER": "false",
            "RATELIMIT_LOGIN": "1000/minute", "RATELIMIT_REFRESH": "1000/minute",
            "RATELIMIT_PROFILE_READ": "10000/minute", "SIGNING_KEY_CACHE_SECONDS": "2",
            **extra}


@pytest.fixture
def instances(database_url, redis_url, tmp_path):
    """Two instances, A and B, sharing the database, Redis and SECRET_KEY."""
    started = []
    try:
        for name in ("a", "b"):
            started.append(Gunicorn(_settings(database_url, redis_url, tmp_path / name)).start())
        yield started
    finally:
        for instance in started:
            instance.stop()


def _login(base, email="scale@example.com"):
    response = requests.post(f"{base}/api/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=10)
    assert response.status_code == 200, response.text
    remember(response.json()["access_token"], response.json()["refresh_token"])
    return response.json()


def _bearer(pair):
    return {"Authorization": f"Bearer {pair['access_token']}"}


def _register(base, email="scale@example.com"):
    remember(PASSWORD)
    response = requests.post(f"{base}/api/v1/auth/register", json={"email": email, "password": PASSWORD}, timeout=10)
    assert response.status_code == 201, response.text


def test_a_token_from_one_instance_refreshes_on_the_other(instances):
    a, b = instances
    _register(a.url)
    pair = _login(a.url)
    assert requests.get(f"{b.url}/api/v1/users/me", headers=_bearer(pair), timeout=10).status_code == 200
    rotated = requests.post(f"{b.url}/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}, timeout=10)
    assert rotated.status_code == 200
    remember(rotated.json()["access_token"], rotated.json()["refresh_token"])
    again = requests.post(f"{a.url}/api/v1/auth/refresh", json={"refresh_token": rotated.json()["refresh_token"]},
                          timeout=10)
    assert again.status_code == 200
    remember(again.json()["refresh_token"])
    assert requests.get(f"{a.url}/.well-known/jwks.json", timeout=10).json() == \
        requests.get(f"{b.url}/.well-known/jwks.json", timeout=10).json()


def test_a_logout_on_one_instance_is_refused_by_the_other_within_a_second(instances):
    a, b = instances
    _register(a.url)
    pair = _login(a.url)
    assert requests.get(f"{b.url}/api/v1/auth/verify", headers=_bearer(pair), timeout=10).status_code == 200
    assert requests.post(f"{a.url}/api/v1/auth/logout", headers=_bearer(pair), timeout=10).status_code == 204
    logged_out = time.monotonic()
    # Poll B for 1.5 s, the gateway check and the API in turn (each lands on any of B's workers, and each
    # worker may remember the token for TOKEN_CHECK_CACHE_SECONDS): the window ends with the last 200.
    answers = []
    while time.monotonic() - logged_out < 1.5:
        path = "/api/v1/auth/verify" if len(answers) % 2 == 0 else "/api/v1/users/me"
        status = requests.get(f"{b.url}{path}", headers=_bearer(pair), timeout=10).status_code
        answers.append((round(time.monotonic() - logged_out, 3), path, status))
    window = max((t for t, _, status in answers if status == 200), default=0.0)
    assert window < 1.0, answers
    assert {status for t, _, status in answers if t >= 1.0} == {401}, answers


def test_rate_limit_counts_are_shared(database_url, redis_url, tmp_path):
    started = []
    try:
        for name in ("a", "b"):
            started.append(Gunicorn(_settings(database_url, redis_url, tmp_path / name,
                                              RATELIMIT_LOGIN="3/minute"), workers=1).start())
        body = {"email": "nobody@example.com", "password": "wrong password 1"}
        codes = [requests.post(f"{started[i % 2].url}/api/v1/auth/login", json=body, timeout=10).status_code
                 for i in range(4)]
        assert codes == [401, 401, 401, 429]
    finally:
        for instance in started:
            instance.stop()


def test_a_key_rotation_reaches_every_instance(instances, database_url, tmp_path):
    a, b = instances
    _register(a.url)
    before = {k["kid"] for k in requests.get(f"{b.url}/.well-known/jwks.json", timeout=10).json()["keys"]}
    env = {**_settings(database_url, "", tmp_path / "cli"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([str(Path(sys.executable).with_name("authsvc")), "keys", "rotate"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # Instances cache keys briefly (SIGNING_KEY_CACHE_SECONDS); a token under an unknown kid reloads at once.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        pair = _login(a.url)
        kid = jwt.get_unverified_header(pair["access_token"])["kid"]
        if kid not in before:
            break
        time.sleep(1)
    assert kid not in before, "A never signed with the rotated key"
    assert requests.get(f"{b.url}/api/v1/users/me", headers=_bearer(pair), timeout=10).status_code == 200


def test_google_sign_in_state_survives_landing_on_another_instance(database_url, redis_url, tmp_path,
                                                                   oidc_provider):
    a, b = (Gunicorn({}, workers=1) for _ in range(2))
    client_id, secret = oidc_provider.register_client([f"{a.url}/auth/google/callback"])
    google = {"PUBLIC_BASE_URL": a.url, "GOOGLE_CLIENT_ID": client_id, "GOOGLE_CLIENT_SECRET": secret,
              "GOOGLE_DISCOVERY_URL": oidc_provider.discovery_url}
    try:
        for instance, name in ((a, "a"), (b, "b")):
            instance.settings = _settings(database_url, redis_url, tmp_path / name, **google)
            instance.start()
        browser = requests.Session()
        start = browser.get(f"{a.url}/auth/google/login", allow_redirects=False, timeout=10)
        assert start.status_code == 302
        callback = oidc_provider.authorize(start.headers["Location"], "roaming@example.com")
        # The load balancer sends the callback to B: the state, nonce and PKCE verifier travel in the signed cookie.
        landed = browser.get(callback.replace(a.url, b.url), allow_redirects=False, timeout=10)
        assert landed.status_code == 302, landed.text
        assert "access_token_cookie" in landed.cookies
    finally:
        a.stop()
        b.stop()
