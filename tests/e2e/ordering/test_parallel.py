"""Parallel delivery and ordering keys (CONTRACT.md section 13): ``max_in_flight``,
``emit(..., ordering_key=...)``, ``Retry-After`` holding the whole emitter, and what flush,
shutdown, the exit hook and pause do with several tries under way.

Every test runs against an :class:`~inflight_receiver.InflightReceiver`, which counts the
requests in flight per path and records each try's key, number, start and end; the body of
every event is ``{"key": ..., "n": ...}``. Each test runs once per store (``store_url``).
"""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import textwrap
import threading
from typing import Any, Optional

import pytest
from inflight_receiver import (
    WAIT,
    Answer,
    Results,
    Try,
    arrival_order,
    by_key,
    overlaps,
)

from webhooks_emitter import Config, WebhooksEmitter

EVENT = "ev"
# Receiver clocks and the emitter's wall clock are read in different threads: a bound in
# time is checked with this much room (far below every interval the tests use).
CLOCK_SLACK = 0.005


# -- fixtures and helpers -----------------------------------------------------------------


def config(url: str, **fields: Any) -> Config:
    """A Config with millisecond backoffs and a bounded request timeout."""
    fields.setdefault("backoff_start", 0.001)
    fields.setdefault("backoff_limit", 0.01)
    fields.setdefault("request_timeout", 5.0)
    return Config(url, **fields)


def emit(hooks: WebhooksEmitter, n: int, key: Optional[str]) -> str:
    """Emit event number ``n`` with ordering key ``key`` (also written into the body)."""
    return hooks.emit(EVENT, {"key": key, "n": n}, ordering_key=key)


def expected_orders(keys: list[Optional[str]]) -> dict[str, list[int]]:
    """For events ``n = 0, 1, ...`` with these keys: each key's numbers in emit order."""
    orders: dict[str, list[int]] = {}
    for n, key in enumerate(keys):
        if key is not None:
            orders.setdefault(key, []).append(n)
    return orders


def check_keys(tries: list[Try], keys: list[Optional[str]]) -> None:
    """Each key's events arrived in emit order (a retry right after its own try) and never
    overlapped."""
    groups = by_key(tries)
    for key, expected in expected_orders(keys).items():
        group = groups.get(key, [])
        seen = [(t.n, t.try_number) for t in group]
        assert arrival_order(group) == expected, f"key {key}: {seen}"
        assert overlaps(group) == [], f"key {key} overlapped: {overlaps(group)}"


# -- max_in_flight ------------------------------------------------------------------------


def test_in_flight_reaches_max_in_flight_and_never_exceeds_it(hooks, receiver):
    """Against a receiver that holds each request until max_in_flight are under way, the
    most seen at once is exactly max_in_flight, per emitter (two emitters, 4 and 2)."""
    limits = {"/four": 4, "/two": 2}
    receiver.rule = lambda t: Answer(until_inflight=limits[t.path], hold=1.0)
    hooks.attach("four", EVENT, config(receiver.url_for("/four"), max_in_flight=4))
    hooks.attach("two", EVENT, config(receiver.url_for("/two"), max_in_flight=2))
    for n in range(40):
        emit(hooks, n, f"k{n}")
    assert hooks.flush(WAIT)
    tries = receiver.tries
    for path, limit in limits.items():
        seen = [t for t in tries if t.path == path]
        assert sorted(t.n for t in seen) == list(range(40))  # each once: no retry was needed
        assert receiver.peak(path) == limit
        assert max(t.inflight for t in seen) == limit


def test_events_without_a_key_are_delivered_in_parallel(hooks, receiver):
    """Events with no ordering key are not serialised: max_in_flight of them go at once."""
    receiver.rule = lambda t: Answer(until_inflight=3, hold=1.0)
    hooks.attach("par", EVENT, config(receiver.url_for("/par"), max_in_flight=3))
    for n in range(12):
        emit(hooks, n, None)
    assert hooks.flush(WAIT)
    assert sorted(t.n for t in receiver.tries) == list(range(12))
    assert receiver.peak("/par") == 3


def test_one_key_never_overlaps_even_with_room_in_flight(hooks, receiver):
    """Events of one key go one at a time, in emit order, whatever max_in_flight is."""
    receiver.rule = lambda t: Answer(delay=0.01)
    hooks.attach("par", EVENT, config(receiver.url_for("/par"), max_in_flight=8))
    for n in range(10):
        emit(hooks, n, "same")
    assert hooks.flush(WAIT)
    tries = receiver.tries
    assert [t.n for t in tries] == list(range(10))
    assert receiver.peak("/par") == 1
    assert overlaps(tries) == []


