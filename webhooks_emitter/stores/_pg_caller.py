"""Writes through a caller's database connection: ``emit(..., connection=conn)``.

Private to :mod:`webhooks_emitter.stores.postgres`. The event is written inside the caller's
open transaction, in a savepoint, so that a failure rolls back to the savepoint and leaves
that transaction usable; the store's timeout is not applied to it. A connection in
autocommit mode outside a transaction gets a transaction of its own instead.

Cost. An application's own outbox row costs one INSERT, one round trip; an emit should cost
about the same. So the savepoint, the insert, the notification and the release go to the
server as ONE simple-protocol string (``SAVEPOINT s; EXECUTE ...; NOTIFY ...; RELEASE
SAVEPOINT s``), which psycopg 3 (its ``ClientCursor``), psycopg2 and SQLAlchemy's DBAPI
connection all send in one message: one round trip. The insert is a server-side prepared
statement of the caller's session (``PREPARE``, sent once per session in the same string
as its first use), so it is neither parsed nor planned again; prepared statements outlive
rollbacks, and one that a pooler's ``DISCARD ALL`` dropped is prepared again (the call
is tried once more). Extended-protocol pipelining (psycopg 3's pipeline mode) was measured
slower here: five waits on the socket per emit against one.

A write that must answer rows (the room check, several targets) costs two round trips: the
simple protocol answers only the last statement's rows with psycopg2, so the release goes
separately. The store uses it when a queue may be near full (see ``PostgresStore.append``).

The kind of connection is told by the module of its class, so that no driver is imported
unless the object comes from it.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import re
import threading
from typing import Any, Callable, Optional

from ._pg_pool import from_module

Row = tuple[Any, ...]
#: run(sql, params, rows): one simple-protocol string; with ``rows``, the last statement's
#: rows (None if it answers none).
Runner = Callable[[str, Optional[dict[str, Any]], bool], Optional[list[Row]]]

SAVEPOINT = "webhooks_emitter_append"
#: SQLSTATE of "prepared statement does not exist" (a pooler's DISCARD ALL, DEALLOCATE).
_NO_SUCH_STATEMENT = "26000"
#: SQLSTATE of "prepared statement already exists" (prepared by a call that then failed).
_ALREADY_PREPARED = "42P05"
#: Sessions remembered as having the store's statements prepared; beyond, forgotten.
_MAX_SESSIONS = 1000

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def is_driver_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a database driver (or SQLAlchemy wrapping one)."""
    return from_module(exc, "psycopg", "psycopg2", "sqlalchemy")


