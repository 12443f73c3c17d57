"""OpenTelemetry metrics and traces (CONTRACT section 15), read with the SDK's in-memory
metric reader and span exporter: the table's instruments, a CLIENT span per try parented to
the emitter's context, the ``traceparent`` a receiver gets, a trace that crosses two
processes over one SQLite file, and ``uninstrument``.

The tests marked "engine" in their docstring need the engine to call the ``_observe`` hooks
and keep the trace context with the event (the ENGINE branch; "SQLite" also the SQLITE
branch's column); the others call the hooks directly or need only the stores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, TraceState

from webhooks_emitter import Config, WebhooksEmitter, _observe
from webhooks_emitter.contrib import opentelemetry as otel
from webhooks_emitter.testing import Receiver, fail_first

WAIT = 10.0


class Telemetry:
    """A meter provider with an in-memory reader and a tracer provider with an in-memory
    exporter, private to one test."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.exporter = InMemorySpanExporter()
        self.tracers = TracerProvider()
        self.tracers.add_span_processor(SimpleSpanProcessor(self.exporter))

    def points(self, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """The data points of metric ``name`` now, by their sorted attributes."""
        data = self.reader.get_metrics_data()
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            found[tuple(sorted(point.attributes.items()))] = point
        return found

    def point(self, name: str, **attributes: Any) -> Any:
        """One data point of ``name`` (None when there is none with those attributes)."""
        return self.points(name).get(tuple(sorted(attributes.items())))

    def unit(self, name: str) -> Optional[str]:
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        return metric.unit
        return None

    def spans(self, count: int) -> list[ReadableSpan]:
        """Wait until ``count`` spans ended; return them in the order they ended."""
        deadline = time.monotonic() + WAIT
        while True:
            spans = list(self.exporter.get_finished_spans())
            if len(spans) >= count:
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(spans)} of {count} spans ended in {WAIT} s")
            time.sleep(0.005)


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """Private providers; every ``instrument`` call of the test undone afterwards."""
    made = Telemetry()
    yield made
    otel.uninstrument()
    made.meters.shutdown()
    made.tracers.shutdown()


@pytest.fixture
def instrumented(hub: WebhooksEmitter, telemetry: Telemetry) -> Telemetry:
    """The test's hub instrumented on the private providers."""
    otel.instrument(hub, meter_provider=telemetry.meters, tracer_provider=telemetry.tracers)
    return telemetry


