"""Benchmark of delivery from a PostgreSQL store by worker processes.

    python benchmarks/bench_postgres_delivery.py [--rounds 3] [--events 2000]
        [--workers 1,2,4] [--max-in-flight 1,4] [--delay-events 200] [--rate 40] [--strict]

Starts a private server as the tests do (tests/support/postgres_server.py), or uses
``WEBHOOKS_EMITTER_TEST_POSTGRES``. The workers are tests/support/scripts/pg_node.py processes (a
``WebhooksEmitter`` over the store, 8 emitters, each request with an ``X-Worker: <pid>``
header); the receiver runs in a process of its own (asyncio, keep-alive) and records each
request's delivery id, worker and arrival time (``CLOCK_MONOTONIC``, shared by every process
of the machine). Two parts, each run once per round; the table shows medians over the rounds:

1. **Throughput** with 1, 2 and 4 worker processes over 8 emitters, the receiver answering
   after 20 ms: the workers are started and idle, then one transaction commits ``--events``
   events spread over the 8 emitters; events per second from that commit to the last
   arrival, the ratios 2/1 and 4/1 (taken within a round), the workers' CPU per delivery and
   how many of the workers delivered. With ``max_in_flight=1`` (per-emitter order) 8
   emitters allow at most 8 / 20 ms = 400 events/s whatever the number of workers; with
   ``max_in_flight=4`` the ceiling is 1600/s, so the workers' own work is what limits.
2. **Commit to delivery**: 2 workers, an application committing one event per transaction
   (``emit(..., connection=conn)``) at ``--rate`` per second; the delay from each commit's
   return to the event's arrival at a receiver that answers at once, p50, p99 and the most.
3. **Against the memory store**, run first: one emitter delivering in the emitting process
   to a receiver that answers at once, PostgreSQL and memory in the same run, per
   ``max_in_flight`` (``--versus-memory EVENTS``; ``--only-versus-memory`` runs it alone).

Targets are reported as PASS/FAIL; the exit status is 0 either way unless ``--strict``.
See benchmarks/README.rst.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(ROOT), str(ROOT / "tests" / "support"), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

import bench  # noqa: E402
import postgres_server  # noqa: E402
import psycopg  # noqa: E402
from bench import Results, percentile  # noqa: E402

from webhooks_emitter import Config, WebhooksEmitter  # noqa: E402
from webhooks_emitter.stores.postgres import PostgresStore  # noqa: E402

NODE = ROOT / "tests" / "support" / "scripts" / "pg_node.py"
EVENT = "order.paid"
EMITTERS = [f"e{i}" for i in range(8)]
PAYLOAD = {"order": {"id": 12345, "total": "99.90", "currency": "EUR", "items": [1, 2, 3]}}


# -- the receiver process --------------------------------------------------------------------


class _Recorder(asyncio.Protocol):
    """HTTP/1.1 server side: reads requests by Content-Length, records each (delivery id,
    worker, arrival time), answers 204 after ``delay`` seconds."""

    def __init__(self, delay: float, records: list[tuple[str, str, float]], counter: Any):
        self.delay = delay
        self.records = records
        self.counter = counter
        self.buffer = bytearray()
        self.need: Optional[int] = None
        self.head = b""
        self.transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    @staticmethod
    def _header(head: bytes, name: bytes) -> str:
        start = head.find(b"\r\n" + name + b":")
        if start < 0:
            return ""
        stop = head.find(b"\r\n", start + 2)
        return head[start + len(name) + 3 : stop if stop >= 0 else len(head)].strip().decode()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.need is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.head = bytes(self.buffer[:end]).lower()
                length = int(self._header(self.head, b"content-length") or 0)
                self.need = end + 4 + length
            if len(self.buffer) < self.need:
                return
            del self.buffer[: self.need]
            self.need = None
            self.records.append((
                self._header(self.head, b"x-webhooks-delivery"),
                self._header(self.head, b"x-worker"),
                time.monotonic(),
            ))
            self.counter.value += 1
            if self.delay:
                asyncio.get_running_loop().call_later(self.delay, self._respond)
            else:
                self._respond()

    def _respond(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 204 No Content\r\nServer: bench\r\n\r\n")


def _serve(conn: Any, counters: Any, delays: Sequence[float]) -> None:
    """The receiver process: one server per delay; ``dump N`` sends server N's records
    (and forgets them), the parent closing its end stops the process."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        records: list[list[tuple[str, str, float]]] = [[] for _ in delays]
        ports = []
        for index, delay in enumerate(delays):

            def protocol(d: float = delay, r: Any = records[index],
                         c: Any = counters[index]) -> _Recorder:
                return _Recorder(d, r, c)

            server = await loop.create_server(
                protocol,
                "127.0.0.1",
                0,
                backlog=1024,
            )
            ports.append(server.sockets[0].getsockname()[1])
        conn.send(ports)
        stop = asyncio.Event()

        def command() -> None:
            try:
                index = int(conn.recv())
            except (EOFError, OSError):
                stop.set()
                return
            conn.send(records[index][:])
            records[index].clear()
            counters[index].value = 0

        loop.add_reader(conn.fileno(), command)
        await stop.wait()

    asyncio.run(main())


