"""A Core statement compiled once and run on a pooled connection's driver (psycopg).

Why: every job runs two statements, its claim and its finish. Through a SQLAlchemy
`Connection` each cost about 95 µs of CPU more than psycopg's own execute (the
execution context, result metadata built from the cursor's description, row
processing): claim + finish 580 µs per job against 205 on the driver (measured on
PostgreSQL, autocommit, the same compiled SQL), some 7 % of a job's CPU in a worker that
carries a thousand of them. This runs the same SQL, with the same bind and result
processing, taken from the column types, on the driver's connection, and raises what
SQLAlchemy would have raised (`DBAPIError.instance`), so the callers' error handling
(waiting out an unreachable database, a refused row) is unchanged.

Only for PostgreSQL through psycopg, and only when nothing listens to the engine's
statements (tracing instruments the engine): `usable` says when.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa


def usable(engine: sa.Engine, traced: bool) -> bool:
    return engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg" and not traced


class Row(dict[str, Any]):
    """A result row: by name, as an attribute or a key (as SQLAlchemy's rows read)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class DirectStatement:
    """`first(params)`: the statement's first returned row, in autocommit."""

    def __init__(self, engine: sa.Engine, statement: sa.UpdateBase) -> None:
        self.engine = engine
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        self._compiled = compiled
        self.sql = compiled.string
        self._bind: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                self._bind[name] = process
        self._returned = list(statement.exported_columns)
        self._names = [str(column.key) for column in self._returned]
        # Built at the first execution: some need the server's type of the column.
        self._results: list[tuple[int, Callable[[Any], Any]]] | None = None

    def first(self, params: Mapping[str, Any]) -> Row | None:
        values = dict(self._compiled.construct_params(dict(params)))
        for name, process in self._bind.items():
            values[name] = process(values[name])
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        try:
            fairy = self.engine.raw_connection()
        except dbapi_error as exc:  # no connection to be had
            raise self._wrapped(exc, None, None, None, values) from exc
        raw: Any = fairy.driver_connection
        cursor = None
        try:
            raw.autocommit = True
            cursor = raw.cursor()
            cursor.execute(self.sql, values)
            found = cursor.fetchone()
            if self._results is None:
                self._results = self._result_processors(cursor.description)
        except dbapi_error as exc:
            raise self._wrapped(exc, fairy, raw, cursor, values) from exc
        finally:
            if cursor is not None:
                cursor.close()
            self._check_in(fairy, raw)
        if found is None:
            return None
        row = list(found)
        for index, process in self._results or ():
            row[index] = process(row[index])
        return Row(zip(self._names, row, strict=True))

    def _check_in(self, fairy: Any, raw: Any) -> None:
        """Back to the pool as it was lent (not in autocommit); a connection that cannot
        be put back so is dropped."""
        try:
            if not raw.closed:
                raw.autocommit = False
        except self.engine.dialect.loaded_dbapi.Error as exc:
            fairy.invalidate(exc)
        fairy.close()

    def _result_processors(self, description: Any) -> list[tuple[int, Callable[[Any], Any]]]:
        dialect = self.engine.dialect
        processors: list[tuple[int, Callable[[Any], Any]]] = []
        for index, column in enumerate(self._returned):
            type_code = description[index][1]
            process = column.type.dialect_impl(dialect).result_processor(dialect, type_code)
            if process is not None:
                processors.append((index, process))
        return processors

    def _wrapped(
        self, exc: Any, fairy: Any, raw: Any, cursor: Any, values: dict[str, Any]
    ) -> sa.exc.StatementError:
        """What SQLAlchemy raises for `exc`; a lost connection leaves the pool."""
        dialect = self.engine.dialect
        lost = fairy is not None and dialect.is_disconnect(exc, raw, cursor)
        if lost:
            fairy.invalidate(exc)
        wrapped: sa.exc.StatementError = sa.exc.DBAPIError.instance(
            self.sql, values, exc, dialect.loaded_dbapi.Error, connection_invalidated=lost
        )
        return wrapped


__all__ = ["DirectStatement", "Row", "usable"]
