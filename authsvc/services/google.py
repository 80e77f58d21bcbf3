"""Google (or any OpenID provider named by GOOGLE_DISCOVERY_URL) as a way to sign in.

Authlib does the protocol: discovery, the authorization-code redirect with PKCE (S256), `state` and `nonce` kept
in the signed Flask session cookie (so the callback may land on any instance sharing SECRET_KEY), the code
exchange, and the provider's JWKS. ID tokens are verified here with algorithms pinned to asymmetric ones and
claims checked by Authlib's OpenID rules (`iss`, `aud` = our client id, `azp`, `exp`, `iat`, `nonce`).
Every failure becomes an `APIError`, so callers turn it into a page or the JSON envelope, never a 500.

Authlib, joserfc and requests are imported where they are used: a deployment without Google sign-in never loads
them (about 10 MB per worker).
"""
from __future__ import annotations

import logging
from time import monotonic

from flask import Flask, current_app, redirect

from ..errors import APIError
from ..schemas import normalize_email

log = logging.getLogger(__name__)

PROVIDER = "google"
# Public-key algorithms only: an HMAC algorithm would let anyone who knows the provider's public key forge.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
# Google's tokens name their issuer with or without the scheme (its documentation accepts both).
GOOGLE_ISSUERS = {"https://accounts.google.com", "accounts.google.com"}
# Google is authoritative for an address only on its own mail domains, or on a Workspace domain it names in `hd`.
# Elsewhere `email_verified` says the address was proved once, when the Google account was made: not who owns the
# mailbox today (a former employee, a lapsed domain), so it must not open an existing account on its own.
GOOGLE_MAIL_DOMAINS = {"gmail.com", "googlemail.com"}
# The discovery document's fields we use; without them the provider is as good as unreachable.
METADATA_FIELDS = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
EXTENSION = "authsvc.google"
# Authlib keeps the discovery document and the key set for the life of the process, and fetches the keys again
# only for a kid it does not know: a key the provider withdraws (Google rotates its keys and asks clients to follow
# its Cache-Control, an hour for both) would stay trusted, and a moved endpoint stay used, until a restart. Each is
# fetched again once this old.
PROVIDER_MAX_AGE_SECONDS = 3600
FETCHED = EXTENSION + ".fetched"  # when this process last fetched the "metadata" and the "jwks" (monotonic)


def init_app(app: Flask) -> None:
    """Register the provider's client on `app` when GOOGLE_CLIENT_ID is set (otherwise Google sign-in is off)."""
    cfg = app.config
    if not cfg["GOOGLE_CLIENT_ID"]:
        return
    from authlib.integrations.flask_client import OAuth

    # A registry per app, not a module-level one: Authlib keeps its clients (and their cached discovery
    # documents) on the registry, and each app may point at a different provider.
    registry = OAuth(app)
    app.extensions[EXTENSION] = registry.register(
        PROVIDER, client_id=cfg["GOOGLE_CLIENT_ID"], client_secret=cfg["GOOGLE_CLIENT_SECRET"] or None,
        server_metadata_url=cfg["GOOGLE_DISCOVERY_URL"],
        client_kwargs={"scope": "openid email profile", "code_challenge_method": "S256",
                       "default_timeout": cfg["GOOGLE_TIMEOUT_SECONDS"]},
    )


def enabled() -> bool:
    """Whether Google sign-in is configured for the current app."""
    return EXTENSION in current_app.extensions


def require_enabled() -> None:
    """404 `not_found` when Google sign-in is not configured (its routes do not exist then)."""
    if not enabled():
        raise APIError(404, "not_found", "Google sign-in is not enabled.")


def _client():
    require_enabled()
    return current_app.extensions[EXTENSION]


def _metadata(client) -> dict:
    """The provider's discovery document, checked, and fetched again once PROVIDER_MAX_AGE_SECONDS old; 503
    `unavailable` if it cannot be had or lacks what we use. A bad document is not kept (Authlib would keep it until
    the process restarts); a refresh that fails keeps the good one we had, until the next try."""
    import requests

    cached = client.server_metadata
    previous = None
    if "_loaded_at" in cached and _age("metadata") > PROVIDER_MAX_AGE_SECONDS:
        previous = dict(cached)
        del cached["_loaded_at"]  # Authlib's mark of a loaded document: without it, it loads again
    fetching = "_loaded_at" not in cached
    try:
        metadata = client.load_server_metadata()
        usable = all(isinstance(metadata.get(k), str) and metadata[k] for k in METADATA_FIELDS)
    except (requests.RequestException, ValueError, TypeError, AttributeError):  # unreachable, not JSON, not an object
        usable = False
    if usable:
        if fetching:
            _fetched("metadata")
        return metadata
    if previous is not None:
        log.warning("could not refresh the OpenID provider's discovery document; keeping the one fetched before")
        cached.clear()
        cached.update(previous)
        _fetched("metadata")
        return cached
    cached.pop("_loaded_at", None)
    raise _unavailable()


def _jwks(client, force: bool = False) -> dict:
    """The provider's key set (Authlib caches it; fetched again once PROVIDER_MAX_AGE_SECONDS old), checked to be
    one; 503 `unavailable` otherwise."""
    import requests

    force = force or _age("jwks") > PROVIDER_MAX_AGE_SECONDS
    try:
        keys = client.fetch_jwk_set(force=force)
    except (requests.RequestException, ValueError, TypeError, RuntimeError):
        raise _unavailable() from None
    if not isinstance(keys, dict) or not isinstance(keys.get("keys"), list):
        client.server_metadata.pop("jwks", None)  # where Authlib keeps the key set it fetched
        raise _unavailable()
    if force:
        _fetched("jwks")
    return keys


