"""The hosted pages in a real headless Chromium, as a person uses them; screenshots go to test-artifacts/.

SQLite only: the pages do not depend on the database (test_pages.py covers both), and a browser per backend
would double the slowest tests of the suite.
"""
import pytest

from .browser import screenshot
from .conftest import PASSWORD
from .smtpserver import links

pytestmark = pytest.mark.sqlite_only
NEW = "another fine passphrase 8"
NEWER = "yet another passphrase 9"


@pytest.fixture
def context(browser):
    """A fresh browser profile (no cookies)."""
    ctx = browser.new_context(viewport={"width": 1000, "height": 800})
    yield ctx
    ctx.close()


def _link(outbox, to, part):
    message = outbox.wait_for(lambda m: m["To"] == to and any(part in u for u in links(m)))
    return next(u for u in links(message) if part in u)


def _sign_in(page, base, email="web@example.com", password=PASSWORD, next_=""):
    page.goto(f"{base}/login{next_}")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def test_signup_verify_sessions_password_and_reset(live_server, context, browser, outbox):
    base = live_server.url
    page = context.new_page()

    # Sign up: the browser is signed in and lands on the account page.
    page.goto(f"{base}/signup")
    screenshot(page, "01-signup")
    page.get_by_label("Name").fill("Web User")
    page.get_by_label("Email").fill("web@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(f"{base}/account")
    assert "not confirmed" in page.content()
    screenshot(page, "02-account-unverified")

    # The verification mail's link confirms the address in one click.
    page.goto(_link(outbox, "web@example.com", "/verify-email/"))
    assert page.get_by_role("heading", name="Address confirmed").is_visible()
    screenshot(page, "03-verified")

    # A second browser signs in; the first one signs it out from the account page.
    other = browser.new_context().new_page()
    _sign_in(other, base)
    assert other.url == f"{base}/account"
    page.goto(f"{base}/account")
    assert page.locator(".sessions li").count() == 2
    screenshot(page, "04-account-two-sessions")
    page.locator(".sessions li", has_not_text="this browser").get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{base}/account")
    assert page.locator(".sessions li").count() == 1
    other.goto(f"{base}/account")
    assert other.url.startswith(f"{base}/login")
    other.context.close()

    # Change the password: this browser stays signed in.
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password").fill(NEW)
    page.get_by_role("button", name="Change password").click()
    page.wait_for_url(f"{base}/account")
    assert "Password changed" in page.content()
    screenshot(page, "05-password-changed")

    # Sign out, then reset the password through the pages and the mailed link.
    page.get_by_role("button", name="Sign out", exact=True).first.click()
    page.wait_for_url(f"{base}/login")
    screenshot(page, "06-login")
    page.goto(f"{base}/password-reset")
    page.get_by_label("Email").fill("web@example.com")
    page.get_by_role("button", name="Send the link").click()
    assert page.get_by_role("heading", name="Check your mail").is_visible()
    page.goto(_link(outbox, "web@example.com", "/password-reset/"))
    screenshot(page, "07-reset-form")
    page.get_by_label("New password").fill(NEWER)
    page.get_by_role("button", name="Set password").click()
    page.wait_for_url(f"{base}/login")
    _sign_in(page, base, password=NEWER)
    assert page.url == f"{base}/account"


def test_errors_show_next_to_the_field(live_server, context):
    page = context.new_page()
    page.goto(f"{live_server.url}/signup")
    page.get_by_label("Email").fill("web@example.com")
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Create account").click()
    error = page.locator("#password-errors")
    assert error.is_visible() and "at least 8" in error.inner_text()
    assert page.get_by_label("Password").get_attribute("aria-invalid") == "true"
    screenshot(page, "08-signup-error")


def test_form_post_without_csrf_token_is_refused(live_server, context):
    page = context.new_page()
    page.goto(f"{live_server.url}/login")
    response = page.request.post(f"{live_server.url}/login",
                                 form={"email": "web@example.com", "password": PASSWORD})
    assert response.status == 400


def _sign_up(page, base, email="web@example.com"):
    """Create an account through /signup; the browser lands signed in on /account."""
    page.goto(f"{base}/signup")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(f"{base}/account")


def test_next_to_a_foreign_origin_is_refused(live_server, context):
    base = live_server.url
    page = context.new_page()
    _sign_up(page, base)
    context.clear_cookies()
    _sign_in(page, base, next_="?next=https://evil.example/steal")
    assert page.url == f"{base}/account"


def test_the_forms_work_over_https(https_live_server, browser):
    # Over HTTPS the CSRF check also wants a same-origin Referer, which the pages' referrer policy must let the
    # browser send (with `no-referrer` every form was refused).
    base = https_live_server.url
    ctx = browser.new_context(ignore_https_errors=True)
    page = ctx.new_page()
    _sign_up(page, base, "tls@example.com")
    ctx.clear_cookies()
    _sign_in(page, base, email="tls@example.com")
    assert page.url == f"{base}/account"
    ctx.close()


def test_pages_fit_a_phone(live_server, browser):
    ctx = browser.new_context(viewport={"width": 360, "height": 740})
    page = ctx.new_page()
    page.goto(f"{live_server.url}/login")
    width = page.evaluate("document.documentElement.scrollWidth")
    screenshot(page, "09-login-phone")
    ctx.close()
    assert width <= 360
