"""Service clients: client_credentials, introspection (RFC 7662) and revocation (RFC 7009) with client auth."""
import base64
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from authsvc.extensions import db
from authsvc.models import RefreshToken, User, utcnow

TOKEN = "/api/v1/auth/token"
INTROSPECT = "/api/v1/auth/introspect"
REVOKE = "/api/v1/auth/revoke"


@pytest.fixture
def service(client, admin):
    """A service client with scopes `users:read` and `reports`: (client_id, secret, admin-API id)."""
    response = client.post("/api/v1/admin/clients", json={"name": "billing", "scopes": ["users:read", "reports"]},
                           headers=admin)
    assert response.status_code == 201
    body = response.json
    return body["client_id"], body["client_secret"], body["id"]


def _basic(client_id, secret):
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def test_secret_shown_once_and_never_listed(client, admin, service):
    listed = client.get("/api/v1/admin/clients", headers=admin).json
    assert [c["client_id"] for c in listed] == [service[0]] and "client_secret" not in listed[0]


@pytest.mark.parametrize("how", ["basic", "form"])
def test_client_credentials(client, service, how):
    client_id, secret, _ = service
    form = {"grant_type": "client_credentials", "scope": "reports"}
    if how == "basic":
        response = client.post(TOKEN, data=form, headers=_basic(client_id, secret))
    else:
        response = client.post(TOKEN, data={**form, "client_id": client_id, "client_secret": secret})
    assert response.status_code == 200
    assert response.json["scope"] == "reports" and "refresh_token" not in response.json
    import jwt
    claims = jwt.decode(response.json["access_token"], options={"verify_signature": False})
    assert claims["sub"] == client_id and claims["client_id"] == client_id and claims["scope"] == "reports"


@pytest.mark.parametrize("credentials, status, error", [
    ({"client_id": "svc_unknown", "client_secret": "x"}, 401, "invalid_client"),
    ("wrong-secret", 401, "invalid_client"),
    (None, 401, "invalid_client"),
    ("scope", 400, "invalid_scope"),
])
def test_client_credentials_errors(client, service, credentials, status, error):
    client_id, secret, _ = service
    form = {"grant_type": "client_credentials"}
    if credentials == "wrong-secret":
        form.update(client_id=client_id, client_secret=secret + "x")
    elif credentials == "scope":
        form.update(client_id=client_id, client_secret=secret, scope="admin:everything")
    elif credentials:
        form.update(credentials)
    response = client.post(TOKEN, data=form)
    assert response.status_code == status and response.json["error"] == error


@pytest.mark.parametrize("how", ["basic", "form"])
def test_nul_in_client_id_is_just_a_wrong_client(client, service, how):
    # Found by probing after fuzzing: a NUL in the client id was a 500 on PostgreSQL (refused in a query).
    form = {"grant_type": "client_credentials"}
    if how == "basic":
        response = client.post(TOKEN, data=form, headers=_basic("svc%00x", service[1]))
    else:
        response = client.post(TOKEN, data={**form, "client_id": "svc\x00x", "client_secret": service[1]})
    assert response.status_code == 401 and response.json["error"] == "invalid_client"
    introspected = client.post(INTROSPECT, data={"token": "x"}, headers=_basic("svc%00x", service[1]))
    assert introspected.status_code == 401 and introspected.json["error"] == "invalid_client"


def test_cli_creates_clients(runner, client):
    result = runner.invoke(args=["clients", "create", "reports", "--scope", "reports", "--scope", "users:read"])
    assert result.exit_code == 0
    lines = dict(line.split(": ", 1) for line in result.output.strip().splitlines())
    response = client.post(TOKEN, data={"grant_type": "client_credentials"},
                           headers=_basic(lines["client_id"], lines["client_secret"]))
    assert response.status_code == 200 and response.json["scope"] == "reports users:read"


@pytest.mark.parametrize("args", [
    ["x" * 201],  # the database's column is shorter: a stack trace on PostgreSQL, stored as given on SQLite
    [""],
    ["bad\x00name"],
    ["reports", *[arg for i in range(65) for arg in ("--scope", f"s{i}")]],
])
def test_cli_refuses_what_the_admin_api_refuses(runner, app, args):
    from authsvc.models import ServiceClient

    result = runner.invoke(args=["clients", "create", *args])
    assert result.exit_code == 1 and "Error:" in result.output and "Traceback" not in result.output
    with app.app_context():
        assert db.session.scalars(select(ServiceClient)).all() == []


@pytest.mark.parametrize("endpoint", [TOKEN, INTROSPECT, REVOKE])
def test_two_client_authentication_methods_at_once_are_refused(client, service, endpoint):
    """RFC 6749 §2.3: one method per request. Right Basic credentials do not make a wrong form secret pass."""
    client_id, secret, _ = service
    form = {"grant_type": "client_credentials", "token": "x", "client_id": client_id, "client_secret": secret + "x"}
    response = client.post(endpoint, data=form, headers=_basic(client_id, secret))
    assert response.status_code == 400 and response.json["error"] == "invalid_request"


def _introspect(client, service, token, **extra):
    return client.post(INTROSPECT, data={"token": token, **extra}, headers=_basic(*service[:2]))


def test_introspect_live_tokens(auth, client, service):
    pair = auth.signed_in()
    access = _introspect(client, service, pair["access_token"]).json
    assert access["active"] is True and access["token_type"] == "access_token" and access["sid"]
    refresh = _introspect(client, service, pair["refresh_token"], token_type_hint="refresh_token").json
    assert refresh["active"] is True and refresh["token_type"] == "refresh_token" and refresh["sub"] == access["sub"]
    own = client.post(TOKEN, data={"grant_type": "client_credentials"}, headers=_basic(*service[:2])).json
    answer = _introspect(client, service, own["access_token"]).json
    assert answer["active"] is True and answer["client_id"] == service[0] and answer["scope"] == "reports users:read"


