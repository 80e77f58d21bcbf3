"""Rate limits, declared beside the views with the names of the settings that hold them."""
from __future__ import annotations

import functools

from flask import current_app, g, request
from werkzeug.exceptions import HTTPException

from .extensions import limiter
from .schemas import normalize_email


def _only_when_enabled(decorator):
    """`decorator` (a Flask-Limiter one), skipped outright while rate limiting is off (RATELIMIT_ENABLED=false).

    Flask-Limiter's wrapper still looks the view's limits up and walks them on every call when it is disabled,
    about 15 µs a request for nothing. The wrapper returned here carries the limiter's own wrapper's marks
    (functools.wraps copies its attributes), so stacked limits are still checked once, by the innermost.
    """
    def apply(view):
        limited = decorator(view)

        @functools.wraps(limited)
        def checked(*args, **kwargs):
            return limited(*args, **kwargs) if limiter.enabled else view(*args, **kwargs)
        return checked
    return apply


def limit(setting: str, methods: list[str] | None = None):
    """Limit a view per client address to the limit held by `setting` (only `methods`, if given)."""
    return _only_when_enabled(limiter.limit(lambda: current_app.config[setting], methods=methods))


def limit_password_sign_in(methods: list[str] | None = None, exempt_when=None):
    """RATELIMIT_LOGIN per client address, as one budget for every way of trying a password (the API's login,
    the sign-in page, the token endpoint's password grant): with a budget each, the three paths tripled a
    guesser's rate across accounts. `exempt_when` tells the requests of a view that try no password."""
    return _only_when_enabled(limiter.shared_limit(lambda: current_app.config["RATELIMIT_LOGIN"], scope="sign-in",
                                                   methods=methods, exempt_when=exempt_when))


def posted_address() -> str | None:
    """The `email` of the request's JSON body or form, if any."""
    try:
        body = request.get_json(silent=True) if request.is_json else request.form
    except HTTPException:  # a body over MAX_CONTENT_LENGTH: the view refuses it (413) and mails nothing
        return None
    email = body.get("email") if hasattr(body, "get") else None
    return email if isinstance(email, str) and email.strip() else None


def new_address() -> str | None:
    """A change of address's new address: the posted one, unless it is the signed-in user's own (a form that
    only renames posts the current address too, and mails nothing)."""
    email = posted_address()
    user = g.get("user")
    if email is None or (user is not None and _canonical(email) == _canonical(user.email)):
        return None
    return email


def posted_form_value(name: str) -> str | None:
    """A field of the request's form, if any (None for a body over MAX_CONTENT_LENGTH, which the view refuses)."""
    try:
        return request.form.get(name)
    except HTTPException:
        return None


def signed_in_address() -> str | None:
    """The signed-in user's address (pages: the sign-in is known before the view runs)."""
    user = g.get("user")
    return user.email if user is not None else None


def _canonical(email: str) -> str:
    # The address the mail would go to: every spelling of one mailbox (case, spaces, full-width letters, an
    # internationalised domain) shares one quota, or a new spelling would be a fresh quota for the same inbox.
    try:
        return normalize_email(email).lower()
    except ValueError:
        return email.strip().lower()


def limit_mail_per_address(methods: list[str] | None = None, address=posted_address):
    """The per-recipient mail quota, shared by every view that mails an address (API and pages), so nobody
    can flood one inbox from many client addresses. `address` gives the recipient; a request with none (a
    rename, a body the view will refuse) is not counted."""
    return _only_when_enabled(limiter.shared_limit(
        lambda: current_app.config["RATELIMIT_MAIL_PER_ADDRESS"], scope="mail-to",
        key_func=lambda: "mail-to:" + _canonical(address() or ""), methods=methods,
        exempt_when=lambda: address() is None))
