"""Brute-force protection: a source that keeps failing is blocked for that account, the owner is not."""
from datetime import timedelta

import pytest

from authsvc.extensions import db
from authsvc.models import AuditEvent, LoginFailure, utcnow

from .conftest import PASSWORD

WRONG = "wrong password 1"
ATTACKER = {"REMOTE_ADDR": "198.51.100.7"}
OWNER = {"REMOTE_ADDR": "203.0.113.20"}


def _login(client, password, environ, path="/api/v1/auth/login"):
    return client.post(path, json={"email": "user@example.com", "password": password}, environ_base=environ)


@pytest.mark.settings(LOGIN_BLOCK_AFTER=3, LOGIN_BLOCK_SECONDS=30)
def test_attacker_is_blocked_and_the_owner_still_signs_in(app, auth, client):
    auth.register()
    codes = [_login(client, WRONG, ATTACKER).status_code for _ in range(3)]
    assert codes == [401, 401, 401]
    blocked = _login(client, PASSWORD, ATTACKER)  # even the right password: this source is blocked
    assert blocked.status_code == 429 and blocked.json["error"]["code"] == "rate_limited"
    assert 25 <= int(blocked.headers["Retry-After"]) <= 30
    assert _login(client, PASSWORD, OWNER).status_code == 200  # no lock-out of the owner
    token = client.post("/api/v1/auth/token", data={"grant_type": "password", "username": "user@example.com",
                                                    "password": PASSWORD}, environ_base=ATTACKER)
    assert token.status_code == 429
    with app.app_context():
        assert db.session.query(AuditEvent).filter_by(event="account_blocked").count() == 1


@pytest.mark.settings(LOGIN_BLOCK_AFTER=2, LOGIN_BLOCK_SECONDS=10, LOGIN_BLOCK_MAX_SECONDS=25)
def test_block_grows_with_each_further_failure(app, auth, client):
    auth.register()
    seconds = []
    for _ in range(4):
        _login(client, WRONG, ATTACKER)
        with app.app_context():
            row = db.session.get(LoginFailure, ("user@example.com", ATTACKER["REMOTE_ADDR"]))
            if row.blocked_until:
                seconds.append(round((row.blocked_until - row.last_failure_at).total_seconds()))
                row.blocked_until = utcnow() - timedelta(seconds=1)  # let the next attempt through
                db.session.commit()
    assert seconds == [10, 20, 25]


@pytest.mark.settings(LOGIN_BLOCK_AFTER=2)
def test_success_forgets_the_failures(app, auth, client):
    auth.register()
    _login(client, WRONG, ATTACKER)
    assert _login(client, PASSWORD, ATTACKER).status_code == 200
    _login(client, WRONG, ATTACKER)
    assert _login(client, PASSWORD, ATTACKER).status_code == 200


@pytest.mark.settings(LOGIN_BLOCK_AFTER=2)
def test_an_ipv6_guesser_cannot_step_to_the_next_address(auth, client):
    # Every address of the attacker's /64 is one source; the owner in another network is not affected.
    auth.register()
    codes = [_login(client, WRONG, {"REMOTE_ADDR": f"2001:db8:bad:1::{n}"}).status_code for n in range(1, 4)]
    assert codes == [401, 401, 429]
    assert _login(client, PASSWORD, {"REMOTE_ADDR": "2001:db8:bad:1:ffff::9"}).status_code == 429
    assert _login(client, PASSWORD, {"REMOTE_ADDR": "2001:db8:600d:1::1"}).status_code == 200


@pytest.mark.settings(LOGIN_BLOCK_AFTER=2)
def test_unknown_accounts_are_counted_alike(client):
    body = {"email": "ghost@example.com", "password": WRONG}
    codes = [client.post("/api/v1/auth/login", json=body).status_code for _ in range(3)]
    assert codes == [401, 401, 429]


@pytest.mark.settings(LOGIN_BLOCK_AFTER=1)
def test_the_login_page_shows_the_block(auth, client):
    from .test_pages import sign_in_page

    auth.register()
    sign_in_page(client, password=WRONG)
    response = sign_in_page(client)
    assert response.status_code == 429 and response.mimetype == "text/html"


@pytest.mark.parametrize("method, path, field", [("delete", "/api/v1/users/me", "password"),
                                                 ("post", "/api/v1/users/me/password", "current_password")])
