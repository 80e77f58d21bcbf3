"""POST /api/v1/auth/login and password sign-in rules."""
import threading

import jwt
import pytest
from sqlalchemy import event

from authsvc.extensions import db
from authsvc.models import User
from authsvc.services import passwords

from .conftest import PASSWORD


def test_login_returns_token_pair(auth):
    auth.register()
    response = auth.login()
    assert response.status_code == 200
    pair = response.json
    assert set(pair) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert pair["token_type"] == "bearer" and pair["expires_in"] == 30 * 60
    assert response.headers["Cache-Control"] == "no-store"


def test_a_sign_in_reads_the_account_twice_with_its_roles_joined(app, auth):
    # The hot path: the lookup, then the re-read under the lock (accounts._hash_still_current), each one statement.
    auth.register()
    mine, reads = threading.get_ident(), []

    def seen(conn, cursor, statement, *args):
        if threading.get_ident() == mine and statement.lstrip().startswith("SELECT") and "roles" in statement:
            reads.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert auth.login().status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(reads) == 2 and all("FROM users" in read for read in reads), reads


def test_login_email_is_case_insensitive(auth):
    auth.register("Mixed@Example.com")
    assert auth.login("mixed@EXAMPLE.com").status_code == 200


@pytest.mark.parametrize("email, password", [
    ("user@example.com", "wrong password 1"),
    ("nobody@example.com", PASSWORD),
    ("user@example.com", "x" * 1000),  # longer than any allowed password: refused without hashing
])
def test_bad_credentials_are_indistinguishable(auth, email, password):
    auth.register()
    response = auth.login(email, password)
    assert response.status_code == 401
    assert response.json == {"error": {"code": "invalid_credentials",
                                       "message": "The email or password is incorrect."}}


def test_unknown_email_spends_the_same_hashing_work(app, auth, monkeypatch):
    """A login for an unknown address runs one Argon2 verification, as a real account would."""
    auth.register()
    with app.app_context():
        hasher = passwords.hasher()
    calls = []
    real = hasher.argon2

    class Spy:
        def verify(self, stored, password):
            calls.append(stored)
            return real.verify(stored, password)

        def __getattr__(self, name):
            return getattr(real, name)

    monkeypatch.setattr(hasher, "argon2", Spy())
    auth.login("nobody@example.com", PASSWORD)
    auth.login("user@example.com", "wrong password 1")
    assert len(calls) == 2
    assert calls[0] == hasher.dummy_hash and calls[1] != hasher.dummy_hash


@pytest.mark.parametrize("body", [{}, {"email": "user@example.com"}, {"password": PASSWORD},
                                  {"email": ["x"], "password": PASSWORD}])
def test_login_validation(client, body):
    response = client.post("/api/v1/auth/login", json=body)
    assert response.status_code == 422
    assert response.json["error"]["code"] == "validation_error"


def test_disabled_account_is_refused_only_after_the_password(app, auth):
    auth.register()
    with app.app_context():
        db.session.query(User).update({"is_active": False})
        db.session.commit()
    assert auth.login(password="wrong password 1").json["error"]["code"] == "invalid_credentials"
    response = auth.login()
    assert response.status_code == 403
    assert response.json["error"]["code"] == "account_disabled"


@pytest.mark.settings(REQUIRE_VERIFIED_EMAIL=True)
def test_unverified_email_refused_when_required(app, auth):
    auth.register()
    response = auth.login()
    assert response.status_code == 403
    assert response.json["error"]["code"] == "email_not_verified"
    with app.app_context():
        db.session.query(User).update({"email_verified": True})
        db.session.commit()
    assert auth.login().status_code == 200


def test_social_only_account_cannot_sign_in_with_a_password(app, auth):
    auth.register()
    with app.app_context():
        db.session.query(User).update({"password_hash": None})
        db.session.commit()
    assert auth.login().json["error"]["code"] == "invalid_credentials"


def test_session_records_client(auth, client):
    auth.register()
    pair = auth.login(headers={"User-Agent": "pytest-agent/1"}).json
    sessions = client.get("/api/v1/auth/sessions", headers=auth.bearer(pair)).json
    assert sessions[0]["user_agent"] == "pytest-agent/1"
    assert sessions[0]["ip_address"] == "127.0.0.1"
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["sid"] == sessions[0]["id"]


@pytest.mark.settings(PASSWORD_MAX_LENGTH=64)
def test_a_password_of_the_maximum_length_signs_in(auth):
    """The longest password registration accepts is not refused at sign-in as too long to hash."""
    longest = "a long passphrase, " + "y" * 45
    assert len(longest) == 64 and auth.register(password=longest).status_code == 201
    assert auth.login(password=longest).status_code == 200
    assert auth.login(password=longest + "z").json["error"]["code"] == "invalid_credentials"
