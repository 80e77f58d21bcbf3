"""`authsvc cleanup`: what goes and what stays, in batches, idempotent; on PostgreSQL one instance at a time,
and rows a request holds are skipped rather than waited for."""
from __future__ import annotations

import re
import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from authsvc.extensions import db
from authsvc.models import (LoginFailure, OneTimeToken, OutboxMessage, RefreshToken, RevokedToken, Session, User,
                            utcnow)
from authsvc.services.maintenance import ADVISORY_LOCK_KEY

LONG_AGO = timedelta(days=30)  # past every grace and retention
RECENT = timedelta(hours=1)    # within CLEANUP_GRACE_HOURS (24)


def _counts(output: str) -> dict[str, int]:
    return {name: int(n) for name, n in re.findall(r"(\w+) (\d+)", output.split("removed", 1)[1])}


@pytest.fixture
def seeded(app):
    """One row of each kind that must go and one that must stay; returns {name: id} of each."""
    now = utcnow()
    ids = {}
    with app.app_context():
        user = User(email="seed@example.com")
        db.session.add(user)
        db.session.flush()

        def session(name, **times):
            row = Session(user_id=user.id, expires_at=times.pop("expires_at", now + timedelta(days=7)), **times)
            db.session.add(row)
            db.session.flush()
            parent = None
            for n in range(3):  # a rotation chain: used parents, one live child
                token = RefreshToken(session_id=row.id, parent_id=parent, token_hash=uuid.uuid4().hex,
                                     expires_at=row.expires_at, used_at=now if n < 2 else None)
                db.session.add(token)
                db.session.flush()
                parent = token.id
            ids[name] = row.id

        session("live")
        session("revoked_long_ago", revoked_at=now - LONG_AGO)
        session("expired_long_ago", expires_at=now - LONG_AGO)
        session("revoked_recently", revoked_at=now - RECENT)
        session("expired_recently", expires_at=now - RECENT)

        def one_time(name, **fields):
            row = OneTimeToken(purpose="password_reset", token_hash=uuid.uuid4().hex, user_id=user.id,
                               email=user.email, **{"expires_at": now + timedelta(hours=1), **fields})
            db.session.add(row)
            db.session.flush()
            ids[name] = row.id

        one_time("ott_live")
        one_time("ott_used_long_ago", used_at=now - LONG_AGO)
        one_time("ott_expired_long_ago", expires_at=now - LONG_AGO)
        one_time("ott_used_recently", used_at=now - RECENT)

        window = timedelta(seconds=app.config["LOGIN_FAILURE_WINDOW_SECONDS"])
        for name, last, blocked in (
                ("lf_stale", now - window - RECENT, None),
                ("lf_block_over", now - window - RECENT, now - RECENT),
                ("lf_in_window", now - window / 2, None),
                ("lf_still_blocked", now - window - RECENT, now + RECENT)):
            db.session.add(LoginFailure(email=f"{name}@example.com", ip_address="192.0.2.1", failures=5,
                                        last_failure_at=last, blocked_until=blocked))
            ids[name] = (f"{name}@example.com", "192.0.2.1")

        for name, expires in (("rt_expired_long_ago", now - LONG_AGO), ("rt_live", now + RECENT)):
            db.session.add(RevokedToken(jti=name, expires_at=expires))
            ids[name] = name

        def mail(name, created, **fields):
            row = OutboxMessage(kind="notice", recipient="seed@example.com", subject="s", text_body="t",
                                html_body="h", created_at=created, next_attempt_at=now + timedelta(days=365),
                                **fields)
            db.session.add(row)
            db.session.flush()
            ids[name] = row.id

        mail("mail_sent_long_ago", now - LONG_AGO, sent_at=now - LONG_AGO, attempts=1)
        mail("mail_sent_recently", now - RECENT, sent_at=now - RECENT, attempts=1)
        mail("mail_dead", now - LONG_AGO, attempts=12, last_error="SMTPRecipientsRefused")
        mail("mail_never_tried", now - LONG_AGO)  # no sender ran: kept, never silently dropped
        mail("mail_retrying", now - RECENT, attempts=3)
        db.session.commit()
    return ids


GONE = {"revoked_long_ago", "expired_long_ago", "ott_used_long_ago", "ott_expired_long_ago", "lf_stale",
        "lf_block_over", "rt_expired_long_ago", "mail_sent_long_ago", "mail_dead"}
MODELS = {"ott": OneTimeToken, "lf": LoginFailure, "rt": RevokedToken, "mail": OutboxMessage}


def _present(ids) -> set[str]:
    present = set()
    for name, key in ids.items():
        model = MODELS.get(name.split("_", 1)[0], Session)
        if db.session.get(model, key) is not None:
            present.add(name)
    return present


