"""Mailed links through a real SMTP server: verification, two-step signup, reset, email change, the outbox."""
import logging
import os
import stat
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from authsvc.extensions import db
from authsvc.models import OneTimeToken, OutboxMessage, utcnow

from .conftest import PASSWORD
from .smtpserver import links

API = "/api/v1/auth"
NEW = "another fine passphrase 8"


def _token(message, path: str) -> str:
    """The token of the link to `path` in a parsed message."""
    link = next(u for u in links(message) if f"{path}/" in u)
    return link.rsplit("/", 1)[1]


def _mail_to(outbox, address: str, subject_part: str):
    return outbox.wait_for(lambda m: m["To"] == address and subject_part in m["Subject"])


def test_register_mails_a_verification_link(auth, client, outbox):
    auth.register()
    message = _mail_to(outbox, "user@example.com", "Confirm")
    assert message.get_body(("html",)) is not None and message.get_body(("plain",)) is not None
    token = _token(message, "/verify-email")
    response = client.post(f"{API}/verify-email", json={"token": token})
    assert response.status_code == 200 and response.json["email_verified"] is True
    again = client.post(f"{API}/verify-email", json={"token": token})
    assert again.status_code == 400 and again.json["error"]["code"] == "invalid_token"


@pytest.mark.parametrize("token", ["", "nope", "x" * 600])
def test_verify_with_bad_tokens(client, token):
    response = client.post(f"{API}/verify-email", json={"token": token})
    assert response.status_code in (400, 422)
    assert response.json["error"]["code"] in ("invalid_token", "validation_error")


def test_expired_verification_token(app, auth, client, outbox):
    auth.register()
    token = _token(_mail_to(outbox, "user@example.com", "Confirm"), "/verify-email")
    with app.app_context():
        db.session.scalars(select(OneTimeToken)).one().expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    assert client.post(f"{API}/verify-email", json={"token": token}).json["error"]["code"] == "invalid_token"


@pytest.mark.parametrize("path", ["/signup", "/verify-email/resend", "/password-reset/request"])
def test_mail_requests_answer_the_same_for_unknown_addresses(auth, client, path):
    auth.register("known@example.com")
    known = client.post(API + path, json={"email": "known@example.com"})
    unknown = client.post(API + path, json={"email": "unknown@example.com"})
    assert known.status_code == unknown.status_code == 202
    assert known.json == unknown.json


def test_two_step_signup(client, outbox):
    assert client.post(f"{API}/signup", json={"email": "New@Example.com"}).status_code == 202
    token = _token(_mail_to(outbox, "New@example.com", "Finish"), "/signup/complete")
    response = client.post(f"{API}/signup/complete", json={"token": token, "password": PASSWORD,
                                                            "full_name": "Newcomer"})
    assert response.status_code == 201
    me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {response.json['access_token']}"}).json
    assert me["email_verified"] is True and me["full_name"] == "Newcomer"
    replay = client.post(f"{API}/signup/complete", json={"token": token, "password": PASSWORD})
    assert replay.json["error"]["code"] == "invalid_token"


def test_signup_for_existing_address_mails_the_owner(auth, client, outbox):
    auth.register()
    outbox.clear()
    client.post(f"{API}/signup", json={"email": "user@example.com"})
    assert _mail_to(outbox, "user@example.com", "already")["Subject"] == "You already have an account"


def test_signup_rejected_password_keeps_the_link(client, outbox):
    client.post(f"{API}/signup", json={"email": "new@example.com"})
    token = _token(_mail_to(outbox, "new@example.com", "Finish"), "/signup/complete")
    bad = client.post(f"{API}/signup/complete", json={"token": token, "password": "short"})
    assert bad.status_code == 422 and "password" in bad.json["error"]["fields"]
    assert client.post(f"{API}/signup/complete", json={"token": token, "password": PASSWORD}).status_code == 201


