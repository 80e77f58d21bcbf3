"""Admin API: permissions, user management, pagination, and the last admin."""
import uuid

import pytest

from authsvc.extensions import db
from authsvc.models import Role

from .conftest import PASSWORD

USERS = "/api/v1/admin/users"


def _make(client, admin, email, **extra):
    response = client.post(USERS, json={"email": email, "password": PASSWORD, **extra}, headers=admin)
    assert response.status_code == 201, response.json
    return response.json


@pytest.mark.parametrize("method, path", [
    ("get", USERS), ("post", USERS), ("get", f"{USERS}/{uuid.uuid4()}"), ("patch", f"{USERS}/{uuid.uuid4()}"),
    ("delete", f"{USERS}/{uuid.uuid4()}"), ("get", "/api/v1/admin/clients"), ("post", "/api/v1/admin/clients"),
])
def test_non_admins_are_forbidden(auth, client, method, path):
    pair = auth.signed_in()
    response = getattr(client, method)(path, json={}, headers=auth.bearer(pair))
    assert response.status_code == 403 and response.json["error"]["code"] == "forbidden"
    assert getattr(client, method)(path, json={}).status_code == 401


def test_role_permissions_grant_access(app, auth, client, admin):
    with app.app_context():
        db.session.add(Role(name="support", permissions=["users:read"]))
        db.session.commit()
    _make(client, admin, "helper@example.com", roles=["support"])
    helper = auth.bearer(auth.login("helper@example.com").json)
    assert client.get(USERS, headers=helper).status_code == 200
    assert client.post(USERS, json={"email": "x@example.com"}, headers=helper).status_code == 403


@pytest.fixture
def support(app, auth, client, admin) -> dict:
    """Headers of a signed-in user whose `support` role may read and write users (and nothing else)."""
    with app.app_context():
        db.session.add(Role(name="support", permissions=["users:read", "users:write"]))
        db.session.add(Role(name="auditor", permissions=["audit:read"]))
        db.session.commit()
    _make(client, admin, "helper@example.com", roles=["support"])
    return auth.bearer(auth.login("helper@example.com").json)


def _id(client, admin, email) -> str:
    return client.get(USERS, query_string={"q": email}, headers=admin).json["items"][0]["id"]


@pytest.mark.parametrize("change", [
    {"roles": ["support", "admin"]},  # granting itself admin
    {"roles": ["support", "auditor"]},  # or a permission it does not hold
])
def test_no_one_grants_themselves_more_than_they_hold(client, admin, support, change):
    me = _id(client, admin, "helper@example.com")
    response = client.patch(f"{USERS}/{me}", json=change, headers=support)
    assert response.status_code == 403 and response.json["error"]["code"] == "forbidden"
    assert client.get(f"{USERS}/{me}", headers=admin).json["roles"] == ["support"]
    made = client.post(USERS, json={"email": "new@example.com", "password": PASSWORD, **change}, headers=support)
    assert made.status_code == 403 and made.json["error"]["code"] == "forbidden"
    assert client.get(USERS, query_string={"q": "new@"}, headers=admin).json["total"] == 0


@pytest.mark.parametrize("roles", [
    ["support", "editor"],  # a role without permissions, which a gateway may still guard a whole app with
    ["support", "brand-new"],  # a role nobody holds yet
])
def test_a_role_grants_no_role_it_does_not_hold(client, admin, support, roles):
    made = client.post(USERS, json={"email": "new@example.com", "password": PASSWORD, "roles": roles},
                       headers=support)
    assert made.status_code == 403 and made.json["error"]["code"] == "forbidden"
    other = _make(client, admin, "other@example.com", roles=["support"])
    changed = client.patch(f"{USERS}/{other['id']}", json={"roles": roles}, headers=support)
    assert changed.status_code == 403
    assert client.get(f"{USERS}/{other['id']}", headers=admin).json["roles"] == ["support"]


