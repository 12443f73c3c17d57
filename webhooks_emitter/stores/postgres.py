"""The PostgreSQL store: events in a database, delivered from any number of hosts.

Design
------

Tables (schema ``schema``, SQL in ``sql/postgres_*.sql``): ``events`` (one row per event
and emitter: queued, or failed when given up; delivered rows are deleted), ``emitters``
(one row per emitter id: paused, hold, last try, first failure, next due, and its lease),
``schema_version``. No secret is ever stored.

Schema
    Created on first use (``open``, or the first call) in one transaction under
    ``pg_advisory_xact_lock``, so processes starting at once on a fresh database queue up and
    all but the first find it done. An older schema is upgraded the same way; a newer one
    that this library cannot use (its ``compatible_from`` is above :data:`SCHEMA_VERSION`)
    is refused. ``create=False`` never runs DDL: a missing or old schema is a
    :class:`StoreError` telling to run ``webhooks-emitter migrate``.

Connections
    A small pool of the store's own connections (``pool_size``), in autocommit mode: every
    call is one SQL statement, hence one round trip and atomic. Each connection has
    ``statement_timeout`` and ``lock_timeout`` set to ``timeout``; the wait for a free
    connection and the connect are bounded by it too. A connection is checked before use
    without a round trip (a socket with something to read while idle was closed by the
    server: a restart, an idle timeout) and replaced. A read, or a write that can be
    repeated, whose connection breaks is tried once more on a fresh one; ``append`` is not,
    since its commit may have happened: the caller gets a :class:`StoreError` (at least
    once: the event may be stored). Nothing is lost: each event is committed before
    ``append`` returns.

Emit
    ``append`` calls the SQL function ``append_event`` (in the schema): for each target with
    room it inserts the event, then ``pg_notify``. PL/pgSQL keeps the plans of its
    statements for the session, so drivers that never prepare (psycopg2) do not plan at
    each emit. The room check (``max_queue_size``) locks nothing, so no emit waits for
    another transaction; two emits racing for an emitter's last place may both get it. It
    costs two index probes while a queue is surely short (its ``seq`` range is below
    ``max_queue_size``) and a count of at most ``max_queue_size`` index entries when it may
    be full.

Transactional emit (``append(..., connection=conn)``)
    The event is written through the caller's connection (psycopg 3, psycopg2, a SQLAlchemy
    ``Connection`` or ``Session``), inside ``SAVEPOINT``/``RELEASE``, so a failure rolls back
    to the savepoint and leaves the caller's transaction usable; the store's timeout is not
    applied to it. ``pg_notify`` in the same transaction is delivered at its commit, and
    never after a rollback. A connection in autocommit mode outside a transaction gets a
    transaction of its own (the event is committed at once, like any statement there).
    Round trips: one with psycopg 3 (the three statements in a pipeline), two with
    psycopg2, three through SQLAlchemy.

Order
    ``seq`` comes from a sequence. Transactions that overlap may commit out of ``seq`` order
    (no emit waits for another to end), so ``fetch`` returns the queued rows not in ``skip``
    (the emitter's window), oldest ``seq`` first, rather than "``seq`` above the last seen":
    a row that commits late below the window is still found.

Leases
    A lease is a row state, not a lock: ``lease_token`` and ``lease_expires`` on the
    emitter's row, compared with the server's clock (``clock_timestamp()``), so hosts need
    not agree on the time. ``acquire`` is one conditional upsert (``... WHERE the lease is
    free, expired, released or ours``). ``SELECT ... FOR UPDATE SKIP LOCKED`` was not used:
    a row lock only lasts as long as its transaction, and holding a transaction open while
    a request is on the wire is what a lease must avoid; the lease must also outlive a
    commit, a reconnect and a server restart. The conditional update is safe under READ
    COMMITTED: the second of two racing updates re-checks the condition on the row the
    first wrote and changes nothing. ``SKIP LOCKED`` shines when a worker picks *any*
    free job; here the engine asks for a given emitter. ``begin_try`` checks the token, the
    expiry and the pause in the same statement that counts the try; ``retry_later``,
    ``finish`` and ``give_up`` need the token only (a try that ended after its lease
    expired is still recorded unless another process has taken the lease). ``release``
    ends the lease (``lease_expires`` NULL) but keeps the token, for the same reason.
    ``renew`` extends a lease whose token is still ours, expired or not, but not a
    released one (a late renewal must not take back what was let go).

Bloat
    Delivered rows are deleted, so the table holds the backlog plus dead rows not yet
    vacuumed. Its autovacuum settings make it vacuum after a fixed number of dead rows
    (``autovacuum_vacuum_scale_factor = 0``, threshold 1000, no cost delay), and
    ``fillfactor = 80`` keeps the updates of a try on their page (HOT). Under sustained load
    the table levels off at about the rows of one autovacuum round (``autovacuum_naptime``,
    a minute by default) and is reused after; ``benchmarks/bench_postgres_store.py``
    measures it.

Polling and notifications
    ``poll`` finds the emitters with queued events by a loose index scan of the partial
    index ``events_queued`` (one index descent per busy emitter, nothing per idle one) and
    the paused ones through a partial index; counting a busy emitter's events reads its
    index entries, which grows with its backlog. ``wait_for_change`` listens on a channel
    named after the schema on a dedicated connection, woken by ``pg_notify`` from
    ``append``, ``replay`` and ``set_paused``, and by :meth:`wake` through a socket pair; it
    reconnects after a restart (and then answers "maybe changed").

Requirements
    PostgreSQL 10 or later; psycopg 3.2 or later. ``LISTEN`` and the store's prepared
    statements need a session of their own: connect directly, or through a pooler in
    session mode (not PgBouncer's transaction mode).

Fork
    A forked child must neither use nor close the connections it inherited (a close would
    end the parent's session): ``after_fork`` (also run by itself when a call sees a new
    pid) keeps them referenced in :data:`_INHERITED` forever and opens new ones.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import importlib
import importlib.resources
import logging
import math
import os
import re
import select
import socket
import threading
import time
import urllib.parse
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

from ._base import (
    EmitterState,
    FailedEvent,
    Lease,
    Message,
    Store,
    StoredEvent,
    StoreError,
    TargetLike,
)

if TYPE_CHECKING:
    import psycopg

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

logger = logging.getLogger(__name__)

#: The version of the tables this library writes.
SCHEMA_VERSION = 1
#: The oldest schema version a library must know to use the tables this one writes.
COMPATIBLE_FROM = 1

#: poll() counts an emitter's queued (and failed) events up to this many.
POLL_COUNT_LIMIT = 1000

#: Connections a forked child inherited: kept referenced so that they are never closed
#: (nor finalized) in the child, which would end the parent's sessions.
_INHERITED: list[Any] = []

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")
_QUERY_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_PASSWORD_KV = re.compile(r"(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)", re.IGNORECASE)

_T = TypeVar("_T")
Row = tuple[Any, ...]
if TYPE_CHECKING:
    Conn = psycopg.Connection[Row]


def _load_psycopg() -> None:
    """Import psycopg 3 (once), or say how to install it."""
    if "psycopg" in globals():
        return
    try:
        import psycopg as module
        import psycopg.conninfo  # noqa: F401 - used as module.conninfo
        import psycopg.errors  # noqa: F401 - used as module.errors
        import psycopg.pq  # noqa: F401 - used as module.pq
    except ImportError as exc:
        raise ImportError(
            "PostgresStore needs psycopg 3: pip install 'webhooks_emitter[postgres]'"
        ) from exc
    globals()["psycopg"] = module


def _load_sql(name: str, schema: str) -> str:
    text = importlib.resources.files(__package__).joinpath("sql").joinpath(name).read_text()
    return text.replace("__SCHEMA__", f'"{schema}"')


def _queries(schema: str) -> dict[str, str]:
    """The named queries of ``sql/postgres_queries.sql`` for ``schema``."""
    text = _load_sql("postgres_queries.sql", schema)
    parts = _QUERY_NAME.split(text)
    queries = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";").rstrip()
    columns = queries.pop("state_columns")
    for name, query in queries.items():
        limit = f"LIMIT {POLL_COUNT_LIMIT}" if name == "poll" else ""
        state_columns = columns.replace("__COUNT_LIMIT__", limit)
        queries[name] = query.replace("__STATE_COLUMNS__", state_columns)
    return queries


def redact(conninfo: str) -> str:
    """``conninfo`` (a URL or ``key=value`` string) with any password replaced by ``***``."""
    if "://" not in conninfo:
        return _PASSWORD_KV.sub(r"\1***", conninfo)
    try:
        parts = urllib.parse.urlsplit(conninfo)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
        query = "&".join(
            f"{key}=***" if key.lower() in ("password", "sslpassword") else f"{key}={value}"
            for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        )
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "<an unparsable conninfo>"


def _readable(fds: list[int], timeout: float) -> set[int]:
    """The descriptors among ``fds`` with something to read within ``timeout`` seconds.

    poll() where there is one: select() fails on descriptors above 1023, which a busy
    application's sockets reach.
    """
    if hasattr(select, "poll"):
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        return {fd for fd, _ in poller.poll(max(0.0, timeout) * 1000)}
    readable, _, _ = select.select(fds, [], [], max(0.0, timeout))
    return set(readable)


def _advisory_key(schema: str) -> int:
    digest = hashlib.sha256(f"webhooks_emitter:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _from_module(obj: Any, *prefixes: str) -> bool:
    """Whether ``obj``'s class, or one of its bases, comes from a module under ``prefixes``."""
    for cls in type(obj).__mro__:
        module = getattr(cls, "__module__", "") or ""
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return True
    return False


