"""OpenTelemetry metrics and traces of the library's deliveries (CONTRACT section 15).

Install the extra (``pip install 'webhooks_emitter[otel]'``: ``opentelemetry-api`` only; bring
your own SDK and exporter), then::

    from webhooks_emitter.contrib import opentelemetry as webhooks_otel
    webhooks_otel.instrument()            # every instance, OpenTelemetry's global providers

Metrics: the table of CONTRACT section 15; counters are read at collection time and the
store's gauges cost one query per instance per collection (reused for a second). Traces:
``emit`` keeps the caller's span context with the event (through every store), and each try
is a CLIENT span named ``POST`` whose parent is that context, so a try made later by another
process joins the trace of the request that emitted. With ``Config(propagate_trace=True)`` the
request carries that span's W3C ``traceparent``/``tracestate``.

:func:`uninstrument` undoes every :func:`instrument` call. Nothing in the core imports this
module.
"""

from __future__ import annotations

import functools
import threading
import urllib.parse
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    from opentelemetry.trace.span import DEFAULT_TRACE_STATE
except ImportError as exc:  # the extra is not installed
    raise ImportError(
        "webhooks_emitter.contrib.opentelemetry needs opentelemetry-api: "
        "pip install 'webhooks_emitter[otel]'"
    ) from exc

from .. import _hub, _observe
from .._version import __version__

if TYPE_CHECKING:
    from .._hub import WebhooksEmitter

__all__ = ["instrument", "uninstrument"]

_SCOPE = "webhooks_emitter"
#: OpenTelemetry's advice for ``http.client.request.duration`` (seconds).
TRY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
#: Retries with backoff stretch a delivery from milliseconds to a day.
DELIVERY_BUCKETS = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
]  # fmt: skip

_PROPAGATOR = TraceContextTextMapPropagator()
_lock = threading.Lock()
_active: list[_Instrumentation] = []


def _every_instance() -> list[WebhooksEmitter]:
    """Every live instance; a copy of the hub's WeakSet, taken again should an instance be
    made by another thread while it is copied."""
    for _ in range(10):
        try:
            return list(_hub._instances)
        except RuntimeError:  # "set changed size during iteration"
            continue
    return []


# -- trace context kept with an event -----------------------------------------------------------


# The two hex digits of each trace-flags byte: formatting a TraceFlags (an int subclass)
# with a format spec costs more than the rest of the traceparent.
_FLAGS = tuple(f"{flags:02x}" for flags in range(256))
# The last span context captured and its text: emits within one span format it once.
_last: tuple[Any, Optional[str]] = (None, None)


def _span_key() -> Optional[str]:
    """The context key under which OpenTelemetry keeps the current span, found through
    the public API (None if that ever changes: then ``trace.get_current_span`` is used).
    Reading the key directly skips an ABC ``isinstance`` check per ``emit``."""
    keys = list(trace.set_span_in_context(trace.INVALID_SPAN, otel_context.Context()).keys())
    return keys[0] if len(keys) == 1 else None


_SPAN_KEY = _span_key()


def _current_span() -> Any:
    if _SPAN_KEY is None:
        return trace.get_current_span()
    return otel_context.get_current().get(_SPAN_KEY)


def capture() -> Optional[str]:
    """The caller's current span context as one string: the W3C ``traceparent``, then
    ``;`` and the ``tracestate`` when there is one; None without a valid span.

    Set as ``_observe.trace_capture`` while instrumented: ``emit`` calls it once per event,
    so it is kept to a few attribute reads and one string build (benchmarks/bench_observe.py).
    """
    global _last
    span = _current_span()
    if span is None:
        return None
    span_context = span.get_span_context()
    last_context, text = _last
    if span_context is last_context:
        return text
    if not span_context.is_valid:
        return None
    # bytes.hex() turns a 128-bit id into text faster than a "%032x" format does.
    text = (
        f"00-{span_context.trace_id.to_bytes(16, 'big').hex()}-"
        f"{span_context.span_id.to_bytes(8, 'big').hex()}-"
        f"{_FLAGS[span_context.trace_flags & 0xFF]}"
    )
    state = span_context.trace_state
    if state is not DEFAULT_TRACE_STATE and state:  # most spans share the empty default
        text = f"{text};{state.to_header()}"
    _last = (span_context, text)  # one assignment: threads see the old pair or the new
    return text


