"""The SQLite file under the store: connections, waiting for locks, the schema, changes.

:class:`SQLiteFile` is what :class:`~webhooks_emitter.stores.sqlite.SQLiteStore` runs its
statements through; the store's own module holds what those statements do. Here:

- the pool of connections (``_sql.Pool``: fork-safe; WAL mode, the ``synchronous`` level,
  no busy timeout of their own);
- :meth:`SQLiteFile.run`: one read, one write or one transaction on a pooled cursor, with
  this process's write lock (threads hand over at once) and the wait for other processes'
  locks in steps of 50 us to 1 ms up to ``timeout``, and the checkpoints made by
  delivering calls;
- the schema: made or upgraded by the migrations in ``sql/sqlite_schema_<version>.sql``
  inside one ``BEGIN IMMEDIATE`` transaction, checked against ``compatible_from``;
- ``wait_for_change``: ``PRAGMA data_version`` on a connection of its own;
- the errors: a :class:`StoreError` naming the file and the cause, never a password (the
  file has none).
"""

from __future__ import annotations

import importlib.resources
import os
import pathlib
import sqlite3
import threading
import time
import urllib.parse
from typing import Callable, Optional, TypeVar

from . import _sql
from ._base import StoreError

__all__ = ["COMPATIBLE_FROM", "SCHEMA_VERSION", "SQLiteFile", "schema_statements"]

_T = TypeVar("_T")
Pair = tuple[sqlite3.Connection, sqlite3.Cursor]  # a pooled connection and its cursor

#: The schema this code makes and understands.
SCHEMA_VERSION = 3

#: Per schema version (from 1): the oldest version whose code can use a file at that version.
#: The statements of version N are in ``sql/sqlite_schema_N.sql``.
COMPATIBLE_FROM = {1: 1, 2: 1, 3: 1}

#: How run() runs its work: a read, one autocommit write, a BEGIN IMMEDIATE transaction.
READ, WRITE, TRANSACTION = 0, 1, 2

#: The first and longest pause between two tries of a write that met another process's lock.
_FIRST_PAUSE = 0.00005
_LAST_PAUSE = 0.001

#: WAL pages after which SQLite checkpoints inside a commit: a backstop (see _checkpoint).
_CHECKPOINT_PAGES = 2000

#: Writes of this process after which a delivering call checkpoints (see _checkpoint).
_CHECKPOINT_WRITES = 200


def _read_sql_files() -> dict[str, str]:
    folder = importlib.resources.files(__package__).joinpath("sql")
    return {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.startswith("sqlite_") and entry.name.endswith(".sql")
    }


# Read when the module is imported (a few KB): a service that drops its privileges after
# importing the library, or whose installation becomes unreadable to it, still opens stores.
SQL_FILES = _read_sql_files()


def schema_statements(version: int) -> list[str]:
    """The statements that make schema ``version`` from the one before, in order."""
    statements, current = [], ""
    for line in SQL_FILES[f"sqlite_schema_{version}.sql"].splitlines(keepends=True):
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


