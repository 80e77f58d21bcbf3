"""Access tokens: claims, signing keys and JWKS, and the forgeries that must be refused."""
import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .conftest import signed_with_our_key

ME = "/api/v1/users/me"


def _jwks_key(client, kid):
    keys = client.get("/.well-known/jwks.json").json["keys"]
    return jwt.PyJWK(next(k for k in keys if k["kid"] == kid)).key


def test_access_token_claims(auth, client):
    pair = auth.signed_in()
    header = jwt.get_unverified_header(pair["access_token"])
    assert header["alg"] == "RS256" and header["kid"]
    claims = jwt.decode(pair["access_token"], _jwks_key(client, header["kid"]), algorithms=["RS256"],
                        audience="authsvc", issuer="http://localhost")
    me = client.get(ME, headers=auth.bearer(pair)).json
    assert claims["sub"] == me["id"] and claims["type"] == "access"
    assert claims["email"] == me["email"] and claims["email_verified"] is False
    assert claims["roles"] == [] and claims["tier"] == "free"
    assert uuid.UUID(claims["sid"]) and claims["jti"]
    assert claims["exp"] - claims["iat"] == 30 * 60


@pytest.mark.settings(JWT_ALGORITHM="EdDSA")
def test_eddsa_tokens(auth, client):
    pair = auth.signed_in()
    header = jwt.get_unverified_header(pair["access_token"])
    assert header["alg"] == "EdDSA"
    jwt.decode(pair["access_token"], _jwks_key(client, header["kid"]), algorithms=["EdDSA"], audience="authsvc")
    assert client.get(ME, headers=auth.bearer(pair)).status_code == 200


@pytest.fixture
def pem_file(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "jwt.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path, key


def test_private_key_file_overrides_the_active_key(database_url, tmp_path, pem_file):
    from .conftest import dispose, make_app

    path, key = pem_file
    app = make_app(database_url, tmp_path / "inst", JWT_PRIVATE_KEY_FILE=str(path))
    try:
        client = app.test_client()
        client.post("/api/v1/auth/register", json={"email": "k@example.com", "password": "a fine passphrase 7"})
        token = client.post("/api/v1/auth/login",
                            json={"email": "k@example.com", "password": "a fine passphrase 7"}).json["access_token"]
        jwt.decode(token, key.public_key(), algorithms=["RS256"], audience="authsvc")
        kid = jwt.get_unverified_header(token)["kid"]
        assert kid in [k["kid"] for k in client.get("/.well-known/jwks.json").json["keys"]]
        assert client.get(ME, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        dispose(app)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(pair, **changes):
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _forge_none(pair, client):
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(pair))}."


def _forge_hs256_with_public_key(pair, client):
    kid = jwt.get_unverified_header(pair["access_token"])["kid"]
    public = _jwks_key(client, kid).public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    # PyJWT refuses to HMAC with a PEM key, which is exactly the attack: sign by hand.
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{_b64(_claims(pair))}"
    sig = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


def _forge_foreign_key(pair, client):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = jwt.get_unverified_header(pair["access_token"])["kid"]
    return jwt.encode(_claims(pair), key, algorithm="RS256", headers={"kid": kid})


def _tampered_payload(pair, client):
    head, _, sig = pair["access_token"].split(".")
    return f"{head}.{_b64(_claims(pair, roles=['admin']))}.{sig}"


@pytest.mark.parametrize("forge", [_forge_none, _forge_hs256_with_public_key, _forge_foreign_key,
                                   _tampered_payload])
def test_forged_tokens_are_refused(auth, client, forge):
    pair = auth.signed_in()
    response = client.get(ME, headers=auth.bearer(forge(pair, client)))
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "aud", "jti", "sub"])
def test_tokens_missing_a_required_claim_are_refused(app, auth, client, claim):
    """Signed with our own key, but without a claim we insist on."""
    token = signed_with_our_key(app, auth.signed_in(), **{claim: None})
    assert client.get(ME, headers=auth.bearer(token)).status_code == 401


@pytest.mark.parametrize("changes", [{"aud": "someone-else"}, {"iss": "https://evil.example"},
                                     {"exp": int(time.time()) - 10}])
def test_wrong_audience_issuer_or_expired(app, auth, client, changes):
    token = signed_with_our_key(app, auth.signed_in(), **changes)
    response = client.get(ME, headers=auth.bearer(token))
    assert response.status_code == 401
    expected = "token_expired" if "exp" in changes else "unauthorized"
    assert response.json["error"]["code"] == expected


def test_deactivated_users_tokens_stop_working(app, auth, client):
    from authsvc.extensions import db
    from authsvc.models import User

    pair = auth.signed_in()
    with app.app_context():
        db.session.query(User).update({"is_active": False})
        db.session.commit()
    assert client.get(ME, headers=auth.bearer(pair)).json["error"]["code"] == "token_revoked"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_scheme_is_case_insensitive_and_refusals_say_why_in_any_case(auth, client, scheme):
    pair = auth.signed_in()
    header = {"Authorization": f"{scheme} {pair['access_token']}"}
    assert client.get("/api/v1/users/me", headers=header).status_code == 200
    client.post("/api/v1/auth/logout", headers=auth.bearer(pair))
    refused = client.get("/api/v1/users/me", headers=header)
    assert refused.status_code == 401 and refused.json["error"]["code"] == "token_revoked"


