"""The messages the service sends: one function each, a .txt and .html template pair under templates/email/.

Nothing is sent here: each message is staged in the outbox, in the same transaction as the change that caused
it, and the outbox sender delivers it after commit (see services/outbox.py).
"""
from __future__ import annotations

from flask import current_app, render_template

from ..extensions import db
from ..models import OutboxMessage

REQUEST_PREFIX = "request:"
SUBJECTS = {
    "verify_email": "Confirm your email address",
    "signup": "Finish creating your account",
    "account_exists": "You already have an account",
    "password_reset": "Reset your password",
    "password_changed": "Your password was changed",
    "email_change": "Your email address is being changed",
    "confirm_email_change": "Confirm your new email address",
}


def link(path: str) -> str:
    """An absolute link to a page of this service, under PUBLIC_BASE_URL."""
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/") + path


def _queue(kind: str, recipient: str, **context) -> None:
    context.update(subject=SUBJECTS[kind], email=context.get("email", recipient))
    db.session.add(OutboxMessage(
        kind=kind, recipient=recipient, subject=SUBJECTS[kind],
        text_body=render_template(f"email/{kind}.txt", **context),
        html_body=render_template(f"email/{kind}.html", **context),
    ))
    db.session.info["authsvc_mail_queued"] = True  # wakes the sender once this transaction commits


def request(kind: str, recipient: str) -> None:
    """Stage a request to mail `recipient` whose answer depends on whether the address has an account.

    The request does the same work for every address (this one insert); the sender decides later, off the
    request path, whether the address gets a link, a notice, or nothing (services/outbox.py COMPOSERS). So
    neither the answer nor its timing can tell a caller which addresses have accounts.
    """
    db.session.add(OutboxMessage(kind=REQUEST_PREFIX + kind, recipient=recipient, subject="", text_body="",
                                 html_body=""))
    db.session.info["authsvc_mail_queued"] = True


def verify_email(recipient: str, token: str) -> None:
    """Ask the owner of `recipient` to confirm it (a new account, or a resend)."""
    _queue("verify_email", recipient, link=link(f"/verify-email/{token}"),
           hours=int(current_app.config["VERIFY_TOKEN_HOURS"]))


def confirm_email_change(recipient: str, token: str) -> None:
    """Ask the owner of `recipient` to confirm it as an account's new address, on a page (not in one click: a
    mail scanner opening the link must not attach the address to someone else's account)."""
    _queue("confirm_email_change", recipient, link=link(f"/confirm-email-change/{token}"),
           hours=int(current_app.config["VERIFY_TOKEN_HOURS"]))


def signup(recipient: str, token: str) -> None:
    """Send the link that finishes a two-step signup."""
    _queue("signup", recipient, link=link(f"/signup/complete/{token}"),
           hours=int(current_app.config["SIGNUP_TOKEN_HOURS"]))


def account_exists(recipient: str) -> None:
    """Tell the owner that someone tried to sign up with an address that already has an account."""
    _queue("account_exists", recipient, login_link=link("/login"), reset_link=link("/password-reset"))


def password_reset(recipient: str, token: str) -> None:
    """Send a password-reset link."""
    _queue("password_reset", recipient, link=link(f"/password-reset/{token}"),
           minutes=int(current_app.config["RESET_TOKEN_MINUTES"]))


def password_changed(recipient: str) -> None:
    """Tell the owner that the password changed (so a stranger's change does not go unnoticed)."""
    _queue("password_changed", recipient, reset_link=link("/password-reset"))


def email_change_notice(old_email: str, new_email: str) -> None:
    """Tell the current address that a change to `new_email` was requested."""
    _queue("email_change", old_email, old_email=old_email, new_email=new_email, reset_link=link("/password-reset"))
