"""Raw-socket servers on 127.0.0.1 that misbehave on purpose, for the fault and safety tests.

:class:`FaultServer` accepts connections and runs a *script* for each one in its own thread;
the script talks to the client through a :class:`Conn` (read a request, answer, reset,
trickle, hang...). :func:`serve` turns a per-request decision into such a script for
keep-alive HTTP/1.1. :func:`closed_port` gives a port on which connections are refused, and
:class:`ForwardProxy` is a small forward HTTP proxy that records what passes through it.

Everything listens on 127.0.0.1 only and every wait is bounded: a server that is stopped
shuts its open connections down, which ends any script that is reading, trickling or hanging.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import queue
import select
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

#: Seconds a test waits for a condition before it fails (generous: the machine is shared).
WAIT = 10.0


@dataclass(frozen=True)
class RawRequest:
    """One request as a fault server read it."""

    method: str
    path: str
    headers: Mapping[str, str]  # names in lower case
    body: bytes
    connection: int  # 1 for the server's first connection, and so on
    number: int  # 1 for the first request on its connection, and so on
    received_at: float = field(default_factory=time.monotonic)

    @property
    def delivery_id(self) -> Optional[str]:
        """The ``X-Webhooks-Delivery`` header."""
        return self.headers.get("x-webhooks-delivery")


class Conn:
    """One accepted connection, as a script sees it."""

    def __init__(self, server: FaultServer, sock: socket.socket, index: int) -> None:
        self.server = server
        self.sock = sock
        self.index = index
        self.requests = 0
        self._buffer = b""

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(65536)
        except OSError:
            return b""

    def read_request(self) -> Optional[RawRequest]:
        """Read one request (head and Content-Length body); None when the client is gone."""
        while b"\r\n\r\n" not in self._buffer:
            data = self._recv()
            if not data:
                return None
            self._buffer += data
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self._buffer) < length:
            data = self._recv()
            if not data:
                return None
            self._buffer += data
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        self.requests += 1
        request = RawRequest(method, path, headers, body, self.index, self.requests)
        self.server._record(request)
        return request

    def peek_request(self) -> bool:
        """Wait until a whole request sits in the socket's buffer, without reading it.

        Returns False when the client left first. The request stays unread, so a reset
        now reaches a client that has finished sending and waits for the answer.
        """
        while True:
            try:
                data = self.sock.recv(1 << 20, socket.MSG_PEEK)
            except OSError:
                return False
            if not data:
                return False
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(body) >= length:
                    return True
            if self.server.stopping.wait(0.001):  # more is on its way: poll the buffer again
                return False

    def send(self, data: bytes) -> bool:
        """Send ``data``; False when the client is gone."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def answer(
        self,
        status: int,
        headers: Optional[Mapping[str, str]] = None,
        body: bytes = b"",
        *,
        reason: str = "Whatever",
    ) -> bool:
        """Send a complete HTTP/1.1 answer with a Content-Length (the connection stays open)."""
        lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        return self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def wait_readable(self, timeout: float = WAIT) -> bool:
        """Wait until the client sends something (or closes); True if it did in time."""
        if self._buffer:
            return True
        readable, _, _ = select.select([self.sock], [], [], timeout)
        return bool(readable)

    def reset(self) -> None:
        """Abort the connection: the client gets a TCP reset (RST), not an orderly close."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        """Close the connection in order (FIN), without answering anything more."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def trickle(self, data: bytes, interval: float = 0.05) -> None:
        """Send ``data`` a byte every ``interval`` seconds, until sent or the client leaves."""
        for byte in data:
            if not self.send(bytes([byte])) or self.server.stopping.wait(interval):
                return

    def trickle_forever(self, byte: bytes = b"x", interval: float = 0.05) -> None:
        """Send one byte every ``interval`` seconds until the client leaves or the server stops."""
        while self.send(byte) and not self.server.stopping.wait(interval):
            pass

    def hold(self) -> None:
        """Answer nothing; return when the client closes or the server stops."""
        while self._recv():
            pass


Script = Callable[[Conn], None]


class Results:
    """An ``on_delivery`` callback that hands each ``DeliveryResult`` to the test thread."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()
        self.seen: list[Any] = []

    def __call__(self, result: Any) -> None:
        self.seen.append(result)
        self._queue.put(result)

    def next(self, timeout: float = WAIT) -> Any:
        """The next result, waiting up to ``timeout`` seconds for it."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no DeliveryResult came in {timeout:g} s") from None

    def empty(self) -> bool:
        """True when no result is waiting."""
        return self._queue.empty()


