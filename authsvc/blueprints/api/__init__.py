"""The JSON API under /api/v1."""
from flask import Blueprint, request

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def client_meta() -> tuple[str, str]:
    """The caller's user agent and address, as recorded on sessions."""
    return request.headers.get("User-Agent", ""), request.remote_addr or ""


@bp.after_request
def _no_store(response):
    # Tokens and personal data: no shared or browser cache may keep them. One pass over the few headers set so far
    # (werkzeug's setdefault raises and catches a KeyError when the name is absent, as it is on every answer).
    headers = response.headers
    if not any(name.lower() == "cache-control" for name in headers.keys()):
        headers.add("Cache-Control", "no-store")
    return response


from . import admin, auth, flows, gateway, google, oauth, users  # noqa: E402,F401  (routes register themselves on bp)
