"""The OpenAPI description of the JSON API, declared beside each view with `@document(...)`.

`@document` only records what a view takes and answers; `spec.build(app)` walks `app.url_map` and turns the
records into an OpenAPI 3.1 document, with the request schemas taken from the very pydantic models `parse()`
validates with, and the response schemas from `responses.py`. Put `@document` right under the route decorator:

    @bp.post("/auth/login")
    @document(body=LoginIn, responses={200: TokenPair}, errors={401: "invalid_credentials"})
    @limit("RATELIMIT_LOGIN")
    def login(): ...
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

# Who may call an operation (the `auth` argument of `document`).
PUBLIC = None
USER = "user"  # a user's access token: Bearer, or the pages' cookie plus X-CSRF-Token on unsafe methods
# A gateway's check of a user's (or client's) token: the same credentials, but every refusal is 401 `unauthorized`.
GATEWAY = "gateway"
CLIENT = "client"  # a service client: HTTP Basic, or client_id/client_secret in the form
CLIENT_OPTIONAL = "client?"  # anyone; a service client may authenticate, and then must succeed


@dataclass(frozen=True)
class Operation:
    """What one view takes and answers, as `document` recorded it."""

    responses: dict[int, Any]
    body: type | None = None
    form: type | None = None
    query: type | None = None
    auth: str | None = PUBLIC
    errors: dict[int, tuple[str, ...]] = field(default_factory=dict)
    headers: dict[int, dict[str, str]] = field(default_factory=dict)
    rate_limited: bool = True
    description: str | None = None


def document(*, responses: dict[int, Any], body: type | None = None, form: type | None = None,
             query: type | None = None, auth: str | None = PUBLIC,
             errors: dict[int, str | tuple[str, ...]] | None = None,
             headers: dict[int, dict[str, str]] | None = None, rate_limited: bool = True,
             description: str | None = None) -> Callable:
    """Record a view's OpenAPI description: its request model, responses and the error codes it may answer.

    `responses` maps a status to a model of `responses.py` (the class or its name; `list[...]` of one), or
    to None for an empty body. `body` is the JSON request model, `form` a form-encoded one (the OAuth2
    endpoints, whose 400 and 401 are RFC 6749 errors), `query` the query-string model. `auth` is None,
    `USER`, a permission such as "users:read" (a user whose roles grant it), `CLIENT` or `CLIENT_OPTIONAL`.
    `errors` adds codes to those the rest implies (malformed or unsupported bodies, 422 for bodies,
    authentication, 404 for path ids, 429 unless `rate_limited=False`, 503 always). `headers` documents
    response headers by status.
    """
    codes = {status: (c,) if isinstance(c, str) else tuple(c) for status, c in (errors or {}).items()}
    operation = Operation(responses=dict(responses), body=body, form=form, query=query, auth=auth,
                          errors=codes, headers=dict(headers or {}), rate_limited=rate_limited,
                          description=description)

    def record(view: Callable) -> Callable:
        view.apidoc = operation
        return view

    return record
