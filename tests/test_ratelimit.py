"""Rate limits: the contract's defaults per client address, answered as 429 `rate_limited` with Retry-After."""
import pytest


@pytest.mark.settings(RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="3/minute")
def test_login_limit_per_address(client):
    body = {"email": "nobody@example.com", "password": "wrong password 1"}
    for _ in range(3):
        assert client.post("/api/v1/auth/login", json=body).status_code == 401
    response = client.post("/api/v1/auth/login", json=body)
    assert response.status_code == 429
    assert response.json["error"]["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) > 0
    other = client.post("/api/v1/auth/login", json=body, environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert other.status_code == 401


@pytest.mark.settings(RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="2/minute", TRUSTED_PROXIES=1)
def test_limits_key_on_the_forwarded_address_behind_a_trusted_proxy(client):
    body = {"email": "nobody@example.com", "password": "wrong password 1"}
    for _ in range(2):
        client.post("/api/v1/auth/login", json=body, headers={"X-Forwarded-For": "203.0.113.5"})
    assert client.post("/api/v1/auth/login", json=body,
                       headers={"X-Forwarded-For": "203.0.113.5"}).status_code == 429
    assert client.post("/api/v1/auth/login", json=body,
                       headers={"X-Forwarded-For": "203.0.113.6"}).status_code == 401


@pytest.mark.settings(RATELIMIT_ENABLED=False, RATELIMIT_LOGIN="1/minute")
def test_limits_can_be_turned_off(client):
    body = {"email": "nobody@example.com", "password": "wrong password 1"}
    assert all(client.post("/api/v1/auth/login", json=body).status_code == 401 for _ in range(3))
