"""Sessions and refresh tokens: sign-in, atomic rotation with reuse detection, revocation, listing."""
from __future__ import annotations

import uuid
from datetime import timedelta

from flask import current_app
from sqlalchemy import bindparam, func, insert, select, update

from .. import signals
from ..errors import APIError
from ..extensions import db
from ..models import RefreshToken, Session, User, utcnow
from ..hotread import HotSelect
from ..readonly import ONE_STATEMENT_WRITE, thread_connection
from ..schemas import header_text
from . import keys, tokencache, users
from .tokens import derived_token, hash_token, random_token, token_pair


def _refresh_lifetime() -> timedelta:
    return timedelta(days=current_app.config["REFRESH_TOKEN_EXPIRE_DAYS"])


def start_session(user: User, user_agent: str, ip_address: str) -> dict:
    """Stage a new session for `user` with its first refresh token; return the token pair."""
    now, session_id, refresh = utcnow(), uuid.uuid4(), random_token()
    expires = now + _refresh_lifetime()
    session = db.session()
    if session.new:  # a user created in this very request (sign-up, Google) must exist before its session row
        session.flush()
    # Two prebuilt INSERTs on the tables, in the request's transaction, rather than two ORM objects for the unit
    # of work to sort and flush at commit: every sign-in pays this, on top of its password hash.
    session.execute(_NEW_SESSION, {"id": session_id, "user_id": user.id, "agent": header_text(user_agent, 512),
                                   "ip": header_text(ip_address, 64), "now": now, "expires": expires})
    session.execute(_CHILD, {"id": uuid.uuid4(), "sid": session_id, "parent": None, "hash": hash_token(refresh),
                             "now": now, "expires": expires})
    return token_pair(user.to_dict(), session_id, refresh)


# The rotation's statements, built once on the tables (not the ORM entities): the hot path of every client's
# token renewal pays neither statement construction nor the ORM's bulk-update bookkeeping. Values are bound.
_tokens, _sessions = RefreshToken.__table__, Session.__table__
_CLAIM = (
    update(_tokens)
    .where(_tokens.c.token_hash == bindparam("hash"), _tokens.c.used_at.is_(None),
           _tokens.c.expires_at > bindparam("now"))
    .values(used_at=bindparam("now"))
    .returning(_tokens.c.id, _tokens.c.session_id)
)
_LIVE_SESSION = (_sessions.c.id == bindparam("sid"), _sessions.c.revoked_at.is_(None),
                 _sessions.c.expires_at > bindparam("now"))
_EXTEND = {  # with the client's User-Agent, and (for a client that sends none) keeping the one it had
    keep_agent: update(_sessions).where(*_LIVE_SESSION).values(
        last_used_at=bindparam("now"), expires_at=bindparam("expires"), ip_address=bindparam("ip"),
        **({} if keep_agent else {"user_agent": bindparam("agent")})).returning(_sessions.c.user_id)
    for keep_agent in (False, True)
}
_NEW_SESSION = insert(_sessions).values(
    id=bindparam("id"), user_id=bindparam("user_id"), user_agent=bindparam("agent"), ip_address=bindparam("ip"),
    created_at=bindparam("now"), last_used_at=bindparam("now"), expires_at=bindparam("expires"))
# A refresh token: a rotation's child, or (no parent) a new session's first.
_CHILD = insert(_tokens).values(id=bindparam("id"), session_id=bindparam("sid"), parent_id=bindparam("parent"),
                                token_hash=bindparam("hash"), created_at=bindparam("now"),
                                expires_at=bindparam("expires"))


def _claim(token_hash: str, now):
    """Mark a live refresh token used; its (id, session_id) only for the one caller whose update changed the row.

    The conditional UPDATE is the atomic step: on PostgreSQL a concurrent second UPDATE waits for the first
    one's row lock and then finds `used_at` set; on SQLite writers are serialised by BEGIN IMMEDIATE. So any
    number of concurrent refreshes of one token have exactly one winner.
    """
    return db.session.execute(_CLAIM, {"hash": token_hash, "now": now}).first()


def _extend(session_id: uuid.UUID, now, user_agent: str, ip_address: str):
    """Stage a live session's new lifetime and client; its (user_id, expires_at), or None if it has ended."""
    expires = now + _refresh_lifetime()
    agent = header_text(user_agent, 512)
    row = db.session.execute(
        _EXTEND[not agent], {"sid": session_id, "now": now, "expires": expires, "agent": agent,
                             "ip": header_text(ip_address, 64)},
        execution_options=tokencache.CANNOT_REVOKE,
    ).first()
    return None if row is None else (row.user_id, expires)


def _live_session_user(session: Session, now) -> User:
    if session.revoked_at is not None or session.expires_at <= now:
        raise APIError(401, "token_revoked", "This session has ended; sign in again.")
    if not session.user.is_active:
        raise APIError(403, "account_disabled", "This account is disabled.")
    return session.user


