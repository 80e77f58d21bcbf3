"""Unbound extensions, attached to the app in `create_app` with `init_app`."""
from flask import current_app, request
from flask.sessions import SecureCookieSessionInterface
from flask_cors import CORS
from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_mail import Mail
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import MetaData

from .readonly import Session
from .sources import client_source

# Explicit constraint names, so migrations can drop and alter them on SQLite and PostgreSQL alike.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def client_address() -> str:
    """The client's source for rate limits: its address (ProxyFix has already applied TRUSTED_PROXIES to
    `remote_addr`), an IPv6 one widened to its network (`sources.source_of`)."""
    return client_source(request.remote_addr)


class SessionCookie(SecureCookieSessionInterface):
    """Flask's signed session cookie, without building its signer for requests that carry no such cookie (API
    calls and gateway checks, nearly all of them)."""

    def open_session(self, app, request):
        """An empty session when there is no cookie; otherwise Flask's own reading of it."""
        # The raw header first: parsing the cookies walks the whole WSGI environ, for nothing on most requests.
        if app.config["SESSION_COOKIE_NAME"] not in request.environ.get("HTTP_COOKIE", "") or \
                app.config["SESSION_COOKIE_NAME"] not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)


db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING), session_options={"class_": Session})
jwt = JWTManager()
# The default limit is read from the current app's RATELIMIT_DEFAULT on each request (not once at init_app),
# so it follows the settings of whichever app serves; views with a limit of their own replace it.
limiter = Limiter(key_func=client_address, default_limits=[lambda: current_app.config["RATELIMIT_DEFAULT"]])
mail = Mail()
csrf = CSRFProtect()
cors = CORS()