class Receivers:
    """The receiver process: ``urls[i]`` answers after ``delays[i]`` seconds."""

    def __init__(self, delays: Sequence[float]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._counters = [ctx.RawValue("q", 0) for _ in delays]
        parent, child = ctx.Pipe()
        self._conn = parent
        self._process = ctx.Process(
            target=_serve, args=(child, self._counters, list(delays)), daemon=True
        )
        self._process.start()
        child.close()
        if not parent.poll(30):
            raise RuntimeError("the receiver process did not start")
        self.urls = [f"http://127.0.0.1:{port}/hooks" for port in parent.recv()]

    def count(self, index: int) -> int:
        return int(self._counters[index].value)

    def take(self, index: int) -> list[tuple[str, str, float]]:
        """The records of server ``index`` since the last take: (delivery id, worker, t)."""
        self._conn.send(index)
        return list(self._conn.recv())

    def close(self) -> None:
        self._conn.close()
        self._process.join(5)
        if self._process.is_alive():
            self._process.terminate()


# -- the workers -----------------------------------------------------------------------------


class Worker:
    """A tests/support/scripts/pg_node.py worker process over ``db`` delivering to ``url``."""

    def __init__(self, db: str, url: str, *options: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(NODE), db, url + "/{emitter}", *options],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def ready(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line or not json.loads(line).get("ready"):
            raise RuntimeError(f"worker {self.process.pid} did not start: {line!r}")

    def cpu(self) -> float:
        """Seconds of CPU (user + system) the process has used so far."""
        return process_cpu(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            try:
                self.process.stdin.write(json.dumps({"op": "exit", "timeout": 1.0}) + "\n")
                self.process.stdin.close()
                self.process.wait(15)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def process_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) process ``pid`` has used so far; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backends_cpu(admin: str, db: str) -> dict[int, float]:
    """CPU seconds so far of each server process serving database ``db`` (empty when the
    server is on another machine)."""
    name = psycopg.conninfo.conninfo_to_dict(db)["dbname"]
    with psycopg.connect(admin, autocommit=True) as conn:
        pids = [row[0] for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,))]
    return {pid: process_cpu(pid) for pid in pids if os.path.exists(f"/proc/{pid}")}


