"""The PostgreSQL store's wake-up: LISTEN on a connection of its own, and a socket pair for
:meth:`Listener.wake`.

Private to :mod:`webhooks_emitter.stores.postgres`. A delivering process waits here between
polls of the store; a commit that stored an event (or a pause, a restart, a replay) in any
process sends a notification on the store's channel, which ends the wait at once.

Emits do not notify at every commit: ``NOTIFY`` takes a database-wide lock from the commit's
start to its end, so concurrent committers that notify commit one at a time (with
``synchronous_commit = on``, each waiting for its own WAL flush inside the lock: no group
commit), and the server signals every listening session at each of them. An emit with its own
transaction notifies only when its process has not notified in the last
:data:`NOTIFY_EVERY` seconds; a write through the caller's connection notifies once per
transaction (the server merges a transaction's identical notifications). What a skipped
notification would have said, the *rechecks* say instead: after each notification (and
each reconnection), the listener answers "maybe changed" again at the delays of
:data:`RECHECKS`, so an event committed just after a notified one is found by one of those
polls: the first catches an emit whose statement took up to 50 ms, the second one that took
up to 300 ms (a loaded machine). Delivery thus starts within 0.1-0.35 s of such a commit,
and within a few milliseconds of a notified one (CONTRACT section 11: 0.5 s).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Callable, Optional

from ._pg_pool import close_quietly, first_line, readable
from ._sql import keep_forever

if TYPE_CHECKING:
    from ._pg_pool import Conn

logger = logging.getLogger("webhooks_emitter.stores.postgres")

#: An emit with its own transaction notifies when its process sent none for this long.
NOTIFY_EVERY = 0.05
#: Seconds after a notification when the listener says "maybe changed" again.
RECHECKS = (0.1, 0.35)


class Listener:
    """Waits for the store's notifications on a dedicated connection (one per process).

    Args:
        connect: opens one of the store's connections (autocommit), by a monotonic deadline.
        channel: the channel to listen on.
        describe: the store's name for logs, without a password.
        scrub: removes any password from a message.
        prepare: run before connecting (the store checks or creates its schema).
    """

    def __init__(
        self,
        connect: Callable[[float], Conn],
        channel: str,
        describe: Callable[[], str],
        scrub: Callable[[str], str],
        prepare: Callable[[], None],
    ) -> None:
        self._connect = connect
        self._channel = channel
        self._describe = describe
        self._scrub = scrub
        self._prepare = prepare
        self._lock = threading.Lock()
        self._conn: Optional[Conn] = None
        self._failing = False
        self._rechecks: list[float] = []  # monotonic times, soonest last
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a notification or a :meth:`wake`.

        Returns True on one, right after (re)connecting (what happened meanwhile was not
        heard), and at the recheck that follows a notification; False when the time is up.
        Never raises: when the server cannot be reached it waits ``timeout`` (or a wake) and
        says "maybe" (True), and the poll that follows reports the error.
        """
        import psycopg

        deadline = time.monotonic() + max(0.0, timeout)
        if not self._lock.acquire(timeout=max(0.0, timeout)):
            return False
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._drop()
                if not self._listen(deadline):
                    self._wait_for_wake(deadline)
                return True
            return self._wait_on(self._conn, deadline)
        except (psycopg.Error, OSError, ValueError) as exc:
            logger.warning(
                "%s: the listening connection was lost (%s); reconnecting",
                self._describe(),
                self._scrub(first_line(exc)),
                extra={"store": self._describe()},
            )
            self._drop()
            if not self._listen(deadline):
                self._wait_for_wake(deadline)
            return True
        finally:
            self._lock.release()

    def _wait_on(self, conn: Conn, deadline: float) -> bool:
        wake = self._wake_r.fileno()
        while True:
            now = time.monotonic()
            if list(conn.notifies(timeout=0.0)):
                self._plan_rechecks(now)
                return True
            recheck = self._rechecks[-1] if self._rechecks else None
            if recheck is not None and recheck <= now:
                self._rechecks.pop()
                return True
            until = deadline if recheck is None else min(deadline, recheck)
            remaining = until - now
            if remaining <= 0:
                return False
            ready = readable([conn.fileno(), wake], remaining)
            if wake in ready:
                self._drain_wake()
                return True
            if not ready and until == deadline:
                return False

    def _listen(self, deadline: float) -> bool:
        """Open the listening connection; False (logged once per outage) when it fails."""
        import psycopg

        from ._base import StoreError

        try:
            self._prepare()
            conn = self._connect(max(deadline, time.monotonic() + 0.5))
            conn.execute(f'LISTEN "{self._channel}"')
        except (psycopg.Error, OSError, TimeoutError, StoreError) as exc:
            if not self._failing:
                self._failing = True
                logger.warning(
                    "%s: cannot listen for changes (%s); polling until it can",
                    self._describe(),
                    self._scrub(first_line(exc)),
                    extra={"store": self._describe()},
                )
            return False
        if self._failing:
            self._failing = False
            logger.info("%s: listening for changes again", self._describe())
        self._conn = conn
        # A notification sent just before LISTEN was lost, and an emit right after it may
        # have skipped its own: look again shortly, as after a notification.
        self._plan_rechecks(time.monotonic())
        return True

    def _plan_rechecks(self, now: float) -> None:
        self._rechecks = sorted((now + delay for delay in RECHECKS), reverse=True)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        close_quietly(conn)

    def _wait_for_wake(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining > 0 and readable([self._wake_r.fileno()], remaining):
            self._drain_wake()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def wake(self) -> None:
        """Cut a :meth:`wait` short (it returns True)."""
        try:
            self._wake_w.send(b"\0")
        except OSError as exc:  # full (a wake is pending anyway) or closed
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBADF):
                raise

    def close(self, timeout: float) -> None:
        """Close the listening connection (a waiting thread is woken first)."""
        self.wake()
        if self._lock.acquire(timeout=timeout):
            try:
                self._drop()
            finally:
                self._lock.release()

    def abandon(self) -> None:
        """In a forked child: forget the parent's connection (never closed) and sockets."""
        if self._conn is not None:
            keep_forever(self._conn)
        self._conn = None
        for sock in (self._wake_r, self._wake_w):
            sock.close()  # this process's copy only; the parent's stays open


def channel_of(schema: str) -> str:
    """The notification channel of a store's schema (at most 63 bytes, as identifiers)."""
    return f"{schema}.changed"[:63]

