"""Forward-auth for gateways (nginx `auth_request`, Traefik ForwardAuth): is this request allowed?"""
import hmac
from urllib.parse import quote

from flask import current_app, request

from ...readonly import read_only
from ...errors import error_response
from ...extensions import limiter
from ...openapi import GATEWAY, document
from ...schemas import ForwardAuthQuery
from ...services import tokens
from . import bp

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORWARDED = {  # what a 200 tells the gateway, to pass on to the app behind it
    "X-User-Id": "The user's id (a service client's id for client tokens).",
    "X-User-Email": "The user's email address.",
    "X-User-Roles": "The user's roles, comma-separated.",
    "X-Client-Id": "Service client tokens only: the client id.",
    "X-Scopes": "Service client tokens only: the granted scopes, space-separated.",
    "X-User-Email-Verified": "`true` when the user proved the address (a link we mailed, or Google), else `false`.",
}


def _presented() -> tuple[str | None, bool]:
    """The access token of the original request, and whether it came from the pages' cookie."""
    bearer = tokens.bearer_token(request.headers.get("Authorization", ""))
    if bearer is not None:
        return bearer, False
    return request.cookies.get(current_app.config["JWT_ACCESS_COOKIE_NAME"]), True


@bp.route("/auth/verify", methods=["GET", "HEAD"])
@read_only
@document(auth=GATEWAY, query=ForwardAuthQuery, responses={200: None}, headers={200: FORWARDED},
          rate_limited=False)
@limiter.exempt  # every request through a gateway comes from the gateway's address: a per-address limit would
def forward_auth():  # throttle all users together; the gateway limits its own clients
    """200 with X-User-* headers for a live token (and `?role=` held); 401 without one; 403 without the role."""
    token, from_cookie = _presented()
    payload = tokens.live_access_claims(token)
    if payload is None:
        return error_response(401, "unauthorized", "A valid access token is required.",
                              {"WWW-Authenticate": 'Bearer realm="authsvc"'})
    # The gateway asks with GET; the original method comes in a header. A browser's cookie on an unsafe
    # request must carry the CSRF double-submit header, exactly as it would calling the API directly.
    headers = request.headers
    # Either header may be the client's own (nginx's auth_request passes every header of the original request on):
    # the request is unsafe when either names an unsafe method, so a client cannot mask the gateway's.
    methods = {(headers.get(name) or "").strip().upper() for name in ("X-Forwarded-Method", "X-Original-Method")}
    # Compared as bytes: compare_digest refuses non-ASCII text (a 500 for a header anyone can send).
    if from_cookie and methods & UNSAFE and not hmac.compare_digest(
            headers.get("X-CSRF-Token", "").encode(), (payload.get("csrf", "") or "\x00").encode()):
        return error_response(403, "forbidden", "The CSRF token is missing or does not match.")
    roles = payload.get("roles", [])
    wanted = request.args.get("role")
    if wanted and wanted not in roles:
        return error_response(403, "forbidden", f"This needs the {wanted[:64]} role.")
    forwarded = [("X-User-Id", payload["sub"]), ("X-User-Email", _header_address(payload.get("email", ""))),
                 ("X-User-Roles", ",".join(roles))]
    if "sid" in payload:  # a user's token: say whether the address is proven (anyone may register any address)
        forwarded.append(("X-User-Email-Verified", "true" if payload.get("email_verified") is True else "false"))
    if "client_id" in payload:
        forwarded += [("X-Client-Id", payload["client_id"]), ("X-Scopes", payload.get("scope", ""))]
    return current_app.response_class(status=200, headers=forwarded)


def _header_address(email: str) -> str:
    """The address as a header can carry it (ASCII): an internationalised domain in its IDNA form."""
    if email.isascii():
        return email
    local, _, domain = email.rpartition("@")
    try:
        return f"{quote(local, safe='@.+-_!#$&*=?^`{|}~')}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:  # not a domain IDNA can write: no address rather than a broken response
        return ""