def test_a_password_recheck_is_throttled_like_a_sign_in(auth, client, method, path, field):
    """A stolen session must not be a way to guess the password (and so keep the account) outside the throttle."""
    headers = auth.bearer(auth.signed_in())
    body = {field: WRONG, **({"new_password": "another fine passphrase"} if field == "current_password" else {})}
    codes = [getattr(client, method)(path, json=body, headers=headers).status_code for _ in range(7)]
    assert codes[:5] == [401] * 5 and codes[-1] == 429
    assert _login(client, PASSWORD, {}).status_code == 429  # the same count as the sign-in's, from this source


def _age_failures(app, seconds: int) -> None:
    """Move every recorded failure `seconds` into the past (its block, if any, is left as it is)."""
    with app.app_context():
        for row in db.session.query(LoginFailure):
            row.last_failure_at -= timedelta(seconds=seconds)
        db.session.commit()


@pytest.mark.settings(LOGIN_BLOCK_AFTER=2)
def test_failures_older_than_the_window_are_forgotten(app, auth, client):
    """A failure past LOGIN_FAILURE_WINDOW_SECONDS counts for nothing: the count starts again from zero."""
    auth.register()
    assert _login(client, WRONG, ATTACKER).status_code == 401
    _age_failures(app, app.config["LOGIN_FAILURE_WINDOW_SECONDS"] + 1)
    assert _login(client, WRONG, ATTACKER).status_code == 401  # the first of a new count
    assert _login(client, WRONG, ATTACKER).status_code == 401  # the second: blocked from now on
    blocked = _login(client, PASSWORD, ATTACKER)
    assert blocked.status_code == 429 and blocked.json["error"]["code"] == "rate_limited"


@pytest.mark.settings(LOGIN_BLOCK_AFTER=3)
def test_the_window_runs_from_the_latest_failure(app, auth, client):
    """Failures keep adding up while each comes within the window of the one before, however long the series."""
    auth.register()
    for _ in range(3):
        assert _login(client, WRONG, ATTACKER).status_code == 401
        _age_failures(app, app.config["LOGIN_FAILURE_WINDOW_SECONDS"] * 3 // 4)
    blocked = _login(client, PASSWORD, ATTACKER)
    assert blocked.status_code == 429 and blocked.json["error"]["code"] == "rate_limited"


@pytest.mark.settings(LOGIN_BLOCK_AFTER=2)
def test_a_success_forgets_only_its_own_account_and_source(auth, client):
    """Neither the owner signing in from elsewhere nor the guesser signing in to an account of its own clears
    the guesser's count for this account; and the guesser's block holds for this account only."""
    auth.register()
    auth.register("guesser@example.com")
    assert _login(client, WRONG, ATTACKER).status_code == 401
    assert _login(client, WRONG, OWNER).status_code == 401  # the owner mistypes once, then signs in
    assert _login(client, PASSWORD, OWNER).status_code == 200
    own = {"email": "guesser@example.com", "password": WRONG}
    assert client.post("/api/v1/auth/login", json=own, environ_base=ATTACKER).status_code == 401
    own["password"] = PASSWORD
    assert client.post("/api/v1/auth/login", json=own, environ_base=ATTACKER).status_code == 200
    assert _login(client, WRONG, ATTACKER).status_code == 401  # the second failure for this account: blocked
    blocked = _login(client, PASSWORD, ATTACKER)
    assert blocked.status_code == 429 and blocked.json["error"]["code"] == "rate_limited"
    assert client.post("/api/v1/auth/login", json=own, environ_base=ATTACKER).status_code == 200


@pytest.mark.settings(LOGIN_BLOCK_AFTER=2)
def test_a_success_forgets_the_failures_of_its_account_and_network_however_written(auth, client):
    """The count a success clears is the one its failures made: the address in any case, an IPv6 source by /64."""
    auth.register()
    assert _login(client, WRONG, {"REMOTE_ADDR": "2001:db8:bad:1::1"}).status_code == 401
    signed_in = client.post("/api/v1/auth/login", json={"email": "USER@Example.com", "password": PASSWORD},
                            environ_base={"REMOTE_ADDR": "2001:db8:bad:1::2"})
    assert signed_in.status_code == 200
    assert _login(client, WRONG, {"REMOTE_ADDR": "2001:db8:bad:1::3"}).status_code == 401  # one failure, not two
    assert _login(client, PASSWORD, {"REMOTE_ADDR": "2001:db8:bad:1::4"}).status_code == 200
