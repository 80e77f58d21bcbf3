"""The OAuth2 endpoints: token (password and refresh_token grants) and revocation, in RFC form."""
import pytest

from .conftest import PASSWORD

TOKEN = "/api/v1/auth/token"
REVOKE = "/api/v1/auth/revoke"
ME = "/api/v1/users/me"


def test_password_grant(auth, client):
    auth.register()
    response = client.post(TOKEN, data={"grant_type": "password", "username": "user@example.com",
                                         "password": PASSWORD})
    assert response.status_code == 200
    assert response.json["token_type"] == "bearer"
    assert response.headers["Cache-Control"] == "no-store"
    assert client.get(ME, headers=auth.bearer(response.json)).status_code == 200


def test_refresh_grant(auth, client):
    pair = auth.signed_in()
    response = client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]})
    assert response.status_code == 200
    assert response.json["refresh_token"] != pair["refresh_token"]


@pytest.mark.parametrize("form, error", [
    ({"grant_type": "password", "username": "user@example.com", "password": "wrong password 1"}, "invalid_grant"),
    ({"grant_type": "password", "username": "nobody@example.com", "password": PASSWORD}, "invalid_grant"),
    ({"grant_type": "password", "username": "not an email", "password": PASSWORD}, "invalid_grant"),
    ({"grant_type": "password", "username": "user@example.com"}, "invalid_request"),
    ({"grant_type": "refresh_token", "refresh_token": "bogus"}, "invalid_grant"),
    ({"grant_type": "refresh_token"}, "invalid_request"),
    ({"grant_type": "authorization_code", "code": "x"}, "unsupported_grant_type"),
    ({}, "invalid_request"),
])
def test_token_errors_are_rfc6749(auth, client, form, error):
    auth.register()
    response = client.post(TOKEN, data=form)
    assert response.status_code == 400
    assert response.json["error"] == error
    assert isinstance(response.json["error_description"], str)


def test_token_endpoint_wants_a_form(client):
    response = client.post(TOKEN, json={"grant_type": "password"})
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"


def test_revoke_refresh_token_ends_the_session(auth, client):
    pair = auth.signed_in()
    assert client.post(REVOKE, data={"token": pair["refresh_token"]}).status_code == 200
    assert auth.refresh(pair["refresh_token"]).status_code == 401
    assert client.get(ME, headers=auth.bearer(pair)).status_code == 401


def test_revoke_access_token_only_that_token(auth, client):
    pair = auth.signed_in()
    response = client.post(REVOKE, data={"token": pair["access_token"], "token_type_hint": "access_token"})
    assert response.status_code == 200
    assert client.get(ME, headers=auth.bearer(pair)).json["error"]["code"] == "token_revoked"
    fresh = auth.refresh(pair["refresh_token"]).json
    assert client.get(ME, headers=auth.bearer(fresh)).status_code == 200


@pytest.mark.parametrize("hint", ["access_token", "refresh_token", "something_else"])
def test_revoke_finds_the_token_whatever_the_hint(auth, client, hint):
    # RFC 7009 §2.1: the hint orders the search; it never limits it.
    pair = auth.signed_in()
    assert client.post(REVOKE, data={"token": pair["refresh_token"], "token_type_hint": hint}).status_code == 200
    assert auth.refresh(pair["refresh_token"]).status_code == 401
    other = auth.signed_in()
    wrong = "refresh_token" if hint == "access_token" else "access_token"
    assert client.post(REVOKE, data={"token": other["access_token"], "token_type_hint": wrong}).status_code == 200
    assert client.get(ME, headers=auth.bearer(other)).json["error"]["code"] == "token_revoked"


@pytest.mark.parametrize("grant", ["password", "refresh_token"])
def test_a_client_that_authenticates_must_succeed_on_every_grant(auth, client, grant):
    pair = auth.signed_in()
    form = ({"grant_type": "password", "username": "user@example.com", "password": PASSWORD} if grant == "password"
            else {"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]})
    refused = client.post(TOKEN, data=form, headers={"Authorization": "Basic bm9zdWNoOmJhZA=="})  # nosuch:bad
    assert refused.status_code == 401 and refused.json["error"] == "invalid_client"
    refused = client.post(TOKEN, data={**form, "client_id": "nosuch", "client_secret": "bad"})
    assert refused.status_code == 401 and refused.json["error"] == "invalid_client"
    # A public client only naming itself, or empty Basic credentials (Swagger UI's), is not authenticating.
    assert client.post(TOKEN, data={**form, "client_id": "my-spa"}).status_code == 200
    if grant == "password":
        assert client.post(TOKEN, data=form, headers={"Authorization": "Basic Og=="}).status_code == 200


@pytest.mark.parametrize("token", ["unknown", "a.b.c", "x" * 300])
def test_revoking_an_unknown_token_is_fine(client, token):
    assert client.post(REVOKE, data={"token": token}).status_code == 200


def test_revoke_needs_a_token(client):
    response = client.post(REVOKE, data={})
    assert response.status_code == 400
    assert response.json["error"] == "invalid_request"


@pytest.mark.settings(RATELIMIT_ENABLED=True, RATELIMIT_TOKEN="2/minute")
def test_every_error_of_the_oauth_endpoints_is_rfc6749_shaped(client):
    # The contract: the envelope everywhere except the OAuth2 endpoints, which answer in RFC 6749 §5.2 form.
    for path in (TOKEN, REVOKE, "/api/v1/auth/introspect"):
        wrong_method = client.get(path)
        assert wrong_method.status_code == 405 and wrong_method.json["error"] == "method_not_allowed"
        too_large = client.post(path, data={"token": "x" * 70000})  # the token endpoint's first of two
        assert too_large.status_code == 413 and too_large.json["error"] == "payload_too_large"
        assert too_large.headers["Cache-Control"] == "no-store"
    client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": "bogus"})
    limited = client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": "bogus"})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert limited.json["error"] == "rate_limited" and isinstance(limited.json["error_description"], str)


@pytest.mark.settings(RATELIMIT_ENABLED=True, RATELIMIT_TOKEN="2/minute", LOGIN_BLOCK_AFTER=1)
def test_the_sign_in_block_and_the_documented_errors_are_rfc6749_shaped(auth, client):
    # Errors raised around the views came in the JSON API's envelope, which OAuth2 clients (Swagger UI's Authorize
    # among them) cannot read; the OpenAPI document said so too.
    auth.register()
    wrong = {"grant_type": "password", "username": "user@example.com", "password": "wrong password 1"}
    assert client.post(TOKEN, data=wrong).json["error"] == "invalid_grant"
    blocked = client.post(TOKEN, data={**wrong, "password": PASSWORD})  # the block, before the rate limit
    assert (blocked.status_code, blocked.json["error"]) == (429, "rate_limited") and blocked.headers["Retry-After"]
    assert isinstance(blocked.json["error_description"], str)
    spec = client.get("/api/v1/openapi.json").json["paths"]
    for path, status in (("/api/v1/auth/token", "429"), ("/api/v1/auth/revoke", "413"),
                         ("/api/v1/auth/introspect", "403")):
        schema = spec[path]["post"]["responses"][status]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/OAuthError"), (path, status, schema)