def test_password_reset_ends_every_session(auth, client, outbox):
    pair = auth.signed_in()
    outbox.clear()
    assert client.post(f"{API}/password-reset/request", json={"email": "USER@example.com"}).status_code == 202
    token = _token(_mail_to(outbox, "user@example.com", "Reset"), "/password-reset")
    response = client.post(f"{API}/password-reset/confirm", json={"token": token, "new_password": NEW})
    assert response.status_code == 200
    assert client.get("/api/v1/users/me", headers=auth.bearer(pair)).status_code == 401
    assert auth.refresh(pair["refresh_token"]).status_code == 401
    assert auth.login(password=NEW).status_code == 200
    assert _mail_to(outbox, "user@example.com", "was changed")
    reuse = client.post(f"{API}/password-reset/confirm", json={"token": token, "new_password": "third passphrase 9"})
    assert reuse.json["error"]["code"] == "invalid_token"


def test_a_new_reset_request_voids_older_links(auth, client, outbox):
    auth.register()
    client.post(f"{API}/password-reset/request", json={"email": "user@example.com"})
    first = _token(_mail_to(outbox, "user@example.com", "Reset"), "/password-reset")
    outbox.clear()
    client.post(f"{API}/password-reset/request", json={"email": "user@example.com"})
    second = _token(_mail_to(outbox, "user@example.com", "Reset"), "/password-reset")
    assert client.post(f"{API}/password-reset/confirm", json={"token": first, "new_password": NEW}).status_code == 400
    assert client.post(f"{API}/password-reset/confirm", json={"token": second, "new_password": NEW}).status_code == 200


def test_reset_with_weak_password_keeps_the_link(auth, client, outbox):
    auth.register()
    client.post(f"{API}/password-reset/request", json={"email": "user@example.com"})
    token = _token(_mail_to(outbox, "user@example.com", "Reset"), "/password-reset")
    bad = client.post(f"{API}/password-reset/confirm", json={"token": token, "new_password": "user@example.com"})
    assert bad.status_code == 422 and "new_password" in bad.json["error"]["fields"]
    assert client.post(f"{API}/password-reset/confirm", json={"token": token, "new_password": NEW}).status_code == 200


def test_email_change_stays_pending_until_the_link(auth, client, outbox):
    pair = auth.signed_in()
    outbox.clear()
    response = client.patch("/api/v1/users/me", json={"email": "moved@example.com"}, headers=auth.bearer(pair))
    assert response.status_code == 200 and response.json["email"] == "user@example.com"
    notice = _mail_to(outbox, "user@example.com", "being changed")
    assert "moved@example.com" in notice.get_body(("plain",)).get_content()
    token = _token(_mail_to(outbox, "moved@example.com", "Confirm"), "/confirm-email-change")
    assert auth.login("moved@example.com").status_code == 401  # not yet the account's address
    verified = client.post(f"{API}/verify-email", json={"token": token})
    assert verified.status_code == 200 and verified.json["email"] == "moved@example.com"
    assert auth.login("moved@example.com").status_code == 200
    assert auth.login("user@example.com").status_code == 401


@pytest.mark.parametrize("how", ["password change", "password reset"])
def test_a_new_password_voids_a_pending_email_change(auth, client, outbox, how):
    # A stolen session asks to move the account to the thief's address; the owner then changes the password
    # (ending that session). The thief's link must not move the account any more.
    pair = auth.signed_in()
    client.patch("/api/v1/users/me", json={"email": "thief@evil.example"}, headers=auth.bearer(pair))
    stolen = _token(_mail_to(outbox, "thief@evil.example", "Confirm"), "/confirm-email-change")
    if how == "password change":
        changed = client.post("/api/v1/users/me/password", json={"current_password": PASSWORD, "new_password": NEW},
                              headers=auth.bearer(pair))
        assert changed.status_code == 204
    else:
        client.post(f"{API}/password-reset/request", json={"email": "user@example.com"})
        reset = _token(_mail_to(outbox, "user@example.com", "Reset"), "/password-reset")
        assert client.post(f"{API}/password-reset/confirm", json={"token": reset, "new_password": NEW}).status_code == 200
    refused = client.post(f"{API}/verify-email", json={"token": stolen})
    assert refused.status_code == 400 and refused.json["error"]["code"] == "invalid_token"
    assert auth.login("user@example.com", NEW).status_code == 200