class Statement:
    """One query as a prepared statement of callers' sessions."""

    def __init__(self, schema: str, kind: str, sql: str) -> None:
        names: list[str] = []

        def position(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        body = _PLACEHOLDER.sub(position, sql)
        # Named after the schema and the text: another schema, or another release's text,
        # is another statement.
        digest = hashlib.sha256(f"{schema}\0{body}".encode()).hexdigest()[:16]
        self.name = f"webhooks_emitter_{kind}_{digest}"
        self.prepare = f"PREPARE {self.name} AS {body}"
        self.names = names
        self.execute = self.call("")

    def call(self, prefix: str) -> str:
        """``EXECUTE`` of the statement, its arguments named ``prefix`` + their name."""
        arguments = ", ".join(f"%({prefix}{name})s" for name in self.names)
        return f"EXECUTE {self.name}({arguments})"


class CallerWriter:
    """Writes one store's events through callers' connections (see the module docstring).

    Args:
        schema: the store's schema (names its prepared statements).
        queries: the store's named queries (``%(name)s`` placeholders, types cast).
        channel: the notification channel.
    """

    def __init__(self, schema: str, queries: dict[str, str], channel: str) -> None:
        self._schema = schema
        self._queries = queries
        self._notify = f'NOTIFY "{channel}"'
        self._statements: dict[str, Statement] = {}
        self._lock = threading.Lock()
        self._sessions: dict[tuple[int, int], set[str]] = {}

    def write(self, connection: Any, kind: str, params: dict[str, Any],
              rows: bool) -> Optional[list[Row]]:
        """Run query ``kind`` with ``params`` in the caller's transaction, in a savepoint,
        and notify the store's channel (delivered at the caller's commit).

        ``rows``: answer the query's rows (two round trips); else one round trip, None.
        On failure the savepoint is rolled back and the driver's error raised.

        Raises:
            TypeError: ``connection`` is of no supported kind.
            ValueError: it is closed, or not a PostgreSQL connection.
        """
        run, in_transaction, session = _runner(connection)
        statement = self.statement(kind)
        begin, done, undo = (
            (f"SAVEPOINT {SAVEPOINT}", f"RELEASE SAVEPOINT {SAVEPOINT}",
             f"ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}")
            if in_transaction
            else ("BEGIN", "COMMIT", "ROLLBACK")
        )
        for attempt in (1, 2, 3):
            prepared = self._prepared(session, statement.name)
            head = [begin] if prepared else [begin, statement.prepare]
            try:
                if rows:
                    found = run("; ".join([*head, statement.execute]), params, True)
                    run(f"{self._notify}; {done}", None, False)
                else:
                    run("; ".join([*head, statement.execute, self._notify, done]), params,
                        False)
                    found = None
            except Exception as exc:
                try:
                    run(undo, None, False)
                except Exception:  # noqa: BLE001 - the first error is the one to report
                    pass
                state = _sqlstate(exc)
                if state == _NO_SUCH_STATEMENT and attempt < 3:
                    self._forget(session, statement.name)  # dropped: prepared again
                    continue
                if state == _ALREADY_PREPARED and attempt < 3:
                    self._remember(session, statement.name)  # an earlier call's
                    continue
                raise
            if not prepared:
                self._remember(session, statement.name)
            return (found or []) if rows else None
        raise AssertionError("unreachable")  # pragma: no cover

    def statement(self, kind: str) -> Statement:
        """Query ``kind`` as a prepared statement (made once per store)."""
        statement = self._statements.get(kind)
        if statement is None:
            statement = Statement(self._schema, kind, self._queries[kind])
            self._statements[kind] = statement
        return statement

    def _prepared(self, session: tuple[int, int], name: str) -> bool:
        with self._lock:
            return name in self._sessions.get(session, ())

    def _remember(self, session: tuple[int, int], name: str) -> None:
        with self._lock:
            if len(self._sessions) >= _MAX_SESSIONS and session not in self._sessions:
                self._sessions.clear()  # closed connections' entries, mostly
            self._sessions.setdefault(session, set()).add(name)

    def _forget(self, session: tuple[int, int], name: str) -> None:
        with self._lock:
            self._sessions.get(session, set()).discard(name)


def _sqlstate(exc: BaseException) -> Optional[str]:
    return getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)


#: The driver of each connection class seen (its module, told once per class).
_KINDS: dict[type, str] = {}


def _kind(connection: Any) -> str:
    cls = type(connection)
    known = _KINDS.get(cls)
    if known is None:
        known = next((kind for kind in ("sqlalchemy", "psycopg2", "psycopg")
                      if from_module(connection, kind)), "")
        _KINDS[cls] = known
    return known


def _runner(connection: Any) -> tuple[Runner, bool, tuple[int, int]]:
    """How to run a simple-protocol string on a caller's connection, whether it is in a
    transaction (else it is in autocommit mode, outside one: the write gets a transaction
    of its own), and the session's key (the object and its server process)."""
    kind = _kind(connection)
    if kind == "psycopg":
        return _psycopg_runner(connection)
    if kind == "psycopg2":
        return _psycopg2_runner(connection)
    if kind == "sqlalchemy":
        return _runner(_sqlalchemy_dbapi(connection))
    raise TypeError(
        "connection= takes a psycopg 3 or psycopg2 connection, or a SQLAlchemy Connection "
        f"or Session, not {type(connection).__module__}.{type(connection).__name__}"
    )


#: psycopg's names this module uses, loaded at the first psycopg connection.
_PSYCOPG: dict[str, Any] = {}


def _psycopg_names() -> dict[str, Any]:
    if not _PSYCOPG:
        import psycopg  # imported already: a connection of psycopg's was given
        from psycopg.rows import tuple_row

        _PSYCOPG.update(
            Connection=psycopg.Connection,
            ClientCursor=psycopg.ClientCursor,
            Cursor=psycopg.Cursor,
            Escaping=psycopg.pq.Escaping,
            tuple_row=tuple_row,
            IDLE=psycopg.pq.TransactionStatus.IDLE,
        )
    return _PSYCOPG