def _refresh_tokens_of(session_id) -> int:
    return db.session.scalar(
        select(func.count()).select_from(RefreshToken).where(RefreshToken.session_id == session_id))


def test_cleanup_removes_what_no_longer_matters_and_keeps_the_rest(app, runner, seeded):
    result = runner.invoke(args=["cleanup", "--batch-size", "2"])  # small batches: several per kind
    assert result.exit_code == 0, result.output
    assert _counts(result.output) == {"refresh_tokens": 6, "sessions": 2, "one_time_tokens": 2, "login_failures": 2,
                                      "revoked_tokens": 1, "outbox_sent": 1, "outbox_dead": 1}
    with app.app_context():
        assert _present(seeded) == set(seeded) - GONE
        # A live session keeps its used refresh tokens: they are what detects a replayed stolen token.
        assert _refresh_tokens_of(seeded["live"]) == 3
        assert _refresh_tokens_of(seeded["revoked_long_ago"]) == 0

    again = runner.invoke(args=["cleanup"])
    assert again.exit_code == 0 and set(_counts(again.output).values()) == {0}


@pytest.mark.settings(CLEANUP_GRACE_HOURS=0, OUTBOX_RETENTION_DAYS=1)
def test_grace_and_retention_are_settings(app, runner, seeded):
    counts = _counts(runner.invoke(args=["cleanup"]).output)
    assert counts["sessions"] == 4 and counts["one_time_tokens"] == 3 and counts["outbox_sent"] == 1
    with app.app_context():
        assert {"live", "ott_live", "mail_sent_recently", "mail_retrying"} <= _present(seeded)


@pytest.mark.settings(CLEANUP_GRACE_HOURS=0, REFRESH_REUSE_GRACE_SECONDS=0)
def test_signed_in_users_keep_working_after_cleanup(runner, auth, client):
    """With no grace at all, a live session keeps its tokens, and its used ones still catch a replay."""
    pair = auth.signed_in()
    child = auth.refresh(pair["refresh_token"]).json
    assert runner.invoke(args=["cleanup"]).exit_code == 0
    assert client.get("/api/v1/users/me", headers=auth.bearer(child)).status_code == 200
    assert auth.refresh(child["refresh_token"]).status_code == 200
    assert auth.refresh(pair["refresh_token"]).json["error"]["code"] == "token_revoked"  # reuse still detected


@pytest.mark.postgres_only
def test_only_one_instance_cleans_at_a_time(app, runner, seeded):
    with app.app_context():
        with db.engine.connect() as other_instance:
            other_instance.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
            result = runner.invoke(args=["cleanup"])
            assert result.exit_code == 0 and "another instance" in result.output
            assert _present(seeded) == set(seeded)
            other_instance.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
            other_instance.commit()
    result = runner.invoke(args=["cleanup"])
    assert result.exit_code == 0 and _counts(result.output)["sessions"] == 2


@pytest.mark.postgres_only
def test_rows_held_by_a_request_are_skipped_not_waited_for(app, runner, seeded):
    with app.app_context():
        with db.engine.connect() as request_in_flight:
            request_in_flight.execute(text("SET statement_timeout = 0"))
            request_in_flight.execute(select(Session.id).where(Session.id == seeded["revoked_long_ago"])
                                      .with_for_update())
            done = threading.Event()
            outcome = {}

            def run():
                outcome["result"] = runner.invoke(args=["cleanup"])
                done.set()

            worker = threading.Thread(target=run)
            worker.start()
            finished_while_held = done.wait(timeout=10)
            request_in_flight.rollback()
            worker.join(timeout=30)
        assert finished_while_held, "cleanup waited for a row lock"
        assert outcome["result"].exit_code == 0, outcome["result"].output
        assert _counts(outcome["result"].output)["sessions"] == 1
        assert _present(seeded) >= {"revoked_long_ago", "live"}
    # The next run takes what was skipped.
    assert _counts(runner.invoke(args=["cleanup"]).output)["sessions"] == 1


@pytest.mark.settings(CLEANUP_GRACE_HOURS=0)
def test_a_revoked_access_token_stays_refused_after_cleanup(runner, auth, client):
    """A revoked `jti` is kept until the token would have expired, however soon after the revocation cleanup runs."""
    pair = auth.signed_in()
    assert client.post("/api/v1/auth/revoke", data={"token": pair["access_token"]}).status_code == 200
    assert runner.invoke(args=["cleanup"]).exit_code == 0
    response = client.get("/api/v1/users/me", headers=auth.bearer(pair))
    assert response.status_code == 401 and response.json["error"]["code"] == "token_revoked"
