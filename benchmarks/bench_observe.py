"""What instrumenting costs ``emit()``: p50 latency, instrumented vs not, in the same run.

Run from the repository root::

    python benchmarks/bench_observe.py               # 5 rounds of 20000 emits per mode
    python benchmarks/bench_observe.py --rounds 9 --emits 50000

Modes, measured in turn within each round (so that drift of a shared machine hits them
alike), each ``emit`` timed alone with ``perf_counter_ns``:

``baseline``
    A hand-written emit: ``json.dumps`` of the payload, a ``uuid4`` and an append to a
    list, what any outbox must do at least.
``plain``
    ``emit`` with nothing instrumented (one ``is None`` test of ``_observe.trace_capture``).
``prometheus``
    ``contrib.prometheus.register`` done: emit must pay nothing (counts are read at scrape).
``otel``
    ``contrib.opentelemetry.instrument`` with the SDK's providers, called outside any span:
    the capture finds no span.
``otel+span``
    The same inside one active span for every emit: its ``traceparent`` is formatted once
    and reused (an application emitting several events per request).
``otel+new``
    Each emit inside a span of its own (made and entered outside the timed call): the
    capture formats every ``traceparent`` (one event per request, the worst case).

The emitter is paused (no delivery thread competes) and purged after each round; the
target (CONTRACT section 15) is at most 1 us added at p50 by instrumenting. The exit status
is 0 unless ``--strict`` and a target is missed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
import uuid
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

from opentelemetry import context as otel_context  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from webhooks_emitter import Config, WebhooksEmitter  # noqa: E402
from webhooks_emitter.contrib import opentelemetry as otel  # noqa: E402
from webhooks_emitter.contrib import prometheus  # noqa: E402

EVENT = "order.paid"
PAYLOAD = {"order": 1234, "amount": "19.99", "currency": "EUR", "lines": [1, 2, 3]}
TARGET_ADDED_US = 1.0


def timed(call: Callable[[], Any], count: int) -> float:
    """The median, in microseconds, of ``count`` timed calls (after a short warm-up)."""
    for _ in range(200):
        call()
    samples = [0] * count
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for index in range(count):
            started = clock()
            call()
            samples[index] = clock() - started
    finally:
        gc.enable()
    return statistics.median(samples) / 1000.0


def timed_in_spans(call: Callable[[], Any], count: int) -> float:
    """As :func:`timed`, each call inside a span of its own, made and entered just before
    it (untimed), as a request's span is."""
    samples = [0] * count
    clock = time.perf_counter_ns
    bits = random.getrandbits
    sampled = trace.TraceFlags(1)
    gc.disable()
    try:
        for index in range(count + 200):
            span_context = trace.SpanContext(bits(128) | 1, bits(64) | 1, False, sampled)
            token = otel_context.attach(
                trace.set_span_in_context(trace.NonRecordingSpan(span_context))
            )
            started = clock()
            call()
            elapsed = clock() - started
            otel_context.detach(token)
            if index >= 200:  # the first ones warm up
                samples[index - 200] = elapsed
    finally:
        gc.enable()
    return statistics.median(samples) / 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--emits", type=int, default=20000)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()

    hub = WebhooksEmitter(exit_timeout=0)
    hub.attach("bench", EVENT, Config("http://127.0.0.1:9/hooks", max_queue_size=10_000_000))
    hub.pause("bench")
    outbox: list[tuple[str, bytes]] = []

    def baseline() -> None:
        outbox.append((str(uuid.uuid4()), json.dumps(PAYLOAD).encode()))

    def emit() -> None:
        hub.emit(EVENT, PAYLOAD)

    tracers = TracerProvider()
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    tracer = tracers.get_tracer("bench")

    def plain() -> float:
        return timed(emit, args.emits)

    def with_prometheus() -> float:
        collector = prometheus.register(hub, registry=CollectorRegistry())
        try:
            return timed(emit, args.emits)
        finally:
            collector.unregister()

    def with_otel() -> float:
        otel.instrument(hub, meter_provider=meters, tracer_provider=tracers)
        try:
            return timed(emit, args.emits)
        finally:
            otel.uninstrument()

    def with_otel_new_spans() -> float:
        otel.instrument(hub, meter_provider=meters, tracer_provider=tracers)
        try:
            return timed_in_spans(emit, args.emits)
        finally:
            otel.uninstrument()

    def with_otel_span() -> float:
        otel.instrument(hub, meter_provider=meters, tracer_provider=tracers)
        try:
            with tracer.start_as_current_span("request"):
                return timed(emit, args.emits)
        finally:
            otel.uninstrument()

    modes: dict[str, Callable[[], float]] = {
        "baseline": lambda: timed(baseline, args.emits),
        "plain": plain,
        "prometheus": with_prometheus,
        "otel": with_otel,
        "otel+span": with_otel_span,
        "otel+new": with_otel_new_spans,
    }
    results: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.rounds):
        for name, run in modes.items():
            results[name].append(run())
            hub.purge("bench")
            outbox.clear()
    hub.shutdown(0)

    p50 = {name: statistics.median(values) for name, values in results.items()}
    print(
        f"emit() p50 over {args.rounds} rounds of {args.emits} emits "
        "(median of the rounds' medians)"
    )
    print(f"{'mode':<12} {'p50 us':>8} {'x baseline':>11} {'added us':>9}")
    for name, value in p50.items():
        added = "" if name in ("baseline", "plain") else f"{value - p50['plain']:+9.3f}"
        print(f"{name:<12} {value:8.3f} {value / p50['baseline']:11.2f} {added:>9}")
    missed = False
    for name in ("prometheus", "otel", "otel+span", "otel+new"):
        added = p50[name] - p50["plain"]
        verdict = "PASS" if added <= TARGET_ADDED_US else "FAIL"
        missed |= verdict == "FAIL"
        print(f"target: {name} adds <= {TARGET_ADDED_US:g} us at p50: {added:+.3f} us {verdict}")
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