def test_a_role_does_not_manage_holders_of_a_role_it_lacks(client, admin, support):
    """An editor's account is out of support's reach: moving its address, then resetting its password, would take
    over whatever the gateway guards with `editor`."""
    editor = _make(client, admin, "editor@example.com", roles=["editor"])
    moved = client.patch(f"{USERS}/{editor['id']}", json={"email": "support-owned@example.com"}, headers=support)
    assert moved.status_code == 403 and moved.json["error"]["code"] == "forbidden"
    assert client.get(f"{USERS}/{editor['id']}", headers=admin).json["email"] == "editor@example.com"


@pytest.mark.parametrize("target, method, body", [
    ("admin@example.com", "patch", {"email": "taken-over@evil.example"}),  # then a reset would go to the new one
    ("admin@example.com", "patch", {"is_active": False}),
    ("admin@example.com", "patch", {"roles": []}),
    ("admin@example.com", "delete", None),
    ("helper@example.com", "patch", {"tier": "premium"}),  # its own account, which /users/me serves
    ("helper@example.com", "patch", {"email": "mine@example.com", "email_verified": True}),  # unconfirmed
    ("helper@example.com", "delete", None),
])
def test_accounts_out_of_a_roles_reach(client, admin, support, target, method, body):
    """A role manages no account holding more than it does (an admin's), nor, unless it is admin, its own."""
    user_id = _id(client, admin, target)
    before = client.get(f"{USERS}/{user_id}", headers=admin).json
    response = getattr(client, method)(f"{USERS}/{user_id}", json=body, headers=support)
    assert response.status_code == 403 and response.json["error"]["code"] == "forbidden"
    assert client.get(f"{USERS}/{user_id}", headers=admin).json == before


def test_an_admin_grants_roles_with_permissions_beyond_the_built_in_ones(app, client, admin):
    with app.app_context():
        db.session.add(Role(name="billing", permissions=["billing:refund"]))
        db.session.commit()
    assert _make(client, admin, "billing@example.com", roles=["billing"])["roles"] == ["billing"]


def test_taking_a_role_away_takes_effect_at_once_at_the_gateway(auth, client, admin):
    second = _make(client, admin, "second@example.com", roles=["admin", "editor"])
    token = auth.bearer(auth.login("second@example.com").json)
    assert client.get("/api/v1/auth/verify?role=admin", headers=token).status_code == 200
    granted = client.patch(f"{USERS}/{second['id']}", json={"roles": ["admin", "editor", "extra"]}, headers=admin)
    assert granted.status_code == 200
    assert client.get("/api/v1/auth/verify?role=admin", headers=token).status_code == 200  # granting ends nothing
    assert client.patch(f"{USERS}/{second['id']}", json={"roles": ["editor"]}, headers=admin).status_code == 200
    # The token still says admin; its session has ended, so no gateway lets it through any more.
    assert client.get("/api/v1/auth/verify?role=admin", headers=token).status_code == 401
    assert client.get("/api/v1/auth/verify?role=editor", headers=token).status_code == 401
    fresh = auth.bearer(auth.login("second@example.com").json)
    assert client.get("/api/v1/auth/verify?role=admin", headers=fresh).status_code == 403
    assert client.get("/api/v1/auth/verify?role=editor", headers=fresh).status_code == 200


def test_withdrawing_a_verification_takes_effect_at_once(auth, client, admin):
    # From a review of the privileged surfaces: access tokens carry email_verified, which gateways pass on
    # (X-User-Email-Verified), and refresh never looks at it: an admin's withdrawal of a verification left every
    # live session vouching for the address, and with REQUIRE_VERIFIED_EMAIL kept an unverified user signed in.
    user = _make(client, admin, "u@example.com", email_verified=True)
    pair = auth.login("u@example.com").json
    assert client.get("/api/v1/auth/verify", headers=auth.bearer(pair)).headers["X-User-Email-Verified"] == "true"
    assert client.patch(f"{USERS}/{user['id']}", json={"email_verified": False}, headers=admin).status_code == 200
    refused = client.get("/api/v1/auth/verify", headers=auth.bearer(pair))
    assert refused.status_code == 401 and refused.json["error"]["code"] == "unauthorized"
    assert auth.refresh(pair["refresh_token"]).json["error"]["code"] == "token_revoked"
    fresh = auth.bearer(auth.login("u@example.com").json)
    assert client.get("/api/v1/auth/verify", headers=fresh).headers["X-User-Email-Verified"] == "false"
    # Vouching for the address ends nothing: the next token says so.
    assert client.patch(f"{USERS}/{user['id']}", json={"email_verified": True}, headers=admin).status_code == 200
    assert client.get("/api/v1/auth/verify", headers=fresh).status_code == 200


