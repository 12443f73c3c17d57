"""Benchmark of the PostgreSQL store: emit cost in a transaction, table size under load.

    python benchmarks/bench_postgres_store.py [--ops 3000] [--cycles 100000] [--workers 1,2,4]

Starts a private server as the tests do (tests/postgres_server.py), or uses
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

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


def bench_transactional_emit(url: str, ops: int) -> None:
    """Part 1: store.append through the caller's connection vs a hand-written INSERT."""
    store = PostgresStore(url)
    store.open()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, total numeric)")
        admin.execute(
            "CREATE TABLE outbox (id bigserial PRIMARY KEY, emitter_id text, event text, "
            "request_id text, body bytea, created double precision)"
        )
    conn = psycopg.connect(url)
    target = [Target("orders-hook", 1_000_000)]
    counter = iter(range(10**9))

    def hand_insert() -> None:
        n = next(counter)
        conn.execute(
            "INSERT INTO outbox (emitter_id, event, request_id, body, created) "
            "VALUES (%s, %s, %s, %s, %s)",
            ("orders-hook", "order.paid", f"req-{n}", BODY, time.time()),
        )

    def store_append() -> None:
        n = next(counter)
        store.append(Message("order.paid", f"req-{n}", BODY), target, connection=conn)

    def transaction(outbox_write: Any) -> Any:
        def run() -> None:
            conn.execute("INSERT INTO orders (total) VALUES (99.90)")
            outbox_write()
            conn.commit()

        return run

    def own_pool() -> None:
        n = next(counter)
        store.append(Message("order.paid", f"req-{n}", BODY), target)

    # Warm up both paths (prepared statements, caches), then measure interleaved rounds
    # so that drift of the machine affects both alike.
    for _ in range(200):
        hand_insert()
        store_append()
    conn.commit()
    rounds: dict[str, list[float]] = {name: [] for name in
                                      ("insert", "append", "tx_insert", "tx_append", "pool")}
    per_round = max(ops // 10, 50)
    for _ in range(10):
        rounds["insert"].append(_timed(hand_insert, per_round))
        rounds["append"].append(_timed(store_append, per_round))
        conn.commit()
        rounds["tx_insert"].append(_timed(transaction(hand_insert), per_round))
        rounds["tx_append"].append(_timed(transaction(store_append), per_round))
        rounds["pool"].append(_timed(own_pool, per_round))
    median = {name: statistics.median(values) * 1e6 for name, values in rounds.items()}
    conn.close()
    store.close()
    print("1. transactional emit (median microseconds, psycopg 3, one emitter)")
    print(f"   hand-written INSERT in an open transaction      {median['insert']:8.1f}")
    print(f"   store.append(connection=conn), same transaction {median['append']:8.1f}"
          f"   ratio {median['append'] / median['insert']:.2f}")
    print(f"   whole transaction, hand-written INSERT          {median['tx_insert']:8.1f}")
    print(f"   whole transaction, store.append(connection=)    {median['tx_append']:8.1f}"
          f"   ratio {median['tx_append'] / median['tx_insert']:.2f}")
    print(f"   store.append on the store's own pool (commits)  {median['pool']:8.1f}")


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
    args = parser.parse_args()
    server = postgres_server.start_server()
    try:
        admin = server.conninfo
        with psycopg.connect(admin, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            naptime = conn.execute("SHOW autovacuum_naptime").fetchone()
        print(f"PostgreSQL {version[0] if version else '?'}, autovacuum_naptime "
              f"{naptime[0] if naptime else '?'}, {os.cpu_count()} CPUs, "
              f"fsync off (test server)\n")
        url = postgres_server.create_database(admin)
        bench_transactional_emit(url, args.ops)
        url = postgres_server.create_database(admin)
        bench_bloat(url, args.cycles)
        if args.workers:
            url = postgres_server.create_database(admin)
            bench_workers(url, [int(n) for n in args.workers.split(",")], args.per_emitter)
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
