"""Accounts: registration, password sign-in, profile and password changes, deactivation."""
from __future__ import annotations

import uuid

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from .. import signals
from ..database import locks_rows, row_lock
from ..errors import APIError, validation_error
from ..extensions import db
from ..models import ADMIN_ROLE, User, utcnow
from . import mail, onetime, passwords, throttle, verification
from .users import check_email_free, check_tier, email_taken_if_conflict, find_by_email, guard_last_admin, role
from .sessions import revoke_user_sessions


def _app():
    return current_app._get_current_object()


def create_user(email: str, password: str | None, full_name: str = "", tier: str | None = None,
                email_verified: bool = False, roles: list[str] | None = None) -> User:
    """Stage a new user; 409 `email_taken` if the address has an account. The password is hashed first."""
    tier = check_tier(tier)
    if password is not None:
        passwords.check_new_password(password, email)
    # Hash before any database work, so no transaction (or SQLite write lock) waits on Argon2.
    password_hash = passwords.hasher().hash(password) if password is not None else None
    check_email_free(email)
    user = User(id=uuid.uuid4(), email=email, password_hash=password_hash, full_name=full_name or "",
                tier=tier, email_verified=email_verified)
    user.roles = [role(name) for name in sorted(set(roles or []))]
    db.session.add(user)
    email_taken_if_conflict()  # a concurrent registration of the same address fails here, on the unique index
    return user


def register(email: str, password: str, full_name: str = "", tier: str | None = None) -> User:
    """Self-service registration: stage the user and announce it; 422 for a tier not open to it
    (REGISTER_TIERS)."""
    # A tier is what apps may grant paid features by: one picked by the person registering proves nothing.
    open_tiers = current_app.config["REGISTER_TIERS"]
    if tier is not None and open_tiers and tier not in open_tiers:
        raise validation_error({"tier": [f"must be one of: {', '.join(open_tiers)}"]})
    user = create_user(email, password, full_name, tier)
    verification.send_verification(user)
    signals.user_registered.send(_app(), user=user)
    return user


def authenticate(email: str, password: str, source_ip: str) -> User:
    """The user these credentials belong to; 401 `invalid_credentials` alike for unknown email and wrong password.

    429 `rate_limited` when this source address is blocked for this account (see throttle.py).
    """
    failed_before = throttle.check(email, source_ip)
    user = find_by_email(email) if email else None
    if len(password) > current_app.config["PASSWORD_MAX_LENGTH"]:
        ok, new_hash = False, None  # no stored password can be this long; refuse without hashing it
    else:
        ok, new_hash = passwords.hasher().verify(user.password_hash if user else None, password)
    if not ok or not _hash_still_current(user):
        throttle.failed(email, source_ip)
        signals.login_failed.send(_app(), user=user, email=email)
        raise APIError(401, "invalid_credentials", "The email or password is incorrect.", persist=True)
    if new_hash:
        user.password_hash = new_hash  # parameters changed, or a legacy bcrypt hash: upgrade it now
    # Status is told only to someone who proved the password, so it reveals nothing to strangers.
    check_may_sign_in(user)
    if failed_before:  # the common sign-in has nothing to clear: no statement for it (a failure racing this one
        throttle.succeeded(email, source_ip)  # stays counted, and expires with its window)
    signals.login_succeeded.send(_app(), user=user)
    return user


def _hash_still_current(user: User) -> bool:
    """Whether the stored hash is still the one just checked, locked (PostgreSQL) until this sign-in commits.

    A password change or reset that commits while the hash runs ends the old password's sessions: this sign-in
    must neither start a session that outlives it nor undo it by upgrading the old hash. With the row locked, a
    change arriving now waits for this commit, and then ends this session too.

    The user is read again under the lock (roles, status, address): a change that ends the user's sessions
    committed while the hash ran (a role taken away) must not reach the new session's access token as it was.
    """
    checked = user.password_hash
    # The roles joined in, as find_by_email does: on the sign-in's path, one statement rather than two.
    query = select(User).options(joinedload(User.roles)).where(User.id == user.id) \
        .execution_options(populate_existing=True)
    if locks_rows():
        query = query.with_for_update(of=User, **row_lock())
    return db.session.scalars(query).unique().first() is not None and user.password_hash == checked