def _age(what: str) -> float:
    """Seconds since this process last fetched the provider's `what` ("metadata" or "jwks"); infinite if never."""
    at = current_app.extensions.get(FETCHED, {}).get(what)
    return float("inf") if at is None else monotonic() - at


def _fetched(what: str) -> None:
    """Note that the provider's `what` was fetched just now."""
    current_app.extensions.setdefault(FETCHED, {})[what] = monotonic()


def _unavailable() -> APIError:
    return APIError(503, "unavailable", "Google sign-in is unavailable right now; try again in a moment.")


def _invalid_token() -> APIError:
    return APIError(401, "invalid_credentials", "The Google ID token is invalid or has expired.")


def authorization_redirect(redirect_uri: str):
    """A redirect to the provider's consent screen; returns (response, state). State, nonce and PKCE verifier are
    kept in the session for the callback."""
    import requests

    client = _client()
    _metadata(client)
    try:
        found = client.create_authorization_url(redirect_uri)
    except (requests.RequestException, ValueError, KeyError, TypeError, RuntimeError):  # discovery unreachable or bad
        raise _unavailable() from None
    client.save_authorize_data(redirect_uri=redirect_uri, **found)
    return redirect(found["url"]), found["state"]


def finish_authorization() -> dict:
    """On the callback: check state, redeem the code (with the PKCE verifier), verify the ID token and its
    nonce; the identity's claims."""
    import requests
    from authlib.integrations.base_client import MismatchingStateError, OAuthError
    from authlib.oauth2 import OAuth2Error
    from authlib.oidc.core import CodeIDToken
    from joserfc.errors import JoseError

    client = _client()
    _metadata(client)
    _jwks(client)
    try:
        token = client.authorize_access_token(claims_cls=CodeIDToken, leeway=_leeway(),
                                              claims_options=_claims_options(client))
    except MismatchingStateError:
        raise APIError(400, "bad_request", "This sign-in attempt expired or did not start here. Try again.") from None
    except (OAuthError, OAuth2Error) as exc:  # OAuth2Error: a callback with neither a code nor an error
        if exc.error == "access_denied":
            raise APIError(403, "forbidden", "Google sign-in was cancelled.") from None
        # invalid_grant (a code used twice or expired), a provider refusal, or a callback without a code.
        raise APIError(400, "bad_request", "Google did not complete the sign-in. Try again.") from None
    except requests.RequestException:
        raise _unavailable() from None
    except JoseError:
        raise _invalid_token() from None
    except (ValueError, TypeError, KeyError, RuntimeError):  # a token response or key set that is not what it must be
        raise _unavailable() from None
    if not token.get("userinfo"):
        raise _invalid_token()  # a token response without an ID token is not an OpenID sign-in
    return _identity(dict(token["userinfo"]))


def verify_id_token(id_token: str, nonce: str | None = None) -> dict:
    """Verify an ID token a client obtained from the provider for our client id (carrying `nonce`, when given);
    the identity's claims."""
    import requests
    from authlib.oidc.core import CodeIDToken
    from joserfc.errors import JoseError

    client = _client()
    _metadata(client)
    try:
        payload = _decode(client, id_token)
        claims = CodeIDToken(payload.claims, payload.header, _claims_options(client),
                             {"client_id": client.client_id, "nonce": nonce})
        claims.validate(leeway=_leeway())
    except (requests.RequestException, KeyError):
        raise _unavailable() from None
    except (JoseError, ValueError, TypeError):
        raise _invalid_token() from None
    return _identity(dict(claims))


def _decode(client, id_token: str):
    from joserfc import jwt
    from joserfc.errors import InvalidKeyIdError
    from joserfc.jwk import KeySet

    keys = KeySet.import_key_set(_jwks(client))
    try:
        return jwt.decode(id_token, keys, algorithms=ALGORITHMS)
    except InvalidKeyIdError:  # the provider rotated its keys since we fetched them
        return jwt.decode(id_token, KeySet.import_key_set(_jwks(client, force=True)), algorithms=ALGORITHMS)


def _claims_options(client) -> dict:
    issuer = client.load_server_metadata().get("issuer")
    issuers = GOOGLE_ISSUERS if issuer in GOOGLE_ISSUERS else {issuer}
    # Our client id must be an audience: Authlib checks `aud` only when told to (its `azp` check alone lets a token
    # issued to another client through when it names us as `azp`).
    return {"iss": {"essential": True, "values": sorted(issuers)},
            "aud": {"essential": True, "value": client.client_id}}


def _leeway() -> int:
    return current_app.config["GOOGLE_CLOCK_SKEW_SECONDS"]


def _identity(claims: dict) -> dict:
    """The claims we use, normalised: subject, email, whether the provider verified it, and the name."""
    verified = claims.get("email_verified")
    try:
        email = normalize_email(claims["email"]) if isinstance(claims.get("email"), str) else None
    except ValueError:
        email = None
    if email is None:
        raise APIError(422, "validation_error", "The Google account has no usable email address.",
                       fields={"id_token": ["carries no valid email address"]})
    verified = verified is True or str(verified).lower() == "true"
    domain, hd = email.rsplit("@", 1)[1].lower(), claims.get("hd")
    authoritative = verified and (claims.get("iss") not in GOOGLE_ISSUERS or domain in GOOGLE_MAIL_DOMAINS
                                  or (isinstance(hd, str) and hd.lower() == domain))
    return {"sub": str(claims["sub"]), "email": email, "name": str(claims.get("name") or "")[:200],
            "email_verified": verified, "email_authoritative": authoritative}
