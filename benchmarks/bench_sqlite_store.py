"""SQLiteStore.append and delivery records against a hand-written INSERT+COMMIT loop (the floor).

Run from the repository root::

    python benchmarks/bench_sqlite_store.py                     # 5 rounds of 2000 calls
    python benchmarks/bench_sqlite_store.py --rounds 9 --synchronous full

Both loops write a 300-byte body to a fresh file in a temporary directory (on the same disk),
WAL mode, the same ``synchronous`` level, one row per call, one commit per call; they run
one after the other in this process, in alternating rounds (a fresh file each), so that a
busy machine slows both alike. Each call is timed with ``perf_counter_ns`` around the call
alone; each figure is the median over the rounds of that round's percentile. The target
(issue 10) is ``store.append`` with one target at p50 <= 40 us and p99 <= 200 us; the ratio
to the floor shows what the store adds (counter update, acceptance check, its pooling).

It also times what recording one delivery costs the store when the next event is due
(issue 19): ``finish(N)`` then ``begin_try(N+1)``, two transactions, against
``settle(lease, [("finish", N)], begin=N+1)``, one transaction; each timed per delivery,
on a queue filled beforehand, with the same floor.
The exit status is 0 unless ``--strict`` and a target is missed.
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from webhooks_emitter.stores._base import Lease, Message, Target  # noqa: E402
from webhooks_emitter.stores.sqlite import SQLiteStore  # noqa: E402

BODY = b'{"order":{"id":"%s","total":"129.90","currency":"EUR","items":[' + b"x" * 200 + b"]}}"
TARGET_P50_US = 40.0
TARGET_P99_US = 200.0


def percentile(samples: list[int], fraction: float) -> float:
    """The ``fraction`` percentile of ``samples`` (nanoseconds), in microseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000.0


def body() -> bytes:
    """A 300-byte JSON body."""
    data = BODY.replace(b"%s", uuid.uuid4().hex.encode())
    return data + b" " * (300 - len(data))


def run_store(path: str, synchronous: str, samples: int, warmup: int) -> list[int]:
    """Time ``samples`` calls of ``store.append`` with one target, after ``warmup`` calls."""
    store = SQLiteStore(path, synchronous=synchronous)
    target = [Target("bench", 10**9)]
    payload = body()
    timings = []
    clock = time.perf_counter_ns
    for i in range(warmup + samples):
        message = Message("order.created", f"req-{i}", payload)
        started = clock()
        store.append(message, target)
        elapsed = clock() - started
        if i >= warmup:
            timings.append(elapsed)
    store.close()
    return timings


def run_deliveries(path: str, synchronous: str, samples: int, warmup: int, one: bool) -> list[int]:
    """Time recording ``samples`` deliveries, each with the next event's try: ``settle``
    (``one``) or ``finish`` then ``begin_try``."""
    store = SQLiteStore(path, synchronous=synchronous)
    target = [Target("bench", 10**9)]
    payload = body()
    for i in range(warmup + samples + 1):
        store.append(Message("order.created", f"req-{i}", payload), target)
    lease = Lease.new()
    assert store.acquire("bench", lease)
    events = store.fetch("bench", lease, warmup + samples + 1)
    now = time.time()
    events[0].attempts = 1
    assert store.begin_try(lease, events[0], now)
    timings = []
    clock = time.perf_counter_ns
    for i in range(warmup + samples):
        done, following = events[i], events[i + 1]
        following.attempts = 1
        started = clock()
        if one:
            recorded, begun = store.settle(lease, [("finish", done)], begin=following, now=now)
            ok = recorded == [True] and begun is True
        else:
            ok = store.finish(lease, done) and store.begin_try(lease, following, now)
        elapsed = clock() - started
        if not ok:
            raise RuntimeError(f"delivery {i} was not recorded")
        if i >= warmup:
            timings.append(elapsed)
    store.close()
    return timings


