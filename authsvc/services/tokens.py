"""Access tokens: issuing them with the contract's claims, and deciding whether a presented one still holds."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from datetime import datetime, timezone

from flask import current_app, g
from flask_jwt_extended import create_access_token, decode_token
from sqlalchemy import and_, bindparam, exists, select

from ..database import dialect_insert
from ..extensions import db
from ..hotread import HotSelect
from ..readonly import reader
from ..models import RefreshToken, RevokedToken, ServiceClient, Session, User, utcnow
from . import keys, tokencache

REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub", "jti", "type")


def hash_token(token: str) -> str:
    """SHA-256 of a high-entropy token, as stored at rest (a slow hash adds nothing at 256 bits of entropy)."""
    return hashlib.sha256(token.encode()).hexdigest()


def random_token() -> str:
    """A new opaque token with 256 bits of entropy."""
    return secrets.token_urlsafe(32)


def derived_token(parent: str) -> str:
    """The refresh token that rotation of `parent` yields: an HMAC of it under a key derived from SECRET_KEY.

    Deriving the child from the parent (instead of drawing it at random) lets a duplicate refresh within the
    grace interval get the very same child back without the server ever storing a token in plain text.
    """
    key = hmac.new(current_app.config["SECRET_KEY"].encode(), b"authsvc refresh rotation", "sha256").digest()
    return hmac.new(key, parent.encode(), "sha256").hexdigest()


def access_claims(user: dict, session_id: uuid.UUID) -> dict:
    """The contract's claims of an access token for `user` (its contract object: `User.to_dict`, or
    `users.profile`) in session `session_id`."""
    return {"sid": str(session_id), "email": user["email"], "email_verified": user["email_verified"],
            "roles": user["roles"], "tier": user["tier"]}


def issue_access_token(subject: str, claims: dict, ring: keys.KeyRing | None = None) -> str:
    """Sign an access token for `subject` with the active key (of `ring`, when the caller looked it up already);
    its header names the key's `kid`."""
    ring = keys.signing_key() if ring is None else ring
    g.authsvc_signing_key = ring.active_private  # pinned for the encode callback of this very call
    return create_access_token(identity=subject, additional_claims=claims, additional_headers={"kid": ring.active_kid})


def expires_in() -> int:
    """Lifetime of access tokens, in seconds."""
    return int(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds())


def token_pair(user: dict, session_id: uuid.UUID, refresh_token: str, ring: keys.KeyRing | None = None) -> dict:
    """The contract's token pair (`user` as for `access_claims`; `ring` as for `issue_access_token`)."""
    return {
        "access_token": issue_access_token(user["id"], access_claims(user, session_id), ring),
        "refresh_token": refresh_token,
        "token_type": "bearer",
        "expires_in": expires_in(),
    }


def check_required_claims(payload: dict) -> bool:
    """Whether a decoded token carries every claim we insist on (PyJWT checks only those present)."""
    return all(payload.get(name) is not None for name in REQUIRED_CLAIMS)


def _until_expiry(payload: dict) -> float:
    """The token's expiry on the monotonic clock (the token-check memory's deadlines)."""
    return time.monotonic() + (payload["exp"] - time.time())


def is_revoked(payload: dict) -> bool:
    """Whether a verified access token was revoked: its session ended, its user disabled, or its `jti` revoked.

    Looking at the session (not only the `jti`) is what makes logout, password change and deactivation stop
    every access token of the affected sessions at once. Answers are remembered briefly (`tokencache`).
    """
    return tokencache.cache().remember(("revoked", payload["jti"]), lambda: _is_revoked(payload),
                                       lambda _answer: _until_expiry(payload))


# Built once, on the tables: constructing a statement (and the ORM's compile step) costs more Python than
# running a cached one. Values are bound per call.
_revoked, _sessions, _users, _clients = (RevokedToken.__table__, Session.__table__, User.__table__,
                                         ServiceClient.__table__)
_JTI_REVOKED = exists().where(_revoked.c.jti == bindparam("jti"))
_SESSION_LIVE = HotSelect(
    select(_sessions.c.id)
    .select_from(_sessions.join(_users, _users.c.id == _sessions.c.user_id))
    .where(and_(_sessions.c.id == bindparam("sid"), _sessions.c.revoked_at.is_(None), _users.c.is_active.is_(True),
                # a token carrying an address the account no longer has (gateways pass it on as X-User-Email)
                _users.c.email == bindparam("email"), ~_JTI_REVOKED))
)
_CLIENT_TOKEN_REVOKED = select(_JTI_REVOKED | ~exists().where(_clients.c.client_id == bindparam("client_id")))


