"""Confirming email addresses: on registration, on resend, and when an account changes its address."""
from __future__ import annotations

import uuid
from datetime import timedelta

from flask import current_app
from limits import parse_many
from sqlalchemy import func, select

from .. import signals
from ..database import lock_row
from ..errors import APIError
from ..extensions import db
from ..models import LinkedIdentity, OneTimeToken, User, utcnow
from . import mail, onetime
from .sessions import check_recent_sign_in
from .users import check_email_free, email_taken_if_conflict, find_by_email, get_user

RESEND_KIND = "verify_email"


def _lifetime() -> timedelta:
    return timedelta(hours=current_app.config["VERIFY_TOKEN_HOURS"])


def send_verification(user: User) -> None:
    """Stage a confirmation link to the user's address."""
    token = onetime.issue(onetime.VERIFY_EMAIL, _lifetime(), user.email, user.id)
    mail.verify_email(user.email, token)


def resend(email: str) -> None:
    """Stage a resend request for `email`; the caller answers 202 whatever the address (see mail.request)."""
    mail.request(RESEND_KIND, email)


def compose_resend(email: str) -> None:
    """(Sender) Mail a new link if `email` belongs to an unverified active account; otherwise nothing."""
    user = find_by_email(email)
    if user is not None and user.is_active and not user.email_verified:
        send_verification(user)


def request_email_change(user: User, new_email: str, session_id: uuid.UUID | None) -> None:
    """Stage a change of address asked for in session `session_id` (which must have signed in recently): the new
    address gets a link, the old one a notice; nothing changes until the link is followed."""
    if new_email.lower() == user.email.lower():
        return
    check_recent_sign_in(user.id, session_id, "change your email address")
    check_email_free(new_email)
    # One pending change at a time: a newer request voids the older links (one a stolen session asked for, say),
    # so the owner's own change, asked for after the notice, leaves no other behind. The account's row lock makes
    # a request wait for one being committed, whose link it would not see yet.
    lock_row(user)
    _check_change_quota(user)
    onetime.invalidate(user.id, onetime.EMAIL_CHANGE)
    token = onetime.issue(onetime.EMAIL_CHANGE, _lifetime(), new_email, user.id, {"new_email": new_email})
    mail.confirm_email_change(new_email, token)
    mail.email_change_notice(user.email, new_email)


def _check_change_quota(user: User) -> None:
    """429 `rate_limited` once the account has asked for as many changes of address as RATELIMIT_MAIL_PER_ADDRESS
    allows in its window.

    Each change mails the account's current address a notice, and the views' per-recipient quota counts only the
    new address: an account holding someone's address could otherwise mail them a notice per request. The links
    already issued are the count (kept for CLEANUP_GRACE_HOURS, longer than any quota's window in practice).
    """
    if not current_app.config["RATELIMIT_ENABLED"]:
        return
    for quota in parse_many(current_app.config["RATELIMIT_MAIL_PER_ADDRESS"]):
        window = quota.get_expiry()
        asked = db.session.scalar(select(func.count()).select_from(OneTimeToken).where(
            OneTimeToken.purpose == onetime.EMAIL_CHANGE, OneTimeToken.user_id == user.id,
            OneTimeToken.created_at > utcnow() - timedelta(seconds=window)))
        if asked >= quota.amount:
            raise APIError(429, "rate_limited", "Too many changes of address asked for; retry later.",
                           headers={"Retry-After": str(window)})


def pending_change(token: str) -> str:
    """The new address a live change-of-address link would set (without using it); 400 `invalid_token`."""
    return onetime.peek(onetime.EMAIL_CHANGE, token).data["new_email"]


def verify(token: str, purposes: tuple[str, ...] = (onetime.VERIFY_EMAIL, onetime.EMAIL_CHANGE)) -> User:
    """Follow a confirmation link (new account or change of address, or those of `purposes`); 400
    `invalid_token` if it is not live."""
    onetime.lock_owner(token)
    row = onetime.consume_any(purposes, token)
    user = get_user(row.user_id)
    if user is None or not user.is_active:
        raise onetime.invalid_token()
    app = current_app._get_current_object()
    if row.purpose == onetime.EMAIL_CHANGE:
        new_email = row.data["new_email"]
        check_email_free(new_email, user)
        old_email, user.email = user.email, new_email
        email_taken_if_conflict()  # an account registered meanwhile takes it first
        # A reset link mailed to the old address must not outlive it, nor another pending change of address.
        onetime.invalidate(user.id, onetime.PASSWORD_RESET, onetime.EMAIL_CHANGE)
        signals.email_changed.send(app, user=user, old_email=old_email)
    elif row.email.lower() != user.email.lower():
        raise onetime.invalid_token()  # the account's address changed since this link was sent
    address_proven(user)
    user.updated_at = utcnow()
    signals.email_verified.send(app, user=user)
    return user


def address_proven(user: User) -> None:
    """Stage the user's address as confirmed by a link we mailed to it (verification or password reset).

    Provider identities linked while the address was unconfirmed go. A provider that does not vouch for its
    emails lets anyone sign up with someone else's address, and the account it made would otherwise stay linked
    to them once the real owner confirms the address or resets the password. An owner who did link it signs in
    with the provider again. (The other way round, a provider proving an address that an unconfirmed password
    claimed, is identities._reclaim.)
    """
    if not user.email_verified:
        app = current_app._get_current_object()
        for identity in db.session.scalars(select(LinkedIdentity).where(LinkedIdentity.user_id == user.id)):
            db.session.delete(identity)
            signals.google_unlinked.send(app, user=user, provider=identity.provider, reason="address_proven")
    user.email_verified = True