class FaultServer:
    """A TCP server on 127.0.0.1 that runs ``script(conn)`` for each connection, in a thread.

    It records every request a script read (``requests``, ``wait_for``; not when ``record``
    is False, for long runs) and counts connections (``connections``, ``wait_connections``).
    """

    def __init__(self, script: Script, *, record: bool = True) -> None:
        self.script = script
        self.record = record
        self.stopping = threading.Event()
        self._cond = threading.Condition()
        self._requests: list[RawRequest] = []
        self._connections = 0
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name="fault-server", daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/hooks``."""
        return f"http://127.0.0.1:{self.port}/hooks"

    @property
    def requests(self) -> list[RawRequest]:
        """Every request read so far, in order."""
        with self._cond:
            return list(self._requests)

    @property
    def connections(self) -> int:
        """How many connections were accepted."""
        with self._cond:
            return self._connections

    def clear(self) -> None:
        """Forget the requests recorded so far."""
        with self._cond:
            self._requests.clear()

    def _record(self, request: RawRequest) -> None:
        if not self.record:
            return
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = WAIT) -> list[RawRequest]:
        """Wait until ``count`` requests were read; return them all."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(
                    f"{len(self._requests)} of {count} requests came in {timeout:g} s"
                )
            return list(self._requests)

    def wait_connections(self, count: int, timeout: float = WAIT) -> None:
        """Wait until ``count`` connections were accepted."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._connections >= count, timeout):
                raise TimeoutError(
                    f"{self._connections} of {count} connections came in {timeout:g} s"
                )

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._cond:
                if self.stopping.is_set():
                    sock.close()
                    return
                self._connections += 1
                conn = Conn(self, sock, self._connections)
                self._open.add(sock)
                thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
                self._cond.notify_all()
            thread.start()

    def _serve(self, conn: Conn) -> None:
        try:
            self.script(conn)
        finally:
            with self._cond:
                self._open.discard(conn.sock)

    def start(self) -> FaultServer:
        """Start accepting; returns self."""
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """Stop accepting and end every open connection and script."""
        self.stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._acceptor.join(WAIT)
        with self._cond:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads)
        for thread in threads:
            thread.join(WAIT)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# What a decision function returns for one request: a status, a full answer, or an action.
RESET = "reset"  # abort with a TCP reset, no answer
CLOSE = "close"  # close in order (FIN), no answer
HANG = "hang"  # answer nothing, keep the connection open
Answer = Union[int, tuple[int, Mapping[str, str], bytes], str]


def serve(decide: Callable[[RawRequest], Answer]) -> Script:
    """A keep-alive HTTP/1.1 script that answers each request as ``decide`` says."""

    def script(conn: Conn) -> None:
        while True:
            request = conn.read_request()
            if request is None:
                conn.close()
                return
            answer = decide(request)
            if answer == RESET:
                conn.reset()
                return
            if answer == CLOSE:
                conn.close()
                return
            if answer == HANG:
                conn.hold()
                return
            status, headers, body = (answer, {}, b"") if isinstance(answer, int) else answer
            if not conn.answer(status, headers, body):  # type: ignore[arg-type]
                return

    return script


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections (bound, never listening, so not reused)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


class ForwardProxy:
    """A forward HTTP proxy on 127.0.0.1 that records each request and relays it.

    It relays only to loopback addresses, or to hosts named in ``routes`` (host name to a
    ``(address, port)`` on loopback): anything else gets a 502 from the proxy itself, so a
    test can never reach out through it.
    """

    def __init__(self, routes: Optional[Mapping[str, tuple[str, int]]] = None) -> None:
        self.routes = dict(routes or {})
        self.seen: list[tuple[str, str]] = []  # (method, absolute URL) per request
        self._cond = threading.Condition()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def wait_for(self, count: int, timeout: float = WAIT) -> list[tuple[str, str]]:
        """Wait until ``count`` requests passed through; return them."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.seen) >= count, timeout):
                raise TimeoutError(f"{len(self.seen)} of {count} requests came in {timeout:g} s")
            return list(self.seen)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._cond:
                    proxy.seen.append((self.command, self.path))
                    proxy._cond.notify_all()
                target = urllib.parse.urlsplit(self.path)
                host, port = target.hostname or "", target.port or 80
                if host in proxy.routes:
                    host, port = proxy.routes[host]
                if host not in ("127.0.0.1", "localhost"):
                    self._reply(502, b"not relayed by the test proxy")
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-connection"}
                upstream = http.client.HTTPConnection(host, port, timeout=WAIT)
                try:
                    upstream.request(self.command, target.path or "/", body, headers)
                    answer = upstream.getresponse()
                    content = answer.read()
                    self._reply(answer.status, content)
                except OSError:
                    self._reply(502, b"upstream failed")
                finally:
                    upstream.close()

            def _reply(self, status: int, content: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._thread.join(WAIT)
        self._server.server_close()
