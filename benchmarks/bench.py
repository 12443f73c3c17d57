"""Benchmarks of webhooks_emitter: emit() latency, delivery throughput, memory and exit flush.

Run from the repository root::

    python benchmarks/bench.py                 # every section, 5 rounds
    python benchmarks/bench.py --rounds 9      # more rounds, steadier medians
    python benchmarks/bench.py --only a,b      # some sections only

The receivers run in a separate process (asyncio, keep-alive, answering 204), so that they
neither share the GIL with the code measured nor become the bottleneck. Every figure printed
is the median over the rounds; each ratio is taken between measurements of the same run.
Targets are reported as PASS/FAIL; the exit status is 0 either way unless ``--strict``.
See benchmarks/README.rst for what each line means.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import hmac
import json
import logging
import multiprocessing
import os
import statistics
import subprocess
import sys
import textwrap
import time
import tracemalloc
import uuid
from collections.abc import Sequence
from typing import Any, Callable, Optional

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

import webhooks_emitter  # noqa: E402
from webhooks_emitter import Config, WebhooksEmitter  # noqa: E402

SECRET = "benchmark-secret"
EVENT = "order.paid"

def run_patch() -> None:
    """Run the file named by WEBHOOKS_EMITTER_BENCH_PATCH, if any (see ``--patch``)."""
    path = os.environ.get("WEBHOOKS_EMITTER_BENCH_PATCH")
    if path:
        with open(path) as source:
            exec(compile(source.read(), path, "exec"), {"__name__": "__bench_patch__"})


# -- the receiver process ------------------------------------------------------------------

_RESPONSE = b"HTTP/1.1 204 No Content\r\nServer: bench\r\n\r\n"


class _HttpProtocol(asyncio.Protocol):
    """A minimal HTTP/1.1 server side: reads requests by Content-Length, answers 204.

    ``delay`` seconds pass before each answer (without blocking other connections);
    ``answer=False`` reads requests and never answers (a dead receiver).
    """

    def __init__(self, delay: float, answer: bool, counter: Any) -> None:
        self.delay = delay
        self.answer = answer
        self.counter = counter
        self.buffer = bytearray()
        self.need: Optional[int] = None
        self.transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.need is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[:end]).lower()
                start = head.find(b"\r\ncontent-length:")
                length = 0
                if start >= 0:
                    stop = head.find(b"\r\n", start + 2)
                    length = int(head[start + 17 : stop if stop >= 0 else len(head)])
                self.need = end + 4 + length
            if len(self.buffer) < self.need:
                return
            del self.buffer[: self.need]
            self.need = None
            self.counter.value += 1
            if not self.answer:
                continue
            if self.delay:
                asyncio.get_running_loop().call_later(self.delay, self._respond)
            else:
                self._respond()

    def _respond(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_RESPONSE)


def _serve(conn: Any, counters: Any, slow_delay: float) -> None:
    """The receiver process: three servers on 127.0.0.1 (fast, slow, dead); ports to ``conn``."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        servers = []
        kinds = [(0.0, True), (slow_delay, True), (0.0, False)]
        for index, (delay, answer) in enumerate(kinds):
            counter = counters[index]
            server = await loop.create_server(
                lambda d=delay, a=answer, c=counter: _HttpProtocol(d, a, c),
                "127.0.0.1",
                0,
                backlog=1024,
            )
            servers.append(server)
        conn.send([s.sockets[0].getsockname()[1] for s in servers])
        stop = asyncio.Event()
        loop.add_reader(conn.fileno(), stop.set)  # the parent closing its end stops us
        await stop.wait()

    asyncio.run(main())


class Receivers:
    """The receiver process: ``fast``, ``slow`` and ``dead`` base URLs and request counts."""

    def __init__(self, slow_delay: float = 0.020) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._counters = [ctx.RawValue("q", 0) for _ in range(3)]
        parent, child = ctx.Pipe()
        self._conn = parent
        self._process = ctx.Process(
            target=_serve, args=(child, self._counters, slow_delay), daemon=True
        )
        self._process.start()
        child.close()
        if not parent.poll(30):
            raise RuntimeError("the receiver process did not start")
        fast, slow, dead = parent.recv()
        self.fast = f"http://127.0.0.1:{fast}/hooks"
        self.slow = f"http://127.0.0.1:{slow}/hooks"
        self.dead = f"http://127.0.0.1:{dead}/hooks"

    def count(self, which: str) -> int:
        return int(self._counters[["fast", "slow", "dead"].index(which)].value)

    def close(self) -> None:
        self._conn.close()
        self._process.join(5)
        if self._process.is_alive():
            self._process.terminate()


# -- payloads and helpers -------------------------------------------------------------------


