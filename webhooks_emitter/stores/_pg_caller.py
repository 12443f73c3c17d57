"""Writes through a caller's database connection: ``emit(..., connection=conn)``.

Private to :mod:`webhooks_emitter.stores.postgres`. The event is written inside the caller's
open transaction, in a savepoint, so that a failure rolls back to the savepoint and leaves
that transaction usable; the store's timeout is not applied to it. A connection in
autocommit mode outside a transaction gets a transaction of its own instead.

Round trips, the cost that matters here (the write itself is one index insert):

psycopg 3
    One: ``SAVEPOINT``, the insert and ``RELEASE`` go out together in pipeline mode, the
    insert as a prepared statement of the connection (planned once per session), unless the
    caller turned preparing off (``prepare_threshold=None``, for PgBouncer's transaction
    mode).
psycopg2, and SQLAlchemy over either driver
    Two: ``SAVEPOINT`` and the insert in one string (the simple query protocol answers the
    last statement's rows), then ``RELEASE``. Through SQLAlchemy the statements go to its
    DBAPI connection (the driver's own), inside the transaction SQLAlchemy began, so the
    caller's ``commit()`` or ``rollback()`` decides.

The kind of connection is told by the module of its class, so that no driver is imported
unless the object comes from it.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Optional

from ._pg_pool import from_module

Row = tuple[Any, ...]
#: run(sql, params): one statement on the caller's connection; the first row, if any.
Runner = Callable[[str, Optional[dict[str, Any]]], Optional[Row]]
#: write(begin, sql, params, done): the three statements of a write, in as few round trips
#: as the driver allows; answers the row of ``sql``.
Writer = Callable[[str, str, dict[str, Any], str], Optional[Row]]

SAVEPOINT = "webhooks_emitter_append"


def is_driver_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a database driver (or SQLAlchemy wrapping one)."""
    return from_module(exc, "psycopg", "psycopg2", "sqlalchemy")