@pytest.mark.parametrize("scheme", ["Basic dXNlcjpwYXNz", "Token abc"])
def test_a_non_ascii_csrf_header_beside_another_auth_scheme_is_403_never_500(auth, client, scheme):
    from .test_pages import sign_in_page

    auth.register()
    sign_in_page(client)  # the cookie is what Flask-JWT-Extended falls back to
    response = client.post("/api/v1/auth/logout", headers={"Authorization": scheme, "X-CSRF-Token": "été"})
    assert response.status_code == 403 and response.json["error"]["code"] == "forbidden"
    assert client.get("/api/v1/auth/verify").status_code == 200  # still signed in


@pytest.mark.settings(JWT_ALGORITHM="EdDSA")
@pytest.mark.parametrize("path", [ME, "/api/v1/auth/sessions", "/api/v1/admin/users"])
def test_a_token_naming_a_key_of_another_algorithm_is_401_never_500(auth, client, path):
    # The RSA key published before JWT_ALGORITHM changed stays in the ring; a token signed by nobody names it.
    pair = auth.signed_in()
    rsa_kid = next(k["kid"] for k in client.get("/.well-known/jwks.json").json["keys"] if k["kty"] == "RSA")
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    forged = f"{_b64({'alg': 'EdDSA', 'typ': 'JWT', 'kid': rsa_kid})}.{_b64(claims)}.AAAA"
    response = client.get(path, headers=auth.bearer(forged))
    assert response.status_code == 401 and response.json["error"]["code"] == "unauthorized"


def test_tokens_carrying_a_changed_address_stop_at_once(auth, client, outbox):
    # Gateways pass the token's address on (X-User-Email); once the change is confirmed, the old one is free.
    from .test_email_flows import _mail_to, _token

    pair = auth.signed_in()
    outbox.clear()
    client.patch(ME, json={"email": "moved@example.com"}, headers=auth.bearer(pair))
    token = _token(_mail_to(outbox, "moved@example.com", "Confirm"), "/confirm-email-change")
    assert client.post("/api/v1/auth/verify-email", json={"token": token}).status_code == 200
    assert client.get("/api/v1/auth/verify", headers=auth.bearer(pair)).status_code == 401
    fresh = auth.refresh(pair["refresh_token"])  # the session lives on: its next token has the new address
    assert fresh.status_code == 200
    verify = client.get("/api/v1/auth/verify", headers=auth.bearer(fresh.json))
    assert verify.headers["X-User-Email"] == "moved@example.com"


@pytest.mark.parametrize("path, changes, code", [
    (ME, {"type": "refresh"}, "unauthorized"), ("/api/v1/auth/verify", {"type": "refresh"}, "unauthorized"),
    (ME, {"sid": "not-a-uuid"}, "token_revoked"), ("/api/v1/auth/verify", {"sid": "not-a-uuid"}, "unauthorized"),
    (ME, {"sid": 12345}, "token_revoked"), ("/api/v1/auth/verify", {"sid": 12345}, "unauthorized"),
    (ME, {"sub": ["a", "list"]}, "unauthorized"), ("/api/v1/auth/verify", {"sub": 7}, "unauthorized"),
])
def test_our_signature_on_claims_we_never_issue_is_refused(app, auth, client, path, changes, code):
    """Signed with our own key, yet not a user's access token of a live session (another type, a malformed sid)."""
    response = client.get(path, headers=auth.bearer(signed_with_our_key(app, auth.signed_in(), **changes)))
    assert response.status_code == 401 and response.json["error"]["code"] == code


@pytest.mark.settings(SIGNING_KEY_CACHE_SECONDS=3600)
def test_a_key_published_since_the_ring_was_loaded_is_found_by_reloading(app, auth, client):
    """A `kid` this process has not seen makes it reload its keys (at most every few seconds) rather than refuse:
    another instance's first start may have published a key of its own meanwhile."""
    from authsvc.extensions import db
    from authsvc.models import utcnow
    from authsvc.services import keys

    pair = auth.signed_in()
    with app.app_context():
        key = keys.new_signing_key("RS256")
        key.created_at = utcnow()
        db.session.add(key)
        db.session.commit()
        private = serialization.load_pem_private_key(keys._fernet().decrypt(key.private_key), None)
    app.extensions["authsvc.keys"]["ring"].loaded_at -= keys.UNKNOWN_KID_RELOAD_SECONDS + 1  # not loaded just now
    token = jwt.encode(_claims(pair), private, algorithm="RS256", headers={"kid": key.kid})
    assert client.get("/api/v1/auth/verify", headers=auth.bearer(token)).status_code == 200  # one verification
