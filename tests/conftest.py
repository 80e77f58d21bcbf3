"""Shared fixtures: a fresh app and database per test, on SQLite and on a real PostgreSQL.

Every test that uses `app` runs once per backend (`[sqlite]`, `[postgresql]`); AUTHSVC_TEST_DB=sqlite or
=postgresql narrows that. PostgreSQL is a throwaway server started from the machine's binaries for the session.
Each backend gets a template database migrated to head once; every test copies it, so each starts empty.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass

import jwt
import pytest
from flask_migrate import upgrade

from authsvc import create_app
from authsvc.database import migrations
from authsvc.extensions import db
from authsvc.services import keys
from authsvc.services import outbox as mail_outbox


SELECTED = os.environ.get("AUTHSVC_TEST_DB", "both")
# Every password and token the tests handle; test_zz_log_scan.py checks that none of them reached a log.
SECRETS: set[str] = set()
LOG_RECORDS: list[str] = []


class _SuiteLog(logging.Handler):
    """Keeps every log record of the whole run (formatted, with tracebacks) for the secrets scan."""

    def emit(self, record):
        if getattr(record, "authsvc_dev_mail", False):
            return  # the development mail sink prints links by design (MAIL_SERVER unset), see outbox.py
        LOG_RECORDS.append(self.format(record))


def remember(*values) -> None:
    """Note secrets the suite has seen."""
    SECRETS.update(v for v in values if isinstance(v, str) and len(v) >= 8)
BACKENDS = ["sqlite", "postgresql"] if SELECTED == "both" else [SELECTED]
PASSWORD = "a fine passphrase 7"

# Cheap Argon2 parameters in tests only: production strength would make the suite take minutes.
TEST_SETTINGS = {
    "AUTHSVC_ENV": "testing",
    "TESTING": True,
    "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
    "PUBLIC_BASE_URL": "http://localhost",
    "ARGON2_TIME_COST": 1,
    "ARGON2_MEMORY_COST": 8,
    "ARGON2_PARALLELISM": 1,
    "RATELIMIT_ENABLED": False,
    "COOKIE_SECURE": False,
}


def signed_with_our_key(app, pair: dict, **changes) -> str:
    """The claims of `pair`'s access token with `changes` (None drops a claim), signed with the service's own
    active key: a token only the service could have made, with whatever claims a test needs."""
    claims = {**jwt.decode(pair["access_token"], options={"verify_signature": False}), **changes}
    with app.app_context():
        ring = keys.ring()
        return jwt.encode({k: v for k, v in claims.items() if v is not None}, ring.active_private,
                          algorithm="RS256", headers={"kid": ring.active_kid})


def make_app(database_url: str, instance_path, **overrides):
    """An app on `database_url` with the test settings and `overrides`."""
    return create_app({**TEST_SETTINGS, "DATABASE_URL": database_url, "INSTANCE_PATH": str(instance_path),
                       **overrides})


def dispose(app) -> None:
    """Stop the app's mail sender and close its pooled connections (so its database can be dropped)."""
    mail_outbox.stop_sender(app)
    with app.app_context():
        db.engine.dispose()


def _migrate_template(url: str, instance_path) -> None:
    app = make_app(url, instance_path)
    with app.app_context():
        upgrade(directory=migrations(app).directory)
        keys.ring()  # the first signing key goes into the template, so tests do not each generate one
    dispose(app)


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server for the whole session, stopped at the end."""
    from .pgserver import PostgresServer, find_pg_bin

    if find_pg_bin() is None:
        pytest.fail("PostgreSQL binaries not found (install postgresql, or run with AUTHSVC_TEST_DB=sqlite)")
    # A RAM-backed data directory where there is one: creating a database per test is ~10x faster there.
    ram = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    server = PostgresServer(tempfile.mkdtemp(prefix="authsvc-pg-", dir=ram))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_template(pg_server, tmp_path_factory) -> str:
    """Name of a PostgreSQL database migrated to head, used as the template of each test's database."""
    pg_server.create_database("authsvc_template")
    _migrate_template(pg_server.url("authsvc_template"), tmp_path_factory.mktemp("pg-template"))
    return "authsvc_template"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    """Path of a SQLite file migrated to head, copied for each test."""
    folder = tmp_path_factory.mktemp("sqlite-template")
    path = folder / "template.db"
    _migrate_template(f"sqlite:///{path}", folder)
    return path


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    """A fresh, migrated database for one test."""
    if request.param == "sqlite":
        path = tmp_path / "test.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    server = request.getfixturevalue("pg_server")
    template = request.getfixturevalue("pg_template")
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = server.create_database(name, template=template)
    yield url
    server.drop_database(name)


@pytest.fixture
def backend(database_url) -> str:
    """'sqlite' or 'postgresql': the backend of this test's database."""
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


@pytest.fixture(scope="session")
def smtp_server():
    """A real SMTP server on 127.0.0.1 for the whole session; every test app sends its mail there."""
    from .smtpserver import SMTPServer

    server = SMTPServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def outbox(smtp_server):
    """The messages the SMTP server received during this test."""
    smtp_server.clear()
    return smtp_server