@pytest.fixture
def fresh_gauges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every collection asks the store again (no one-second cache)."""
    monkeypatch.setattr(_observe, "STATES_TTL", 0.0)


class Event:
    """What the hooks read of a ``StoredEvent``: its name, request id and kept context."""

    def __init__(self, emitter_id: str, trace_context: Optional[str]) -> None:
        self.emitter_id = emitter_id
        self.event = "order.paid"
        self.request_id = "delivery-7"
        self.trace_context = trace_context


def stored(emitter_id: str, trace_context: Optional[str] = None) -> Event:
    return Event(emitter_id, trace_context)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {WAIT} s")
        time.sleep(0.005)


# -- the trace context kept with an event ---------------------------------------------------------


def test_capture_is_none_without_a_span_and_the_traceparent_within_one(
    telemetry: Telemetry,
) -> None:
    """Outside any span nothing is kept; inside one, its W3C traceparent (sampled flag
    included), and its tracestate after a semicolon when it has one."""
    assert otel.capture() is None
    tracer = telemetry.tracers.get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        context = span.get_span_context()
        assert (
            otel.capture()
            == f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        )
    parent = trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=0x1234,
            span_id=0x5678,
            is_remote=True,
            trace_flags=trace.TraceFlags(1),
            trace_state=TraceState([("vendor", "v1")]),
        )
    )
    with trace.use_span(parent):
        assert otel.capture() == f"00-{0x1234:032x}-{0x5678:016x}-01;vendor=v1"


def test_a_kept_context_reads_back_as_the_parent_and_garbage_as_none() -> None:
    """What ``capture`` wrote gives the same span context back; an empty or malformed one
    gives None (the try then starts a new trace)."""
    kept = f"00-{0xABC:032x}-{0xDEF:016x}-01;vendor=v1"
    context = otel.parent_context(kept)
    assert context is not None
    span_context = trace.get_current_span(context).get_span_context()
    assert (span_context.trace_id, span_context.span_id, span_context.is_remote) == (
        0xABC,
        0xDEF,
        True,
    )
    assert span_context.trace_state.get("vendor") == "v1"
    for bad in (None, "", "not a traceparent", f"00-{0:032x}-{0:016x}-01"):
        assert otel.parent_context(bad) is None


def test_instrument_sets_the_capture_and_uninstrument_undoes_every_call(
    hub: WebhooksEmitter, telemetry: Telemetry
) -> None:
    """Two ``instrument`` calls add two observers and the capture; one ``uninstrument``
    removes both and the capture."""
    before = _observe.OBSERVERS
    otel.instrument(hub, meter_provider=telemetry.meters, tracer_provider=telemetry.tracers)
    otel.instrument(meter_provider=telemetry.meters, tracer_provider=telemetry.tracers)
    assert _observe.trace_capture is otel.capture
    assert len(_observe.OBSERVERS) == len(before) + 2
    otel.uninstrument()
    assert _observe.trace_capture is None
    assert _observe.OBSERVERS == before


def test_instrument_refuses_bad_arguments() -> None:
    """TypeError names the argument, and nothing is instrumented."""
    with pytest.raises(TypeError, match="instance"):
        otel.instrument("hub")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="per_emitter"):
        otel.instrument(per_emitter=1)  # type: ignore[arg-type]
    assert _observe.trace_capture is None


# -- spans, driven through the hooks ---------------------------------------------------------


def test_a_try_is_a_client_span_under_the_kept_context_with_http_attributes(
    hub: WebhooksEmitter, instrumented: Telemetry
) -> None:
    """The span is named POST, of kind CLIENT, child of the event's context, with the HTTP
    client attributes (``url.full`` without the credentials) and the library's own; the
    scope's traceparent names this span."""
    hub.attach("billing", "order.paid", Config("http://127.0.0.1:9/hooks"))
    kept = f"00-{0xABC:032x}-{0xDEF:016x}-01"
    event = stored("billing", kept)
    (observer,) = [o for o in _observe.OBSERVERS if isinstance(o, otel._Instrumentation)]
    scope = observer.try_started("billing", event, 2, "https://user:pw@hooks.example:8443/in?x=1")
    assert scope is not None
    observer.try_ended(scope, "billing", event, 2, "2xx", 204, 0.02, None)
    (span,) = instrumented.spans(1)
    assert (span.name, span.kind) == ("POST", SpanKind.CLIENT)
    assert (
        span.context.trace_id == 0xABC and span.parent is not None and span.parent.span_id == 0xDEF
    )
    assert dict(span.attributes or {}) == {
        "http.request.method": "POST",
        "url.full": "https://hooks.example:8443/in?x=1",
        "server.address": "hooks.example",
        "server.port": 8443,
        "http.response.status_code": 204,
        "webhooks_emitter.emitter": "billing",
        "webhooks_emitter.event": "order.paid",
        "webhooks_emitter.delivery_id": "delivery-7",
        "webhooks_emitter.attempt": 2,
    }
    assert span.status.status_code == StatusCode.UNSET
    assert scope.headers["traceparent"] == f"00-{0xABC:032x}-{span.context.span_id:016x}-01"


@pytest.mark.parametrize(
    "result, status_code, error_type",
    [
        ("5xx", 503, "503"),
        ("3xx", 302, "302"),
        ("timeout", None, "timeout"),
        ("connection_error", None, "connection_error"),
        ("refused", None, "refused"),
    ],
)
def test_a_failed_try_is_an_error_span_with_its_error_type(
    hub: WebhooksEmitter,
    instrumented: Telemetry,
    result: str,
    status_code: Optional[int],
    error_type: str,
) -> None:
    """``error.type`` is the status code as text when an answer came, else the result; a
    try without a kept context starts a new trace (no parent)."""
    hub.attach("billing", "order.paid", Config("http://127.0.0.1:9/hooks"))
    (observer,) = [o for o in _observe.OBSERVERS if isinstance(o, otel._Instrumentation)]
    event = stored("billing")
    scope = observer.try_started("billing", event, 1, "http://127.0.0.1:9/hooks")
    duration = None if result == "refused" else 0.01
    observer.try_ended(scope, "billing", event, 1, result, status_code, duration, "failed")
    (span,) = instrumented.spans(1)
    assert span.parent is None
    assert span.status.status_code == StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == error_type
    assert (span.attributes or {}).get("http.response.status_code") == status_code


# -- metrics -----------------------------------------------------------------------------------