def test_within_its_powers_a_role_manages_users(client, admin, support):
    made = client.post(USERS, json={"email": "plain@example.com", "password": PASSWORD, "roles": ["support"]},
                       headers=support)
    assert made.status_code == 201
    changed = client.patch(f"{USERS}/{made.json['id']}", json={"full_name": "Plain", "roles": []}, headers=support)
    assert changed.status_code == 200 and changed.json["roles"] == []
    assert client.delete(f"{USERS}/{made.json['id']}", headers=support).status_code == 204


def test_create_and_get(client, admin):
    user = _make(client, admin, "New@Example.com", full_name="New", roles=["editor"], tier="premium",
                 email_verified=True)
    assert user["roles"] == ["editor"] and user["tier"] == "premium" and user["email_verified"] is True
    assert client.get(f"{USERS}/{user['id']}", headers=admin).json == user


def test_create_without_password(auth, client, admin):
    _make(client, admin, "nopass@example.com", password=None)
    assert auth.login("nopass@example.com").status_code == 401


@pytest.mark.parametrize("body, code", [
    ({"email": "admin@example.com"}, "email_taken"),
    ({"email": "bad"}, "validation_error"),
    ({"email": "a@example.com", "roles": ["Not Valid!"]}, "validation_error"),
    ({"email": "a@example.com", "tier": "gold"}, "validation_error"),
    ({"email": "a@example.com", "password": "short"}, "validation_error"),
])
def test_create_errors(client, admin, body, code):
    assert client.post(USERS, json=body, headers=admin).json["error"]["code"] == code


def test_list_search_filter_and_paginate(client, admin):
    for i in range(5):
        _make(client, admin, f"user{i}@example.com", full_name=f"Person {i}")
    _make(client, admin, "zed@example.com", full_name="Zed Findme")
    page = client.get(f"{USERS}?page=2&per_page=2", headers=admin).json
    assert page["total"] == 7 and page["page"] == 2 and page["per_page"] == 2 and len(page["items"]) == 2
    assert client.get(f"{USERS}?page=5&per_page=2", headers=admin).json["items"] == []
    assert [u["email"] for u in client.get(f"{USERS}?q=findme", headers=admin).json["items"]] == ["zed@example.com"]
    assert client.get(f"{USERS}?q=USER3", headers=admin).json["total"] == 1
    assert [u["email"] for u in client.get(f"{USERS}?role=admin", headers=admin).json["items"]] == [
        "admin@example.com"]
    user = client.get(f"{USERS}?q=user0", headers=admin).json["items"][0]
    client.patch(f"{USERS}/{user['id']}", json={"is_active": False}, headers=admin)
    assert client.get(f"{USERS}?is_active=false", headers=admin).json["total"] == 1


@pytest.mark.parametrize("q, found", [
    ("first_last", ["first_last@example.com"]),  # `_` is a character here, not a wildcard (nor dropped)
    ("_", ["first_last@example.com"]),
    ("100%", ["Sure 100%"]),
    ("%", ["Sure 100%"]),  # not every account
])
def test_search_takes_wildcard_characters_literally(client, admin, q, found):
    _make(client, admin, "first_last@example.com")
    _make(client, admin, "firstxlast@example.com", full_name="Sure 100%")
    items = client.get(USERS, query_string={"q": q}, headers=admin).json["items"]
    assert sorted(u["email"] if "@" in found[0] else u["full_name"] for u in items) == found