def machine_cpu() -> tuple[float, float]:
    """Seconds of CPU the whole machine has spent busy, and in all, so far (/proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def start_workers(db: str, url: str, count: int, *options: str) -> list[Worker]:
    workers = [Worker(db, url, *options) for _ in range(count)]
    for worker in workers:
        worker.ready()
    return workers


def web_instance(db: str, url: str) -> tuple[WebhooksEmitter, PostgresStore]:
    """A deliver=False instance with the 8 emitters attached (routing only)."""
    store = PostgresStore(db)
    web = WebhooksEmitter(store=store, deliver=False)
    for emitter in EMITTERS:
        web.attach(emitter, EVENT, Config(f"{url}/{emitter}"))
    return web, store


def wait_count(receivers: Receivers, index: int, count: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while receivers.count(index) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)  # a poll interval: the counter is the condition
    return True


# -- 1. throughput ---------------------------------------------------------------------------


def bench_throughput(results: Results, receivers: Receivers, admin: str, events: int,
                     counts: Sequence[int], in_flight: int, lease_timeout: float) -> None:
    """Part 1 for one ``max_in_flight``: ``events`` events over 8 emitters, the 20 ms
    receiver, 1, 2 and 4 workers."""
    rates = {}
    for count in counts:
        db = postgres_server.create_database(admin)
        workers: list[Worker] = []
        try:
            web, store = web_instance(db, receivers.urls[0])
            workers = start_workers(db, receivers.urls[0], count, "--lease-timeout",
                                    str(lease_timeout), "--max-in-flight", str(in_flight))
            receivers.take(0)
            cpu_before = sum(w.cpu() for w in workers)
            server_before = backends_cpu(admin, db)
            busy_before, all_before = machine_cpu()
            with psycopg.connect(db) as conn:
                for n in range(events):
                    web.emit(EVENT, PAYLOAD, f"ev-{n}", to=EMITTERS[n % 8], connection=conn)
                conn.commit()
                committed = time.monotonic()
            done = wait_count(receivers, 0, events, timeout=120)
            cpu = sum(w.cpu() for w in workers) - cpu_before
            busy_after, all_after = machine_cpu()
            server = sum(t - server_before.get(pid, 0.0)
                         for pid, t in backends_cpu(admin, db).items())
            records = receivers.take(0)
            web.shutdown(0)
            store.close()
        finally:
            for worker in workers:
                worker.stop()
            postgres_server.drop_database(admin, db)
        ids = {record[0] for record in records}
        if not done or len(ids) < events:
            print(f"   {count} worker(s): only {len(ids)} of {events} delivered", flush=True)
            continue
        last = max(record[2] for record in records)
        rate = events / (last - committed)
        rates[count] = rate
        senders = Counter(record[1] for record in records)
        name = f"1. mif={in_flight}, {count} worker{'s' if count > 1 else ' '}"
        results.add(f"{name} events/s", rate, "/s")
        results.add(f"{name} workers' CPU per delivery", cpu / events * 1000, "ms")
        results.add(f"{name} server's CPU per delivery", server / events * 1000, "ms")
        results.add(f"{name} machine's CPUs busy",
                    (busy_after - busy_before) / (all_after - all_before) * 100, "%")
        results.add(f"{name} workers that delivered", len(senders), "")
        if len(records) > len(ids):
            results.add(f"{name} repeated deliveries", len(records) - len(ids), "")
    ceiling = len(EMITTERS) * in_flight / 0.020
    if 1 in rates:
        results.add(f"1. mif={in_flight}, 1 worker: share of ideal {ceiling:.0f}/s",
                    rates[1] / ceiling * 100, "%")
        for count in counts:
            if count != 1 and count in rates:
                results.add(f"1. mif={in_flight}, ratio {count}/1", rates[count] / rates[1], "x",
                            TARGETS.get((in_flight, count)))


#: Targets of the ratios: (max_in_flight, workers) -> (op, bound).
TARGETS: dict[tuple[int, int], tuple[str, float]] = {}


# -- 2. commit to delivery -------------------------------------------------------------------


def bench_delay(results: Results, receivers: Receivers, admin: str, events: int,
                rate: float) -> None:
    """Part 2: one event per transaction at ``rate``/s, 2 workers, the receiver answering
    at once; delay from each commit to the event's arrival."""
    db = postgres_server.create_database(admin)
    workers: list[Worker] = []
    committed: dict[str, float] = {}
    try:
        web, store = web_instance(db, receivers.urls[1])
        workers = start_workers(db, receivers.urls[1], 2)
        receivers.take(1)
        start = time.monotonic()
        with psycopg.connect(db) as conn:
            for n in range(events):
                ahead = start + n / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # pacing the application, not waiting for a result
                conn.execute("SELECT 1")  # the application's own work in the transaction
                request_id = web.emit(EVENT, PAYLOAD, f"ev-{n}", to=EMITTERS[n % 8],
                                      connection=conn)
                conn.commit()
                committed[request_id] = time.monotonic()
        done = wait_count(receivers, 1, events, timeout=60)
        records = receivers.take(1)
        web.shutdown(0)
        store.close()
    finally:
        for worker in workers:
            worker.stop()
        postgres_server.drop_database(admin, db)
    first: dict[str, float] = {}
    for delivery_id, _, arrived in records:
        first.setdefault(delivery_id, arrived)
    delays = [(first[i] - t) * 1000 for i, t in committed.items() if i in first]
    if not done or len(delays) < events:
        print(f"   commit to delivery: only {len(delays)} of {events} delivered", flush=True)
        return
    results.add("2. commit to delivery p50", percentile(delays, 0.50), "ms", ("<=", 100.0))
    results.add("2. commit to delivery p99", percentile(delays, 0.99), "ms", ("<=", 500.0))
    results.add("2. commit to delivery max", max(delays), "ms")


# -- 3. against the memory store ----------------------------------------------------------------