def payload_of(size: int, seq: int = 0) -> dict[str, Any]:
    """A realistic payload whose compact JSON is about ``size`` bytes."""
    item = {"sku": "SKU-000000", "name": "A sturdy widget", "quantity": 1, "price": "19.90"}
    base: dict[str, Any] = {
        "id": f"ord_{seq:012d}",
        "created_at": "2024-05-01T12:34:56Z",
        "customer": {"id": "cus_0001", "email": "ada@example.com", "name": "Ada Lovelace"},
        "total": "19.90",
        "currency": "EUR",
        "items": [item],
    }
    one = len(json.dumps(item, separators=(",", ":")))
    while len(json.dumps(base, separators=(",", ":"))) + one < size:
        base["items"].append(dict(item, sku=f"SKU-{len(base['items']):06d}"))
    pad = size - len(json.dumps(dict(base, note=""), separators=(",", ":")))
    base["note"] = "x" * max(pad, 0)
    return base


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)]


def plain_signature(body: bytes) -> str:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).digest()
    return "sha256:" + base64.b32hexencode(digest).decode().lower().rstrip("=")


def config(url: str, **fields: Any) -> Config:
    return Config(url, secret=SECRET, **fields)


class Results:
    """Rows of the final table: per-round samples and an optional target."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def add(
        self, key: str, value: float, unit: str, target: Optional[tuple[str, float]] = None
    ) -> None:
        row = self.rows.setdefault(key, {"values": [], "unit": unit, "target": target})
        row["values"].append(value)

    def median(self, key: str) -> float:
        return statistics.median(self.rows[key]["values"])

    def verdicts(self) -> list[bool]:
        out = []
        for key, row in self.rows.items():
            if row["target"]:
                op, bound = row["target"]
                value = self.median(key)
                out.append(value <= bound if op == "<=" else value >= bound)
        return out

    def table(self) -> str:
        width = max(len(k) for k in self.rows) + 2
        lines = [f"{'measure':<{width}}{'median':>12}  {'unit':<6}{'min..max':>22}  target"]
        lines.append("-" * (len(lines[0]) + 14))
        for key, row in self.rows.items():
            values = row["values"]
            median = statistics.median(values)
            spread = f"{min(values):.4g}..{max(values):.4g}" if len(values) > 1 else ""
            verdict = ""
            if row["target"]:
                op, bound = row["target"]
                ok = median <= bound if op == "<=" else median >= bound
                verdict = f"{op} {bound:g}  {'PASS' if ok else 'FAIL'}"
            unit = row["unit"]
            lines.append(f"{key:<{width}}{median:>12.4g}  {unit:<6}{spread:>22}  {verdict}")
        return "\n".join(lines)


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# -- a. emit() latency -------------------------------------------------------------------


def bench_emit(results: Results, receivers: Receivers, samples: int) -> None:
    """emit() on the caller's thread with 0, 1 and 10 emitters; inline requests.post.

    The emitters deliver to the fast receiver while emit() is timed, so the caller shares
    the GIL (and the CPUs) with busy delivery threads, as in an application; what is still
    queued when the samples are taken is dropped, not waited for.
    """
    sizes = {"300B": 300, "10KB": 10_240}
    clock = time.perf_counter_ns
    for count in (0, 1, 10):
        for label, size in sizes.items():
            payloads = [payload_of(size, i) for i in range(100)]
            hub = WebhooksEmitter(exit_timeout=0.0)
            for index in range(count):
                hub.attach(f"e{index}", EVENT, config(receivers.fast, max_queue_size=samples + 1))
            emit = hub.emit
            timings: list[int] = []
            try:
                for _ in range(10):  # warm up: first emits start threads and connections
                    emit(EVENT, payloads[0])
                if count:
                    hub.flush(10)
                for index in range(samples):
                    payload = payloads[index % 100]
                    start = clock()
                    emit(EVENT, payload)
                    timings.append(clock() - start)
            finally:
                hub.shutdown(0.0)  # drops what is still queued
            name = f"a. emit {label:>4}, {count:>2} emitter{'s' if count != 1 else ' '}"
            gated = (count, label) == (1, "300B")
            p50, p99 = percentile(timings, 0.50) / 1000, percentile(timings, 0.99) / 1000
            results.add(name + " p50", p50, "us", ("<=", 10.0) if gated else None)
            results.add(name + " p99", p99, "us", ("<=", 50.0) if gated else None)
    body = json.dumps(payload_of(300), separators=(",", ":")).encode()
    timings = []
    for _ in range(max(samples // 10, 50)):
        start = clock()
        requests.post(
            receivers.fast,
            data=body,
            headers={
                "Content-Type": "application/json",
                "X-Webhooks-Signature": plain_signature(body),
            },
            timeout=5,
        )
        timings.append(clock() - start)
    results.add("a. inline requests.post 300B p50", percentile(timings, 0.50) / 1000, "us")
    results.add("a. inline requests.post 300B p99", percentile(timings, 0.99) / 1000, "us")


# -- b. one emitter's throughput ----------------------------------------------------------


def plain_loop(url: str, payloads: Sequence[dict[str, Any]]) -> float:
    """Deliveries per second of a plain requests.Session loop doing the same work."""
    session = requests.Session()
    start = time.perf_counter()
    for payload in payloads:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        response = session.post(
            url,
            data=body,
            headers={
                "Content-Type": "application/json",
                "X-Webhooks-Event": EVENT,
                "X-Webhooks-Delivery": str(uuid.uuid4()),
                "X-Webhooks-Signature": plain_signature(body),
            },
            timeout=5,
        )
        if not response.ok:
            raise RuntimeError(f"plain loop got HTTP {response.status_code}")
    elapsed = time.perf_counter() - start
    session.close()
    return len(payloads) / elapsed


def emitter_run(url: str, payloads: Sequence[dict[str, Any]], emitters: int = 1) -> float:
    """Deliveries per second of ``emitters`` emitters, from the first emit to flush()."""
    hub = WebhooksEmitter(exit_timeout=1.0)
    try:
        for index in range(emitters):
            hub.attach(f"e{index}", EVENT, config(url, max_queue_size=len(payloads) + 1))
        start = time.perf_counter()
        for payload in payloads:
            hub.emit(EVENT, payload)
        if not hub.flush(120):
            raise RuntimeError("flush timed out")
        elapsed = time.perf_counter() - start
        delivered = sum(hub.stats(f"e{i}").delivered for i in range(emitters))
        if delivered != len(payloads) * emitters:
            raise RuntimeError(f"only {delivered} of {len(payloads) * emitters} delivered")
        return delivered / elapsed
    finally:
        hub.shutdown(5)


def bench_throughput(results: Results, receivers: Receivers, events: int) -> None:
    payloads = [payload_of(300, i) for i in range(events)]
    plain = plain_loop(receivers.fast, payloads)
    mine = emitter_run(receivers.fast, payloads)
    results.add("b. plain requests.Session loop", plain, "/s")
    results.add("b. one emitter, emit to flush", mine, "/s")
    results.add("b. emitter / plain loop", mine / plain, "x", (">=", 1.3))
    # Issue 19: the memory store's delivery rate regained (2.1-2.3x before the stores).
    results.add("b. same, memory-path target", mine / plain, "x", (">=", 2.2))


# -- c. slow receiver, 16 emitters ----------------------------------------------------------


def bench_slow(results: Results, receivers: Receivers, per_emitter: int) -> None:
    """16 emitters against a receiver answering after 20 ms; one emitter alone for reference."""
    payloads = [payload_of(300, i) for i in range(per_emitter)]
    rate = emitter_run(receivers.slow, payloads, emitters=16)
    results.add("c. 16 emitters, 20 ms receiver", rate, "/s")
    results.add("c. 16 emitters: share of ideal 800/s", 100 * rate / 800, "%", (">=", 90.0))
    alone = emitter_run(receivers.slow, payloads[: max(per_emitter // 2, 10)], emitters=1)
    results.add("c. 1 emitter: share of ideal 50/s", 100 * alone / 50, "%")


# -- d. memory per queued event -------------------------------------------------------------


def bench_memory(results: Results, receivers: Receivers, events: int) -> None:
    payloads = [payload_of(300, i) for i in range(events)]
    size = len(json.dumps(payloads[0], ensure_ascii=False, separators=(",", ":")).encode())
    hub = WebhooksEmitter(exit_timeout=0.0)
    hub.attach(
        "dead", EVENT, config(receivers.dead, request_timeout=30.0, max_queue_size=events + 1)
    )
    try:
        # One event goes in flight and blocks on the dead receiver; the rest stay queued.
        hub.emit(EVENT, payloads[0])
        if not wait_until(lambda: receivers.count("dead") >= 1, 10):
            raise RuntimeError("the dead receiver saw no request")
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for payload in payloads:
            hub.emit(EVENT, payload)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        stats = hub.stats("dead")
        if stats.dropped or stats.queued != events + 1:
            raise RuntimeError(f"expected {events + 1} queued, got {stats}")
        per_event = (after - before) / events
        results.add("d. bytes per queued event", per_event, "B")
        results.add("d. body size", size, "B")
        results.add("d. overhead beyond the body", per_event - size, "B", ("<=", 512.0))
    finally:
        hub.detach("dead")  # drops the queue; the try in flight ends at its timeout


# -- e. exit flush ----------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import atexit, json, sys, time
    sys.path.insert(0, {root!r})
    delivered = []
    marks = {{}}
    # Registered before the library is imported, so it runs after the library's exit hook.
    atexit.register(lambda: print(json.dumps({{"delivered": len(delivered), **marks}}), flush=True))
    import webhooks_emitter
    from webhooks_emitter import Config
    sys.path.insert(0, {bench_dir!r})
    import bench
    bench.run_patch()
    webhooks_emitter.configure(exit_timeout=30)
    webhooks_emitter.attach("exit", "order.paid", Config({url!r}, secret={secret!r},
        on_delivery=lambda r: delivered.append(r.delivered)))
    payload = {payload!r}
    for _ in range({events}):
        webhooks_emitter.emit("order.paid", payload)
    marks["emitted"] = time.monotonic()
    if {flush}:
        webhooks_emitter.flush()
        marks["flushed"] = time.monotonic()
    """
)


