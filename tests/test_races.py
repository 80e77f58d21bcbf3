"""Races on PostgreSQL: a second connection holds (or is about to commit) a conflicting change while a request
runs; the request must still answer as the contract says, never a 500, and lose nothing."""
from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import bcrypt
import pytest
from flask_jwt_extended import decode_token
from sqlalchemy import text

from authsvc.extensions import db
from authsvc.models import LoginFailure, utcnow
from authsvc.services import onetime, passwords

from .conftest import PASSWORD

pytestmark = pytest.mark.postgres_only
NEW = "brand new passphrase 9"


def _in_background(call):
    """Run `call` in a thread; (thread, box) where box["result"] is its return value once joined."""
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", call()))
    thread.start()
    return thread, box


def _while_held(app, sql: str, params: dict, request, release=("commit",)):
    """Run `sql` on a second connection without committing, start `request` (a callable) meanwhile, then commit
    the second connection after a moment; the request's response."""
    with app.app_context():
        other = db.engine.connect()
        other.execute(text(sql), params)
        thread, box = _in_background(request)
        time.sleep(0.5)  # the request is now waiting on the held row
        for step in release:
            if step == "commit":
                other.commit()
            else:
                other.execute(text(step))
        other.close()
        thread.join(30)
    return box["result"]


def test_two_revocations_of_one_access_token_at_once(app, auth):
    pair = auth.signed_in()
    with app.app_context():
        jti = decode_token(pair["access_token"])["jti"]
    response = _while_held(
        app, "INSERT INTO revoked_tokens (jti, expires_at) VALUES (:jti, now() + interval '1 hour')", {"jti": jti},
        lambda: app.test_client().post("/api/v1/auth/revoke", data={"token": pair["access_token"]}))
    assert response.status_code == 200


def test_a_failed_sign_in_while_its_counter_row_is_being_deleted(app, auth):
    auth.register()
    with app.app_context():
        db.session.add(LoginFailure(email="user@example.com", ip_address="127.0.0.1", failures=3,
                                    last_failure_at=utcnow() - timedelta(hours=2)))
        db.session.commit()
    # What the cleanup does: lock the stale row, delete it, commit; the failure arrives in between.
    response = _while_held(
        app, "SELECT email FROM login_failures FOR UPDATE", {},
        lambda: app.test_client().post("/api/v1/auth/login",
                                       json={"email": "user@example.com", "password": "wrong password 123"}),
        release=("DELETE FROM login_failures", "commit"))
    assert response.status_code == 401 and response.json["error"]["code"] == "invalid_credentials"
    with app.app_context():
        assert db.session.get(LoginFailure, ("user@example.com", "127.0.0.1")).failures == 1  # counted afresh


_TAKE_ADDRESS = ("INSERT INTO users (id, email, full_name, email_verified, is_active, tier, created_at, updated_at)"
                 " VALUES (:id, :email, '', false, true, 'free', now(), now())")


def test_an_admin_moving_an_account_to_an_address_registered_meanwhile(app, auth, admin):
    user_id = auth.register("mover@example.com").json["id"]
    response = _while_held(
        app, _TAKE_ADDRESS, {"id": uuid.uuid4(), "email": "taken@example.com"},
        lambda: app.test_client().patch(f"/api/v1/admin/users/{user_id}", headers=admin,
                                        json={"email": "taken@example.com"}))
    assert response.status_code == 409 and response.json["error"]["code"] == "email_taken"


def test_confirming_a_change_to_an_address_registered_meanwhile(app, auth):
    user_id = auth.register("mover@example.com").json["id"]
    with app.app_context():
        token = onetime.issue(onetime.EMAIL_CHANGE, timedelta(hours=1), "new@example.com", uuid.UUID(user_id),
                              {"new_email": "new@example.com"})
        db.session.commit()
    response = _while_held(
        app, _TAKE_ADDRESS, {"id": uuid.uuid4(), "email": "new@example.com"},
        lambda: app.test_client().post("/api/v1/auth/verify-email", json={"token": token}))
    assert response.status_code == 409 and response.json["error"]["code"] == "email_taken"
    assert auth.login("mover@example.com").status_code == 200  # nothing changed


def test_a_sign_in_racing_a_password_change_neither_undoes_nor_outlives_it(app, auth, client, monkeypatch):
    pair = auth.signed_in()
    with app.app_context():  # a legacy hash: a successful sign-in upgrades it (a write of the old password)
        db.session.execute(text("UPDATE users SET password_hash = :h"),
                           {"h": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()})
        db.session.commit()
    checked, resume = threading.Event(), threading.Event()
    real = passwords.Hasher._verify_bcrypt
    signing_in = {}

    def held(self, stored, password):
        result = real(self, stored, password)
        if threading.current_thread() is signing_in.get("thread"):
            checked.set()  # the old password matched; the change now commits before this sign-in goes on
            resume.wait(30)
        return result

    monkeypatch.setattr(passwords.Hasher, "_verify_bcrypt", held)
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", app.test_client().post(
        "/api/v1/auth/login", json={"email": "user@example.com", "password": PASSWORD})))
    signing_in["thread"] = thread
    thread.start()
    assert checked.wait(30)
    changed = client.post("/api/v1/users/me/password", headers=auth.bearer(pair),
                          json={"current_password": PASSWORD, "new_password": NEW})
    assert changed.status_code == 204
    resume.set()
    thread.join(30)
    late = box["result"]
    assert late.status_code == 401 and late.json["error"]["code"] == "invalid_credentials"
    monkeypatch.undo()
    assert auth.login(password=NEW).status_code == 200
    assert auth.login(password=PASSWORD).status_code == 401


@pytest.mark.settings(LOGIN_BLOCK_AFTER=3)
def test_guesses_in_flight_at_once_from_a_failing_source_are_counted_one_by_one(app, auth, monkeypatch):
    auth.register()
    wrong = {"email": "user@example.com", "password": "a wrong guess 0"}
    assert app.test_client().post("/api/v1/auth/login", json=wrong).status_code == 401  # a failure on record
    real = passwords.Hasher.verify

    def slow(self, stored, password):
        time.sleep(0.2)  # Argon2 takes tens of milliseconds with the real parameters; the suite's take none
        return real(self, stored, password)

    monkeypatch.setattr(passwords.Hasher, "verify", slow)
    guesses = 8
    start, codes = threading.Barrier(guesses), []

    def guess(i):
        client = app.test_client()
        start.wait()
        codes.append(client.post("/api/v1/auth/login", json={**wrong, "password": f"a wrong guess {i}"}).status_code)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(1, guesses + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Two more failures reach the block of three; every guess after them is refused before hashing.
    assert sorted(codes) == [401, 401] + [429] * (guesses - 2)
