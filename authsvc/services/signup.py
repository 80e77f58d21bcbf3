"""Two-step signup: an address first, a password after the mailed link is followed."""
from __future__ import annotations

from datetime import timedelta

from flask import current_app

from .. import signals
from ..models import User
from . import accounts, mail, onetime, passwords
from .users import find_by_email

REQUEST_KIND = "signup"


def start(email: str) -> None:
    """Stage a signup request for `email`; the caller answers 202 whatever the address (see mail.request)."""
    mail.request(REQUEST_KIND, email)


def compose(email: str) -> None:
    """(Sender) Mail a link to finish signup, or, if the address has an account, a notice to its owner."""
    if find_by_email(email) is not None:
        mail.account_exists(email)
        return
    lifetime = timedelta(hours=current_app.config["SIGNUP_TOKEN_HOURS"])
    mail.signup(email, onetime.issue(onetime.SIGNUP, lifetime, email))


def check_link(token: str) -> str:
    """The address a live signup link was sent to; 400 `invalid_token` otherwise (the link stays usable)."""
    return onetime.peek(onetime.SIGNUP, token).email


def complete(token: str, password: str, full_name: str = "") -> User:
    """Create the account of a signup link with a verified address; 409 if the address got an account since."""
    email = onetime.peek(onetime.SIGNUP, token).email
    passwords.check_new_password(password, email, field="password")
    onetime.consume(onetime.SIGNUP, token)
    user = accounts.create_user(email, password, full_name, email_verified=True)
    signals.user_registered.send(current_app._get_current_object(), user=user)
    return user
