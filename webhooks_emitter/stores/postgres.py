"""The PostgreSQL store: events in a database, delivered from any number of hosts.

Design
------

Tables (schema ``schema``, SQL in ``sql/postgres_*.sql``): ``events`` (one row per event
and emitter: queued, or failed when given up; delivered rows are deleted), ``emitters``
(one row per emitter id: paused, hold, last try, first failure, next due, and its lease),
``schema_version``. No secret is ever stored. The store is split by job:

``postgres.py``
    the store's calls, each one named query of ``sql/postgres_queries.sql``;
``_pg_schema.py``
    the schema: versions, creation and upgrades, the named queries;
``_pg_pool.py``
    the store's own connections (their health check, the session that vouches for its
    leases) and what keeps passwords out of messages; the pool is ``_sql.Pool``, the one
    both SQL stores share (bounded here by ``pool_size``), and the named queries are read
    by ``_sql.load_queries``, as the SQLite store's are;
``_pg_notify.py``
    LISTEN and the wake-up of a waiting worker;
``_pg_caller.py``
    writes through a caller's connection (``emit(..., connection=conn)``).

Connections
    A small pool of the store's own connections (``pool_size``), in autocommit mode: every
    call is one SQL statement (``settle``: one string), hence one round trip and atomic.
    Each connection has ``statement_timeout`` and ``lock_timeout`` set to ``timeout``; the
    wait for a free connection and the connect are bounded by it too. A connection is
    checked before use without a round trip (a socket with something to read while idle
    was closed by the server) and replaced. A read, or a write that can be repeated, whose
    connection breaks is tried once more on a fresh one; ``append`` is not, since its
    commit may have happened: the caller gets a :class:`StoreError` (at least once: the
    event may be stored). Each event is committed before ``append`` returns.

Emit
    One prepared statement, one round trip: the insert, with the room check
    (``max_queue_size``) inside it. The check locks nothing, so no emit waits for another
    transaction; two emits racing for an emitter's last place may both get it. It costs two
    index probes while a queue is surely short (its ``seq`` range is below
    ``max_queue_size``), a count of at most ``max_queue_size`` index entries when it may be
    full, and is skipped for ``_pg_room.ROOM_FOR`` seconds after it found a queue below half
    full (see :meth:`PostgresStore.append` and ``_pg_room.py``). Through a caller's connection: see
    ``_pg_caller.py``. Notifications: see ``_pg_notify.py``.

Order
    ``seq`` comes from a sequence. Transactions that overlap may commit out of ``seq`` order
    (no emit waits for another to end), so ``fetch`` returns the queued rows not in ``skip``
    (the emitter's window), oldest ``seq`` first, rather than "``seq`` above the last seen":
    a row that commits late below the window is still found.

Leases
    A lease is a row state, not a lock: ``lease_token`` and ``lease_expires`` on the
    emitter's row, compared with the server's clock (``clock_timestamp()``), so hosts need
    not agree on the time. ``acquire`` is one conditional upsert (``... WHERE the lease is
    free, expired, released, ours, or its holder is gone``). ``SELECT ... FOR UPDATE SKIP
    LOCKED`` was not used: a row lock only lasts as long as its transaction, and holding a
    transaction open while a request is on the wire is what a lease must avoid; the lease
    must also outlive a commit, a reconnect and a server restart. The conditional update is
    safe under READ COMMITTED: the second of two racing updates re-checks the condition on
    the row the first wrote and changes nothing. ``begin_try`` checks the token, the expiry
    and the pause in the same statement that counts the try (and stores when the try will
    surely have ended); ``retry_later``, ``finish`` and ``give_up`` need the token only (a
    try that ended after its lease expired is still recorded unless another process has
    taken the lease). ``release`` ends the lease (``lease_expires`` NULL) but keeps the
    token, for the same reason. ``renew`` extends a lease whose token is still ours,
    expired or not, but not a released one (a late renewal must not take back what was let
    go).

Takeover
    The holder's database session says whether it lives: each process's store keeps a
    session-level advisory lock on a connection of its own (:class:`SessionLock`) and
    writes its key into the tokens of its leases. When the process ends, however it ends,
    the server ends that session and drops the lock, and ``acquire`` (and ``state``,
    ``states``, ``poll``: no holder shown) sees it at once with
    ``pg_try_advisory_xact_lock``. ``lease_timeout`` stays for what the server cannot see:
    a frozen process, a host gone, a network cut. A try under way at the holder's end is
    not tried again before its start plus ``request_timeout``: ``begin_try`` stored that
    time as the event's ``next_at``.

One commit per delivery
    ``settle`` records tries' outcomes and the next try's start in one transaction, with
    ``synchronous_commit = off`` (delivery state only; see its docstring). The single
    calls (``begin_try``, ``retry_later``, ``finish``, ``give_up``) commit the same way,
    by ``set_config('synchronous_commit', 'off', true)`` in their RETURNING clause: no
    extra statement. Emits, leases, pauses and replays commit durably.

Bloat
    Delivered rows are deleted, so the table holds the backlog plus dead rows not yet
    vacuumed. Its autovacuum settings make it vacuum after a fixed number of dead rows
    (``autovacuum_vacuum_scale_factor = 0``, threshold 1000, no cost delay), and
    ``fillfactor = 80`` keeps the updates of a try on their page (HOT). Under sustained load
    the table levels off at about the rows of one autovacuum round (``autovacuum_naptime``,
    a minute by default) and is reused after; ``benchmarks/bench_postgres_store.py``
    measures it.

Polling
    ``poll`` finds the emitters with queued events by a loose index scan of the partial
    index ``events_queued`` (one index descent per busy emitter, nothing per idle one) and
    the paused ones through a partial index; counting a busy emitter's events reads its
    index entries, which grows with its backlog.

Requirements
    PostgreSQL 10 or later; psycopg 3.2 or later. ``LISTEN``, the lease session and the
    prepared statements need sessions of their own: connect directly, or through a pooler
    in session mode (not PgBouncer's transaction mode). A delivering process holds
    ``pool_size`` + 2 connections (the pool, the listener, the lease session).

Fork
    A forked child must neither use nor close the connections it inherited (a close would
    end the parent's session): ``after_fork`` (also run by itself when a call sees a new
    pid) keeps them referenced in ``_pg_pool._INHERITED`` forever and opens new ones; the
    child draws its own lease-session key, so the parent's leases stay the parent's.
"""
from __future__ import annotations

