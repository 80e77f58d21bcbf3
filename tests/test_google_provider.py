"""Google sign-in against a misbehaving provider: whatever it answers, the page and the API say 503 or 401,
never 500, and a bad discovery document is not kept once the provider recovers."""
from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from .conftest import dispose, make_app
from .fakeprovider import FakeProvider

# Well-formed as a JWT, signed by nobody: it never gets as far as its signature.
ID_TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.eyJzdWIiOiJ4In0.c2ln"


@pytest.fixture
def provider():
    """A provider on 127.0.0.1 that answers what each test sets."""
    fake = FakeProvider()
    yield fake
    fake.stop()


@pytest.fixture
def app(provider, database_url, tmp_path):
    """An app with Google sign-in pointed at the fake provider."""
    app = make_app(database_url, tmp_path / "instance", GOOGLE_CLIENT_ID="cid", GOOGLE_CLIENT_SECRET="s",
                   GOOGLE_DISCOVERY_URL=f"{provider.base}/.well-known/openid-configuration", GOOGLE_TIMEOUT_SECONDS=2)
    yield app
    dispose(app)


def _callback(client, query="&code=some-code"):
    start = client.get("/auth/google/login")
    assert start.status_code == 302
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    return client.get(f"/auth/google/callback?state={state}{query}")


@pytest.mark.sqlite_only
@pytest.mark.parametrize("token_body, jwks", [
    pytest.param("<html>Service Unavailable</html>", {"keys": []}, id="token-endpoint-200-html"),
    pytest.param("[]", {"keys": []}, id="token-endpoint-json-list"),
    pytest.param(json.dumps({"access_token": "a", "token_type": "bearer", "id_token": ID_TOKEN}), [],
                 id="jwks-json-list"),
])
def test_a_malformed_answer_at_the_callback_is_not_a_500(provider, app, token_body, jwks):
    provider.good_discovery()
    provider.set("/token", token_body)
    provider.set("/jwks", jwks)
    assert _callback(app.test_client()).status_code in (401, 503)


@pytest.mark.sqlite_only
@pytest.mark.parametrize("query, status", [("", 400), ("&error=server_error", 400), ("&error=access_denied", 403)],
                         ids=["no-code", "provider-error", "cancelled"])
def test_a_callback_without_a_code_is_a_page_not_a_500(provider, app, query, status):
    # Its own state, so it gets as far as redeeming the code: Authlib raises MissingCodeException for none at all.
    provider.good_discovery()
    provider.set("/jwks", {"keys": []})
    response = _callback(app.test_client(), query)
    assert response.status_code == status and response.mimetype == "text/html"


@pytest.mark.sqlite_only
@pytest.mark.parametrize("discovery", [{}, {"issuer": "x"}, []], ids=["empty", "no-endpoints", "json-list"])
def test_a_malformed_discovery_document_is_503_and_not_kept(provider, app, discovery):
    provider.set("/.well-known/openid-configuration", discovery)
    client = app.test_client()
    api = client.post("/api/v1/auth/google", json={"id_token": ID_TOKEN})
    assert api.status_code == 503 and api.json["error"]["code"] == "unavailable"
    assert client.get("/auth/google/login").status_code == 503
    provider.good_discovery()  # the provider recovers: sign-in works again without a restart
    assert client.get("/auth/google/login").status_code == 302
