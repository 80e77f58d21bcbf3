"""Refresh-token rotation: single use, reuse detection, the grace interval, expiry, and the concurrent race."""
import threading
import time
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import func, select, update

from authsvc.extensions import db
from authsvc.models import RefreshToken, Session, User, utcnow
from authsvc.services import keys
from authsvc.services.keys import KeyRing
from authsvc.services.tokens import hash_token

from .conftest import remember


def test_refresh_rotates(auth, client):
    pair = auth.signed_in()
    response = auth.refresh(pair["refresh_token"])
    assert response.status_code == 200
    new = response.json
    assert new["refresh_token"] != pair["refresh_token"]
    assert new["access_token"] != pair["access_token"]
    assert client.get("/api/v1/users/me", headers=auth.bearer(new)).status_code == 200
    assert auth.refresh(new["refresh_token"]).status_code == 200


@pytest.mark.settings(REFRESH_REUSE_GRACE_SECONDS=0)
def test_reuse_revokes_the_whole_session(auth, client):
    pair = auth.signed_in()
    child = auth.refresh(pair["refresh_token"]).json
    reused = auth.refresh(pair["refresh_token"])
    assert reused.status_code == 401
    assert reused.json["error"]["code"] == "token_revoked"
    # The thief's replay also killed the legitimate branch: child refresh and access tokens are dead.
    assert auth.refresh(child["refresh_token"]).json["error"]["code"] == "token_revoked"
    for tokens in (pair, child):
        me = client.get("/api/v1/users/me", headers=auth.bearer(tokens))
        assert me.status_code == 401 and me.json["error"]["code"] == "token_revoked"


def test_duplicate_within_grace_gets_the_same_child(auth):
    pair = auth.signed_in()
    first = auth.refresh(pair["refresh_token"]).json
    second = auth.refresh(pair["refresh_token"])
    assert second.status_code == 200
    assert second.json["refresh_token"] == first["refresh_token"]
    assert auth.refresh(first["refresh_token"]).status_code == 200


def test_reuse_after_grace_interval_is_detected(app, auth):
    pair = auth.signed_in()
    auth.refresh(pair["refresh_token"])
    with app.app_context():  # move the first use back in time, past the grace interval
        row = db.session.scalars(select(RefreshToken).where(RefreshToken.used_at.is_not(None))).one()
        row.used_at -= timedelta(seconds=app.config["REFRESH_REUSE_GRACE_SECONDS"] + 1)
        db.session.commit()
    assert auth.refresh(pair["refresh_token"]).json["error"]["code"] == "token_revoked"


def test_expired_refresh_token(app, auth):
    pair = auth.signed_in()
    with app.app_context():
        db.session.scalars(select(RefreshToken)).one().expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    response = auth.refresh(pair["refresh_token"])
    assert response.status_code == 401
    assert response.json["error"]["code"] == "token_expired"


def test_refresh_after_logout_is_revoked(auth, client):
    pair = auth.signed_in()
    client.post("/api/v1/auth/logout", headers=auth.bearer(pair))
    assert auth.refresh(pair["refresh_token"]).json["error"]["code"] == "token_revoked"


