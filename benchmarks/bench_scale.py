"""Benchmarks of thousands of attached emitters (CONTRACT.md section 14, issue 14).

Run from the repository root::

    python benchmarks/bench_scale.py                    # every section, 5 rounds
    python benchmarks/bench_scale.py --rounds 9         # steadier medians
    python benchmarks/bench_scale.py --only a,c         # some sections only
    python benchmarks/bench_scale.py --store sqlite     # over an SQLite file per instance

Each figure printed is the median over the rounds; each ratio and difference is taken
between measurements of the same round, so that a busy machine slows both sides alike.
Targets are reported as PASS/FAIL; the exit status is 0 either way unless ``--strict``.
See benchmarks/README.rst (section "Thousands of emitters") for what each line means.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Sequence
from functools import partial
from typing import Any, Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bench  # noqa: E402 - the receivers, payloads and result table of benchmarks/bench.py

import webhooks_emitter  # noqa: E402
from webhooks_emitter import Config, WebhooksEmitter  # noqa: E402

EVENT = "order.created"
# Nothing is ever delivered to this URL: the emitters that use it are never sent an event
# (or are paused).
NOWHERE = "http://127.0.0.1:9/hooks"
BLOCK = 1000


class Hubs:
    """Makes instances over the chosen store (an SQLite file each, in a temporary folder)."""

    def __init__(self, store: str) -> None:
        self.store = store
        self.folder = tempfile.mkdtemp(prefix="bench-scale-") if store == "sqlite" else None
        self.count = 0

    def make(self, **settings: Any) -> WebhooksEmitter:
        if self.folder is not None:
            self.count += 1
            settings["store"] = "sqlite:///" + os.path.join(self.folder, f"{self.count}.db")
        return WebhooksEmitter(exit_timeout=0.0, **settings)

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def emitter_threads() -> int:
    """How many emitter threads run now (the housekeeping thread is not one)."""
    return sum(
        1
        for t in threading.enumerate()
        if t.name.startswith("webhooks-emitter:") and t.name != "webhooks-emitter:housekeeping"
    )


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


# -- a. attach and detach cost ------------------------------------------------------------


def per_call_us(calls: Sequence[Callable[[], Any]]) -> float:
    """Microseconds per call over ``calls``: the median of batches of 100, so that a full
    garbage collection (whose cost grows with the heap, not with this library) landing in
    one batch does not decide the figure."""
    batches = []
    for start in range(0, len(calls), 100):
        batch = calls[start : start + 100]
        began = time.perf_counter()
        for call in batch:
            call()
        batches.append((time.perf_counter() - began) / len(batch))
    return statistics.median(batches) * 1e6


def bench_attach(results: bench.Results, hubs: Hubs, count: int) -> None:
    """Attach ``count`` emitters to one event, then detach them, in blocks of 1,000; the
    first and the last block of each are compared.

    Every emitter is subscribed to the same event, so that the event's routing grows to
    ``count`` entries: the case a rebuilt snapshot would make quadratic.
    """
    hub = hubs.make()
    config = Config(NOWHERE)
    ids = [f"customer-{i}" for i in range(count)]
    attach: list[float] = []
    detach: list[float] = []
    try:
        gc.collect()
        for start in range(0, count, BLOCK):
            block = ids[start : start + BLOCK]
            attach.append(per_call_us([partial(hub.attach, i, EVENT, config) for i in block]))
        threads = emitter_threads()
        results.add(f"a. emitter threads after {count:,} attaches", threads, "", ("<=", 0))
        for start in range(0, count, BLOCK):
            block = ids[start : start + BLOCK]
            detach.append(per_call_us([partial(hub.detach, i) for i in block]))
    finally:
        hub.shutdown(0.0)
    results.add(f"a. attach, first 1,000 of {count:,}", attach[0], "us")
    results.add(f"a. attach, last 1,000 of {count:,}", attach[-1], "us")
    results.add("a. attach last / first", attach[-1] / attach[0], "x", ("<=", 1.5))
    results.add(f"a. detach, first 1,000 of {count:,}", detach[0], "us")
    results.add(f"a. detach, last 1,000 of {count:,}", detach[-1], "us")
    results.add("a. detach last / first", detach[-1] / detach[0], "x", ("<=", 1.5))


# -- b. memory per idle emitter -------------------------------------------------------------


def bench_memory(results: bench.Results, hubs: Hubs) -> None:
    """What 1,000 attaches of never-used emitters sharing one Config allocate, per emitter."""
    hub = hubs.make()
    config = Config(NOWHERE)
    try:
        hub.attach("warm-up", EVENT, config)  # what the first attach sets up once
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(BLOCK):
            hub.attach(f"idle-{i}", EVENT, config)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    finally:
        hub.shutdown(0.0)
    results.add("b. memory per idle emitter", (after - before) / BLOCK, "B", ("<=", 10240.0))


# -- c. emit cost with many attached -------------------------------------------------------


def emit_setup(hubs: Hubs, count: int, samples: int) -> WebhooksEmitter:
    """``count`` emitters: ``customer-0`` alone on ``invoice.sent`` and with every other on
    ``order.created``; it is paused, so events queue for it and no thread delivers them."""
    hub = hubs.make()
    config = Config(NOWHERE, max_queue_size=samples * 4 + 100)
    hub.attach_many("customer-0", ["invoice.sent", EVENT], config)
    for i in range(1, count):
        hub.attach(f"customer-{i}", EVENT, config)
    hub.pause("customer-0")
    return hub


def bench_emit(results: bench.Results, hubs: Hubs, count: int, samples: int) -> None:
    """emit() to one emitter, with ``count`` attached vs 10: by ``to=`` (every emitter is
    subscribed to the event), and without (the emitter alone is subscribed to it). The two
    instances are measured in turn, in batches of 100 calls; p50 of single calls."""
    payload = bench.payload_of(300)
    small = emit_setup(hubs, 10, samples)
    large = emit_setup(hubs, count, samples)
    clock = time.perf_counter_ns
    cases: dict[str, Callable[[WebhooksEmitter], Any]] = {
        "to=": lambda hub: hub.emit(EVENT, payload, to="customer-0"),
        "alone": lambda hub: hub.emit("invoice.sent", payload),
    }
    try:
        for label, call in cases.items():
            timings: dict[int, list[int]] = {10: [], count: []}
            for hub in (small, large):
                for _ in range(20):
                    call(hub)  # warm up
            for _ in range(samples // 100):
                for size, hub in ((10, small), (count, large)):
                    for _ in range(100):
                        start = clock()
                        call(hub)
                        timings[size].append(clock() - start)
            few = bench.percentile(timings[10], 0.5) / 1000
            many = bench.percentile(timings[count], 0.5) / 1000
            name = "to= one emitter" if label == "to=" else "its one subscriber"
            results.add(f"c. emit {name}, 10 attached p50", few, "us")
            results.add(f"c. emit {name}, {count:,} attached p50", many, "us")
            results.add(f"c. emit {name}: {count:,} / 10", many / few, "x", ("<=", 1.2))
    finally:
        small.shutdown(0.0)
        large.shutdown(0.0)


# -- d. shutdown of idle emitters -------------------------------------------------------------


def bench_shutdown_idle(results: bench.Results, hubs: Hubs, count: int) -> None:
    hub = hubs.make()
    config = Config(NOWHERE)
    for i in range(count):
        hub.attach(f"idle-{i}", EVENT, config)
    elapsed = timed(lambda: hub.shutdown(5.0))
    results.add(f"d. shutdown of {count:,} idle emitters", elapsed, "s", ("<=", 1.0))


# -- e. flush and shutdown with 100 busy ----------------------------------------------------


def busy_run(hubs: Hubs, url: str, busy: int, idle: int, events: int) -> tuple[float, float]:
    """(flush seconds, shutdown seconds) for ``busy`` emitters with ``events`` each, beside
    ``idle`` idle ones; every event checked as delivered."""
    hub = hubs.make(idle_timeout=30.0)
    shared = Config(NOWHERE)
    for i in range(idle):
        hub.attach(f"idle-{i}", f"idle.{i % 100}", shared)
    delivered = [0]
    lock = threading.Lock()

    def count(result: Any) -> None:
        if result.delivered:
            with lock:
                delivered[0] += 1

    config = bench.config(url, on_delivery=count, max_queue_size=events * 2 + 10)
    for j in range(busy):
        hub.attach(f"busy-{j}", "work", config)
    payload = bench.payload_of(300)
    try:
        for _ in range(events):
            hub.emit("work", payload)
        start = time.perf_counter()
        if not hub.flush(120):
            raise RuntimeError("flush timed out")
        flushed = time.perf_counter() - start
        for _ in range(events):
            hub.emit("work", payload)
        start = time.perf_counter()
        hub.shutdown(120)
        shut = time.perf_counter() - start
    finally:
        hub.shutdown(0.0)
    if delivered[0] != 2 * busy * events:
        raise RuntimeError(f"only {delivered[0]} of {2 * busy * events} delivered")
    return flushed, shut


def bench_busy(
    results: bench.Results, hubs: Hubs, receivers: bench.Receivers, count: int, busy: int
) -> None:
    """Flush, then shutdown, with ``busy`` emitters delivering 10 events each, alone and
    beside ``count - busy`` idle emitters."""
    alone_flush, alone_shutdown = busy_run(hubs, receivers.fast, busy, 0, 10)
    many_flush, many_shutdown = busy_run(hubs, receivers.fast, busy, count - busy, 10)
    results.add(f"e. flush, {busy} busy alone", alone_flush, "s")
    results.add(f"e. flush, {busy} busy of {count:,}", many_flush, "s")
    results.add("e. flush: difference", many_flush - alone_flush, "s", ("<=", 1.0))
    results.add(f"e. shutdown, {busy} busy alone", alone_shutdown, "s")
    results.add(f"e. shutdown, {busy} busy of {count:,}", many_shutdown, "s")
    results.add("e. shutdown: difference", many_shutdown - alone_shutdown, "s", ("<=", 1.0))


# -- main -------------------------------------------------------------------------------------

SECTIONS = "abcde"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per section (default 5)")
    parser.add_argument("--only", default=SECTIONS, help="sections to run, e.g. a,c (default all)")
    parser.add_argument("--emitters", type=int, default=10_000, help="emitters attached")
    parser.add_argument("--busy", type=int, default=100, help="busy emitters (e)")
    parser.add_argument("--emit-samples", type=int, default=3000, help="emit() calls per case")
    parser.add_argument("--store", choices=["memory", "sqlite"], default="memory")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    parser.add_argument("--json", metavar="FILE", help="also write every round's values to FILE")
    args = parser.parse_args(argv)
    if args.emitters < 2 * BLOCK or args.emitters % BLOCK:
        parser.error(f"--emitters must be a multiple of {BLOCK} and at least {2 * BLOCK}")
    only = [s for s in args.only.replace(",", "") if s in SECTIONS]
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    print(
        f"webhooks_emitter {webhooks_emitter.__version__}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, {args.store} store, {args.emitters:,} emitters, "
        f"{args.rounds} rounds",
        flush=True,
    )
    hubs = Hubs(args.store)
    receivers = bench.Receivers() if "e" in only else None
    results = bench.Results()
    try:
        for round_number in range(1, args.rounds + 1):
            started = time.perf_counter()
            if "a" in only:
                bench_attach(results, hubs, args.emitters)
            if "b" in only:
                bench_memory(results, hubs)
            if "c" in only:
                bench_emit(results, hubs, args.emitters, args.emit_samples)
            if "d" in only:
                bench_shutdown_idle(results, hubs, args.emitters)
            if "e" in only:
                assert receivers is not None
                bench_busy(results, hubs, receivers, args.emitters, args.busy)
            gc.collect()
            print(f"round {round_number} done in {time.perf_counter() - started:.1f} s", flush=True)
    finally:
        if receivers is not None:
            receivers.close()
        hubs.close()
    return bench.report(results, args.json, args.strict)


if __name__ == "__main__":
    sys.exit(main())