def run_floor(path: str, synchronous: str, samples: int, warmup: int) -> list[int]:
    """Time ``samples`` hand-written INSERT+COMMIT transactions of a similar row."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = " + synchronous.upper())
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, emitter_id TEXT,"
        " event TEXT, request_id TEXT, body BLOB, emitted_at REAL)"
    )
    payload = body()
    timings = []
    clock = time.perf_counter_ns
    insert = (
        "INSERT INTO events (emitter_id, event, request_id, body, emitted_at)"
        " VALUES (?, ?, ?, ?, ?)"
    )
    for i in range(warmup + samples):
        started = clock()
        conn.execute("BEGIN")
        conn.execute(insert, ("bench", "order.created", f"req-{i}", payload, time.time()))
        conn.execute("COMMIT")
        elapsed = clock() - started
        if i >= warmup:
            timings.append(elapsed)
    conn.close()
    return timings


def summary(rounds: list[list[int]]) -> tuple[float, float, str, str]:
    """Median over the rounds of each round's p50 and p99, and their ranges, in us."""
    p50s = [percentile(samples, 0.50) for samples in rounds]
    p99s = [percentile(samples, 0.99) for samples in rounds]
    return (
        statistics.median(p50s),
        statistics.median(p99s),
        f"{min(p50s):.1f}-{max(p50s):.1f}",
        f"{min(p99s):.1f}-{max(p99s):.1f}",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000, help="timed calls per loop and round")
    parser.add_argument("--warmup", type=int, default=500, help="untimed calls first")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of each loop")
    parser.add_argument("--synchronous", choices=("normal", "full"), default="normal")
    parser.add_argument("--dir", default=None, help="directory for the files (default: a temp)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()

    store_rounds: list[list[int]] = []
    floor_rounds: list[list[int]] = []
    two_rounds: list[list[int]] = []
    settle_rounds: list[list[int]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        gc.disable()  # a collection inside a timed call says nothing about either loop
        try:
            for round_no in range(args.rounds):
                store_path = os.path.join(directory, f"store-{round_no}.db")
                floor_path = os.path.join(directory, f"floor-{round_no}.db")
                floor_rounds.append(
                    run_floor(floor_path, args.synchronous, args.samples, args.warmup)
                )
                store_rounds.append(
                    run_store(store_path, args.synchronous, args.samples, args.warmup)
                )
                for one, kept in ((False, two_rounds), (True, settle_rounds)):
                    name = os.path.join(directory, f"deliver-{one}-{round_no}.db")
                    kept.append(
                        run_deliveries(name, args.synchronous, args.samples, args.warmup, one)
                    )
                gc.collect()
        finally:
            gc.enable()

    floor_p50, floor_p99, floor_p50s, floor_p99s = summary(floor_rounds)
    store_p50, store_p99, store_p50s, store_p99s = summary(store_rounds)
    print(
        f"SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}, "
        f"synchronous={args.synchronous}, {args.rounds} rounds of {args.samples} calls per loop"
        " (median over the rounds, range in brackets)"
    )
    print(f"{'':30} {'p50 us':>8} {'':13} {'p99 us':>8} {'':15}")
    print(
        f"{'hand-written INSERT+COMMIT':30} {floor_p50:8.1f} [{floor_p50s:>11}] "
        f"{floor_p99:8.1f} [{floor_p99s:>13}]"
    )
    print(
        f"{'SQLiteStore.append, 1 target':30} {store_p50:8.1f} [{store_p50s:>11}] "
        f"{store_p99:8.1f} [{store_p99s:>13}]"
    )
    ratios = f"{store_p50 / floor_p50:8.2f} {'':13} {store_p99 / floor_p99:8.2f}"
    print(f"{'ratio store / floor':30} {ratios}")
    for name, kept in (
        ("finish + begin_try (2 commits)", two_rounds),
        ("settle (1 commit)", settle_rounds),
    ):
        p50, p99, p50s, p99s = summary(kept)
        print(f"{name:30} {p50:8.1f} [{p50s:>11}] {p99:8.1f} [{p99s:>13}]")
        print(f"{'  ratio / floor':30} {p50 / floor_p50:8.2f} {'':13} {p99 / floor_p99:8.2f}")
    two_p50, settle_p50 = summary(two_rounds)[0], summary(settle_rounds)[0]
    print(f"{'settle / two calls, p50':30} {settle_p50 / two_p50:8.2f}")
    passed = store_p50 <= TARGET_P50_US and store_p99 <= TARGET_P99_US
    verdict = "PASS" if passed else "FAIL"
    print(f"target p50 <= {TARGET_P50_US:g} us and p99 <= {TARGET_P99_US:g} us: {verdict}")
    return 0 if passed or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