def test_events_emitted_while_a_try_is_under_way_start_at_once(hooks, receiver):
    """One try is under way (held by the receiver); three events of other keys emitted
    meanwhile go in flight beside it, without waiting for its answer."""
    gate = threading.Event()
    receiver.rule = lambda t: Answer(until=gate.is_set, hold=WAIT)
    hooks.attach("par", EVENT, config(receiver.url_for("/par"), max_in_flight=4))
    try:
        emit(hooks, 0, "k0")
        receiver.wait_inflight("/par", 1)
        for n in range(1, 4):
            emit(hooks, n, f"k{n}")
        receiver.wait_inflight("/par", 4, timeout=5.0)
    finally:
        gate.set()
        receiver.notify()
    assert hooks.flush(WAIT)
    assert receiver.peak("/par") == 4


# -- ordering keys under delays and failures ----------------------------------------------------


def test_per_key_order_and_no_overlap_under_random_delays_and_failures(hooks, receiver):
    """Several keys and keyless events, max_in_flight=8, answers delayed at random and
    first tries failed at random: each key arrives in emit order (each retry right after
    its own failed try), never overlaps, and every event is delivered."""
    rng = random.Random(13)
    picks = [rng.randrange(7) for _ in range(120)]
    keys: list[Optional[str]] = [None if k == 6 else f"k{k}" for k in picks]

    def rule(t: Try) -> Answer:
        r = random.Random(f"{t.n}:{t.try_number}")
        failed = t.try_number < 3 and r.random() < 0.3
        return Answer(status=500 if failed else 204, delay=r.uniform(0, 0.015))

    receiver.rule = rule
    results = Results()
    hooks.attach(
        "par",
        EVENT,
        config(receiver.url_for("/par"), max_in_flight=8, max_attempts=5, on_delivery=results),
    )
    for n, key in enumerate(keys):
        emit(hooks, n, key)
    assert hooks.flush(WAIT * 2)
    delivered = results.wait_for(len(keys))
    assert all(r.delivered for r in delivered)
    tries = receiver.tries
    assert any(t.status == 500 for t in tries)  # retries did happen
    check_keys(tries, keys)
    keyless = sorted(t.n for t in tries if t.key is None and t.status == 204)
    assert keyless == [n for n, key in enumerate(keys) if key is None]
    assert 1 < receiver.peak("/par") <= 8


def test_a_key_being_retried_holds_only_its_own_events(hooks, receiver, log):
    """The first event of key "slow" fails and waits a long backoff: the events behind it
    on that key wait, every other key (and keyless events) keeps flowing. A pause and
    restart cuts the wait short; "slow" then goes on in order."""
    receiver.rule = lambda t: 500 if (t.key, t.n, t.try_number) == ("slow", 0, 1) else 204
    results = Results()
    hooks.attach(
        "par",
        EVENT,
        config(
            receiver.url_for("/par"),
            max_in_flight=4,
            backoff_start=30.0,
            backoff_limit=30.0,
            on_delivery=results,
        ),
    )
    keys: list[Optional[str]] = ["slow", "slow", "a", "b", "slow", "a", None, "c", "b", "slow"]
    keys += ["d", None, "a", "e"]
    for n, key in enumerate(keys):
        emit(hooks, n, key)
    others = [n for n, key in enumerate(keys) if key != "slow"]
    log.wait_for("retrying in")  # the failed try of "slow" is waiting its 30 s now
    results.wait_for(len(others))
    tries = receiver.tries
    slow = [(t.n, t.try_number) for t in tries if t.key == "slow"]
    assert slow == [(0, 1)]
    assert sorted(t.n for t in tries if t.key != "slow") == others
    assert hooks.stats("par").queued == keys.count("slow")

    hooks.pause("par")
    hooks.restart("par")
    assert hooks.flush(WAIT)
    tries = receiver.tries
    assert [(t.n, t.try_number) for t in tries if t.key == "slow"] == [
        (0, 1),
        (0, 2),
        (1, 1),
        (4, 1),
        (9, 1),
    ]
    check_keys(tries, keys)
    assert hooks.stats("par").queued == 0


def test_max_in_flight_one_keeps_strict_fifo_with_retries(hooks, receiver):
    """With max_in_flight=1 (the default) every event, keyed or not, arrives in emit order,
    each retry right after its failed try, one at a time."""

    def rule(t: Try) -> int:
        failed = t.try_number == 1 and random.Random(f"{t.n}").random() < 0.4
        return 500 if failed else 204

    receiver.rule = rule
    hooks.attach("fifo", EVENT, config(receiver.url_for("/fifo"), max_attempts=3))
    keys: list[Optional[str]] = [None, "a", "b", None, "a", "c"] * 5
    for n, key in enumerate(keys):
        emit(hooks, n, key)
    assert hooks.flush(WAIT)
    tries = receiver.tries
    assert any(t.try_number == 2 for t in tries)
    assert arrival_order(tries) == list(range(len(keys)))
    assert [t.start for t in tries] == sorted(t.start for t in tries)
    assert overlaps(tries) == []
    assert receiver.peak("/fifo") == 1


