"""The hot reads on psycopg itself: a SELECT built with SQLAlchemy Core, compiled once, then run by the driver.

The token check, the profile behind /users/me and client authentication run on nearly every request an app or a
gateway makes. Executing a cached Core statement still costs, per call, its cache key, parameter processing, the
cursor's column description and a result object: about as much CPU as the query takes in PostgreSQL. Here the
statement is compiled once per dialect, its parameters passed to the driver as they are, and its rows read as plain
tuples, parameters and columns still converted by their SQLAlchemy types (our UTC timestamps). On SQLite it simply
runs through SQLAlchemy.

A driver error comes out as SQLAlchemy's (OperationalError, ...), so it is answered as any other, and a lost
connection is handled exactly as SQLAlchemy handles one.
"""
from __future__ import annotations

from collections import namedtuple
from typing import Any

from sqlalchemy import exc


class HotSelect:
    """A Core SELECT run straight on psycopg (PostgreSQL), or through SQLAlchemy anywhere else."""

    def __init__(self, statement, execution_options: dict | None = None):
        self.statement, self.options = statement, execution_options or {}
        self.row = namedtuple("Row", [column.key for column in statement.selected_columns])
        # dialect name -> (sql, construct_params, parameter conversions, column conversions), or None
        self._compiled: dict[str, Any] = {}

    def all(self, connection, params: dict) -> list:
        """Every row, as named tuples, of the statement run with `params` on `connection` (a SQLAlchemy one)."""
        compiled = self._compile(connection.dialect)
        if compiled is None:
            return self._through_sqlalchemy(connection, params)
        sql, construct_params, processors, converters = compiled
        values = construct_params(params)
        for name, process in processors:
            values[name] = process(values[name])
        driver = connection.connection.driver_connection
        try:
            with driver.cursor() as cursor:
                rows = cursor.execute(sql, values).fetchall()
        except connection.dialect.loaded_dbapi.Error as error:
            if driver.closed:
                # The connection is lost, and probably its pool's others with it (a server restart). SQLAlchemy,
                # running the statement, finds that out itself and does what it does then: invalidates this
                # connection and every older one in the pool, and raises its OperationalError.
                return self._through_sqlalchemy(connection, params)
            raise exc.DBAPIError.instance(sql, values, error, connection.dialect.loaded_dbapi.Error,
                                          hide_parameters=connection.engine.hide_parameters,
                                          dialect=connection.dialect) from error
        if converters:
            return [self.row(*(value if convert is None else convert(value) for value, convert in
                               zip(row, converters))) for row in rows]
        return [self.row(*row) for row in rows]

    def _through_sqlalchemy(self, connection, params: dict) -> list:
        return [self.row(*row) for row in connection.execute(self.statement, params, execution_options=self.options)]

    def first(self, connection, params: dict):
        """The first row, or None."""
        rows = self.all(connection, params)
        return rows[0] if rows else None

    def _compile(self, dialect):
        if dialect.name in self._compiled:
            return self._compiled[dialect.name]
        compiled = None
        if dialect.name == "postgresql" and dialect.driver == "psycopg":
            built = self.statement.compile(dialect=dialect)
            # Keyed as `construct_params` keys its values: a literal in the statement is an anonymous parameter
            # whose key is not the name it is filed under in `binds`.
            processors = [(built.bind_names[bind], bind.type.dialect_impl(dialect).bind_processor(dialect))
                          for bind in built.binds.values()]
            converters = [column.type.dialect_impl(dialect).result_processor(dialect, None)
                          for column in self.statement.selected_columns]
            compiled = (str(built), built.construct_params, [(n, p) for n, p in processors if p is not None],
                        converters if any(c is not None for c in converters) else None)
        self._compiled[dialect.name] = compiled
        return compiled