def parent_context(trace_context: Optional[str]) -> Optional[otel_context.Context]:
    """The context a try's span is parented to, from what :func:`capture` stored; None
    (a new trace) when nothing, or nothing valid, was stored."""
    if not trace_context:
        return None
    parent, _, state = trace_context.partition(";")
    carrier = {"traceparent": parent}
    if state:
        carrier["tracestate"] = state
    extracted = _PROPAGATOR.extract(carrier, context=otel_context.Context())
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        return None
    return extracted


@functools.lru_cache(maxsize=4096)
def _url_attributes(url: str) -> dict[str, Any]:
    """``url.full`` without credentials, ``server.address`` and ``server.port`` (an
    emitter's URL does not change: worked out once per URL; callers copy, never change)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        explicit = parts.port
    except ValueError:  # Config checked the URL; never fail a try's span over it
        explicit = None
    netloc = f"[{host}]" if ":" in host else host
    if explicit is not None:
        netloc = f"{netloc}:{explicit}"
    full = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    port = explicit if explicit is not None else (443 if parts.scheme == "https" else 80)
    return {"url.full": full, "server.address": host, "server.port": port}


class _SpanScope(_observe.CountedTry):
    """A try followed as a span; ``headers`` carry that span's context."""

    __slots__ = ("span",)

    def __init__(self, label: str, span: trace.Span, headers: dict[str, str]) -> None:
        super().__init__(label, headers)
        self.span = span


# -- one instrument() call ------------------------------------------------------------------------


class _Instrumentation(_observe.Tally):
    """What one :func:`instrument` call observes: the tally, two histograms, the spans."""

    def __init__(
        self,
        instance: Optional[WebhooksEmitter],
        per_emitter: bool,
        instruments: _Instruments,
        tracer: trace.Tracer,
    ) -> None:
        super().__init__(instance, _every_instance, per_emitter)
        self.instruments = instruments
        self.tracer = tracer

    def started(
        self, label: str, emitter_id: str, event: Any, attempt: int, url: str
    ) -> _observe.CountedTry:
        attributes: dict[str, Any] = {
            "http.request.method": "POST",
            **_url_attributes(url),
            "webhooks_emitter.emitter": emitter_id,
            "webhooks_emitter.event": event.event,
            "webhooks_emitter.delivery_id": event.request_id,
            "webhooks_emitter.attempt": attempt,
        }
        span = self.tracer.start_span(
            "POST",
            context=parent_context(getattr(event, "trace_context", None)),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        headers: dict[str, str] = {}
        _PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))
        return _SpanScope(label, span, headers)

    def ended(
        self,
        scope: Optional[_observe.TryScope],
        label: str,
        result: str,
        status_code: Optional[int],
        duration: Optional[float],
    ) -> None:
        if duration is not None:  # None: the library refused to send it
            attributes: dict[str, Any] = {"emitter": label}
            if status_code is not None:
                attributes["http.response.status_code"] = status_code
            self.instruments.try_duration.record(duration, attributes)
        if isinstance(scope, _SpanScope):
            span = scope.span
            if status_code is not None:
                span.set_attribute("http.response.status_code", status_code)
            if result != "2xx":
                error_type = str(status_code) if status_code is not None else result
                span.set_attribute("error.type", error_type)
                span.set_status(Status(StatusCode.ERROR, error_type))
            span.end()

    def settled(self, label: str, outcome: str, since_emit: float) -> None:
        self.instruments.delivery_duration.record(
            since_emit, {"emitter": label, "outcome": outcome}
        )


