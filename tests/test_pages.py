"""Hosted pages through the test client: forms, CSRF, cookies, redirects, and links that GET must not consume."""
import io
import json
import re
from urllib.parse import quote

import pytest

from .conftest import PASSWORD
from .smtpserver import links

NEW = "another fine passphrase 8"


def csrf_of(response) -> str:
    """The CSRF token of the first form on a page."""
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', response.text).group(1)


def post_form(client, path, data, page=None):
    """GET the page (for its CSRF token), then POST the form."""
    token = csrf_of(client.get(page or path))
    return client.post(path, data={"csrf_token": token, **data})


def sign_in_page(client, email="user@example.com", password=PASSWORD, next_=None):
    """Sign in through /login; return the response."""
    path = f"/login?next={quote(next_, safe='')}" if next_ else "/login"
    return post_form(client, path, {"email": email, "password": password})


def test_pages_render_with_labels_and_a_strict_csp(client):
    for path in ("/login", "/signup", "/password-reset"):
        response = client.get(path)
        assert response.status_code == 200
        assert re.search(r'<label for="email"', response.text)
        assert "<script" not in response.text and "style=" not in response.text
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_signup_page_signs_the_browser_in(client, outbox):
    response = post_form(client, "/signup", {"email": "web@example.com", "password": PASSWORD, "full_name": "Web"})
    assert response.status_code == 302 and response.headers["Location"] == "/account"
    cookies = {c.split("=")[0]: c for c in response.headers.getlist("Set-Cookie")}
    assert "HttpOnly" in cookies["access_token_cookie"] and "SameSite=Lax" in cookies["access_token_cookie"]
    assert "HttpOnly" in cookies["refresh_token"]
    account = client.get("/account")
    assert account.status_code == 200 and "web@example.com" in account.text
    assert outbox.wait_for(lambda m: m["To"] == "web@example.com")


def _href(page, element_id: str) -> str:
    return re.search(rf'id="{element_id}" href="([^"]+)"', page.text).group(1).replace("&amp;", "&")


def test_signup_and_login_pages_carry_next_between_them_and_through_the_form(client):
    assert _href(client.get("/login"), "signup-link") == "/signup"
    login = client.get("/login?next=/account?tab=2")
    assert _href(login, "signup-link") == "/signup?next=/account?tab%3D2"
    signup = client.get(_href(login, "signup-link"))
    assert _href(signup, "login-link") == "/login?next=/account?tab%3D2"
    assert 'action="/signup?next=/account?tab%3D2"' in signup.text
    response = client.post("/signup?next=/account?tab%3D2", data={
        "csrf_token": csrf_of(signup), "email": "nexter@example.com", "password": PASSWORD})
    assert response.status_code == 302 and response.headers["Location"] == "/account?tab=2"


@pytest.mark.settings(COOKIE_SECURE=True)
def test_cookies_are_secure_by_setting(auth, client):
    auth.register()
    response = sign_in_page(client)
    assert all("Secure" in c for c in response.headers.getlist("Set-Cookie") if "token" in c)


@pytest.mark.settings(REQUIRE_VERIFIED_EMAIL=True)
def test_signup_page_asks_to_verify_first(client):
    response = post_form(client, "/signup", {"email": "web@example.com", "password": PASSWORD})
    assert response.status_code == 200 and "Check your mail" in response.text
    assert client.get("/account").status_code == 302


@pytest.mark.parametrize("data, field", [
    ({"email": "bad", "password": PASSWORD}, "email"),
    ({"email": "web@example.com", "password": "short"}, "password"),
    ({"email": "web@example.com", "password": "web@example.com"}, "password"),
])
def test_signup_page_errors_next_to_the_field(client, data, field):
    response = post_form(client, "/signup", data)
    assert response.status_code == 400
    assert f'aria-describedby="{field}-errors"' in response.text


@pytest.mark.parametrize("path, data, field", [
    ("/login", {"email": "user\x00@example.com", "password": PASSWORD}, "email"),
    ("/signup", {"email": "web@example.com", "password": PASSWORD, "full_name": "Web\x00User"}, "full_name"),
    ("/signup", {"email": "web\x00@example.com", "password": PASSWORD}, "email"),
    ("/password-reset", {"email": "user\x00@example.com"}, "email"),
])
def test_text_the_database_cannot_store_is_a_form_error(auth, client, path, data, field):
    auth.register()
    response = post_form(client, path, data)
    assert response.status_code == 400
    assert f'aria-describedby="{field}-errors"' in response.text


@pytest.mark.parametrize("path", ["/login", "/signup", "/password-reset"])
@pytest.mark.parametrize("kind", ["file", "json-numbers", "json-list"])
def test_a_form_posted_as_files_or_json_is_400_not_500(client, path, kind):
    # Flask-WTF fed the fields uploaded files and JSON values, which the validators could not measure.
    token = csrf_of(client.get(path))
    if kind == "file":
        response = client.post(path, content_type="multipart/form-data", data={
            "csrf_token": token, "email": (io.BytesIO(b"x"), "e.txt"), "password": (io.BytesIO(b"x"), "p.txt")})
    else:
        body = {"csrf_token": token, "email": 1, "password": 12345678} if kind == "json-numbers" else [1, 2]
        response = client.post(path, data=json.dumps(body), content_type="application/json",
                               headers={"X-CSRFToken": token})
    assert response.status_code == 400 and response.mimetype == "text/html"


