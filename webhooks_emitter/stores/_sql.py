"""What both SQL stores share: a fork-safe connection pool and a loader of named queries.

``Pool``
    Idle connections of this process, handed out last-in first-out (the warmest first) and
    made on demand by a factory, so that threads that come and go leave no connection
    behind. In a forked child (noticed by the pid, so a fork made without Python's hooks is
    caught too) the connections inherited from the parent are neither used nor closed: a
    database connection's close path run in the child would act on a socket or file its
    parent still uses (SQLite's locks, PostgreSQL's session). They are kept referenced until
    the process ends, and the child makes its own.
    A pool may be bounded by ``size`` (PostgreSQL's connections are a server resource,
    SQLite's are not): :meth:`Pool.take` then waits, until a deadline, for one given back.
    It may check (``check``) an idle connection before handing it out, so that one the
    server closed meanwhile is replaced rather than failing the caller's call.
``parse_queries`` / ``load_queries``
    Statements kept in a ``.sql`` file of the package, each in a section that starts with a
    ``-- name: NAME`` line. Each statement becomes one line with single spaces (so a driver's
    statement cache sees one string per statement), comment lines dropped. Placeholders in
    the text (PostgreSQL's ``__SCHEMA__``) may be substituted before parsing.

Usage (both stores)::

    pool = Pool(connect, close, on_fork=reset_my_locks)          # SQLite: unbounded
    pool = Pool(connect, close, size=4, check=looks_alive)       # PostgreSQL
    conn = pool.take(deadline)
    try:
        ...
    finally:
        pool.give(conn, reusable=not conn.in_transaction)
    QUERIES = load_queries(__package__, "sql/sqlite_queries.sql")
"""

from __future__ import annotations

import importlib.resources
import os
import re
import threading
import time
from collections.abc import Mapping
from typing import Callable, Generic, Optional, TypeVar

__all__ = ["Pool", "keep_forever", "load_queries", "parse_queries", "read_resource"]

C = TypeVar("C")

_QUERY_NAME = re.compile(r"^-- name: (\w+)[ \t]*$", re.MULTILINE)

#: What was inherited across a fork: kept referenced so that no finalizer closes it.
_INHERITED: list[object] = []


def keep_forever(obj: object) -> None:
    """Keep ``obj`` alive until the process ends, interpreter finalization included.

    For connections inherited across a fork: a finalizer run at the child's exit would close
    what the parent still uses.
    """
    _INHERITED.append(obj)
    try:
        import ctypes

        # A reference that nothing gives back: even the module teardown at exit leaves the
        # object alive, so its close never runs in the child.
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
    except (ImportError, AttributeError):  # pragma: no cover - no ctypes (PyPy): the list
        pass


def parse_queries(text: str) -> dict[str, str]:
    """The named statements of ``text``: ``{name: statement}``, in file order.

    A section starts with a ``-- name: NAME`` line (NAME: letters, digits, ``_``) and runs to
    the next; text before the first is a preamble and ignored. Lines that start with
    ``--`` are dropped, runs of white space become one space and a final ``;`` goes.
    Statements must not hold a literal whose spaces matter, nor ``--`` inside a line.

    Raises:
        ValueError: a name is given twice, or a section is empty.
    """
    parts = _QUERY_NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        statement = " ".join(" ".join(lines).split()).rstrip(";").rstrip()
        if name in queries:
            raise ValueError(f"query {name!r} is named twice")
        if not statement:
            raise ValueError(f"query {name!r} is empty")
        queries[name] = statement
    return queries


def read_resource(
    package: str, resource: str, substitute: Optional[Mapping[str, str]] = None
) -> str:
    """The text of the file ``resource`` (a ``/``-separated path) of ``package``, each key
    of ``substitute`` replaced by its value."""
    node = importlib.resources.files(package)
    for part in resource.split("/"):
        node = node.joinpath(part)
    text = node.read_text(encoding="utf-8")
    for placeholder, value in (substitute or {}).items():
        text = text.replace(placeholder, value)
    return text


def load_queries(
    package: str, resource: str, substitute: Optional[Mapping[str, str]] = None
) -> dict[str, str]:
    """:func:`parse_queries` of :func:`read_resource` ``(package, resource, substitute)``,
    read once by the caller (when its module is imported, or its store made)."""
    return parse_queries(read_resource(package, resource, substitute))


