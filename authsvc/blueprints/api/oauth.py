"""OAuth2 endpoints (RFC 6749 token, RFC 7009 revocation): form bodies in, RFC-shaped errors out."""
from contextlib import contextmanager
from urllib.parse import unquote_plus

from flask import current_app, jsonify, request

from ...database import commit_if_staged
from ...readonly import read_only
from ...errors import OAUTH_CODES, APIError
from ...extensions import db
from ...schemas import IntrospectForm, RevokeForm, TokenForm, normalize_email
from ...services import accounts, clients, sessions, tokens
from ...limits import limit, limit_password_sign_in, posted_form_value
from ...openapi import CLIENT, CLIENT_OPTIONAL, document
from . import bp, client_meta

GRANTS = ("password", "refresh_token", "client_credentials")
# RFC 6749 §5.2: a 401 invalid_client names the authentication scheme the client should use.
BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="authsvc"'}


def _form() -> dict:
    if request.mimetype != "application/x-www-form-urlencoded":
        raise APIError(400, "invalid_request", "Send the body as application/x-www-form-urlencoded.")
    return request.form


def _required(form, *names: str) -> list[str]:
    missing = [name for name in names if not form.get(name)]
    if missing:
        raise APIError(400, "invalid_request", f"Missing parameter: {', '.join(missing)}.")
    values = [form[name] for name in names]
    if any(len(v) > 4096 or "\x00" in v for v in values):
        raise APIError(400, "invalid_request", "A parameter is malformed.")
    return values


@contextmanager
def _as_invalid_grant():
    """Answer the services' credential and token errors as RFC 6749 `invalid_grant`."""
    try:
        yield
    except APIError as exc:
        if exc.status >= 500 or exc.status == 429 or exc.code in OAUTH_CODES:  # a block keeps its 429 and Retry-After
            raise
        raise APIError(400, "invalid_grant", exc.message, persist=exc.persist) from None


def _password_grant(form) -> dict:
    _client_credentials(form, required=False)  # a client may authenticate; if it tries, it must succeed
    username, password = _required(form, "username", "password")
    with _as_invalid_grant():
        try:
            email = normalize_email(username)
        except ValueError:
            raise APIError(401, "invalid_credentials", "The email or password is incorrect.") from None
        user_agent, ip = client_meta()
        user = accounts.authenticate(email, password, ip)
        return sessions.start_session(user, user_agent, ip)


def _refresh_grant(form) -> dict:
    _client_credentials(form, required=False)
    (refresh_token,) = _required(form, "refresh_token")
    with _as_invalid_grant():
        return sessions.rotate(refresh_token, *client_meta())


def _client_credentials(form, required: bool):
    """The service client authenticating this request (HTTP Basic, or form client_id/client_secret).

    Returns None when no credentials were sent and none are `required`; wrong credentials are always 401. A bare
    `client_id` where none is required is a public client naming itself (RFC 6749 §3.2.1), not an attempt.
    """
    auth = request.authorization
    # Empty Basic credentials (Swagger UI's password flow sends them when no client is set) authenticate nobody.
    if auth is not None and auth.type == "basic" and (auth.username or auth.password):
        if form.get("client_secret"):  # RFC 6749 §2.3: one authentication method per request, never two
            raise APIError(400, "invalid_request", "Authenticate the client with HTTP Basic or the form, not both.")
        # RFC 6749 §2.3.1: the Basic credentials are form-urlencoded before encoding.
        client_id, secret = unquote_plus(auth.username or ""), unquote_plus(auth.password or "")
    elif form.get("client_secret") or (required and form.get("client_id")):
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    elif not required:
        return None
    else:
        raise APIError(401, "invalid_client", "Client authentication is required.", headers=BASIC_CHALLENGE)
    client = clients.authenticate(client_id[:200], secret[:200])
    if client is None:
        raise APIError(401, "invalid_client", "Client authentication failed.", headers=BASIC_CHALLENGE)
    return client


def _client_grant(form) -> dict:
    client = _client_credentials(form, required=True)
    with _as_invalid_grant():
        return clients.token_response(client, form.get("scope"))


@bp.post("/auth/token")
@document(form=TokenForm, auth=CLIENT_OPTIONAL, responses={200: "TokenResponse"},
          errors={400: ("invalid_grant", "unsupported_grant_type", "invalid_scope")})
@limit("RATELIMIT_TOKEN")
@limit_password_sign_in(exempt_when=lambda: posted_form_value("grant_type") != "password")
def token():
    """OAuth2 token endpoint: password, refresh_token and client_credentials grants."""
    form = _form()
    grant_type = form.get("grant_type")
    if not grant_type:
        raise APIError(400, "invalid_request", "Missing parameter: grant_type.")
    if grant_type not in GRANTS:
        raise APIError(400, "unsupported_grant_type", f"Supported grant types: {', '.join(GRANTS)}.")
    grant = {"password": _password_grant, "refresh_token": _refresh_grant, "client_credentials": _client_grant}
    pair = grant[grant_type](form)
    commit_if_staged()  # a refresh_token grant's winning rotation on PostgreSQL has committed itself
    response = jsonify(pair)
    response.headers["Pragma"] = "no-cache"
    return response


@bp.post("/auth/revoke")
@document(form=RevokeForm, auth=CLIENT_OPTIONAL, responses={200: None})
def revoke():
    """RFC 7009: revoke a refresh token (its whole session) or one access token → 200, known or not."""
    form = _form()
    _client_credentials(form, required=False)  # a client may authenticate; if it tries, it must succeed
    (token_value,) = _required(form, "token")
    # The hint only orders the lookups (RFC 7009 §2.1): a token sent with the wrong hint is revoked all the same.
    kinds = [sessions.revoke_refresh_token, _revoke_access]
    if form.get("token_type_hint") == "access_token":
        kinds.reverse()
    any(revoke_kind(token_value) for revoke_kind in kinds)
    db.session.commit()
    return "", 200


def _revoke_access(token_value: str) -> bool:
    payload = tokens.decode_access_token(token_value)
    if payload is None:
        return False
    tokens.revoke_access_token(payload)
    return True


@bp.post("/auth/introspect")
@read_only
@document(form=IntrospectForm, auth=CLIENT, responses={200: "Introspection"}, errors={403: "insufficient_scope"})
def introspect():
    """RFC 7662, for service clients: whether a token is live, and what it says; dead or foreign → inactive."""
    form = _form()
    client = _client_credentials(form, required=True)
    scope = current_app.config["INTROSPECTION_SCOPE"]
    if scope and scope not in client.scopes:
        raise APIError(403, "insufficient_scope", f"Introspection needs the {scope} scope.")
    (token_value,) = _required(form, "token")
    response = jsonify(tokens.introspect(token_value, form.get("token_type_hint")))
    response.headers["Cache-Control"] = "no-store"
    return response
