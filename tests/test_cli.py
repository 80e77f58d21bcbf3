"""The `authsvc` commands: create-admin, keys rotate, mail flush."""
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .conftest import PASSWORD


def _me(client, auth, pair):
    return client.get("/api/v1/users/me", headers=auth.bearer(pair))


def test_create_admin_from_stdin(runner, auth, client):
    result = runner.invoke(args=["create-admin", "Root@Example.com", "--password-stdin"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    pair = auth.login("root@example.com").json
    me = _me(client, auth, pair).json
    assert me["roles"] == ["admin"] and me["email_verified"] is True
    assert jwt.decode(pair["access_token"], options={"verify_signature": False})["roles"] == ["admin"]


def test_create_admin_from_prompt(runner, auth):
    result = runner.invoke(args=["create-admin", "root@example.com"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert auth.login("root@example.com").status_code == 200


def test_existing_user_becomes_admin_and_keeps_the_password(app, runner, auth, client):
    from authsvc.extensions import db
    from authsvc.services import users

    auth.register()
    with app.app_context():  # only an account whose address was proven may be promoted
        users.find_by_email("user@example.com").email_verified = True
        db.session.commit()
    result = runner.invoke(args=["create-admin", "user@example.com", "--password-stdin"], input="ignored 123456\n")
    assert result.exit_code == 0
    pair = auth.login().json
    assert _me(client, auth, pair).json["roles"] == ["admin"]
    with app.app_context():  # the promotion is in the audit trail
        from authsvc.models import AuditEvent

        event = db.session.query(AuditEvent).filter_by(event="user_updated").one()
        assert event.details == {"fields": ["roles"], "reason": "create_admin"}


@pytest.mark.parametrize("email, password", [("not-an-email", PASSWORD), ("root@example.com", "short"),
                                             ("root@example.com", "root@example.com")])
def test_create_admin_refuses_bad_input(runner, auth, email, password):
    result = runner.invoke(args=["create-admin", email, "--password-stdin"], input=password + "\n")
    assert result.exit_code != 0
    assert auth.login("root@example.com", password).status_code == 401


@pytest.mark.settings(SIGNING_KEY_CACHE_SECONDS=0)
def test_keys_rotate_keeps_old_tokens_valid(runner, auth, client):
    before = auth.signed_in()
    old_kid = jwt.get_unverified_header(before["access_token"])["kid"]
    result = runner.invoke(args=["keys", "rotate"])
    assert result.exit_code == 0, result.output
    after = auth.login().json
    new_kid = jwt.get_unverified_header(after["access_token"])["kid"]
    assert new_kid != old_kid and new_kid in result.output
    assert _me(client, auth, before).status_code == 200
    assert _me(client, auth, after).status_code == 200
    kids = [k["kid"] for k in client.get("/.well-known/jwks.json").json["keys"]]
    assert old_kid in kids and new_kid in kids


def test_the_oldest_key_still_in_its_term_signs_until_the_hand_over():
    """After a rotation the old key signs until `retired_at` (one cache period on), then the new one: two
    rotations inside that window hand over in order, so no instance ever sees a key it has not loaded."""
    from datetime import timedelta
    from types import SimpleNamespace

    from authsvc.models import utcnow
    from authsvc.services.keys import _signer

    now = utcnow()

    def key(name, created, retired, algorithm="RS256"):
        return SimpleNamespace(kid=name, algorithm=algorithm, created_at=now + timedelta(seconds=created),
                               retired_at=None if retired is None else now + timedelta(seconds=retired))

    def signer(*rows):
        return _signer(list(rows), "RS256").kid

    assert signer(key("old", -60, 30), key("new", 0, None)) == "old"
    assert signer(key("old", -60, -1), key("new", 0, None)) == "new"
    assert signer(key("k1", -60, 20), key("k2", -10, 32), key("k3", 0, None)) == "k1"
    assert signer(key("k1", -60, -1), key("k2", -10, 32), key("k3", 0, None)) == "k2"
    assert signer(key("eddsa", -60, 30, algorithm="EdDSA"), key("new", 0, None)) == "new"


@pytest.mark.settings(MAIL_WORKER=False)  # only the command may send in this test
def test_mail_flush(runner, auth, outbox):
    auth.register()
    assert outbox.messages == []
    result = runner.invoke(args=["mail", "flush"])
    assert result.exit_code == 0 and "sent 1" in result.output
    assert outbox.wait_for(lambda m: m["To"] == "user@example.com")


@pytest.mark.settings(SIGNING_KEY_CACHE_SECONDS=0)
def test_retired_key_leaves_the_jwks_once_its_tokens_expired(app, runner, auth, client):
    from datetime import timedelta

    from authsvc.extensions import db
    from authsvc.models import SigningKey

    old_kid = jwt.get_unverified_header(auth.signed_in()["access_token"])["kid"]
    runner.invoke(args=["keys", "rotate"])
    with app.app_context():
        key = db.session.get(SigningKey, old_kid)
        # Just inside the window (access lifetime + cache age + a minute of skew): still published.
        key.retired_at -= app.config["JWT_ACCESS_TOKEN_EXPIRES"]
        db.session.commit()
    assert old_kid in [k["kid"] for k in client.get("/.well-known/jwks.json").json["keys"]]
    with app.app_context():
        db.session.get(SigningKey, old_kid).retired_at -= timedelta(minutes=2)
        db.session.commit()
    assert old_kid not in [k["kid"] for k in client.get("/.well-known/jwks.json").json["keys"]]


def test_create_admin_does_not_promote_an_unverified_account(runner, auth, client):
    """An attacker registers admin@corp.example (open sign-up, no verification needed) before the operator runs
    `create-admin admin@corp.example`: the attacker's account, with the attacker's password, became admin, and
    the password the operator typed was silently thrown away."""
    squatter_password = "attacker knows this 1"
    assert auth.register("admin@corp.example", squatter_password).status_code == 201
    result = runner.invoke(args=["create-admin", "admin@corp.example", "--password-stdin"],
                           input="operator chose this 9\n")
    assert result.exit_code != 0, result.output
    assert "not verified" in result.output
    pair = auth.login("admin@corp.example", squatter_password).json
    me = client.get("/api/v1/users/me", headers=auth.bearer(pair)).json
    assert "admin" not in me["roles"]


@pytest.fixture
def key_file(tmp_path) -> str:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "jwt.pem"
    path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(path)


def test_keys_rotate_refuses_when_a_key_file_signs(database_url, tmp_path, key_file):
    """After a suspected key leak the operator runs `keys rotate`, is told a new key signs within 32 s, and the
    leaked file key goes on signing every token."""
    from .conftest import dispose, make_app

    application = make_app(database_url, tmp_path / "instance", JWT_PRIVATE_KEY_FILE=key_file,
                           SIGNING_KEY_CACHE_SECONDS=0)
    try:
        result = application.test_cli_runner().invoke(args=["keys", "rotate"])
        assert result.exit_code != 0
        assert "JWT_PRIVATE_KEY_FILE" in result.output
    finally:
        dispose(application)


def test_a_changed_secret_key_keeps_working_through_its_fallback(database_url, tmp_path):
    """The signing keys are stored encrypted under SECRET_KEY: a new secret names the old one in
    SECRET_KEY_FALLBACKS until `keys rotate` has replaced the key stored under it."""
    import time

    from .conftest import TEST_SETTINGS, dispose, make_app

    old, new = TEST_SETTINGS["SECRET_KEY"], "n" * 40  # the database's first key is stored under the test secret
    body = {"email": "user@example.com", "password": PASSWORD}

    def app_with(name, **settings):
        return make_app(database_url, tmp_path / name, SIGNING_KEY_CACHE_SECONDS=0, **settings)

    first = app_with("first", SECRET_KEY=old)
    try:
        first.test_client().post("/api/v1/auth/register", json=body)
        token = first.test_client().post("/api/v1/auth/login", json=body).json["access_token"]
    finally:
        dispose(first)
    for settings, status in (({"SECRET_KEY": new}, 503), ({"SECRET_KEY": new, "SECRET_KEY_FALLBACKS": old}, 200)):
        app = app_with(str(status), **settings)
        try:
            assert app.test_client().post("/api/v1/auth/login", json=body).status_code == status
        finally:
            dispose(app)
    changing = app_with("changing", SECRET_KEY=new, SECRET_KEY_FALLBACKS=old)
    try:
        client = changing.test_client()
        assert client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert changing.test_cli_runner().invoke(args=["keys", "rotate"]).exit_code == 0
        time.sleep(2.1)  # the hand-over: SIGNING_KEY_CACHE_SECONDS (0 here) + 2 s
        assert client.post("/api/v1/auth/login", json=body).status_code == 200
    finally:
        dispose(changing)
    done = app_with("done", SECRET_KEY=new)  # the old secret can go once the new key signs
    try:
        assert done.test_client().post("/api/v1/auth/login", json=body).status_code == 200
    finally:
        dispose(done)


def test_keys_rotate_publishes_at_once_and_signs_after_the_cache_period(app, runner, auth, client):
    """The new key is in the JWKS at once, while the old one goes on signing for SIGNING_KEY_CACHE_SECONDS (+2 s)."""
    old_kid = jwt.get_unverified_header(auth.signed_in()["access_token"])["kid"]
    assert runner.invoke(args=["keys", "rotate"]).exit_code == 0
    app.extensions["authsvc.keys"]["ring"].loaded_at = float("-inf")  # this process reloads its keys now
    assert len({k["kid"] for k in client.get("/.well-known/jwks.json").json["keys"]} - {old_kid}) == 1
    assert jwt.get_unverified_header(auth.login().json["access_token"])["kid"] == old_kid