class SQLiteFile:
    """The store's file: pooled connections, locks, schema and change notices.

    Args:
        path: the file, absolute.
        synchronous: ``"normal"`` or ``"full"`` (checked by the store).
        timeout: the most seconds a call waits for a lock.
        queries: the store's named statements (``table_names``, ``meta`` and ``set_meta``
            are used here).
        poll_interval: seconds between two looks of :meth:`wait_for_change`.

    Attributes:
        pool: the connections (a ``_sql.Pool`` of (connection, cursor) pairs).
        writing: this process's write lock (see :meth:`_lock_writes`).
    """

    def __init__(
        self,
        path: str,
        synchronous: str,
        timeout: float,
        queries: dict[str, str],
        poll_interval: float,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.timeout = timeout
        self.poll_interval = poll_interval
        self._q = queries
        self._uri = pathlib.Path(path).as_uri() + "?mode=rw"
        self.pool: _sql.Pool[Pair] = _sql.Pool(
            self._connect, self._close_pair, on_fork=self._forked
        )
        self._take = self.pool.take  # the hot path: no call in between
        self._discard = self.pool.discard
        self._watch: Optional[sqlite3.Connection] = None  # for wait_for_change only
        self._watch_lock = threading.Lock()
        self._data_version: Optional[int] = None
        self._wake = threading.Event()
        self.writing = threading.Lock()  # see _lock_writes
        self._writes = 0  # writes since the last checkpoint (see _checkpoint)

    def after_fork(self) -> None:
        """In a forked child: see ``Store.after_fork``; a no-op otherwise."""
        self.pool.after_fork()

    def close(self) -> None:
        """Close the connections (those in use when they come back)."""
        self.pool.close()  # in a forked child: only sets the inherited ones aside
        with self._watch_lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None
                self._data_version = None

    def wake(self) -> None:
        """Cut a :meth:`wait_for_change` short."""
        self._wake.set()

    def _connect(self) -> Pair:
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
            raise self.error("open the file", exc) from exc
        try:
            conn.execute("PRAGMA synchronous = " + self.synchronous.upper())
            # Checkpoints are made by delivering calls (see _checkpoint); SQLite's own, in
            # whichever commit finds the WAL this long, is the backstop.
            conn.execute(f"PRAGMA wal_autocheckpoint = {_CHECKPOINT_PAGES}")
            # From now on no busy timeout: run() waits for other processes in finer steps.
            conn.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as exc:
            conn.close()
            raise self.error("open the file", exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn, conn.cursor()

    @staticmethod
    def _close_pair(pair: Pair) -> None:
        pair[0].close()

    def _give(self, pair: Pair) -> None:
        # One left inside a transaction it could not roll back is closed, never reused.
        self.pool.give(pair, not pair[0].in_transaction)

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
        self.writing = threading.Lock()

    def error(self, action: str, exc: BaseException) -> StoreError:
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

    def migrate_hint(self) -> str:
        """What to run to create or upgrade the schema, for error messages."""
        url = "sqlite:///" + urllib.parse.quote(self.path)  # four slashes: the path is absolute
        return f"run `webhooks-emitter migrate --store {url}`"

    def _lock_writes(self, action: str) -> float:
        """Take this process's write lock, within ``timeout``; returns the seconds waited.

        The process's writers queue on this lock, which hands over at once, rather than on
        SQLite's lock: an emit that meets the delivering thread's commit waits for that
        commit only. SQLite's lock still orders the processes (see :meth:`run`).

        Raises:
            StoreError: another thread held the lock past ``timeout``.
        """
        if self.writing.acquire(False):
            return 0.0
        started = time.monotonic()
        if not self.writing.acquire(True, self.timeout):
            raise StoreError(
                f"SQLite store {self.path}: cannot {action}: another thread of this process "
                f"held the store's write lock past the {self.timeout:g} s timeout"
            )
        return time.monotonic() - started

    def _unlock_writes(self) -> None:
        self._writes += 1  # under the lock: see _checkpoint
        self.writing.release()

    def run(
        self,
        action: str,
        work: Callable[[sqlite3.Cursor], _T],
        mode: int = TRANSACTION,
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
            waited = self._lock_writes(action) if mode != READ else 0.0
            try:
                deadline = 0.0
                pause = _FIRST_PAUSE
                while True:
                    try:
                        if mode == TRANSACTION:
                            cur.execute("BEGIN IMMEDIATE")
                        result = work(cur)
                        if mode == TRANSACTION:
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
                if mode != READ:
                    self._unlock_writes()
        except sqlite3.Error as exc:
            raise self.error(action, exc) from exc
        else:
            if checkpoint and mode != READ and self._writes >= _CHECKPOINT_WRITES:
                self._checkpoint(pair)
            return result
        finally:
            self._give(pair)

    def _checkpoint(self, pair: Pair) -> None:
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

    def _rollback(self, pair: Pair) -> None:
        if pair[0].in_transaction:
            try:
                pair[1].execute("ROLLBACK")
            except sqlite3.Error:
                self._discard(pair)  # never pooled half-way through a transaction

    def prepare(self, create: bool) -> int:
        if create:
            try:
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
            except OSError as exc:
                raise self.error("create the file", exc) from exc
        elif not os.path.exists(self.path):
            raise StoreError(
                f"SQLite store {self.path}: the file does not exist; {self.migrate_hint()} "
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
            raise self.error("open the file", exc) from exc
        finally:
            self._give(pair)

    def _prepare_on(self, pair: Pair, create: bool) -> int:
        cur = pair[1]
        version, compatible = self._version(cur)
        if version < SCHEMA_VERSION and not create:
            what = "has no schema" if version == 0 else f"has schema version {version}"
            raise StoreError(
                f"SQLite store {self.path} {what}; this library needs version "
                f"{SCHEMA_VERSION}: {self.migrate_hint()} (this store was made with "
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
        self.pool.after_fork()  # a no-op unless this is a forked child
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