def test_an_email_change_voids_reset_links_sent_to_the_old_address(auth, client, outbox):
    pair = auth.signed_in()
    client.post(f"{API}/password-reset/request", json={"email": "user@example.com"})
    old_link = _token(_mail_to(outbox, "user@example.com", "Reset"), "/password-reset")
    client.patch("/api/v1/users/me", json={"email": "moved@example.com"}, headers=auth.bearer(pair))
    moved = _token(_mail_to(outbox, "moved@example.com", "Confirm"), "/confirm-email-change")
    assert client.post(f"{API}/verify-email", json={"token": moved}).status_code == 200
    refused = client.post(f"{API}/password-reset/confirm", json={"token": old_link, "new_password": NEW})
    assert refused.status_code == 400 and refused.json["error"]["code"] == "invalid_token"


def test_email_change_to_a_taken_address(auth, client):
    auth.register("other@example.com")
    pair = auth.signed_in()
    response = client.patch("/api/v1/users/me", json={"email": "OTHER@example.com"}, headers=auth.bearer(pair))
    assert response.status_code == 409 and response.json["error"]["code"] == "email_taken"


@pytest.mark.settings(RATELIMIT_ENABLED=True, RATELIMIT_MAIL_PER_ADDRESS="3/hour", RATELIMIT_MAIL_REQUEST="100/minute")
def test_one_inbox_gets_at_most_three_mails_an_hour(client):
    codes = [client.post(f"{API}/password-reset/request", json={"email": "victim@example.com"},
                         environ_base={"REMOTE_ADDR": f"10.0.0.{i}"}).status_code for i in range(4)]
    assert codes == [202, 202, 202, 429]
    # Shared across the three mail-sending endpoints, per recipient.
    assert client.post(f"{API}/signup", json={"email": "victim@example.com"}).status_code == 429
    assert client.post(f"{API}/signup", json={"email": "someone-else@example.com"}).status_code == 202


def test_mail_survives_smtp_outage(app, auth, outbox, smtp_server):
    """The server is down when the change commits; the message arrives, once, after it comes back."""
    smtp_server.stop()
    try:
        assert auth.register().status_code == 201  # registration never fails because mail is down
        with app.app_context():
            row = db.session.scalars(select(OutboxMessage)).one()
        assert row.sent_at is None
    finally:
        smtp_server.restart()
    message = _mail_to(outbox, "user@example.com", "Confirm")
    assert message is not None

    def marked_sent() -> bool:
        with app.app_context():  # marked in a transaction of its own, just after the server took it
            return db.session.scalars(select(OutboxMessage)).one().sent_at is not None

    deadline = time.monotonic() + 10
    while not marked_sent() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marked_sent()
    assert len([m for m in outbox.messages if m["To"] == "user@example.com"]) == 1


@pytest.mark.sqlite_only
def test_a_slow_mail_server_holds_up_no_other_write(app, auth, monkeypatch):
    # SQLite has one write lock: a sender that kept its transaction open while the server answered (up to
    # MAIL_TIMEOUT) made every sign-in wait for it.
    import threading

    from authsvc.services import outbox as sender

    sending, real = threading.Event(), sender._deliver

    def slow(*args, **kwargs):
        sending.set()
        time.sleep(2)
        return real(*args, **kwargs)

    monkeypatch.setattr(sender, "_deliver", slow)
    auth.register("first@example.com")  # queues a verification mail; the sender wakes up
    assert sending.wait(10)
    started = time.monotonic()
    refused = auth.login("first@example.com", "a wrong password 1")  # writes its failure count
    assert refused.status_code == 401
    assert time.monotonic() - started < 1


@pytest.mark.settings(MAIL_WORKER=False)  # delivered by hand below, with no sender of the app's racing it
def test_a_message_whose_sender_died_mid_send_goes_once_its_lease_ends(app, auth, outbox):
    from datetime import timedelta

    from authsvc.services import outbox as sender

    with app.app_context():
        auth.register("lease@example.com")
        row = db.session.scalars(select(OutboxMessage).where(OutboxMessage.recipient == "lease@example.com")).one()
        # A sender claimed it (its lease runs for a while yet) and died before sending.
        row.next_attempt_at = utcnow() + timedelta(minutes=5)
        db.session.commit()
        assert sender.deliver_one() is None  # not due: nobody sends it twice meanwhile
        row = db.session.get(OutboxMessage, row.id)
        row.next_attempt_at = utcnow() - timedelta(seconds=1)  # the lease ran out
        db.session.commit()
        assert sender.deliver_one() is True
        assert db.session.get(OutboxMessage, row.id, populate_existing=True).sent_at is not None
    assert _mail_to(outbox, "lease@example.com", "Confirm")


