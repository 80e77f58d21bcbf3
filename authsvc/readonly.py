"""Read-only views on PostgreSQL: their queries run outside a transaction, on a connection each thread keeps.

Reads need no transaction there: under READ COMMITTED each statement takes its own snapshot inside a transaction
too, so nothing is lost. What is saved, on the requests every gateway and app makes all the time (/auth/verify,
/users/me, introspection):

* the BEGIN and ROLLBACK round trips around every query, and the re-planning of every query: psycopg forgets its
  prepared statements on every ROLLBACK;
* for the hot reads (`reader()`), the pool checkout and the ORM session set up and torn down per request: each
  thread keeps one autocommit connection across requests.

A write from a read-only view raises instead of committing statement by statement. SQLite keeps its
transactions (database.py decides how they begin).
"""
from __future__ import annotations

import os
import threading
import time
import weakref

from flask_sqlalchemy.session import Session as _FlaskSession
from sqlalchemy import event

from . import database


def read_only(view):
    """Mark a view that only reads: on PostgreSQL its queries run outside a transaction."""
    view.read_only = True
    return view


def read_only_request() -> bool:
    """Whether the current request is served by a `read_only` view."""
    return database.view_marked("read_only")


_autocommit_engines: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _autocommit(engine):
    found = _autocommit_engines.get(engine)
    if found is None:
        found = _autocommit_engines[engine] = engine.execution_options(isolation_level="AUTOCOMMIT")
        event.listen(found, "before_cursor_execute", _refuse_writes)
        event.listen(engine, "engine_disposed", _close_readers)
    return found


# Execution options of a write that is atomic on its own (one statement): allowed on the autocommit connection,
# where it is its own transaction. Refresh rotation is the one such write (services/sessions.py).
ONE_STATEMENT_WRITE = {"authsvc_one_statement_write": True}


def _refuse_writes(_conn, _cursor, statement, _parameters, context, _executemany) -> None:
    # Outside a transaction a write would commit on its own, statement by statement: fail loudly instead.
    if context.execution_options.get("authsvc_one_statement_write"):
        return
    if not statement.lstrip()[:6].upper() == "SELECT":
        raise RuntimeError(f"a read-only view tried to write: {statement[:60]!r}")


class Session(_FlaskSession):
    """Flask-SQLAlchemy's session; in a `read_only` view on PostgreSQL it reads in autocommit mode."""

    def get_bind(self, mapper=None, clause=None, bind=None, **kwargs):
        """The app's engine, or its autocommit variant during a read-only view on PostgreSQL."""
        engine = super().get_bind(mapper, clause, bind, **kwargs)
        if bind is None and engine.dialect.name == "postgresql" and read_only_request():
            return _autocommit(engine)
        return engine


# engine -> {thread id: [connection, last used]}; kept across requests, closed when the engine is disposed.
_readers: dict = {}
_readers_lock = threading.Lock()


def reader():
    """The connection for a hot read: in a read-only view on PostgreSQL, this thread's own autocommit connection
    (no pool checkout, no ORM session); anywhere else, the session's (a writer reads its own transaction)."""
    from .extensions import db

    engine = db.engine
    if engine.dialect.name != "postgresql" or not read_only_request():
        return db.session.connection()
    return thread_connection(engine)


def thread_connection(engine):
    """This thread's own autocommit connection to `engine` (PostgreSQL), kept across requests: checked when it
    has been idle, replaced when SQLAlchemy found it broken (the request that found out got a 503)."""
    mine = _readers.get(engine, {}).get(threading.get_ident())
    now = time.monotonic()
    if mine is not None and not (mine[0].closed or mine[0].invalidated):
        if now - mine[1] < database.PING_AFTER_IDLE_SECONDS or _alive(mine[0]):
            mine[1] = now
            return mine[0]
    if mine is not None:
        _discard(mine[0])
    connection = _autocommit(engine).connect()
    with _readers_lock:
        _readers.setdefault(engine, {})[threading.get_ident()] = [connection, now]
    return connection


def _alive(connection) -> bool:
    # Idle for a while: the server may have gone away (a restart, an idle timeout). One round trip to find out.
    try:
        connection.dialect.do_ping(connection.connection.dbapi_connection)
    except Exception:  # noqa: BLE001 - any failure means "do not use this one"
        return False
    return True


def _discard(connection) -> None:
    try:
        if not (connection.closed or connection.invalidated):
            connection.invalidate()  # closed outright, not handed back to the pool
        connection.close()
    except Exception:  # noqa: BLE001 - closing what is already broken
        pass


def _close_readers(engine) -> None:
    # The pool they came from has just been replaced: close them outright rather than hand them back to it.
    with _readers_lock:
        held = _readers.pop(engine, {})
    for connection, _ in held.values():
        _discard(connection)


# What a forked child inherited: kept referenced, never used nor closed (see _after_fork).
_inherited: list = []


def _after_fork() -> None:
    # gunicorn forks its workers from a master that has loaded the app (preload_app). A connection open in the
    # parent is one socket; used from two processes, their protocol streams would interleave. The child sets its
    # copies aside unused and unclosed: closing one, or letting the pool reset it, would talk to the parent's
    # session (psycopg itself never closes a connection in a process that did not open it). New ones follow.
    global _readers_lock
    _readers_lock = threading.Lock()  # another thread of the parent may have held it at the fork
    _inherited.append(dict(_readers))
    _readers.clear()
    for engine in list(database.ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork)
