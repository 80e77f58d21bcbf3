"""Swagger UI at /docs: served from package assets under the strict CSP, and usable in a real browser."""
import re

import pytest

from .browser import screenshot
from .conftest import PASSWORD

STRICT = ("script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "object-src 'none'")


def test_docs_page_loads_only_local_assets(client):
    response = client.get("/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert all(part in csp for part in STRICT) and "unsafe" not in csp
    html = response.get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script would break the CSP"
    assert 'data-spec-url="/api/v1/openapi.json"' in html
    scripts = re.findall(r'<script src="([^"]+)"', html)
    styles = re.findall(r'<link rel="stylesheet" href="([^"]+)"', html)
    assert len(scripts) == 2 and len(styles) == 2
    for url in scripts + styles:
        assert url.startswith("/"), f"{url} is not served by us"
        asset = client.get(url)
        assert asset.status_code == 200, url
        expected = "text/javascript" if url in scripts else "text/css"
        assert asset.mimetype == expected, (url, asset.mimetype)
        assert len(asset.data) > (100_000 if "swagger-ui" in url else 50), url


def test_swagger_ui_licence_is_served(client):
    licence = client.get("/docs/swagger-ui/LICENSE")
    assert licence.status_code == 200 and b"Apache License" in licence.data


@pytest.mark.sqlite_only  # the page does not depend on the database; one browser run is enough
def test_docs_in_a_browser_authorize_and_try_it_out(live_server, browser):
    """Operations render; Authorize runs the password grant; "Try it out" on GET /users/me answers 200."""
    email = "docs@example.com"
    registered = live_server.app.test_client().post(
        "/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.json
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        page.goto(f"{live_server.url}/docs")
        page.locator(".opblock").first.wait_for()
        assert page.locator(".opblock").count() >= 30
        assert page.get_by_text("authsvc", exact=False).first.is_visible()
        screenshot(page, "30-docs")

        page.locator(".auth-wrapper .authorize").click()
        oauth = page.locator(".auth-container", has_text="oauth2Password")
        oauth.locator("#oauth_username").fill(email)
        oauth.locator("#oauth_password").fill(PASSWORD)
        oauth.get_by_role("button", name="Apply given OAuth2 credentials").click()  # the "Authorize" button
        oauth.get_by_role("button", name="Remove authorization").wait_for()  # "Logout": the token was issued
        screenshot(page, "31-docs-authorized")
        page.locator(".dialog-ux .close-modal").first.click()

        me = page.locator("#operations-users-me")
        me.locator(".opblock-summary").click()
        me.get_by_role("button", name="Try it out").click()
        me.get_by_role("button", name="Execute").click()
        status = me.locator(".live-responses-table tr.response .response-col_status").first
        status.wait_for()
        assert status.inner_text().strip() == "200"
        assert email in me.locator(".live-responses-table .microlight").first.inner_text()
        screenshot(page, "32-docs-try-it-out")
    finally:
        context.close()
    assert not [p for p in problems if "Content Security Policy" in p or "Refused to" in p], problems
