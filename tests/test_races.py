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
from sqlalchemy import select, text

from authsvc.extensions import db
from authsvc.models import LoginFailure, OneTimeToken, utcnow
from authsvc.services import mail, onetime, passwords

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


def _held_in_thread(monkeypatch, name: str, request, owner=passwords.Hasher):
    """Run `request` in a thread that stops right after its first `owner.<name>` call returns (a method of the
    hasher by default); the (thread, box, resume) to drive it: `resume` lets it go on."""
    checked, resume, box, mine = threading.Event(), threading.Event(), {}, {}
    real = getattr(owner, name)

    def held(*args):
        result = real(*args)
        if threading.current_thread() is mine.get("thread") and not checked.is_set():
            checked.set()
            resume.wait(30)
        return result

    monkeypatch.setattr(owner, name, held)
    thread = threading.Thread(target=lambda: box.setdefault("result", request()))
    mine["thread"] = thread
    thread.start()
    assert checked.wait(30)
    return thread, box, resume


def _until_a_lock_is_awaited(app, *threads, within: float = 10.0) -> bool:
    """Whether a connection to this test's database comes to wait on a lock before every one of `threads` ends."""
    deadline = time.monotonic() + within
    with app.app_context(), db.engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                        "AND wait_event_type = 'Lock'")).scalar()
            conn.rollback()  # pg_stat_activity is a snapshot per transaction
            if waiting:
                return True
            if not any(thread.is_alive() for thread in threads):
                return False
            time.sleep(0.01)
    return False


def _let_go(monkeypatch, resume, *threads):
    """Let the held request go on, wait for every thread, and put the patched function back."""
    resume.set()
    for thread in threads:
        thread.join(30)
    monkeypatch.undo()


def _signed_in_with_a_reset_link(app, auth):
    """A signed-in user's token pair, and a live password reset link of theirs."""
    pair = auth.signed_in()
    with app.app_context():
        user_id = decode_token(pair["access_token"])["sub"]
        token = onetime.issue(onetime.PASSWORD_RESET, timedelta(hours=1), "user@example.com", uuid.UUID(user_id))
        db.session.commit()
    return pair, token


def test_a_password_change_racing_a_reset_does_not_undo_it(app, auth, client, monkeypatch):
    """A stolen session changing the password while the owner resets it: the change checked the current password
    before the reset committed, and must not then overwrite the owner's new password."""
    pair, token = _signed_in_with_a_reset_link(app, auth)
    thread, box, resume = _held_in_thread(monkeypatch, "verify", lambda: app.test_client().post(
        "/api/v1/users/me/password", headers=auth.bearer(pair),
        json={"current_password": PASSWORD, "new_password": "the thief's passphrase 1"}))
    reset = client.post("/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": NEW})
    assert reset.status_code == 200
    resume.set()
    thread.join(30)
    monkeypatch.undo()
    assert box["result"].status_code == 401 and box["result"].json["error"]["code"] == "invalid_credentials"
    assert auth.login(password=NEW).status_code == 200
    assert auth.login(password="the thief's passphrase 1").status_code == 401


def test_a_sign_in_racing_the_removal_of_a_role_does_not_keep_it(app, auth, client, admin, monkeypatch):
    """Taking a role away ends the user's sessions so gateways stop trusting it at once: a sign-in that read the
    roles before the removal committed must not start a session whose access token still carries it."""
    user_id = auth.register().json["id"]
    assert client.patch(f"/api/v1/admin/users/{user_id}", headers=admin, json={"roles": ["editor"]}).status_code == 200
    thread, box, resume = _held_in_thread(monkeypatch, "verify", lambda: app.test_client().post(
        "/api/v1/auth/login", json={"email": "user@example.com", "password": PASSWORD}))
    removed = client.patch(f"/api/v1/admin/users/{user_id}", headers=admin, json={"roles": []})
    assert removed.status_code == 200 and removed.json["roles"] == []
    resume.set()
    thread.join(30)
    monkeypatch.undo()
    late = box["result"]
    assert late.status_code == 200  # a role taken away does not stop a sign-in; its token must not carry it
    gate = client.get("/api/v1/auth/verify?role=editor", headers=auth.bearer(late.json))
    assert gate.status_code in (401, 403)