@pytest.mark.settings(MAIL_SERVER="")
def test_embedded_default_writes_eml_files(app, auth):
    from pathlib import Path

    auth.register()
    folder = Path(app.config["INSTANCE_PATH"]) / "outbox"
    for _ in range(100):
        if folder.exists() and list(folder.glob("*.eml")):
            break
        time.sleep(0.05)
    files = list(folder.glob("*.eml"))
    assert len(files) == 1 and b"/verify-email/" in files[0].read_bytes()


@pytest.mark.settings(MAIL_WORKER=False)
@pytest.mark.parametrize("path", ["/signup", "/verify-email/resend", "/password-reset/request"])
def test_mail_requests_do_the_same_work_for_every_address(app, auth, client, outbox, path):
    """Known or not, a request writes one identical outbox row; the sender decides what it becomes."""
    from authsvc.services import outbox as mail_outbox

    auth.register("known@example.com")
    with app.app_context():
        db.session.query(OutboxMessage).delete()
        db.session.commit()
        tokens_before = db.session.query(OneTimeToken).count()
    for email in ("known@example.com", "unknown@example.com"):
        client.post(API + path, json={"email": email})
    with app.app_context():
        rows = db.session.scalars(select(OutboxMessage).order_by(OutboxMessage.created_at)).all()
        assert [(r.kind, r.text_body) for r in rows] == [(rows[0].kind, "")] * 2
        assert db.session.query(OneTimeToken).count() == tokens_before
        mail_outbox.flush()
        mail_outbox.flush()
        # Composed without an error (a request is composed in the sender, where a failure is only retried).
        assert not db.session.scalars(select(OutboxMessage).where(OutboxMessage.last_error.is_not(None))).all()
    sent_to = {m["To"] for m in outbox.messages}
    if path == "/signup":
        assert sent_to == {"known@example.com", "unknown@example.com"}  # a notice, and a signup link
    else:
        assert sent_to == {"known@example.com"}


def test_an_admins_change_of_address_voids_the_links_already_mailed(auth, client, admin, outbox):
    """Admins move accounts whose mailbox is lost or taken: a reset link in the old mailbox and a change of
    address a stolen session asked for must both die, and the new address is unproven until its own link."""
    pair = auth.signed_in()
    client.post(f"{API}/password-reset/request", json={"email": "user@example.com"})
    reset = _token(_mail_to(outbox, "user@example.com", "Reset"), "/password-reset")
    client.patch("/api/v1/users/me", json={"email": "thief@example.com"}, headers=auth.bearer(pair))
    change = _token(_mail_to(outbox, "thief@example.com", "Confirm"), "/confirm-email-change")
    user_id = client.get("/api/v1/users/me", headers=auth.bearer(pair)).json["id"]
    moved = client.patch(f"/api/v1/admin/users/{user_id}", json={"email": "fixed@example.com"}, headers=admin)
    assert moved.status_code == 200 and moved.json["email_verified"] is False
    assert client.post(f"{API}/password-reset/confirm",
                       json={"token": reset, "new_password": NEW}).json["error"]["code"] == "invalid_token"
    assert client.post(f"{API}/verify-email", json={"token": change}).json["error"]["code"] == "invalid_token"
    # The tokens carried the old address to gateways: the account's sessions ended with the move.
    assert client.get("/api/v1/users/me", headers=auth.bearer(pair)).json["error"]["code"] == "token_revoked"
    proof = _token(_mail_to(outbox, "fixed@example.com", "Confirm"), "/verify-email")
    assert client.post(f"{API}/verify-email", json={"token": proof}).json["email_verified"] is True
    assert auth.login("fixed@example.com").status_code == 200


def test_an_admin_vouching_for_the_new_address_sends_no_link(auth, client, admin, outbox):
    pair = auth.signed_in()
    outbox.clear()
    user_id = client.get("/api/v1/users/me", headers=auth.bearer(pair)).json["id"]
    moved = client.patch(f"/api/v1/admin/users/{user_id}", json={"email": "fixed@example.com", "email_verified": True},
                         headers=admin)
    assert moved.status_code == 200 and moved.json["email_verified"] is True
    client.post(f"{API}/password-reset/request", json={"email": "fixed@example.com"})
    _mail_to(outbox, "fixed@example.com", "Reset")  # the first message to the new address is the reset
    assert not [m for m in outbox.messages if m["To"] == "fixed@example.com" and "Confirm" in m["Subject"]]