# -- Retry-After ------------------------------------------------------------------------------


def test_retry_after_holds_every_new_try_and_lets_the_ones_under_way_finish(hooks, receiver):
    """Four tries under way; one gets 503 with Retry-After: 1, the other three are answered
    after it. Those three finish (204); no try of the emitter starts until a second after
    the 503 was answered; then everything is delivered."""

    def answered_503() -> bool:
        return any(t.status == 503 for t in receiver.tries)

    def rule(t: Try) -> Answer:
        if (t.key, t.try_number) == ("k0", 1):
            return Answer(503, {"Retry-After": "1"}, until_inflight=4, hold=2.0)
        if answered_503():
            return Answer()
        # Under way when the 503 is answered: answer after it, once the emitter has read it.
        return Answer(until=answered_503, hold=3.0, delay=0.2)

    receiver.rule = rule
    results = Results()
    hooks.attach(
        "par",
        EVENT,
        config(receiver.url_for("/par"), max_in_flight=4, backoff_limit=5.0, on_delivery=results),
    )
    for n in range(12):
        emit(hooks, n, f"k{n}")
    assert hooks.flush(WAIT)
    assert all(r.delivered for r in results.wait_for(12))
    tries = receiver.tries
    [refused] = [t for t in tries if t.status == 503]
    assert refused.end is not None
    under_way = [t for t in tries if t.start < refused.end and t is not refused]
    assert sorted(t.key for t in under_way) == ["k1", "k2", "k3"]
    assert all(t.status == 204 and t.end > refused.end for t in under_way)  # type: ignore[operator]
    later = [t for t in tries if t.start > refused.end]
    assert len(later) == 9  # k0 again, and k4 to k11
    early = [t for t in later if t.start < refused.end + 1.0 - CLOCK_SLACK]
    assert early == [], f"started during the Retry-After hold: {early}"


def test_restart_ends_a_retry_after_hold(hooks, receiver, log):
    """A Retry-After of 30 s holds the emitter; pause and restart end the hold at once, and
    the refused event is tried again first on its key."""
    receiver.rule = lambda t: (
        Answer(503, {"Retry-After": "30"}) if (t.n, t.try_number) == (0, 1) else Answer()
    )
    hooks.attach(
        "par", EVENT, config(receiver.url_for("/par"), max_in_flight=2, backoff_limit=60.0)
    )
    emit(hooks, 0, "k0")
    log.wait_for("retrying in")  # the emitter has read the 503: the hold is on
    for n in range(1, 5):
        emit(hooks, n, "k0" if n == 1 else f"k{n}")
    hooks.pause("par")
    hooks.restart("par")
    assert hooks.flush(WAIT)  # far less than the 30 s the hold would take
    tries = receiver.tries
    assert [(t.n, t.try_number) for t in tries if t.key == "k0"] == [(0, 1), (0, 2), (1, 1)]
    assert sorted(t.n for t in tries if t.status == 204) == list(range(5))


# -- flush, shutdown and exit with tries under way ---------------------------------------------


def slow_rule(t: Try) -> Answer:
    """Answers after 0.3 s: several tries are still under way when the test acts."""
    return Answer(delay=0.3)


def test_flush_waits_for_every_try_under_way(hooks, receiver):
    """flush() called while four tries are under way returns once all of them, and the
    events behind them, are delivered and reported."""
    receiver.rule = slow_rule
    results = Results()
    hooks.attach(
        "par", EVENT, config(receiver.url_for("/par"), max_in_flight=4, on_delivery=results)
    )
    for n in range(8):
        emit(hooks, n, f"k{n}")
    receiver.wait_inflight("/par", 4)
    assert hooks.flush(WAIT)
    assert len(results.items) == 8 and all(r.delivered for r in results.items)
    assert len(receiver.tries) == 8 and all(t.status == 204 for t in receiver.tries)
    assert hooks.stats("par").delivered == 8


def test_shutdown_waits_for_every_try_under_way(store_url, receiver, log):
    """shutdown() called while four tries are under way delivers all of them, and what is
    queued behind them, before it returns; nothing is dropped."""
    receiver.rule = slow_rule
    results = Results()
    instance = WebhooksEmitter(exit_timeout=1.0, store=store_url)
    try:
        instance.attach(
            "par", EVENT, config(receiver.url_for("/par"), max_in_flight=4, on_delivery=results)
        )
        for n in range(8):
            emit(instance, n, f"k{n}")
        receiver.wait_inflight("/par", 4)
        instance.shutdown(timeout=WAIT)
        assert len(results.items) == 8 and all(r.delivered for r in results.items)
        assert len(receiver.tries) == 8 and all(t.status == 204 for t in receiver.tries)
        warnings = log.messages(logging.WARNING)
        assert not [m for m in warnings if "dropped" in m or "may not have been" in m], warnings
    finally:
        instance.shutdown(timeout=2.0)


