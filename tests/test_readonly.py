"""Read-only views on PostgreSQL: their queries run outside a transaction on a connection each thread keeps, and a
write among them is refused; idle connections are checked before use, busy ones are not."""
from __future__ import annotations

import os
import threading
import time

import psycopg
import pytest
from flask import has_request_context
from sqlalchemy import event, text

from authsvc import database, readonly
from authsvc.extensions import db

from .conftest import dispose

READ_ONLY = {
    "api.me", "api.forward_auth", "api.introspect", "api.list_sessions", "api.my_identities",
    "api.list_users", "api.get_user", "api.list_clients", "api.audit_events",
}


def test_the_read_only_views_are_these(app):
    marked = {name for name, view in app.view_functions.items() if getattr(view, "read_only", False)}
    assert marked == READ_ONLY


@pytest.fixture
def statements(monkeypatch):
    """(SQL verb, whether the connection was in autocommit) for every statement requests send to PostgreSQL,
    through SQLAlchemy or straight through the driver (hotread.py)."""
    seen = []
    execute = psycopg.Cursor.execute

    def record(cursor, query, *args, **kwargs):
        if has_request_context():  # not the mail sender's thread
            seen.append((str(query).split()[0].upper(), cursor.connection.autocommit))
        return execute(cursor, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", record)
    return seen


@pytest.mark.postgres_only
def test_a_read_only_view_reads_without_a_transaction_and_a_writer_keeps_one(auth, client, statements):
    pair = auth.signed_in()
    statements.clear()
    assert client.get("/api/v1/users/me", headers=auth.bearer(pair)).status_code == 200
    assert statements and all(autocommit for _, autocommit in statements)
    statements.clear()
    assert client.patch("/api/v1/users/me", json={"full_name": "Ada"}, headers=auth.bearer(pair)).status_code == 200
    assert statements and not any(autocommit for _, autocommit in statements)
    assert ("UPDATE", False) in statements
    statements.clear()
    assert client.get("/api/v1/users/me", headers=auth.bearer(pair)).json["full_name"] == "Ada"
    assert statements and all(autocommit for _, autocommit in statements)


@pytest.mark.postgres_only
def test_a_write_from_a_read_only_view_is_refused_and_nothing_is_written(app, auth, client):
    @readonly.read_only
    def sneaky():
        db.session.execute(text("UPDATE users SET full_name = 'changed'"))
        db.session.commit()
        return {"ok": True}

    app.add_url_rule("/api/v1/sneaky", "sneaky", sneaky)  # before the first request, as Flask requires
    pair = auth.signed_in()
    answer = client.get("/api/v1/sneaky")
    assert answer.status_code == 500 and answer.json["error"]["code"] == "internal_error"
    assert client.get("/api/v1/users/me", headers=auth.bearer(pair)).json["full_name"] != "changed"


@pytest.mark.postgres_only
def test_hot_reads_keep_one_connection_across_requests_and_dispose_closes_it(app, auth, client):
    pair = auth.signed_in()
    with app.app_context():
        engine = db.engine
    checkouts, me = [], threading.get_ident()

    def count(*_args):
        if threading.get_ident() == me:  # not the mail sender's thread
            checkouts.append(1)

    event.listen(engine, "checkout", count)
    for _ in range(3):
        assert client.get("/api/v1/users/me", headers=auth.bearer(pair)).status_code == 200
        assert client.get("/api/v1/auth/verify", headers=auth.bearer(pair)).status_code == 200
    event.remove(engine, "checkout", count)
    assert len(checkouts) <= 1  # at most the first read takes one from the pool; then it stays with the thread
    assert _backends(app) >= 1
    dispose(app)
    assert _backends_after_exits(app) == 0


def _backends_after_exits(app, within: float = 3.0) -> int:
    """`_backends`, given closed connections' server processes up to `within` seconds to exit (a backend leaves
    pg_stat_activity a moment after its client hangs up, later on a busy machine)."""
    deadline = time.monotonic() + within
    while (count := _backends(app)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


def _backends(app) -> int:
    """Connections open to the app's database (from anyone but this query)."""
    with app.app_context():
        url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        name = db.engine.url.database
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                            (name,)).fetchone()[0]


def _kill_pooled_connections(app) -> int:
    """Terminate the server side of every connection the app's pool holds; how many were ended."""
    with app.app_context():
        url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        name = db.engine.url.database
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchone()[0]


@pytest.mark.postgres_only
def test_an_idle_connection_lost_is_replaced_before_use(app, auth, client, monkeypatch):
    pair = auth.signed_in()
    assert client.get("/api/v1/users/me", headers=auth.bearer(pair)).status_code == 200
    assert _kill_pooled_connections(app) >= 1
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.0)  # every pooled connection counts as idle
    assert client.get("/api/v1/users/me", headers=auth.bearer(pair)).status_code == 200


@pytest.mark.postgres_only
def test_a_busy_connection_is_not_checked_and_a_lost_one_fails_once(app, auth, client, monkeypatch):
    """The counterpart: without the idle check, the lost connection is found by the request itself (503), and
    the pool starts afresh for the next one."""
    pair = auth.signed_in()
    assert client.get("/api/v1/users/me", headers=auth.bearer(pair)).status_code == 200
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 3600.0)
    assert _kill_pooled_connections(app) >= 1
    answer = client.get("/api/v1/users/me", headers=auth.bearer(pair))
    assert answer.status_code == 503 and answer.json["error"]["code"] == "unavailable"
    assert client.get("/api/v1/users/me", headers=auth.bearer(pair)).status_code == 200


@pytest.mark.postgres_only
def test_a_forked_child_opens_its_own_connections_and_leaves_the_parents_alone(app):
    # gunicorn forks its workers from a master that loaded the app (preload_app).
    backend = text("SELECT pg_backend_pid()")
    with app.app_context():
        with db.engine.connect() as pooled:
            pooled_pid = pooled.scalar(backend)  # returned to the pool: a child would be handed this one
        reader = readonly.thread_connection(db.engine)
        reader_pid = reader.scalar(backend)
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child, which reports through the pipe
            code = 1
            try:
                with db.engine.connect() as mine:
                    pids = {mine.scalar(backend), readonly.thread_connection(db.engine).scalar(backend)}
                code = 0 if not pids & {pooled_pid, reader_pid} else 2
            finally:
                os.write(write, bytes([code]))
                os._exit(0)
        os.close(write)
        os.waitpid(child, 0)
        assert os.read(read, 1) == b"\x00"
        os.close(read)
        # The parent's connections were neither closed nor disturbed by the child.
        assert readonly.thread_connection(db.engine).scalar(backend) == reader_pid
        alive = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
        assert readonly.thread_connection(db.engine).scalar(alive, {"pid": pooled_pid}) == 1