def _one_statement_rotation():
    """PostgreSQL: the whole winning rotation as one statement (data-modifying CTEs), in one round trip.

    The claim is the same conditional UPDATE, now also conditional on a live session and an active user, so
    nothing is claimed unless the rotation can succeed. The session extension and the child insert hang off
    the claim's row; the primary SELECT returns the user's profile for the new access token. PostgreSQL runs
    every data-modifying CTE exactly once, to completion, in the statement's transaction.
    """
    users_table = User.__table__
    claimed = (
        update(_tokens)
        .where(_tokens.c.token_hash == bindparam("hash"), _tokens.c.used_at.is_(None),
               _tokens.c.expires_at > bindparam("now"), _tokens.c.session_id == _sessions.c.id,
               _sessions.c.revoked_at.is_(None), _sessions.c.expires_at > bindparam("now"),
               _sessions.c.user_id == users_table.c.id, users_table.c.is_active.is_(True))
        .values(used_at=bindparam("now"))
        .returning(_tokens.c.id, _tokens.c.session_id, _sessions.c.user_id)
        .cte("claimed")
    )
    extended = (
        update(_sessions)
        .where(_sessions.c.id == claimed.c.session_id, _sessions.c.revoked_at.is_(None))
        .values(last_used_at=bindparam("now"), expires_at=bindparam("expires"), ip_address=bindparam("ip"),
                # a client that sends no User-Agent keeps the one the session had
                user_agent=func.coalesce(func.nullif(bindparam("agent", type_=_sessions.c.user_agent.type), ""),
                                         _sessions.c.user_agent))
        .returning(_sessions.c.id)
        .cte("extended")
    )
    child = (
        insert(_tokens)
        .from_select(["id", "session_id", "parent_id", "token_hash", "created_at", "expires_at"], select(
            bindparam("child_id", type_=_tokens.c.id.type), claimed.c.session_id, claimed.c.id,
            bindparam("child_hash", type_=_tokens.c.token_hash.type), bindparam("now", type_=_tokens.c.created_at.type),
            bindparam("expires", type_=_tokens.c.expires_at.type)))
        .returning(_tokens.c.id)
        .cte("child")
    )
    return (users.profile_select(claimed.c.session_id, source=claimed, on=users_table.c.id == claimed.c.user_id)
            .add_cte(extended, child))


# Run on psycopg itself (hotread.py); allowed to write on the thread's autocommit connection as one statement.
_ROTATE_PG = HotSelect(_one_statement_rotation(), execution_options=ONE_STATEMENT_WRITE)


def rotate(presented: str, user_agent: str, ip_address: str) -> dict:
    """Exchange a refresh token for a new pair; stage the rotation (or, on reuse, the session's revocation)."""
    # Before anything is claimed, and used for the answer (no reload in between): on PostgreSQL the claim commits
    # at once, so a rotation whose access token then could not be signed would be spent unanswered, and the
    # client's retry after the grace interval would end the session as a reuse. Without a key the answer is 503
    # and the presented token stays valid.
    ring = keys.signing_key()
    now = utcnow()
    token_hash, child = hash_token(presented), derived_token(presented)
    engine = db.engine
    if engine.dialect.name == "postgresql":
        # The one write that does not wait for the request's commit: the whole rotation is a single statement, so
        # run on its own (autocommit) it is exactly as atomic and as durable (committed, fsync included, before
        # the answer), and saves the pool checkout, BEGIN and COMMIT. It revokes nothing (the token memory needs
        # no signal). When it claims nothing, the reasons are looked up in the request's transaction below.
        rows = _ROTATE_PG.all(thread_connection(engine), {
            "hash": token_hash, "now": now, "expires": now + _refresh_lifetime(), "agent": header_text(user_agent, 512),
            "ip": header_text(ip_address, 64), "child_id": uuid.uuid4(), "child_hash": hash_token(child),
        })
        if rows:
            return token_pair(users.profile_of(rows), rows[0].session_id, child, ring)
        return _not_claimed(token_hash, child, now, ring)
    claimed = _claim(token_hash, now)
    if claimed is not None:
        return _rotated(claimed, child, now, user_agent, ip_address, ring)
    return _not_claimed(token_hash, child, now, ring)


def _rotated(claimed, child: str, now, user_agent: str, ip_address: str, ring: keys.KeyRing) -> dict:
    # The common case in statements, not ORM objects: this is the hot path of every client's token renewal.
    extended = _extend(claimed.session_id, now, user_agent, ip_address)
    if extended is None:
        raise APIError(401, "token_revoked", "This session has ended; sign in again.")
    user_id, expires = extended
    profile = users.profile(user_id)
    if profile is None or not profile["is_active"]:
        raise APIError(403, "account_disabled", "This account is disabled.")
    db.session.execute(_CHILD, {"id": uuid.uuid4(), "sid": claimed.session_id, "parent": claimed.id,
                                "hash": hash_token(child), "now": now, "expires": expires})
    return token_pair(profile, claimed.session_id, child, ring)


