"""Rate limits, declared beside the views with the names of the settings that hold them."""
from __future__ import annotations

import functools

from flask import current_app, request

from .extensions import limiter


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


def _recipient() -> str:
    body = request.get_json(silent=True) if request.is_json else request.form
    email = body.get("email") if hasattr(body, "get") else None
    return "mail-to:" + (email.strip().lower() if isinstance(email, str) else "-")


def limit_mail_per_address(methods: list[str] | None = None):
    """The per-recipient mail quota, shared by every view that mails an address (API and pages), so nobody
    can flood one inbox from many client addresses."""
    return _only_when_enabled(limiter.shared_limit(lambda: current_app.config["RATELIMIT_MAIL_PER_ADDRESS"],
                                                   scope="mail-to", key_func=_recipient, methods=methods))
