"""Brute-force protection that cannot be used to lock people out.

Failed sign-ins are counted per (account, source address), never per account alone: after LOGIN_BLOCK_AFTER
failures that source is refused for a period that doubles with each further failure, while the same account
from any other address still signs in. (A per-account lockout would let anyone disable any user by guessing
wrong on purpose.) Checking happens before any hashing, so a blocked source costs no Argon2 work either.
"""
from __future__ import annotations

import math
from datetime import timedelta

from flask import current_app
from sqlalchemy import bindparam, delete, select

from .. import signals
from ..database import dialect_insert, locks_rows
from ..errors import APIError
from ..extensions import db
from ..models import LoginFailure, utcnow
from ..sources import client_source


def _key(email: str, ip: str) -> tuple[str, str]:
    # The source as the rate limits count it: an IPv6 client by its network, or each of its addresses would be a
    # fresh count for the same guesser.
    return email.lower()[:254], client_source(ip)[:64]


_failures = LoginFailure.__table__
# Every sign-in asks this before hashing: a prebuilt statement, no ORM object. On PostgreSQL it locks the row of a
# source with failures on record until the sign-in commits, so that source's attempts run one at a time: each
# sees the failures (and the block) of the one before, instead of many guesses in flight passing the check at
# once. A source with no failures has no row to lock, and the common sign-in waits for nothing. (SQLite
# serialises writers anyway; SQLAlchemy leaves FOR UPDATE out there.)
_BLOCKED_UNTIL = select(_failures.c.blocked_until).where(_failures.c.email == bindparam("email"),
                                                         _failures.c.ip_address == bindparam("ip")).with_for_update()


def check(email: str, ip: str) -> bool:
    """429 `rate_limited` (with Retry-After) if this source is blocked for this account; otherwise whether it has
    failures on record (only then does a success need to clear them)."""
    email, ip = _key(email, ip)
    row = db.session.execute(_BLOCKED_UNTIL, {"email": email, "ip": ip}).first()
    if row is not None and row.blocked_until is not None and row.blocked_until > utcnow():
        wait = math.ceil((row.blocked_until - utcnow()).total_seconds())
        raise APIError(429, "rate_limited", "Too many failed sign-ins from here; retry later.",
                       headers={"Retry-After": str(max(wait, 1))})
    return row is not None


def _ensure_row(values: dict):
    # Insert, or touch the existing row (a no-op update): unlike DO NOTHING, this waits for a concurrent lock on
    # the row and, if its holder deleted it (a success clearing it, the cleanup), inserts it afresh. The row is
    # there, and locked by us, when the locking read below runs.
    statement = dialect_insert(LoginFailure).values(**values)
    return statement.on_conflict_do_update(index_elements=[LoginFailure.email, LoginFailure.ip_address],
                                           set_={"email": statement.excluded.email})


def failed(email: str, ip: str) -> None:
    """Stage one more failure for (account, source), blocking the source once past the threshold."""
    cfg, now = current_app.config, utcnow()
    email, ip = _key(email, ip)
    db.session.execute(_ensure_row({"email": email, "ip_address": ip, "failures": 0, "last_failure_at": now}))
    # The row lock makes concurrent failures count one by one (SQLite serialises writers anyway).
    row = db.session.get(LoginFailure, (email, ip), with_for_update=locks_rows(),
                         populate_existing=True)
    if now - row.last_failure_at > timedelta(seconds=cfg["LOGIN_FAILURE_WINDOW_SECONDS"]):
        row.failures = 0
    row.failures += 1
    row.last_failure_at = now
    over = row.failures - cfg["LOGIN_BLOCK_AFTER"]
    if over >= 0:
        seconds = min(cfg["LOGIN_BLOCK_SECONDS"] * 2 ** min(over, 20), cfg["LOGIN_BLOCK_MAX_SECONDS"])
        row.blocked_until = now + timedelta(seconds=seconds)
        signals.account_blocked.send(current_app._get_current_object(), email=email, blocked_seconds=seconds)


def succeeded(email: str, ip: str) -> None:
    """Stage forgetting the failures of (account, source) after a successful sign-in."""
    email, ip = _key(email, ip)
    db.session.execute(delete(LoginFailure).where(LoginFailure.email == email, LoginFailure.ip_address == ip))
