"""Sessions: listing, ending one, logout, logout-all, and their effect on live access tokens."""
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from authsvc.extensions import db
from authsvc.models import Session, utcnow

SESSIONS = "/api/v1/auth/sessions"


def _me(client, auth, pair):
    return client.get("/api/v1/users/me", headers=auth.bearer(pair))


def test_list_marks_current(auth, client):
    first = auth.signed_in()
    second = auth.login().json
    listed = client.get("/api/v1/auth/sessions", headers=auth.bearer(second)).json
    assert len(listed) == 2
    assert [s["current"] for s in listed].count(True) == 1
    assert set(listed[0]) == {"id", "user_agent", "ip_address", "created_at", "last_used_at", "current"}
    assert first != second


def test_nul_in_user_agent_is_dropped(auth, client, admin):
    # Found by probing after fuzzing: a NUL in User-Agent (gunicorn refuses one; the development server lets it
    # through) made the session and audit inserts fail on PostgreSQL: a 500 on login.
    auth.register()
    pair = auth.login(headers={"User-Agent": "agent\x00smith"})
    assert pair.status_code == 200, pair.json
    listed = client.get("/api/v1/auth/sessions", headers=auth.bearer(pair.json)).json
    assert [s["user_agent"] for s in listed] == ["agentsmith"]
    refreshed = client.post("/api/v1/auth/refresh", json={"refresh_token": pair.json["refresh_token"]},
                            headers={"User-Agent": "agent\x00jones"})
    assert refreshed.status_code == 200, refreshed.json
    events = client.get("/api/v1/admin/audit?event=login_succeeded", headers=admin).json["items"]
    assert "agentsmith" in [e["user_agent"] for e in events]


def test_logout_stops_access_and_refresh_at_once(auth, client):
    pair = auth.signed_in()
    other = auth.login().json
    assert client.post("/api/v1/auth/logout", headers=auth.bearer(pair)).status_code == 204
    assert _me(client, auth, pair).json["error"]["code"] == "token_revoked"
    assert auth.refresh(pair["refresh_token"]).status_code == 401
    assert _me(client, auth, other).status_code == 200


def test_logout_all_ends_every_session(auth, client):
    pairs = [auth.signed_in()] + [auth.login().json for _ in range(2)]
    assert client.post("/api/v1/auth/logout-all", headers=auth.bearer(pairs[0])).status_code == 204
    for pair in pairs:
        assert _me(client, auth, pair).status_code == 401
        assert auth.refresh(pair["refresh_token"]).status_code == 401


def test_delete_own_session(auth, client):
    mine = auth.signed_in()
    other = auth.login().json
    listed = client.get("/api/v1/auth/sessions", headers=auth.bearer(mine)).json
    other_id = next(s["id"] for s in listed if not s["current"])
    response = client.delete(f"/api/v1/auth/sessions/{other_id}", headers=auth.bearer(mine))
    assert response.status_code == 204
    assert _me(client, auth, other).json["error"]["code"] == "token_revoked"
    assert _me(client, auth, mine).status_code == 200
    assert len(client.get("/api/v1/auth/sessions", headers=auth.bearer(mine)).json) == 1


@pytest.mark.parametrize("session_id", [str(uuid.uuid4()), "not-a-uuid", "0"])
def test_delete_unknown_session_is_404(auth, client, session_id):
    pair = auth.signed_in()
    response = client.delete(f"/api/v1/auth/sessions/{session_id}", headers=auth.bearer(pair))
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_another_users_session_is_404(auth, client):
    alice = auth.signed_in("alice@example.com")
    bob = auth.signed_in("bob@example.com")
    bob_session = client.get("/api/v1/auth/sessions", headers=auth.bearer(bob)).json[0]["id"]
    response = client.delete(f"/api/v1/auth/sessions/{bob_session}", headers=auth.bearer(alice))
    assert response.status_code == 404
    assert _me(client, auth, bob).status_code == 200


@pytest.mark.parametrize("method, path", [
    ("get", "/api/v1/auth/sessions"), ("post", "/api/v1/auth/logout"), ("post", "/api/v1/auth/logout-all"),
    ("delete", f"/api/v1/auth/sessions/{uuid.uuid4()}"), ("get", "/api/v1/users/me"),
])
@pytest.mark.parametrize("header", [None, "Bearer", "Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer a.b.c"])
def test_endpoints_need_a_valid_token(client, method, path, header):
    headers = {"Authorization": header} if header else {}
    response = getattr(client, method)(path, headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"


def test_an_ended_session_cannot_be_ended_again(auth, client):
    """A session already ended is 404 like an unknown one: only live sessions can be ended."""
    mine = auth.signed_in()
    auth.login()
    other_id = next(s["id"] for s in client.get(SESSIONS, headers=auth.bearer(mine)).json if not s["current"])
    assert client.delete(f"{SESSIONS}/{other_id}", headers=auth.bearer(mine)).status_code == 204
    again = client.delete(f"{SESSIONS}/{other_id}", headers=auth.bearer(mine))
    assert again.status_code == 404 and again.json["error"]["code"] == "not_found"


def test_an_expired_session_is_not_listed(app, auth, client):
    """The list holds the sessions that can still be used: one past its expiry is gone from it."""
    mine = auth.signed_in()
    other = auth.login().json
    other_id = next(s["id"] for s in client.get(SESSIONS, headers=auth.bearer(other)).json if s["current"])
    with app.app_context():
        db.session.execute(update(Session).where(Session.id == uuid.UUID(other_id))
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    assert [s["current"] for s in client.get(SESSIONS, headers=auth.bearer(mine)).json] == [True]