def _deliver_rate(store: Any, url: str, events: int, in_flight: int,
                  receivers: Receivers, index: int) -> float:
    """One instance over ``store``, one emitter: emit ``events`` events (delivering while
    it emits, as an application does) and wait for the last arrival; events per second
    from the first emit to the last arrival."""
    hub = WebhooksEmitter(store=store, exit_timeout=1.0)
    try:
        hub.attach("solo", EVENT, Config(url, max_in_flight=in_flight, backoff_start=0.001,
                                         backoff_limit=0.05, max_queue_size=events * 2))
        base = receivers.count(index)
        started = time.monotonic()
        for n in range(events):
            hub.emit(EVENT, PAYLOAD, f"solo-{started}-{n}")
        if not wait_count(receivers, index, base + events, 120):
            raise RuntimeError("not every event arrived")
        elapsed = time.monotonic() - started
        receivers.take(index)
        return events / elapsed
    finally:
        hub.shutdown(timeout=2.0)


def bench_versus_memory(receivers: Receivers, admin: str, events: int,
                        in_flights: Sequence[int], rounds: int) -> None:
    """Part 3: one emitter delivering in the emitting process to a receiver that answers at
    once, from the PostgreSQL store against the memory store, in the same run (median of
    ``rounds``), per max_in_flight. Targets (issue 19): >= 0.5x at 1, >= 0.6x at 4."""
    from webhooks_emitter.stores import MemoryStore

    targets = {1: 0.5, 4: 0.6}
    print(f"\n3. in-process delivery, one emitter, {events:,} events, receiver answering at "
          f"once: PostgreSQL against memory (median of {rounds})")
    url = receivers.urls[1]
    for in_flight in in_flights:
        memory, postgres = [], []
        for _ in range(rounds):
            memory.append(_deliver_rate(MemoryStore(), url, events, in_flight, receivers, 1))
            db = postgres_server.create_database(admin)
            store = PostgresStore(db)
            try:
                postgres.append(_deliver_rate(store, url, events, in_flight, receivers, 1))
            finally:
                store.close()
        mem, pg = sorted(memory)[len(memory) // 2], sorted(postgres)[len(postgres) // 2]
        target = targets.get(in_flight)
        verdict = "" if target is None else (
            f"  (target >= {target}: {'PASS' if pg / mem >= target else 'FAIL'})")
        print(f"   max_in_flight={in_flight}: memory {mem:7,.0f}/s  PostgreSQL {pg:7,.0f}/s  "
              f"ratio {pg / mem:.2f}{verdict}", flush=True)


# -- main ------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--events", type=int, default=2000, help="events per throughput run")
    parser.add_argument("--workers", default="1,2,4", help="worker counts (default 1,2,4)")
    parser.add_argument("--max-in-flight", default="1,4",
                        help="max_in_flight values of the throughput runs (default 1,4)")
    parser.add_argument("--lease-timeout", type=float, default=5.0,
                        help="the workers' lease_timeout (default 5 s)")
    parser.add_argument("--delay-events", type=int, default=200, help="events of part 2")
    parser.add_argument("--rate", type=float, default=40.0, help="commits per second, part 2")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    parser.add_argument("--json", metavar="FILE", help="also write every round's values to FILE")
    parser.add_argument("--versus-memory", type=int, default=2000, metavar="EVENTS",
                        help="events of part 3, in-process PostgreSQL against memory (0: skip)")
    parser.add_argument("--only-versus-memory", action="store_true",
                        help="run part 3 only")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.workers.split(",")]
    in_flights = [int(c) for c in args.max_in_flight.split(",")]
    TARGETS.update({(1, 2): (">=", 0.9), (1, 4): (">=", 0.9)})
    TARGETS.update({(m, 2): (">=", 1.5) for m in in_flights if m > 1})
    TARGETS.update({(m, 4): (">=", 2.0) for m in in_flights if m > 1})

    server = postgres_server.start_server()
    print(f"PostgreSQL {server.conninfo}; {os.cpu_count()} CPUs, {args.rounds} rounds",
          flush=True)
    receivers = Receivers([0.020, 0.0])
    results = Results()
    try:
        if args.versus_memory:
            bench_versus_memory(receivers, server.conninfo, args.versus_memory, in_flights,
                                args.rounds)
        if args.only_versus_memory:
            return 0
        for round_number in range(1, args.rounds + 1):
            started = time.perf_counter()
            for in_flight in in_flights:
                bench_throughput(results, receivers, server.conninfo, args.events, counts,
                                 in_flight, args.lease_timeout)
            bench_delay(results, receivers, server.conninfo, args.delay_events, args.rate)
            print(f"round {round_number} done in {time.perf_counter() - started:.1f} s",
                  flush=True)
    finally:
        receivers.close()
        server.cleanup()
    return bench.report(results, args.json, args.strict)


if __name__ == "__main__":
    sys.exit(main())
