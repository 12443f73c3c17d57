"""One HTTP try: requests' adapter with connections that are guarded, pooled and timed as a whole.

Each emitter owns a :class:`Transport` (a ``requests.Session`` whose adapter makes guarded
connections). A try runs inside a :class:`_Try` that the emitter's thread makes current:
the connection classes read it to learn the address policy and to register their socket,
and the shared :class:`_Watchdog` shuts that socket down when the try's deadline passes,
so a receiver that trickles its answer cannot hold a try open past ``request_timeout``.
Where a connection may go, and the name lookups bounded by the try's deadline, are
``_network``'s.
"""

from __future__ import annotations

import datetime
import email.utils
import http.client
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

from ._config import Config
from ._network import LONGEST_WAIT, AddressRefused, NetworkPolicy

__all__ = ["Transport", "TryOutcome"]

#: The most bytes of a response body that are ever read.
MAX_RESPONSE_BYTES = 64 * 1024

#: What a kept-alive connection that the receiver closed in the meantime fails with.
_STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)



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
                    cond.wait(min(self._wake_at - now, LONGEST_WAIT))
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
        timeout = min(config.request_timeout, LONGEST_WAIT)
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
