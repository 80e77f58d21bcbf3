"""Google sign-in for browsers: /auth/google/login → the provider → /auth/google/callback → signed in.

Also starts linking a Google account from /account. Every failure is a page with a way back, never a 500.
"""
from __future__ import annotations

import time

from flask import Blueprint, abort, current_app, flash, g, redirect, request, session, url_for

from ..database import begin_writing
from ..errors import APIError, finish_transaction
from ..extensions import db
from ..limits import limit
from ..services import google, identities
from .pages import page
from .pages.browser import finish_page, load_browser_user, safe_next, start_browser_session

bp = Blueprint("google", __name__)
FLOWS = "google_flows"  # per-state intent and destination, beside Authlib's own state data in the session
MAX_FLOWS = 3
# An attempt's state (and Authlib's nonce and PKCE verifier for it) is good for this long: Authlib records an
# expiry but never checks it, and a state would otherwise work for as long as the browser's session cookie lives.
FLOW_SECONDS = 900


@bp.app_context_processor
def _google_enabled():
    return {"google_enabled": google.enabled()}


@bp.before_request
def _only_when_configured():
    if not google.enabled():
        abort(404)
    load_browser_user()


@bp.after_request
def _headers(response):
    return finish_page(response)


def _callback_url() -> str:
    # The address registered at the provider: the public one, not whatever Host this request came through.
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/") + url_for("google.callback")


def _start(intent: str, target: str | None):
    try:
        response, state = google.authorization_redirect(_callback_url())
    except APIError as exc:
        return _failed(exc)
    flows = dict(session.get(FLOWS, {}))
    flows[state] = {"intent": intent, "next": safe_next(target), "at": int(time.time()),
                    "user_id": str(g.user.id) if g.user is not None else None}
    # A few tabs at once; the oldest attempt is dropped, with Authlib's own entry for it (its url, nonce and PKCE
    # verifier): Authlib drops them only on a callback, and past 4 KB the browser ignores the whole cookie.
    kept = dict(list(flows.items())[-MAX_FLOWS:])
    session[FLOWS] = kept
    prefix = f"_state_{google.PROVIDER}_"
    for key in [k for k in session if k.startswith(prefix) and k[len(prefix):] not in kept]:
        session.pop(key)
    return response


@bp.get("/auth/google/login")
def login():
    """Send the browser to Google to sign in (or sign up), coming back to `next`."""
    return _start("login", request.args.get("next"))


@bp.post("/auth/google/link")
def link():
    """Send a signed-in browser to Google to link that account (POST with the form's CSRF token)."""
    if g.user is None:
        return redirect(url_for("pages.login", next=url_for("pages.account")))
    return _start("link", url_for("pages.account"))


@bp.get("/auth/google/callback")
@limit("RATELIMIT_LOGIN")
def callback():
    """Where Google sends the browser back: finish the sign-in or the link."""
    flows = dict(session.get(FLOWS, {}))
    flow = flows.pop(request.args.get("state", ""), None)
    session[FLOWS] = flows
    try:
        if flow is None or time.time() - flow.get("at", 0) > FLOW_SECONDS:
            # Never guess the intent (a dropped link attempt must not turn into a sign-in), nor take an old one.
            raise APIError(400, "bad_request", "This sign-in attempt expired or did not start here. Try again.")
        claims = google.finish_authorization()
        # The code exchange with Google is over: only now take SQLite's write lock (a GET began without it), so no
        # writer waits on the network.
        begin_writing()
        if flow["intent"] == "link":
            if g.user is None or str(g.user.id) != flow["user_id"]:
                raise APIError(401, "unauthorized", "Sign in again to link your Google account.")
            identities.link(g.user, google.PROVIDER, claims)
        else:
            user = identities.sign_in(google.PROVIDER, claims)
    except APIError as exc:
        # As the API does: a refusal that keeps what the sign-in staged (a new account and its verification mail,
        # refused for `email_not_verified`) commits it.
        finish_transaction(exc.persist)
        return _failed(exc)
    if flow["intent"] == "link":
        db.session.commit()
        flash("Your Google account is linked.")
        return redirect(url_for("pages.account"))
    return start_browser_session(user, flow["next"])


def _failed(exc: APIError):
    back = url_for("pages.account") if g.get("user") is not None else url_for("pages.login")
    return page("message.html", exc.status, title="Google sign-in did not work", text=exc.message,
                link=back, link_text="Back")