class Pool(Generic[C]):
    """Connections of this process, made on demand, reused last-in first-out.

    Thread-safe: any thread may :meth:`take` and :meth:`give`. A connection taken is the
    caller's alone until given back.

    Args:
        connect: makes a new connection (may raise; nothing is pooled then).
        close: closes a connection of this process; errors it raises are ignored.
        on_fork: called once in a forked child, at its first use of the pool (or at
            :meth:`after_fork`), after the inherited connections were set aside: reset
            there what the caller keeps beside the pool (its own locks, say).
        size: the most connections open at once (idle or in use, connects under way
            counted); None: no bound.
        check: whether an idle connection is still fit for use (called before handing it
            out, so it should cost no round trip); one that is not is closed and another
            taken or made. None: no check.

    Attributes:
        connections: every connection of this process the pool made and has not closed
            (idle or in use).
    """

    def __init__(
        self,
        connect: Callable[[], C],
        close: Callable[[C], None],
        *,
        on_fork: Optional[Callable[[], None]] = None,
        size: Optional[int] = None,
        check: Optional[Callable[[C], bool]] = None,
    ) -> None:
        if size is not None and size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self._connect = connect
        self._close = close
        self._on_fork = on_fork
        self._size = size
        self._check = check
        self._pid = os.getpid()
        self._lock = threading.Lock()
        # Signalled when a bounded pool gets a connection back or a place free.
        self._freed = threading.Condition(self._lock)
        self._opening = 0  # connects under way (counted against size)
        self.connections: list[C] = []
        self._idle: list[C] = []  # LIFO: the warmest first
        # id -> the pool's epoch when it was made (close() moves the epoch on, so that
        # connections in use then are closed when given back); read without the lock.
        self._born: dict[int, int] = {}
        self._epoch = 0

    def take(self, deadline: Optional[float] = None) -> C:
        """An idle connection, or a new one; a bounded pool whose connections are all in
        use waits for one given back until ``deadline`` (``time.monotonic()``; None: no
        wait, as if it had passed).

        Raises:
            TimeoutError: a bounded pool had none free by ``deadline``.
            Whatever ``connect`` raises.
        """
        if self._pid != os.getpid():
            self.after_fork()
        if self._size is not None:
            return self._take_bounded(deadline)
        while True:
            try:
                conn = self._idle.pop()  # atomic: no lock on the hot path
            except IndexError:
                break
            if self._check is None or self._check(conn):
                return conn
            self.discard(conn)
        conn = self._connect()
        with self._lock:
            self.connections.append(conn)
            self._born[id(conn)] = self._epoch
        return conn

    def _take_bounded(self, deadline: Optional[float]) -> C:
        while True:
            conn: Optional[C] = None
            with self._freed:
                while True:
                    if self._idle:
                        conn = self._idle.pop()
                        break
                    if len(self.connections) + self._opening < (self._size or 0):
                        self._opening += 1
                        break
                    remaining = 0.0 if deadline is None else deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"all {self._size} connections of the store stayed busy")
                    self._freed.wait(remaining)
            if conn is None:
                return self._open_counted()
            if self._check is None or self._check(conn):
                return conn
            self.discard(conn)  # frees its place; the loop takes or makes another

    def _open_counted(self) -> C:
        """Make a connection in the place reserved by ``_opening``."""
        try:
            conn = self._connect()
        except BaseException:
            with self._freed:
                self._opening -= 1
                self._freed.notify()
            raise
        with self._freed:
            self._opening -= 1
            self.connections.append(conn)
            self._born[id(conn)] = self._epoch
        return conn

    def give(self, conn: C, reusable: bool = True) -> None:
        """Hand ``conn`` back: kept for reuse, or closed when not ``reusable`` (left in a
        state the caller could not clean) or when the pool was closed meanwhile."""
        born = self._born.get(id(conn))
        if born is None:
            return  # inherited from before a fork: never reused, never closed
        if reusable and born == self._epoch:
            if self._size is None:
                self._idle.append(conn)
                return
            with self._freed:
                self._idle.append(conn)
                self._freed.notify()
        else:
            self.discard(conn)

    def discard(self, conn: C) -> None:
        """Close ``conn`` (taken from this pool and not given back) and forget it."""
        with self._freed:
            if self._born.pop(id(conn), None) is None:
                return
            self.connections.remove(conn)
            self._freed.notify()
        try:
            self._close(conn)
        except Exception:  # noqa: BLE001 - closing what failed; nothing more to do
            pass

    def close(self) -> None:
        """Close the idle connections; those in use are closed when given back. The pool
        stays usable (it makes new connections)."""
        if self._pid != os.getpid():
            self.after_fork()
            return
        self._epoch += 1
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:
                break
            self.discard(conn)

    def after_fork(self) -> None:
        """In a forked child: set the inherited connections aside (kept, unused, unclosed)
        and call ``on_fork``. A no-op in the process that made the pool."""
        if self._pid == os.getpid():
            return
        # The lock may have been held by a thread that does not exist here: made anew.
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self._opening = 0
        for conn in self.connections:
            keep_forever(conn)
        self.connections = []
        self._idle = []
        self._born = {}
        self._epoch += 1
        self._pid = os.getpid()
        if self._on_fork is not None:
            self._on_fork()