class _Pool:
    """A few connections, shared by threads; broken ones are dropped and replaced."""

    def __init__(self, connect: Callable[[float], Conn], size: int) -> None:
        self._connect = connect
        self._size = size
        self._cond = threading.Condition(threading.Lock())
        self._idle: list[Conn] = []
        self._all: list[Conn] = []  # every open connection (idle or lent)
        self._opening = 0  # connects under way
        self.pid = os.getpid()

    def get(self, deadline: float) -> Conn:
        """A connection, waiting until ``deadline`` (monotonic) for one; raises TimeoutError."""
        while True:
            conn: Optional[Conn]
            with self._cond:
                while True:
                    if self._idle:
                        conn = self._idle.pop()
                        break
                    if len(self._all) + self._opening < self._size:
                        self._opening += 1
                        conn = None
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(
                            f"all {self._size} connections of the store stayed busy"
                        )
                    self._cond.wait(remaining)
            if conn is None:
                try:
                    conn = self._connect(deadline)
                except BaseException:
                    with self._cond:
                        self._opening -= 1
                        self._cond.notify()
                    raise
                with self._cond:
                    self._opening -= 1
                    self._all.append(conn)
                return conn
            if self._usable(conn):
                return conn
            self.discard(conn)

    @staticmethod
    def _usable(conn: Conn) -> bool:
        """Whether an idle connection still looks alive, without a round trip."""
        if conn.closed or conn.broken:
            return False
        try:
            readable = _readable([conn.fileno()], 0.0)
        except (OSError, ValueError):
            return False
        # An idle connection has nothing to read unless the server closed it (a restart, an
        # idle timeout, pg_terminate_backend) or sent something we did not ask for.
        return not readable

    def put(self, conn: Conn) -> None:
        """Give back a connection after a call; a broken one is closed instead."""
        if (
            conn.closed
            or conn.broken
            or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
            or os.getpid() != self.pid
        ):
            self.discard(conn)
            return
        with self._cond:
            if conn in self._all:
                self._idle.append(conn)
                self._cond.notify()
                return
        conn.close()  # the pool was closed while it was lent

    def discard(self, conn: Conn) -> None:
        """Close and forget a connection (one that failed, or looked dead)."""
        with self._cond:
            if conn in self._all:
                self._all.remove(conn)
            if conn in self._idle:
                self._idle.remove(conn)
            self._cond.notify()
        if os.getpid() != self.pid:
            _INHERITED.append(conn)  # a forked child's: never closed, never finalized
            return
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - it is broken already
            pass

    def close(self) -> None:
        """Close the idle connections; lent ones are closed when given back."""
        with self._cond:
            idle, self._idle = self._idle, []
            for conn in idle:
                self._all.remove(conn)
            lent, self._all = self._all, []
        if os.getpid() != self.pid:
            _INHERITED.extend(idle + lent)
            return
        for conn in idle:
            conn.close()
        # Lent connections: put() sees them gone from _all and closes them.

    def abandon(self) -> None:
        """In a forked child: forget every connection, never closing one."""
        # No lock: the child has one thread, and the parent may have held the lock at fork.
        _INHERITED.extend(self._all)
        self._all = []
        self._idle = []