@pytest.mark.postgres_only
def test_on_postgresql_a_rotation_is_one_statement_on_its_own(app, auth, monkeypatch):
    """The whole winning rotation in one round trip, committed by itself (no BEGIN, no COMMIT, no pool checkout)."""
    pair = auth.signed_in()
    seen, me = [], threading.get_ident()
    execute = psycopg.Cursor.execute

    def record(cursor, query, *args, **kwargs):  # everything sent, through SQLAlchemy or straight (hotread.py)
        if threading.get_ident() == me:  # not the mail sender's thread
            seen.append((str(query).split()[0].upper(), cursor.connection.autocommit))
        return execute(cursor, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", record)
    assert auth.refresh(pair["refresh_token"]).status_code == 200
    assert seen == [("WITH", True)]


def _unused(app, refresh_token: str) -> bool:
    with app.app_context():
        return db.session.scalars(select(RefreshToken.used_at).where(
            RefreshToken.token_hash == hash_token(refresh_token))).one() is None


def test_a_refused_rotation_claims_nothing(app, auth, client):
    """A live token of an ended session is refused and stays unused: nothing of the rotation is kept."""
    pair = auth.signed_in()
    client.post("/api/v1/auth/logout", headers=auth.bearer(pair))
    assert auth.refresh(pair["refresh_token"]).json["error"]["code"] == "token_revoked"
    assert _unused(app, pair["refresh_token"])

@pytest.mark.settings(REFRESH_REUSE_GRACE_SECONDS=0)
def test_without_a_signing_key_a_rotation_is_refused_and_not_spent(app, auth):
    """A rotation that cannot be answered (no signing key: 503) keeps its token: the retry, even past the reuse
    grace, rotates instead of ending the session as a reuse."""
    pair = auth.signed_in()
    keyring = app.extensions["authsvc.keys"]
    loaded = keyring["ring"]
    keyring["ring"] = KeyRing(loaded_at=time.monotonic())  # fresh, so not reloaded: a ring with no active key
    response = auth.refresh(pair["refresh_token"])
    assert response.status_code == 503 and response.json["error"]["code"] == "unavailable"
    assert _unused(app, pair["refresh_token"])
    keyring["ring"] = loaded
    assert auth.refresh(pair["refresh_token"]).status_code == 200


@pytest.mark.settings(SIGNING_KEY_CACHE_SECONDS=0, REFRESH_REUSE_GRACE_SECONDS=0)
def test_a_rotation_is_signed_with_the_keys_checked_before_its_claim(app, auth, monkeypatch):
    """No reload of the keys between the check and the signature: a reload failing there (here every reload but
    the first) would leave a claimed rotation unanswered."""
    pair = auth.signed_in()
    load, loads = keys._load, []

    def first_load_only():
        loads.append(1)
        if len(loads) > 1:
            raise keys.KeysUnavailable("SECRET_KEY does not decrypt the active signing key")
        return load()

    monkeypatch.setattr(keys, "_load", first_load_only)
    assert auth.refresh(pair["refresh_token"]).status_code == 200
    assert loads == [1]


def test_a_disabled_user_cannot_refresh(app, auth):
    pair = auth.signed_in()
    with app.app_context():
        db.session.execute(update(User).values(is_active=False))
        db.session.commit()
    response = auth.refresh(pair["refresh_token"])
    assert response.status_code == 403 and response.json["error"]["code"] == "account_disabled"
    assert _unused(app, pair["refresh_token"])


def test_rotation_records_the_client_and_keeps_its_agent_when_none_is_sent(app, auth, client):
    pair = auth.signed_in()
    renewed = client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]},
                          headers={"User-Agent": "agent/2"}, environ_base={"REMOTE_ADDR": "10.0.0.7"}).json
    remember(renewed["access_token"], renewed["refresh_token"])
    with app.app_context():
        assert db.session.execute(select(Session.user_agent, Session.ip_address)).one() == ("agent/2", "10.0.0.7")
    again = client.post("/api/v1/auth/refresh", json={"refresh_token": renewed["refresh_token"]},
                        headers={"User-Agent": ""})
    assert again.status_code == 200
    remember(again.json["access_token"], again.json["refresh_token"])
    with app.app_context():
        assert db.session.scalars(select(Session.user_agent)).one() == "agent/2"


@pytest.mark.parametrize("body, status, code", [
    ({"refresh_token": "never-issued"}, 401, "unauthorized"),
    ({"refresh_token": ""}, 422, "validation_error"),
    ({"refresh_token": None}, 422, "validation_error"),
    ({}, 422, "validation_error"),
    ({"refresh_token": "x" * 600}, 422, "validation_error"),
])
def test_bad_refresh_requests(client, body, status, code):
    response = client.post("/api/v1/auth/refresh", json=body)
    assert response.status_code == status
    assert response.json["error"]["code"] == code


def test_refresh_token_stored_hashed(app, auth):
    pair = auth.signed_in()
    with app.app_context():
        hashes = db.session.scalars(select(RefreshToken.token_hash)).all()
    assert pair["refresh_token"] not in hashes and len(hashes) == 1