@pytest.mark.parametrize("link", ["reset", "change of address"])
@pytest.mark.parametrize("by", ["an admin", "the user"])
def test_disabling_an_account_voids_its_links(auth, client, admin, outbox, by, link):
    """Enabling it again must not bring back a reset link, or a change of address, asked for before it was
    disabled."""
    pair = auth.signed_in()
    if link == "reset":
        client.post(f"{API}/password-reset/request", json={"email": "user@example.com"})
        token = _token(_mail_to(outbox, "user@example.com", "Reset"), "/password-reset")
        use = ("/password-reset/confirm", {"token": token, "new_password": NEW})
    else:
        client.patch("/api/v1/users/me", json={"email": "thief@evil.example"}, headers=auth.bearer(pair))
        token = _token(_mail_to(outbox, "thief@evil.example", "Confirm"), "/confirm-email-change")
        use = ("/verify-email", {"token": token})
    user_id = client.get("/api/v1/users/me", headers=auth.bearer(pair)).json["id"]
    if by == "the user":
        assert client.delete("/api/v1/users/me", json={"password": PASSWORD},
                             headers=auth.bearer(pair)).status_code == 204
    for active in ((False, True) if by == "an admin" else (True,)):
        assert client.patch(f"/api/v1/admin/users/{user_id}", json={"is_active": active},
                            headers=admin).status_code == 200
    refused = client.post(API + use[0], json=use[1])
    assert refused.status_code == 400 and refused.json["error"]["code"] == "invalid_token"
    assert client.get(f"/api/v1/admin/users/{user_id}", headers=admin).json["email"] == "user@example.com"


def test_a_reset_link_works_only_for_the_address_it_was_mailed_to(app, auth, client, outbox):
    """Even if the address changed by a path that forgot to void the link (here, SQL by hand)."""
    from authsvc.models import User

    auth.register()
    client.post(f"{API}/password-reset/request", json={"email": "user@example.com"})
    reset = _token(_mail_to(outbox, "user@example.com", "Reset"), "/password-reset")
    with app.app_context():
        db.session.scalars(select(User)).one().email = "moved@example.com"
        db.session.commit()
    response = client.post(f"{API}/password-reset/confirm", json={"token": reset, "new_password": NEW})
    assert response.status_code == 400 and response.json["error"]["code"] == "invalid_token"


@pytest.mark.parametrize("then", ["a newer request", "a confirmed change"])
def test_a_change_of_address_voids_the_pending_ones(auth, client, outbox, then):
    """A stolen session asks for a move to the thief's address; the owner, warned by the notice, asks for (or
    confirms) one of their own: the thief's link must not move the account afterwards."""
    pair = auth.signed_in()
    client.patch("/api/v1/users/me", json={"email": "thief@evil.example"}, headers=auth.bearer(pair))
    stolen = _token(_mail_to(outbox, "thief@evil.example", "Confirm"), "/confirm-email-change")
    client.patch("/api/v1/users/me", json={"email": "mine@example.com"}, headers=auth.bearer(pair))
    mine = _token(_mail_to(outbox, "mine@example.com", "Confirm"), "/confirm-email-change")
    if then == "a confirmed change":
        assert client.post(f"{API}/verify-email", json={"token": mine}).status_code == 200
    refused = client.post(f"{API}/verify-email", json={"token": stolen})
    assert refused.status_code == 400 and refused.json["error"]["code"] == "invalid_token"


def test_sent_mail_keeps_no_live_token_at_rest(app, auth, client, outbox):
    """one_time_tokens holds only hashes; the outbox must not keep the links themselves once they are sent."""
    auth.register()
    client.post(f"{API}/password-reset/request", json={"email": "user@example.com"})
    mailed = _token(_mail_to(outbox, "user@example.com", "Reset"), "/password-reset")
    deadline = time.monotonic() + 10
    while True:  # the sender marks the row sent just after the mail server took it
        with app.app_context():
            rows = db.session.scalars(select(OutboxMessage)).all()
            stored = " ".join(r.text_body + r.html_body for r in rows)
            if all(r.sent_at is not None for r in rows) or time.monotonic() > deadline:
                break
        time.sleep(0.05)
    assert rows and all(r.sent_at is not None for r in rows)
    assert mailed not in stored


