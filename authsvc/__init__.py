"""authsvc: authentication and user management as a service."""
from __future__ import annotations

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.middleware.proxy_fix import ProxyFix

from . import config as config_module


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, with a body nested too deeply for the parser (RecursionError) reported as malformed JSON
    (a ValueError, which `get_json` turns into 400 or, with silent=True, None) instead of a 500."""

    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("the JSON document is nested too deeply") from None


class App(Flask):
    """Flask, remembering `ensure_sync`'s answer per function: Flask asks it for every hook of every request (nine
    per API call), and each answer costs an `inspect` call."""

    json_provider_class = JSONProvider

    def ensure_sync(self, func):
        """`func` itself for a plain function; a wrapper for an `async def` one (Flask's rule, remembered)."""
        known = self.__dict__.setdefault("_sync_functions", {})
        try:
            return known[func]
        except KeyError:
            made = known[func] = super().ensure_sync(func)
            return made
        except TypeError:  # not hashable
            return super().ensure_sync(func)


def create_app(config: dict | None = None) -> Flask:
    """Build the application: settings, extensions, blueprints, error handlers and CLI."""
    settings = config_module.load(config)
    app = App(__name__, instance_path=settings["INSTANCE_PATH"])
    app.config.update(settings)
    app.json.sort_keys = False
    from .extensions import SessionCookie

    app.session_interface = SessionCookie()
    if app.config["TRUSTED_PROXIES"]:
        hops = app.config["TRUSTED_PROXIES"]
        # Only the last N hops were added by our own proxies; anything before them is the client's to forge.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    from . import logs

    logs.init_logging(app)  # first: importing the extensions below already logs (alembic)
    from . import logredact, metrics

    logredact.install()
    _init_extensions(app)
    _register_blueprints(app)
    metrics.init_metrics(app)
    from .cli import register_commands

    register_commands(app)
    return app


def _init_extensions(app: Flask) -> None:
    from . import models  # noqa: F401  (registers the tables on the metadata)
    from .services import audit  # noqa: F401  (subscribes the audit trail to the services' signals)
    from .auth import init_auth
    from .database import configure_engine
    from .errors import register_error_handlers
    from .hardening import init_hardening
    from .services import google as google_signin
    from .services import tokencache
    from .extensions import csrf, db, jwt, limiter, mail

    db.init_app(app)
    jwt.init_app(app)
    # Flask-Limiter keeps settings read by an earlier init_app on its (module-level) object; one app per
    # process never notices, but each app (tests build many) must start from its own settings.
    limiter._in_memory_fallback_enabled, limiter._storage_dead, limiter._swallow_errors = False, False, None
    limiter.init_app(app)
    mail.init_app(app)
    csrf.init_app(app)
    configure_engine(app)
    register_error_handlers(app)
    init_auth(app)
    init_hardening(app)
    google_signin.init_app(app)
    tokencache.init_app(app)
    tokencache.watch(db.session.session_factory.class_)


def _register_blueprints(app: Flask) -> None:
    from .blueprints import api, docs, google, pages, wellknown
    from .extensions import csrf
    from .services import keys, outbox

    app.register_blueprint(api.bp)
    app.register_blueprint(wellknown.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(google.bp)
    app.register_blueprint(docs.bp)
    # The JSON API authenticates by bearer token (or cookie plus X-CSRF-Token); form CSRF is for the pages.
    csrf.exempt(api.bp)
    csrf.exempt(wellknown.bp)

    @app.before_request
    def _per_process_start():
        # Started on the first request, so each gunicorn worker runs its own sender after the fork.
        outbox.start_sender(app)
        if request.endpoint not in ("wellknown.healthz", "wellknown.readyz", "static"):
            keys.warm()  # before the request's own transaction: see keys.warm
