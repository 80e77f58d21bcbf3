"""One-time tokens for links sent by mail: random, stored hashed, single-use, expiring."""
from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select, update

from ..database import locks_rows
from ..errors import APIError
from ..extensions import db
from ..models import OneTimeToken, utcnow
from .tokens import hash_token, random_token
from .users import lock_account

VERIFY_EMAIL = "verify_email"
EMAIL_CHANGE = "email_change"
PASSWORD_RESET = "password_reset"
SIGNUP = "signup"


def invalid_token() -> APIError:
    """The one error for a token that is unknown, used or expired: which of the three is not revealed."""
    return APIError(400, "invalid_token", "This link is invalid or has expired.")


def issue(purpose: str, lifetime: timedelta, email: str, user_id: uuid.UUID | None = None,
          data: dict | None = None) -> str:
    """Stage a new token for `purpose` and return it in plain text (only its hash is stored)."""
    token = random_token()
    db.session.add(OneTimeToken(
        purpose=purpose, token_hash=hash_token(token), user_id=user_id, email=email, data=data or {},
        expires_at=utcnow() + lifetime,
    ))
    return token


def _live(purpose: str, token: str, now):
    return (OneTimeToken.token_hash == hash_token(token), OneTimeToken.purpose == purpose,
            OneTimeToken.used_at.is_(None), OneTimeToken.expires_at > now)


def lock_owner(token: str) -> None:
    """Lock (PostgreSQL) the row of the account `token` was issued for, before the token is used or the account
    read; nothing for an unknown token or one without an account.

    Whatever writes an account and then voids its links (a password change, an admin's move or deactivation)
    holds the account's row first; a link's use that then writes the account must take the two in that order
    too, or each waits for the other (a deadlock, one of them a 503). Reading the account under the lock also
    means a change committed meanwhile (a new address) is the one the link is checked against.
    """
    if not locks_rows():
        return
    user_id = db.session.scalar(select(OneTimeToken.user_id).where(OneTimeToken.token_hash == hash_token(token)))
    if user_id is not None:
        lock_account(user_id)


def peek(purpose: str, token: str) -> OneTimeToken:
    """The live token, without using it (GET of a mailed link: scanners prefetch links). 400 if not live."""
    row = db.session.scalars(select(OneTimeToken).where(*_live(purpose, token, utcnow()))).first()
    if row is None:
        raise invalid_token()
    return row


def consume(purpose: str, token: str) -> OneTimeToken:
    """Use the token once: a conditional UPDATE, so two concurrent uses have exactly one winner."""
    now = utcnow()
    result = db.session.execute(
        update(OneTimeToken).where(*_live(purpose, token, now)).values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise invalid_token()
    return db.session.scalars(
        select(OneTimeToken).where(OneTimeToken.token_hash == hash_token(token))
        .execution_options(populate_existing=True)
    ).one()


def consume_any(purposes: tuple[str, ...], token: str) -> OneTimeToken:
    """Use a token that may serve any of `purposes` (the verify link serves new accounts and email changes)."""
    row = db.session.scalars(select(OneTimeToken.purpose).where(OneTimeToken.token_hash == hash_token(token))).first()
    if row not in purposes:
        raise invalid_token()
    return consume(row, token)


def invalidate(user_id: uuid.UUID, *purposes: str) -> None:
    """Stage the end of the user's live tokens of `purposes` (a new reset link, or a new password, voids them)."""
    db.session.execute(
        update(OneTimeToken)
        .where(OneTimeToken.purpose.in_(purposes), OneTimeToken.user_id == user_id, OneTimeToken.used_at.is_(None))
        .values(used_at=utcnow()).execution_options(synchronize_session=False)
    )