def test_a_sign_in_holding_its_checked_account_while_a_role_is_removed(app, auth, client, admin, monkeypatch):
    """The other order: the sign-in has checked the password (and locked the account) and is about to start its
    session when the removal ends the user's sessions; the removal must end that new session too."""
    from authsvc.services import accounts

    user_id = auth.register().json["id"]
    assert client.patch(f"/api/v1/admin/users/{user_id}", headers=admin, json={"roles": ["editor"]}).status_code == 200
    checked, resume = threading.Event(), threading.Event()
    real = accounts.check_may_sign_in

    def held(user, *args, **kwargs):
        if not checked.is_set():  # the sign-in below: nothing else signs in until it is let go
            checked.set()
            resume.wait(30)
        return real(user, *args, **kwargs)

    monkeypatch.setattr(accounts, "check_may_sign_in", held)
    signing_in, box = _in_background(lambda: app.test_client().post(
        "/api/v1/auth/login", json={"email": "user@example.com", "password": PASSWORD}))
    assert checked.wait(30)
    removing, removed = _in_background(lambda: app.test_client().patch(
        f"/api/v1/admin/users/{user_id}", headers=admin, json={"roles": []}))
    _until_a_lock_is_awaited(app, removing)  # the removal waits for the sign-in's hold on the account
    _let_go(monkeypatch, resume, signing_in, removing)
    assert removed["result"].status_code == 200
    late = box["result"]
    assert late.status_code == 200
    gate = client.get("/api/v1/auth/verify?role=editor", headers=auth.bearer(late.json))
    assert gate.status_code in (401, 403)


def test_an_old_confirmation_link_racing_an_admin_moving_the_account(app, auth, client, admin, monkeypatch):
    """A link mailed to the old address, followed while an admin moves the account: it proves the old address,
    never the new one the admin left unconfirmed."""
    from authsvc.services import verification

    user_id = auth.register().json["id"]
    with app.app_context():
        token = onetime.issue(onetime.VERIFY_EMAIL, timedelta(hours=1), "user@example.com", uuid.UUID(user_id))
        db.session.commit()
    checked, resume = threading.Event(), threading.Event()
    real = verification.address_proven

    def held(user):
        checked.set()
        resume.wait(30)
        return real(user)

    monkeypatch.setattr(verification, "address_proven", held)
    following, followed = _in_background(lambda: app.test_client().post("/api/v1/auth/verify-email",
                                                                        json={"token": token}))
    assert checked.wait(30)
    moving, moved = _in_background(lambda: app.test_client().patch(
        f"/api/v1/admin/users/{user_id}", headers=admin, json={"email": "moved@example.com"}))
    _until_a_lock_is_awaited(app, moving)  # the move waits for the link's hold on the account
    _let_go(monkeypatch, resume, following, moving)
    assert moved["result"].status_code == 200
    assert followed["result"].status_code in (200, 400)
    now = client.get(f"/api/v1/admin/users/{user_id}", headers=admin).json
    assert now["email"] == "moved@example.com" and now["email_verified"] is False