def _not_claimed(token_hash: str, child: str, now, ring: keys.KeyRing) -> dict:
    """A refresh token that was not claimed: unknown, expired, or used (within the grace interval, or reuse)."""
    row = db.session.scalars(
        select(RefreshToken).where(RefreshToken.token_hash == token_hash).execution_options(populate_existing=True)
    ).first()
    if row is None:
        raise APIError(401, "unauthorized", "The refresh token is not valid.")
    session = row.session
    if row.used_at is None:
        if row.expires_at > now:  # unused and unexpired, yet not claimed: its session ended or its user is disabled
            _live_session_user(session, now)
        raise APIError(401, "token_expired", "The refresh token has expired; sign in again.")
    grace = timedelta(seconds=current_app.config["REFRESH_REUSE_GRACE_SECONDS"])
    # Measured now, not at `now`: a loser took `now` before waiting on the winner's lock, so the winner's
    # `used_at` can be later than it.
    if grace and utcnow() - row.used_at <= grace:
        # Two tabs (or a retried request) refreshing the same token a moment apart is a race, not theft:
        # within the grace interval the late caller gets the same child back, so there is still one live
        # descendant and the session survives. Outside it, a used token coming back means it was copied.
        user = _live_session_user(session, now)
        return token_pair(user.to_dict(), session.id, child, ring)
    if session.revoked_at is None:
        revoke_session(session, "refresh_reused")
        signals.refresh_reused.send(current_app._get_current_object(), user_id=session.user_id, session_id=session.id)
    raise APIError(401, "token_revoked", "This refresh token was already used; the session has been ended.",
                   persist=True)


def revoke_session(session: Session, reason: str) -> None:
    """Stage the end of one session: its refresh tokens and access tokens stop working."""
    if session.revoked_at is None:
        session.revoked_at, session.revoked_reason = utcnow(), reason
        signals.session_revoked.send(current_app._get_current_object(), user_id=session.user_id,
                                     reason=reason)


def revoke_user_sessions(user_id: uuid.UUID, reason: str, keep: uuid.UUID | None = None) -> int:
    """Stage the end of every live session of a user except `keep`; return how many were ended."""
    # A sign-in holds the user's row from its password check to its commit (accounts._hash_still_current):
    # waiting for it here means the session it starts exists when the UPDATE below looks, and ends too.
    users.lock_account(user_id)
    query = update(Session).where(Session.user_id == user_id, Session.revoked_at.is_(None))
    if keep is not None:
        query = query.where(Session.id != keep)
    result = db.session.execute(
        query.values(revoked_at=utcnow(), revoked_reason=reason).execution_options(synchronize_session=False)
    )
    signals.session_revoked.send(current_app._get_current_object(), user_id=user_id, reason=reason,
                                 all=True, count=result.rowcount)
    return result.rowcount


def live_sessions(user_id: uuid.UUID) -> list[Session]:
    """The user's sessions that can still be used, newest first."""
    return list(db.session.scalars(
        select(Session)
        .where(Session.user_id == user_id, Session.revoked_at.is_(None), Session.expires_at > utcnow())
        .order_by(Session.created_at.desc())
    ))


def check_recent_sign_in(user_id: uuid.UUID, session_id: uuid.UUID | None, what: str) -> None:
    """403 `reauthentication_required` unless session `session_id` of the user began with a sign-in within
    EMAIL_CHANGE_SIGNIN_MAX_AGE_MINUTES (`what`: the change that asks for it)."""
    # A session is a bearer credential that outlives its sign-in by days (refresh): a change that hands over the
    # account (a new address, from which the password can be reset) asks for a recent sign-in, as a password
    # change asks for the password (Ory Kratos' "privileged session", Flask-Security's freshness).
    session = db.session.get(Session, session_id) if session_id is not None else None
    max_age = timedelta(minutes=current_app.config["EMAIL_CHANGE_SIGNIN_MAX_AGE_MINUTES"])
    if session is None or session.user_id != user_id or session.created_at < utcnow() - max_age:
        raise APIError(403, "reauthentication_required", f"Sign in again to {what}.")


def session_of(user_id: uuid.UUID, session_id: str) -> Session:
    """The caller's own live session with this id; 404 for anyone else's, an unknown or malformed id."""
    try:
        sid = uuid.UUID(session_id)
    except ValueError:
        sid = None
    session = db.session.get(Session, sid) if sid else None
    if session is None or session.user_id != user_id or session.revoked_at is not None:
        raise APIError(404, "not_found", "No such session.")
    return session


def revoke_refresh_token(presented: str) -> bool:
    """RFC 7009 for a refresh token: end its session (and so the session's access tokens). False if unknown."""
    row = db.session.scalars(select(RefreshToken).where(RefreshToken.token_hash == hash_token(presented))).first()
    if row is None:
        return False
    revoke_session(row.session, "revoked")
    return True
