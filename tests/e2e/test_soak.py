"""A soak run: many events, four emitters, a receiver that fails often, and nothing lost.

The receiver (a raw keep-alive HTTP server) answers 500 to about 10% of the tries and aborts
the connection (TCP reset, after reading the request) on about 5%, chosen by a hash of the
emitter's path, the delivery id and the receiver's count of tries for that delivery: the
run is the same every time, and since each try draws anew, retries end up succeeding.

Size: ``WEBHOOKS_EMITTER_SOAK_EVENTS`` events (default 800, about 10 s on 2 cores, so the
default suite runs it); the full run is ``WEBHOOKS_EMITTER_SOAK_EVENTS=20000``::

    WEBHOOKS_EMITTER_SOAK_EVENTS=20000 python -m pytest -m soak tests/test_soak.py
"""

from __future__ import annotations

import collections
import gc
import hashlib
import os
import threading
import tracemalloc
from typing import Callable

import pytest
from faultservers import RESET, Answer, FaultServer, RawRequest, serve

from webhooks_emitter import Config, DeliveryResult, WebhooksEmitter

EVENTS = int(os.environ.get("WEBHOOKS_EMITTER_SOAK_EVENTS", "800"))
EMITTERS = 4
#: Tries allowed per delivery: with 15% of tries failing at random, 30 failures in a row
#: has a probability of 0.15**30 (about 2e-25) per delivery.
MAX_ATTEMPTS = 30
#: Bytes of Python memory a second batch may leave behind (counters, pools, caches).
MEMORY_SLACK = 256 * 1024


class FlakyReceiver:
    """Decides each answer and records, per emitter path, what it saw and what it accepted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tries: collections.Counter[tuple[str, str]] = collections.Counter()
        self.accepted: dict[str, list[str]] = collections.defaultdict(list)  # first 2xx, in order
        self.seen: dict[str, set[str]] = collections.defaultdict(set)
        self.failures = collections.Counter[str]()
        self._accepted_ids: dict[str, set[str]] = collections.defaultdict(set)

    def clear(self) -> None:
        """Forget everything recorded (between batches)."""
        with self._lock:
            self.tries.clear()
            self.accepted.clear()
            self.seen.clear()
            self.failures.clear()
            self._accepted_ids.clear()

    def decide(self, request: RawRequest) -> Answer:
        delivery = request.delivery_id or ""
        with self._lock:
            key = (request.path, delivery)
            self.tries[key] += 1
            number = self.tries[key]
            self.seen[request.path].add(delivery)
            draw = (
                int.from_bytes(
                    hashlib.sha256(f"{request.path}|{delivery}|{number}".encode()).digest()[:4],
                    "big",
                )
                % 100
            )
            if draw < 10:
                self.failures["500"] += 1
                return 500
            if draw < 15:
                self.failures["reset"] += 1
                return RESET
            if delivery not in self._accepted_ids[request.path]:
                self._accepted_ids[request.path].add(delivery)
                self.accepted[request.path].append(delivery)
            return 204


def run_batch(
    hub: WebhooksEmitter, results: list[DeliveryResult], count: int, tag: str
) -> list[str]:
    """Emit ``count`` events to the attached emitters, wait until all are done; return the ids."""
    ids = [hub.emit("soak", {"n": n, "batch": tag}, request_id=f"{tag}-{n}") for n in range(count)]
    assert hub.flush(timeout=max(60.0, count * 0.05)), "the emitters did not finish the batch"
    assert len(results) == count * EMITTERS
    return ids


@pytest.mark.soak
@pytest.mark.timeout(120 + EVENTS * 0.1)  # the suite's 120 s is too short for the full size
def test_soak_every_event_once_in_order_memory_flat(
    hub: WebhooksEmitter, fast: Callable[..., Config]
) -> None:
    """EVENTS events to 4 emitters against a receiver failing 15% of tries.

    Checks: exactly one DeliveryResult per event per emitter, all delivered; the receiver
    saw every event at each emitter's path and accepted them in emit order; every retry
    was caused by a failure the receiver injected; and a second batch leaves Python
    memory flat (tracemalloc, within MEMORY_SLACK).
    """
    receiver = FlakyReceiver()
    results: list[DeliveryResult] = []  # on_delivery=results.append
    with FaultServer(serve(receiver.decide), record=False) as server:
        for index in range(EMITTERS):
            config = fast(
                f"http://127.0.0.1:{server.port}/e{index}",
                max_attempts=MAX_ATTEMPTS,
                max_queue_size=EVENTS + 1,  # the whole run is queued at once
                backoff_start=0.0005,
                backoff_limit=0.002,
                on_delivery=results.append,
            )
            hub.attach(f"soak-{index}", "soak", config)

        ids = run_batch(hub, results, EVENTS, "main")

        per_event = collections.Counter((r.emitter_id, r.request_id) for r in results)
        assert set(per_event.values()) == {1}
        assert len(per_event) == EVENTS * EMITTERS
        assert all(r.delivered for r in results), [r for r in results if not r.delivered][:3]
        for index in range(EMITTERS):
            path = f"/e{index}"
            assert receiver.accepted[path] == ids, f"{path}: accepted out of order or not at all"
            assert receiver.seen[path] == set(ids)
            mine = [r for r in results if r.emitter_id == f"soak-{index}"]
            assert [r.request_id for r in mine] == ids  # results come in emit order too
        failed_tries = sum(r.attempts - 1 for r in results)
        assert failed_tries > 0  # the faults happened...
        # ...and each failed try is one the receiver caused (a reset on a kept-alive
        # connection is sent again within the same try, so it may cost no try at all).
        assert failed_tries <= receiver.failures["500"] + receiver.failures["reset"]
        assert receiver.failures["500"] > 0 and receiver.failures["reset"] > 0

        # Memory: a warm-up batch, then a measured one of the same size.
        batch = max(EVENTS // 4, 100)
        gc.collect()
        tracemalloc.start()
        try:
            results.clear()
            run_batch(hub, results, batch, "warm")
            results.clear()
            receiver.clear()
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            run_batch(hub, results, batch, "measured")
            all_delivered = all(r.delivered for r in results)  # (keeps no result alive)
            results.clear()
            receiver.clear()
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert all_delivered
        assert grown < MEMORY_SLACK, f"a batch of {batch} events left {grown} bytes behind"