def write_through(connection: Any, sql: str, params: dict[str, Any]) -> Optional[Row]:
    """Run ``sql`` (one statement answering one row) inside the caller's transaction, in a
    savepoint; on failure, roll back to the savepoint and raise the driver's error.

    Raises:
        TypeError: ``connection`` is of no supported kind.
        ValueError: it is closed, or not a PostgreSQL connection.
    """
    write, run, in_transaction = _runner(connection)
    begin, done, undo = (
        (f"SAVEPOINT {SAVEPOINT}", f"RELEASE SAVEPOINT {SAVEPOINT}",
         f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
        if in_transaction
        else ("BEGIN", "COMMIT", "ROLLBACK")
    )
    try:
        return write(begin, sql, params, done)
    except Exception:
        try:
            run(undo, None)
            if in_transaction:
                run(done, None)
        except Exception:  # noqa: BLE001 - the first error is the one to report
            pass
        raise


def _one_at_a_time(run: Runner) -> Writer:
    def write(begin: str, sql: str, params: dict[str, Any], done: str) -> Optional[Row]:
        run(begin, None)
        row = run(sql, params)
        run(done, None)
        return row

    return write


def _runner(connection: Any) -> tuple[Writer, Runner, bool]:
    """How to write through a caller's connection and run one statement on it, and whether
    it is in a transaction (else it is in autocommit mode, outside one: the write gets a
    transaction of its own)."""
    if from_module(connection, "sqlalchemy"):
        return _sqlalchemy_runner(connection)
    if from_module(connection, "psycopg2"):
        return _psycopg2_runner(connection)
    if from_module(connection, "psycopg"):
        return _psycopg_runner(connection)
    raise TypeError(
        "connection= takes a psycopg 3 or psycopg2 connection, or a SQLAlchemy Connection "
        f"or Session, not {type(connection).__module__}.{type(connection).__name__}"
    )


def _psycopg_runner(connection: Any) -> tuple[Writer, Runner, bool]:
    import psycopg
    from psycopg.rows import tuple_row

    if not isinstance(connection, psycopg.Connection):
        raise TypeError(
            f"connection= takes a psycopg (3) Connection, not {type(connection).__name__}"
            " (an AsyncConnection cannot be used from emit)"
        )
    if connection.closed:
        raise ValueError("connection= is closed")
    idle = connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    # Prepared (planned once per session) unless the caller turned preparing off.
    prepare = None if connection.prepare_threshold is None else True

    def run(sql: str, params: Optional[dict[str, Any]]) -> Optional[Row]:
        # A plain cursor whatever the connection's cursor_factory and row_factory.
        with psycopg.Cursor(connection, row_factory=tuple_row) as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone() if cursor.description else None

    def pipelined(begin: str, sql: str, params: dict[str, Any], done: str) -> Optional[Row]:
        # One round trip: the three statements go out together. If the write fails, the
        # rest of the pipeline is skipped and the error raised when it syncs.
        with psycopg.Cursor(connection, row_factory=tuple_row) as cursor:
            with connection.pipeline():
                connection.execute(begin)
                cursor.execute(sql, params, prepare=prepare)
                connection.execute(done)
            return cursor.fetchone()

    write = pipelined if psycopg.Pipeline.is_supported() else _one_at_a_time(run)
    return write, run, not (connection.autocommit and idle)


def _psycopg2_runner(connection: Any) -> tuple[Writer, Runner, bool]:
    extensions = importlib.import_module("psycopg2.extensions")
    if not isinstance(connection, extensions.connection):
        raise TypeError(
            f"connection= takes a psycopg2 connection, not {type(connection).__name__}"
        )
    if connection.closed:
        raise ValueError("connection= is closed")
    idle = connection.get_transaction_status() == extensions.TRANSACTION_STATUS_IDLE
    plain_cursor = extensions.cursor

    def run(sql: str, params: Optional[dict[str, Any]]) -> Optional[Row]:
        with connection.cursor(cursor_factory=plain_cursor) as cursor:
            cursor.execute(sql, params)
            return tuple(cursor.fetchone()) if cursor.description else None

    def write(begin: str, sql: str, params: dict[str, Any], done: str) -> Optional[Row]:
        # psycopg2 sends one string (simple query protocol): the savepoint and the write in
        # one round trip, answering the last statement's row.
        row = run(f"{begin}; {sql}", params)
        run(done, None)
        return row

    return write, run, not (connection.autocommit and idle)


def _sqlalchemy_runner(connection: Any) -> tuple[Writer, Runner, bool]:
    # Imported by name: SQLAlchemy is the caller's dependency, not this library's.
    orm = importlib.import_module("sqlalchemy.orm")
    engine = importlib.import_module("sqlalchemy.engine")
    if isinstance(connection, orm.scoped_session):
        connection = connection()
    if isinstance(connection, orm.Session):
        # The connection of the session's transaction (begun if need be); no flush.
        connection = connection.connection()
    if not isinstance(connection, engine.Connection):
        raise TypeError(
            "connection= takes a SQLAlchemy Connection or Session, not "
            f"{type(connection).__name__} (async ones cannot be used from emit)"
        )
    if connection.dialect.name != "postgresql":
        raise ValueError(
            f"connection= is a {connection.dialect.name} connection; PostgresStore needs "
            "one to its PostgreSQL database"
        )
    # SQLAlchemy begins its transaction lazily: make sure it has one, then write through
    # its DBAPI connection (the driver's, in that transaction), as the driver allows.
    if not connection.in_transaction():
        connection.begin()
    dbapi = connection.connection.dbapi_connection
    if from_module(dbapi, "psycopg2"):
        return _psycopg2_runner(dbapi)
    if from_module(dbapi, "psycopg"):
        return _psycopg_runner(dbapi)

    def run(sql: str, params: Optional[dict[str, Any]]) -> Optional[Row]:
        result = connection.exec_driver_sql(sql, params) if params else (
            connection.exec_driver_sql(sql)
        )
        row = result.fetchone() if result.returns_rows else None
        return None if row is None else tuple(row)

    return _one_at_a_time(run), run, True