class _Instruments:
    """The instruments of one meter provider, made once: OpenTelemetry's SDK hands back the
    first instrument of a name (dropping new callbacks), so a second ``instrument`` call on
    the same provider shares these, and their callbacks read every active instrumentation
    of the provider."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.instrumentations: list[_Instrumentation] = []
        self.try_duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Seconds one webhook try took.",
            explicit_bucket_boundaries_advisory=TRY_BUCKETS,
        )
        self.delivery_duration = meter.create_histogram(
            "webhooks_emitter.delivery.duration",
            unit="s",
            description="Seconds from emit (a durable store: the commit) to delivered or given up.",
            explicit_bucket_boundaries_advisory=DELIVERY_BUCKETS,
        )
        meter.create_observable_counter(
            "webhooks_emitter.deliveries",
            callbacks=[self._deliveries],
            unit="delivery",
            description="Events that ended, by outcome: delivered, given_up, dropped.",
        )
        meter.create_observable_counter(
            "webhooks_emitter.tries",
            callbacks=[self._tries],
            unit="try",
            description="Tries by result: 2xx..5xx, timeout, connection_error, refused.",
        )
        meter.create_observable_gauge(
            "webhooks_emitter.in_flight",
            callbacks=[self._in_flight],
            unit="try",
            description="This process's tries on the wire now.",
        )
        for name, unit, description in (
            ("queued", "event", "Events queued (the store's view)."),
            ("failed", "event", "Given-up events kept as dead letters (the store's view)."),
            ("oldest_queued_age", "s", "Age of the oldest queued event, 0 when none."),
            ("paused", "1", '1 when paused, 0 when running (emitter "*": paused emitters).'),
        ):
            meter.create_observable_gauge(
                f"webhooks_emitter.{name}",
                callbacks=[self._gauge(name)],
                unit=unit,
                description=description,
            )

    def _active(self) -> list[_Instrumentation]:
        with _lock:
            return list(self.instrumentations)

    def _deliveries(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"emitter": label, "outcome": outcome})
            for tally in self._active()
            for (label, outcome), count in tally.deliveries().items()
        ]

    def _tries(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"emitter": label, "result": result})
            for tally in self._active()
            for (label, result), count in tally.try_counts().items()
        ]

    def _in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"emitter": label})
            for tally in self._active()
            for label, count in tally.in_flight_now().items()
        ]

    def _gauge(self, name: str) -> Any:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(getattr(values, name), {"emitter": label})
                for tally in self._active()
                for label, values in tally.gauges().items()
            ]

        return observe


# Per meter provider, weakly: a provider dropped by the program takes its instruments along.
_instruments: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()


def instrument(
    instance: Optional[WebhooksEmitter] = None,
    *,
    meter_provider: Optional[metrics.MeterProvider] = None,
    tracer_provider: Optional[trace.TracerProvider] = None,
    per_emitter: bool = True,
) -> None:
    """Report the library's metrics and traces to OpenTelemetry.

    Args:
        instance: the ``WebhooksEmitter`` to report, or None for every instance of the
            process (those made later included).
        meter_provider: where the metrics go (None: OpenTelemetry's global provider).
        tracer_provider: where the spans go (None: OpenTelemetry's global provider).
        per_emitter: False reports every series under ``emitter="*"`` (for thousands of
            emitters): counts add up, ``oldest_queued_age`` is the largest and ``paused``
            counts the paused emitters.

    From now on ``emit`` keeps the caller's span context with each event, and each try is
    a span. :func:`uninstrument` undoes it.

    Raises:
        TypeError: an argument is not of the documented type.
    """
    if instance is not None and not isinstance(instance, _hub.WebhooksEmitter):
        raise TypeError(
            f"instance must be a WebhooksEmitter or None, not {type(instance).__name__}"
        )
    if not isinstance(per_emitter, bool):
        raise TypeError(f"per_emitter must be a bool, not {type(per_emitter).__name__}")
    if meter_provider is None:
        meter_provider = metrics.get_meter_provider()
    if tracer_provider is None:
        tracer_provider = trace.get_tracer_provider()
    tracer = tracer_provider.get_tracer(_SCOPE, __version__)
    with _lock:
        instruments = _instruments.get(meter_provider)
    if instruments is None:
        made = _Instruments(meter_provider.get_meter(_SCOPE, __version__))
        with _lock:
            instruments = _instruments.setdefault(meter_provider, made)
    instrumentation = _Instrumentation(instance, per_emitter, instruments, tracer)
    with _lock:
        instruments.instrumentations.append(instrumentation)
        _active.append(instrumentation)
        _observe.trace_capture = capture
    _observe.add_observer(instrumentation)


def uninstrument() -> None:
    """Undo every :func:`instrument` call: no more spans, no trace context kept by ``emit``,
    and the metrics stop being reported (OpenTelemetry instruments cannot be removed: they
    report nothing from now on)."""
    with _lock:
        gone = list(_active)
        _active.clear()
        for instrumentation in gone:
            with_it = instrumentation.instruments.instrumentations
            if instrumentation in with_it:
                with_it.remove(instrumentation)
        _observe.trace_capture = None
    for instrumentation in gone:
        _observe.remove_observer(instrumentation)