def exit_child(url: str, events: int, flush: bool) -> tuple[float, float]:
    """(seconds from emit end to flush return or process end, to process end); all delivered."""
    code = _CHILD.format(
        root=ROOT,
        bench_dir=os.path.dirname(os.path.abspath(__file__)),
        url=url,
        secret=SECRET,
        payload=payload_of(300),
        events=events,
        flush=flush,
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    out, _ = process.communicate(timeout=120)
    ended = time.monotonic()  # CLOCK_MONOTONIC is system-wide: comparable with the child's
    if process.returncode != 0:
        raise RuntimeError(f"child exited with {process.returncode}")
    report = json.loads(out.strip().splitlines()[-1])
    if report["delivered"] != events:
        raise RuntimeError(f"child delivered {report['delivered']} of {events}")
    emitted = report["emitted"]
    done = report.get("flushed", ended)
    return done - emitted, ended - emitted


def bench_exit(results: Results, receivers: Receivers, events: int) -> None:
    at_exit, _ = exit_child(receivers.fast, events, flush=False)
    running, running_to_end = exit_child(receivers.fast, events, flush=True)
    results.add(f"e. exit flush of {events}: emit end to process end", at_exit * 1000, "ms")
    results.add("e. flush() while running: emit end to flush", running * 1000, "ms")
    results.add("e. flush() while running: emit end to process end", running_to_end * 1000, "ms")
    results.add("e. exit flush / flush while running", at_exit / running, "x")


# -- main -------------------------------------------------------------------------------------

SECTIONS = "abcde"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per section (default 5)")
    parser.add_argument("--only", default=SECTIONS, help="sections to run, e.g. a,b (default all)")
    parser.add_argument("--emit-samples", type=int, default=2000, help="emit() calls per case (a)")
    parser.add_argument("--events", type=int, default=2000, help="events per throughput run (b)")
    parser.add_argument("--slow-events", type=int, default=100, help="events per emitter (c)")
    parser.add_argument("--queued", type=int, default=10_000, help="queued events (d)")
    parser.add_argument("--exit-events", type=int, default=1000, help="events at exit (e)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    parser.add_argument("--json", metavar="FILE", help="also write every round's values to FILE")
    parser.add_argument(
        "--patch",
        metavar="FILE",
        help="a Python file run before measuring (also in the exit-flush child), to try a "
        "change to the library without editing it",
    )
    args = parser.parse_args(argv)
    if args.patch:
        os.environ["WEBHOOKS_EMITTER_BENCH_PATCH"] = os.path.abspath(args.patch)
        run_patch()
    only = [s for s in args.only.replace(",", "") if s in SECTIONS]
    # Expected warnings (events dropped on purpose) stay quiet; errors are shown.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    print(
        f"webhooks_emitter {webhooks_emitter.__version__}, Python {sys.version.split()[0]}, "
        f"requests {requests.__version__}, {os.cpu_count()} CPUs, {args.rounds} rounds",
        flush=True,
    )
    receivers = Receivers()
    results = Results()
    try:
        for round_number in range(1, args.rounds + 1):
            started = time.perf_counter()
            if "a" in only:
                bench_emit(results, receivers, args.emit_samples)
            if "b" in only:
                bench_throughput(results, receivers, args.events)
            if "c" in only:
                bench_slow(results, receivers, args.slow_events)
            if "d" in only:
                bench_memory(results, receivers, args.queued)
            if "e" in only:
                bench_exit(results, receivers, args.exit_events)
            print(f"round {round_number} done in {time.perf_counter() - started:.1f} s", flush=True)
    finally:
        receivers.close()
    return report(results, args.json, args.strict)


def report(results: Results, json_path: Optional[str], strict: bool) -> int:
    """Print the table and the count of targets met (and write every round's values to
    ``json_path``); the exit status: 1 if ``strict`` and a target was missed."""
    print()
    print(results.table())
    if json_path:
        with open(json_path, "w") as out:
            json.dump(results.rows, out, indent=1)
    verdicts = results.verdicts()
    if verdicts:
        print(f"\ntargets: {sum(verdicts)} of {len(verdicts)} met")
    return 1 if strict and not all(verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
