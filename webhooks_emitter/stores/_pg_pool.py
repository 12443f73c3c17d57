"""The PostgreSQL store's own connections: their health check, the session that vouches for
its leases, and what keeps passwords out of every message. (The pool itself is the one both
SQL stores share: :class:`webhooks_emitter.stores._sql.Pool`.)

Private to :mod:`webhooks_emitter.stores.postgres`; imports psycopg only when a connection is
made or checked (importing the package never loads a driver).
"""

from __future__ import annotations

import logging
import os
import re
import select
import threading
import urllib.parse
from typing import TYPE_CHECKING, Any, Callable, Optional

from ._sql import keep_forever

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[tuple[Any, ...]]

logger = logging.getLogger("webhooks_emitter.stores.postgres")

_PASSWORD_KV = re.compile(r"(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)", re.IGNORECASE)
#: What libpq's parse errors quote of their own (the character they looked for), unlike
#: the input they quote after it, which may hold the password.
_OWN_QUOTES = re.compile(r'"[=\]]"')


def _idle_status() -> Any:
    import psycopg.pq

    return psycopg.pq.TransactionStatus.IDLE


def reusable(conn: Conn) -> bool:
    """Whether a connection given back after a call may serve the next one: open, unbroken
    and outside any transaction (one left open would carry a call's locks into the next)."""
    return not (conn.closed or conn.broken) and (
        conn.info.transaction_status == _idle_status()
    )


def userinfo_problem(url: str) -> Optional[str]:
    """Why a ``postgresql://`` URL's user info cannot be read safely, or None.

    A password holding ``/``, ``?``, ``#`` or ``@`` unencoded ends the user info early for
    one reader (Python's ``urlsplit``) and not for another (libpq), so what one hides as the
    password the other shows as a host, a port or a database name. Such a URL is refused,
    and the message never repeats it.
    """
    rest = url.partition("://")[2]
    if "@" not in rest:
        return None
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority = rest[:end]
    if "@" in rest[end:] or authority.count("@") > 1:
        return (
            "a '/', '?', '#' or '@' in its user name or password must be percent-encoded "
            "(%2F, %3F, %23, %40)"
        )
    return None


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


_QUERY_PASSWORD = re.compile(r"(?i)((?:ssl)?password=).*$")


def redact_loosely(conninfo: str) -> Optional[str]:
    """A URL that libpq refused, with whatever may be its password masked; None for a
    ``key=value`` string (not shown at all: where its password ends cannot be told).

    Everything between ``://`` and the last ``@`` after the user name is masked (a
    password may hold ``@``, ``/`` or a stray ``%``), and everything from a ``password=``
    in the query on: more than the password, never less.
    """
    scheme, sep, rest = conninfo.partition("://")
    if not sep:
        return None
    if "@" in rest:
        userinfo, _, hostpart = rest.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        rest = f"{userinfo}@{hostpart}"
    return scheme + "://" + _QUERY_PASSWORD.sub(r"\1***", rest)


def parse_problem(message: str) -> str:
    """What a libpq conninfo parse error says, without the input it quotes.

    libpq quotes the offending part of its input, and for a URL the whole URL, password
    included (``invalid percent-encoded token: "app:PW%zz@host"``): every quoted fragment is
    dropped, whatever it holds, so only libpq's own words remain.
    """
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    # '"="' and '"]"' are libpq's own (what it looked for). Any other quote starts input,
    # and everything after it is dropped: the input may itself hold quotes, so where its
    # quoting ends cannot be told.
    kept = _OWN_QUOTES.sub(lambda own: "\0" + own.group()[1] + "\0", first)
    cut = kept.find('"')
    if cut >= 0:
        kept = kept[:cut].rstrip(" :") + " (...)"
    words = re.sub(r"\s+", " ", kept.replace("\0", '"')).strip(" :")
    return words or "it cannot be parsed"


def readable(fds: list[int], timeout: float) -> set[int]:
    """The descriptors among ``fds`` with something to read within ``timeout`` seconds.

    poll() where there is one: select() fails on descriptors above 1023, which a busy
    application's sockets reach.
    """
    if hasattr(select, "poll"):
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        return {fd for fd, _ in poller.poll(max(0.0, timeout) * 1000)}
    ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
    return set(ready)


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message (the server's own words)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def from_module(obj: Any, *prefixes: str) -> bool:
    """Whether ``obj``'s class, or one of its bases, comes from a module under ``prefixes``."""
    for cls in type(obj).__mro__:
        module = getattr(cls, "__module__", "") or ""
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return True
    return False


def looks_alive(conn: Conn) -> bool:
    """Whether an idle connection still looks alive, without a round trip."""
    if conn.closed or conn.broken:
        return False
    try:
        ready = readable([conn.fileno()], 0.0)
    except (OSError, ValueError):
        return False
    # An idle connection has nothing to read unless the server closed it (a restart, an
    # idle timeout, pg_terminate_backend) or sent something we did not ask for.
    return not ready


def close_quietly(conn: Optional[Conn]) -> None:
    """Close ``conn`` if this process opened it; a forked child's is only kept referenced."""
    if conn is None:
        return
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - broken already
        pass


class SessionLock:
    """One connection of the store's own that holds a session-level advisory lock, ``key``,
    for as long as this process lives and the store is open.

    The leases this store takes name ``key`` (see ``acquire`` in ``postgres_queries.sql``):
    while this session lives, the lock says the holder lives. When the process ends, however
    it ends (exit, SIGTERM, kill -9, an OOM kill), the kernel closes its socket, the server
    ends the session and lets go of the lock, and another process may take the leases at
    once instead of waiting for them to expire. The session is not the pool's: a lock held
    by a pooled connection would follow that connection from call to call, and a pooled
    connection is dropped and replaced when it breaks.

    If the session ends while the process lives (a server restart, an idle-session timeout,
    ``pg_terminate_backend``), other processes may take the leases; ``ensure`` (called by
    ``acquire`` and ``renew``) opens a new session and takes the lock again, and a lease
    taken meanwhile by another process is lost as any lease is (its token changed).
    """

    def __init__(self, connect: Callable[[float], Conn], key: int) -> None:
        self._connect = connect
        self.key = key
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._conn: Optional[Conn] = None

    def ensure(self, deadline: float) -> None:
        """Make sure a live session holds the lock (no round trip while it does)."""
        conn = self._conn
        if conn is not None and looks_alive(conn):
            return
        with self._lock:
            conn = self._conn
            if conn is not None and looks_alive(conn):
                return
            self._conn = None
            close_quietly(conn)
            conn = self._connect(deadline)
            try:
                # Blocking, bounded by the session's lock_timeout: an observer's brief
                # pg_try_advisory_xact_lock on the key may hold it for one statement.
                conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))
            except BaseException:
                close_quietly(conn)
                raise
            self._conn = conn

    def close(self) -> None:
        """End the session (and with it the lock): this process's leases may be taken."""
        with self._lock:
            conn, self._conn = self._conn, None
        if os.getpid() != self.pid:
            if conn is not None:
                keep_forever(conn)
            return
        close_quietly(conn)

    def abandon(self) -> None:
        """In a forked child: forget the parent's session, never closing it."""
        # No lock: the child has one thread, and the parent may have held it at fork.
        if self._conn is not None:
            keep_forever(self._conn)
        self._conn = None


def server_name(params: dict[str, Any]) -> str:
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