class PostgresStore(Store):
    """Events in a PostgreSQL database (psycopg 3), shared by processes on many hosts.

    ``pip install 'webhooks_emitter[postgres]'``. Makes its tables in ``schema`` on first
    use; see the module docstring for the design and CONTRACT sections 10 and 11 for the
    guarantees.

    Args:
        conninfo: a libpq connection string, ``postgresql://user@host:5432/db`` or
            ``host=... dbname=...`` (``PG*`` environment variables fill the gaps).
        schema: the schema of the store's tables: a lowercase SQL identifier (letters,
            digits, ``_``; at most 63 characters; not starting with ``pg_``).
        lease_timeout: seconds a lease lasts without renewal (> 0).
        timeout: seconds any call waits at most for a connection, a lock or a statement
            (> 0). Not applied to a caller's connection.
        create: create or upgrade the tables when needed. False never runs DDL: a missing
            or old schema is then a ``StoreError`` telling to run
            ``webhooks-emitter migrate --store URL``.
        pool_size: the most connections the store opens for its calls (one more listens).

    Raises:
        ImportError: psycopg 3 is not installed.
        TypeError, ValueError: a bad argument (the message names it).
    """

    durable = True
    transactional = True

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = "webhooks_emitter",
        lease_timeout: float = 30.0,
        timeout: float = 5.0,
        create: bool = True,
        pool_size: int = 4,
    ) -> None:
        if not isinstance(conninfo, str):
            raise TypeError(f"conninfo must be a str, not {type(conninfo).__name__}")
        if not isinstance(schema, str):
            raise TypeError(f"schema must be a str, not {type(schema).__name__}")
        if not _SCHEMA_NAME.match(schema) or schema.startswith("pg_"):
            raise ValueError(
                f"schema must be a lowercase SQL identifier (a-z, 0-9, _; not starting with a "
                f"digit or pg_; at most 63 characters), got {schema!r}"
            )
        self.lease_timeout = _seconds("lease_timeout", lease_timeout)
        self.timeout = _seconds("timeout", timeout)
        if not isinstance(create, bool):
            raise TypeError(f"create must be a bool, not {type(create).__name__}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int):
            raise TypeError(f"pool_size must be an int, not {type(pool_size).__name__}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        _load_psycopg()
        try:
            params = psycopg.conninfo.conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            raise ValueError(
                f"conninfo {redact(conninfo)!r} is not a libpq connection string: "
                f"{self._scrub(_first_line(exc), None)}"
            ) from None
        self._conninfo = conninfo
        self._password = str(params.get("password") or os.environ.get("PGPASSWORD") or "")
        self._server = _server_name(params)
        self.schema = schema
        self.create = create
        self.pool_size = pool_size
        self.channel = f"{schema}.changed"[:63]
        self._sql = _queries(schema)
        self._connect_options: dict[str, Any] = {}
        if "application_name" not in params and "PGAPPNAME" not in os.environ:
            self._connect_options["application_name"] = "webhooks_emitter"
        self._ready = False
        self._setup_process()

    def _setup_process(self) -> None:
        """State that belongs to one process (made again in a forked child)."""
        self._pid = os.getpid()
        self._open_lock = threading.Lock()
        self._pool = _Pool(self._connect, self.pool_size)
        self._listen_lock = threading.Lock()
        self._listener: Optional[Conn] = None
        self._listen_failing = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def __repr__(self) -> str:
        return f"PostgresStore({redact(self._conninfo)!r}, schema={self.schema!r})"

    def describe(self) -> str:
        return f"PostgreSQL {self._server} (schema {self.schema})"

    # -- connections ------------------------------------------------------------------------

    def _scrub(self, text: str, password: Optional[str] = "") -> str:
        secret = self._password if password == "" else password
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
        return _PASSWORD_KV.sub(r"\1***", text)

    def _error(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(f"{self.describe()}: {what}: {self._scrub(_first_line(exc))}")

    def _connect(self, deadline: float) -> Conn:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no connection within {self.timeout:g} s")
        conn = psycopg.connect(
            self._conninfo,
            autocommit=True,
            # libpq takes whole seconds (and treats less than 2 as 2).
            connect_timeout=max(2, math.ceil(min(remaining, self.timeout))),
            **self._connect_options,
        )
        try:
            milliseconds = str(max(1, round(self.timeout * 1000)))
            # JIT off: the store's queries are short, and a generic plan's cost estimate
            # can set off a compilation that takes longer than the query (measured: 0.5 s
            # for a 20 ms poll). Through pg_settings, as jit is unknown before version 11.
            conn.execute(
                "SELECT set_config('statement_timeout', %(ms)s, false), "
                "set_config('lock_timeout', %(ms)s, false), "
                "(SELECT set_config(name, 'off', false) FROM pg_settings WHERE name = 'jit')",
                {"ms": milliseconds},
            )
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            self.after_fork()

    @contextmanager
    def _connection(self, what: str, deadline: float) -> Iterator[Conn]:
        try:
            conn = self._pool.get(deadline)
        except (TimeoutError, psycopg.Error, OSError) as exc:
            raise self._error(what, exc) from exc
        try:
            yield conn
        finally:
            self._pool.put(conn)

    def _run(self, what: str, op: Callable[[Conn], _T], *, repeatable: bool = True) -> _T:
        """Run ``op`` on a pooled connection; StoreError on failure.

        A call whose connection breaks is run once more on a fresh connection when
        ``repeatable`` (running it twice does no harm) and time is left.
        """
        self._check_pid()
        deadline = time.monotonic() + self.timeout
        for attempt in (1, 2):
            with self._connection(what, deadline) as conn:
                try:
                    return op(conn)
                except psycopg.Error as exc:
                    lost = conn.closed or conn.broken
                    if lost and repeatable and attempt == 1 and time.monotonic() < deadline:
                        logger.info(
                            "%s: connection lost (%s); trying again on a new one",
                            self.describe(),
                            self._scrub(_first_line(exc)),
                            extra={"store": self.describe()},
                        )
                        continue
                    raise self._error(what, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _query(
        self, name: str, params: dict[str, Any], *, what: str = "", repeatable: bool = True
    ) -> list[Row]:
        self.open()
        sql = self._sql[name]

        def op(conn: Conn) -> list[Row]:
            cursor = conn.execute(sql, params, prepare=True)
            return cursor.fetchall() if cursor.description else []

        return self._run(what or f"{name} failed", op, repeatable=repeatable)

    def _value(self, name: str, params: dict[str, Any], **kwargs: Any) -> Any:
        rows = self._query(name, params, **kwargs)
        return rows[0][0] if rows else None

    # -- life -------------------------------------------------------------------------------

    def open(self) -> None:
        """Check the schema, creating or upgrading it when needed (and ``create``)."""
        if self._ready:
            return
        with self._open_lock:
            if self._ready:
                return
            found = self._run("reading the schema version failed", self._read_version)
            if found is not None and found[1] > SCHEMA_VERSION:
                raise self._newer(found)
            if found is None or found[0] < SCHEMA_VERSION:
                if not self.create:
                    state = "has no tables" if found is None else f"is at version {found[0]}"
                    raise StoreError(
                        f"{self.describe()}: the store {state}, this library needs version "
                        f"{SCHEMA_VERSION}, and create=False: run "
                        "`webhooks-emitter migrate --store URL` (as a role that may create "
                        "tables)"
                    )
                self._migrate()
            self._ready = True

    def _newer(self, found: tuple[int, int]) -> StoreError:
        return StoreError(
            f"{self.describe()}: the store's schema is at version {found[0]}, newer than this "
            f"library understands (it needs {found[1]}, this library knows up to "
            f"{SCHEMA_VERSION}): upgrade webhooks_emitter"
        )

    def _read_version(self, conn: Conn) -> Optional[tuple[int, int]]:
        exists = conn.execute(self._sql["table_exists"], {"schema": self.schema}).fetchone()
        if not exists or not exists[0]:
            return None
        row = conn.execute(self._sql["version"]).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def migrate(self) -> int:
        """Create the tables, or upgrade them to this library's version.

        Safe to run from several processes at once (they take turns under an advisory
        lock). Runs even with ``create=False``: this is the explicit way.

        Returns:
            The schema version now in the store (:data:`SCHEMA_VERSION`, or the newer one
            another library wrote if it declares this one compatible).

        Raises:
            StoreError: the database refused (no right to create), or its schema is newer
                than this library can use.
        """
        self._check_pid()
        version = self._migrate()
        self._ready = True
        return version

    def _migrate(self) -> int:
        def op(conn: Conn) -> int:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_advisory_key(self.schema),))
                conn.execute("SET LOCAL statement_timeout = 0")  # a long upgrade is fine
                found = self._read_version(conn)
                if found is not None and found[1] > SCHEMA_VERSION:
                    raise self._newer(found)
                current = found[0] if found is not None else 0
                if current == 0:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
                    ).fetchone()
                    if not exists:
                        conn.execute(f'CREATE SCHEMA "{self.schema}"')
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    conn.execute(_load_sql(f"postgres_schema_{version}.sql", self.schema))
                    logger.info(
                        "%s: schema upgraded to version %d",
                        self.describe(),
                        version,
                        extra={"store": self.describe(), "schema_version": version},
                    )
                if current < SCHEMA_VERSION:
                    conn.execute(
                        f'INSERT INTO "{self.schema}".schema_version '
                        "(version, compatible_from) VALUES (%(v)s, %(c)s) "
                        "ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version, "
                        "compatible_from = EXCLUDED.compatible_from, upgraded_at = now()",
                        {"v": SCHEMA_VERSION, "c": COMPATIBLE_FROM},
                    )
                return max(current, SCHEMA_VERSION)

        return self._run("creating the schema failed", op)

    def close(self) -> None:
        """Close the store's connections (only this process's); used again, it reopens."""
        if self._pid != os.getpid():
            self.after_fork()
            return
        self._pool.close()
        # A thread may be waiting for a notification, holding the listener: wake it first.
        self.wake()
        if self._listen_lock.acquire(timeout=self.timeout):
            try:
                self._drop_listener()
            finally:
                self._listen_lock.release()

    def after_fork(self) -> None:
        """In a forked child: forget (never close) the parent's connections; open new ones."""
        self._pool.abandon()
        if self._listener is not None:
            _INHERITED.append(self._listener)
        for sock in (self._wake_r, self._wake_w):
            sock.close()  # this process's copy only; the parent's stays open
        self._setup_process()

    # -- notifications ------------------------------------------------------------------------

    def _drop_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - broken already
                pass

    def wait_for_change(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a notification of a change (another process's
        commit of an event, a pause, a replay) or a :meth:`wake`.

        Returns True on one, and also right after (re)connecting the listening connection
        (what happened meanwhile was not heard); False when the time is up. Never raises:
        when the server cannot be reached it waits ``timeout`` (or a wake) and says "maybe"
        (True), and the poll that follows reports the error.
        """
        self._check_pid()
        deadline = time.monotonic() + max(0.0, timeout)
        if not self._listen_lock.acquire(timeout=max(0.0, timeout)):
            return False
        try:
            if self._listener is None or self._listener.closed or self._listener.broken:
                self._drop_listener()
                if not self._listen(deadline):
                    self._wait_for_wake(deadline)
                    return True
                return True
            return self._wait_on(self._listener, deadline)
        except (psycopg.Error, OSError, ValueError) as exc:
            logger.warning(
                "%s: the listening connection was lost (%s); reconnecting",
                self.describe(),
                self._scrub(_first_line(exc)),
                extra={"store": self.describe()},
            )
            self._drop_listener()
            if not self._listen(deadline):
                self._wait_for_wake(deadline)
            return True
        finally:
            self._listen_lock.release()

    def _wait_on(self, conn: Conn, deadline: float) -> bool:
        """Wait on the listening connection until a notification, a wake or ``deadline``."""
        wake = self._wake_r.fileno()
        while True:
            if list(conn.notifies(timeout=0.0)):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            readable = _readable([conn.fileno(), wake], remaining)
            if wake in readable:
                self._drain_wake()
                return True
            if not readable:
                return False

    def _listen(self, deadline: float) -> bool:
        """Open the listening connection; False (logged once per outage) when it fails."""
        try:
            self.open()
            conn = self._connect(max(deadline, time.monotonic() + 0.5))
            conn.execute(f'LISTEN "{self.channel}"')
        except (psycopg.Error, OSError, TimeoutError, StoreError) as exc:
            if not self._listen_failing:
                self._listen_failing = True
                logger.warning(
                    "%s: cannot listen for changes (%s); polling until it can",
                    self.describe(),
                    self._scrub(_first_line(exc)),
                    extra={"store": self.describe()},
                )
            return False
        if self._listen_failing:
            self._listen_failing = False
            logger.info("%s: listening for changes again", self.describe())
        self._listener = conn
        return True

    def _wait_for_wake(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining > 0:
            if _readable([self._wake_r.fileno()], remaining):
                self._drain_wake()
                return True
        return False

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def wake(self) -> None:
        """Cut a :meth:`wait_for_change` short (it returns True)."""
        try:
            self._wake_w.send(b"\0")
        except OSError as exc:  # full (a wake is pending anyway) or closed
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBADF):
                raise

    # -- emitting ---------------------------------------------------------------------------

    def append(
        self, message: Message, targets: Sequence[TargetLike], connection: Any = None
    ) -> list[bool]:
        """Queue ``message`` for every target in one transaction (see :class:`Store`).

        With ``connection`` (a psycopg 3 or psycopg2 connection, a SQLAlchemy ``Connection``
        or ``Session`` on this database), the event is written inside the caller's open
        transaction, in a savepoint: delivered once it commits, never after a rollback.

        Raises:
            StoreError: the event could not be stored (nothing of it was, and a caller's
                transaction is still usable).
            TypeError: ``connection`` is of no supported kind.
        """
        if not targets:
            return []
        params = {
            "emitter_ids": [target.emitter_id for target in targets],
            "max_sizes": [target.max_queue_size for target in targets],
            "event": message.event,
            "request_id": message.request_id,
            "body": message.body,
            "ordering_key": message.ordering_key,
            "emitted_at": time.time(),
            "channel": self.channel,
        }
        if connection is None:
            row = self._query(
                "append", params, what="storing the event failed", repeatable=False
            )[0]
        else:
            self.open()  # the tables exist before anything is written through it
            row = self._append_through(connection, params)
        stored = set(row[0] or ())
        return [target.emitter_id in stored for target in targets]

    def _append_through(self, connection: Any, params: dict[str, Any]) -> Row:
        write, run, in_transaction = _caller_runner(connection)
        savepoint = "webhooks_emitter_append"
        begin, done, undo = (
            (f"SAVEPOINT {savepoint}", f"RELEASE SAVEPOINT {savepoint}",
             f"ROLLBACK TO SAVEPOINT {savepoint}")
            if in_transaction
            else ("BEGIN", "COMMIT", "ROLLBACK")
        )
        try:
            row = write(begin, self._sql["append"], params, done)
        except Exception as exc:
            try:
                run(undo, None)
                if in_transaction:
                    run(done, None)
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
            if _is_driver_error(exc):
                raise self._error("storing the event through the connection failed", exc) from exc
            raise
        if row is None:  # pragma: no cover - the query always returns a row
            raise StoreError(f"{self.describe()}: storing the event returned nothing")
        return row

    # -- emitters ----------------------------------------------------------------------------

    def register(self, emitter_id: str) -> None:
        self._query("register", {"emitter_id": emitter_id})

    def forget(self, emitter_id: str) -> int:
        return int(self._value("queued_count", {"emitter_id": emitter_id}) or 0)

    def known(self, emitter_id: str) -> bool:
        return bool(self._value("known", {"emitter_id": emitter_id}))

    def state(self, emitter_id: str) -> EmitterState:
        rows = self._query("state", {"emitter_id": emitter_id})
        return _state(rows[0]) if rows else EmitterState(emitter_id)

    def states(self) -> list[EmitterState]:
        return sorted((_state(row) for row in self._query("states", {})),
                      key=lambda state: state.emitter_id)

    def poll(self) -> list[EmitterState]:
        """In one query: the emitters that have queued events or are paused.

        Its cost grows with the number of such emitters, not with the number attached.
        ``queued`` and ``failed`` are exact up to :data:`POLL_COUNT_LIMIT` (1,000) and that
        number beyond: ``state()`` counts exactly.
        """
        return [_state(row) for row in self._query("poll", {})]

    def set_paused(self, emitter_id: str, paused: bool) -> None:
        self._query(
            "set_paused", {"emitter_id": emitter_id, "paused": bool(paused),
                           "channel": self.channel}
        )

    def set_hold(self, emitter_id: str, lease: Lease, until: float) -> None:
        self._query(
            "set_hold", {"emitter_id": emitter_id, "token": lease.token, "until": float(until)}
        )

    def set_failing_since(self, emitter_id: str, lease: Lease, since: Optional[float]) -> None:
        self._query(
            "set_failing_since",
            {"emitter_id": emitter_id, "token": lease.token,
             "since": None if since is None else float(since)},
        )

    # -- leases ------------------------------------------------------------------------------

    def acquire(self, emitter_id: str, lease: Lease) -> bool:
        rows = self._query(
            "acquire",
            {"emitter_id": emitter_id, "holder": lease.holder, "token": lease.token,
             "ttl": self.lease_timeout},
        )
        return bool(rows)

    def renew(self, lease: Lease, emitter_ids: Collection[str]) -> set[str]:
        if not emitter_ids:
            return set()
        rows = self._query(
            "renew",
            {"emitter_ids": list(emitter_ids), "token": lease.token, "ttl": self.lease_timeout},
        )
        return {row[0] for row in rows}

    def release(self, emitter_id: str, lease: Lease, next_due: float = 0.0) -> None:
        self._query(
            "release",
            {"emitter_id": emitter_id, "token": lease.token, "next_due": float(next_due)},
        )

    # -- events, under a lease ----------------------------------------------------------------

    def fetch(
        self, emitter_id: str, lease: Lease, limit: int, skip: Collection[int] = ()
    ) -> list[StoredEvent]:
        if limit <= 0:
            return []
        rows = self._query(
            "fetch",
            {"emitter_id": emitter_id, "token": lease.token, "skip": list(skip),
             "limit": limit},
        )
        return [
            StoredEvent(
                seq, emitter_id, event, request_id, bytes(body), ordering_key, attempts,
                next_at, emitted_at, status_code, error,
            )
            for (seq, event, request_id, body, ordering_key, attempts, next_at, emitted_at,
                 status_code, error) in rows
        ]

    def _event_params(self, lease: Lease, event: StoredEvent) -> dict[str, Any]:
        return {
            "seq": event.seq,
            "emitter_id": event.emitter_id,
            "token": lease.token,
            "attempts": event.attempts,
        }

    def begin_try(self, lease: Lease, event: StoredEvent, now: float) -> bool:
        params = self._event_params(lease, event)
        params["now"] = float(now)
        return bool(self._query("begin_try", params))

    def retry_later(self, lease: Lease, event: StoredEvent) -> bool:
        params = self._event_params(lease, event)
        params.update(
            next_at=float(event.next_at), status_code=event.status_code, error=event.error
        )
        return bool(self._query("retry_later", params))

    def finish(self, lease: Lease, event: StoredEvent) -> bool:
        return bool(self._query("finish", self._event_params(lease, event)))

    def give_up(self, lease: Lease, event: StoredEvent) -> bool:
        params = self._event_params(lease, event)
        params.update(status_code=event.status_code, error=event.error, failed_at=time.time())
        return bool(self._query("give_up", params))

    # -- flush -------------------------------------------------------------------------------

    def high_water(self, emitter_ids: Collection[str]) -> dict[str, int]:
        if not emitter_ids:
            return {}
        rows = self._query("high_water", {"emitter_ids": list(emitter_ids)})
        return {emitter_id: int(seq) for emitter_id, seq in rows if seq is not None}

    def queued_upto(self, emitter_id: str, seq: int) -> int:
        return int(self._value("queued_upto", {"emitter_id": emitter_id, "seq": seq}) or 0)

    # -- dead letters ------------------------------------------------------------------------

    def failed(self, emitter_id: str, limit: int = 100) -> list[FailedEvent]:
        if limit <= 0:
            return []
        rows = self._query("failed", {"emitter_id": emitter_id, "limit": limit})
        return [
            FailedEvent(
                emitter_id=emitter_id,
                event=event,
                request_id=request_id,
                attempts=attempts,
                status_code=status_code,
                error=error,
                failed_at=_utc(failed_at),
                body=bytes(body),
            )
            for event, request_id, attempts, status_code, error, failed_at, body in rows
        ]

    def replay(self, emitter_id: str, request_ids: Optional[Collection[str]] = None) -> int:
        wanted = [] if request_ids is None else list(request_ids)
        if request_ids is not None and not wanted:
            return 0
        return int(
            self._value(
                "replay",
                {"emitter_id": emitter_id, "all": request_ids is None,
                 "request_ids": wanted, "channel": self.channel},
            )
            or 0
        )

    def purge(self, emitter_id: str) -> int:
        return int(self._value("purge", {"emitter_id": emitter_id}) or 0)


# -- helpers -------------------------------------------------------------------------------


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def _server_name(params: dict[str, Any]) -> str:
    """``user@host:port/dbname`` from conninfo parameters and the PG* variables, no password."""
    env = os.environ
    host = str(params.get("host") or params.get("hostaddr") or env.get("PGHOST") or "localhost")
    port = str(params.get("port") or env.get("PGPORT") or "5432")
    user = str(params.get("user") or env.get("PGUSER") or "")
    dbname = str(params.get("dbname") or env.get("PGDATABASE") or user or "")
    hosts = host.split(",")
    ports = port.split(",")
    where = ",".join(
        f"{h}:{ports[i] if i < len(ports) else ports[-1]}" for i, h in enumerate(hosts)
    )
    return f"{user + '@' if user else ''}{where}/{dbname}"


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def _state(row: Row) -> EmitterState:
    (emitter_id, queued, failed, paused, hold_until, last_try_at, failing_since, next_due,
     oldest, holder) = row
    return EmitterState(
        emitter_id=emitter_id,
        queued=int(queued),
        failed=int(failed),
        paused=bool(paused),
        hold_until=float(hold_until),
        last_try_at=float(last_try_at),
        failing_since=None if failing_since is None else float(failing_since),
        next_due=float(next_due),
        oldest_queued_at=None if oldest is None else float(oldest),
        lease_holder=holder,
    )


def _is_driver_error(exc: BaseException) -> bool:
    return _from_module(exc, "psycopg", "psycopg2", "sqlalchemy")


Runner = Callable[[str, Optional[dict[str, Any]]], Optional[Row]]
#: write(begin, sql, params, done): the three statements of a write, in as few round trips
#: as the driver allows; answers the row of ``sql``.
Writer = Callable[[str, str, dict[str, Any], str], Optional[Row]]


def _one_at_a_time(run: Runner) -> Writer:
    def write(begin: str, sql: str, params: dict[str, Any], done: str) -> Optional[Row]:
        run(begin, None)
        row = run(sql, params)
        run(done, None)
        return row

    return write


def _caller_runner(connection: Any) -> tuple[Writer, Runner, bool]:
    """How to write through a caller's connection and run one statement on it, and whether
    it is in a transaction (else it is in autocommit mode, outside one: the write gets a
    transaction of its own).

    Detects the connection's kind by the module of its class, importing a driver only when
    the object comes from it.
    """
    if _from_module(connection, "sqlalchemy"):
        return _sqlalchemy_runner(connection)
    if _from_module(connection, "psycopg2"):
        return _psycopg2_runner(connection)
    if _from_module(connection, "psycopg"):
        return _psycopg_runner(connection)
    raise TypeError(
        "connection= takes a psycopg 3 or psycopg2 connection, or a SQLAlchemy Connection "
        f"or Session, not {type(connection).__module__}.{type(connection).__name__}"
    )


def _psycopg_runner(connection: Any) -> tuple[Writer, Runner, bool]:
    if not isinstance(connection, psycopg.Connection):
        raise TypeError(
            f"connection= takes a psycopg (3) Connection, not {type(connection).__name__}"
            " (an AsyncConnection cannot be used from emit)"
        )
    if connection.closed:
        raise ValueError("connection= is closed")
    idle = connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    from psycopg.rows import tuple_row

    def run(sql: str, params: Optional[dict[str, Any]]) -> Optional[Row]:
        # A plain cursor whatever the connection's cursor_factory and row_factory.
        with psycopg.Cursor(connection, row_factory=tuple_row) as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone() if cursor.description else None

    def pipelined(begin: str, sql: str, params: dict[str, Any], done: str) -> Optional[Row]:
        # One round trip: the three statements go out together. If the write fails, the
        # rest of the pipeline is skipped and the error raised when it syncs.
        cursors = [psycopg.Cursor(connection, row_factory=tuple_row) for _ in range(3)]
        try:
            with connection.pipeline():
                cursors[0].execute(begin)
                cursors[1].execute(sql, params)
                cursors[2].execute(done)
            return cursors[1].fetchone()
        finally:
            for cursor in cursors:
                cursor.close()

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

    def run(sql: str, params: Optional[dict[str, Any]]) -> Optional[Row]:
        # exec_driver_sql joins SQLAlchemy's transaction (beginning it if need be), so the
        # caller's commit() or rollback() decides.
        result = connection.exec_driver_sql(sql, params) if params else (
            connection.exec_driver_sql(sql)
        )
        row = result.fetchone() if result.returns_rows else None
        return None if row is None else tuple(row)

    return _one_at_a_time(run), run, True
