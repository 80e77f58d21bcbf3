"""The caller's own account: /users/me read, update, delete, and password change."""
import pytest

from .conftest import PASSWORD

ME = "/api/v1/users/me"
NEW = "another fine passphrase 8"


def test_get_me(auth, client):
    pair = auth.signed_in()
    response = client.get(ME, headers=auth.bearer(pair))
    assert response.status_code == 200
    assert response.json["email"] == "user@example.com"
    assert "password_hash" not in response.json


def test_me_and_renewed_tokens_match_the_user_object(app, auth, client):
    """/users/me and refresh read the user in one query of their own; both must agree with User.to_dict."""
    import jwt

    from authsvc.extensions import db
    from authsvc.services import users

    auth.register()
    with app.app_context():
        user = users.find_by_email("user@example.com")
        user.roles += [users.role("support"), users.role("billing")]
        db.session.commit()
        expected = user.to_dict()
    pair = auth.login().json
    assert client.get(ME, headers=auth.bearer(pair)).json == expected
    renewed = auth.refresh(pair["refresh_token"]).json
    claims = [jwt.decode(p["access_token"], options={"verify_signature": False}) for p in (pair, renewed)]
    assert claims[1]["roles"] == claims[0]["roles"] == ["billing", "support"]
    assert {k: claims[1][k] for k in ("sub", "email", "email_verified", "tier")} == \
        {k: claims[0][k] for k in ("sub", "email", "email_verified", "tier")}

def test_patch_full_name(auth, client):
    pair = auth.signed_in()
    response = client.patch(ME, json={"full_name": " Grace Hopper "}, headers=auth.bearer(pair))
    assert response.status_code == 200
    assert response.json["full_name"] == "Grace Hopper"
    assert client.get(ME, headers=auth.bearer(pair)).json["full_name"] == "Grace Hopper"


@pytest.mark.parametrize("body", [{"full_name": 7}, {"full_name": "x" * 201}, {"email": "nope"},
                                  {"full_name": "a\x00b"}])
def test_patch_validation(auth, client, body):
    pair = auth.signed_in()
    response = client.patch(ME, json=body, headers=auth.bearer(pair))
    assert response.status_code == 422
    assert response.json["error"]["code"] == "validation_error"


def test_delete_me_deactivates_and_ends_sessions(auth, client):
    pair = auth.signed_in()
    other = auth.login().json
    response = client.delete(ME, json={"password": PASSWORD}, headers=auth.bearer(pair))
    assert response.status_code == 204
    for tokens in (pair, other):
        assert client.get(ME, headers=auth.bearer(tokens)).status_code == 401
    assert auth.login().json["error"]["code"] == "account_disabled"


@pytest.mark.parametrize("body, status, code", [
    ({"password": "wrong password 1"}, 401, "invalid_credentials"),
    ({}, 422, "validation_error"),
])
def test_delete_me_needs_the_password(auth, client, body, status, code):
    pair = auth.signed_in()
    response = client.delete(ME, json=body, headers=auth.bearer(pair))
    assert response.status_code == status
    assert response.json["error"]["code"] == code
    assert client.get(ME, headers=auth.bearer(pair)).status_code == 200


def test_change_password_keeps_this_session_and_ends_the_others(auth, client):
    pair = auth.signed_in()
    other = auth.login().json
    response = client.post(f"{ME}/password", json={"current_password": PASSWORD, "new_password": NEW},
                           headers=auth.bearer(pair))
    assert response.status_code == 204
    assert client.get(ME, headers=auth.bearer(pair)).status_code == 200
    assert auth.refresh(pair["refresh_token"]).status_code == 200
    assert client.get(ME, headers=auth.bearer(other)).json["error"]["code"] == "token_revoked"
    assert auth.refresh(other["refresh_token"]).status_code == 401
    assert auth.login(password=PASSWORD).status_code == 401
    assert auth.login(password=NEW).status_code == 200


@pytest.mark.parametrize("body, status, code, field", [
    ({"current_password": "wrong password 1", "new_password": NEW}, 401, "invalid_credentials", None),
    ({"current_password": PASSWORD, "new_password": "short"}, 422, "validation_error", "new_password"),
    ({"current_password": PASSWORD, "new_password": PASSWORD}, 422, "validation_error", "new_password"),
    ({"current_password": PASSWORD, "new_password": "user@example.com"}, 422, "validation_error", "new_password"),
    ({"current_password": PASSWORD}, 422, "validation_error", "new_password"),
    ({"new_password": NEW}, 422, "validation_error", "current_password"),
])
def test_change_password_errors(auth, client, body, status, code, field):
    pair = auth.signed_in()
    response = client.post(f"{ME}/password", json=body, headers=auth.bearer(pair))
    assert response.status_code == status
    assert response.json["error"]["code"] == code
    if field:
        assert field in response.json["error"]["fields"]
    assert auth.login(password=PASSWORD).status_code == 200
