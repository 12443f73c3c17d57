"""The worker's HTTP endpoints (``worker --http HOST:PORT``): ``/metrics``, ``/healthz``,
``/readyz`` (CONTRACT section 15).

The three worker commands (the CLI's, ``flask webhooks worker`` and ``webhooks_worker``)
make one :class:`WorkerHTTP` for their instance: :meth:`~WorkerHTTP.start` before delivering,
:meth:`~WorkerHTTP.stopping` when the signal comes, :meth:`~WorkerHTTP.close` at the end.
"""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
from typing import TYPE_CHECKING, Any, Optional

from . import _health
from .exceptions import WebhooksEmitterError

if TYPE_CHECKING:
    from ._hub import WebhooksEmitter

__all__ = ["WorkerHTTP", "parse_bind"]

_BIND_EXAMPLE = "e.g. 127.0.0.1:9100, 0.0.0.0:9100 or [::1]:9100"


def parse_bind(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[IPv6]:PORT`` for an IPv6 address) as ``(host, port)``.

    Raises:
        ValueError: naming ``--http``, when there is no host, no port, or a port that is
            not a number from 0 to 65535.
    """
    if not isinstance(value, str):
        raise ValueError(f"--http must be HOST:PORT ({_BIND_EXAMPLE}), not {type(value).__name__}")
    host, colon, port_text = value.strip().rpartition(":")
    if not colon or not host or not port_text:
        raise ValueError(f"--http must be HOST:PORT ({_BIND_EXAMPLE}), got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"--http: {host!r} is not an IPv6 address, in {value!r}") from None
    elif ":" in host:
        raise ValueError(
            f"--http: write an IPv6 address in brackets ({_BIND_EXAMPLE}), got {value!r}"
        )
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"--http: the port must be a number from 0 to 65535, got {port_text!r}")
    return host, int(port_text)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    worker: WorkerHTTP

    def __init__(self, address: tuple[str, int], worker: WorkerHTTP) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.worker = worker
        super().__init__(address, _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.partition("?")[0]
        worker = self.server.worker
        if path == "/metrics":
            content_type, body = worker.metrics()
            self._answer(200, body, content_type)
        elif path == "/healthz":
            if worker.is_stopping:
                self._answer(503, b"stopping\n")
            else:
                self._answer(200, b"ok\n")
        elif path == "/readyz":
            health = worker.health()
            if health.ok:
                self._answer(200, b"ok\n")
            else:
                self._answer(503, ("\n".join(health.problems) + "\n").encode())
        else:
            self._answer(404, b"not found: /metrics, /healthz and /readyz are served\n")

    def _answer(
        self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds would flood the worker's standard error


class WorkerHTTP:
    """Serves ``GET /metrics`` (Prometheus text format, this instance's metrics on a private
    registry), ``/healthz`` (200 while delivering, 503 once stopping) and ``/readyz`` (200
    when ``instance.health()`` is ok, else 503 with the problems, one per line), and 404 for
    anything else, on daemon threads.

    Args:
        instance: the worker's ``WebhooksEmitter``.
        host, port: where to listen (port 0: any free port; see :attr:`url`).
    """

    def __init__(self, instance: WebhooksEmitter, host: str, port: int) -> None:
        self.instance = instance
        self.host = host
        self.port = port
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._registry: Any = None
        self._collector: Any = None
        self._generate: Any = None
        self._content_type = "text/plain; version=0.0.4; charset=utf-8"
        self._stopping = threading.Event()
        self._bound = 0  # the port listened on, once started

    def __repr__(self) -> str:
        state = "" if self._server is not None else " (not listening)"
        return f"<WorkerHTTP {self.url}{state}>"

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` where it listens (the real port when 0 was asked)."""
        host, port = self.host, self._bound or self.port
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}"

    @property
    def is_stopping(self) -> bool:
        """Whether :meth:`stopping` was called (``/healthz`` answers 503)."""
        return self._stopping.is_set()

    def start(self) -> WorkerHTTP:
        """Listen and serve on a daemon thread; returns self.

        Raises:
            WebhooksEmitterError: ``prometheus_client`` is not installed, or the address
                cannot be bound (one line saying why).
        """
        try:
            import prometheus_client
            from prometheus_client.exposition import CONTENT_TYPE_LATEST

            from .contrib import prometheus
        except ImportError:
            raise WebhooksEmitterError(
                "--http needs prometheus_client for /metrics: "
                "pip install 'webhooks_emitter[prometheus]'"
            ) from None
        registry = prometheus_client.CollectorRegistry()
        collector = prometheus.register(self.instance, registry=registry)
        try:
            server = _Server((self.host, self.port), self)
        except OSError as exc:
            collector.unregister()
            raise WebhooksEmitterError(
                f"--http {self.host}:{self.port}: cannot listen there: {exc.strerror or exc}"
            ) from None
        self._registry, self._collector = registry, collector
        self._generate = prometheus_client.generate_latest
        self._content_type = CONTENT_TYPE_LATEST
        self._server = server
        self._bound = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="webhooks-emitter:http",
            daemon=True,
        )
        self._thread.start()
        return self

    def stopping(self) -> None:
        """The worker is stopping: from now on ``/healthz`` answers 503."""
        self._stopping.set()

    def close(self) -> None:
        """Stop listening and stop collecting; safe to call twice."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._collector is not None:
            self._collector.unregister()
            self._collector = None

    # -- what the handler asks -------------------------------------------------------------

    def metrics(self) -> tuple[str, bytes]:
        """The content type and body of ``/metrics``."""
        body: bytes = self._generate(self._registry)
        return self._content_type, body

    def health(self) -> _health.Health:
        """``instance.health()`` (the engine's method; the check it calls otherwise)."""
        health = getattr(self.instance, "health", None)
        if health is not None:
            answer: _health.Health = health()
            return answer
        return _health.check(self.instance)
