"""Password reset by mailed link."""
from __future__ import annotations

from datetime import timedelta

from flask import current_app

from .. import signals
from ..models import User
from . import accounts, mail, onetime, passwords, verification
from .users import find_by_email, get_user

REQUEST_KIND = "password_reset"


def request_reset(email: str) -> None:
    """Stage a reset request for `email`; the caller answers 202 whatever the address (see mail.request)."""
    mail.request(REQUEST_KIND, email)


def compose_reset(email: str) -> None:
    """(Sender) Mail a reset link if `email` has an active account, else nothing; older links stop working."""
    user = find_by_email(email)
    if user is None or not user.is_active:
        return
    onetime.invalidate(user.id, onetime.PASSWORD_RESET)
    lifetime = timedelta(minutes=current_app.config["RESET_TOKEN_MINUTES"])
    token = onetime.issue(onetime.PASSWORD_RESET, lifetime, user.email, user.id)
    mail.password_reset(user.email, token)


def check_link(token: str) -> None:
    """400 `invalid_token` unless the reset link is live (without using it)."""
    onetime.peek(onetime.PASSWORD_RESET, token)


def confirm_reset(token: str, new_password: str) -> User:
    """Set a new password through a reset link; every session of the user ends."""
    onetime.lock_owner(token)
    row = onetime.peek(onetime.PASSWORD_RESET, token)
    user = get_user(row.user_id)
    # A link works only for the address it was mailed to: following it proves that mailbox, and no other.
    if user is None or not user.is_active or row.email.lower() != user.email.lower():
        raise onetime.invalid_token()
    # Check the policy before using the link, so a rejected password leaves the link usable.
    passwords.check_new_password(new_password, user.email, field="new_password")
    onetime.consume(onetime.PASSWORD_RESET, token)
    accounts.set_password(user, new_password, keep_session=None, reason="password_reset")
    verification.address_proven(user)  # following the link proved the address
    signals.password_reset.send(current_app._get_current_object(), user=user)
    return user