@pytest.mark.parametrize("how", ["api", "page"])
def test_a_change_of_address_needs_a_recent_sign_in(app, auth, client, outbox, how):
    """A session outlives its sign-in by days; whoever moves the address can reset the password from there."""
    from authsvc.models import Session

    from .test_pages import post_form, sign_in_page

    pair = auth.signed_in()
    if how == "page":
        sign_in_page(client)
    with app.app_context():
        for row in db.session.scalars(select(Session)):
            row.created_at = utcnow() - timedelta(minutes=16)
        db.session.commit()
    outbox.clear()
    if how == "api":
        response = client.patch("/api/v1/users/me", json={"email": "thief@evil.example"}, headers=auth.bearer(pair))
        assert response.status_code == 403 and response.json["error"]["code"] == "reauthentication_required"
    else:
        response = post_form(client, "/account/profile", {"email": "thief@evil.example", "full_name": ""},
                             page="/account")
        assert response.status_code == 400 and "Sign in again" in response.text
    renamed = client.patch("/api/v1/users/me", json={"full_name": "Renamed"}, headers=auth.bearer(pair))
    assert renamed.status_code == 200  # the name alone needs no fresh sign-in
    fresh = auth.login().json
    moved = client.patch("/api/v1/users/me", json={"email": "moved@example.com"}, headers=auth.bearer(fresh))
    assert moved.status_code == 200
    _mail_to(outbox, "moved@example.com", "Confirm")
    assert not [m for m in outbox.messages if m["To"] == "thief@evil.example"]


@pytest.mark.sqlite_only
@pytest.mark.settings(MAIL_SERVER="", AUTHSVC_ENV="production", MAIL_WORKER=False)
def test_production_never_logs_mail_bodies(app, auth, client, caplog):
    """docker-compose.yml leaves MAIL_SERVER empty by default: every reset link (a full account takeover) went
    to the mail container's log and to a world-readable .eml file."""
    from authsvc.services import outbox as mail_outbox

    auth.register("victim@example.com")
    old = os.umask(0o022)
    try:
        with caplog.at_level(logging.INFO, logger="authsvc.services.outbox"), app.app_context():
            mail_outbox.flush()
    finally:
        os.umask(old)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "/verify-email/" not in logged
    folder = Path(app.config["INSTANCE_PATH"]) / "outbox"
    for path in [folder, *folder.glob("*.eml")]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def _links(auth, client, outbox) -> dict:
    """One live link of each purpose, all mailed for user@example.com (signup: for new@example.com)."""
    pair = auth.signed_in()
    client.post(f"{API}/password-reset/request", json={"email": "user@example.com"})
    client.post(f"{API}/signup", json={"email": "new@example.com"})
    client.patch("/api/v1/users/me", json={"email": "moved@example.com"}, headers=auth.bearer(pair))
    return {
        "verify": _token(_mail_to(outbox, "user@example.com", "Confirm"), "/verify-email"),
        "reset": _token(_mail_to(outbox, "user@example.com", "Reset"), "/password-reset"),
        "signup": _token(_mail_to(outbox, "new@example.com", "Finish"), "/signup/complete"),
        "change": _token(_mail_to(outbox, "moved@example.com", "Confirm"), "/confirm-email-change"),
    }


USES = {"verify": ("/verify-email", {}), "change": ("/verify-email", {}),
        "reset": ("/password-reset/confirm", {"new_password": NEW}), "signup": ("/signup/complete", {"password": NEW})}


@pytest.mark.parametrize("kind, used_as", [
    ("verify", "reset"), ("verify", "signup"), ("reset", "verify"), ("reset", "signup"), ("signup", "verify"),
    ("signup", "reset"), ("change", "reset"), ("change", "signup"),
])
def test_a_link_works_only_for_its_own_flow(auth, client, outbox, kind, used_as):
    """A link mailed for one flow is refused by every other one, and stays usable for its own."""
    token = _links(auth, client, outbox)[kind]
    path, extra = USES[used_as]
    refused = client.post(API + path, json={"token": token, **extra})
    assert refused.status_code == 400 and refused.json["error"]["code"] == "invalid_token"
    path, extra = USES[kind]
    assert client.post(API + path, json={"token": token, **extra}).status_code in (200, 201)


