"""Security headers (and the request id, set in logs.py) on every response, and CORS for the JSON API only."""
from __future__ import annotations

from flask import Flask, abort, g, request

from .extensions import cors


# Unless the view set its own (pages set their own policy): everything else is data that should never run or be
# framed.
DEFAULT_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
)


def init_hardening(app: Flask) -> None:
    """Install the response-header hook, and CORS limited to `/api/` and CORS_ORIGINS."""
    if app.config["CORS_ORIGINS"]:
        # Cross-origin callers authenticate with Bearer tokens; cookies stay same-site (no credentials).
        cors.init_app(app, resources={r"/api/*": {"origins": app.config["CORS_ORIGINS"]}},
                      allow_headers=["Authorization", "Content-Type", "X-CSRF-Token", "X-Request-ID"],
                      expose_headers=["X-Request-ID", "Retry-After"], supports_credentials=False, max_age=600)

    @app.before_request
    def _chunked_body_within_limit():
        # A body sent without Content-Length (chunked) is read up to MAX_CONTENT_LENGTH and silently cut there
        # (werkzeug): a truncated JSON or form body would be answered 400. Past the limit it is 413, as it is
        # for a body whose announced length is over it.
        if request.content_length is None and "HTTP_TRANSFER_ENCODING" in request.environ:
            if len(request.get_data(cache=True)) >= app.config["MAX_CONTENT_LENGTH"] and \
                    request.environ["wsgi.input"].read(1):
                abort(413)

    @app.after_request
    def _security_headers(response):
        headers = response.headers
        # One pass over what the view set, then append what is missing: werkzeug's per-name lookups raise and
        # catch an exception for every absent name, and each assignment scans every header, a measurable cost on
        # every request.
        present = {name.lower() for name in headers.keys()}
        if "x-request-id" in present:
            headers["X-Request-ID"] = g.get("request_id", "")
        else:
            headers.add("X-Request-ID", g.get("request_id", ""))
        for name, value in DEFAULT_HEADERS:
            if name.lower() not in present:
                headers.add(name, value)
        if request.is_secure and "strict-transport-security" not in present:
            headers.add("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
        return response