def test_form_post_without_csrf_is_refused(auth, client):
    auth.register()
    response = client.post("/login", data={"email": "user@example.com", "password": PASSWORD})
    assert response.status_code == 400
    assert not response.headers.getlist("Set-Cookie")


def test_login_page_wrong_password(auth, client):
    auth.register()
    response = sign_in_page(client, password="wrong password 1")
    assert response.status_code == 400 and 'role="alert"' in response.text


@pytest.mark.parametrize("next_, expected", [
    ("/account?tab=1", "/account?tab=1"),
    ("https://evil.example/steal", "/account"),
    ("//evil.example/steal", "/account"),
    ("/\\evil.example", "/account"),
    ("/\t/evil.example/steal", "/account"),  # browsers drop the tab: `//evil.example`
    ("/\n/evil.example", "/account"),  # and a newline would break the Location header
    ("\t//evil.example", "/account"),
    ("/ /evil.example", "/account"),
    ("/\u200b/evil.example", "/account"),
    ("javascript:alert(1)", "/account"),
    ("http://[::1", "/account"),  # urlsplit raises on a bracket it cannot close: was a 500 after the sign-in
    ("https://app.example.com]/home", "/account"),
    ("https://app.example.com/home", "https://app.example.com/home"),
])
@pytest.mark.settings(ALLOWED_REDIRECT_ORIGINS="https://app.example.com")
def test_next_only_goes_to_allowed_places(auth, client, next_, expected):
    auth.register()
    response = sign_in_page(client, next_=next_)
    assert response.status_code == 302 and response.headers["Location"] == expected


def test_account_needs_a_sign_in(client):
    response = client.get("/account")
    assert response.status_code == 302 and response.headers["Location"] == "/login?next=/account"