import datetime
import logging
import math
import os
import re
import secrets
import threading
import time
import weakref
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

from .. import _validate
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
from ._pg_caller import CallerWriter, is_driver_error
from ._pg_notify import NOTIFY_EVERY, Listener, channel_of
from ._pg_pool import (
    _PASSWORD_KV,
    SessionLock,
    close_quietly,
    first_line,
    looks_alive,
    parse_problem,
    redact,
    redact_loosely,
    reusable,
    server_name,
    userinfo_problem,
)
from ._pg_room import RoomCheck
from ._pg_schema import (
    COMPATIBLE_FROM,
    POLL_COUNT_LIMIT,
    SCHEMA_VERSION,
    load_sql,
    migrate,
    newer_error,
    queries,
    read_version,
)
from ._sql import Pool

if TYPE_CHECKING:
    import psycopg

__all__ = ["COMPATIBLE_FROM", "POLL_COUNT_LIMIT", "SCHEMA_VERSION", "PostgresStore"]

logger = logging.getLogger(__name__)

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")

_T = TypeVar("_T")
Row = tuple[Any, ...]
if TYPE_CHECKING:
    from ._pg_pool import Conn

#: The outcomes ``settle`` records, and the query of each.
_OUTCOMES = {"retry_later": "retry_later", "finish": "finish", "give_up": "give_up"}


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