def _is_revoked(payload: dict) -> bool:
    sid = payload.get("sid")
    if sid is None:  # a service client's token: it dies with its client
        return bool(db.session.execute(_CLIENT_TOKEN_REVOKED, {
            "jti": payload["jti"], "client_id": payload.get("client_id")}).scalar())
    try:
        session_id = uuid.UUID(sid)
    except (ValueError, TypeError, AttributeError):  # not a uuid's text (a number raises AttributeError)
        return True
    # Past the ORM's execution layer (nothing here is an entity), on the hot-read connection: this runs for every
    # token check the memory does not answer.
    return _SESSION_LIVE.first(reader(), {"sid": session_id, "jti": payload["jti"],
                                          "email": payload.get("email")}) is None


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive, RFC 6750)."""
    if header[:7].lower() != "bearer ":
        return None
    return header[7:].strip() or None


def live_access_claims(token: str | None) -> dict | None:
    """The claims of a live access token of ours: verified, and neither it nor its session revoked."""
    payload = decode_access_token(token) if token else None
    return None if payload is None or is_revoked(payload) else payload


def decode_access_token(token: str) -> dict | None:
    """Verify an access token's signature and claims (expiry included); None when it is not one of ours.

    A verified token is remembered by its exact text (the same bytes verify the same way) until it expires, and
    for no longer than the key ring is cached (SIGNING_KEY_CACHE_SECONDS): a key taken out of the ring stops
    verifying within that time either way. Revocations do not void it; `is_revoked` is asked separately.
    Failures are not remembered, so junk cannot crowd the memory. Do not mutate the payload.
    """
    return tokencache.cache().remember(("decoded", token), lambda: _decode(token), _verified_until, lasting=True)


def _verified_until(payload: dict | None) -> float | None:
    if payload is None:
        return None
    return min(_until_expiry(payload), time.monotonic() + current_app.config["SIGNING_KEY_CACHE_SECONDS"])


def _decode(token: str) -> dict | None:
    try:
        payload = decode_token(token)
    except Exception:  # noqa: BLE001 - malformed, expired, foreign: every failure means "not a live token of ours"
        return None
    return payload if check_required_claims(payload) and payload.get("type") == "access" else None


def revoke_access_token(payload: dict) -> None:
    """Stage the revocation of one access token until it would have expired (again: nothing more)."""
    expires = datetime.fromtimestamp(payload["exp"], tz=timezone.utc)
    # An insert that ignores an existing row, not a lookup and then an insert: two revocations of one token at
    # once would both find none, and the second commit would fail on the key (RFC 7009 answers 200 regardless).
    db.session.execute(dialect_insert(RevokedToken).values(jti=payload["jti"], expires_at=max(expires, utcnow()))
                       .on_conflict_do_nothing())


def _introspect_refresh(token: str) -> dict | None:
    row = db.session.scalars(select(RefreshToken).where(RefreshToken.token_hash == hash_token(token))).first()
    if row is None:
        return None
    session, now = row.session, utcnow()
    if row.used_at is not None or row.expires_at <= now or session.revoked_at is not None \
            or not session.user.is_active:
        return {"active": False}
    return {"active": True, "sub": str(session.user_id), "scope": "", "sid": str(session.id),
            "iat": int(row.created_at.timestamp()), "exp": int(row.expires_at.timestamp()),
            "token_type": "refresh_token"}


def _introspect_access(token: str) -> dict | None:
    payload = decode_access_token(token)
    if payload is None:
        return None
    if is_revoked(payload):
        return {"active": False}
    answer = {"active": True, "sub": payload["sub"], "scope": payload.get("scope", ""), "exp": payload["exp"],
              "iat": payload["iat"], "token_type": "access_token", "iss": payload["iss"], "aud": payload["aud"]}
    for claim in ("client_id", "sid", "email", "roles", "tier"):
        if claim in payload:
            answer[claim] = payload[claim]
    return answer


def introspect(token: str, hint: str | None) -> dict:
    """RFC 7662 answer for a token of ours: its facts when live, `{"active": false}` for anything else.

    The hint says which kind to try first (RFC 7662 §2.1); without one, the token's shape does: a JWT is tried
    as an access token (no query needed to rule it out), anything else as a refresh token.
    """
    kinds = [_introspect_access, _introspect_refresh]
    if hint == "refresh_token" or (hint != "access_token" and token.count(".") != 2):
        kinds.reverse()
    for kind in kinds:
        answer = kind(token)
        if answer is not None:
            return answer
    return {"active": False}

