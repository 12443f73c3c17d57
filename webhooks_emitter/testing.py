"""Helpers for testing code that emits webhooks: a real receiver on 127.0.0.1.

    >>> from webhooks_emitter.testing import Receiver
    >>> with Receiver(secret="supersecret") as receiver:             # doctest: +SKIP
    ...     config = Config(receiver.url, secret="supersecret")
    ...     webhooks_emitter.attach("test", "order.paid", config)
    ...     webhooks_emitter.emit("order.paid", {"order": 1})
    ...     [hook] = receiver.wait_for(1)
    ...     assert hook.json() == {"order": 1} and hook.signature_valid

The receiver records every request and answers as its ``responder`` says (204 by default);
:func:`fail_first` makes one that fails the first tries of each delivery. :func:`capture`
records deliveries without sending them, for tests of code that emits.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import attrs
import requests
from urllib3.util import SKIP_HEADER, parse_url

from . import signing
from ._transport import TryOutcome
from .exceptions import InvalidSignatureError, WebhooksEmitterError

if TYPE_CHECKING:
    from ._config import Config
    from ._hub import WebhooksEmitter

__all__ = ["Capture", "ReceivedRequest", "Receiver", "Response", "capture", "fail_first"]


@attrs.frozen
class ReceivedRequest:
    """One request as the receiver saw it.

    Attributes:
        method: the HTTP method.
        path: the request path (with the query string).
        headers: the headers, names as sent (look them up with :meth:`header`).
        body: the raw body bytes.
        try_number: 1 for the first request with this delivery id on this path, 2 for its
            retry, and so on (one emit sends the same delivery id to every emitter).
        signature_error: why the signature did not verify, or None when it did (or when
            the receiver has no secret).
        received_at: ``time.monotonic()`` when the request was read.
    """

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    try_number: int
    signature_error: Optional[str]
    received_at: float

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The value of header ``name`` (case-insensitive), or ``default``."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return default

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)

    @property
    def event(self) -> Optional[str]:
        """The ``X-*-Event`` header, whatever the identifier."""
        return self._suffixed("-event")

    @property
    def delivery_id(self) -> Optional[str]:
        """The ``X-*-Delivery`` header, whatever the identifier."""
        return self._suffixed("-delivery")

    @property
    def signature_valid(self) -> bool:
        """True when the signature verified (only meaningful with a secret)."""
        return self.signature_error is None

    def _suffixed(self, suffix: str) -> Optional[str]:
        for key, value in self.headers:
            lowered = key.lower()
            if lowered.startswith("x-") and lowered.endswith(suffix) and "hub" not in lowered:
                return value
        return None


#: What a responder returns: a status, or a status with headers and a body.
Response = Union[int, tuple[int, Mapping[str, str], bytes]]
Responder = Callable[[ReceivedRequest], Response]


def fail_first(count: int, status: int = 500) -> Responder:
    """A responder answering ``status`` to the first ``count`` tries of each delivery, then 204."""

    def respond(request: ReceivedRequest) -> Response:
        return status if request.try_number <= count else 204

    return respond


class Receiver:
    """An HTTP receiver on ``host`` (127.0.0.1) that records webhooks, for tests and demos.

    Args:
        host: the address to listen on.
        port: the port, 0 for a free one.
        secret: when given, each request's signature is checked with ``scheme``.
        scheme: the signing scheme to check with.
        header_identifier: the ``<identifier>`` of ``X-<identifier>-*`` headers.
        responder: decides each answer from the request (default: always 204).
        on_request: called with each recorded request, in the server's thread.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        secret: Optional[signing.SecretType] = None,
        scheme: signing.Scheme = signing.WEBHOOKS_EMITTER,
        header_identifier: str = "Webhooks",
        responder: Optional[Responder] = None,
        on_request: Optional[Callable[[ReceivedRequest], None]] = None,
    ) -> None:
        self.secret = secret
        self.scheme = scheme
        self.header_identifier = header_identifier
        self.responder: Responder = responder or (lambda request: 204)
        self.on_request = on_request
        self._cond = threading.Condition()
        self._requests: list[ReceivedRequest] = []
        self._tries: dict[tuple[str, str], int] = {}
        self._server = http.server.ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    def __repr__(self) -> str:
        return f"<Receiver {self.url} requests={len(self._requests)}>"

    @property
    def port(self) -> int:
        """The port listened on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The URL to attach emitters to: ``http://<host>:<port>/hooks``."""
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}/hooks"

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request recorded so far, in arrival order."""
        with self._cond:
            return list(self._requests)

    def start(self) -> Receiver:
        """Serve in a daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="webhooks-emitter-receiver",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_for(
        self,
        count: int,
        timeout: float = 10.0,
        *,
        where: Optional[Callable[[ReceivedRequest], bool]] = None,
    ) -> list[ReceivedRequest]:
        """Wait until ``count`` requests (those matching ``where``) were recorded; return them.

        Raises:
            TimeoutError: fewer had come after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [r for r in self._requests if where is None or where(r)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(found)} of {count} requests came in {timeout:g} s")
                self._cond.wait(remaining)

    def _record(
        self, method: str, path: str, headers: tuple[tuple[str, str], ...], body: bytes
    ) -> ReceivedRequest:
        error = None
        if self.secret is not None:
            try:
                self.scheme.verify(
                    body, dict(headers), self.secret, header_identifier=self.header_identifier
                )
            except InvalidSignatureError as exc:
                error = str(exc)
        delivery = next(
            (
                v
                for k, v in headers
                if k.lower() in (f"x-{self.header_identifier.lower()}-delivery",)
            ),
            None,
        )
        with self._cond:
            key = (path, delivery if delivery is not None else f"#{len(self._requests)}")
            self._tries[key] = try_number = self._tries.get(key, 0) + 1
        request = ReceivedRequest(method, path, headers, body, try_number, error, time.monotonic())
        if self.on_request is not None:
            self.on_request(request)
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()
        return request

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = receiver._record(
                    self.command, self.path, tuple(self.headers.items()), body
                )
                answer = receiver.responder(request)
                status, headers, content = (answer, {}, b"") if isinstance(answer, int) else answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_POST = do_PUT = do_GET = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


# -- capture(): deliveries recorded instead of sent ---------------------------------------------


class Capture:
    """What :func:`capture` records: one :class:`ReceivedRequest` per try, in order.

    Thread-safe: the emitters' threads record while the test reads.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._requests: list[ReceivedRequest] = []
        self._tries: dict[tuple[str, str], int] = {}

    def __repr__(self) -> str:
        return f"<Capture requests={len(self._requests)}>"

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every try recorded so far, in order (a copy)."""
        with self._cond:
            return list(self._requests)

    def clear(self) -> None:
        """Forget what was recorded (try numbers start again at 1)."""
        with self._cond:
            self._requests.clear()
            self._tries.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Wait until ``count`` tries were recorded; return them all.

        Raises:
            TimeoutError: fewer had been recorded after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{len(self._requests)} of {count} requests captured in {timeout:g} s"
                    )
                self._cond.wait(remaining)
            return list(self._requests)

    def _record(
        self,
        method: str,
        path: str,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
        delivery: Optional[str],
    ) -> None:
        with self._cond:
            key = (path, delivery if delivery is not None else f"#{len(self._requests)}")
            self._tries[key] = try_number = self._tries.get(key, 0) + 1
            self._requests.append(
                ReceivedRequest(method, path, headers, body, try_number, None, time.monotonic())
            )
            self._cond.notify_all()


class _CaptureTransport:
    """Stands in for the HTTP transport under :func:`capture`: records each request as a
    receiver would see it and answers it as a 204, without opening a socket."""

    def __init__(self, config: Config, recorder: Capture) -> None:
        self._recorder = recorder
        self._delivery_header = f"x-{config.header_identifier.lower()}-delivery"

    def send(self, request: requests.PreparedRequest) -> TryOutcome:
        """Record ``request`` as sent; the outcome of a 204 answer."""
        url = parse_url(str(request.url))
        host = url.host or ""
        default_port = 443 if url.scheme == "https" else 80
        if url.port is not None and url.port != default_port:
            host = f"{host}:{url.port}"
        # What http.client puts on the wire, as an HTTP server decodes it: Host first, the
        # request's headers in order, bytes values read as latin-1, skipped headers left out.
        headers: list[tuple[str, str]] = [("Host", host)]
        delivery = None
        for name, value in request.headers.items():
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            if value == SKIP_HEADER:
                continue
            headers.append((str(name), str(value)))
            if str(name).lower() == self._delivery_header:
                delivery = str(value)
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        self._recorder._record(
            str(request.method), str(request.path_url), tuple(headers), bytes(body), delivery
        )
        return TryOutcome(True, status_code=204)

    def close(self) -> None:
        """Nothing to close: no connection was opened."""


#: Seconds the end of a capture spends delivering what the captured instances hold.
SETTLE_TIMEOUT = 5.0


@contextlib.contextmanager
def capture(instance: Optional[WebhooksEmitter] = None) -> Iterator[Capture]:
    """Record deliveries instead of sending them, for tests of code that emits.

    Under it the captured instances send nothing over the network: their emitters queue
    and deliver as usual, but each try is recorded with the exact headers and body it
    would have sent, and counts as a 204 answer. Call ``flush()`` before reading what was
    recorded::

        with capture() as hooks:
            place_order()                      # calls webhooks_emitter.emit(...)
            webhooks_emitter.flush(5)
        [hook] = hooks.requests
        assert hook.event == "order.paid" and hook.json()["order"] == 1

    With no argument every instance on the memory store is captured: the default one,
    those the Flask extension makes per app, and those made inside the block (instances
    on a durable store are left alone). Leaving the block first delivers what the
    captured instances still hold into the capture, their waits cut short (up to 5
    seconds); anything still held then (a paused emitter's events, say) is dropped,
    logged with its count: nothing emitted inside the block ever goes over the network.

    Args:
        instance: the one :class:`~webhooks_emitter.WebhooksEmitter` to capture (None:
            every instance on the memory store).

    Yields:
        A :class:`Capture` with ``.requests`` and ``.clear()``.

    Raises:
        WebhooksEmitterError: ``instance`` uses a durable store (another process over the
            same store could deliver its events for real).
    """
    recorder = Capture()

    def factory(config: Config) -> _CaptureTransport:
        return _CaptureTransport(config, recorder)

    if instance is None:
        from . import _hub

        previous = _hub._capture_hook
        _hub.set_capture_hook(factory)
        try:
            yield recorder
        finally:
            _settle(_hub.memory_instances(), "emitted under testing.capture()")
            _hub.set_capture_hook(previous)
        return
    if instance.store.durable:
        raise WebhooksEmitterError(
            f"capture() needs an instance on the memory store, not {instance.store.describe()}: "
            "another process over a durable store could deliver its events for real"
        )
    instance.set_transport_factory(factory)
    try:
        yield recorder
    finally:
        _settle([instance], "emitted under testing.capture()")
        instance.set_transport_factory(None)


def _settle(instances: list[WebhooksEmitter], reason: str) -> None:
    """Deliver what ``instances`` hold into the capture, all within SETTLE_TIMEOUT, then
    drop the rest."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    for instance in instances:
        instance.settle_capture(max(deadline - time.monotonic(), 0.0), reason)
