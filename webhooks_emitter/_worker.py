"""The worker loop that the three worker commands share (the CLI's ``worker``, ``flask
webhooks worker``, Django's ``webhooks_worker``), and their ``--http HOST:PORT`` endpoint.

    >>> instance = settings.make_instance(deliver=True)                  # doctest: +SKIP
    >>> run_worker(instance, settings.exit_timeout)                      # doctest: +SKIP
    0
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Callable, Optional

from ._hub import WebhooksEmitter
from ._signals import on_stop_signals
from .exceptions import WebhooksEmitterError

__all__ = ["HTTP_HELP", "parse_http", "run_worker", "serve_http"]

logger = logging.getLogger("webhooks_emitter.operator")

#: The help of the worker commands' ``--http`` option.
HTTP_HELP = (
    "serve GET /metrics (Prometheus; needs webhooks_emitter[prometheus]), /healthz and "
    "/readyz on HOST:PORT while the worker runs"
)


def parse_http(value: str) -> tuple[str, int]:
    """``--http HOST:PORT`` as ``(host, port)``.

    Raises:
        ValueError: not of that form (the message names ``--http``).
    """
    try:
        from ._worker_http import parse_bind  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - the module ships with the package
        raise ValueError("--http is not available in this build of webhooks_emitter") from None
    host, port = parse_bind(value)
    return str(host), int(port)


def serve_http(instance: WebhooksEmitter, bind: tuple[str, int]) -> Any:
    """Start the worker's HTTP endpoint for ``instance`` on ``bind``; the started server
    (``.url``, ``.stopping()``, ``.close()``).

    Raises:
        WebhooksEmitterError: it cannot be served (``prometheus_client`` missing, the
            address taken); the message is one line that says why.
    """
    from ._worker_http import WorkerHTTP  # type: ignore[import-not-found,unused-ignore]

    try:
        server = WorkerHTTP(instance, *bind)
        server.start()
    except OSError as exc:  # the address is taken, or not this host's
        raise WebhooksEmitterError(f"--http {bind[0]}:{bind[1]}: {exc.strerror or exc}") from None
    return server


def run_worker(
    instance: WebhooksEmitter,
    exit_timeout: float,
    *,
    stop: Optional[threading.Event] = None,
    ready: Optional[Callable[[], None]] = None,
    http: Any = None,
) -> int:
    """Deliver with ``instance`` until SIGTERM or SIGINT (or ``stop`` is set), then shut
    it down within ``exit_timeout`` seconds, letting go of its leases.

    Call it from the main thread: it installs handlers for SIGTERM and SIGINT while it
    runs (a second signal during the shutdown gets the previous handler: Ctrl-C twice
    interrupts it) and restores them before returning. From another thread, pass ``stop``.

    Args:
        instance: a delivering instance with its emitters attached.
        exit_timeout: the most seconds the final shutdown may spend delivering.
        stop: an event that ends the loop as a signal would.
        ready: called once the handlers are in place (a signal from then on stops cleanly).
        http: the worker's started HTTP endpoint (:func:`serve_http`), if any: told that
            the worker is stopping (``/healthz`` then answers 503) before the shutdown,
            and closed at the end.

    Returns:
        0, the worker's exit status.

    Raises:
        ValueError: ``instance`` was made with ``deliver=False``.
        WebhooksEmitterError: called outside the main thread without ``stop``.
    """
    if not instance.delivers:
        raise ValueError("run_worker needs an instance that delivers (made with deliver=True)")
    main = threading.current_thread() is threading.main_thread()
    if stop is None:
        if not main:
            raise WebhooksEmitterError("run_worker must run in the main thread, or get stop=")
        stop = threading.Event()
    stopping = stop
    received: list[int] = []

    def first(signum: int) -> None:
        received.append(signum)
        stopping.set()

    try:
        with on_stop_signals(first):
            logger.info(
                "webhooks_emitter worker started: %d emitter(s) over %s",
                len(instance.list_emitters()),
                instance.store.describe(),
            )
            if ready is not None:
                ready()
            # Woken at once by set(); the timeout only bounds a wait a signal might not cut.
            while not stopping.wait(1.0):
                pass
            # Still inside: a second signal during the shutdown gets the previous handler.
            if http is not None:
                http.stopping()
            why = signal.Signals(received[0]).name if received else "stop requested"
            logger.info(
                "webhooks_emitter worker stopping (%s): delivering for up to %g s",
                why,
                exit_timeout,
            )
            instance.shutdown(exit_timeout)
    finally:
        if http is not None:
            http.close()
    return 0
