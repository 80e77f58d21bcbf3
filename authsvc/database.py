"""Engine set-up that the ORM cannot express (SQLite's pragmas and transaction start, PostgreSQL's check of idle
connections) and the schema's migrations. Read-only views: readonly.py."""
from __future__ import annotations

import functools
import re
import time
import weakref

from flask import Flask, current_app, has_request_context, request
from sqlalchemy import event, exc

from .config import PROJECT_ROOT

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A pooled connection unused for this long is checked with a round trip before it is handed out: a server
# restart or an idle timeout may have closed it. One in steady use is not: its next query would find out anyway,
# and a check per request would be a round trip per request (pool_pre_ping).
PING_AFTER_IDLE_SECONDS = 1.0
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"
# The engines of this process's apps, for what a fork must do with their connections (readonly.py).
ENGINES: weakref.WeakSet = weakref.WeakSet()


def migrations(app: Flask):
    """Flask-Migrate's settings for `app` (registered on first use): the CLI and the tests manage the schema
    with them. Serving workers never load Flask-Migrate, nor Alembic with it (11 MB each)."""
    if "migrate" not in app.extensions:
        from flask_migrate import Migrate

        from .extensions import db

        Migrate(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=True, compare_type=True)
    return app.extensions["migrate"]


_REVISION = re.compile(r"^(down_revision|revision)\s*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)


@functools.cache
def migration_head() -> str | None:
    """The newest migration this code ships, read from the revision files (without loading Alembic); None if
    they do not form one line of descent."""
    revisions, parents = set(), set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        found = dict(m.groups() for m in _REVISION.finditer(path.read_text(encoding="utf-8")))
        revisions.add(found.get("revision"))
        parents.add(found.get("down_revision"))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and None not in revisions else None


def locks_rows() -> bool:
    """Whether `SELECT … FOR UPDATE` locks anything: PostgreSQL; SQLite serialises writers anyway (and ignores it)."""
    from .extensions import db

    return db.engine.dialect.name == "postgresql"


def row_lock() -> dict | None:
    """`with_for_update` for a row that other writers must wait for: FOR NO KEY UPDATE (PostgreSQL), None on SQLite."""
    # Not FOR UPDATE: that also waits for every insert referencing the row (a foreign key's check takes FOR KEY
    # SHARE), so a transaction holding the account's row and then voiding its links deadlocked with the mail sender
    # voiding those links and then inserting a new one for the account.
    return {"key_share": True} if locks_rows() else None


def lock_row(instance) -> None:
    """Read `instance` again and lock its row until the transaction ends (PostgreSQL): a change decides from what
    it will overwrite, and one arriving meanwhile waits for this commit."""
    from sqlalchemy import inspect

    from .extensions import db

    if locks_rows():
        # Not session.refresh: it drops changes staged on the instance, and repeats the options it was loaded
        # with (find_by_email's joined roles), and PostgreSQL refuses a row lock across that outer join.
        db.session.get(type(instance), inspect(instance).identity, with_for_update=row_lock(), populate_existing=True)


def dialect_insert(model):
    """`insert(model)` of the engine's dialect, which has `on_conflict_do_nothing` and `on_conflict_do_update`
    (PostgreSQL and SQLite both)."""
    from .extensions import db

    if db.engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model)


def writes(view):
    """Mark a GET view that writes (a mail link, an OAuth callback): on SQLite its transaction takes the write lock
    when it starts, as every POST's does."""
    view.writes = True
    return view


def begin_writing() -> None:
    """For a GET that turns out to write, once it has only read: end what it read (a commit of nothing staged) and
    go on in a transaction holding SQLite's write lock (elsewhere, an ordinary one)."""
    from .extensions import db

    session = db.session()
    session.commit()
    session.connection(execution_options={"authsvc_immediate": True})


def commit_if_staged() -> None:
    """Commit the request's ORM session if it has anything to commit; never create one only to find it empty.

    On PostgreSQL a winning refresh rotation commits itself and never opens the request's session: creating a
    session to check (and closing it at teardown) was 6 % of a refresh's CPU, and committing an empty one runs the
    ORM's commit machinery and events for nothing.
    """
    from .extensions import db

    if db.session.registry.has():
        session = db.session()
        if session.in_transaction() or session.new or session.dirty or session.deleted:
            session.commit()


def view_marked(mark: str) -> bool:
    """Whether the current request's view carries `mark` (set by `writes`, `readonly.read_only`)."""
    return has_request_context() and getattr(current_app.view_functions.get(request.endpoint), mark, False)


def _sqlite_begin_mode(conn) -> str:
    # SQLite lets a transaction that has read upgrade to writing only if nobody wrote since, and fails at once
    # (no busy wait) when someone did. Requests that may write therefore take the write lock when they start
    # (BEGIN IMMEDIATE) and queue behind each other; reads, and key loading, stay deferred and never block.
    options = conn.get_execution_options()
    if options.get("authsvc_immediate"):
        return "BEGIN IMMEDIATE"
    if options.get("authsvc_deferred"):
        return "BEGIN"
    if has_request_context() and request.method in SAFE_METHODS and not view_marked("writes"):
        return "BEGIN"
    return "BEGIN IMMEDIATE"


def configure_engine(app: Flask) -> None:
    """Attach the SQLite listeners, or PostgreSQL's idle-connection check, to the app's engine."""
    from .extensions import db

    with app.app_context():
        engine = db.engine
    ENGINES.add(engine)
    if engine.dialect.name != "sqlite":
        _check_idle_connections(engine)
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event below emit BEGIN itself instead of the driver's implicit one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql(_sqlite_begin_mode(conn))


def _check_idle_connections(engine) -> None:
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection, record, _proxy):
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # noqa: BLE001 - any failure means "do not use this one"
            # The pool drops this connection and hands out a fresh one (or reports the database down).
            raise exc.DisconnectionError(f"idle connection lost: {error.__class__.__name__}") from error
