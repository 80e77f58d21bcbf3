"""Rate limits, declared beside the views with the names of the settings that hold them."""
from __future__ import annotations

from flask import current_app, request

from .extensions import limiter


def limit(setting: str, methods: list[str] | None = None):
    """Limit a view per client address to the limit held by `setting` (only `methods`, if given)."""
    return limiter.limit(lambda: current_app.config[setting], methods=methods)


def _recipient() -> str:
    body = request.get_json(silent=True) if request.is_json else request.form
    email = body.get("email") if hasattr(body, "get") else None
    return "mail-to:" + (email.strip().lower() if isinstance(email, str) else "-")


def limit_mail_per_address(methods: list[str] | None = None):
    """The per-recipient mail quota, shared by every view that mails an address (API and pages), so nobody
    can flood one inbox from many client addresses."""
    return limiter.shared_limit(lambda: current_app.config["RATELIMIT_MAIL_PER_ADDRESS"], scope="mail-to",
                                key_func=_recipient, methods=methods)
