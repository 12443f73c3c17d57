"""One HTTP try: requests' adapter with connections that are guarded, pooled and timed as a whole.

Each emitter owns a :class:`Transport` (a ``requests.Session`` whose adapter makes guarded
connections). A try runs inside a :class:`_Try` that the emitter's thread makes current:
the connection classes read it to learn the address policy and to register their socket,
and the shared :class:`_Watchdog` shuts that socket down when the try's deadline passes,
so a receiver that trickles its answer cannot hold a try open past ``request_timeout``.
Names are looked up by the shared :class:`_Resolver`'s helper threads, and the try waits
for the answer no longer than its deadline, so a slow DNS server cannot hold it either.
"""

from __future__ import annotations

import collections
import datetime
import email.utils
import http.client
import ipaddress
import os
import socket
import threading
import time
from typing import Any, Optional, Union, cast

import attrs
import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
import urllib3.response
from urllib3.poolmanager import PoolManager

from ._config import Config, Network

__all__ = ["NetworkPolicy", "Transport", "TryOutcome"]

#: The most bytes of a response body that are ever read.
MAX_RESPONSE_BYTES = 64 * 1024

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def _networks(*cidrs: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# What block_private_networks refuses, written out here rather than taken from ipaddress's
# is_global/is_private: their answers differ between Python 3.9 and 3.13 (fec0::/10,
# 64:ff9b:1::/48, 192.0.0.0/24, 2001::/23 and IPv4-mapped forms among others). The source
# is IANA's IPv4 and IPv6 Special-Purpose Address Registries: every entry whose "Globally
# Reachable" is False or N/A, then the more specific entries that are True.

#: IPv4 ranges that are not globally reachable.
_NOT_GLOBAL_V4 = _networks(
    "0.0.0.0/8",  # "this network" (RFC 791)
    "10.0.0.0/8",  # private use (RFC 1918)
    "100.64.0.0/10",  # shared address space, carrier-grade NAT (RFC 6598)
    "127.0.0.0/8",  # loopback (RFC 1122)
    "169.254.0.0/16",  # link local, the cloud metadata address included (RFC 3927)
    "172.16.0.0/12",  # private use (RFC 1918)
    "192.0.0.0/24",  # IETF protocol assignments: DS-Lite, dummy, NAT64 discovery (RFC 6890)
    "192.0.2.0/24",  # documentation, TEST-NET-1 (RFC 5737)
    "192.88.99.0/24",  # 6to4 relay anycast, deprecated (RFC 7526)
    "192.168.0.0/16",  # private use (RFC 1918)
    "198.18.0.0/15",  # benchmarking (RFC 2544)
    "198.51.100.0/24",  # documentation, TEST-NET-2 (RFC 5737)
    "203.0.113.0/24",  # documentation, TEST-NET-3 (RFC 5737)
    "224.0.0.0/4",  # multicast (RFC 5771; not in the registry, never a unicast receiver)
    "240.0.0.0/4",  # reserved (RFC 1112), with the limited broadcast 255.255.255.255
)
#: IPv4 addresses inside those ranges that are globally reachable all the same.
_GLOBAL_V4 = _networks(
    "192.0.0.9/32",  # Port Control Protocol anycast (RFC 7723)
    "192.0.0.10/32",  # TURN anycast (RFC 8155)
)
#: IPv6 global unicast: IANA's IPv6 Address Space registry reserves everything else.
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
#: IPv6 ranges that are not globally reachable (those outside 2000::/3 are listed for the
#: reader; the rule above refuses them already).
_NOT_GLOBAL_V6 = _networks(
    "::/128",  # unspecified (RFC 4291)
    "::1/128",  # loopback (RFC 4291)
    "::/96",  # IPv4-compatible, deprecated (RFC 4291)
    "64:ff9b:1::/48",  # local-use IPv4/IPv6 translation (RFC 8215)
    "100::/64",  # discard-only (RFC 6666)
    "100:0:0:1::/64",  # dummy IPv6 prefix (RFC 9780)
    "2001::/23",  # IETF protocol assignments, Teredo 2001::/32 included (RFC 2928, 4380)
    "2001:db8::/32",  # documentation (RFC 3849)
    "3fff::/20",  # documentation (RFC 9637)
    "5f00::/16",  # segment routing SIDs (RFC 9602)
    "fc00::/7",  # unique local (RFC 4193)
    "fe80::/10",  # link-local unicast (RFC 4291)
    "fec0::/10",  # site-local unicast, deprecated (RFC 3879); Python calls it global
    "ff00::/8",  # multicast (RFC 4291)
)
#: IPv6 ranges inside those that are globally reachable all the same.
_GLOBAL_V6 = _networks(
    "2001:1::1/128",  # Port Control Protocol anycast (RFC 7723)
    "2001:1::2/128",  # TURN anycast (RFC 8155)
    "2001:1::3/128",  # DNS-SD service registration protocol anycast (RFC 9665)
    "2001:3::/32",  # AMT (RFC 7450)
    "2001:4:112::/48",  # AS112-v6 (RFC 7535)
    "2001:20::/28",  # ORCHIDv2 (RFC 7343)
    "2001:30::/28",  # drone remote ID protocol entity tags (RFC 9374)
)
#: IPv6 forms whose traffic goes to the IPv4 address inside: IPv4-mapped (::ffff:0:0/96),
#: the well-known NAT64 prefix (RFC 6052) and 6to4 (RFC 3056). Judged by that address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> Optional[ipaddress.IPv4Address]:
    """The IPv4 address an IPv4-mapped, NAT64 or 6to4 address leads to, else None."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def is_global(ip: Address) -> bool:
    """Whether ``ip`` is globally reachable, by the tables above (never by ``ip.is_global``)."""
    if isinstance(ip, ipaddress.IPv4Address):
        if any(ip in net for net in _GLOBAL_V4):
            return True
        return not any(ip in net for net in _NOT_GLOBAL_V4)
    inner = _embedded_ipv4(ip)
    if inner is not None:
        return is_global(inner)
    if ip not in _GLOBAL_UNICAST_V6:
        return False
    if any(ip in net for net in _GLOBAL_V6):
        return True
    return not any(ip in net for net in _NOT_GLOBAL_V6)

#: The longest any wait or socket timeout may be: sockets, locks and conditions refuse
#: timeouts past about 2**63 ns with OverflowError; 1e9 s (31 years) is as good as forever.
_LONGEST = 1e9

#: What a kept-alive connection that the receiver closed in the meantime fails with.
_STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class AddressRefused(Exception):
    """A connection was refused by the emitter's network policy (never retried)."""


@attrs.frozen
class NetworkPolicy:
    """Which addresses an emitter may connect to."""

    block_private: bool = False
    allowed: tuple[Network, ...] = ()

    def refusal(self, ip: Address) -> Optional[str]:
        """Why ``ip`` may not be connected to, or None when it may."""
        if not self.block_private:
            return None
        inner = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
        if any(ip in net or (inner is not None and inner in net) for net in self.allowed):
            return None
        if not is_global(ip):
            return f"address {ip} is not globally routable (block_private_networks)"
        return None

    def resolve(
        self, host: str, port: int, timeout: Optional[float] = None
    ) -> list[tuple[Any, ...]]:
        """Resolve ``host`` and return the allowed ``getaddrinfo`` entries, or refuse.

        Args:
            host: a name or an IP literal (in brackets or not).
            port: the port the entries carry.
            timeout: the most seconds to wait for the resolver (None: as long as it takes).

        Raises:
            AddressRefused: every address ``host`` resolved to is refused.
            socket.gaierror: ``host`` did not resolve.
            TimeoutError: the resolver gave no answer within ``timeout``.
        """
        entries = _resolver.resolve(host.strip("[]"), port, timeout)
        allowed, reasons = [], []
        for entry in entries:
            ip = ipaddress.ip_address(str(entry[4][0]).split("%", 1)[0])
            reason = self.refusal(ip)
            if reason is None:
                allowed.append(entry)
            else:
                reasons.append(reason)
        if not allowed:
            raise AddressRefused(reasons[0] if reasons else f"{host} resolved to no address")
        return allowed


def _is_literal(host: str) -> bool:
    """Whether ``getaddrinfo`` reads ``host`` itself, without asking any resolver."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return True
    except ValueError:
        pass
    if not host or not host.isascii() or ":" in host:
        return False
    try:
        socket.inet_aton(host)  # the other IPv4 forms: 2130706433, 127.1, 0x7f.0.0.1
        return True
    except OSError:
        return False


class _Lookup:
    """One ``getaddrinfo`` call handed to a resolver thread, and its answer."""

    __slots__ = ("host", "port", "done", "entries", "error", "abandoned")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.done = threading.Event()
        self.entries: list[tuple[Any, ...]] = []
        self.error: Optional[Exception] = None
        self.abandoned = False  # the try stopped waiting: nobody wants the answer any more

    def run(self) -> None:
        if self.abandoned:
            return
        try:
            self.entries = list(socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM))
        except Exception as exc:  # noqa: BLE001 - handed to the waiting try as it is
            self.error = exc


class _Resolver:
    """Resolves names in helper threads, so that a try's deadline also bounds the lookup.

    ``getaddrinfo`` cannot be interrupted, and the system resolver's own timeouts know
    nothing of ``request_timeout``: the lookup runs in a daemon thread, and the try waits
    for its answer no longer than the time it has left. A lookup given up on finishes in
    its thread and its answer is dropped. The threads are shared by every emitter and
    reused: one is started only when none is idle (so a name that never answers holds up
    no other emitter's lookups, up to ``THREADS`` of them at once), and it ends after
    ``IDLE`` seconds without work. IP literals are read in the caller's thread.
    """

    #: The most helper threads at once; beyond that, lookups wait their turn (within
    #: their own deadline).
    THREADS = 32
    #: Seconds an idle helper thread waits for another lookup before it ends.
    IDLE = 60.0

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._pending: collections.deque[_Lookup] = collections.deque()
        self._idle = 0
        self._threads = 0

    def resolve(self, host: str, port: int, timeout: Optional[float]) -> list[tuple[Any, ...]]:
        """``getaddrinfo(host, port, 0, SOCK_STREAM)``, waiting at most ``timeout`` seconds.

        Raises:
            socket.gaierror: ``host`` did not resolve.
            TimeoutError: no answer came within ``timeout``.
        """
        if _is_literal(host):
            return list(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        lookup = _Lookup(host, port)
        cond = self._cond
        with cond:
            if self._idle > len(self._pending):  # an idle thread will take it
                self._pending.append(lookup)
                cond.notify()
            elif self._threads < self.THREADS:
                self._threads += 1
                threading.Thread(
                    target=self._run,
                    args=(cond, lookup),
                    name="webhooks-emitter-resolver",
                    daemon=True,
                ).start()
            else:
                self._pending.append(lookup)
        wait = None if timeout is None else min(max(timeout, 0.0), _LONGEST)
        if not lookup.done.wait(wait):
            lookup.abandoned = True
            raise TimeoutError(f"resolving {host} timed out")
        if lookup.error is not None:
            raise lookup.error
        return lookup.entries

    def _run(self, cond: threading.Condition, lookup: _Lookup) -> None:
        while True:
            lookup.run()
            with cond:
                if cond is not self._cond:  # a forked child's copy: the state is not ours
                    lookup.done.set()
                    return
                # Idle before the answer is handed over, so that the caller's next lookup
                # finds this thread free.
                self._idle += 1
                lookup.done.set()
                deadline = time.monotonic() + self.IDLE
                while not self._pending:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self._idle -= 1
                        self._threads -= 1
                        return
                    cond.wait(left)
                lookup = self._pending.popleft()
                self._idle -= 1


_resolver = _Resolver()
os.register_at_fork(after_in_child=_resolver._reset)


class _Try:
    """The try under way on one emitter's thread: its deadline, policy and connection.

    The watchdog ends the connection the try is using. It is known by its urllib3
    connection object, never by a descriptor number: a socket whose connect failed is
    closed, and the next one (to the name's next address) usually gets the same number.

    What the watchdog shuts down is a duplicate of the socket's descriptor rather than the
    socket object: when urllib3 wraps a new socket in TLS, the plain socket object is
    detached (its ``fileno()`` becomes -1) before the handshake, yet shutting down any
    descriptor of a connection ends it for all of them, the handshake included.
    """

    __slots__ = ("connections", "deadline", "expired", "policy", "_lock", "_watched", "_owner")

    def __init__(self, policy: NetworkPolicy) -> None:
        self.policy = policy
        self.deadline = 0.0
        self.expired = False
        self.connections = 0  # new connections made during this try
        self._lock = threading.Lock()
        self._watched: Optional[socket.socket] = None
        self._owner: Optional[object] = None  # the connection object _watched belongs to

    def begin(self, deadline: float) -> None:
        """Start a new try that must end by ``deadline`` (a ``time.monotonic()`` value)."""
        self.deadline = deadline
        self.expired = False
        self.connections = 0

    def remaining(self) -> float:
        """Seconds left before the deadline (may be negative)."""
        return self.deadline - time.monotonic()

    def watching(self, owner: object) -> bool:
        """Whether the watched socket is the one ``owner`` (a connection object) made."""
        return self._owner is owner

    def watch(self, owner: object, sock: socket.socket) -> None:
        """Make ``sock``, a new socket of the connection ``owner``, the one the watchdog ends
        at the deadline (at once if it passed already)."""
        fd = sock.fileno()
        if fd < 0:
            return
        with self._lock:
            self._close_watched()
            self._watched = socket.fromfd(fd, sock.family, sock.type, sock.proto)
            self._owner = owner
            if self.expired:
                self._shutdown()

    def expire(self) -> None:
        """Called by the watchdog at the deadline: end whatever the socket is waiting for."""
        with self._lock:
            self.expired = True
            self._shutdown()

    def end(self) -> None:
        """The try is over: let go of the watched socket."""
        with self._lock:
            self._close_watched()

    def _shutdown(self) -> None:
        if self._watched is not None:
            try:
                self._watched.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _close_watched(self) -> None:
        if self._watched is not None:
            self._watched.close()  # only the duplicate descriptor: the connection lives on
            self._watched = None
        self._owner = None


_current = threading.local()


class _Watchdog:
    """One daemon thread that expires the tries whose deadline has passed.

    Every emitter has at most one try under way, so the set of active tries is small; the
    thread sleeps until the earliest deadline and is only woken when an earlier one comes.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active: set[_Try] = set()
        self._wake_at = float("inf")
        self._thread: Optional[threading.Thread] = None

    def arm(self, attempt: _Try) -> None:
        """Expire ``attempt`` at its deadline unless it is disarmed first."""
        with self._cond:
            self._active.add(attempt)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, args=(self._cond,), name="webhooks-emitter-watchdog",
                    daemon=True,
                )
                self._thread.start()
            elif attempt.deadline < self._wake_at:
                self._cond.notify()

    def disarm(self, attempt: _Try) -> None:
        """Forget ``attempt``; once this returns, the watchdog no longer touches it."""
        with self._cond:
            self._active.discard(attempt)

    def _run(self, cond: threading.Condition) -> None:
        with cond:
            while cond is self._cond:
                now = time.monotonic()
                for attempt in [a for a in self._active if a.deadline <= now]:
                    self._active.discard(attempt)
                    attempt.expire()
                if self._active:
                    self._wake_at = min(a.deadline for a in self._active)
                    cond.wait(min(self._wake_at - now, _LONGEST))
                else:
                    self._wake_at = float("inf")
                    cond.wait()


_watchdog = _Watchdog()
os.register_at_fork(after_in_child=_watchdog._reset)


def _guarded_socket(conn: urllib3.connection.HTTPConnection) -> socket.socket:
    """Connect as ``conn._new_conn`` does, to an address the current try's policy allows.

    Names are resolved here, once, and the connection is made to the very address that
    was checked, so a second, different answer of the resolver cannot slip past. A
    connection to a configured proxy is the operator's choice and is not checked (the
    receiver's own address is checked before the request, see :meth:`Transport.send`).
    """
    attempt: Optional[_Try] = getattr(_current, "attempt", None)
    policy = attempt.policy if attempt is not None else NetworkPolicy()
    if getattr(conn, "proxy", None) is not None:
        policy = NetworkPolicy()
    limit = conn.timeout if isinstance(conn.timeout, (int, float)) else None
    try:
        entries = policy.resolve(
            conn._dns_host, conn.port, attempt.remaining() if attempt is not None else limit
        )
    except socket.gaierror as exc:
        raise urllib3.exceptions.NameResolutionError(conn.host, conn, exc) from exc
    except TimeoutError:
        raise urllib3.exceptions.ConnectTimeoutError(
            conn, f"resolving {conn.host} timed out"
        ) from None
    last: Optional[OSError] = None
    for family, kind, proto, _, address in entries:
        timeout = limit
        if attempt is not None:
            remaining = attempt.remaining()
            if remaining <= 0:
                break
            timeout = remaining if timeout is None else min(timeout, remaining)
        sock = socket.socket(family, kind, proto)
        try:
            for option in conn.socket_options or ():
                sock.setsockopt(*option)
            sock.settimeout(timeout)
            if attempt is not None:
                attempt.connections += 1
                attempt.watch(conn, sock)  # a new socket: always the one to watch now
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    if last is None or isinstance(last, TimeoutError):
        raise urllib3.exceptions.ConnectTimeoutError(conn, f"connect to {conn.host} timed out")
    raise urllib3.exceptions.NewConnectionError(
        conn, f"Failed to establish a new connection: {last}"
    ) from last


class _GuardedMixin:
    """Guarded connections; a request whose body is bytes goes out in one ``send``.

    urllib3 sends the head, then the body, in two calls: each releases the GIL, and with
    many emitter threads every release is a wait for the GIL to come back. The same bytes
    are sent, joined: the head is held back until the body's ``send``.
    """

    sock: Optional[socket.socket]
    _held: Optional[list[bytes]] = None

    def _new_conn(self) -> socket.socket:
        return _guarded_socket(self)  # type: ignore[arg-type]

    def request(self, *args: Any, **kwargs: Any) -> None:
        attempt: Optional[_Try] = getattr(_current, "attempt", None)
        if attempt is not None and self.sock is not None and not attempt.watching(self):
            # A kept-alive connection from an earlier try: the watchdog needs its socket.
            # (One made in this try is watched already, also once wrapped in TLS.)
            attempt.watch(self, self.sock)
        body = args[2] if len(args) > 2 else kwargs.get("body")
        if not (isinstance(body, bytes) and body) or kwargs.get("chunked"):
            super().request(*args, **kwargs)  # type: ignore[misc]
            return
        held: list[bytes] = []
        self._held = held
        try:
            super().request(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._held = None
        if held:  # not sent yet (no body chunk came): send the head alone
            super().send(held[0])  # type: ignore[misc]

    def send(self, data: Any) -> None:
        held = self._held
        if held is not None:
            if not held:  # the head: kept for the body's send
                held.append(data)
                return
            data = held.pop() + data  # the body: one send with the head
            self._held = None  # from here on (a proxy's CONNECT...) sends go out as they come
        super().send(data)  # type: ignore[misc]


class _HTTPConnection(_GuardedMixin, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_GuardedMixin, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _GuardedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter, making its connections (direct or through a proxy) guarded.

    A transport sends to one URL with settings fixed when it is made, so the connection
    pool is looked up and its TLS settings checked once, not on every send.
    """

    _pool: Any = None
    _verified: Any = None

    def get_connection_with_tls_context(
        self, request: Any, verify: Any, proxies: Any = None, cert: Any = None
    ) -> Any:
        pool = self._pool
        if pool is None or pool.pool is None:  # first send, or the pool was closed
            pool = super().get_connection_with_tls_context(
                request, verify, proxies=proxies, cert=cert
            )
            self._pool = pool
        return pool

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        if conn is not self._verified:  # requests stats the CA bundle path each time
            cast(Any, super()).cert_verify(conn, url, verify, cert)
            self._verified = conn

    def build_response(self, req: Any, resp: Any) -> requests.Response:
        # Only what Transport.send reads: requests would also copy the headers and parse
        # them for cookies into a new jar on every answer.
        response = requests.Response()
        response.status_code = resp.status
        response.headers = resp.headers  # urllib3's HTTPHeaderDict, case-insensitive too
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url
        response.request = req
        response.connection = self
        return response

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager = cast(PoolManager, super().proxy_manager_for(proxy, **proxy_kwargs))
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _POOLS
        return manager


@attrs.frozen
class TryOutcome:
    """The result of one try."""

    ok: bool
    status_code: Optional[int] = None
    error: Optional[str] = None
    retry_after: Optional[float] = None
    #: True when trying again cannot help (the address was refused by policy).
    final: bool = False
    #: True when ``request_timeout`` ended the try (no complete answer came in time).
    timed_out: bool = False


def _retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` value (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)  # HTTP dates are GMT
    try:
        return max(when.timestamp() - time.time(), 0.0)
    except (OverflowError, ValueError, OSError):
        return None


def _root(exc: BaseException) -> BaseException:
    """The innermost cause of a requests/urllib3 exception (it wraps several times)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "reason", None)
        if isinstance(inner, BaseException):
            exc = inner
            continue
        args = [a for a in getattr(exc, "args", ()) if isinstance(a, BaseException)]
        if args:
            exc = args[0]
            continue
        if exc.__cause__ is not None:
            exc = exc.__cause__
            continue
        break
    return exc


def _clean(text: str, limit: int = 120) -> str:
    """``text`` from a receiver made safe for one log line: escaped, without URLs, short."""
    text = text.strip().encode("unicode_escape").decode("ascii")
    if "://" in text:
        return ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_root(exc: BaseException, root: BaseException) -> str:
    if isinstance(exc, requests.exceptions.SSLError) or "SSL" in type(root).__name__:
        reason = getattr(root, "reason", None) or type(root).__name__
        detail = getattr(root, "verify_message", None)
        return f"TLS error: {reason}: {_clean(detail)}" if detail else f"TLS error: {reason}"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timed out"
    if isinstance(exc, requests.exceptions.Timeout) or isinstance(root, TimeoutError):
        return "timed out"
    if isinstance(root, http.client.RemoteDisconnected):
        return "the receiver closed the connection without answering"
    if isinstance(root, ConnectionRefusedError):
        return "connection refused"
    if isinstance(root, _STALE):
        return "connection reset by the receiver"
    if isinstance(root, socket.gaierror):
        return "name resolution failed"
    if isinstance(root, http.client.HTTPException):
        message = _clean(str(root))
        what = f"invalid HTTP answer: {type(root).__name__}"
        return f"{what}: {message}" if message else what
    if isinstance(root, OSError) and root.strerror:
        return f"connection failed: {root.strerror}"
    text = type(root).__name__
    message = str(root)
    if isinstance(root, urllib3.exceptions.NewConnectionError):
        message = message.split(": ", 1)[-1]  # without the connection's repr
    message = _clean(message)
    return f"connection failed: {text}: {message}" if message else f"connection failed: {text}"


def describe(exc: BaseException) -> str:
    """A short description of why a try failed, without URLs, secrets or control characters."""
    text = _describe_root(exc, _root(exc))
    return f"proxy error: {text}" if isinstance(exc, requests.exceptions.ProxyError) else text


def _drain(raw: urllib3.response.BaseHTTPResponse) -> bool:
    """Read and drop the body, never more than ``MAX_RESPONSE_BYTES`` + 1 bytes.

    Returns:
        True when the body ended within the cap (the connection may then be reused).
    """
    total = 0
    while total <= MAX_RESPONSE_BYTES:
        chunk = raw.read(MAX_RESPONSE_BYTES + 1 - total, decode_content=False)
        if not chunk:
            return True
        total += len(chunk)
    return False


class Transport:
    """Sends a prepared request for one emitter: one ``requests.Session``, settings resolved once.

    Proxies: an explicit ``Config.proxies`` mapping is used as it is (``{}`` means no
    proxy); ``None`` takes the environment's variables (``HTTP_PROXY``, ``NO_PROXY``...)
    as requests does, read once when the emitter is attached.
    """

    def __init__(self, config: Config) -> None:
        self.session = requests.Session()
        self.session.headers.clear()  # only the headers the wire format names
        self.adapter = _GuardedAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
        self.session.mount("http://", self.adapter)
        self.session.mount("https://", self.adapter)
        verify: Union[bool, str] = (
            False if config.insecure else (config.ca_bundle if config.ca_bundle else True)
        )
        # requests merges the environment (proxies, no_proxy, CA bundle variables) on every
        # call; an emitter has one URL, so it is done once here.
        settings = self.session.merge_environment_settings(
            config.url, dict(config.proxies or {}), True, verify, config.client_cert
        )
        proxies: dict[str, str] = (
            dict(config.proxies) if config.proxies is not None else dict(settings["proxies"] or {})
        )
        timeout = min(config.request_timeout, _LONGEST)
        self.send_kwargs: dict[str, Any] = {
            "stream": True,
            "verify": settings["verify"],
            "cert": settings["cert"],
            "proxies": proxies,
            "timeout": (timeout, timeout),
        }
        self.timeout = timeout
        self._attempt = _Try(NetworkPolicy(config.block_private_networks, config.allowed_networks))
        self._proxied = bool(requests.utils.select_proxy(config.url, proxies))
        target = urllib3.util.parse_url(config.url)
        self._target = (
            (target.host or "").strip("[]"),
            target.port or (443 if target.scheme == "https" else 80),
        )

    def send(self, request: requests.PreparedRequest) -> TryOutcome:
        """Make one try of ``request``; never raises for network or HTTP failures."""
        attempt = self._attempt
        attempt.begin(time.monotonic() + self.timeout)
        _current.attempt = attempt
        _watchdog.arm(attempt)
        try:
            if self._proxied and attempt.policy.block_private:
                # Through a proxy the receiver's address is the proxy's to resolve; check
                # what it resolves to here as well (best effort, see README's SECURITY).
                attempt.policy.resolve(*self._target, timeout=attempt.remaining())
            try:
                response = self.adapter.send(request, **self.send_kwargs)
            except requests.exceptions.ConnectionError as exc:
                if not self._stale(exc, attempt):
                    raise
                # A kept-alive connection the receiver had closed (its close crossed our
                # request): nothing was answered, so send again once on a new connection.
                response = self.adapter.send(request, **self.send_kwargs)
            if attempt.expired:
                # The deadline cut the head short (http.client takes the end of the stream
                # for the end of the headers): no answer came.
                response.close()
                return self._failed(None, None, attempt)
            status = response.status_code
            try:
                raw = response.raw
                if _drain(raw):
                    raw.release_conn()
                else:
                    response.close()  # the rest is never read, so the connection is not reused
            except Exception as exc:  # noqa: BLE001 - a failed read fails the try
                response.close()
                if 200 <= status < 300 and not attempt.expired:
                    return TryOutcome(True, status)  # the receiver took it; the body is moot
                return self._failed(status, exc, attempt)
            if attempt.expired:
                # The deadline cut the answer short (a trickled body read to the end of
                # the connection ends there too): the try failed, whatever the status.
                response.close()
                return self._failed(status, None, attempt)
        except AddressRefused as exc:
            return TryOutcome(False, error=f"refused: {exc}", final=True)
        except socket.gaierror:
            return TryOutcome(False, error="name resolution failed")
        except Exception as exc:  # noqa: BLE001 - any failure of the try is its outcome
            return self._failed(None, exc, attempt)
        finally:
            _watchdog.disarm(attempt)
            _current.attempt = None
            attempt.end()
        if 200 <= status < 300:
            return TryOutcome(True, status)
        retry_after = None
        if status in (429, 503):
            retry_after = _retry_after(response.headers.get("Retry-After"))
        return TryOutcome(False, status, f"HTTP {status}", retry_after)

    @staticmethod
    def _stale(exc: BaseException, attempt: _Try) -> bool:
        """Whether ``exc`` is a reused connection found closed before any answer came."""
        return (
            attempt.connections == 0
            and not attempt.expired
            and attempt.remaining() > 0
            and isinstance(_root(exc), _STALE)
        )

    def _failed(
        self, status: Optional[int], exc: Optional[BaseException], attempt: _Try
    ) -> TryOutcome:
        """The outcome of a try that failed with ``exc`` (None: the deadline cut it short)."""
        # Every socket timeout is request_timeout too, so whichever fires first (the
        # watchdog, or a socket operation on a loaded machine) means the same thing.
        if (
            attempt.expired
            or exc is None
            or isinstance(exc, requests.exceptions.Timeout)
            or isinstance(_root(exc), (TimeoutError, socket.timeout))
        ):
            return TryOutcome(
                False, status, f"timed out after {self.timeout:g} s", timed_out=True
            )
        return TryOutcome(False, status, describe(exc))

    def close(self) -> None:
        """Close the session and its pooled connections."""
        self.session.close()