# A NUL (found by probing after fuzzing) was a 500 on PostgreSQL, which refuses it in a query.
@pytest.mark.parametrize("query", ["page=0", "page=x", "per_page=0", "per_page=101", "is_active=maybe", "role=a%00",
                                   "q=a%00"])
def test_list_bad_query(client, admin, query):
    response = client.get(f"{USERS}?{query}", headers=admin)
    assert response.status_code == 422 and response.json["error"]["code"] == "validation_error"


@pytest.mark.parametrize("user_id", [str(uuid.uuid4()), "nope"])
def test_unknown_user_is_404(client, admin, user_id):
    for method in ("get", "patch", "delete"):
        assert getattr(client, method)(f"{USERS}/{user_id}", json={}, headers=admin).status_code == 404


def test_patch_fields_and_roles_reach_tokens(auth, client, admin):
    user = _make(client, admin, "u@example.com")
    changed = client.patch(f"{USERS}/{user['id']}", json={"full_name": "Renamed", "tier": "premium",
                                                          "roles": ["editor"], "email_verified": True},
                           headers=admin).json
    assert changed["full_name"] == "Renamed" and changed["roles"] == ["editor"] and changed["tier"] == "premium"
    import jwt
    claims = jwt.decode(auth.login("u@example.com").json["access_token"], options={"verify_signature": False})
    assert claims["roles"] == ["editor"] and claims["tier"] == "premium" and claims["email_verified"] is True


def test_patch_with_nulls_changes_nothing(client, admin):
    # Found by fuzzing (tests/test_openapi.py): `"email": null` was a 500, other nulls hit NOT NULL columns.
    user = _make(client, admin, "u@example.com", full_name="Kept")
    nulls = dict.fromkeys(("full_name", "email", "is_active", "roles", "tier", "email_verified"))
    response = client.patch(f"{USERS}/{user['id']}", json=nulls, headers=admin)
    assert response.status_code == 200, response.json
    assert {k: response.json[k] for k in nulls} == {k: user[k] for k in nulls}
    me = client.get("/api/v1/users/me", headers=admin).json
    assert client.patch(f"{USERS}/{me['id']}", json={"is_active": None}, headers=admin).status_code == 200


def test_deactivation_ends_sessions_at_once(auth, client, admin):
    user = _make(client, admin, "u@example.com")
    pair = auth.login("u@example.com").json
    assert client.patch(f"{USERS}/{user['id']}", json={"is_active": False}, headers=admin).status_code == 200
    assert client.get("/api/v1/users/me", headers=auth.bearer(pair)).status_code == 401
    assert auth.refresh(pair["refresh_token"]).status_code == 401
    assert auth.login("u@example.com").json["error"]["code"] == "account_disabled"


def test_hard_delete(auth, client, admin):
    user = _make(client, admin, "u@example.com")
    pair = auth.login("u@example.com").json
    assert client.delete(f"{USERS}/{user['id']}", headers=admin).status_code == 204
    assert client.get(f"{USERS}/{user['id']}", headers=admin).status_code == 404
    assert client.get("/api/v1/users/me", headers=auth.bearer(pair)).status_code == 401
    assert auth.register("u@example.com").status_code == 201  # the address is free again


@pytest.mark.parametrize("change", [{"roles": []}, {"is_active": False}, "delete"])
def test_the_last_admin_cannot_be_removed(client, admin, change):
    me = client.get("/api/v1/users/me", headers=admin).json
    response = (client.delete(f"{USERS}/{me['id']}", headers=admin) if change == "delete"
                else client.patch(f"{USERS}/{me['id']}", json=change, headers=admin))
    assert response.status_code == 409 and response.json["error"]["code"] == "conflict"
    second = _make(client, admin, "second@example.com", roles=["admin"])
    assert client.patch(f"{USERS}/{second['id']}", json={"roles": []}, headers=admin).status_code == 200
    promoted = _make(client, admin, "third@example.com", roles=["admin"])
    response = (client.delete(f"{USERS}/{me['id']}", headers=admin) if change == "delete"
                else client.patch(f"{USERS}/{me['id']}", json=change, headers=admin))
    assert response.status_code in (200, 204), response.json
    assert promoted["roles"] == ["admin"]