EXIT_CHILD = textwrap.dedent(
    """
    import json, sys
    import webhooks_emitter
    from webhooks_emitter import Config

    url, store = sys.argv[1], sys.argv[2]
    webhooks_emitter.configure(exit_timeout=10.0, store=store)

    def report(result):  # one write per line: several threads report at once
        sys.stdout.write(json.dumps([result.request_id, result.delivered]) + "\\n")
        sys.stdout.flush()

    webhooks_emitter.attach(
        "exiting", "ev", Config(url, max_in_flight=4, backoff_start=0.001,
                                backoff_limit=0.01, on_delivery=report)
    )
    for n in range(8):
        webhooks_emitter.emit("ev", {"key": f"k{n}", "n": n}, ordering_key=f"k{n}")
    print("emitted", flush=True)
    """
)


def test_exit_waits_for_every_try_under_way(store_url, receiver):
    """A program that emits 8 events to an emitter with max_in_flight=4 and a slow receiver,
    then ends, has all 8 delivered by the exit hook, four at a time."""
    receiver.rule = slow_rule
    completed = subprocess.run(
        [sys.executable, "-c", EXIT_CHILD, receiver.url_for("/exit"), store_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0] == "emitted", completed.stdout
    reported = [json.loads(line) for line in lines[1:]]
    assert len(reported) == 8 and all(delivered for _, delivered in reported), completed.stdout
    tries = receiver.tries
    assert sorted(t.n for t in tries) == list(range(8))
    assert all(t.status == 204 for t in tries)
    assert receiver.peak("/exit") == 4


# -- pause with tries under way -------------------------------------------------------------


def test_pause_lets_the_tries_under_way_finish_and_starts_no_new_one(hooks, receiver):
    """Paused while four tries are held by the receiver: those four finish and are
    reported, no other try starts, the rest stays queued; restart delivers the rest."""
    gate = threading.Event()
    receiver.rule = lambda t: Answer(until=gate.is_set, hold=WAIT)
    results = Results()
    hooks.attach(
        "par", EVENT, config(receiver.url_for("/par"), max_in_flight=4, on_delivery=results)
    )
    for n in range(10):
        emit(hooks, n, f"k{n}")
    receiver.wait_inflight("/par", 4)
    hooks.pause("par")
    gate.set()
    receiver.notify()
    finished = results.wait_for(4)
    assert all(r.delivered for r in finished)
    with pytest.raises(TimeoutError):
        receiver.wait_tries(5, timeout=0.5)  # a fifth try would have started by now
    stats = hooks.stats("par")
    assert stats.paused and stats.queued == 6 and stats.delivered == 4
    assert not hooks.is_started("par")

    hooks.restart("par")
    assert hooks.flush(WAIT)
    assert sorted(t.n for t in receiver.tries) == list(range(10))
    assert hooks.stats("par").delivered == 10


# -- on_delivery from several threads, and stats ----------------------------------------------


def test_on_delivery_from_several_threads_gets_every_result_and_stats_add_up(hooks, receiver):
    """With max_in_flight=8, on_delivery is called from several threads; every event's
    result arrives once, and stats() agrees with the results (delivered, given up,
    retries, failed)."""

    def rule(t: Try) -> Answer:
        assert t.n is not None
        if t.n % 10 == 0:
            return Answer(500)  # always fails: given up after max_attempts
        failed = t.try_number == 1 and random.Random(f"{t.n}").random() < 0.3
        return Answer(500 if failed else 204, delay=0.01)

    receiver.rule = rule
    results = Results()
    hooks.attach(
        "par",
        EVENT,
        config(receiver.url_for("/par"), max_in_flight=8, max_attempts=3, on_delivery=results),
    )
    keys = [None if n % 3 == 0 else f"k{n % 11}" for n in range(100)]
    ids = [emit(hooks, n, key) for n, key in enumerate(keys)]
    assert hooks.flush(WAIT * 2)
    items = results.wait_for(100)
    assert sorted(r.request_id for r in items) == sorted(ids)
    assert len(set(results.threads)) > 1
    given_up = [r for r in items if not r.delivered]
    assert len(given_up) == 10 and all(r.attempts == 3 for r in given_up)
    stats = hooks.stats("par")
    assert stats.delivered == 90
    assert stats.given_up == 10
    assert stats.retries == sum(r.attempts - 1 for r in items)
    assert stats.queued == 0 and stats.dropped == 0 and stats.failed == 10
    assert len(receiver.tries) == sum(r.attempts for r in items)
