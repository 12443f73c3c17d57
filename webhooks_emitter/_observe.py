"""The hooks through which the engine reports its tries and outcomes to observers.

Metrics, traces and structured log fields (CONTRACT section 15) hang here, and the core
imports nothing of OpenTelemetry or ``prometheus_client``: ``contrib.opentelemetry`` and
``contrib.prometheus`` add :class:`Observer` subclasses with :func:`add_observer`.

The cost when nothing is instrumented is one truth test of :data:`OBSERVERS` per try (none
per ``emit``) and one ``is None`` test of :data:`trace_capture` per ``emit``. What ``emit``
counts (events accepted, dropped) is read from each emitter's counters at collection time,
not pushed here, so instrumenting adds nothing per ``emit`` but the trace capture.

Call order for one try, all in the emitter's delivering thread:

1. ``scope = observer.try_started(emitter_id, event, attempt, url)`` before the request
   is built; ``scope.headers`` (when ``Config.propagate_trace``) are added to the request.
2. ``observer.try_ended(scope, emitter_id, event, attempt, result, status_code, duration,
   error)`` once the answer (or the failure) is known; ``duration`` is None for a try the
   library refused to send (``result == "refused"``).
3. After the try that settles the event: ``observer.outcome(emitter_id, event, outcome,
   since_emit)``, ``outcome`` being ``"delivered"`` or ``"given_up"``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Callable, Optional

__all__ = [
    "OBSERVERS",
    "Observer",
    "TryScope",
    "add_observer",
    "remove_observer",
    "result_of",
    "trace_capture",
]


class TryScope:
    """One try as an observer follows it (a span, a start time...).

    ``headers``: what to add to the request when ``Config.propagate_trace`` is set
    (W3C ``traceparent`` and ``tracestate``); empty otherwise.
    """

    __slots__ = ("headers",)

    def __init__(self, headers: Optional[Mapping[str, str]] = None) -> None:
        self.headers: Mapping[str, str] = headers or {}


class Observer:
    """Base class of observers: every hook does nothing. Hooks must not raise (what they
    raise is logged by the engine and otherwise ignored) and must not block."""

    def try_started(self, emitter_id: str, event: Any, attempt: int, url: str) -> Optional[TryScope]:
        """A try of ``event`` (a ``StoredEvent``) is about to be sent; ``attempt`` counts from 1."""
        return None

    def try_ended(
        self,
        scope: Optional[TryScope],
        emitter_id: str,
        event: Any,
        attempt: int,
        result: str,
        status_code: Optional[int],
        duration: Optional[float],
        error: Optional[str],
    ) -> None:
        """The try ended: ``result`` is one of :func:`result_of`'s values."""

    def outcome(self, emitter_id: str, event: Any, outcome: str, since_emit: float) -> None:
        """``event`` was delivered or given up (``outcome``), ``since_emit`` seconds after it
        was emitted (with a durable store, committed)."""


#: The observers of this process, in the order they were added. Replaced, never mutated,
#: so the engine reads it without a lock.
OBSERVERS: tuple[Observer, ...] = ()

#: Called by ``emit`` (when not None) to take the caller's current trace context, as a
#: string the store keeps with the event (``Message.trace_context``); None when there is none.
trace_capture: Optional[Callable[[], Optional[str]]] = None

_lock = threading.Lock()


def add_observer(observer: Observer) -> None:
    """Report every instance's tries and outcomes to ``observer`` from now on."""
    global OBSERVERS
    with _lock:
        if observer not in OBSERVERS:
            OBSERVERS = (*OBSERVERS, observer)


def remove_observer(observer: Observer) -> None:
    """Stop reporting to ``observer`` (no-op if it was not added)."""
    global OBSERVERS
    with _lock:
        OBSERVERS = tuple(o for o in OBSERVERS if o is not observer)


def result_of(ok: bool, status_code: Optional[int], error: Optional[str], final: bool,
              timed_out: bool) -> str:
    """The ``result`` label of a try (CONTRACT section 15): ``2xx`` ... ``5xx`` when an answer
    came, else ``timeout``, ``refused`` (the library would not send it) or
    ``connection_error`` (refused or reset connections, DNS and TLS failures included)."""
    if status_code is not None:
        return f"{min(max(status_code // 100, 1), 5)}xx"
    if final:
        return "refused"
    if timed_out:
        return "timeout"
    return "connection_error"
