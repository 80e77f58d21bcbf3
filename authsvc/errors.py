"""The one error type of the JSON API, its stable codes, and the app-level handlers that render them."""
from __future__ import annotations

import logging

from flask import Flask, jsonify, make_response, render_template, request
from flask.globals import request_ctx
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from .extensions import db
from .logredact import redact

log = logging.getLogger(__name__)

# HTTP status -> the contract's code for errors raised by Flask/Werkzeug itself.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}
# The OAuth2 endpoints answer every error in RFC 6749 §5.2 form (an APIError with one of its codes, and those raised
# around their views too: the rate limit, the sign-in block, the method, the body size, a dependency down): OAuth2
# clients read no other shape.
OAUTH_PATHS = frozenset({"/api/v1/auth/token", "/api/v1/auth/introspect", "/api/v1/auth/revoke"})
# RFC 6749 §5.2's error codes (and RFC 6750's insufficient_scope), which those endpoints raise themselves.
OAUTH_CODES = frozenset({"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
                         "unsupported_grant_type", "invalid_scope", "insufficient_scope"})


class APIError(Exception):
    """An error answered in the contract's envelope: `{"error": {"code", "message", "fields"?}}` (on the OAuth2
    endpoints, RFC 6749's `{"error": code, "error_description": message}`).

    `persist=True` means the changes staged before the error are part of its outcome (for example, refresh
    token reuse revokes the session and then answers 401), so the handler commits instead of rolling back.
    """

    def __init__(self, status: int, code: str, message: str, fields: dict | None = None, persist: bool = False,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.fields, self.persist = status, code, message, fields, persist
        self.headers = headers or {}

    def body(self) -> dict:
        """The JSON body of this error."""
        error = {"code": self.code, "message": self.message}
        if self.fields:
            error["fields"] = self.fields
        return {"error": error}


def validation_error(fields: dict[str, list[str]], message: str = "The request has invalid fields.") -> APIError:
    """A 422 `validation_error` naming the problem of each field."""
    return APIError(422, "validation_error", message, fields=fields)


def finish_transaction(persist: bool) -> None:
    """Commit what an error says is part of its outcome; roll back everything else."""
    try:
        db.session.commit() if persist else db.session.rollback()
    except Exception:  # the database may be what failed; the error answer must still go out
        log.exception("could not finish the transaction of a failed request")
        db.session.rollback()


def error_response(status: int, code: str, message: str, headers=None):
    """The contract's envelope for the API (RFC 6749 form on the OAuth2 endpoints); a page for browsers (the
    envelope when no page can be built: a Host header that is not a host name leaves no URL adapter, and the page's
    url_for would raise)."""
    if request and not _wants_json() and request_ctx.url_adapter is not None:
        response = make_response(render_template("error.html", status=status, message=message), status)
    elif request and request.path in OAUTH_PATHS:
        response = jsonify({"error": code, "error_description": message})
        response.status_code = status
        response.headers["Cache-Control"] = "no-store"
    else:
        response = jsonify({"error": {"code": code, "message": message}})
        response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


def _wants_json() -> bool:
    """JSON for the API and machine endpoints; HTML for the pages browsers see."""
    return request.path.startswith(("/api/", "/.well-known/", "/healthz", "/readyz", "/metrics"))


def register_error_handlers(app: Flask) -> None:
    """Install the app-level handlers: every error leaves as the envelope, never as a stack trace."""

    @app.errorhandler(APIError)
    def _api_error(exc: APIError):
        finish_transaction(exc.persist)
        if not _wants_json() or request.path in OAUTH_PATHS:
            return error_response(exc.status, exc.code, exc.message, exc.headers)
        return jsonify(exc.body()), exc.status, exc.headers

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        finish_transaction(False)
        status = exc.code or 500
        code = HTTP_CODES.get(status, "bad_request" if status < 500 else "internal_error")
        message = exc.description if status != 429 else "Too many requests; retry later."
        response = error_response(status, code, message)
        if getattr(exc, "valid_methods", None):
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def _database_down(exc):
        log.error("database unavailable on %s %s: %s", request.method, redact(request.path),
                  exc.__class__.__name__)
        finish_transaction(False)
        return error_response(503, "unavailable", "A dependency is unavailable; retry shortly.", {"Retry-After": "5"})

    def _redis_down(exc):
        # Only reached with RATELIMIT_FAIL_OPEN=false: the operator chose refusing over unlimited serving.
        log.error("rate-limit storage unavailable on %s %s: %s", request.method, redact(request.path),
                  exc.__class__.__name__)
        finish_transaction(False)
        return error_response(503, "unavailable", "A dependency is unavailable; retry shortly.", {"Retry-After": "5"})

    if str(app.config.get("RATELIMIT_STORAGE_URI", "")).startswith("redis"):
        # Imported only when Redis is configured: the client library adds about 6 MB to every worker.
        from redis.exceptions import RedisError

        app.register_error_handler(RedisError, _redis_down)

    @app.errorhandler(IntegrityError)
    def _conflict(exc):
        # A write that a concurrent one made impossible (a key taken between our check and our write). The
        # services answer the races they know with their own codes; any other is still the caller's to retry.
        log.warning("integrity conflict on %s %s: %s", request.method, redact(request.path),
                    exc.orig.__class__.__name__)
        finish_transaction(False)
        return error_response(409, "conflict", "This conflicts with a change made at the same time; retry.")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # The cause and traceback go to the log, stamped with the request id (logs.RequestIdFilter); the client
        # gets the code, and the same id in X-Request-ID to quote. Paths may carry mail-link tokens.
        log.exception("unhandled error on %s %s", request.method, redact(request.path))
        finish_transaction(False)
        return error_response(500, "internal_error", "An internal error occurred.")
