"""The test OpenID provider itself (tests/oidc, tests/oidcserver.py): discovery, real signed ID tokens, the
id_token_ttl client metadata, consent denial and single-use codes."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import jwt
import requests

from .oidcserver import pkce_pair, sub_for

CALLBACK = "http://127.0.0.1:9/callback"  # never contacted: the flow stops at the redirect


def _verify(oidc_provider, token: str, client_id: str, **options) -> dict:
    """The token's claims, checked against the provider's JWKS, issuer and the client as audience."""
    key = jwt.PyJWKClient(oidc_provider.metadata["jwks_uri"]).get_signing_key_from_jwt(token)
    return jwt.decode(token, key, algorithms=["RS256"], audience=client_id, issuer=oidc_provider.issuer,
                      **options)


def test_discovery_document(oidc_provider):
    doc = requests.get(oidc_provider.discovery_url, timeout=10).json()
    assert doc["issuer"] == oidc_provider.issuer
    assert oidc_provider.issuer.startswith("http://127.0.0.1:")
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert {"openid", "email", "profile"} <= set(doc["scopes_supported"])
    assert doc["registration_endpoint"] == f"{oidc_provider.issuer}/reg"


def test_id_token_is_signed_by_the_provider_and_carries_the_submitted_claims(oidc_provider):
    client_id, secret = oidc_provider.register_client([CALLBACK])
    token = oidc_provider.id_token(client_id, secret, "Ann@Example.com", name="Ann", nonce="n-123")
    claims = _verify(oidc_provider, token, client_id)
    assert claims["iss"] == oidc_provider.issuer and claims["aud"] == client_id
    assert claims["email"] == "Ann@Example.com" and claims["email_verified"] is True
    assert claims["name"] == "Ann" and claims["nonce"] == "n-123"
    assert claims["sub"] == sub_for("ann@example.com")
    # The same email gets the same sub again; unverified and an explicit sub come through as submitted.
    token = oidc_provider.id_token(client_id, secret, "Ann@Example.com", email_verified=False)
    again = _verify(oidc_provider, token, client_id)
    assert again["sub"] == claims["sub"] and again["email_verified"] is False and "name" not in again
    token = oidc_provider.id_token(client_id, secret, "ann@example.com", sub="sub-42")
    other = _verify(oidc_provider, token, client_id)
    assert other["sub"] == "sub-42"


def test_client_secret_post_and_id_token_ttl(oidc_provider):
    client_id, secret = oidc_provider.register_client([CALLBACK], id_token_ttl=1,
                                                      token_endpoint_auth_method="client_secret_post")
    token = oidc_provider.id_token(client_id, secret, "ttl@example.com")
    claims = _verify(oidc_provider, token, client_id, leeway=60)  # may have expired by now: that is the point
    assert claims["exp"] - claims["iat"] == 1


def test_consent_denied_redirects_with_access_denied(oidc_provider):
    client_id, _secret = oidc_provider.register_client([CALLBACK])
    _verifier, challenge = pkce_pair()
    url = oidc_provider.authorization_url(client_id, CALLBACK, state="st-1", code_challenge=challenge)
    callback = oidc_provider.authorize(url, "deny@example.com", consent=False)
    assert callback.startswith(CALLBACK + "?")
    query = parse_qs(urlsplit(callback).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["st-1"] and "code" not in query


def test_a_code_is_redeemed_once(oidc_provider):
    client_id, secret = oidc_provider.register_client([CALLBACK])
    code, verifier = oidc_provider.code(client_id, "replay@example.com")
    first = oidc_provider.redeem(client_id, secret, code, verifier)
    assert first.status_code == 200 and first.json()["id_token"]
    replay = oidc_provider.redeem(client_id, secret, code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
