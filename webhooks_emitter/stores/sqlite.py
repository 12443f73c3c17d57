"""The SQLite store: events in one local file, shared by every process on the host.

Layout
------

One file in WAL mode (readers never wait for the writer), three tables, made by the
migrations in ``sql/sqlite_schema_<version>.sql``; the statements the store runs are in
``sql/sqlite_queries.sql``:

``meta``
    ``schema_version`` (what the migrations made) and ``compatible_from`` (the oldest
    schema version whose code can still use this file: a migration that only adds keeps it,
    so the previous release goes on working during a rolling deploy).
``emitters``
    One row per emitter id: the ``queued`` and ``failed`` counters, ``last_seq`` (the seq of
    its newest event ever), the shared state (paused, Retry-After hold, last try, failing
    since, next due) and the lease (holder, token, expiry, and ``lease_lock``: the token
    whose operating-system lock proves the holder alive, below).
``events``
    One row per event and emitter, ``seq INTEGER PRIMARY KEY``: numbered above every seq
    in the table and above the emitter's ``last_seq``, so one emitter's seqs follow emit
    order and are never reused (a replayed event goes to the tail), without the counter
    row AUTOINCREMENT writes per insert (schema 3; the previous release's inserts are
    numbered again by the ``events_in`` trigger). ``state`` is ``queued`` or ``failed``;
    ``trace_context`` the W3C trace context current at emit, or NULL.

Triggers keep the counters right in the very statement that writes an event, so each
write of one event is one statement: ``append`` to one target is an ``INSERT ... SELECT
... WHERE queued < max_queue_size`` (which is how that bound holds across processes), and
``begin_try``, ``finish`` and ``give_up`` are one guarded ``UPDATE`` or ``DELETE``. Writes
that need more (several targets, a pause, a replay, :meth:`SQLiteStore.settle`'s outcomes
and next try) are one ``BEGIN IMMEDIATE`` transaction. No secret is ever written: the store
never receives one.

Takeover: a lease holder keeps an ``fcntl`` lock on one byte of ``<path>-leases`` (see
``_holders``) from before its token is first written until it ends; the kernel lets go of
it when the process ends, ``kill -9`` included. ``acquire`` takes a lease whose holder's
byte is free at once, and the state shows no holder then; ``lease_timeout`` only bounds a
holder that lives but does not renew (a frozen process).

Waiting: the threads of one process queue on the store's own lock, which hands over at
once; other processes are waited for by ``_sqlite_file.SQLiteFile.run``, in steps of
50 us to 1 ms, not by SQLite's busy handler (which sleeps 1, 2, 5 ms...), up to
``timeout``. A call into SQLite lets go of Python's GIL and must get it back, so fewer
calls per write also means fewer waits behind a delivering thread. Checkpoints (copying
the WAL back into the file, with fsyncs) are made by calls that record deliveries, outside
that lock, not inside an emit.

Connections are pooled (``_sql.Pool``), not kept per thread: each call takes an idle
connection (or opens one) and puts it back, so threads that come and go (an emitter's
thread ends when it is idle) do not leave connections behind. A forked child notices the
new pid, opens connections of its own and leaves the inherited ones alone: it neither uses
nor closes them (closing runs SQLite's close path in the child, on a file its parent still
uses).
"""

from __future__ import annotations

import datetime
import os
import sqlite3
import stat
import time
from collections.abc import Collection, Iterator, Sequence
from typing import Any, Optional, Union

from .. import _validate
from . import _holders, _sql
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
from ._sqlite_file import (
    COMPATIBLE_FROM,
    READ,
    SCHEMA_VERSION,
    SQL_FILES,
    TRANSACTION,
    WRITE,
    SQLiteFile,
    schema_statements,
)

__all__ = ["COMPATIBLE_FROM", "SCHEMA_VERSION", "SQLiteStore", "schema_statements"]

SYNCHRONOUS = ("normal", "full")

#: Ids per statement in renew/high_water (SQLite allows 999 parameters before 3.32).
_CHUNK = 256


def _load_queries() -> dict[str, str]:
    """The named statements of ``sql/sqlite_queries.sql``, ``__STATE_COLUMNS__`` filled."""
    queries = _sql.parse_queries(SQL_FILES["sqlite_queries.sql"])
    columns = queries.pop("state_columns")
    return {name: query.replace("__STATE_COLUMNS__", columns) for name, query in queries.items()}


_QUERIES = _load_queries()


