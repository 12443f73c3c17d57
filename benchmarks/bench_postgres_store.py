"""Benchmark of the PostgreSQL store: emit cost in a transaction, table size under load.

    python benchmarks/bench_postgres_store.py [--ops 3000] [--cycles 100000] [--workers 1,2,4]

Starts a private server as the tests do (tests/support/postgres_server.py), or uses
``WEBHOOKS_EMITTER_TEST_POSTGRES``. Three parts:

1. **Transactional emit**: an application transaction (BEGIN, INSERT of its own row,
   the outbox write, COMMIT) with ``store.append(..., connection=conn)`` against the same
   transaction with a hand-written ``INSERT`` into an outbox table: time per call and per
   transaction, and their ratios.
2. **Bloat**: ``--cycles`` deliveries (append, fetch, begin_try, finish: what a delivered
   event costs the store) on one emitter; the table's rows and size every tenth of the
   way, then after a plain VACUUM. Delivered rows are deleted; the size must level off.
3. **Store throughput** with 1, 2 and 4 processes over 8 emitters: each process takes
   whichever emitter leases it can and runs fetch, begin_try, finish (no HTTP), so this is
   the ceiling the store puts on delivery and how it spreads over processes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

import postgres_server  # noqa: E402
import psycopg  # noqa: E402

from webhooks_emitter.stores._base import Lease, Message, Target  # noqa: E402
from webhooks_emitter.stores.postgres import PostgresStore  # noqa: E402

BODY = b'{"order":{"id":12345,"total":"99.90","currency":"EUR","items":[1,2,3]}}'


def _timed(fn: Any, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _p50_pair(first: Any, second: Any, ops: int, between: Any = None,
              every: int = 100) -> tuple[float, float]:
    """p50 microseconds of ``first()`` and ``second()``, called alternately ``ops`` times
    each (so that drift of the machine affects both alike); ``between()`` runs untimed
    every ``every`` pairs (a commit)."""
    a: list[float] = []
    b: list[float] = []
    for n in range(ops):
        for fn, samples in ((first, a), (second, b)) if n % 2 else ((second, b), (first, a)):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        if between is not None and n % every == every - 1:
            between()
    return statistics.median(a) * 1e6, statistics.median(b) * 1e6


def _verdict(ratio: float, target: float) -> str:
    return f"ratio {ratio:5.2f}  (target <= {target}: {'PASS' if ratio <= target else 'FAIL'})"


def bench_emit(url: str, ops: int) -> None:
    """Part 1: emit against hand-written INSERTs of the same row into a table of the same
    shape (``CREATE TABLE outbox (LIKE events INCLUDING ALL)``: same columns, defaults and
    indexes), in the same run, interleaved call by call."""
    store = PostgresStore(url)
    store.open()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("CREATE TABLE outbox (LIKE webhooks_emitter.events INCLUDING ALL)")
    insert = ("INSERT INTO outbox (emitter_id, event, request_id, body, ordering_key, "
              "emitted_at) VALUES (%s, %s, %s, %s, %s, %s)")
    target = [Target("orders-hook", 10**9)]
    counter = iter(range(10**9))

    def row() -> tuple[Any, ...]:
        return ("orders-hook", "order.paid", f"req-{next(counter)}", BODY, None, time.time())

    def message() -> Message:
        return Message("order.paid", f"req-{next(counter)}", BODY)

    print(f"1. emit, p50 of {ops:,} calls each, microseconds (one emitter)")
    # a. In the caller's open transaction, psycopg 3 and psycopg2.
    conn = psycopg.connect(url)
    hand = lambda: conn.execute(insert, row())  # noqa: E731
    emit = lambda: store.append(message(), target, connection=conn)  # noqa: E731
    _p50_pair(hand, emit, 200, conn.commit)  # warm-up: prepared statements, caches
    base, mine = _p50_pair(hand, emit, ops, conn.commit)
    conn.commit()
    conn.close()
    print(f"   psycopg 3, in the caller's transaction: INSERT {base:7.1f}  "
          f"emit(connection=) {mine:7.1f}   {_verdict(mine / base, 1.5)}")
    try:
        import psycopg2
    except ImportError:
        psycopg2 = None
    if psycopg2 is not None:
        conn2 = psycopg2.connect(url)
        cursor = conn2.cursor()
        hand2 = lambda: cursor.execute(insert, row())  # noqa: E731
        emit2 = lambda: store.append(message(), target, connection=conn2)  # noqa: E731
        _p50_pair(hand2, emit2, 200, conn2.commit)
        base2, mine2 = _p50_pair(hand2, emit2, ops, conn2.commit)
        conn2.commit()
        conn2.close()
        print(f"   psycopg2,  in the caller's transaction: INSERT {base2:7.1f}  "
              f"emit(connection=) {mine2:7.1f}   ratio {mine2 / base2:5.2f}")
    # b. Each in a transaction of its own: an autocommit INSERT against the store's emit
    #    (deliver=False web processes).
    auto = psycopg.connect(url, autocommit=True)
    hand = lambda: auto.execute(insert, row())  # noqa: E731
    own = lambda: store.append(message(), target)  # noqa: E731
    _p50_pair(hand, own, 200)
    base, mine = _p50_pair(hand, own, ops)
    auto.close()
    print(f"   own transaction (autocommit):           INSERT {base:7.1f}  "
          f"emit()            {mine:7.1f}   {_verdict(mine / base, 1.3)}")
    store.close()


def _emit_for(url: str, notify_every: float, seconds: float, ready: Any, go: Any,
              done: Any) -> None:
    from webhooks_emitter.stores import postgres

    postgres.NOTIFY_EVERY = notify_every  # type: ignore[misc]
    store = PostgresStore(url)
    store.open()
    target = [Target(f"hook-{os.getpid()}", 10**9)]
    ready.release()
    go.wait()
    samples = []
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
        start = time.perf_counter()
        store.append(Message("order.paid", f"r{n}", BODY), target)
        samples.append(time.perf_counter() - start)
    store.close()
    done.put(samples)


def bench_notify(url: str, processes: list[int], seconds: float) -> None:
    """Part 1c: emits of several processes at once, each notifying at every commit (what
    the previous release did) or at most every NOTIFY_EVERY seconds (this one), with one
    process listening (a worker): emits per second, p50 and p99."""
    from webhooks_emitter.stores import _pg_notify

    print(f"\n1c. concurrent emits, own transactions, {seconds:g} s each, one listener: "
          "notify at every commit vs at most every "
          f"{_pg_notify.NOTIFY_EVERY * 1000:.0f} ms per process")
    listener = psycopg.connect(url, autocommit=True)
    listener.execute('LISTEN "webhooks_emitter.changed"')
    context = multiprocessing.get_context("spawn")
    for count in processes:
        line = []
        for label, every in (("every commit", 0.0), ("throttled", _pg_notify.NOTIFY_EVERY)):
            ready, go, done = context.Semaphore(0), context.Event(), context.Queue()
            procs = [context.Process(target=_emit_for, args=(url, every, seconds, ready, go,
                                                             done)) for _ in range(count)]
            for proc in procs:
                proc.start()
            for _ in procs:
                ready.acquire()
            go.set()
            samples = sorted(x for _ in procs for x in done.get(timeout=120))
            for proc in procs:
                proc.join()
            list(listener.notifies(timeout=0.0))  # drained: a listener that keeps up
            rate = len(samples) / seconds
            p50 = samples[len(samples) // 2] * 1e6
            p99 = samples[int(len(samples) * 0.99)] * 1e6
            line.append((label, rate, p50, p99))
        (_, rate_a, p50_a, p99_a), (_, rate_b, p50_b, p99_b) = line
        print(f"   {count} process(es): every commit {rate_a:7,.0f}/s p50 {p50_a:5.0f} "
              f"p99 {p99_a:6.0f} us | throttled {rate_b:7,.0f}/s p50 {p50_b:5.0f} "
              f"p99 {p99_b:6.0f} us | rate x{rate_b / rate_a:.2f}")
    listener.close()


def bench_settle(url: str, events: int) -> None:
    """Part 4: the store's side of a delivery, one emitter: begin_try then finish (two
    statements, two commits, what the engine calls today) against settle(finish N, begin
    N+1) (one transaction, one round trip), interleaved in blocks of 100."""
    store = PostgresStore(url)
    lease = Lease.new()
    for n in range(events * 2):
        store.append(Message("order.paid", f"r{n}", BODY), [Target("busy", 10**9)])
    assert store.acquire("busy", lease)
    single = settle = 0.0
    done_single = done_settle = 0
    for block in range(events // 100):
        batch = store.fetch("busy", lease, 200)
        first, second = batch[:100], batch[100:]
        runs = ((first, "single"), (second, "settle")) if block % 2 else (
            (second, "settle"), (first, "single"))
        for chunk, how in runs:
            started = time.perf_counter()
            if how == "single":
                for event in chunk:
                    event.attempts = 1
                    store.begin_try(lease, event, time.time())
                    store.finish(lease, event)
                single += time.perf_counter() - started
                done_single += len(chunk)
            else:
                chunk[0].attempts = 1
                store.begin_try(lease, chunk[0], time.time())
                for previous, event in zip(chunk, chunk[1:]):
                    event.attempts = 1
                    store.settle(lease, [("finish", previous)], begin=event, now=time.time())
                store.finish(lease, chunk[-1])
                settle += time.perf_counter() - started
                done_settle += len(chunk)
        store.renew(lease, ["busy"])
    rate_single, rate_settle = done_single / single, done_settle / settle
    print(f"\n4. the store's side of a delivery, {done_single:,} events each way, one emitter")
    print(f"   begin_try + finish (2 commits)        {rate_single:8,.0f}/s "
          f"({1e6 / rate_single:5.0f} us)")
    print(f"   settle(finish N, begin N+1) (1 commit) {rate_settle:8,.0f}/s "
          f"({1e6 / rate_settle:5.0f} us)   x{rate_settle / rate_single:.2f}")
    store.close()


def table_stats(url: str) -> tuple[int, int, int, int, int]:
    """Live rows, dead rows, heap bytes, index bytes and total bytes of the events table."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT (SELECT count(*) FROM webhooks_emitter.events), "
            "coalesce(s.n_dead_tup, 0), pg_relation_size(c.oid), pg_indexes_size(c.oid), "
            "pg_total_relation_size(c.oid) "
            "FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
            "WHERE c.oid = 'webhooks_emitter.events'::regclass"
        ).fetchone()
    assert row is not None
    live, dead, heap, index, total = row
    return int(live), int(dead), int(heap), int(index), int(total)


