"""Engine set-up that the ORM cannot express: SQLite's pragmas and transaction start."""
from __future__ import annotations

from flask import Flask, has_request_context, request
from sqlalchemy import event

from .extensions import db

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _sqlite_begin_mode(conn) -> str:
    # SQLite lets a transaction that has read upgrade to writing only if nobody wrote since, and fails at once
    # (no busy wait) when someone did. Requests that may write therefore take the write lock when they start
    # (BEGIN IMMEDIATE) and queue behind each other; reads, and key loading, stay deferred and never block.
    options = conn.get_execution_options()
    if options.get("authsvc_immediate"):
        return "BEGIN IMMEDIATE"
    if options.get("authsvc_deferred"):
        return "BEGIN"
    if has_request_context() and request.method in SAFE_METHODS:
        return "BEGIN"
    return "BEGIN IMMEDIATE"


def configure_engine(app: Flask) -> None:
    """Attach the SQLite listeners to the app's engine (PostgreSQL needs none)."""
    with app.app_context():
        engine = db.engine
    if engine.dialect.name != "sqlite":
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
