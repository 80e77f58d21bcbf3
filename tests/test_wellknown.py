"""Health, readiness, JWKS and discovery."""
import re

import jwt
from sqlalchemy import text

from authsvc.extensions import db

from .conftest import dispose, make_app


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


def test_readyz(client):
    assert client.get("/readyz").status_code == 200


def test_readyz_and_api_when_the_database_is_down(tmp_path):
    app = make_app("postgresql://postgres@127.0.0.1:1/nothing", tmp_path, DB_CONNECT_TIMEOUT=1, MAIL_WORKER=False)
    try:
        client = app.test_client()
        assert client.get("/healthz").status_code == 200  # liveness does not depend on the database
        assert client.get("/readyz").status_code == 503
        response = client.post("/api/v1/auth/login", json={"email": "a@example.com", "password": "whatever 123"})
        assert response.status_code == 503 and response.json["error"]["code"] == "unavailable"
    finally:
        dispose(app)


def test_jwks_verifies_access_tokens(auth, client):
    token = auth.signed_in()["access_token"]
    jwks = client.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    header = jwt.get_unverified_header(token)
    key = next(k for k in jwks.json["keys"] if k["kid"] == header["kid"])
    assert set(key) >= {"kty", "kid", "alg", "use", "n", "e"} and "d" not in key
    claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["RS256"], audience="authsvc",
                        issuer="http://localhost")
    assert claims["type"] == "access"


def test_openid_configuration(client):
    doc = client.get("/.well-known/openid-configuration").json
    assert doc["issuer"] == "http://localhost"
    assert doc["jwks_uri"] == "http://localhost/.well-known/jwks.json"
    assert doc["token_endpoint"] == "http://localhost/api/v1/auth/token"
    assert doc["revocation_endpoint"] == "http://localhost/api/v1/auth/revoke"


def test_readyz_names_the_schema_and_refuses_an_old_one(app, client):
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["schema"]
    with app.app_context():
        db.session.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        db.session.commit()
    stale = client.get("/readyz")
    assert stale.status_code == 503 and stale.json["schema"] == ["0001"]
    assert stale.json["expected"] == ready.json["schema"]


def test_the_jwks_is_not_cached_longer_than_a_new_key_waits_to_sign(app, client):
    # `keys rotate` publishes the new key SIGNING_KEY_CACHE_SECONDS + 2 s before it signs: a verifier behind an
    # HTTP cache must have it by then.
    response = client.get("/.well-known/jwks.json")
    max_age = int(re.search(r"max-age=(\d+)", response.headers["Cache-Control"]).group(1))
    assert 0 < max_age <= app.config["SIGNING_KEY_CACHE_SECONDS"]
