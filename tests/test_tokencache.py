"""The per-worker memory of token checks: a revocation is refused at once by every worker of the instance that
made it, and within TOKEN_CHECK_CACHE_SECONDS by another instance; a change made behind the service's back is
remembered wrongly for at most that long."""
import time

import pytest
from sqlalchemy import create_engine, text

from authsvc.services import tokencache
from authsvc.services.tokencache import Signal, TokenCache

from .conftest import PASSWORD, dispose, make_app, remember, signed_with_our_key

VERIFY = "/api/v1/auth/verify"


def _peer(request, database_url, instance_path):
    """Another app on `database_url` with the test's own settings marker."""
    marker = request.node.get_closest_marker("settings")
    return make_app(database_url, instance_path, **(marker.kwargs if marker else {}))


@pytest.fixture
def worker(request, app, database_url, tmp_path):
    """A second app on the same database and instance folder: another gunicorn worker of the same instance."""
    second = _peer(request, database_url, tmp_path / "instance")
    yield second.test_client()
    dispose(second)


@pytest.fixture
def elsewhere(request, app, database_url, tmp_path):
    """An app on the same database with its own instance folder: another instance (another host)."""
    other = _peer(request, database_url, tmp_path / "elsewhere")
    yield other.test_client()
    dispose(other)


def _revoke_by_hand(database_url: str, access_token_sid: str) -> None:
    """End a session with SQL on a connection of its own, as an operator might: no signal is fired."""
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE sessions SET revoked_at = CURRENT_TIMESTAMP WHERE id = :id"),
                     {"id": access_token_sid if database_url.startswith("postgresql") else
                      access_token_sid.replace("-", "")})
    engine.dispose()


def _sid(client, pair) -> str:
    mine = client.get("/api/v1/auth/sessions", headers={"Authorization": "Bearer " + pair["access_token"]}).json
    return next(s["id"] for s in mine if s["current"])


def _other_session(client, bearer) -> str:
    return next(s["id"] for s in client.get("/api/v1/auth/sessions", headers=bearer).json if not s["current"])


# How each revocation is made with the first session's token, and which sessions' tokens it ends.
REVOCATIONS = {
    "logout": (lambda client, admin, bearer, user_id: client.post("/api/v1/auth/logout", headers=bearer),
               {"first"}),
    "logout_all": (lambda client, admin, bearer, user_id: client.post("/api/v1/auth/logout-all", headers=bearer),
                   {"first", "second"}),
    "end_session": (lambda client, admin, bearer, user_id: client.delete(
        "/api/v1/auth/sessions/" + _other_session(client, bearer), headers=bearer), {"second"}),
    "password_change": (lambda client, admin, bearer, user_id: client.post(
        "/api/v1/users/me/password", headers=bearer,
        json={"current_password": PASSWORD, "new_password": "another long passphrase"}), {"second"}),
    "deactivate": (lambda client, admin, bearer, user_id: client.patch(
        f"/api/v1/admin/users/{user_id}", headers=admin, json={"is_active": False}), {"first", "second"}),
    "delete": (lambda client, admin, bearer, user_id: client.delete(
        f"/api/v1/admin/users/{user_id}", headers=admin), {"first", "second"}),
}


@pytest.mark.parametrize("path", [VERIFY, "/api/v1/users/me"])
@pytest.mark.parametrize("how", sorted(REVOCATIONS))
def test_every_revocation_is_refused_at_once_by_the_other_workers(client, auth, admin, worker, how, path):
    revoke, ended = REVOCATIONS[how]
    first = auth.bearer(auth.signed_in())
    tokens = {"first": first, "second": auth.bearer(auth.login().json)}
    user_id = client.get("/api/v1/users/me", headers=first).json["id"]
    for bearer in tokens.values():  # remembered as live by the other worker
        assert worker.get(path, headers=bearer).status_code == 200
    before = _signal(worker)
    response = revoke(client, admin, first, user_id)
    assert response.status_code in (200, 204), response.json
    assert _signal(worker) != before  # the answers below do not hang on the memory having expired
    answers = {name: worker.get(path, headers=bearer).status_code for name, bearer in tokens.items()}
    assert answers == {name: 401 if name in ended else 200 for name in tokens}


