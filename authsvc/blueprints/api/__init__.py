"""The JSON API under /api/v1."""
from flask import Blueprint, current_app, request

from ...extensions import limiter

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def limit(setting: str):
    """Rate-limit a view by the client address with the limit named by `setting` (a config key)."""
    return limiter.limit(lambda: current_app.config[setting])


def _mail_recipient() -> str:
    body = request.get_json(silent=True)
    email = body.get("email") if isinstance(body, dict) else None
    return "mail-to:" + (email.strip().lower() if isinstance(email, str) else "-")


def limit_mail_per_address():
    """The per-recipient mail quota, shared by signup, resend and reset, so nobody can flood one inbox."""
    return limiter.shared_limit(lambda: current_app.config["RATELIMIT_MAIL_PER_ADDRESS"], scope="mail-to",
                                key_func=_mail_recipient)


def client_meta() -> tuple[str, str]:
    """The caller's user agent and address, as recorded on sessions."""
    return request.headers.get("User-Agent", ""), request.remote_addr or ""


@bp.after_request
def _no_store(response):
    # Tokens and personal data: no shared or browser cache may keep them.
    response.headers.setdefault("Cache-Control", "no-store")
    return response


from . import auth, flows, oauth, users  # noqa: E402,F401  (routes register themselves on bp)