def test_the_instruments_carry_the_table_names_units_and_attributes(
    hub: WebhooksEmitter, instrumented: Telemetry, fresh_gauges: None
) -> None:
    """Hooks for a 500 then a 204 and a delivery, one paused emitter with a queued event:
    each instrument of the table with its unit and its attributes."""
    hub.attach("billing", "order.paid", Config("http://127.0.0.1:9/hooks"))
    hub.attach("crm", "user.created", Config("http://127.0.0.1:9/hooks"))
    hub.pause("crm")
    hub.emit("user.created", {})
    (observer,) = [o for o in _observe.OBSERVERS if isinstance(o, otel._Instrumentation)]
    event = stored("billing")
    scope = observer.try_started("billing", event, 1, "http://127.0.0.1:9/hooks")
    observer.try_ended(scope, "billing", event, 1, "5xx", 500, 0.01, "HTTP 500")
    scope = observer.try_started("billing", event, 2, "http://127.0.0.1:9/hooks")
    observer.try_ended(scope, "billing", event, 2, "2xx", 204, 0.02, None)
    observer.outcome("billing", event, "delivered", 0.5)
    t = instrumented
    assert t.point("webhooks_emitter.deliveries", emitter="billing", outcome="delivered").value == 1
    assert t.point("webhooks_emitter.deliveries", emitter="billing", outcome="given_up").value == 0
    assert t.point("webhooks_emitter.tries", emitter="billing", result="5xx").value == 1
    assert t.point("webhooks_emitter.tries", emitter="billing", result="2xx").value == 1
    assert (
        t.point(
            "http.client.request.duration", emitter="billing", **{"http.response.status_code": 500}
        ).count
        == 1
    )
    assert (
        t.point("webhooks_emitter.delivery.duration", emitter="billing", outcome="delivered").sum
        == 0.5
    )
    assert t.point("webhooks_emitter.queued", emitter="crm").value == 1
    assert t.point("webhooks_emitter.paused", emitter="crm").value == 1
    assert t.point("webhooks_emitter.paused", emitter="billing").value == 0
    assert t.point("webhooks_emitter.failed", emitter="crm").value == 0
    assert t.point("webhooks_emitter.oldest_queued_age", emitter="crm").value > 0
    assert t.point("webhooks_emitter.in_flight", emitter="billing").value == 0
    units = {
        "webhooks_emitter.deliveries": "delivery",
        "webhooks_emitter.tries": "try",
        "http.client.request.duration": "s",
        "webhooks_emitter.delivery.duration": "s",
        "webhooks_emitter.queued": "event",
        "webhooks_emitter.failed": "event",
        "webhooks_emitter.oldest_queued_age": "s",
        "webhooks_emitter.paused": "1",
        "webhooks_emitter.in_flight": "try",
    }
    assert {name: t.unit(name) for name in units} == units


def test_per_emitter_false_reports_under_star(
    hub: WebhooksEmitter, telemetry: Telemetry, fresh_gauges: None
) -> None:
    """Two paused emitters with events: queued 3 and paused 2 under ``emitter="*"``."""
    otel.instrument(
        hub, meter_provider=telemetry.meters, tracer_provider=telemetry.tracers, per_emitter=False
    )
    hub.attach("billing", "order.paid", Config("http://127.0.0.1:9/hooks"))
    hub.attach("crm", "order.paid", Config("http://127.0.0.1:9/hooks"))
    hub.pause("billing")
    hub.pause("crm")
    hub.emit("order.paid", {})
    hub.emit("order.paid", {}, to="crm")
    assert telemetry.point("webhooks_emitter.queued", emitter="*").value == 3
    assert telemetry.point("webhooks_emitter.paused", emitter="*").value == 2
    assert set(telemetry.points("webhooks_emitter.queued")) == {(("emitter", "*"),)}


def test_after_uninstrument_no_span_and_no_new_counts(
    hub: WebhooksEmitter, instrumented: Telemetry
) -> None:
    """The metric callbacks report nothing more and the hooks are gone."""
    hub.attach("billing", "order.paid", Config("http://127.0.0.1:9/hooks"))
    assert instrumented.point("webhooks_emitter.queued", emitter="billing") is not None
    otel.uninstrument()
    assert not [o for o in _observe.OBSERVERS if isinstance(o, otel._Instrumentation)]
    assert instrumented.point("webhooks_emitter.queued", emitter="billing") is None


# -- real deliveries (engine) ----------------------------------------------------------------------


