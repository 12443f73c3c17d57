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
once; other processes are waited for by :meth:`SQLiteStore._run`, in steps of 50 us to
1 ms, not by SQLite's busy handler (which sleeps 1, 2, 5 ms...), up to ``timeout``. A
call into SQLite lets go of Python's GIL and must get it back, so fewer calls per write
also means fewer waits behind a delivering thread. Checkpoints (copying the WAL back into
the file, with fsyncs) are made by calls that record deliveries, outside that lock, not
inside an emit.

Connections are pooled (``_sql.Pool``), not kept per thread: each call takes an idle
connection (or opens one) and puts it back, so threads that come and go (an emitter's
thread ends when it is idle) do not leave connections behind. A forked child notices the
new pid, opens connections of its own and leaves the inherited ones alone: it neither uses
nor closes them (closing runs SQLite's close path in the child, on a file its parent still
uses).
"""

from __future__ import annotations

import datetime
import importlib.resources
import math
import os
import pathlib
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections.abc import Collection, Iterator, Sequence
from typing import Any, Callable, Optional, TypeVar, Union

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

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

_T = TypeVar("_T")
_Pair = tuple[sqlite3.Connection, sqlite3.Cursor]  # a pooled connection and its cursor

#: The schema this code makes and understands.
SCHEMA_VERSION = 3

#: Per schema version (from 1): the oldest version whose code can use a file at that version.
#: The statements of version N are in ``sql/sqlite_schema_N.sql``.
COMPATIBLE_FROM = {1: 1, 2: 1, 3: 1}

SYNCHRONOUS = ("normal", "full")

#: Ids per statement in renew/high_water (SQLite allows 999 parameters before 3.32).
_CHUNK = 256

# How _run runs its work: a read, one autocommit write, a BEGIN IMMEDIATE transaction.
_READ, _WRITE, _TRANSACTION = 0, 1, 2

#: The first and longest pause between two tries of a write that met another process's lock.
_FIRST_PAUSE = 0.00005
_LAST_PAUSE = 0.001

#: WAL pages after which SQLite checkpoints inside a commit: a backstop (see _checkpoint).
_CHECKPOINT_PAGES = 2000

#: Writes of this process after which a delivering call checkpoints (see _checkpoint).
_CHECKPOINT_WRITES = 200

#: Whether StoredEvent carries trace_context (the engine's part of issue 20); until it does,
#: the column is written and read, and fetch leaves it out of the events it makes.
_TRACED = "trace_context" in StoredEvent.__slots__



def _read_sql_files() -> dict[str, str]:
    folder = importlib.resources.files(__package__).joinpath("sql")
    return {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.startswith("sqlite_") and entry.name.endswith(".sql")
    }


# Read when the module is imported (a few KB): a service that drops its privileges after
# importing the library, or whose installation becomes unreadable to it, still opens stores.
_SQL_FILES = _read_sql_files()


def _load_queries() -> dict[str, str]:
    """The named statements of ``sql/sqlite_queries.sql``, ``__STATE_COLUMNS__`` filled."""
    queries = _sql.parse_queries(_SQL_FILES["sqlite_queries.sql"])
    columns = queries.pop("state_columns")
    return {name: query.replace("__STATE_COLUMNS__", columns) for name, query in queries.items()}


_QUERIES = _load_queries()


def schema_statements(version: int) -> list[str]:
    """The statements that make schema ``version`` from the one before, in order."""
    statements, current = [], ""
    for line in _SQL_FILES[f"sqlite_schema_{version}.sql"].splitlines(keepends=True):
        if not current and (not line.strip() or line.lstrip().startswith("--")):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` says another connection holds the lock (SQLITE_BUSY and its kinds)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+; the message before
    if isinstance(code, int):
        return code & 0xFF == 5
    text = str(exc)
    return "database is locked" in text or "busy" in text


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


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

    The file is in WAL mode and is created with mode 0600 (its ``-wal`` and ``-shm`` files
    take the same mode). It must be on a local disk: SQLite's locks do not hold on NFS or
    other network file systems, and two hosts must never share one file (use
    ``PostgresStore`` for that). It should be a file of its own: a file that holds other
    tables is refused. Uses only the standard library's ``sqlite3``.

    Args:
        path: the file (a ``str`` or ``os.PathLike``); relative paths are taken from the
            current directory when the store is made.
        synchronous: ``"normal"`` (a commit survives the death of the process) or ``"full"``
            (it also survives a power cut, at the cost of an fsync per commit).
        lease_timeout: seconds an emitter's lease lasts without renewal.
        timeout: the most seconds a call waits for a lock (another process's, or another
            thread's write) before it raises :class:`StoreError`.
        create: create or upgrade the schema when needed. With ``False`` no DDL is ever run:
            a missing or older schema is a :class:`StoreError` telling to run
            ``webhooks-emitter migrate --store URL``.

    Attributes:
        path: the file, absolute (also what :meth:`describe` answers).
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
        self.lease_timeout = _positive("lease_timeout", lease_timeout)
        self.timeout = _positive("timeout", timeout)
        self.create = create
        self._uri = pathlib.Path(self.path).as_uri() + "?mode=rw"
        self._q = _QUERIES
        self._pool: _sql.Pool[_Pair] = _sql.Pool(
            self._connect, self._close_pair, on_fork=self._forked
        )
        self._take = self._pool.take  # the hot path: no call in between
        self._discard = self._pool.discard
        self._watch: Optional[sqlite3.Connection] = None  # for wait_for_change only
        self._watch_lock = threading.Lock()
        self._data_version: Optional[int] = None
        self._wake = threading.Event()
        self._writing = threading.Lock()  # see _lock_writes
        self._writes = 0  # writes since the last checkpoint (see _checkpoint)
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

    # -- connections ---------------------------------------------------------------------------

    def _connect(self) -> _Pair:
        """A new connection, set up, and its cursor (the pool's factory).

        Raises:
            StoreError: the file cannot be opened.
        """
        try:
            conn = sqlite3.connect(
                self._uri,
                timeout=self.timeout,
                isolation_level=None,
                check_same_thread=False,
                uri=True,
            )
        except sqlite3.Error as exc:
            raise self._error("open the file", exc) from exc
        try:
            conn.execute("PRAGMA synchronous = " + self.synchronous.upper())
            # Checkpoints are made by delivering calls (see _checkpoint); SQLite's own, in
            # whichever commit finds the WAL this long, is the backstop.
            conn.execute(f"PRAGMA wal_autocheckpoint = {_CHECKPOINT_PAGES}")
            # From now on no busy timeout: _run waits for other processes in finer steps.
            conn.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as exc:
            conn.close()
            raise self._error("open the file", exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn, conn.cursor()

    @staticmethod
    def _close_pair(pair: _Pair) -> None:
        pair[0].close()

    def _give(self, pair: _Pair) -> None:
        # One left inside a transaction it could not roll back is closed, never reused.
        self._pool.give(pair, not pair[0].in_transaction)

    def _forked(self) -> None:
        # In a forked child (the pool noticed): the watch connection is left untouched like
        # the pooled ones, and the locks (possibly held by threads that do not exist here)
        # are made anew.
        if self._watch is not None:
            _sql.keep_forever(self._watch)
        self._watch = None
        self._data_version = None
        self._watch_lock = threading.Lock()
        self._wake = threading.Event()
        self._writing = threading.Lock()

    def after_fork(self) -> None:
        self._pool.after_fork()

    def close(self) -> None:
        self._pool.close()  # in a forked child: only sets the inherited ones aside
        with self._watch_lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None
                self._data_version = None
        self._holders().close_if_unclaimed()

    # -- errors and transactions ---------------------------------------------------------------

    def _error(self, action: str, exc: BaseException) -> StoreError:
        """A StoreError naming the file, what was being done and why it failed."""
        if isinstance(exc, OSError):
            cause = exc.strerror or type(exc).__name__
            return StoreError(f"SQLite store {self.path}: cannot {action}: {cause}")
        message = str(exc)
        code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+; the message before
        primary = code & 0xFF if isinstance(code, int) else None
        lowered = message.lower()
        if primary in (5, 6) or "locked" in lowered or "busy" in lowered:
            cause = (
                f"the database is locked: another connection held it past the "
                f"{self.timeout:g} s timeout"
            )
        elif primary == 13 or "full" in lowered:
            cause = "the disk is full (or the file reached its size limit)"
        elif primary == 8 or "readonly" in lowered:
            cause = "the file is read-only: check the permissions of the file and its directory"
        elif primary == 26 or "not a database" in lowered:
            cause = "the file is not an SQLite database (or its header is corrupt)"
        elif primary == 11 or "malformed" in lowered:
            cause = "the database file is corrupt"
        elif primary == 14 or "unable to open" in lowered:
            cause = (
                "cannot open the file or create its -wal and -shm files beside it: check that"
                " the directory exists and is writable"
            )
        elif primary == 10 or "i/o" in lowered:
            cause = "an I/O error"
        else:
            cause = type(exc).__name__
        return StoreError(f"SQLite store {self.path}: cannot {action}: {cause} ({message})")

    def _migrate_hint(self) -> str:
        url = "sqlite://" + urllib.parse.quote(self.path)
        return f"run `webhooks-emitter migrate --store {url}`"

    def _lock_writes(self, action: str) -> float:
        """Take this process's write lock, within ``timeout``; returns the seconds waited.

        The process's writers queue on this lock, which hands over at once, rather than on
        SQLite's lock: an emit that meets the delivering thread's commit waits for that
        commit only. SQLite's lock still orders the processes (see :meth:`_run`).

        Raises:
            StoreError: another thread held the lock past ``timeout``.
        """
        if self._writing.acquire(False):
            return 0.0
        started = time.monotonic()
        if not self._writing.acquire(True, self.timeout):
            raise StoreError(
                f"SQLite store {self.path}: cannot {action}: another thread of this process "
                f"held the store's write lock past the {self.timeout:g} s timeout"
            )
        return time.monotonic() - started

    def _unlock_writes(self) -> None:
        self._writes += 1  # under the lock: see _checkpoint
        self._writing.release()

    def _run(
        self,
        action: str,
        work: Callable[[sqlite3.Cursor], _T],
        mode: int = _TRANSACTION,
        checkpoint: bool = True,
    ) -> _T:
        """Run ``work`` on a pooled cursor: a read, one write, or a write transaction; a
        write may then make a checkpoint (not an emit's: see _checkpoint).

        When another process holds SQLite's lock (SQLITE_BUSY), the work is rolled back and
        run again after a pause of 50 us, doubling up to 1 ms, until ``timeout`` (counted
        from the call, the wait for this process's write lock included). The connections
        have no busy timeout of their own: SQLite's busy handler sleeps 1, 2, then 5 ms, so
        an emit that met another process's commit of some microseconds took 1-8 ms. So
        ``work`` must be safe to run again: one write, or writes inside the transaction.
        """
        pair = self._take()
        cur = pair[1]
        try:
            waited = self._lock_writes(action) if mode != _READ else 0.0
            try:
                deadline = 0.0
                pause = _FIRST_PAUSE
                while True:
                    try:
                        if mode == _TRANSACTION:
                            cur.execute("BEGIN IMMEDIATE")
                        result = work(cur)
                        if mode == _TRANSACTION:
                            cur.execute("COMMIT")
                        break
                    except sqlite3.OperationalError as exc:
                        self._rollback(pair)
                        if not _busy(exc):
                            raise
                        now = time.monotonic()
                        if not deadline:
                            deadline = now + self.timeout - waited
                        if now >= deadline:
                            raise
                    except BaseException:
                        self._rollback(pair)
                        raise
                    time.sleep(pause)
                    pause = min(pause * 2, _LAST_PAUSE)
            finally:
                if mode != _READ:
                    self._unlock_writes()
        except sqlite3.Error as exc:
            raise self._error(action, exc) from exc
        else:
            if checkpoint and mode != _READ and self._writes >= _CHECKPOINT_WRITES:
                self._checkpoint(pair)
            return result
        finally:
            self._give(pair)

    def _checkpoint(self, pair: _Pair) -> None:
        """Copy the WAL back into the file, outside the write lock, in a delivering call.

        SQLite would do it inside whichever commit finds the WAL long (two fsyncs, some
        milliseconds), most often an emit, and with the write lock held, so the other
        threads' emits would wait too. Calls that record tries and outcomes do it instead,
        after every ``_CHECKPOINT_WRITES`` writes of this process, without waiting for
        anyone (PASSIVE). SQLite's own checkpoint stays as a backstop, at a WAL of
        ``_CHECKPOINT_PAGES``, for files that no process delivers from.
        """
        self._writes = 0
        try:
            pair[1].execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            pass  # the write it follows succeeded; the next checkpoint will do

    def _rollback(self, pair: _Pair) -> None:
        if pair[0].in_transaction:
            try:
                pair[1].execute("ROLLBACK")
            except sqlite3.Error:
                self._discard(pair)  # never pooled half-way through a transaction

    # -- life ----------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the file and create, upgrade or check its schema (see ``create``).

        Also checks that the file can be written within ``timeout``. May be called again.

        Raises:
            StoreError: as for the constructor.
        """
        self.schema_version = self._prepare(self.create)
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
        self.schema_version = self._prepare(True)
        return self.schema_version

    def _prepare(self, create: bool) -> int:
        if create:
            try:
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
            except OSError as exc:
                raise self._error("create the file", exc) from exc
        elif not os.path.exists(self.path):
            raise StoreError(
                f"SQLite store {self.path}: the file does not exist; {self._migrate_hint()} "
                "to create it (this store was made with create=False, so it runs no DDL)"
            )
        pair = self._take()
        try:
            self._lock_writes("open the file")
            try:
                # Setting up a file (maybe racing other processes' first open) may wait
                # long, and only once: SQLite's own busy handler serves here.
                pair[1].execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                try:
                    return self._prepare_on(pair, create)
                finally:
                    pair[1].execute("PRAGMA busy_timeout = 0")
            finally:
                self._unlock_writes()
        except sqlite3.Error as exc:
            self._rollback(pair)
            raise self._error("open the file", exc) from exc
        finally:
            self._give(pair)

    def _prepare_on(self, pair: _Pair, create: bool) -> int:
        cur = pair[1]
        version, compatible = self._version(cur)
        if version < SCHEMA_VERSION and not create:
            what = "has no schema" if version == 0 else f"has schema version {version}"
            raise StoreError(
                f"SQLite store {self.path} {what}; this library needs version "
                f"{SCHEMA_VERSION}: {self._migrate_hint()} (this store was made with "
                "create=False, so it runs no DDL)"
            )
        self._check_newer(version, compatible)
        self._wal(cur)
        cur.execute("BEGIN IMMEDIATE")  # also proves the file is writable within timeout
        try:
            version, compatible = self._version(cur)  # another process may have migrated
            self._check_newer(version, compatible)
            for made in range(version + 1, SCHEMA_VERSION + 1):
                for statement in schema_statements(made):
                    cur.execute(statement)
                cur.executemany(
                    self._q["set_meta"],
                    [("schema_version", made), ("compatible_from", COMPATIBLE_FROM[made])],
                )
                version = made
            cur.execute("COMMIT")
        except BaseException:
            self._rollback(pair)
            raise
        return version

    def _version(self, cur: sqlite3.Cursor) -> tuple[int, int]:
        """(schema_version, compatible_from) of the file; (0, 0) for an empty file."""
        names = {row[0] for row in cur.execute(self._q["table_names"])}
        if "meta" not in names:
            if names:
                raise StoreError(
                    f"SQLite store {self.path}: the file holds other tables "
                    f"({', '.join(sorted(names)[:5])}) and no webhooks_emitter schema; "
                    "give the store a file of its own"
                )
            return 0, 0
        meta = dict(cur.execute(self._q["meta"]).fetchall())
        return int(meta.get("schema_version", 0)), int(meta.get("compatible_from", 0))

    def _check_newer(self, version: int, compatible: int) -> None:
        if version > SCHEMA_VERSION and compatible > SCHEMA_VERSION:
            raise StoreError(
                f"SQLite store {self.path}: the store's schema version {version} is newer "
                f"than this library understands ({SCHEMA_VERSION}); upgrade webhooks_emitter"
            )

    def _wal(self, cur: sqlite3.Cursor) -> None:
        """Put the file in WAL mode (persistent; a no-op once done)."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                mode = cur.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() == "wal":
                    return
                # Another process reading the file at this instant keeps the old mode.
                mode = cur.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() == "wal":
                    return
            except sqlite3.OperationalError as exc:
                # Changing the mode does not wait in the busy handler: another process
                # setting up the same new file holds its write lock for a moment.
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError("database is locked")
            time.sleep(0.005)  # a bounded retry loop on the file's lock, not a sync wait

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
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            changed = self._changed()
            if changed:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return changed is None
            if self._wake.wait(min(left, self.poll_interval)):
                self._wake.clear()
                return True

    def _changed(self) -> Optional[bool]:
        """Whether ``data_version`` moved since the last look; None if it cannot be read."""
        self._pool.after_fork()  # a no-op unless this is a forked child
        with self._watch_lock:
            try:
                if self._watch is None:
                    self._watch = sqlite3.connect(
                        self._uri,
                        timeout=self.timeout,
                        isolation_level=None,
                        check_same_thread=False,
                        uri=True,
                    )
                version: int = self._watch.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error:
                if self._watch is not None:
                    self._watch.close()
                self._watch = None
                self._data_version = None
                return None
            changed = version != self._data_version
            self._data_version = version
            return changed

    def wake(self) -> None:
        self._wake.set()

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
            getattr(message, "trace_context", None),
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
        mode = _TRANSACTION if len(targets) > 1 else _WRITE
        return self._run("store the event", work, mode, checkpoint=False)

    # -- emitters ------------------------------------------------------------------------------

    def register(self, emitter_id: str) -> None:
        self._run(
            "register an emitter",
            lambda cur: cur.execute(self._q["register"], (emitter_id,)),
            _WRITE,
        )

    def forget(self, emitter_id: str) -> int:
        # Durable: the events stay for the next attach; the count is for the log line.
        return self.state(emitter_id).queued

    def known(self, emitter_id: str) -> bool:
        def work(cur: sqlite3.Cursor) -> bool:
            cur.execute(self._q["known"], (emitter_id,))
            return cur.fetchone() is not None

        return self._run("read the emitters", work, _READ)

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

        return self._run("read the emitter's state", work, _READ)

    def states(self) -> list[EmitterState]:
        def work(cur: sqlite3.Cursor) -> list[EmitterState]:
            now, gone = time.time(), dict[str, bool]()
            rows = cur.execute(self._q["states"]).fetchall()
            return [self._state(row, now, gone) for row in rows]

        return self._run("read the emitters", work, _READ)

    def poll(self) -> list[EmitterState]:
        def work(cur: sqlite3.Cursor) -> list[EmitterState]:
            now, gone = time.time(), dict[str, bool]()
            rows = cur.execute(self._q["poll"]).fetchall()
            return [self._state(row, now, gone) for row in rows]

        return self._run("poll the emitters", work, _READ)

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
            _WRITE,
        )

    def set_failing_since(self, emitter_id: str, lease: Lease, since: Optional[float]) -> None:
        self._run(
            "record when the tries began to fail",
            lambda cur: cur.execute(self._q["failing_since"], (since, emitter_id, lease.token)),
            _WRITE,
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
        if self._run("take the lease", first, _WRITE) or self._run("take the lease", missing):
            return True
        return self._take_over(emitter_id, lease)

    def _take_over(self, emitter_id: str, lease: Lease) -> bool:
        """Take the lease from a holder whose lock is free (its process is gone)."""

        def holder(cur: sqlite3.Cursor) -> Optional[str]:
            row = cur.execute(self._q["lease_of"], (emitter_id,)).fetchone()
            # Only a token whose lock was taken can be proved gone (lease_lock == token);
            # a lease of older code waits for its expiry.
            return row[0] if row is not None and row[0] is not None and row[0] == row[1] else None

        token = self._run("take the lease", holder, _READ)
        if token is None or token == lease.token or self._holders().alive(token):
            return False

        def take(cur: sqlite3.Cursor) -> bool:
            expires = time.time() + self.lease_timeout
            cur.execute(
                self._q["take_over"], (lease.holder, lease.token, expires, emitter_id, token)
            )
            return bool(cur.rowcount)

        return self._run("take the lease", take, _WRITE)

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
            _WRITE,
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

        return self._run("fetch events", work, _READ)

    @staticmethod
    def _event(emitter_id: str, row: Sequence[Any]) -> StoredEvent:
        """A StoredEvent from a row of the ``fetch`` query."""
        if _TRACED:  # pragma: no cover - until the engine's StoredEvent has the field
            return StoredEvent(
                row[0], emitter_id, *row[1:10], trace_context=row[10]  # type: ignore[call-arg]
            )
        return StoredEvent(row[0], emitter_id, *row[1:10])

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

        return self._run(action, work, _WRITE)

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
        mode = _WRITE if len(statements) == 1 else _TRANSACTION
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

        return self._run("read the queues", work, _READ)

    def queued_upto(self, emitter_id: str, seq: int) -> int:
        def work(cur: sqlite3.Cursor) -> int:
            count: int = cur.execute(self._q["queued_upto"], (emitter_id, seq)).fetchone()[0]
            return count

        return self._run("read the queue", work, _READ)

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

        return self._run("read the failed events", work, _READ)

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

        return self._run("purge the emitter's events", work, _WRITE)
