"""Hosted HTML pages for browsers: sign-in, signup, email links, password reset, account."""
from functools import wraps

from flask import Blueprint, g, redirect, render_template, request, url_for

from ...limits import limit
from .browser import finish_page, load_browser_user

bp = Blueprint("pages", __name__)


def limit_posts(setting: str):
    """Rate-limit the POSTs of a page (not its GETs) by client address with the limit named by `setting`."""
    return limit(setting, methods=["POST"])


def signin_required(view):
    """Send a browser without a sign-in to /login, coming back here afterwards."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if g.user is None:
            return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapper


def page(template: str, status: int = 200, **context):
    """Render a page of the hosted UI."""
    return render_template(template, **context), status


@bp.get("/")
def home():
    """The service's front door: the account page, or sign-in."""
    return redirect(url_for("pages.account"))


@bp.before_request
def _who():
    load_browser_user()


@bp.after_request
def _headers(response):
    return finish_page(response)


from . import account, signin  # noqa: E402,F401  (routes register themselves on bp)