def _dead_tokens(app, auth, client, admin, service):
    """Each kind of dead token, by name."""
    dead = {}
    pair = auth.signed_in("a@example.com")
    client.post("/api/v1/auth/logout", headers=auth.bearer(pair))
    dead["access after logout"], dead["refresh after logout"] = pair["access_token"], pair["refresh_token"]
    pair = auth.signed_in("b@example.com")
    dead["rotated refresh"] = pair["refresh_token"]
    auth.refresh(pair["refresh_token"])
    pair = auth.signed_in("c@example.com")
    client.post(REVOKE, data={"token": pair["access_token"], "token_type_hint": "access_token"})
    dead["revoked access"] = pair["access_token"]
    pair = auth.signed_in("d@example.com")
    with app.app_context():
        row = db.session.scalars(select(RefreshToken).order_by(RefreshToken.created_at.desc())).first()
        row.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    dead["expired refresh"] = pair["refresh_token"]
    pair = auth.signed_in("e@example.com")
    with app.app_context():  # behind the service's back: the account's sessions are not ended
        db.session.execute(update(User).where(User.email == "e@example.com").values(is_active=False))
        db.session.commit()
    dead["refresh of a disabled account"] = pair["refresh_token"]
    other = client.post("/api/v1/admin/clients", json={"name": "gone", "scopes": []}, headers=admin).json
    token = client.post(TOKEN, data={"grant_type": "client_credentials"},
                        headers=_basic(other["client_id"], other["client_secret"])).json["access_token"]
    client.delete(f"/api/v1/admin/clients/{other['id']}", headers=admin)
    dead["deleted client's token"] = token
    dead["foreign"] = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    dead["garbage"] = "not a token"
    return dead


def test_introspect_dead_tokens(app, auth, client, admin, service):
    for name, token in _dead_tokens(app, auth, client, admin, service).items():
        assert _introspect(client, service, token).json == {"active": False}, name


def test_deleted_clients_tokens_stop_working_at_the_gateway(client, admin, service):
    token = client.post(TOKEN, data={"grant_type": "client_credentials"}, headers=_basic(*service[:2])).json
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    assert client.get("/api/v1/auth/verify", headers=headers).status_code == 200
    assert client.delete(f"/api/v1/admin/clients/{service[2]}", headers=admin).status_code == 204
    assert client.get("/api/v1/auth/verify", headers=headers).status_code == 401


@pytest.mark.settings(INTROSPECTION_SCOPE="introspect")
def test_introspection_can_be_kept_to_clients_granted_a_scope(auth, client, admin, service):
    """INTROSPECTION_SCOPE: a client without it is refused (403), before the token is even read."""
    token = auth.signed_in()["access_token"]
    refused = _introspect(client, service, token)
    assert refused.status_code == 403 and refused.json["error"] == "insufficient_scope"
    allowed = client.post("/api/v1/admin/clients", json={"name": "gateway", "scopes": ["introspect"]},
                          headers=admin).json
    answer = _introspect(client, (allowed["client_id"], allowed["client_secret"]), token)
    assert answer.status_code == 200 and answer.json["active"] is True


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic " + base64.b64encode(b"svc_x:nope").decode()}])
def test_introspection_needs_a_client(client, headers):
    response = client.post(INTROSPECT, data={"token": "x"}, headers=headers)
    assert response.status_code == 401 and response.json["error"] == "invalid_client"


def test_revoke_with_wrong_client_credentials_is_refused(auth, client):
    pair = auth.signed_in()
    response = client.post(REVOKE, data={"token": pair["refresh_token"], "client_id": "svc_x", "client_secret": "no"})
    assert response.status_code == 401
    assert auth.refresh(pair["refresh_token"]).status_code == 200


@pytest.mark.parametrize("scopes", [["has space"], [""], ["reports", "naïve"], ["a,b"]])
def test_malformed_scopes_are_refused(client, admin, scopes):
    """A client gets only well-formed scopes: they travel space-separated in its tokens."""
    response = client.post("/api/v1/admin/clients", json={"name": "svc", "scopes": scopes}, headers=admin)
    assert response.status_code == 422 and response.json["error"]["code"] == "validation_error"
    assert client.get("/api/v1/admin/clients", headers=admin).json == []


@pytest.mark.parametrize("client_id", [str(uuid.uuid4()), "nope"])
def test_deleting_an_unknown_client_is_404(client, admin, service, client_id):
    """An unknown (or malformed) client id is a 404 that deletes nothing."""
    response = client.delete(f"/api/v1/admin/clients/{client_id}", headers=admin)
    assert response.status_code == 404 and response.json["error"]["code"] == "not_found"
    assert [c["client_id"] for c in client.get("/api/v1/admin/clients", headers=admin).json] == [service[0]]


@pytest.mark.parametrize("method, path", [("get", "/api/v1/users/me"), ("get", "/api/v1/auth/sessions"),
                                          ("post", "/api/v1/auth/logout")])
def test_a_clients_token_is_not_a_users(client, service, method, path):
    """A service client's access token opens no endpoint that acts as a user: 401, never a 500."""
    token = client.post(TOKEN, data={"grant_type": "client_credentials"}, headers=_basic(*service[:2])).json
    response = getattr(client, method)(path, headers={"Authorization": f"Bearer {token['access_token']}"})
    assert response.status_code == 401 and response.json["error"]["code"] == "unauthorized"