def test_a_revoked_access_token_is_refused_at_once_by_the_other_workers(client, auth, worker):
    """RFC 7009 revocation of one access token (its `jti`)."""
    pair = auth.signed_in()
    assert worker.get(VERIFY, headers=auth.bearer(pair)).status_code == 200
    response = client.post("/api/v1/auth/revoke", data={"token": pair["access_token"],
                                                        "token_type_hint": "access_token"})
    assert response.status_code == 200
    assert worker.get(VERIFY, headers=auth.bearer(pair)).status_code == 401


@pytest.mark.settings(TOKEN_CHECK_CACHE_SECONDS=0.3)
def test_another_instance_refuses_within_the_cache_period(client, auth, elsewhere):
    pair = auth.signed_in()
    bearer = auth.bearer(pair)
    assert elsewhere.get(VERIFY, headers=bearer).status_code == 200
    assert client.post("/api/v1/auth/logout", headers=bearer).status_code == 204
    assert client.get(VERIFY, headers=bearer).status_code == 401  # the instance that revoked: at once
    time.sleep(0.35)
    assert elsewhere.get(VERIFY, headers=bearer).status_code == 401


@pytest.mark.parametrize("period", [
    pytest.param(0.9, marks=pytest.mark.settings(TOKEN_CHECK_CACHE_SECONDS=0.9), id="remembered"),
    pytest.param(0, marks=pytest.mark.settings(TOKEN_CHECK_CACHE_SECONDS=0), id="off"),
])
def test_a_change_behind_the_services_back_is_remembered_for_at_most_the_period(client, auth, database_url,
                                                                               period):
    pair = auth.signed_in()
    bearer, sid = auth.bearer(pair), _sid(client, pair)
    assert client.get(VERIFY, headers=bearer).status_code == 200
    _revoke_by_hand(database_url, sid)
    # Remembered as live for the period (the memory at work); at once with the memory off.
    assert client.get(VERIFY, headers=bearer).status_code == (200 if period else 401)
    time.sleep(period + 0.05)
    assert client.get(VERIFY, headers=bearer).status_code == 401


def test_an_unusable_signal_file_turns_the_memory_off(database_url, tmp_path, caplog):
    app = make_app(database_url, tmp_path / "instance", TOKEN_CHECK_SIGNAL_FILE=str(tmp_path / "no" / "such"))
    assert app.extensions["authsvc.tokencache"].signal is None
    assert "token checks are not cached" in caplog.text
    dispose(app)


def test_an_answer_computed_while_a_revocation_lands_is_not_remembered(tmp_path):
    signal = Signal(str(tmp_path / "signal"))
    memory = TokenCache(10.0, signal)

    def racing():
        Signal(str(tmp_path / "signal")).fire()  # another process revokes while this one asks the database
        return "live"

    assert memory.remember("k", racing, lambda _: time.monotonic() + 10) == "live"
    assert memory.remember("k", lambda: "revoked", lambda _: time.monotonic() + 10) == "revoked"
    assert memory.remember("k", lambda: "other", lambda _: time.monotonic() + 10) == "revoked"  # now kept


def test_answers_never_outlive_their_deadline(tmp_path):
    memory = TokenCache(10.0, Signal(str(tmp_path / "signal")))
    assert memory.remember("k", lambda: 1, lambda _: time.monotonic() + 0.05) == 1
    assert memory.remember("k", lambda: 2, lambda _: None) == 1
    time.sleep(0.06)
    assert memory.remember("k", lambda: 3, lambda _: None) == 3  # expired; None: 3 is not kept
    assert memory.remember("k", lambda: 4, lambda _: None) == 4


def test_a_lasting_answer_outlives_the_period_and_the_signal_but_not_its_deadline(tmp_path):
    signal = Signal(str(tmp_path / "signal"))
    memory = TokenCache(0.05, signal)
    assert memory.remember("sig", lambda: "verified", lambda _: time.monotonic() + 0.3, lasting=True) == "verified"
    assert memory.remember("rev", lambda: "live", lambda _: time.monotonic() + 0.3) == "live"
    signal.fire()
    time.sleep(0.1)  # past the period
    assert memory.remember("sig", lambda: "again", lambda _: time.monotonic() + 0.3, lasting=True) == "verified"
    assert memory.remember("rev", lambda: "revoked", lambda _: time.monotonic() + 0.3) == "revoked"
    time.sleep(0.25)  # past its own deadline
    assert memory.remember("sig", lambda: "again", lambda _: None, lasting=True) == "again"


