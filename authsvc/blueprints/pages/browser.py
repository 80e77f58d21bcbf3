"""A browser's sign-in: the token pair in HttpOnly cookies, safe redirects, and service errors as form errors."""
from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from flask import current_app, g, redirect, request, session, url_for
from flask_jwt_extended import set_access_cookies, unset_jwt_cookies

from ...database import begin_writing
from ...errors import APIError
from ...extensions import db
from ...services import sessions, tokens, users

REFRESH_COOKIE = "refresh_token"


def set_session_cookies(response, pair: dict) -> None:
    """Put a token pair in the browser: the access token (and its CSRF double-submit cookie) and the refresh
    token, HttpOnly, SameSite=Lax, Secure unless COOKIE_SECURE is off (plain-http development)."""
    set_access_cookies(response, pair["access_token"])
    response.set_cookie(REFRESH_COOKIE, pair["refresh_token"], httponly=True, samesite="Lax", path="/",
                        secure=current_app.config["COOKIE_SECURE"],
                        max_age=current_app.config["REFRESH_TOKEN_EXPIRE_DAYS"] * 86400)


def start_browser_session(user, target: str | None):
    """Start a session for `user`, commit, and send the browser on (to a safe `target`) with its cookies.

    A browser that was signed in already (a sign-in form opened before, a signup, a Google sign-in) leaves its
    previous session: that one ends, its rotated pair is not written after the new one, and the form CSRF token
    is renewed (as Django's login() does with rotate_token), so nothing from before the sign-in carries over.
    """
    if g.get("user") is not None and g.get("session_id") is not None:
        try:
            sessions.revoke_session(sessions.session_of(g.user.id, str(g.session_id)), "logout")
        except APIError:
            pass  # already ended (a Google sign-in that reclaimed the account ends its sessions)
    pair = sessions.start_session(user, request.headers.get("User-Agent", ""), request.remote_addr or "")
    db.session.commit()
    response = redirect(safe_next(target))
    set_session_cookies(response, pair)
    g.new_pair = None  # a pair of the previous session rotated while loading this request must not be set after
    csrf_key = current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
    session.pop(csrf_key, None)
    g.pop(csrf_key, None)
    return response


def clear_session_cookies(response) -> None:
    """Remove every sign-in cookie."""
    unset_jwt_cookies(response)
    response.delete_cookie(REFRESH_COOKIE, path="/")


def signed_out():
    """Send a browser whose session just ended to /login, without its sign-in cookies."""
    response = redirect(url_for("pages.login"))
    clear_session_cookies(response)
    g.new_pair = None  # a pair rotated earlier in this request must not be set again
    return response


def load_browser_user() -> None:
    """Set `g.user` and `g.session_id` from the cookies, rotating the refresh token if the access token lapsed.

    Page forms carry their own CSRF token, so the JWT double-submit check (meant for API calls) is not used here.
    """
    g.user, g.session_id, g.new_pair = None, None, None
    access = request.cookies.get(current_app.config["JWT_ACCESS_COOKIE_NAME"])
    payload = tokens.live_access_claims(access)
    if payload is not None and payload.get("sid"):
        g.user, g.session_id = users.get_user(payload["sub"]), uuid.UUID(payload["sid"])
        return
    refresh = request.cookies.get(REFRESH_COOKIE)
    if not refresh:
        return
    # A page load (a GET, so its transaction began without SQLite's write lock) that must rotate: write holding the
    # lock, or a writer committing meanwhile would make the rotation fail outright.
    begin_writing()
    try:
        pair = sessions.rotate(refresh, request.headers.get("User-Agent", ""), request.remote_addr or "")
    except APIError as exc:
        if exc.persist:
            db.session.commit()  # refresh reuse: the session's revocation must stick
        else:
            db.session.rollback()
        return
    db.session.commit()
    payload = tokens.decode_access_token(pair["access_token"])
    g.user, g.session_id, g.new_pair = users.get_user(payload["sub"]), uuid.UUID(payload["sid"]), pair


def safe_next(target: str | None) -> str:
    """`target` if it stays on this service or goes to an allowed origin; `/account` otherwise."""
    # Browsers and URL parsers drop tabs and newlines (`/\t/evil.example` is `//evil.example` to them), and a
    # newline in a Location header is refused: no control character or space at all.
    if not target or not target.isprintable() or any(c.isspace() for c in target):
        return "/account"
    if target.startswith("/") and not target.startswith(("//", "/\\")) and "\\" not in target:
        return target
    try:
        parts = urlsplit(target)
    except ValueError:  # an IPv6 bracket it cannot close ("http://[::1")
        return "/account"
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    own = urlsplit(current_app.config["PUBLIC_BASE_URL"])
    allowed = {f"{own.scheme}://{own.netloc}".lower()} | {
        o.rstrip("/").lower() for o in current_app.config["ALLOWED_REDIRECT_ORIGINS"]}
    if parts.scheme in ("http", "https") and origin in allowed:
        return target
    return "/account"


def form_errors(form, exc: APIError, default_field: str | None = None) -> None:
    """Show a service's error next to the fields it names (or on `default_field`, or the form)."""
    if exc.fields:
        for name, problems in exc.fields.items():
            field = getattr(form, name, None)
            (field.errors if field is not None else form.form_errors).extend(problems)
    elif default_field and getattr(form, default_field, None) is not None:
        getattr(form, default_field).errors.append(exc.message)
    else:
        form.form_errors.append(exc.message)


def finish_page(response):
    """Headers of every hosted page, and the cookies of a refresh token rotated while loading the user."""
    if g.get("new_pair"):
        set_session_cookies(response, g.new_pair)
    # No inline script or style anywhere, so this policy holds; no framing (clickjacking on the forms).
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    )
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cache-Control", "no-store")
    # Not the API's `no-referrer`: over HTTPS the CSRF check (Flask-WTF's WTF_CSRF_SSL_STRICT) refuses a form
    # post without a same-origin Referer, and browsers would send none. `same-origin` still keeps a page's URL
    # (a reset link's token) from every other site.
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response
