"""Security headers (and the request id, set in logs.py) on every response, and CORS for the JSON API only."""
from __future__ import annotations

from flask import Flask, g, request

from .extensions import cors


def init_hardening(app: Flask) -> None:
    """Install the response-header hook, and CORS limited to `/api/` and CORS_ORIGINS."""
    if app.config["CORS_ORIGINS"]:
        # Cross-origin callers authenticate with Bearer tokens; cookies stay same-site (no credentials).
        cors.init_app(app, resources={r"/api/*": {"origins": app.config["CORS_ORIGINS"]}},
                      allow_headers=["Authorization", "Content-Type", "X-CSRF-Token", "X-Request-ID"],
                      expose_headers=["X-Request-ID", "Retry-After"], supports_credentials=False, max_age=600)

    @app.after_request
    def _security_headers(response):
        headers = response.headers
        headers["X-Request-ID"] = g.get("request_id", "")
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("X-Frame-Options", "DENY")
        # Pages set their own policy; everything else is data that should never run or be framed.
        headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
        if request.is_secure:
            headers.setdefault("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
        return response