@pytest.mark.settings(SIGNING_KEY_CACHE_SECONDS=0)
def test_a_verified_token_is_not_remembered_past_the_key_cache(app, auth):
    """With no key caching, every check verifies the signature again (a key taken out counts at once)."""
    from authsvc.services import tokencache, tokens

    pair = auth.signed_in()
    with app.test_request_context():
        assert tokens.decode_access_token(pair["access_token"]) is not None
        assert ("decoded", pair["access_token"]) not in tokencache.cache()._entries


@pytest.mark.settings(TOKEN_CHECK_CACHE_SECONDS=0.9)
def test_a_refresh_leaves_the_other_workers_memory_alone(client, auth, worker, database_url):
    """Renewing tokens touches the session row but revokes nothing: it must not wipe every worker's memory."""
    pair, other = auth.signed_in(), auth.signed_in("other@example.com")
    bearer, sid = auth.bearer(pair), _sid(client, pair)
    assert worker.get(VERIFY, headers=bearer).status_code == 200
    _revoke_by_hand(database_url, sid)  # unseen by the signal, so only the memory says "live"
    before = _signal(worker)
    assert auth.refresh(other["refresh_token"]).status_code == 200
    assert _signal(worker) == before
    assert worker.get(VERIFY, headers=bearer).status_code == 200  # still remembered: nothing was signalled


def _signal(test_client) -> bytes:
    return test_client.application.extensions["authsvc.tokencache"].signal.read()


def test_deleting_a_service_client_is_refused_at_once_by_the_other_workers(client, admin, worker):
    made = client.post("/api/v1/admin/clients", json={"name": "svc", "scopes": ["reports"]}, headers=admin).json
    remember(made["client_secret"])
    issued = client.post("/api/v1/auth/token", data={"grant_type": "client_credentials", "client_id":
                         made["client_id"], "client_secret": made["client_secret"]}).json
    bearer = {"Authorization": "Bearer " + issued["access_token"]}
    assert worker.get(VERIFY, headers=bearer).status_code == 200
    before = _signal(worker)
    assert client.delete(f"/api/v1/admin/clients/{made['id']}", headers=admin).status_code == 204
    assert _signal(worker) != before
    assert worker.get(VERIFY, headers=bearer).status_code == 401


@pytest.mark.settings(REFRESH_REUSE_GRACE_SECONDS=0)
def test_refresh_reuse_is_refused_at_once_by_the_other_workers(client, auth, worker):
    pair = auth.signed_in()
    bearer = auth.bearer(pair)
    assert worker.get(VERIFY, headers=bearer).status_code == 200
    assert auth.refresh(pair["refresh_token"]).status_code == 200
    before = _signal(worker)
    assert auth.refresh(pair["refresh_token"]).json["error"]["code"] == "token_revoked"  # reuse ends the session
    assert _signal(worker) != before
    assert worker.get(VERIFY, headers=bearer).status_code == 401


def test_a_verified_token_is_refused_once_it_expires(app, auth, client):
    """The memory keeps a verified token no longer than its `exp`: past it the answer is `token_expired`."""
    expires = int(time.time()) + 2
    token = signed_with_our_key(app, auth.signed_in(), exp=expires)
    remember(token)
    headers = {"Authorization": "Bearer " + token}
    assert client.get("/api/v1/users/me", headers=headers).status_code == 200
    time.sleep(max(0.0, expires - time.time()) + 0.2)
    response = client.get("/api/v1/users/me", headers=headers)
    assert response.status_code == 401 and response.json["error"]["code"] == "token_expired"


def test_a_full_memory_is_emptied(tmp_path, monkeypatch):
    """At MAX_ENTRIES answers the memory starts afresh rather than growing: an earlier answer is computed again."""
    monkeypatch.setattr(tokencache, "MAX_ENTRIES", 2)
    memory = TokenCache(10.0, Signal(str(tmp_path / "signal")))
    for key in ("a", "b", "c"):
        assert memory.remember(key, lambda: "first", lambda _: time.monotonic() + 10) == "first"
    assert memory.remember("c", lambda: "again", lambda _: time.monotonic() + 10) == "first"
    assert memory.remember("a", lambda: "again", lambda _: time.monotonic() + 10) == "again"