def test_the_last_admin_cannot_deactivate_their_own_account(client, admin):
    response = client.delete("/api/v1/users/me", json={"password": PASSWORD}, headers=admin)
    assert response.status_code == 409 and response.json["error"]["code"] == "conflict"
    _make(client, admin, "second@example.com", roles=["admin"])
    assert client.delete("/api/v1/users/me", json={"password": PASSWORD}, headers=admin).status_code == 204


@pytest.mark.parametrize("other", ["an editor", "a disabled admin"])
def test_only_active_admins_count_against_removing_the_last_one(client, admin, other):
    """Holders of other roles, or admins whose account is disabled, leave the last active admin in place."""
    made = _make(client, admin, "other@example.com", roles=["editor" if other == "an editor" else "admin"])
    if other == "a disabled admin":
        assert client.patch(f"{USERS}/{made['id']}", json={"is_active": False}, headers=admin).status_code == 200
    me = client.get("/api/v1/users/me", headers=admin).json
    response = client.patch(f"{USERS}/{me['id']}", json={"roles": []}, headers=admin)
    assert response.status_code == 409 and response.json["error"]["code"] == "conflict"
    assert client.get(f"{USERS}/{me['id']}", headers=admin).json["roles"] == ["admin"]


@pytest.mark.parametrize("change", [
    {"full_name": "Renamed"}, {"tier": "premium"}, {"roles": ["editor"]}, {"email_verified": True},
    {"email": "U@Example.com"},  # the address it has, as a form sends it back
])
def test_a_change_that_takes_nothing_away_ends_no_session(auth, client, admin, change):
    """Only a change that withdraws something (a role, the address, its verification, the account) signs out."""
    user = _make(client, admin, "u@example.com", email_verified=True)
    pair = auth.login("u@example.com").json
    changed = client.patch(f"{USERS}/{user['id']}", json=change, headers=admin)
    assert changed.status_code == 200 and changed.json["email_verified"] is True
    assert client.get("/api/v1/auth/verify", headers=auth.bearer(pair)).status_code == 200
    assert auth.refresh(pair["refresh_token"]).status_code == 200


@pytest.mark.parametrize("by", ["an admin", "the user"])
def test_enabling_an_account_again_does_not_revive_its_sessions(auth, client, admin, by):
    """Deactivation ends the sessions for good: enabling the account again needs a new sign-in."""
    user = _make(client, admin, "u@example.com")
    pair = auth.login("u@example.com").json
    if by == "the user":
        deactivated = client.delete("/api/v1/users/me", json={"password": PASSWORD}, headers=auth.bearer(pair))
        assert deactivated.status_code == 204
    else:
        assert client.patch(f"{USERS}/{user['id']}", json={"is_active": False}, headers=admin).status_code == 200
    assert client.patch(f"{USERS}/{user['id']}", json={"is_active": True}, headers=admin).status_code == 200
    assert client.get("/api/v1/users/me", headers=auth.bearer(pair)).json["error"]["code"] == "token_revoked"
    assert auth.refresh(pair["refresh_token"]).json["error"]["code"] == "token_revoked"
    assert auth.login("u@example.com").status_code == 200


def test_an_admin_moving_an_account_ends_its_sessions(auth, client, admin):
    """The refresh tokens die with the access tokens, which carry the address the account no longer has."""
    user = _make(client, admin, "u@example.com")
    pair = auth.login("u@example.com").json
    assert client.patch(f"{USERS}/{user['id']}", json={"email": "moved@example.com"}, headers=admin).status_code == 200
    assert auth.refresh(pair["refresh_token"]).json["error"]["code"] == "token_revoked"