_load_sql = load_sql  # the tests make older schemas with it


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
        self.lease_timeout = _validate.number("lease_timeout", lease_timeout, strict=True)
        self.timeout = _validate.number("timeout", timeout, strict=True)
        if not isinstance(create, bool):
            raise TypeError(f"create must be a bool, not {type(create).__name__}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int):
            raise TypeError(f"pool_size must be an int, not {type(pool_size).__name__}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        _load_psycopg()
        problem = userinfo_problem(conninfo) if "://" in conninfo else None
        if problem is not None:
            raise ValueError(
                f"conninfo is not a valid postgresql:// URL ({problem}); it is not repeated "
                "here, as it may hold a password"
            )
        try:
            params = psycopg.conninfo.conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            # libpq's message quotes the input (a URL whole, password included): only its
            # own words are kept, and the conninfo is not shown at all.
            problem = parse_problem(str(exc))
        if problem is not None:
            # Raised outside the except block, so that the driver's error (which holds the
            # password) is not even kept as this one's __context__.
            shown = redact_loosely(conninfo)
            raise ValueError(
                "conninfo is not a valid libpq connection string or postgresql:// URL "
                f"({problem}); it is not repeated here, as it may hold a password"
                if shown is None
                else f"conninfo {shown!r} is not a valid postgresql:// URL ({problem})"
            )
        self._conninfo = conninfo
        self._password = str(params.get("password") or os.environ.get("PGPASSWORD") or "")
        self._server = server_name(params)
        self.schema = schema
        self.create = create
        self.pool_size = pool_size
        self.channel = channel_of(schema)
        self._sql = queries(schema)
        self._caller = CallerWriter(schema, self._sql, self.channel)
        #: A cursor kept for each of the store's connections.
        self._cursors: weakref.WeakKeyDictionary[Conn, Any] = weakref.WeakKeyDictionary()
        #: The statements of settle() prepared on each of the store's connections.
        self._prepared_on: weakref.WeakKeyDictionary[Conn, set[str]] = (
            weakref.WeakKeyDictionary())
        self._connect_options: dict[str, Any] = {}
        if "application_name" not in params and "PGAPPNAME" not in os.environ:
            self._connect_options["application_name"] = "webhooks_emitter"
        self._ready = False
        self._setup_process()

    def _setup_process(self) -> None:
        """State that belongs to one process (made again in a forked child)."""
        self._pid = os.getpid()
        self._open_lock = threading.Lock()
        # Each connect is bounded by the store's timeout on its own: the wait for a place
        # in the pool before it is bounded by the call's deadline.
        self._pool: Pool[Conn] = Pool(
            lambda: self._connect(time.monotonic() + self.timeout),
            close_quietly,
            size=self.pool_size,
            check=looks_alive,
        )
        self._listener = Listener(
            self._connect, self.channel, self.describe, self._scrub, self.open
        )
        # The lock that vouches for this process's leases: a random key per process (a
        # forked child draws its own), held by a session of its own once a lease is taken.
        self._session = SessionLock(self._connect, secrets.randbits(62) + 1)
        self._token_suffix = f"/{self._session.key}"
        self._last_notify = -NOTIFY_EVERY
        self._room = RoomCheck()

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
        return StoreError(f"{self.describe()}: {what}: {self._scrub(first_line(exc))}")

    def _token(self, lease: Lease) -> str:
        """The token as stored: the lease's, and the key of the lock that vouches for it.

        ``acquire`` reads the key back from the token to ask whether the holder's session
        still holds that lock. Tokens of the previous release have no ``/``: their holders
        hold no such lock, and their leases are taken over only once they expire.
        """
        return lease.token + self._token_suffix

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

    def _run(self, what: str, op: Callable[[Conn], _T], *, repeatable: bool = True) -> _T:
        """Run ``op`` on a pooled connection; StoreError on failure.

        A call whose connection breaks is run once more on a fresh connection when
        ``repeatable`` (running it twice does no harm) and time is left. (Written out
        rather than with a context manager: this is every call's path, emit's included.)
        """
        if self._pid != os.getpid():
            self.after_fork()
        deadline = time.monotonic() + self.timeout
        pool = self._pool
        for attempt in (1, 2):
            try:
                conn = pool.take(deadline)
            except (TimeoutError, psycopg.Error, OSError) as exc:
                raise self._error(what, exc) from exc
            try:
                return op(conn)
            except psycopg.Error as exc:
                lost = conn.closed or conn.broken
                if lost and repeatable and attempt == 1 and time.monotonic() < deadline:
                    logger.info(
                        "%s: connection lost (%s); trying again on a new one",
                        self.describe(),
                        self._scrub(first_line(exc)),
                        extra={"store": self.describe()},
                    )
                    continue
                raise self._error(what, exc) from exc
            finally:
                pool.give(conn, reusable(conn))
        raise AssertionError("unreachable")  # pragma: no cover

    def _query(
        self, name: str, params: dict[str, Any], *, what: str = "", repeatable: bool = True
    ) -> list[Row]:
        if not self._ready:
            self.open()
        sql = self._sql[name]
        cursors = self._cursors

        def op(conn: Conn) -> list[Row]:
            # One cursor per connection, kept: a connection serves one thread at a time.
            cursor = cursors.get(conn)
            if cursor is None or cursor.closed:
                cursor = cursors[conn] = conn.cursor()
            cursor.execute(sql, params, prepare=True)
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
            found = self._run(
                "reading the schema version failed",
                lambda conn: read_version(conn, self.schema, self._sql),
            )
            if found is not None and found[1] > SCHEMA_VERSION:
                raise newer_error(self.describe(), found)
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
        return self._run(
            "creating the schema failed",
            lambda conn: migrate(conn, self.schema, self._sql, self.describe()),
        )

    def close(self) -> None:
        """Close the store's connections (only this process's); used again, it reopens."""
        if self._pid != os.getpid():
            self.after_fork()
            return
        self._pool.close()
        self._session.close()  # this process's leases may be taken at once
        # A thread may be waiting for a notification, holding the listener: it is woken.
        self._listener.close(self.timeout)

    def after_fork(self) -> None:
        """In a forked child: forget (never close) the parent's connections; open new ones."""
        self._pool.after_fork()  # sets the parent's connections aside, never closed
        self._session.abandon()
        self._listener.abandon()
        self._setup_process()

    # -- notifications ------------------------------------------------------------------------

    def wait_for_change(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a notification of a change (another process's
        commit of an event, a pause, a replay) or a :meth:`wake` (see ``_pg_notify``).

        Returns True on one, right after (re)connecting the listening connection (what
        happened meanwhile was not heard), and once more shortly after a notification (a
        later commit may have skipped its own); False when the time is up. Never raises.
        """
        self._check_pid()
        return self._listener.wait(timeout)

    def wake(self) -> None:
        """Cut a :meth:`wait_for_change` short (it returns True)."""
        self._listener.wake()

    # -- emitting ---------------------------------------------------------------------------

    def append(
        self, message: Message, targets: Sequence[TargetLike], connection: Any = None
    ) -> list[bool]:
        """Queue ``message`` for every target in one transaction (see :class:`Store`).

        With ``connection`` (a psycopg 3 or psycopg2 connection, a SQLAlchemy ``Connection``
        or ``Session`` on this database), the event is written inside the caller's open
        transaction, in a savepoint: delivered once it commits, never after a rollback.

        The room check (``max_queue_size``) costs about a third of an emit. Its query
        answers the queue's depth (an upper bound), and while the depth plus the emits made
        since stays below half of ``max_queue_size``, this process's next emits to that
        emitter skip it for up to ``_pg_room.ROOM_FOR`` seconds: an insert alone, as an
        application's own outbox row. An emitter is thus never filled past
        ``max_queue_size`` by one process; other processes' emits within those
        ``ROOM_FOR`` seconds may overshoot it, as two emits racing for its last place
        already may.

        Raises:
            StoreError: the event could not be stored (nothing of it was, and a caller's
                transaction is still usable).
            TypeError: ``connection`` is of no supported kind.
        """
        if not targets:
            return []
        params: dict[str, Any] = {
            "event": message.event,
            "request_id": message.request_id,
            "body": message.body,
            "ordering_key": message.ordering_key,
            "emitted_at": time.time(),
            "trace_context": message.trace_context,
            "channel": self.channel,
        }
        one = len(targets) == 1
        fast = False
        if one:
            target = targets[0]
            params.update(emitter_id=target.emitter_id, max_size=target.max_queue_size)
            fast = self._room.skip_check(target.emitter_id, target.max_queue_size)
            name = "append_one_fast" if fast else "append_one_checked"
        else:
            params.update(emitter_ids=[target.emitter_id for target in targets],
                          max_sizes=[target.max_queue_size for target in targets])
            name = "append"
        if connection is None:
            # Notified at most every NOTIFY_EVERY seconds per process (see _pg_notify).
            # Measured from the notifying commit's end, so that an emit that skips its
            # notification starts within NOTIFY_EVERY of a notification it follows.
            notify = time.monotonic() - self._last_notify >= NOTIFY_EVERY
            rows = self._query(
                name + "_notify" if notify else name, params,
                what="storing the event failed", repeatable=False,
            )
            if notify:
                self._last_notify = time.monotonic()
        else:
            self.open()  # the tables exist before anything is written through it
            try:
                # A notification per caller's transaction: the server merges them.
                # (The string it sends holds a NOTIFY: the plain query is enough.)
                rows = self._caller.write(connection, name, params, rows=not fast) or []
            except Exception as exc:
                if is_driver_error(exc):
                    raise self._error(
                        "storing the event through the connection failed", exc
                    ) from exc
                raise
        if fast:
            return [True]
        if not rows:  # pragma: no cover - the query always answers one row
            raise StoreError(f"{self.describe()}: storing the event returned nothing")
        if one:
            stored, depth = rows[0][0], rows[0][1]
            self._room.found(target.emitter_id, target.max_queue_size, int(depth) + stored)
            return [bool(stored)]
        found = set(rows[0][0] or ())
        return [target.emitter_id in found for target in targets]

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
            "set_hold",
            {"emitter_id": emitter_id, "token": self._token(lease), "until": float(until)},
        )

    def set_failing_since(self, emitter_id: str, lease: Lease, since: Optional[float]) -> None:
        self._query(
            "set_failing_since",
            {"emitter_id": emitter_id, "token": self._token(lease),
             "since": None if since is None else float(since)},
        )

    # -- leases ------------------------------------------------------------------------------

    def acquire(self, emitter_id: str, lease: Lease) -> bool:
        """Take the lease if it is free, expired, released, ours, or its holder's database
        session has ended (the holder's process is gone: see :class:`SessionLock`)."""
        self._hold_session()
        rows = self._query(
            "acquire",
            {"emitter_id": emitter_id, "holder": lease.holder, "token": self._token(lease),
             "ttl": self.lease_timeout},
        )
        return bool(rows)

    def renew(self, lease: Lease, emitter_ids: Collection[str]) -> set[str]:
        if not emitter_ids:
            return set()
        # A session that ended while this process lives (a server restart) is opened
        # again, so that the leases still ours are vouched for again.
        self._hold_session()
        rows = self._query(
            "renew",
            {"emitter_ids": list(emitter_ids), "token": self._token(lease),
             "ttl": self.lease_timeout},
        )
        return {row[0] for row in rows}

    def _hold_session(self) -> None:
        """Make sure this process's lock session lives and holds its key (StoreError if the
        server cannot be reached)."""
        self._check_pid()
        self.open()
        try:
            self._session.ensure(time.monotonic() + self.timeout)
        except (TimeoutError, psycopg.Error, OSError) as exc:
            raise self._error("opening the session that holds the leases failed", exc) from exc

    def release(self, emitter_id: str, lease: Lease, next_due: float = 0.0) -> None:
        self._query(
            "release",
            {"emitter_id": emitter_id, "token": self._token(lease),
             "next_due": float(next_due)},
        )

    # -- events, under a lease ----------------------------------------------------------------

    def fetch(
        self, emitter_id: str, lease: Lease, limit: int, skip: Collection[int] = ()
    ) -> list[StoredEvent]:
        if limit <= 0:
            return []
        rows = self._query(
            "fetch",
            {"emitter_id": emitter_id, "token": self._token(lease), "skip": list(skip),
             "limit": limit},
        )
        return [self._event(emitter_id, row) for row in rows]

    def queued_events(self, emitter_id: str, limit: int = 20) -> list[StoredEvent]:
        limit = _validate.integer("limit", limit, minimum=0)
        if limit == 0:
            return []
        rows = self._query("queued_events", {"emitter_id": emitter_id, "limit": limit})
        return [self._event(emitter_id, row) for row in rows]

    @staticmethod
    def _event(emitter_id: str, row: Row) -> StoredEvent:
        """A StoredEvent from a row of the ``fetch`` or ``queued_events`` query."""
        (seq, event, request_id, body, ordering_key, attempts, next_at, emitted_at,
         status_code, error, trace_context) = row
        return StoredEvent(
            seq, emitter_id, event, request_id, bytes(body), ordering_key, attempts,
            next_at, emitted_at, status_code, error, trace_context,
        )

    def _params(self, kind: str, lease: Lease, event: StoredEvent, now: float = 0.0
                ) -> dict[str, Any]:
        """The parameters of query ``kind`` (begin_try or an outcome) for ``event``."""
        params: dict[str, Any] = {
            "seq": event.seq,
            "emitter_id": event.emitter_id,
            "token": self._token(lease),
            "attempts": event.attempts,
        }
        if kind == "begin_try":
            # next_at: set by the engine to the try's start plus request_timeout, so that a
            # new holder after this process's death waits for this try to end.
            params.update(now=float(now), next_at=float(event.next_at))
        elif kind == "retry_later":
            params.update(
                next_at=float(event.next_at), status_code=event.status_code, error=event.error
            )
        elif kind == "give_up":
            params.update(
                status_code=event.status_code, error=event.error, failed_at=time.time()
            )
        return params

    def begin_try(self, lease: Lease, event: StoredEvent, now: float) -> bool:
        return bool(self._query("begin_try", self._params("begin_try", lease, event, now)))

    def retry_later(self, lease: Lease, event: StoredEvent) -> bool:
        return bool(self._query("retry_later", self._params("retry_later", lease, event)))

    def finish(self, lease: Lease, event: StoredEvent) -> bool:
        return bool(self._query("finish", self._params("finish", lease, event)))

    def give_up(self, lease: Lease, event: StoredEvent) -> bool:
        return bool(self._query("give_up", self._params("give_up", lease, event)))

    def settle(
        self,
        lease: Lease,
        outcomes: Sequence[tuple[str, StoredEvent]],
        begin: Optional[StoredEvent] = None,
        now: float = 0.0,
    ) -> tuple[list[bool], Optional[bool]]:
        """Record tries' outcomes, and the start of the next try, in ONE transaction.

        ``outcomes`` holds ``(kind, event)`` pairs, kind ``"retry_later"``, ``"finish"`` or
        ``"give_up"``, each recorded as the call of that name would (same guards: the lease
        token). ``begin``, if given, is an event whose try starts now, recorded as
        :meth:`begin_try` would (lease live and ours, not paused, still queued).

        One round trip (psycopg's pipeline mode) and one commit, where the single calls
        cost one of each per event. The transaction commits with ``synchronous_commit =
        off``: a delivering process does not wait for the WAL flush of delivery state. A
        server crash (not a process's death: the commit is then in the server's memory)
        may lose the last such commits, in WAL order, never a later one without the
        earlier: a delivered event may then be tried again (at least once), and no event
        overtakes another. Emits stay fully durable.

        Returns:
            Per outcome, whether it was recorded; for ``begin``, whether its try may be sent
            (None without ``begin``).

        Raises:
            ValueError: an unknown kind. StoreError: the store could not be written (then
                nothing of it was).
        """
        statements = []
        for kind, event in outcomes:
            if kind not in _OUTCOMES:
                raise ValueError(
                    f"settle: outcome kind must be one of {sorted(_OUTCOMES)}, got {kind!r}"
                )
            statements.append((_OUTCOMES[kind], self._params(kind, lease, event)))
        if begin is not None:
            statements.append(("begin_try", self._params("begin_try", lease, begin, now)))
        if not statements:
            return [], None
        self.open()
        # One simple-protocol string: BEGIN, the EXECUTEs of statements prepared once per
        # session (PREPARE in the same string the first time), COMMIT. psycopg's pipeline
        # mode was measured slower (several waits on the socket per call).
        calls = [(self._caller.statement(name), params) for name, params in statements]
        merged: dict[str, Any] = {}
        for index, (_, params) in enumerate(calls):
            merged.update((f"s{index}_{key}", value) for key, value in params.items())

        def op(conn: Conn) -> list[bool]:
            prepared = self._prepared_on.setdefault(conn, set())
            # Delivery state only: see the docstring for what a crash may cost.
            parts = ["BEGIN", "SET LOCAL synchronous_commit = off"]
            parts += list(dict.fromkeys(
                s.prepare for s, _ in calls if s.name not in prepared))
            parts += [s.call(f"s{index}_") for index, (s, _) in enumerate(calls)]
            parts.append("COMMIT")
            done = []
            try:
                with psycopg.ClientCursor(conn) as cursor:
                    cursor.execute("; ".join(parts), merged)
                    while True:
                        if cursor.description is not None:  # an EXECUTE's RETURNING
                            done.append(bool(cursor.fetchall()))
                        if not cursor.nextset():
                            break
            except BaseException:
                # Which PREPAREs ran is unknown, and the transaction may be open: this
                # connection is not used again (the pool replaces it).
                conn.close()
                raise
            prepared.update(s.name for s, _ in calls)
            return done

        # Repeatable: each write sets values (or deletes), so running it again is harmless.
        done = self._run("recording the tries failed", op)
        if begin is None:
            return done, None
        return done[:-1], done[-1]

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