def test_a_new_reset_link_voids_only_the_accounts_older_reset_links(auth, client, outbox):
    """Asking for a reset leaves the account's confirmation link, and every other account's reset link, alive."""
    auth.register("other@example.com")
    client.post(f"{API}/password-reset/request", json={"email": "other@example.com"})
    others = _token(_mail_to(outbox, "other@example.com", "Reset"), "/password-reset")
    auth.register()
    confirm = _token(_mail_to(outbox, "user@example.com", "Confirm"), "/verify-email")
    client.post(f"{API}/password-reset/request", json={"email": "user@example.com"})
    _mail_to(outbox, "user@example.com", "Reset")
    assert client.post(f"{API}/verify-email", json={"token": confirm}).status_code == 200
    assert client.post(f"{API}/password-reset/confirm", json={"token": others, "new_password": NEW}).status_code == 200


def test_a_password_reset_confirms_the_address(auth, client, outbox):
    """Following a reset link proves the mailbox, as the confirmation link would."""
    auth.register()
    client.post(f"{API}/password-reset/request", json={"email": "user@example.com"})
    reset = _token(_mail_to(outbox, "user@example.com", "Reset"), "/password-reset")
    response = client.post(f"{API}/password-reset/confirm", json={"token": reset, "new_password": NEW})
    assert response.status_code == 200 and response.json["email_verified"] is True


def test_a_reset_link_of_a_disabled_account_is_refused(app, auth, client, outbox):
    """Even if the account was disabled by a path that forgot to void the link (here, SQL by hand)."""
    from authsvc.models import User

    auth.register()
    client.post(f"{API}/password-reset/request", json={"email": "user@example.com"})
    reset = _token(_mail_to(outbox, "user@example.com", "Reset"), "/password-reset")
    with app.app_context():
        db.session.scalars(select(User)).one().is_active = False
        db.session.commit()
    response = client.post(f"{API}/password-reset/confirm", json={"token": reset, "new_password": NEW})
    assert response.status_code == 400 and response.json["error"]["code"] == "invalid_token"


@pytest.mark.settings(MAIL_WORKER=False)  # delivered by hand below
@pytest.mark.parametrize("path, state", [
    ("/password-reset/request", "disabled"), ("/verify-email/resend", "disabled"), ("/verify-email/resend", "verified"),
])
def test_no_link_goes_to_an_account_that_has_no_use_for_it(app, auth, client, outbox, path, state):
    """A disabled account is mailed no reset or confirmation link, a confirmed one no confirmation link."""
    from authsvc.models import User
    from authsvc.services import outbox as mail_outbox

    auth.register()
    with app.app_context():
        user = db.session.scalars(select(User)).one()
        user.is_active, user.email_verified = state != "disabled", state == "verified"
        db.session.query(OutboxMessage).delete()  # the registration's confirmation
        db.session.commit()
    client.post(API + path, json={"email": "user@example.com"})
    with app.app_context():
        mail_outbox.flush()
        mail_outbox.flush()
        request = db.session.scalars(select(OutboxMessage)).one()  # the request, composed into nothing
        assert request.sent_at is not None and request.last_error is None
    assert not outbox.messages


def test_a_disabled_account_cannot_confirm_its_address(auth, client, admin, outbox):
    """Disabling voids the reset and change-of-address links; a confirmation link still mailed is refused."""
    auth.register()
    confirm = _token(_mail_to(outbox, "user@example.com", "Confirm"), "/verify-email")
    user_id = client.get("/api/v1/admin/users", query_string={"q": "user@"}, headers=admin).json["items"][0]["id"]
    assert client.patch(f"/api/v1/admin/users/{user_id}", json={"is_active": False}, headers=admin).status_code == 200
    refused = client.post(f"{API}/verify-email", json={"token": confirm})
    assert refused.status_code == 400 and refused.json["error"]["code"] == "invalid_token"
    assert client.get(f"/api/v1/admin/users/{user_id}", headers=admin).json["email_verified"] is False


