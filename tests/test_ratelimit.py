"""Rate limits: the contract's defaults per client address, answered as 429 `rate_limited` with Retry-After."""
import pytest


@pytest.mark.settings(RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="3/minute")
def test_login_limit_per_address(client):
    body = {"email": "nobody@example.com", "password": "wrong password 1"}
    for _ in range(3):
        assert client.post("/api/v1/auth/login", json=body).status_code == 401
    response = client.post("/api/v1/auth/login", json=body)
    assert response.status_code == 429
    assert response.json["error"]["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) > 0
    other = client.post("/api/v1/auth/login", json=body, environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert other.status_code == 401


@pytest.mark.settings(RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="2/minute", TRUSTED_PROXIES=1)
def test_limits_key_on_the_forwarded_address_behind_a_trusted_proxy(client):
    body = {"email": "nobody@example.com", "password": "wrong password 1"}
    for _ in range(2):
        client.post("/api/v1/auth/login", json=body, headers={"X-Forwarded-For": "203.0.113.5"})
    assert client.post("/api/v1/auth/login", json=body,
                       headers={"X-Forwarded-For": "203.0.113.5"}).status_code == 429
    assert client.post("/api/v1/auth/login", json=body,
                       headers={"X-Forwarded-For": "203.0.113.6"}).status_code == 401


@pytest.mark.settings(RATELIMIT_ENABLED=False, RATELIMIT_LOGIN="1/minute")
def test_limits_can_be_turned_off(client):
    body = {"email": "nobody@example.com", "password": "wrong password 1"}
    assert all(client.post("/api/v1/auth/login", json=body).status_code == 401 for _ in range(3))


@pytest.mark.settings(RATELIMIT_ENABLED=False)
def test_turned_off_limits_are_not_evaluated(client, monkeypatch):
    from authsvc.extensions import limiter

    def evaluated(*args, **kwargs):
        raise AssertionError("limits evaluated while rate limiting is off")
    monkeypatch.setattr(limiter, "_check_request_limit", evaluated)
    body = {"email": "nobody@example.com", "password": "wrong password 1"}
    assert client.post("/api/v1/auth/login", json=body).status_code == 401


@pytest.mark.settings(RATELIMIT_ENABLED=True, RATELIMIT_MAIL_REQUEST="10/minute", RATELIMIT_MAIL_PER_ADDRESS="2/minute")
def test_stacked_limits_count_each_request_once(client):
    # The per-address mail quota sits under the per-client one on the same view: each request is one hit of each.
    body = {"email": "someone@example.com"}
    codes = [client.post("/api/v1/auth/password-reset/request", json=body).status_code for _ in range(3)]
    assert codes[:2] == [202, 202] and codes[2] == 429


@pytest.fixture
def redis_server():
    """A real redis-server on 127.0.0.1 for one test."""
    from .redisserver import RedisServer

    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.mark.sqlite_only
def test_instances_share_counts_through_redis(database_url, tmp_path, redis_server):
    """Two app instances with one Redis: the fourth attempt is refused whichever instance it reaches."""
    from .conftest import dispose, make_app

    apps = [make_app(database_url, tmp_path / f"i{i}", RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="3/minute",
                     REDIS_URL=redis_server.url, MAIL_WORKER=False) for i in range(2)]
    try:
        body = {"email": "nobody@example.com", "password": "wrong password 1"}
        codes = [apps[i % 2].test_client().post("/api/v1/auth/login", json=body).status_code for i in range(4)]
        assert codes == [401, 401, 401, 429]
        # The counters live in Redis (one process's apps share the limiter object, so the codes alone would
        # not tell memory from Redis).
        import redis

        assert redis.Redis.from_url(redis_server.url).keys("LIMITS*"), "no limiter keys in Redis"
    finally:
        for app in apps:
            dispose(app)


@pytest.mark.settings(RATELIMIT_ENABLED=True, RATELIMIT_DEFAULT="2/minute")
def test_default_limit_covers_every_other_endpoint_but_not_gateway_or_health(auth, client):
    for _ in range(2):
        client.get("/api/v1/auth/sessions")
    assert client.get("/api/v1/auth/sessions").status_code == 429
    assert all(client.get("/healthz").status_code == 200 for _ in range(5))
    assert all(client.get("/.well-known/jwks.json").status_code == 200 for _ in range(5))
    assert all(client.get("/api/v1/auth/verify").status_code == 401 for _ in range(5))


@pytest.mark.sqlite_only
@pytest.mark.parametrize("fail_open", [True, False])
def test_redis_down_fails_open_or_closed_by_setting(database_url, tmp_path, redis_server, fail_open):
    from .conftest import dispose, make_app

    app = make_app(database_url, tmp_path / "i", RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="2/minute",
                   REDIS_URL=redis_server.url, RATELIMIT_FAIL_OPEN=fail_open, MAIL_WORKER=False)
    try:
        client = app.test_client()
        body = {"email": "nobody@example.com", "password": "wrong password 1"}
        assert client.post("/api/v1/auth/login", json=body).status_code == 401
        redis_server.stop()
        codes = [client.post("/api/v1/auth/login", json=body).status_code for _ in range(3)]
        if fail_open:  # still served, and still limited, by this process's own counts
            assert codes[0] == 401 and 429 in codes
        else:
            assert codes == [503] * 3
        assert client.get("/healthz").status_code == 200  # unlimited endpoints never touch Redis
    finally:
        dispose(app)


MAIL_QUOTA = {"RATELIMIT_ENABLED": True, "RATELIMIT_MAIL_REQUEST": "100/minute",
              "RATELIMIT_PROFILE_WRITE": "100/minute", "RATELIMIT_MAIL_PER_ADDRESS": "2/minute"}


@pytest.mark.settings(**MAIL_QUOTA)
def test_every_spelling_of_an_address_shares_its_mail_quota(client):
    """Case, spaces, full-width letters and an ideographic full stop all reach the same inbox."""
    codes = [client.post("/api/v1/auth/password-reset/request", json={"email": email}).status_code
             for email in ("victim@example.com", " VICTIM@ｅxample.com", "victim@example。com")]
    assert codes == [202, 202, 429]


@pytest.mark.settings(**MAIL_QUOTA)
def test_a_change_of_address_counts_against_the_new_addresss_quota(auth, client):
    pair = auth.signed_in()
    for name in ("A", "B", "C"):  # renames mail nobody and are not counted
        assert client.patch("/api/v1/users/me", json={"full_name": name}, headers=auth.bearer(pair)).status_code == 200
    codes = [client.patch("/api/v1/users/me", json={"email": "victim@example.com"}, headers=auth.bearer(pair))
             .status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    mailed = client.post("/api/v1/auth/password-reset/request", json={"email": "victim@example.com"})
    assert mailed.status_code == 429 and mailed.json["error"]["code"] == "rate_limited"


@pytest.mark.settings(**MAIL_QUOTA)
def test_the_account_pages_resend_shares_the_apis_quota(auth, client):
    from .test_pages import post_form, sign_in_page

    auth.register()
    for _ in range(2):
        assert client.post("/api/v1/auth/verify-email/resend", json={"email": "user@example.com"}).status_code == 202
    sign_in_page(client)
    resent = post_form(client, "/account/resend-verification", {}, page="/account")
    assert resent.status_code == 429


@pytest.mark.settings(**MAIL_QUOTA)
def test_an_account_asks_for_only_so_many_changes_of_address(auth, client, outbox):
    """Each change mails the account's current address a notice: new addresses each time must not make that a
    stream of mail to whoever owns the current one."""
    pair = auth.signed_in()
    outbox.clear()
    codes = [client.patch("/api/v1/users/me", json={"email": f"new{i}@example.com"}, headers=auth.bearer(pair))
             .status_code for i in range(3)]
    assert codes == [200, 200, 429]
    refused = client.patch("/api/v1/users/me", json={"email": "new9@example.com"}, headers=auth.bearer(pair))
    assert refused.json["error"]["code"] == "rate_limited" and int(refused.headers["Retry-After"]) > 0
    notice = lambda m: m["To"] == "user@example.com" and "being changed" in m["Subject"]  # noqa: E731
    outbox.wait_for(lambda m: notice(m) and "new1@example.com" in m.get_body(("plain",)).get_content())
    outbox.wait_for(lambda m: notice(m) and "new0@example.com" in m.get_body(("plain",)).get_content())
    assert len([m for m in outbox.messages if notice(m)]) == 2  # the refused change queued nothing


@pytest.mark.parametrize("address, prefix, source", [
    ("198.51.100.7", 64, "198.51.100.7"),
    ("unknown", 64, "unknown"),
    ("2001:db8:1:2:aaaa::1", 64, "2001:db8:1:2::/64"),
    ("2001:DB8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::/64"),
    ("2001:db8:1:2:aaaa::1", 48, "2001:db8:1::/48"),
    ("2001:db8:1:2:aaaa::1", 128, "2001:db8:1:2:aaaa::1"),
    ("::ffff:198.51.100.7", 64, "198.51.100.7"),
    ("fe80::1%eth0", 64, "fe80::/64"),
    ("not:an:address", 64, "not:an:address"),
])
def test_a_source_is_an_ipv4_address_or_an_ipv6_network(address, prefix, source):
    from authsvc.sources import source_of

    assert source_of(address, prefix) == source


def _login_from(client, address):
    body = {"email": "nobody@example.com", "password": "wrong password 1"}
    return client.post("/api/v1/auth/login", json=body, environ_base={"REMOTE_ADDR": address}).status_code


@pytest.mark.settings(RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="2/minute", LOGIN_BLOCK_AFTER=100)
def test_an_ipv6_network_shares_one_budget(client):
    # Each address of one /64 is the same subscriber: cycling through them buys no fresh budget.
    assert [_login_from(client, f"2001:db8:1:2::{n}") for n in (1, 2, 3)] == [401, 401, 429]
    assert _login_from(client, "2001:db8:1:3::1") == 401  # the next /64 is someone else


@pytest.mark.settings(RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="2/minute", LOGIN_BLOCK_AFTER=100)
def test_an_ipv4_client_on_a_dual_stack_socket_counts_as_ipv4(client):
    assert [_login_from(client, a) for a in ("198.51.100.7", "::ffff:198.51.100.7")] == [401, 401]
    assert _login_from(client, "198.51.100.7") == 429


@pytest.mark.settings(RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="2/minute", LOGIN_BLOCK_AFTER=100,
                      IPV6_SOURCE_PREFIX=128)
def test_ipv6_addresses_can_count_one_by_one(client):
    assert [_login_from(client, f"2001:db8:1:2::{n}") for n in (1, 2, 3)] == [401, 401, 401]


@pytest.mark.settings(RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="3/minute", RATELIMIT_TOKEN="100/minute")
def test_every_way_of_trying_a_password_shares_one_budget(client):
    # The API's login, the sign-in page and the password grant: three budgets would triple a guesser's rate.
    from .test_pages import sign_in_page

    wrong = {"email": "nobody@example.com", "password": "wrong password 1"}
    grant = {"grant_type": "password", "username": wrong["email"], "password": wrong["password"]}
    assert client.post("/api/v1/auth/login", json=wrong).status_code == 401
    assert sign_in_page(client, **wrong).status_code == 400  # the form again, with its error
    assert client.post("/api/v1/auth/token", data=grant).status_code == 400
    for attempt in (lambda: client.post("/api/v1/auth/login", json=wrong),
                    lambda: sign_in_page(client, **wrong),
                    lambda: client.post("/api/v1/auth/token", data=grant)):
        assert attempt().status_code == 429
    # The token endpoint's other grants try no password and keep their own budget.
    other = client.post("/api/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": "x" * 43})
    assert other.status_code == 400 and other.json["error"] == "invalid_grant"


FORM = "application/x-www-form-urlencoded"


@pytest.mark.settings(RATELIMIT_ENABLED=True)
@pytest.mark.parametrize("path, content_type, status", [
    ("/api/v1/auth/signup", "application/json", 413),
    ("/api/v1/auth/signup", FORM, 415),
    ("/api/v1/auth/password-reset/request", "application/json", 413),
    ("/api/v1/auth/verify-email/resend", "application/json", 413),
    ("/api/v1/auth/token", FORM, 413),
])
def test_a_body_over_the_size_limit_leaves_no_traceback_in_the_log(client, caplog, path, content_type, status):
    # The per-inbox quota and the sign-in budget read the body to find their key; reading one past
    # MAX_CONTENT_LENGTH raised inside Flask-Limiter, which logged it as a storage failure and skipped the limit.
    response = client.post(path, data=b'{"email": "' + b"a" * 70000 + b'"}', content_type=content_type)
    assert response.status_code == status
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.settings(**MAIL_QUOTA)
def test_the_quota_on_changes_of_address_is_the_accounts_own(auth, client):
    """Another account's changes of address use none of this account's quota."""
    other = auth.signed_in("other@example.com")
    for i in range(2):
        assert client.patch("/api/v1/users/me", json={"email": f"other{i}@example.com"},
                            headers=auth.bearer(other)).status_code == 200
    pair = auth.signed_in()
    codes = [client.patch("/api/v1/users/me", json={"email": f"new{i}@example.com"}, headers=auth.bearer(pair))
             .status_code for i in range(3)]
    assert codes == [200, 200, 429]


@pytest.mark.settings(**MAIL_QUOTA)
def test_changes_of_address_older_than_the_quotas_window_do_not_count(app, auth, client):
    """The quota on changes of address counts those asked for within its window only."""
    from datetime import timedelta

    from authsvc.extensions import db
    from authsvc.models import OneTimeToken, utcnow

    pair = auth.signed_in()
    for i in range(2):
        assert client.patch("/api/v1/users/me", json={"email": f"new{i}@example.com"},
                            headers=auth.bearer(pair)).status_code == 200
    with app.app_context():
        for row in db.session.query(OneTimeToken):
            row.created_at = utcnow() - timedelta(minutes=2)
        db.session.commit()
    assert client.patch("/api/v1/users/me", json={"email": "new2@example.com"},
                        headers=auth.bearer(pair)).status_code == 200