def test_a_reset_and_a_password_change_at_once_neither_deadlocks(app, auth, client, monkeypatch):
    """The reset uses its link and then writes the account; the change writes the account and then voids the
    account's links. In those orders the two wait for each other (PostgreSQL ends one: a 503)."""
    pair, token = _signed_in_with_a_reset_link(app, auth)
    # The reset stops while it hashes the new password: its link is used, the account not yet written.
    resetting, reset, resume = _held_in_thread(monkeypatch, "hash", lambda: app.test_client().post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": NEW}))
    changing, changed = _in_background(lambda: app.test_client().post(
        "/api/v1/users/me/password", headers=auth.bearer(pair),
        json={"current_password": PASSWORD, "new_password": "another passphrase 3"}))
    _until_a_lock_is_awaited(app, changing)  # the change waits for the reset's hold on the account
    _let_go(monkeypatch, resume, resetting, changing)
    assert reset["result"].status_code == 200
    assert changed["result"].status_code == 401  # checked against the password the reset replaced
    assert auth.login(password=NEW).status_code == 200


def test_two_admins_taking_the_same_role_away_at_once(app, auth, client, admin):
    """Both read the role as held; both answer as the contract says (the second finds nothing to take)."""
    user_id = auth.register().json["id"]
    assert client.patch(f"/api/v1/admin/users/{user_id}", headers=admin,
                        json={"roles": ["editor", "viewer"]}).status_code == 200
    start, codes = threading.Barrier(2), []

    def take(roles):
        own = app.test_client()
        start.wait()
        codes.append(own.patch(f"/api/v1/admin/users/{user_id}", headers=admin, json={"roles": roles}).status_code)

    threads = [threading.Thread(target=take, args=(roles,)) for roles in (["viewer"], ["viewer"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert codes == [200, 200]
    assert client.get(f"/api/v1/admin/users/{user_id}", headers=admin).json["roles"] == ["viewer"]


def test_two_changes_of_address_asked_at_once_leave_one_link(app, auth, client, monkeypatch):
    """One pending change at a time: a request that voids the older links must see one still being committed."""
    pair = auth.signed_in()
    thread, box, resume = _held_in_thread(monkeypatch, "confirm_email_change", lambda: app.test_client().patch(
        "/api/v1/users/me", headers=auth.bearer(pair), json={"email": "first@example.com"}), owner=mail)
    second, second_box = _in_background(lambda: app.test_client().patch(
        "/api/v1/users/me", headers=auth.bearer(pair), json={"email": "second@example.com"}))
    _until_a_lock_is_awaited(app, second)  # the second request waits for the first's hold on the account
    _let_go(monkeypatch, resume, thread, second)
    assert box["result"].status_code == second_box["result"].status_code == 200
    with app.app_context():
        live = db.session.scalars(select(OneTimeToken.email).where(
            OneTimeToken.purpose == onetime.EMAIL_CHANGE, OneTimeToken.used_at.is_(None))).all()
    assert live == ["second@example.com"]


def test_a_reset_link_used_while_a_newer_one_is_composed_neither_deadlocks(app, auth, monkeypatch):
    """The reset holds the account's row while it checks the new password; the mail sender, composing the link
    asked for since, voids the older link and then inserts its own, whose foreign key share-locks the account.
    A FOR UPDATE on the account conflicts with that share lock: each then waits for the other (one a 503)."""
    from authsvc.services import recovery

    _, token = _signed_in_with_a_reset_link(app, auth)
    checked, resume = threading.Event(), threading.Event()
    real = passwords.check_new_password

    def held(*args, **kwargs):
        checked.set()
        resume.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(passwords, "check_new_password", held)
    resetting, reset = _in_background(lambda: app.test_client().post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": NEW}))
    assert checked.wait(30)  # the reset has locked the account and read its link

    def compose():
        with app.app_context():
            try:
                recovery.compose_reset("user@example.com")
                db.session.commit()
            except Exception as exc:  # noqa: BLE001 - the outcome is the assertion below
                db.session.rollback()
                return exc
        return None

    composing, composed = _in_background(compose)
    _until_a_lock_is_awaited(app, composing)
    _let_go(monkeypatch, resume, resetting, composing)
    assert composed["result"] is None, composed["result"]
    # The older link was voided by the newer one (400), or used first (200): never a 503.
    assert reset["result"].status_code in (200, 400), reset["result"].json


def test_two_admins_removing_each_other_at_once_leave_one(app, auth, client, admin, monkeypatch):
    """Each would still count the other as an admin: the admin role's row lock makes the second wait for the first
    and then see that it is the last one."""
    from authsvc.services import admin as admin_service

    first = client.get("/api/v1/users/me", headers=admin).json["id"]
    second = client.post("/api/v1/admin/users", headers=admin, json={
        "email": "second@example.com", "password": PASSWORD, "email_verified": True, "roles": ["admin"]}).json["id"]
    seconds = auth.bearer(auth.login("second@example.com").json)
    # The first removal stops right after its last-admin check, holding what it holds until it commits.
    removing, removed, resume = _held_in_thread(monkeypatch, "guard_last_admin", lambda: app.test_client().patch(
        f"/api/v1/admin/users/{second}", headers=admin, json={"roles": []}), owner=admin_service)
    countering, countered = _in_background(lambda: app.test_client().patch(
        f"/api/v1/admin/users/{first}", headers=seconds, json={"roles": []}))
    assert _until_a_lock_is_awaited(app, countering)
    _let_go(monkeypatch, resume, removing, countering)
    assert removed["result"].status_code == 200
    assert countered["result"].status_code == 409 and countered["result"].json["error"]["code"] == "conflict"
    assert client.get(f"/api/v1/admin/users/{first}", headers=admin).json["roles"] == ["admin"]


@pytest.mark.settings(MAIL_WORKER=False)  # the two senders below are the only ones
def test_two_senders_compose_one_mail_request_once(app, auth, client, outbox, monkeypatch):
    """A reset request is composed (its link made and its mail staged) within the claim of its row: a second
    sender skips the row the first holds, so the address gets one link, not two."""
    from authsvc.models import OutboxMessage
    from authsvc.services import outbox as mail_outbox, recovery

    auth.register()
    with app.app_context():
        db.session.query(OutboxMessage).delete()  # the registration's confirmation
        db.session.commit()
    client.post("/api/v1/auth/password-reset/request", json={"email": "user@example.com"})
    composed, resume, real = threading.Event(), threading.Event(), mail_outbox.COMPOSERS[recovery.REQUEST_KIND]

    def held(email):
        real(email)
        if not composed.is_set():
            composed.set()
            resume.wait(30)

    def deliver():
        with app.app_context():
            return mail_outbox.deliver_one()

    monkeypatch.setitem(mail_outbox.COMPOSERS, recovery.REQUEST_KIND, held)
    first, _ = _in_background(deliver)
    assert composed.wait(30)
    assert deliver() is None  # the request's row is held: nothing else is due
    _let_go(monkeypatch, resume, first)
    with app.app_context():
        mail_outbox.flush()
    assert [m["To"] for m in outbox.messages] == ["user@example.com"]