def test_a_reset_link_stays_void_when_the_address_comes_back(auth, client, outbox):
    """A confirmed change of address voids the reset links of the old one, even if the account moves back to it."""
    auth.register()
    client.post(f"{API}/password-reset/request", json={"email": "user@example.com"})
    reset = _token(_mail_to(outbox, "user@example.com", "Reset"), "/password-reset")
    for old, address in (("user@example.com", "moved@example.com"), ("moved@example.com", "user@example.com")):
        pair = auth.login(old).json  # a confirmed change ends the account's sessions
        client.patch("/api/v1/users/me", json={"email": address}, headers=auth.bearer(pair))
        change = _token(_mail_to(outbox, address, "Confirm your new"), "/confirm-email-change")
        assert client.post(f"{API}/verify-email", json={"token": change}).status_code == 200
    refused = client.post(f"{API}/password-reset/confirm", json={"token": reset, "new_password": NEW})
    assert refused.status_code == 400 and refused.json["error"]["code"] == "invalid_token"


def test_a_confirmation_link_to_a_former_address_confirms_nothing(auth, client, admin, outbox):
    """An admin moved the account: the link mailed to its first address must not confirm the new one."""
    auth.register()
    first = _token(_mail_to(outbox, "user@example.com", "Confirm"), "/verify-email")
    user_id = client.get("/api/v1/admin/users", query_string={"q": "user@"}, headers=admin).json["items"][0]["id"]
    moved = client.patch(f"/api/v1/admin/users/{user_id}", json={"email": "fixed@example.com"}, headers=admin)
    assert moved.status_code == 200 and moved.json["email_verified"] is False
    refused = client.post(f"{API}/verify-email", json={"token": first})
    assert refused.status_code == 400 and refused.json["error"]["code"] == "invalid_token"
    assert client.get(f"/api/v1/admin/users/{user_id}", headers=admin).json["email_verified"] is False


def test_a_password_change_voids_the_reset_links_already_mailed(auth, client, outbox):
    """A reset link must not outlive the password it was asked for."""
    pair = auth.signed_in()
    client.post(f"{API}/password-reset/request", json={"email": "user@example.com"})
    reset = _token(_mail_to(outbox, "user@example.com", "Reset"), "/password-reset")
    changed = client.post("/api/v1/users/me/password", json={"current_password": PASSWORD, "new_password": NEW},
                          headers=auth.bearer(pair))
    assert changed.status_code == 204
    refused = client.post(f"{API}/password-reset/confirm", json={"token": reset, "new_password": "third passphrase 9"})
    assert refused.status_code == 400 and refused.json["error"]["code"] == "invalid_token"
    assert auth.login(password=NEW).status_code == 200


def test_an_admin_moving_a_confirmed_address_unconfirms_it(auth, client, admin, outbox):
    """The new address is unproven, however confirmed the old one was, until its own link is followed."""
    made = client.post("/api/v1/admin/users", json={"email": "user@example.com", "password": PASSWORD,
                                                    "email_verified": True}, headers=admin).json
    moved = client.patch(f"/api/v1/admin/users/{made['id']}", json={"email": "fixed@example.com"}, headers=admin)
    assert moved.status_code == 200 and moved.json["email_verified"] is False
    proof = _token(_mail_to(outbox, "fixed@example.com", "Confirm"), "/verify-email")
    assert client.post(f"{API}/verify-email", json={"token": proof}).json["email_verified"] is True


@pytest.mark.parametrize("verified", [False, True])
def test_an_account_an_admin_creates_is_mailed_a_confirmation_link_unless_vouched_for(client, admin, outbox, verified):
    """An admin vouching for the address sends nothing; otherwise the address gets a link, as on registration."""
    made = client.post("/api/v1/admin/users", json={"email": "user@example.com", "email_verified": verified,
                                                    "password": PASSWORD}, headers=admin)
    assert made.status_code == 201 and made.json["email_verified"] is verified
    client.post(f"{API}/password-reset/request", json={"email": "user@example.com"})
    _mail_to(outbox, "user@example.com", "Reset")  # mail goes out in order: any confirmation went before it
    confirms = [m for m in outbox.messages if m["To"] == "user@example.com" and "Confirm" in m["Subject"]]
    assert len(confirms) == (0 if verified else 1)
    if not verified:
        token = _token(confirms[0], "/verify-email")
        assert client.post(f"{API}/verify-email", json={"token": token}).json["email_verified"] is True