def _race(app, token: str, threads: int) -> list:
    barrier = threading.Barrier(threads)
    results = [None] * threads

    def worker(i):
        client = app.test_client()
        barrier.wait()
        response = client.post("/api/v1/auth/refresh", json={"refresh_token": token})
        results[i] = (response.status_code, response.json)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
    return results


def _live_children(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(RefreshToken).where(
            RefreshToken.parent_id.is_not(None), RefreshToken.used_at.is_(None)))


def test_concurrent_refreshes_yield_one_live_descendant(app, auth):
    """Real threads against the real database: within the grace interval every caller gets the same child."""
    pair = auth.signed_in()
    results = _race(app, pair["refresh_token"], threads=12)
    assert all(status == 200 for status, _ in results), results
    assert len({body["refresh_token"] for _, body in results}) == 1
    assert _live_children(app) == 1


@pytest.mark.settings(REFRESH_REUSE_GRACE_SECONDS=0)
def test_concurrent_refreshes_without_grace_have_one_winner(app, auth):
    """Without a grace interval, exactly one caller rotates; the others count as reuse and end the session."""
    pair = auth.signed_in()
    results = _race(app, pair["refresh_token"], threads=12)
    statuses = sorted(status for status, _ in results)
    assert statuses.count(200) == 1, results
    assert all(body["error"]["code"] == "token_revoked" for status, body in results if status != 200)
    with app.app_context():
        assert db.session.scalars(select(Session)).one().revoked_reason == "refresh_reused"


def _end_by(app, client, pair, how: str) -> None:
    """End the session of `pair`, or its account, or let it expire (behind the service's back for the last two)."""
    if how == "logout":
        assert client.post("/api/v1/auth/logout", headers={"Authorization": "Bearer " + pair["access_token"]}
                           ).status_code == 204
        return
    with app.app_context():
        if how == "disable":
            db.session.execute(update(User).values(is_active=False))
        else:
            db.session.execute(update(Session).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()


@pytest.mark.parametrize("how, status, code", [
    ("logout", 401, "token_revoked"), ("expire", 401, "token_revoked"), ("disable", 403, "account_disabled"),
])
def test_a_duplicate_within_grace_is_refused_once_the_session_ended(app, auth, client, how, status, code):
    """The grace interval hands the child back only while its session is live and its account active."""
    pair = auth.signed_in()
    child = auth.refresh(pair["refresh_token"]).json
    _end_by(app, client, child, how)
    response = auth.refresh(pair["refresh_token"])
    assert response.status_code == status and response.json["error"]["code"] == code


@pytest.mark.parametrize("how, status, code", [
    ("logout", 401, "token_revoked"), ("expire", 401, "token_revoked"), ("disable", 403, "account_disabled"),
])
def test_a_token_of_an_ended_session_rotates_nothing_while_others_are_signed_in(app, auth, client, how, status, code):
    """Other users' live sessions change nothing: a token whose own session ended (or whose account is disabled)
    is refused and stays unused."""
    pair = auth.signed_in("a@example.com")
    _end_by(app, client, pair, how)
    auth.signed_in("b@example.com")
    response = auth.refresh(pair["refresh_token"])
    assert response.status_code == status and response.json["error"]["code"] == code
    assert _unused(app, pair["refresh_token"])


def test_a_rotation_renews_its_own_session_only(app, auth, client):
    """Renewing one session's tokens leaves every other session (its client and its expiry) as it was."""
    auth.register("b@example.com")
    assert auth.login("b@example.com", headers={"User-Agent": "agent/b"}).status_code == 200
    others = (select(Session.user_agent, Session.ip_address, Session.expires_at)
              .join(User, User.id == Session.user_id).where(User.email == "b@example.com"))
    with app.app_context():
        before = db.session.execute(others).one()
    pair = auth.signed_in()
    renewed = client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]},
                          headers={"User-Agent": "agent/2"}, environ_base={"REMOTE_ADDR": "10.0.0.7"})
    assert renewed.status_code == 200
    remember(renewed.json["access_token"], renewed.json["refresh_token"])
    with app.app_context():
        assert db.session.execute(others).one() == before