def test_cookie_api_calls_need_the_csrf_header(auth, client):
    auth.register()
    sign_in_page(client)
    assert client.get("/api/v1/users/me").status_code == 200  # safe method: the cookie suffices
    refused = client.patch("/api/v1/users/me", json={"full_name": "X"})
    assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    token = client.get_cookie("csrf_access_token").value
    ok = client.patch("/api/v1/users/me", json={"full_name": "X"}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 200


def test_logout_page_ends_the_session(auth, client):
    auth.register()
    sign_in_page(client)
    response = post_form(client, "/logout", {}, page="/account")
    assert response.status_code == 302
    assert client.get("/account").status_code == 302
    assert client.get("/api/v1/auth/sessions", headers={}).status_code == 401


def test_expired_access_cookie_is_renewed_from_the_refresh_cookie(app, auth, client):
    auth.register()
    sign_in_page(client)
    client.delete_cookie("access_token_cookie")
    response = client.get("/account")
    assert response.status_code == 200
    assert any(c.startswith("access_token_cookie=") for c in response.headers.getlist("Set-Cookie"))


def test_password_change_on_the_account_page(auth, client):
    other = auth.signed_in()
    sign_in_page(client)
    response = post_form(client, "/account/password", {"current_password": PASSWORD, "new_password": NEW},
                         page="/account")
    assert response.status_code == 302
    assert client.get("/account").status_code == 200  # this browser stays signed in
    assert client.get("/api/v1/users/me", headers=auth.bearer(other)).status_code == 401


def test_reset_link_get_does_not_consume_the_token(auth, client, outbox):
    auth.register()
    post_form(client, "/password-reset", {"email": "user@example.com"})
    link = next(u for u in links(outbox.wait_for(lambda m: "Reset" in m["Subject"])) if "/password-reset/" in u)
    path = link.split("localhost", 1)[1]
    for _ in range(3):  # a mail scanner prefetching the link
        assert client.get(path).status_code == 200
    response = post_form(client, path, {"new_password": NEW})
    assert response.status_code == 302
    assert auth.login(password=NEW).status_code == 200
    assert client.get(path).status_code == 400


def test_signup_completion_page(client, outbox):
    client.post("/api/v1/auth/signup", json={"email": "two@example.com"})
    link = next(u for u in links(outbox.wait_for(lambda m: m["To"] == "two@example.com"))
                if "/signup/complete/" in u)
    path = link.split("localhost", 1)[1]
    assert client.get(path).status_code == 200 and client.get(path).status_code == 200
    response = post_form(client, path, {"password": PASSWORD, "full_name": "Two"})
    assert response.status_code == 302 and response.headers["Location"] == "/account"
    assert "two@example.com" in client.get("/account").text


def test_verify_link_verifies_on_get(auth, client, outbox):
    auth.register()
    link = next(u for u in links(outbox.wait_for(lambda m: m["To"] == "user@example.com"))
                if "/verify-email/" in u)
    path = link.split("localhost", 1)[1]
    assert client.get(path).status_code == 200
    assert client.get(path).status_code == 400


def _change_link(auth, client, outbox, new_email="moved@example.com") -> str:
    pair = auth.signed_in()
    assert client.patch("/api/v1/users/me", json={"email": new_email}, headers=auth.bearer(pair)).status_code == 200
    message = outbox.wait_for(lambda m: m["To"] == new_email)
    assert message["Subject"] == "Confirm your new email address"
    return next(u for u in links(message) if "/confirm-email-change/" in u).split("localhost", 1)[1]


def test_a_change_of_address_is_confirmed_on_its_page_never_by_get(auth, client, outbox):
    path = _change_link(auth, client, outbox)
    for _ in range(3):  # a mail scanner opening the link changes nothing
        shown = client.get(path)
        assert shown.status_code == 200 and "moved@example.com" in shown.text
    assert auth.login("user@example.com").status_code == 200
    token = path.rsplit("/", 1)[1]
    # Sent to the one-click path (as links mailed before this page existed were), it lands on the page too.
    redirected = client.get(f"/verify-email/{token}")
    assert redirected.status_code == 302 and redirected.headers["Location"].endswith(path)
    assert client.post(path, data={}).status_code == 400  # no CSRF token
    assert auth.login("user@example.com").status_code == 200
    confirmed = post_form(client, path, {})
    assert confirmed.status_code == 200 and "moved@example.com is confirmed" in confirmed.text
    assert auth.login("moved@example.com").status_code == 200
    assert client.get(path).status_code == 400


def test_the_change_page_takes_no_other_link(auth, client, outbox):
    auth.register()
    link = next(u for u in links(outbox.wait_for(lambda m: m["To"] == "user@example.com")) if "/verify-email/" in u)
    token = link.rsplit("/", 1)[1]
    assert client.get(f"/confirm-email-change/{token}").status_code == 400  # a new account's link is not a change
    assert client.get(f"/verify-email/{token}").status_code == 200  # it still confirms there, in one click


@pytest.mark.sqlite_only
def test_a_get_that_writes_waits_for_another_writer_instead_of_failing(app, auth, client, outbox):
    """SQLite: a GET begins without the write lock; one that writes (a mail link) takes it at once, so a writer
    busy meanwhile (the mail sender, another request) delays it rather than failing it."""
    import sqlite3
    import threading

    auth.register()
    link = next(u for u in links(outbox.wait_for(lambda m: m["To"] == "user@example.com")) if "/verify-email/" in u)
    other = sqlite3.connect(app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///"), timeout=10,
                            isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock...
    releaser = threading.Timer(0.5, lambda: other.execute("COMMIT"))  # ...for half a second
    releaser.start()
    try:
        assert client.get(link.split("localhost", 1)[1]).status_code == 200
    finally:
        releaser.join()
        other.close()


def test_unknown_pages_are_html(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404 and response.mimetype == "text/html"


@pytest.mark.settings(RATELIMIT_ENABLED=True, RATELIMIT_MAIL_PER_ADDRESS="2/hour", RATELIMIT_MAIL_REQUEST="100/minute")
def test_reset_page_shares_the_per_inbox_quota(client):
    codes = [post_form(client, "/password-reset", {"email": "victim@example.com"}).status_code for _ in range(2)]
    assert codes == [200, 200]
    assert post_form(client, "/password-reset", {"email": "victim@example.com"}).status_code == 429
    api = client.post("/api/v1/auth/password-reset/request", json={"email": "victim@example.com"})
    assert api.status_code == 429


def test_signing_in_replaces_the_browsers_session(auth, client):
    """When the access cookie had lapsed, loading the page rotated the old session's pair, which was then set
    after the new one: the browser stayed in the old account. The old session and CSRF token must not carry over."""
    auth.register()
    auth.register("b@example.com")
    sign_in_page(client)
    old_refresh = client.get_cookie("refresh_token").value
    token = csrf_of(client.get("/account"))
    client.delete_cookie("access_token_cookie")  # the access token lapsed: loading the page rotates the refresh one
    response = client.post("/login", data={"csrf_token": token, "email": "b@example.com", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/api/v1/users/me").json["email"] == "b@example.com"
    assert auth.refresh(old_refresh).status_code == 401  # the previous session ended
    stale = client.post("/account/resend-verification", data={"csrf_token": token})
    assert stale.status_code == 400  # the CSRF token from before the sign-in is spent


def test_signing_up_while_signed_in_signs_the_new_account_in(auth, client):
    auth.register()
    sign_in_page(client)
    token = csrf_of(client.get("/signup"))
    client.delete_cookie("access_token_cookie")
    response = client.post("/signup", data={"csrf_token": token, "email": "new@example.com", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/api/v1/users/me").json["email"] == "new@example.com"