def _padded(ids: list[str]) -> Iterator[tuple[str, list[str]]]:
    """Chunks of ``ids`` as (placeholders, ids) padded to a power of two.

    Few distinct SQL strings, so the statement cache keeps them; a repeated id in ``IN``
    changes nothing.
    """
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        size = 1
        while size < len(chunk):
            size *= 2
        chunk += [chunk[-1]] * (size - len(chunk))
        yield ", ".join("?" * size), chunk


class SQLiteStore(Store):
    """Events and their delivery state in one SQLite file, shared by every process on a host.

    The file is in WAL mode and is created with mode 0600 (its ``-wal`` and ``-shm`` files,
    and the ``-leases`` file of the lease holders' locks, take the same mode). It must be on
    a local disk: SQLite's locks do not hold on NFS or
    other network file systems, and two hosts must never share one file (use
    ``PostgresStore`` for that). It should be a file of its own: a file that holds other
    tables is refused. Uses only the standard library's ``sqlite3``.

    Args:
        path: the file (a ``str`` or ``os.PathLike``); relative paths are taken from the
            current directory when the store is made.
        synchronous: ``"normal"`` (a commit survives the death of the process) or ``"full"``
            (it also survives a power cut, at the cost of an fsync per commit).
        lease_timeout: seconds an emitter's lease lasts without renewal. A holder whose
            process ended (kill -9 included) is replaced at once; this bounds only one that
            lives and does not renew (a frozen process).
        timeout: the most seconds a call waits for a lock (another process's, or another
            thread's write) before it raises :class:`StoreError`.
        create: create or upgrade the schema when needed. With ``False`` no DDL is ever run:
            a missing or older schema is a :class:`StoreError` telling to run
            ``webhooks-emitter migrate --store URL``.

    Attributes:
        path: the file, absolute (also what ``describe()`` answers).
        synchronous, lease_timeout, timeout, create: as given.
        schema_version: the file's schema version, as :meth:`open` or :meth:`migrate`
            found or made it.

    Raises:
        TypeError, ValueError: a bad argument (the message names it).
        StoreError: the file cannot be opened or used: not an SQLite database or corrupt,
            not writable (or its directory is not), locked past ``timeout``, a schema newer
            than this library understands, or (``create=False``) a missing or older schema.
    """

    durable = True
    poll_interval = 0.1

    def __init__(
        self,
        path: Union[str, os.PathLike[str]],
        *,
        synchronous: str = "normal",
        lease_timeout: float = 30.0,
        timeout: float = 5.0,
        create: bool = True,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        name = os.fspath(path)
        if not isinstance(name, str):
            raise TypeError(f"path must name a file as str, not {type(name).__name__}")
        if not name or name == ":memory:" or "\x00" in name:
            raise ValueError(f"path must name a file, got {name!r}")
        if not isinstance(synchronous, str):
            raise TypeError(f"synchronous must be a str, not {type(synchronous).__name__}")
        if synchronous.lower() not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        if not isinstance(create, bool):
            raise TypeError(f"create must be a bool, not {type(create).__name__}")
        self.path = os.path.abspath(name)
        # Resolved, so that two names of one file share this process's one descriptor of
        # the lock file (closing a second one would drop the locks: see _holders).
        self._leases_path = os.path.realpath(self.path) + "-leases"
        self.synchronous = synchronous.lower()
        self.lease_timeout = _validate.number("lease_timeout", lease_timeout, strict=True)
        self.timeout = _validate.number("timeout", timeout, strict=True)
        self.create = create
        self._q = _QUERIES
        self._file = SQLiteFile(
            self.path, self.synchronous, self.timeout, _QUERIES, self.poll_interval
        )
        self._run = self._file.run  # every call goes through it: no call in between
        self.schema_version = 0
        self._mode = 0o600  # the file's permissions, for the lock file (see open)
        self.open()

    def __repr__(self) -> str:
        return (
            f"SQLiteStore({self.path!r}, synchronous={self.synchronous!r}, "
            f"lease_timeout={self.lease_timeout!r}, timeout={self.timeout!r}, "
            f"create={self.create!r})"
        )

    def describe(self) -> str:
        return self.path

    def after_fork(self) -> None:
        self._file.after_fork()

    def close(self) -> None:
        self._file.close()
        self._holders().close_if_unclaimed()

    # -- life ----------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the file and create, upgrade or check its schema (see ``create``).

        Also checks that the file can be written within ``timeout``. May be called again.

        Raises:
            StoreError: as for the constructor.
        """
        self.schema_version = self._file.prepare(self.create)
        try:
            self._mode = stat.S_IMODE(os.stat(self.path).st_mode) & 0o666
        except OSError:  # pragma: no cover - just opened; the lock file gets 0600 then
            self._mode = 0o600

    def migrate(self) -> int:
        """Create the schema, or upgrade an older one, even with ``create=False``.

        What ``webhooks-emitter migrate --store URL`` runs. Safe when several processes
        do it at once.

        Returns:
            The schema version of the file afterwards.

        Raises:
            StoreError: the file cannot be used, or its schema is newer than this library
                understands.
        """
        self.schema_version = self._file.prepare(True)
        return self.schema_version

    def wait_for_change(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a commit by any other connection.

        Checks ``PRAGMA data_version`` on a connection of its own every ``poll_interval``
        seconds (a cheap read of the WAL index), so a process sees other processes' writes,
        and its own other threads', without polling the tables. Returns True when something
        was committed since the previous call (or at the first call, or when :meth:`wake`
        was called), False when ``timeout`` passed first. Never raises: when the file cannot
        be read it waits out ``timeout`` and answers True, so that the caller's next poll
        meets (and reports) the error, without spinning.
        """
        return self._file.wait_for_change(timeout)

    def wake(self) -> None:
        self._file.wake()

    # -- emitting ------------------------------------------------------------------------------

    def append(
        self, message: Message, targets: Sequence[TargetLike], connection: Any = None
    ) -> list[bool]:
        if connection is not None:
            raise ValueError("connection= needs a PostgresStore; this instance uses an SQLiteStore")
        if not targets:
            return []
        row = [
            "",
            message.event,
            message.request_id,
            message.body,
            message.ordering_key,
            time.time(),
            0,
            message.trace_context,
        ]
        statement = self._q["append"]
        register = self._q["register"]

        def work(cur: sqlite3.Cursor) -> list[bool]:
            accepted = []
            for target in targets:
                row[0] = target.emitter_id
                row[6] = target.max_queue_size
                cur.execute(statement, row)
                if cur.rowcount != 1:
                    # Full, or an id never registered: then make its row and try again.
                    cur.execute(register, (target.emitter_id,))
                    if cur.rowcount:
                        cur.execute(statement, row)
                accepted.append(cur.rowcount == 1)
            return accepted

        # One target (the usual case): one autocommit statement (or, the first time, the
        # emitter's row then the event: run again whole if it meets another process's lock,
        # which is safe since nothing of a statement stays when it fails). Several: one
        # transaction.
        mode = TRANSACTION if len(targets) > 1 else WRITE
        return self._run("store the event", work, mode, checkpoint=False)

    # -- emitters ------------------------------------------------------------------------------

    def register(self, emitter_id: str) -> None:
        self._run(
            "register an emitter",
            lambda cur: cur.execute(self._q["register"], (emitter_id,)),
            WRITE,
        )

    def forget(self, emitter_id: str) -> int:
        # Durable: the events stay for the next attach; the count is for the log line.
        return self.state(emitter_id).queued

    def known(self, emitter_id: str) -> bool:
        def work(cur: sqlite3.Cursor) -> bool:
            cur.execute(self._q["known"], (emitter_id,))
            return cur.fetchone() is not None

        return self._run("read the emitters", work, READ)

    def _holder(self, row: Sequence[Any], now: float, gone: dict[str, bool]) -> Optional[str]:
        """The lease holder of a state row, or None when there is none, its lease expired, or
        its process is provably gone (``gone`` caches the answer per token within a call)."""
        holder, expires, token, lock = row[8], row[9], row[11], row[12]
        if holder is None or expires is None or expires < now:
            return None
        if token is not None and token == lock:
            if token not in gone:
                gone[token] = not self._holders().alive(token)
            if gone[token]:
                return None
        return holder  # type: ignore[no-any-return]

    def _state(self, row: Sequence[Any], now: float, gone: dict[str, bool]) -> EmitterState:
        return EmitterState(
            emitter_id=row[0],
            queued=row[1],
            failed=row[2],
            paused=bool(row[3]),
            hold_until=row[4],
            last_try_at=row[5],
            failing_since=row[6],
            next_due=row[7],
            oldest_queued_at=row[10],
            lease_holder=self._holder(row, now, gone),
        )

    def state(self, emitter_id: str) -> EmitterState:
        def work(cur: sqlite3.Cursor) -> EmitterState:
            row = cur.execute(self._q["state"], (emitter_id,)).fetchone()
            return EmitterState(emitter_id) if row is None else self._state(row, time.time(), {})

        return self._run("read the emitter's state", work, READ)

    def states(self) -> list[EmitterState]:
        def work(cur: sqlite3.Cursor) -> list[EmitterState]:
            now, gone = time.time(), dict[str, bool]()
            rows = cur.execute(self._q["states"]).fetchall()
            return [self._state(row, now, gone) for row in rows]

        return self._run("read the emitters", work, READ)

    def poll(self) -> list[EmitterState]:
        def work(cur: sqlite3.Cursor) -> list[EmitterState]:
            now, gone = time.time(), dict[str, bool]()
            rows = cur.execute(self._q["poll"]).fetchall()
            return [self._state(row, now, gone) for row in rows]

        return self._run("poll the emitters", work, READ)

    def set_paused(self, emitter_id: str, paused: bool) -> None:
        def work(cur: sqlite3.Cursor) -> None:
            cur.execute(self._q["register"], (emitter_id,))
            if paused:
                cur.execute(self._q["pause"], (emitter_id,))
            else:
                cur.execute(self._q["restart"], (emitter_id,))
                cur.execute(self._q["due_now"], (emitter_id,))

        self._run("pause the emitter" if paused else "restart the emitter", work)

    def set_hold(self, emitter_id: str, lease: Lease, until: float) -> None:
        self._run(
            "record a Retry-After hold",
            lambda cur: cur.execute(self._q["hold"], (until, emitter_id, lease.token)),
            WRITE,
        )

    def set_failing_since(self, emitter_id: str, lease: Lease, since: Optional[float]) -> None:
        self._run(
            "record when the tries began to fail",
            lambda cur: cur.execute(self._q["failing_since"], (since, emitter_id, lease.token)),
            WRITE,
        )

    # -- leases --------------------------------------------------------------------------------

    def _holders(self) -> _holders.LockFile:
        """This process's view of the lock file beside the store (see ``_holders``)."""
        found = _holders.lock_file(self._leases_path)
        found.mode = self._mode
        return found

    def acquire(self, emitter_id: str, lease: Lease) -> bool:
        """Take the lease if it is free, expired, ``lease``'s, or its holder's process is gone.

        Before its token is first written, this process takes the token's lock in the file
        ``<path>-leases`` and keeps it until it ends, so that other processes can tell at
        once when it is gone (kill -9 included) instead of waiting for ``lease_timeout``.
        """
        try:
            self._holders().claim(lease.token)
        except OSError as exc:
            raise StoreError(
                f"SQLite store {self.path}: cannot take the lease: cannot lock "
                f"{self._leases_path}: {exc.strerror or type(exc).__name__}"
            ) from exc

        def first(cur: sqlite3.Cursor) -> bool:
            now = time.time()
            cur.execute(
                self._q["acquire"],
                (lease.holder, lease.token, now + self.lease_timeout, emitter_id, now),
            )
            return bool(cur.rowcount)

        def missing(cur: sqlite3.Cursor) -> bool:
            if first(cur):
                return True
            row = (emitter_id, lease.holder, lease.token, time.time() + self.lease_timeout)
            cur.execute(self._q["acquire_new"], row)
            return bool(cur.rowcount)

        # One statement when the row exists (the usual case: register made it).
        if self._run("take the lease", first, WRITE) or self._run("take the lease", missing):
            return True
        return self._take_over(emitter_id, lease)

    def _take_over(self, emitter_id: str, lease: Lease) -> bool:
        """Take the lease from a holder whose lock is free (its process is gone)."""

        def holder(cur: sqlite3.Cursor) -> Optional[str]:
            row = cur.execute(self._q["lease_of"], (emitter_id,)).fetchone()
            # Only a token whose lock was taken can be proved gone (lease_lock == token);
            # a lease of older code waits for its expiry.
            return row[0] if row is not None and row[0] is not None and row[0] == row[1] else None

        token = self._run("take the lease", holder, READ)
        if token is None or token == lease.token or self._holders().alive(token):
            return False

        def take(cur: sqlite3.Cursor) -> bool:
            expires = time.time() + self.lease_timeout
            cur.execute(
                self._q["take_over"], (lease.holder, lease.token, expires, emitter_id, token)
            )
            return bool(cur.rowcount)

        return self._run("take the lease", take, WRITE)

    def renew(self, lease: Lease, emitter_ids: Collection[str]) -> set[str]:
        ids = list(emitter_ids)
        if not ids:
            return set()

        def work(cur: sqlite3.Cursor) -> set[str]:
            held: set[str] = set()
            expires = time.time() + self.lease_timeout
            for marks, chunk in _padded(ids):
                cur.execute(
                    self._q["renew"].replace("__IDS__", marks), [expires, lease.token, *chunk]
                )
                cur.execute(self._q["held"].replace("__IDS__", marks), [lease.token, *chunk])
                held.update(row[0] for row in cur.fetchall())
            return held

        return self._run("renew the leases", work)

    def release(self, emitter_id: str, lease: Lease, next_due: float = 0.0) -> None:
        self._run(
            "let go of the lease",
            lambda cur: cur.execute(self._q["release"], (next_due, emitter_id, lease.token)),
            WRITE,
        )

    # -- events, under a lease -----------------------------------------------------------------

    def fetch(
        self, emitter_id: str, lease: Lease, limit: int, skip: Collection[int] = ()
    ) -> list[StoredEvent]:
        if limit <= 0:
            return []

        skipped = skip if isinstance(skip, (set, frozenset)) else set(skip)

        def work(cur: sqlite3.Cursor) -> list[StoredEvent]:
            # One SQL string whatever ``skip`` holds: read past the skipped ones instead.
            # (fetchall: a statement left unfinished would keep a WAL snapshot open.)
            events = []
            for row in cur.execute(self._q["fetch"], (emitter_id, limit + len(skipped))).fetchall():
                if row[0] in skipped:
                    continue
                events.append(self._event(emitter_id, row))
                if len(events) >= limit:
                    break
            return events

        return self._run("fetch events", work, READ)

    def queued_events(self, emitter_id: str, limit: int = 20) -> list[StoredEvent]:
        limit = _validate.integer("limit", limit, minimum=0)
        if limit == 0:
            return []

        def work(cur: sqlite3.Cursor) -> list[StoredEvent]:
            # The fetch query names no lease in this store (begin_try checks it): the same
            # plain read, in no transaction and under no write lock.
            rows = cur.execute(self._q["fetch"], (emitter_id, limit)).fetchall()
            return [self._event(emitter_id, row) for row in rows]

        return self._run("read the queued events", work, READ)

    @staticmethod
    def _event(emitter_id: str, row: Sequence[Any]) -> StoredEvent:
        """A StoredEvent from a row of the ``fetch`` query."""
        (seq, event, request_id, body, key, attempts, next_at, emitted_at, status, error,
         trace) = row
        return StoredEvent(
            seq, emitter_id, event, request_id, body, key, attempts, next_at, emitted_at,
            status, error, trace,
        )

    def _begin_statement(
        self, lease: Lease, event: StoredEvent, now: float
    ) -> tuple[str, tuple[Any, ...]]:
        return self._q["begin_try"], (
            event.attempts,
            now,
            event.next_at,
            event.seq,
            event.emitter_id,
            event.emitter_id,
            lease.token,
            now,
        )

    def _outcome_statement(
        self, kind: str, lease: Lease, event: StoredEvent
    ) -> tuple[str, tuple[Any, ...]]:
        """The statement that records one outcome, guarded by the token that made the try."""
        guard = (event.seq, event.emitter_id, event.emitter_id, lease.token)
        if kind == "finish":
            return self._q["finish"], guard
        if kind == "retry_later":
            return self._q["retry_later"], (
                event.attempts,
                event.next_at,
                event.status_code,
                event.error,
                *guard,
            )
        if kind == "give_up":
            return self._q["give_up"], (
                event.attempts,
                event.status_code,
                event.error,
                time.time(),
                *guard,
            )
        raise ValueError(
            f"outcome kind must be 'retry_later', 'finish' or 'give_up', got {kind!r}"
        )

    def _one(self, action: str, statement: tuple[str, tuple[Any, ...]]) -> bool:
        def work(cur: sqlite3.Cursor) -> bool:
            cur.execute(*statement)
            return bool(cur.rowcount)

        return self._run(action, work, WRITE)

    def begin_try(self, lease: Lease, event: StoredEvent, now: float) -> bool:
        """Record that a try starts now, and ``event.next_at`` (when a try may follow if this
        one never ends: a holder that takes over after a death waits for it)."""
        return self._one("record a try", self._begin_statement(lease, event, now))

    def retry_later(self, lease: Lease, event: StoredEvent) -> bool:
        statement = self._outcome_statement("retry_later", lease, event)
        return self._one("record a failed try", statement)

    def finish(self, lease: Lease, event: StoredEvent) -> bool:
        return self._one("record a delivery", self._outcome_statement("finish", lease, event))

    def give_up(self, lease: Lease, event: StoredEvent) -> bool:
        return self._one(
            "record a given-up event", self._outcome_statement("give_up", lease, event)
        )

    def settle(
        self,
        lease: Lease,
        outcomes: Sequence[tuple[str, StoredEvent]],
        begin: Optional[StoredEvent] = None,
        now: float = 0.0,
    ) -> tuple[list[bool], Optional[bool]]:
        """Record ``outcomes`` and, if given, the start of ``begin``'s try, in ONE transaction.

        ``outcomes`` is a sequence of ``(kind, event)`` with kind ``"retry_later"``,
        ``"finish"`` or ``"give_up"``, each guarded as its single call (by the token that
        made the try); ``begin`` is guarded as :meth:`begin_try` (a live lease, not paused,
        still queued), at ``now``, and is recorded after the outcomes. One commit (one fsync
        with ``synchronous="full"``) instead of one per call.

        Returns:
            Per outcome, whether it was recorded; and whether ``begin``'s try may be sent
            (None when no ``begin`` was given).

        Raises:
            ValueError: an unknown outcome kind (nothing recorded).
            StoreError: the store failed (nothing recorded).
        """
        statements = [self._outcome_statement(kind, lease, event) for kind, event in outcomes]
        if begin is not None:
            statements.append(self._begin_statement(lease, begin, now))
        if not statements:
            return [], None

        def work(cur: sqlite3.Cursor) -> list[bool]:
            done = []
            for statement in statements:
                cur.execute(*statement)
                done.append(bool(cur.rowcount))
            return done

        # One statement alone is its own transaction: no BEGIN/COMMIT round.
        mode = WRITE if len(statements) == 1 else TRANSACTION
        done = self._run("record tries and outcomes", work, mode)
        if begin is None:
            return done, None
        return done[:-1], done[-1]

    # -- flush ---------------------------------------------------------------------------------

    def high_water(self, emitter_ids: Collection[str]) -> dict[str, int]:
        ids = list(emitter_ids)
        if not ids:
            return {}

        def work(cur: sqlite3.Cursor) -> dict[str, int]:
            marks: dict[str, int] = {}
            for placeholders, chunk in _padded(ids):
                cur.execute(self._q["high_water"].replace("__IDS__", placeholders), chunk)
                marks.update((row[0], row[1]) for row in cur.fetchall() if row[1] is not None)
            return marks

        return self._run("read the queues", work, READ)

    def queued_upto(self, emitter_id: str, seq: int) -> int:
        def work(cur: sqlite3.Cursor) -> int:
            count: int = cur.execute(self._q["queued_upto"], (emitter_id, seq)).fetchone()[0]
            return count

        return self._run("read the queue", work, READ)

    # -- dead letters --------------------------------------------------------------------------

    def failed(self, emitter_id: str, limit: int = 100) -> list[FailedEvent]:
        def work(cur: sqlite3.Cursor) -> list[FailedEvent]:
            return [
                FailedEvent(
                    emitter_id=emitter_id,
                    event=row[0],
                    request_id=row[1],
                    attempts=row[2],
                    status_code=row[3],
                    error=row[4],
                    failed_at=datetime.datetime.fromtimestamp(row[5], datetime.timezone.utc),
                    body=row[6],
                )
                for row in cur.execute(self._q["failed"], (emitter_id, limit)).fetchall()
            ]

        return self._run("read the failed events", work, READ)

    def replay(self, emitter_id: str, request_ids: Optional[Collection[str]] = None) -> int:
        wanted = None if request_ids is None else sorted(set(request_ids))

        def work(cur: sqlite3.Cursor) -> int:
            if wanted is None:
                chosen = cur.execute(self._q["failed_seqs"], (emitter_id,)).fetchall()
            else:
                chosen = []
                for request_id in wanted:
                    chosen += cur.execute(
                        self._q["failed_seq"], (emitter_id, request_id)
                    ).fetchall()
                chosen.sort()
            if not chosen:
                return 0
            # In seq order, so AUTOINCREMENT gives them new seqs at the tail in emit order.
            cur.executemany(self._q["requeue"], chosen)
            cur.executemany(self._q["delete"], chosen)
            return len(chosen)

        return self._run("replay failed events", work)

    def purge(self, emitter_id: str) -> int:
        def work(cur: sqlite3.Cursor) -> int:
            cur.execute(self._q["purge"], (emitter_id,))
            return cur.rowcount

        return self._run("purge the emitter's events", work, WRITE)
