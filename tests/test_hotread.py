"""Hot reads straight on the driver: the same rows, types and errors as SQLAlchemy gives, without its execution."""
from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import bindparam, event, exc, select

from authsvc.extensions import db
from authsvc.hotread import HotSelect
from authsvc.models import ServiceClient, User
from authsvc.services import clients, users

_users = User.__table__


def _statements_seen_by_sqlalchemy(engine, run):
    seen, me = [], threading.get_ident()

    def record(_conn, _cursor, statement, *_args):
        if threading.get_ident() == me:  # not the mail sender's thread
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        result = run()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return result, seen


def test_rows_are_those_sqlalchemy_reads(app, auth):
    auth.register("one@example.com", full_name="One")
    with app.app_context():
        clients.create("reporting", ["introspect"])
        db.session.commit()
        statements = [
            (users.profile_select().where(_users.c.email == bindparam("email")), {"email": "one@example.com"}),
            (select(ServiceClient.__table__.c.client_id, ServiceClient.__table__.c.scopes), {}),
        ]
        connection = db.session.connection()
        for statement, params in statements:
            hot, seen = _statements_seen_by_sqlalchemy(db.engine, lambda: HotSelect(statement).all(connection,
                                                                                                params))
            expected = [tuple(row) for row in connection.execute(statement, params)]
            assert [tuple(row) for row in hot] == expected and expected
            # On PostgreSQL the driver runs it, SQLAlchemy never sees it; elsewhere SQLAlchemy runs it.
            assert (seen == []) == (db.engine.dialect.name == "postgresql")
        [profile] = HotSelect(statements[0][0]).all(connection, statements[0][1])
        assert profile.created_at.utcoffset().total_seconds() == 0  # our UTC type's conversion was applied
        assert isinstance(profile.id, uuid.UUID) and profile.full_name == "One"


def test_no_row_is_none_and_rows_have_their_column_names(app, auth):
    auth.register("two@example.com")
    with app.app_context():
        by_email = HotSelect(select(_users.c.id, _users.c.email).where(_users.c.email == bindparam("email")))
        connection = db.session.connection()
        assert by_email.first(connection, {"email": "nobody@example.com"}) is None
        assert by_email.first(connection, {"email": "two@example.com"}).email == "two@example.com"


@pytest.mark.postgres_only
def test_a_driver_error_comes_out_as_sqlalchemys(app):
    with app.app_context():
        by_email = HotSelect(select(_users.c.id).where(_users.c.email == bindparam("email")))
        with pytest.raises(exc.DBAPIError) as raised:
            by_email.all(db.session.connection(), {"email": "secret\x00value"})  # PostgreSQL refuses NUL in text
        # Logged failures never carry their parameters (they can be password hashes), here as through SQLAlchemy.
        assert "secret" not in str(raised.value)
        db.session.rollback()
        with pytest.raises(exc.DBAPIError) as raised:
            db.session.execute(select(_users.c.id).where(_users.c.email == "secret\x00value"))
        assert "secret" not in str(raised.value)


@pytest.mark.postgres_only
def test_literal_values_in_the_statement_are_converted_too(app, auth):
    from authsvc.models import utcnow

    auth.register("three@example.com")
    with app.app_context():
        # utcnow() becomes an anonymous parameter of our UTC type, whose conversion must find its value.
        recent = HotSelect(select(_users.c.email).where(_users.c.created_at < utcnow(),
                                                        _users.c.email == bindparam("email")))
        assert recent.first(db.session.connection(), {"email": "three@example.com"}).email == "three@example.com"