def test_a_delivery_joins_the_callers_trace_and_sends_traceparent_when_asked(
    hub: WebhooksEmitter, instrumented: Telemetry, fast: Callable[..., Config]
) -> None:
    """Engine. Emitted inside a span, retried once: two POST spans, children of the caller's
    span, and each request carries its own try's traceparent (``propagate_trace=True``)."""
    with Receiver(responder=fail_first(1, 500)) as receiver:
        hub.attach("billing", "order.paid", fast(receiver.url, propagate_trace=True))
        tracer = instrumented.tracers.get_tracer("test")
        with tracer.start_as_current_span("checkout") as caller:
            hub.emit("order.paid", {"order": 1})
        requests = receiver.wait_for(2, WAIT)
    spans = [s for s in instrumented.spans(3) if s.name == "POST"]
    assert len(spans) == 2
    caller_context = caller.get_span_context()
    for span, request in zip(spans, requests):
        assert span.context.trace_id == caller_context.trace_id
        assert span.parent is not None and span.parent.span_id == caller_context.span_id
        assert request.header("traceparent") == (
            f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-"
            f"{span.context.trace_flags:02x}"
        )
    assert [(s.attributes or {})["webhooks_emitter.attempt"] for s in spans] == [1, 2]
    assert [(s.attributes or {})["http.response.status_code"] for s in spans] == [500, 204]
    wait_for(
        lambda: (
            (
                instrumented.point(
                    "webhooks_emitter.deliveries", emitter="billing", outcome="delivered"
                )
                or _Zero
            ).value
            == 1
        ),
        "delivered counted",
    )


class _Zero:
    value = 0


def test_without_propagate_trace_no_traceparent_is_sent(
    hub: WebhooksEmitter, instrumented: Telemetry, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """Engine. Instrumented, but ``propagate_trace`` off (the default): the span exists,
    the receiver learns no trace id."""
    hub.attach("billing", "order.paid", fast(receiver.url))
    with instrumented.tracers.get_tracer("test").start_as_current_span("checkout"):
        hub.emit("order.paid", {})
    (request,) = receiver.wait_for(1, WAIT)
    assert request.header("traceparent") is None
    assert [s.name for s in instrumented.spans(2)].count("POST") == 1


EMITTING_CHILD = """
import sys
from opentelemetry.sdk.trace import TracerProvider
import webhooks_emitter
from webhooks_emitter import Config, WebhooksEmitter
from webhooks_emitter.contrib import opentelemetry as otel

tracers = TracerProvider()
otel.instrument(tracer_provider=tracers)
hub = WebhooksEmitter(store=sys.argv[1], deliver=False)
hub.attach("billing", "order.paid", Config(sys.argv[2], propagate_trace=True))
with tracers.get_tracer("web").start_as_current_span("checkout") as span:
    hub.emit("order.paid", {"order": 1})
    context = span.get_span_context()
print(f"{context.trace_id:032x} {context.span_id:016x}", flush=True)
hub.shutdown(5)
"""


def test_a_try_made_by_another_process_joins_the_emitting_process_trace(
    tmp_path: Path, telemetry: Telemetry, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """Engine, SQLite. A web process emits inside a span into one SQLite file and exits
    without delivering; this process delivers: its POST span belongs to the web process's
    trace, child of its span, and the receiver gets that trace id."""
    url = f"sqlite:///{tmp_path / 'hooks.db'}"
    child = subprocess.run(
        [sys.executable, "-c", EMITTING_CHILD, url, receiver.url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert child.returncode == 0, child.stderr
    trace_id, parent_span_id = child.stdout.split()
    hub = WebhooksEmitter(store=url)
    try:
        otel.instrument(hub, meter_provider=telemetry.meters, tracer_provider=telemetry.tracers)
        hub.attach("billing", "order.paid", fast(receiver.url, propagate_trace=True))
        (request,) = receiver.wait_for(1, WAIT)
        (span,) = telemetry.spans(1)
    finally:
        hub.shutdown(2)
    assert f"{span.context.trace_id:032x}" == trace_id
    assert span.parent is not None and f"{span.parent.span_id:016x}" == parent_span_id
    assert (request.header("traceparent") or "").split("-")[1] == trace_id


@pytest.mark.parametrize(
    "url, expected",
    [
        (
            "https://user:secret@Hooks.Example.com/in?token=1#frag",
            ("https://hooks.example.com/in?token=1", "hooks.example.com", 443),
        ),
        ("http://127.0.0.1/hooks", ("http://127.0.0.1/hooks", "127.0.0.1", 80)),
        ("http://[::1]:8080/h", ("http://[::1]:8080/h", "::1", 8080)),
    ],
)
def test_url_attributes_drop_credentials_and_name_the_default_port(
    url: str, expected: tuple[str, str, int]
) -> None:
    """``url.full`` without user, password or fragment; ``server.port`` the scheme's
    default when the URL names none."""
    attributes = otel._url_attributes(url)
    got = (attributes["url.full"], attributes["server.address"], attributes["server.port"])
    assert got == expected