def _with_literals(sql: str, params: dict[str, Any], pgconn: Any,
                   connection: Any) -> Optional[str]:
    """``sql`` with each ``%(name)s`` replaced by its value as a literal; None when a
    value is of a kind written otherwise (an array).

    Text without a quote, a backslash or a NUL is written between quotes as it is, and
    bytes in bytea's hex form, while the server has ``standard_conforming_strings`` on
    (the default since 9.1): neither can then mean anything but itself. Anything else goes
    through libpq's escaping for this connection.
    """
    plain = pgconn.parameter_status(b"standard_conforming_strings") == b"on"
    escaping = None
    literals: dict[str, str] = {}
    for name, value in params.items():
        kind = type(value)
        if value is None:
            literals[name] = "NULL"
        elif kind is str:
            if plain and "'" not in value and "\\" not in value and "\0" not in value:
                literals[name] = f"'{value}'"
            else:
                escaping = escaping or _psycopg_names()["Escaping"](pgconn)
                encoding = connection.info.encoding
                literals[name] = escaping.escape_literal(value.encode(encoding)).decode(
                    encoding)
        elif kind is bytes and plain:
            literals[name] = f"'\\x{value.hex()}'::bytea"
        elif kind is bool:
            literals[name] = "true" if value else "false"
        elif kind is int:
            literals[name] = str(value)
        elif kind is float:
            # repr() is exact and round-trips; inf and nan are quoted, as PostgreSQL
            # spells them.
            literals[name] = repr(value) if math.isfinite(value) else f"'{value}'::float8"
        elif isinstance(value, (bytes, bytearray, memoryview)):
            escaping = escaping or _psycopg_names()["Escaping"](pgconn)
            escaped = escaping.escape_bytea(bytes(value)).decode("ascii")
            literals[name] = f"'{escaped}'::bytea"
        else:
            return None
    return _PLACEHOLDER.sub(lambda match: literals[match.group(1)], sql)


def _psycopg_runner(connection: Any) -> tuple[Runner, bool, tuple[int, int]]:
    names = _psycopg_names()
    if not isinstance(connection, names["Connection"]):
        raise TypeError(
            f"connection= takes a psycopg (3) Connection, not {type(connection).__name__}"
            " (an AsyncConnection cannot be used from emit)"
        )
    if connection.closed:
        raise ValueError("connection= is closed")
    pgconn = connection.pgconn
    idle = pgconn.transaction_status == names["IDLE"]
    client_cursor, cursor_class = names["ClientCursor"], names["Cursor"]
    tuple_row = names["tuple_row"]

    def run(sql: str, params: Optional[dict[str, Any]], rows: bool) -> Optional[list[Row]]:
        # Client-side binding: the simple protocol, which takes several statements in one
        # message. The values are written as literals by _with_literals (psycopg's
        # adapters cost a quarter of an emit, measured), except arrays, which psycopg's
        # ClientCursor writes. A plain cursor whatever the connection's factories;
        # without parameters psycopg sends the simple protocol.
        text = sql if params is None else _with_literals(sql, params, pgconn, connection)
        factory = client_cursor if text is None else cursor_class
        with factory(connection, row_factory=tuple_row) as cursor:
            if text is None:
                cursor.execute(sql, params)
            else:
                cursor.execute(text)
            if not rows:
                return None
            found = None
            while True:  # the last statement's rows, as psycopg2 answers
                if cursor.description is not None:
                    found = cursor.fetchall()
                if not cursor.nextset():
                    return found

    key = (id(connection), pgconn.backend_pid)
    return run, not (connection.autocommit and idle), key


def _psycopg2_runner(connection: Any) -> tuple[Runner, bool, tuple[int, int]]:
    extensions = importlib.import_module("psycopg2.extensions")
    if not isinstance(connection, extensions.connection):
        raise TypeError(
            f"connection= takes a psycopg2 connection, not {type(connection).__name__}"
        )
    if connection.closed:
        raise ValueError("connection= is closed")
    idle = connection.get_transaction_status() == extensions.TRANSACTION_STATUS_IDLE
    plain_cursor = extensions.cursor

    def run(sql: str, params: Optional[dict[str, Any]], rows: bool) -> Optional[list[Row]]:
        # psycopg2 binds on the client and sends one string; it answers the last
        # statement's rows.
        with connection.cursor(cursor_factory=plain_cursor) as cursor:
            cursor.execute(sql, params)
            if not rows or cursor.description is None:
                return None
            return [tuple(row) for row in cursor.fetchall()]

    key = (id(connection), connection.get_backend_pid())
    return run, not (connection.autocommit and idle), key


def _sqlalchemy_dbapi(connection: Any) -> Any:
    """The DBAPI connection (the driver's own) under a SQLAlchemy Connection or Session,
    in the transaction SQLAlchemy began (begun if need be), so that the caller's
    ``commit()`` or ``rollback()`` decides."""
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
    if not connection.in_transaction():
        connection.begin()
    dbapi = connection.connection.dbapi_connection
    if not from_module(dbapi, "psycopg", "psycopg2"):
        raise TypeError(
            "connection= is a SQLAlchemy connection whose driver is "
            f"{type(dbapi).__module__}; PostgresStore writes through psycopg (3) or psycopg2"
        )
    return dbapi
