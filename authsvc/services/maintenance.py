"""`authsvc cleanup`: delete the rows that no longer matter, in small batches, safe to run anywhere at once.

What goes, each kept CLEANUP_GRACE_HOURS after it stopped mattering (except the throttle rows, which are gone
the moment they would count as zero anyway):
- sessions revoked or expired, and their refresh tokens (used refresh tokens of *live* sessions stay: they are
  what detects a stolen token being replayed);
- mail-link tokens used or expired;
- failed-sign-in counters whose window has passed and whose block, if any, is over;
- individually revoked access tokens past their own expiry (the JWT check refuses them anyway);
- outbox mail sent more than OUTBOX_RETENTION_DAYS ago, and "dead" mail: never accepted by the mail server
  although tried, queued more than OUTBOX_RETENTION_DAYS ago (its links have long expired).

Each batch is one short transaction of at most `batch_size` rows, so live requests interleave with the work
and no lock is held for long; on PostgreSQL rows locked by a request are skipped (`SKIP LOCKED`) and left for
the next run. Deleting only what matches the conditions makes a run idempotent. On PostgreSQL a session-level
advisory lock lets one instance work while the others, started by the same cron line, skip at once.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from flask import current_app
from sqlalchemy import and_, delete, or_, select, text, tuple_

from ..extensions import db
from ..models import LoginFailure, OneTimeToken, OutboxMessage, RefreshToken, RevokedToken, Session, utcnow

log = logging.getLogger(__name__)

# The advisory-lock key of `authsvc cleanup` (any constant 64-bit number that no other code of ours uses).
ADVISORY_LOCK_KEY = 0x61757468_636C6E  # "authcln"


def _postgres() -> bool:
    return db.engine.dialect.name == "postgresql"


@contextmanager
def exclusive() -> Iterator[bool]:
    """Yield whether this process may clean up now: on PostgreSQL, whether it got the advisory lock.

    The lock lives on a connection of its own in autocommit mode, held for the whole run (the batches commit on
    other connections), and is released at the end, or by PostgreSQL if the process dies. SQLite needs none:
    its writers queue behind each other, and a second run finds nothing left to delete.
    """
    if not _postgres():
        yield True
        return
    with db.engine.connect() as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        got = connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        try:
            yield bool(got)
        finally:
            if got:
                connection.scalar(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})


def delete_in_batches(model, where, batch_size: int) -> int:
    """Delete the rows of `model` matching `where`, `batch_size` at a time, one committed transaction each."""
    keys = list(model.__table__.primary_key.columns)
    total = 0
    while True:
        pick = select(*keys).where(where).limit(batch_size)
        if _postgres():
            pick = pick.with_for_update(skip_locked=True)  # a request holding a row wins; the next run gets it
        rows = db.session.execute(pick).all()
        if rows:
            chosen = (keys[0].in_([row[0] for row in rows]) if len(keys) == 1
                      else tuple_(*keys).in_([tuple(row) for row in rows]))
            db.session.execute(delete(model).where(chosen).execution_options(synchronize_session=False))
        db.session.commit()
        total += len(rows)
        if len(rows) < batch_size:
            return total


def cleanup(batch_size: int = 1000) -> dict[str, int] | None:
    """Delete what no longer matters (module docstring); counts per kind, or None if another instance works."""
    with exclusive() as mine:
        if not mine:
            return None
        return _cleanup(batch_size)


def _cleanup(batch_size: int) -> dict[str, int]:
    cfg, now = current_app.config, utcnow()
    cutoff = now - timedelta(hours=cfg["CLEANUP_GRACE_HOURS"])
    mail_cutoff = now - timedelta(days=cfg["OUTBOX_RETENTION_DAYS"])
    window = timedelta(seconds=cfg["LOGIN_FAILURE_WINDOW_SECONDS"])

    # A dead session stays dead: no refresh can add tokens to it (rotation checks the session), so its tokens
    # can go first, in batches of their own, and the sessions after them.
    dead_session = or_(Session.revoked_at < cutoff, Session.expires_at < cutoff)
    counts = {
        "refresh_tokens": delete_in_batches(
            RefreshToken, RefreshToken.session_id.in_(select(Session.id).where(dead_session)), batch_size),
        "sessions": delete_in_batches(Session, dead_session, batch_size),
        "one_time_tokens": delete_in_batches(
            OneTimeToken, or_(OneTimeToken.used_at < cutoff, OneTimeToken.expires_at < cutoff), batch_size),
        # Exactly the rows throttle.py would treat as no failures at all: window passed, no block running.
        "login_failures": delete_in_batches(LoginFailure, and_(
            LoginFailure.last_failure_at < now - window,
            or_(LoginFailure.blocked_until.is_(None), LoginFailure.blocked_until < now)), batch_size),
        "revoked_tokens": delete_in_batches(RevokedToken, RevokedToken.expires_at < cutoff, batch_size),
        "outbox_sent": delete_in_batches(OutboxMessage, OutboxMessage.sent_at < mail_cutoff, batch_size),
        "outbox_dead": delete_in_batches(OutboxMessage, and_(
            OutboxMessage.sent_at.is_(None), OutboxMessage.attempts > 0, OutboxMessage.created_at < mail_cutoff),
            batch_size),
    }
    if counts["outbox_dead"]:
        log.warning("cleanup removed %d outbox messages the mail server never accepted", counts["outbox_dead"])
    return counts