def check_may_sign_in(user: User, keep_changes: bool = False) -> None:
    """403 `account_disabled` or `email_not_verified` (when REQUIRE_VERIFIED_EMAIL) for a user who proved who
    they are. With `keep_changes`, an `email_not_verified` refusal still commits what the sign-in staged (an
    account it made, its verification mail); a disabled account's sign-in changes nothing."""
    if not user.is_active:
        raise APIError(403, "account_disabled", "This account is disabled.")
    if current_app.config["REQUIRE_VERIFIED_EMAIL"] and not user.email_verified:
        raise APIError(403, "email_not_verified", "Verify your email address before signing in.",
                       persist=keep_changes)


def _check_current_password(user: User, password: str, source_ip: str) -> None:
    # A password check like a sign-in's, so it gets the sign-in's brute-force throttle per (account, source): a
    # stolen session must not be a way to guess the password (and so keep the account) outside it.
    failed_before = throttle.check(user.email, source_ip)
    ok, _ = passwords.hasher().verify(user.password_hash, password)
    # As at sign-in: a reset (or another change) committed while the hash ran must not be overwritten by a
    # password checked against the hash it replaced; the lock makes a later one wait for this commit.
    if not ok or not _hash_still_current(user):
        throttle.failed(user.email, source_ip)
        raise APIError(401, "invalid_credentials", "The password is incorrect.", persist=True)
    if failed_before:
        throttle.succeeded(user.email, source_ip)


def update_profile(user: User, full_name: str | None, email: str | None = None,
                   session_id: uuid.UUID | None = None) -> User:
    """Stage a change of the user's own profile, made in session `session_id`; a new email stays pending until
    its link is followed."""
    if email is not None:
        verification.request_email_change(user, email, session_id)
    if full_name is not None and full_name != user.full_name:
        user.full_name = full_name
        user.updated_at = utcnow()
        signals.user_updated.send(_app(), user=user, fields=["full_name"])
    return user


def set_password(user: User, new_password: str, keep_session: uuid.UUID | None, reason: str) -> None:
    """Stage a new password and end every session but `keep` (None ends them all)."""
    passwords.check_new_password(new_password, user.email, field="new_password")
    user.password_hash = passwords.hasher().hash(new_password)
    user.updated_at = utcnow()
    revoke_user_sessions(user.id, reason, keep=keep_session)
    # A reset link must not outlive the password it was for, nor a pending change of address: whoever asked for
    # it (a stolen session, ended just now) could otherwise still move the account to their own address and reset
    # the password from there.
    onetime.invalidate(user.id, onetime.PASSWORD_RESET, onetime.EMAIL_CHANGE)
    mail.password_changed(user.email)
    signals.password_changed.send(_app(), user=user, reason=reason)


def change_password(user: User, current_password: str, new_password: str, session_id: uuid.UUID,
                    source_ip: str) -> None:
    """Change a signed-in user's password after checking the current one (from `source_ip`); other sessions end."""
    _check_current_password(user, current_password, source_ip)
    if passwords.normalized(new_password) == passwords.normalized(current_password):
        raise validation_error({"new_password": ["must differ from the current password"]})
    set_password(user, new_password, keep_session=session_id, reason="password_changed")


def deactivate(user: User, password: str, source_ip: str) -> None:
    """Deactivate the caller's own account after checking the password (from `source_ip`); every session ends."""
    _check_current_password(user, password, source_ip)
    guard_last_admin(user, stays_admin=False)
    user.is_active = False
    user.updated_at = utcnow()
    revoke_user_sessions(user.id, "account_deactivated")
    # As an admin's deactivation does: enabling the account again must not bring mailed links back to life.
    onetime.invalidate(user.id, onetime.PASSWORD_RESET, onetime.EMAIL_CHANGE)
    signals.user_deactivated.send(_app(), user=user)


def grant_admin(user: User) -> None:
    """Stage the admin role for a user (the operator's `create-admin`), recorded in the audit trail."""
    admin = role(ADMIN_ROLE)
    if admin not in user.roles:
        user.roles.append(admin)
        user.updated_at = utcnow()
        signals.user_updated.send(_app(), user=user, fields=["roles"], reason="create_admin")
