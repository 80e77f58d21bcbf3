"""How a request proves who it is: Flask-JWT-Extended wired to our keys, blocklist and error envelope."""
from __future__ import annotations

import uuid
from functools import wraps

from flask import Flask, current_app, g, request
from flask_jwt_extended import get_jwt, verify_jwt_in_request
from flask_jwt_extended.exceptions import CSRFError, JWTDecodeError

from .errors import APIError, error_response
from .extensions import jwt
from .services import keys, tokens, users


@jwt.encode_key_loader
def _encode_key(_identity):
    return g.authsvc_signing_key


@jwt.decode_key_loader
def _decode_key(header: dict, unverified: dict):
    # Claims PyJWT would only check when present (exp, iat, iss, aud...) must be there at all.
    if not tokens.check_required_claims(unverified):
        raise JWTDecodeError("the token lacks a required claim")
    key = keys.public_key(header.get("kid"))
    # The header's `alg` is pinned to JWT_ALGORITHM; a kid naming a key of another type (one published before
    # JWT_ALGORITHM changed) would make PyJWT raise InvalidKeyError, which nothing turns into a 401.
    if key is None or not isinstance(key, keys.PUBLIC_KEY_TYPES[current_app.config["JWT_ALGORITHM"]]):
        raise JWTDecodeError("the token was not signed by a key of this service")
    return key


@jwt.token_in_blocklist_loader
def _is_revoked(_header: dict, payload: dict) -> bool:
    return tokens.is_revoked(payload)


@jwt.expired_token_loader
def _expired(_header, _payload):
    return error_response(401, "token_expired", "The access token has expired.")


@jwt.revoked_token_loader
def _revoked(_header, _payload):
    return error_response(401, "token_revoked", "The access token has been revoked.")


@jwt.invalid_token_loader
def _invalid(_reason: str):
    return error_response(401, "unauthorized", "The access token is not valid.")


@jwt.unauthorized_loader
def _missing(_reason: str):
    return error_response(401, "unauthorized", "Authentication is required.")


def init_auth(app: Flask) -> None:
    """Install the handlers Flask-JWT-Extended does not cover the way the contract wants."""

    @app.errorhandler(CSRFError)
    def _csrf(_exc):
        # A cookie-authenticated unsafe request without the matching X-CSRF-Token header.
        return error_response(403, "forbidden", "The CSRF token is missing or does not match.")

    @app.errorhandler(keys.KeysUnavailable)
    def _keys_down(_exc):
        app.logger.error("signing keys unavailable: %s", _exc)
        return error_response(503, "unavailable", "A dependency is unavailable; retry shortly.", {"Retry-After": "5"})


def user_token_required(view):
    """Require a valid access token of a user (not of a service client); sets `g.user_id` and `g.session_id`
    without loading the user (for reads that fetch only what they answer)."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        # Through the token-check memory: the same verification and revocation check Flask-JWT-Extended runs.
        bearer = tokens.bearer_token(request.headers.get("Authorization", ""))
        claims = tokens.live_access_claims(bearer)
        if claims is None:  # no Bearer token, a cookie, or a refusal: Flask-JWT-Extended decides, and says why
            csrf = request.headers.get("X-CSRF-Token", "")
            if not csrf.isascii() and bearer is None:
                # Flask-JWT-Extended compares it with compare_digest, which raises on non-ASCII text. Without a Bearer
                # token (no Authorization header, or one of another scheme) it reads the cookie and compares.
                raise APIError(403, "forbidden", "The CSRF token is missing or does not match.")
            scheme = request.environ.get("HTTP_AUTHORIZATION", "")
            if scheme[:7].lower() == "bearer " and not scheme.startswith("Bearer "):
                # The scheme is case-insensitive (RFC 7235), as tokens.bearer_token reads it; Flask-JWT-Extended
                # knows only `Bearer`, and would answer a refused `bearer` token without saying why.
                request.environ["HTTP_AUTHORIZATION"] = "Bearer " + scheme[7:]
            verify_jwt_in_request()
            claims = get_jwt()
        try:
            g.user_id, g.session_id = uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"])
        except (KeyError, TypeError, ValueError, AttributeError):  # uuid.UUID(a number) raises AttributeError
            raise APIError(401, "unauthorized", "A user's access token is required.") from None
        return view(*args, **kwargs)

    return wrapper


def user_required(view):
    """Require a valid access token of a user (not of a service client); sets `g.user` and `g.session_id`."""

    @wraps(view)
    @user_token_required
    def wrapper(*args, **kwargs):
        g.user = users.get_user(g.user_id)
        if g.user is None:
            raise APIError(401, "unauthorized", "A user's access token is required.")
        return view(*args, **kwargs)

    return wrapper


def permission_required(permission: str):
    """Require a user's access token whose user holds `permission` (through a role; `admin` holds all)."""

    def decorate(view):
        @wraps(view)
        @user_required
        def wrapper(*args, **kwargs):
            if not g.user.can(permission):
                raise APIError(403, "forbidden", f"This needs the {permission} permission.")
            return view(*args, **kwargs)

        return wrapper

    return decorate