def _kb(n: int) -> str:
    return f"{n / 1024:8.0f} KB"


def bench_bloat(url: str, cycles: int) -> None:
    """Part 2: append, fetch, begin_try, finish ``cycles`` times; watch the table."""
    store = PostgresStore(url)
    lease = Lease.new()
    target = [Target("busy", 1_000_000)]
    assert store.acquire("busy", lease)
    print(f"\n2. rows and size of the events table over {cycles:,} deliveries "
          "(append, fetch, begin_try, finish), one emitter")
    print("   deliveries  live rows  dead rows       heap    indexes      total   autovacuums")
    step = max(cycles // 10, 1)
    started = time.perf_counter()
    for n in range(1, cycles + 1):
        store.append(Message("order.paid", f"req-{n}", BODY), target)
        (event,) = store.fetch("busy", lease, 1)
        event.attempts = 1
        assert store.begin_try(lease, event, time.time())
        assert store.finish(lease, event)
        if n % 1000 == 0:
            store.renew(lease, ["busy"])
        if n % step == 0:
            live, dead, heap, index, total = table_stats(url)
            with psycopg.connect(url, autocommit=True) as conn:
                vacuums = conn.execute(
                    "SELECT autovacuum_count FROM pg_stat_user_tables "
                    "WHERE relid = 'webhooks_emitter.events'::regclass"
                ).fetchone()
            print(f"   {n:>10,} {live:>10,} {dead:>10,} {_kb(heap)} {_kb(index)} {_kb(total)}"
                  f"   {vacuums[0] if vacuums else '?':>5}")
    elapsed = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM webhooks_emitter.events")
    live, dead, heap, index, total = table_stats(url)
    print(f"   after VACUUM {live:>8,} {dead:>10,} {_kb(heap)} {_kb(index)} {_kb(total)}")
    print(f"   {cycles / elapsed:,.0f} deliveries/s through the store "
          f"({elapsed / cycles * 1e6:.0f} us each: 4 statements)")
    store.close()


def _worker(url: str, emitters: list[str], ready: Any, go: Any, done: Any) -> None:
    store = PostgresStore(url)
    store.open()
    lease = Lease.new()
    ready.release()
    go.wait()
    delivered = 0
    while True:
        worked = False
        for emitter_id in emitters:
            if not store.acquire(emitter_id, lease):
                continue
            events = store.fetch(emitter_id, lease, 50)
            for event in events:
                event.attempts = 1
                if store.begin_try(lease, event, time.time()) and store.finish(lease, event):
                    delivered += 1
            store.release(emitter_id, lease)
            worked = worked or bool(events)
        if not worked:
            break
    done.put(delivered)
    store.close()


def bench_workers(url: str, counts: list[int], per_emitter: int) -> None:
    """Part 3: store throughput with several processes over 8 emitters."""
    emitters = [f"hook-{n}" for n in range(8)]
    print(f"\n3. store throughput, 8 emitters x {per_emitter:,} events, "
          "fetch + begin_try + finish under leases (no HTTP)")
    context = multiprocessing.get_context("spawn")
    for count in counts:
        filler = PostgresStore(url)
        for emitter_id in emitters:
            filler.purge(emitter_id)
        for n in range(per_emitter):
            filler.append(Message("e", f"r{n}", BODY), [Target(e, 10**9) for e in emitters])
        filler.close()
        ready, go, done = context.Semaphore(0), context.Event(), context.Queue()
        workers = [
            context.Process(target=_worker, args=(url, emitters, ready, go, done))
            for _ in range(count)
        ]
        for worker in workers:
            worker.start()
        for _ in workers:
            ready.acquire()
        started = time.perf_counter()
        go.set()
        shares = [done.get(timeout=600) for _ in workers]
        elapsed = time.perf_counter() - started
        for worker in workers:
            worker.join()
        total = sum(shares)
        print(f"   {count} process(es): {total:,} events in {elapsed:5.2f} s = "
              f"{total / elapsed:8,.0f}/s   per process: {sorted(shares, reverse=True)}")


def main() -> None:
    """Run the three parts and print their numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ops", type=int, default=3000, help="calls timed in part 1")
    parser.add_argument("--cycles", type=int, default=100_000, help="deliveries in part 2")
    parser.add_argument("--workers", default="1,2,4", help="process counts of part 3")
    parser.add_argument("--per-emitter", type=int, default=2000, help="events per emitter")
    parser.add_argument("--notify", default="2,4", help="process counts of part 1c")
    parser.add_argument("--notify-seconds", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--settle", type=int, default=4000, help="events of part 4 (each way)")
    parser.add_argument("--durable", action="store_true",
                        help="a server that flushes its WAL at each commit (fsync and "
                             "synchronous_commit on), as in production; the default is the "
                             "tests' server, which never waits for the disk")
    args = parser.parse_args()
    durable = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
    server = postgres_server.start_server(durable if args.durable else None)
    try:
        admin = server.conninfo
        with psycopg.connect(admin, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            naptime = conn.execute("SHOW autovacuum_naptime").fetchone()
            fsync = conn.execute("SHOW fsync").fetchone()
            synchronous = conn.execute("SHOW synchronous_commit").fetchone()
        print(f"PostgreSQL {version[0] if version else '?'}, autovacuum_naptime "
              f"{naptime[0] if naptime else '?'}, {os.cpu_count()} CPUs, "
              f"fsync {fsync[0] if fsync else '?'}, synchronous_commit "
              f"{synchronous[0] if synchronous else '?'}\n")
        url = postgres_server.create_database(admin)
        if args.ops:
            bench_emit(url, args.ops)
        if args.notify:
            url = postgres_server.create_database(admin)
            bench_notify(url, [int(n) for n in args.notify.split(",")], args.notify_seconds)
        if args.cycles:
            url = postgres_server.create_database(admin)
            bench_bloat(url, args.cycles)
        if args.workers:
            url = postgres_server.create_database(admin)
            bench_workers(url, [int(n) for n in args.workers.split(",")], args.per_emitter)
        if args.settle:
            url = postgres_server.create_database(admin)
            bench_settle(url, args.settle)
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