@pytest.fixture
def app(request, database_url, tmp_path, smtp_server):
    """The app for one test; `@pytest.mark.settings(NAME=value)` overrides settings."""
    marker = request.node.get_closest_marker("settings")
    overrides = marker.kwargs if marker else {}
    smtp_server.clear()
    mail = {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": smtp_server.port, "MAIL_POLL_SECONDS": 0.1,
            "MAIL_RETRY_BASE_SECONDS": 0.2, "MAIL_RETRY_MAX_SECONDS": 1, "MAIL_TIMEOUT": 5}
    application = make_app(database_url, tmp_path / "instance", **{**mail, **overrides})
    yield application
    dispose(application)


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium for the whole session."""
    from .browser import CHROMIUM, launch_browser, stop_browser

    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium not found (scripts/test installs Debian's chromium package)")
    playwright, instance = launch_browser()
    yield instance
    stop_browser(playwright, instance)


def _live_server(database_url, tmp_path, smtp_server, https: bool):
    from .liveserver import LiveServer, free_port

    port = free_port()
    smtp_server.clear()
    application = make_app(
        database_url, tmp_path / "instance", PUBLIC_BASE_URL=f"{'https' if https else 'http'}://127.0.0.1:{port}",
        MAIL_SERVER="127.0.0.1", MAIL_PORT=smtp_server.port, MAIL_POLL_SECONDS=0.1,
    )
    server = LiveServer(application, port, https=https)
    server.start()
    yield server
    server.stop()
    dispose(application)


@pytest.fixture
def live_server(database_url, tmp_path, smtp_server):
    """The app served over HTTP on 127.0.0.1, its PUBLIC_BASE_URL its own address (mail links lead back to it)."""
    yield from _live_server(database_url, tmp_path, smtp_server, https=False)


@pytest.fixture
def https_live_server(database_url, tmp_path, smtp_server):
    """The same over HTTPS (a self-signed certificate): CSRF checks the Referer only there."""
    yield from _live_server(database_url, tmp_path, smtp_server, https=True)


@pytest.fixture
def client(app):
    """A test client of the app."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """A CLI runner of the app's commands."""
    return app.test_cli_runner()


@dataclass
class Auth:
    """Helpers to create accounts and sign in through the API."""

    client: object

    def register(self, email="user@example.com", password=PASSWORD, **extra):
        """Register an account; return the response."""
        remember(password)
        return self.client.post("/api/v1/auth/register", json={"email": email, "password": password, **extra})

    def login(self, email="user@example.com", password=PASSWORD, **kwargs):
        """Sign in; return the response."""
        return self.client.post("/api/v1/auth/login", json={"email": email, "password": password}, **kwargs)

    def signed_in(self, email="user@example.com", password=PASSWORD) -> dict:
        """Register (if needed) and sign in; return the token pair."""
        self.register(email, password)
        response = self.login(email, password)
        assert response.status_code == 200, response.json
        remember(response.json["access_token"], response.json["refresh_token"])
        return response.json

    @staticmethod
    def bearer(pair_or_token) -> dict:
        """Authorization header for a token pair or an access token."""
        token = pair_or_token["access_token"] if isinstance(pair_or_token, dict) else pair_or_token
        return {"Authorization": f"Bearer {token}"}

    def refresh(self, refresh_token: str):
        """Rotate a refresh token; return the response."""
        response = self.client.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token})
        if response.status_code == 200:
            remember(response.json["access_token"], response.json["refresh_token"])
        return response


@pytest.fixture
def auth(client) -> Auth:
    """Account and sign-in helpers bound to `client`."""
    return Auth(client)


@pytest.fixture
def admin(app, auth) -> dict:
    """Authorization headers of a signed-in admin (admin@example.com), made with `authsvc create-admin`."""
    result = app.test_cli_runner().invoke(args=["create-admin", "admin@example.com", "--password-stdin"],
                                          input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    return auth.bearer(auth.login("admin@example.com").json)


def pytest_configure(config):
    """Register the markers this suite uses, and capture every log record of the run."""
    handler = _SuiteLog(level=logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    config.addinivalue_line("markers", "sqlite_only: run on the SQLite backend only")


def pytest_collection_modifyitems(config, items):
    """Deselect the backend variants a test's marker rules out (rather than reporting them as skipped)."""
    keep, drop = [], []
    for item in items:
        backend = item.callspec.params.get("database_url") if hasattr(item, "callspec") else None
        ruled_out = (backend == "postgresql" and item.get_closest_marker("sqlite_only")) or (
            backend == "sqlite" and item.get_closest_marker("postgres_only"))
        (drop if ruled_out else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def oidc_provider():
    """A real OpenID provider on 127.0.0.1 (tests/oidc) standing in for Google, for the whole session."""
    from .oidcserver import OIDCProvider

    provider = OIDCProvider()
    provider.start()
    yield provider
    provider.stop()
