"""Headers on every response, CORS for the API only, and request ids."""
import pytest


@pytest.mark.parametrize("path", ["/healthz", "/api/v1/users/me", "/login", "/.well-known/jwks.json"])
def test_security_headers_everywhere(client, path):
    headers = client.get(path).headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    # The API sends no Referer anywhere; pages keep theirs within the site (the CSRF check over HTTPS needs it).
    assert headers["Referrer-Policy"] == ("same-origin" if path == "/login" else "no-referrer")
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "Strict-Transport-Security" not in headers  # plain http: HSTS would be ignored and misleading


def test_hsts_under_https(client):
    headers = client.get("/healthz", base_url="https://localhost").headers
    assert headers["Strict-Transport-Security"].startswith("max-age=")


@pytest.mark.settings(CORS_ORIGINS="https://app.example.com")
def test_cors_only_for_listed_origins_and_the_api(client):
    allowed = client.options("/api/v1/auth/login", headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Content-Type"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Access-Control-Allow-Credentials" not in allowed.headers
    other = client.get("/api/v1/users/me", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    page = client.get("/login", headers={"Origin": "https://app.example.com"})
    assert "Access-Control-Allow-Origin" not in page.headers


def test_no_cors_by_default(client):
    response = client.get("/api/v1/users/me", headers={"Origin": "https://app.example.com"})
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize("given, kept", [("abc-123", True), ("x" * 65, False), ("bad id;<script>", False)])
def test_request_id(client, given, kept):
    returned = client.get("/healthz", headers={"X-Request-ID": given}).headers["X-Request-ID"]
    assert (returned == given) is kept and returned
