"""Thousands of endpoints (CONTRACT.md section 14): threads on demand, ``emit(..., to=...)``,
small idle emitters, and a durable store polled without a query per emitter.

Threads are counted by name: an emitter's thread is ``webhooks-emitter:<emitter_id>`` (the
instance's timers run in ``webhooks-emitter:housekeeping``), and the ``started`` fixture
records the name of every thread started during a test, so that a thread that came and went
between two looks is still seen. Waits are polling loops on a condition with a deadline.
Timings are measured in ``benchmarks/bench_scale.py``, never asserted here.
"""

from __future__ import annotations

import gc
import json
import logging
import random
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from webhooks_emitter import Config, EmitterExistsError, WebhooksEmitter
from webhooks_emitter._transport import Transport  # only to wrap it (the race test)
from webhooks_emitter.stores import from_url
from webhooks_emitter.testing import ReceivedRequest, Receiver, Response, fail_first

THREAD_PREFIX = "webhooks-emitter:"
HOUSEKEEPING = "webhooks-emitter:housekeeping"
LOGGER = "webhooks_emitter"
STORES = ["memory", "sqlite"]
# A hard bound on each wait for a condition: far above what it needs, so only a bug hits it.
WAIT = 5.0


def thread_name(emitter_id: str) -> str:
    """The name of ``emitter_id``'s delivering thread."""
    return THREAD_PREFIX + emitter_id


def emitter_threads(prefix: str = "") -> list[str]:
    """Names of the live emitter threads (not housekeeping) whose id starts with ``prefix``."""
    return sorted(
        t.name
        for t in threading.enumerate()
        if t.name.startswith(THREAD_PREFIX + prefix) and t.name != HOUSEKEEPING
    )


def wait_until(condition: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Poll ``condition`` every millisecond or so until it holds (True) or ``timeout`` (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def sqlite_url(directory: Path) -> str:
    """``sqlite:////<directory>/s.db``: three slashes and the absolute path."""
    return "sqlite:///" + str(directory / "s.db")


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every thread started from now on, in start order."""
    names: list[str] = []
    original = threading.Thread.start

    def start(self: threading.Thread) -> None:
        names.append(self.name)
        original(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    return names


@pytest.fixture
def make_hub(tmp_path: Path) -> Iterator[Callable[..., WebhooksEmitter]]:
    """Make instances over ``"memory"`` or ``"sqlite"`` (one file per test), shut down after
    the test: ``make_hub(store, **settings)``."""
    hubs: list[WebhooksEmitter] = []

    def make(store: str = "memory", **settings: Any) -> WebhooksEmitter:
        if store == "sqlite":
            settings["store"] = sqlite_url(tmp_path)
        hub = WebhooksEmitter(exit_timeout=1.0, **settings)
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.shutdown(timeout=2.0)


class Deliveries:
    """``on_delivery`` results by request id, with a wait for one of them."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.by_request: dict[str, list[str]] = {}

    def __call__(self, result: Any) -> None:
        with self.cond:
            self.by_request.setdefault(result.request_id, []).append(result.emitter_id)
            self.cond.notify_all()

    def wait(self, request_id: str, timeout: float = WAIT) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: request_id in self.by_request, timeout)


def by_path(requests: list[ReceivedRequest]) -> Counter[tuple[str, Optional[str]]]:
    """How many times each (path, delivery id) came."""
    return Counter((r.path, r.delivery_id) for r in requests)


# -- thousands attached, no thread -----------------------------------------------------------


def test_five_thousand_attached_emitters_start_no_thread(
    make_hub: Callable[..., WebhooksEmitter],
    receiver: Receiver,
    fast: Callable[..., Config],
    started: list[str],
) -> None:
    """5,000 emitters attached (one Config shared) start no thread; they are all listed,
    detach and attach again work among them, and an emit starts threads only for the
    emitters it reaches."""
    hub = make_hub(idle_timeout=0.2)
    config = fast(receiver.url)
    ids = [f"quiet-{i}" for i in range(5000)]
    for index, emitter_id in enumerate(ids):
        if index % 10 == 0:
            hub.attach_many(emitter_id, [f"order.{index % 50}", "never.emitted"], config)
        else:
            hub.attach(emitter_id, f"order.{index % 50}", config)

    assert [n for n in started if n.startswith(THREAD_PREFIX + "quiet-")] == []
    assert emitter_threads("quiet-") == []
    assert sorted(hub.list_emitters()) == sorted(ids)
    assert hub.is_started("quiet-4999") and hub.stats("quiet-4999").queued == 0
    with pytest.raises(EmitterExistsError):
        hub.attach("quiet-17", "order.17", config)

    for emitter_id in ids[::2]:
        hub.detach(emitter_id)
    assert sorted(hub.list_emitters()) == sorted(ids[1::2])
    assert not hub.is_started("quiet-0")
    hub.attach("quiet-0", "order.3", config)  # the id is free again
    assert [n for n in started if n.startswith(THREAD_PREFIX + "quiet-")] == []

    # order.3 reaches the odd ids i with i % 50 == 3 (all still attached), and quiet-0.
    reached = {"quiet-0"} | {f"quiet-{i}" for i in range(5000) if i % 50 == 3}
    request_id = hub.emit("order.3", {"n": 1})
    hooks = receiver.wait_for(len(reached))
    assert hub.flush(WAIT)
    assert {h.delivery_id for h in hooks} == {request_id}
    assert len(receiver.requests) == len(reached)
    assert {n for n in started if n.startswith(THREAD_PREFIX + "quiet-")} == {
        thread_name(i) for i in reached
    }
    assert hub.emit("order.4", {"n": 2}, to="quiet-4")  # detached: reaches nobody
    assert hub.flush(WAIT)
    assert len(receiver.requests) == len(reached)


# -- threads on demand -----------------------------------------------------------------------


@pytest.mark.parametrize("store", STORES)
def test_thread_starts_on_first_event_ends_when_idle_and_comes_back(
    store: str,
    make_hub: Callable[..., WebhooksEmitter],
    receiver: Receiver,
    fast: Callable[..., Config],
    started: list[str],
) -> None:
    """No thread from attach; the first event starts one, it ends after idle_timeout (with
    a durable store the lease is let go with it), and the next event starts one again."""
    hub = make_hub(store, idle_timeout=0.2)
    hub.attach("life", "ping", fast(receiver.url))
    name = thread_name("life")
    assert name not in started

    for round_number in (1, 2):
        hub.emit("ping", {"round": round_number})
        assert name in emitter_threads("life")  # started by emit, kept while it has work
        receiver.wait_for(round_number)
        assert wait_until(lambda: emitter_threads("life") == []), "the idle thread never ended"
        if store == "sqlite":
            assert hub.store.state("life").lease_holder is None
        assert started.count(name) >= round_number

    assert hub.flush(WAIT)
    assert hub.stats("life").delivered == 2
    assert [h.json()["round"] for h in receiver.requests] == [1, 2]
    if store == "memory":
        assert started.count(name) == 2


def test_configure_idle_timeout_applies_and_is_checked(
    make_hub: Callable[..., WebhooksEmitter], receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """configure(idle_timeout=...) shortens the idle wait of an instance made with a long
    one; idle_timeout must be a number > 0, in the constructor and in configure."""
    hub = make_hub(idle_timeout=60.0)
    assert hub.idle_timeout == 60.0
    hub.configure(idle_timeout=0.1)
    assert hub.idle_timeout == 0.1
    hub.attach("tuned", "ping", fast(receiver.url))
    hub.emit("ping", {})
    receiver.wait_for(1)
    assert wait_until(lambda: emitter_threads("tuned") == [])

    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="idle_timeout"):
            hub.configure(idle_timeout=bad)
        with pytest.raises(ValueError, match="idle_timeout"):
            WebhooksEmitter(idle_timeout=bad)
    for wrong in ("1", True, [1]):
        with pytest.raises(TypeError, match="idle_timeout"):
            hub.configure(idle_timeout=wrong)
        with pytest.raises(TypeError, match="idle_timeout"):
            WebhooksEmitter(idle_timeout=wrong)
    assert hub.idle_timeout == 0.1


@pytest.mark.parametrize("store", STORES)
def test_no_thread_while_paused(
    store: str,
    make_hub: Callable[..., WebhooksEmitter],
    receiver: Receiver,
    fast: Callable[..., Config],
    started: list[str],
) -> None:
    """Pausing ends the emitter's idle thread at once (idle_timeout is long); events emitted
    while paused start none; restart starts one and delivers them in order."""
    hub = make_hub(store, idle_timeout=60.0)
    hub.attach("pz", "ping", fast(receiver.url))
    hub.emit("ping", {"n": 0})
    receiver.wait_for(1)
    assert emitter_threads("pz") == [thread_name("pz")]  # idle, kept for 60 s

    hub.pause("pz")
    assert wait_until(lambda: emitter_threads("pz") == []), "the paused emitter kept its thread"
    starts = started.count(thread_name("pz"))
    for n in (1, 2, 3):
        hub.emit("ping", {"n": n})
    assert started.count(thread_name("pz")) == starts
    assert emitter_threads("pz") == []
    assert hub.stats("pz").queued == 3
    assert hub.flush(WAIT)  # paused emitters are not waited for

    hub.restart("pz")
    receiver.wait_for(4)
    assert hub.flush(WAIT)
    assert [h.json()["n"] for h in receiver.requests] == [0, 1, 2, 3]
    if store == "memory":  # a durable store's poll may also start one
        assert started.count(thread_name("pz")) == starts + 1


def retry_after_once(seconds: str) -> Callable[[ReceivedRequest], Response]:
    """A responder answering 503 with ``Retry-After: seconds`` to a delivery's first try."""

    def respond(request: ReceivedRequest) -> Response:
        if request.try_number == 1:
            return 503, {"Retry-After": seconds}, b""
        return 204

    return respond


@pytest.mark.parametrize("store", STORES)
def test_no_thread_while_a_retry_after_hold_is_long(
    store: str,
    make_hub: Callable[..., WebhooksEmitter],
    fast: Callable[..., Config],
    started: list[str],
) -> None:
    """After a 503 with Retry-After: 3600 the emitter's thread ends at once (idle_timeout is
    far longer than the wait for it to go), the event stays queued, and a poll of a durable
    store does not start a thread for it either."""
    with Receiver(responder=retry_after_once("3600")) as receiver:
        hub = make_hub(store, idle_timeout=60.0)
        hub.attach("held", "ping", fast(receiver.url, backoff_limit=7200.0, max_attempts=3))
        polls: list[float] = []
        if store == "sqlite":
            real_poll = hub.store.poll

            def poll() -> Any:
                try:
                    return real_poll()
                finally:
                    polls.append(time.monotonic())

            hub.store.poll = poll  # type: ignore[method-assign]
        hub.emit("ping", {})
        receiver.wait_for(1)
        assert wait_until(lambda: emitter_threads("held") == []), "a thread waits for an hour"
        starts = started.count(thread_name("held"))
        if store == "sqlite":
            seen = len(polls)
            assert wait_until(lambda: len(polls) >= seen + 2), "the store was not polled"
            assert hub.store.state("held").lease_holder is None
        assert started.count(thread_name("held")) == starts
        assert emitter_threads("held") == []
        stats = hub.stats("held")
        assert (stats.queued, stats.delivered, stats.given_up) == (1, 0, 0)
        assert len(receiver.requests) == 1
        assert not hub.flush(0.05)  # it is waiting, not done
        hub.detach("held")  # what it holds is dropped (memory) or kept (SQLite)


@pytest.mark.parametrize("store", STORES)
def test_no_thread_during_a_backoff_longer_than_idle_and_the_retry_still_happens(
    store: str,
    make_hub: Callable[..., WebhooksEmitter],
    fast: Callable[..., Config],
) -> None:
    """idle_timeout 0.05 s, backoff 0.3 s: between the failed try and its retry the emitter
    holds no thread, and the retry is made when due and delivered."""
    with Receiver(responder=fail_first(1)) as receiver:
        hub = make_hub(store, idle_timeout=0.05)
        hub.attach("bo", "ping", fast(receiver.url, backoff_start=0.3, backoff_limit=0.3))
        hub.emit("ping", {"n": 1})
        [first] = receiver.wait_for(1)
        assert wait_until(lambda: emitter_threads("bo") == []), "a thread waits out the backoff"
        gone_at = time.monotonic()
        _, second_try = receiver.wait_for(2)
        assert gone_at < second_try.received_at  # seen without a thread before the retry
        assert second_try.delivery_id == first.delivery_id and second_try.try_number == 2
        assert hub.flush(WAIT)
        stats = hub.stats("bo")
        assert (stats.delivered, stats.retries, stats.queued) == (1, 1, 0)
        assert len(receiver.requests) == 2


# -- the end/arrive race -----------------------------------------------------------------------


@pytest.fixture
def frequent_switches() -> Iterator[None]:
    """Make the interpreter switch threads every 10 us, so that the races below interleave."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def test_end_arrive_race_under_stress(
    make_hub: Callable[..., WebhooksEmitter],
    receiver: Receiver,
    fast: Callable[..., Config],
    frequent_switches: None,
) -> None:
    """idle_timeout 0.001 s: four emitters, each driven by its own thread through 150 rounds
    of "emit one event to it, wait for its delivery" (with a random pause of up to 3 ms, so
    that the emit lands anywhere around the moment the idle thread ends), then bursts from
    four threads to all of them. Every event is delivered exactly once and flush returns
    True: none is stranded between a thread deciding to end and the event arriving."""
    hub = make_hub(idle_timeout=0.001)
    deliveries = Deliveries()
    ids = [f"race-{i}" for i in range(4)]
    for emitter_id in ids:
        hub.attach_many(
            emitter_id,
            ["solo", "burst"],
            fast(f"{receiver.url}/{emitter_id}", on_delivery=deliveries),
        )
    stranded: list[str] = []
    expected: Counter[tuple[str, Optional[str]]] = Counter()
    expected_lock = threading.Lock()

    def rounds(emitter_id: str, seed: int) -> None:
        rng = random.Random(seed)
        for number in range(150):
            request_id = hub.emit("solo", {"n": number}, to=emitter_id)
            with expected_lock:
                expected[(f"/hooks/{emitter_id}", request_id)] += 1
            if not deliveries.wait(request_id, timeout=2.0):
                stranded.append(f"{emitter_id} round {number}: {hub.stats(emitter_id)}")
                return
            # Not a wait for anything: it moves the next emit across the idle deadline.
            time.sleep(rng.uniform(0.0, 0.003))

    def burst(seed: int) -> None:
        rng = random.Random(seed)
        for number in range(40):
            request_id = hub.emit("burst", {"n": number})
            with expected_lock:
                for emitter_id in ids:
                    expected[(f"/hooks/{emitter_id}", request_id)] += 1
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0.0, 0.002))  # as above: spreads the burst out

    drivers = [threading.Thread(target=rounds, args=(i, n)) for n, i in enumerate(ids)]
    for thread in drivers:
        thread.start()
    for thread in drivers:
        thread.join(30)
    assert stranded == [], "events stranded: " + "; ".join(stranded)

    bursts = [threading.Thread(target=burst, args=(100 + n,)) for n in range(4)]
    for thread in bursts:
        thread.start()
    for thread in bursts:
        thread.join(30)
    assert hub.flush(10.0), f"stranded: {[hub.stats(i) for i in ids]}"
    assert by_path(receiver.requests) == expected  # each exactly once, none missing
    assert sum(len(v) for v in deliveries.by_request.values()) == sum(expected.values())
    assert all(hub.stats(i).queued == 0 for i in ids)


class _SlowToClose:
    """A transport that, when its thread ends, signals ``closing`` and waits for ``go``
    (at most a few seconds) before closing: it holds the thread between "decided to end"
    and "ended"."""

    def __init__(self, inner: Any, closing: threading.Event, go: threading.Event) -> None:
        self._inner = inner
        self._closing = closing
        self._go = go

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def close(self) -> None:
        self._closing.set()
        self._go.wait(WAIT)
        self._inner.close()


def test_event_emitted_while_the_idle_thread_is_ending_is_delivered(
    make_hub: Callable[..., WebhooksEmitter], receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """The end/arrive race made deterministic: the emitter's thread has given up waiting
    (idle_timeout) and is closing its session when the next event is emitted. That event
    must still be delivered: by that thread, or by a new one. (Uses the instance's
    transport factory hook to hold the ending thread in its session's close.)"""
    hub = make_hub(idle_timeout=0.01)
    closing, go = threading.Event(), threading.Event()
    hub.set_transport_factory(lambda config: _SlowToClose(Transport(config), closing, go))
    hub.attach("ending", "ping", fast(receiver.url))
    hub.emit("ping", {"n": 1})
    receiver.wait_for(1)
    assert closing.wait(WAIT), "the idle thread never ended"
    request_id = hub.emit("ping", {"n": 2})  # the thread has decided to end, not ended yet
    go.set()
    try:
        hooks = receiver.wait_for(2, timeout=3.0)
    except TimeoutError:
        pytest.fail(
            f"the event emitted while the thread was ending is stranded: "
            f"{hub.stats('ending')}, threads {emitter_threads('ending')}"
        )
    assert hooks[1].delivery_id == request_id
    assert hub.flush(WAIT)


# -- flush and shutdown with many idle emitters ---------------------------------------------------


@pytest.mark.parametrize(("store", "idle_count"), [("memory", 5000), ("sqlite", 2000)])
def test_flush_and_shutdown_with_many_idle_emitters(
    store: str,
    idle_count: int,
    make_hub: Callable[..., WebhooksEmitter],
    receiver: Receiver,
    fast: Callable[..., Config],
    started: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Thousands of idle emitters and 10 busy ones: flush waits for the busy ones' 20 events
    each, in order, and returns True; shutdown delivers 5 more each, returns with every
    lease let go (SQLite), lists nothing and logs no warning (an idle emitter has nothing
    to drop); every thread ends; no idle emitter ever had a thread."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    hub = make_hub(store, idle_timeout=0.2)
    shared = fast(receiver.url)
    for i in range(idle_count):
        hub.attach(f"idle-{i}", f"idle.{i % 100}", shared)
    busy = [f"busy-{j}" for j in range(10)]
    for emitter_id in busy:
        hub.attach(emitter_id, "work", fast(f"{receiver.url}/{emitter_id}"))
    for k in range(20):
        hub.emit("work", {"k": k})
    assert hub.flush(10.0)
    for emitter_id in busy:
        got = [r.json()["k"] for r in receiver.requests if r.path == f"/hooks/{emitter_id}"]
        assert got == list(range(20)), emitter_id
    assert len(receiver.requests) == 200

    for k in range(20, 25):
        hub.emit("work", {"k": k})  # shutdown delivers these within its timeout
    hub.shutdown(timeout=10.0)
    assert len(receiver.requests) == 250
    assert hub.list_emitters() == []
    if store == "sqlite":
        held = [s.emitter_id for s in hub.store.states() if s.lease_holder is not None]
        assert held == [], "leases still held after shutdown returned"
    # What is left of a thread then is its return: it ends at once.
    assert wait_until(lambda: emitter_threads() == [], 2.0), emitter_threads()
    assert not any(n.startswith(THREAD_PREFIX + "idle-") for n in started)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []


def test_shutdown_returns_once_every_thread_let_go_of_its_lease(
    make_hub: Callable[..., WebhooksEmitter], receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """Over an SQLite store whose lease release takes 0.2 s (as when another process holds
    the write lock a moment), shutdown(timeout=5) returns only after the emitters' threads
    have let go of their leases (and then they end at once): at exit, a daemon thread still
    letting go would be frozen, and its lease held by a dead process until lease_timeout."""
    hub = make_hub("sqlite", idle_timeout=30.0)
    real_release = hub.store.release

    def slow_release(*args: Any, **kwargs: Any) -> None:
        time.sleep(0.2)  # simulates a store slow to answer; nothing is waited for here
        real_release(*args, **kwargs)

    hub.store.release = slow_release  # type: ignore[method-assign]
    for j in range(5):
        hub.attach(f"lease-{j}", "work", fast(receiver.url))
    hub.emit("work", {})
    receiver.wait_for(5)
    assert hub.flush(WAIT)
    assert len(emitter_threads("lease-")) == 5  # idle, each holding its lease
    hub.shutdown(timeout=5.0)
    held = [s.emitter_id for s in hub.store.states() if s.lease_holder is not None]
    assert held == [], "shutdown returned before the threads let go of their leases"
    # What is left of a thread then is its return: it ends at once.
    assert wait_until(lambda: emitter_threads("lease-") == [], 2.0), emitter_threads("lease-")


EXIT_CHILD = textwrap.dedent(
    """
    import sys
    import webhooks_emitter

    store, url = sys.argv[1], sys.argv[2]
    webhooks_emitter.configure(store=store, exit_timeout=10)
    shared = webhooks_emitter.Config(url)
    for i in range(1000):
        webhooks_emitter.attach(f"idle-{i}", "idle", shared)
    for j in range(50):
        config = webhooks_emitter.Config(
            f"{url}/busy-{j}", backoff_start=0.001, backoff_limit=0.01
        )
        webhooks_emitter.attach(f"busy-{j}", "work", config)
    for k in range(4):
        webhooks_emitter.emit("work", {"k": k})
    """
)


def test_exit_with_many_idle_emitters_over_sqlite_delivers_and_lets_go_of_leases(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Two programs in turn attach 1,000 idle and 50 busy emitters over one SQLite file,
    emit 4 events to each busy one and end without flush: the exit hook delivers them all,
    once each, and lets go of every lease, so nothing waits in the store for a dead
    process's lease to expire."""
    url = sqlite_url(tmp_path)
    for run in (1, 2):
        completed = subprocess.run(
            [sys.executable, "-c", EXIT_CHILD, url, receiver.url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert completed.returncode == 0, completed.stderr
        store = from_url(url)
        try:
            states = store.states()
        finally:
            store.close()
        held = sorted(s.emitter_id for s in states if s.lease_holder is not None)
        queued = sorted(s.emitter_id for s in states if s.queued)
        assert (held, queued) == ([], []), f"run {run}: leases held {held}, queued {queued}"
        assert len(receiver.requests) == 200 * run
    got = by_path(receiver.requests)
    assert set(got.values()) == {1}
    assert {path for path, _ in got} == {f"/hooks/busy-{j}" for j in range(50)}


# -- emit(..., to=...) -----------------------------------------------------------------------------


def test_emit_to_reaches_only_the_named_subscribed_emitters(
    make_hub: Callable[..., WebhooksEmitter], receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """``to`` as a str, a list, a tuple with a repeat, a set, a generator or empty: the event
    reaches the named emitters subscribed to it (a "*" emitter is subscribed to every event),
    each once; unknown, detached and unsubscribed ids get nothing; without ``to`` a "*"
    emitter gets every event, with ``to`` only when named. Bad ``to`` is a TypeError."""
    hub = make_hub(idle_timeout=0.2)
    for emitter_id, events in {
        "a": ["order.created"],
        "b": ["order.created", "order.paid"],
        "c": ["invoice.sent"],
        "w": ["*"],
        "gone": ["order.created"],
    }.items():
        hub.attach_many(emitter_id, events, fast(f"{receiver.url}/{emitter_id}"))
    hub.detach("gone")

    cases: list[tuple[Any, set[str]]] = [
        ("a", {"a"}),
        (["a", "b"], {"a", "b"}),
        (("a", "a", "b"), {"a", "b"}),
        ({"a", "w"}, {"a", "w"}),
        (iter(["b", "ghost", "c"]), {"b"}),
        ("ghost", set()),
        ("c", set()),
        ("gone", set()),
        ("w", {"w"}),
        ([], set()),
        (None, {"a", "b", "w"}),
    ]
    expected: Counter[tuple[str, Optional[str]]] = Counter()
    for index, (to, reached) in enumerate(cases):
        request_id = hub.emit("order.created", {"case": index}, f"case-{index}", to=to)
        assert request_id == f"case-{index}"
        for emitter_id in reached:
            expected[(f"/hooks/{emitter_id}", request_id)] += 1
    paid = hub.emit("order.paid", {}, to=["a", "b", "c", "w"])
    expected[("/hooks/b", paid)] += 1
    expected[("/hooks/w", paid)] += 1

    for bad in (5, [5], b"a", ["a", None]):
        with pytest.raises(TypeError, match="to"):
            hub.emit("order.created", {}, to=bad)
    assert hub.flush(WAIT)
    assert by_path(receiver.requests) == expected


# -- a durable store: one query per poll ----------------------------------------------------------


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement run on an SQLite connection opened from now on, in order."""
    run: list[str] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = connect(*args, **kwargs)
        connection.set_trace_callback(run.append)
        return connection

    monkeypatch.setattr(sqlite3, "connect", traced)
    return run


def test_sqlite_poll_costs_one_query_with_two_thousand_attached(
    make_hub: Callable[..., WebhooksEmitter],
    receiver: Receiver,
    fast: Callable[..., Config],
    statements: list[str],
    started: list[str],
) -> None:
    """2,000 idle emitters over an SQLite store: each poll of the store runs one statement,
    and between polls nothing runs a statement per emitter (the change watch's
    ``PRAGMA data_version`` aside); no emitter thread starts."""
    hub = make_hub("sqlite", idle_timeout=0.2)
    polls: list[list[str]] = []
    real_poll = hub.store.poll

    def poll() -> Any:
        before = len(statements)
        try:
            return real_poll()
        finally:
            polls.append(statements[before:])

    hub.store.poll = poll  # type: ignore[method-assign]
    shared = fast(receiver.url)
    for i in range(2000):
        hub.attach(f"idle-{i}", "never", shared)
    settled = len(polls) + 1  # a poll under way now may hold the last attach's statements
    assert wait_until(lambda: len(polls) >= settled + 1), "the store was not polled"
    window_start = len(statements)
    assert wait_until(lambda: len(polls) >= settled + 3), "the store was not polled again"
    quiet = [s for s in statements[window_start:] if "data_version" not in s.lower()]
    per_poll = [[s for s in p if "data_version" not in s.lower()] for p in polls[settled:]]
    assert all(len(p) == 1 for p in per_poll), per_poll
    assert len(quiet) <= 10, quiet[:20]
    assert not any(n.startswith(THREAD_PREFIX + "idle-") for n in started)


def test_sqlite_restart_finds_and_delivers_the_few_emitters_with_stored_events(
    make_hub: Callable[..., WebhooksEmitter],
    receiver: Receiver,
    fast: Callable[..., Config],
    started: list[str],
) -> None:
    """A process that only stores (deliver=False) emits to 20 emitters; a fresh instance
    over the same SQLite file attaches those among 2,000: the 20 events are found and
    delivered once each, and only those 20 emitters start a thread."""
    shared = fast(receiver.url)
    ids = [f"many-{i}" for i in range(2000)]
    chosen = ids[::100]
    writer = make_hub("sqlite", deliver=False)
    for emitter_id in chosen:
        writer.attach(emitter_id, "invoice", shared)
    stored = {writer.emit("invoice", {"for": e}, to=e): e for e in chosen}
    writer.shutdown(timeout=2.0)
    assert not any(n.startswith(THREAD_PREFIX + "many-") for n in started)
    assert receiver.requests == []

    reader = make_hub("sqlite", idle_timeout=0.2)
    for emitter_id in ids:
        reader.attach(emitter_id, "invoice", shared)
    hooks = receiver.wait_for(len(chosen), timeout=10.0)
    assert reader.flush(WAIT)
    assert sorted((h.delivery_id, h.json()["for"]) for h in hooks) == sorted(stored.items())
    assert len(receiver.requests) == len(chosen)
    emitters_started = {n for n in started if n.startswith(THREAD_PREFIX + "many-")}
    assert emitters_started == {thread_name(e) for e in chosen}


@pytest.fixture
def gil_let_go_in_collections() -> Iterator[None]:
    """While the housekeeping thread runs a garbage collection, let go of the GIL for a
    millisecond at its start, as a finalizer doing I/O does (urllib3's pools close their
    sockets in finalizers; a handler may log a ResourceWarning to a file)."""

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and threading.current_thread().name == HOUSEKEEPING:
            time.sleep(0.001)

    gc.callbacks.append(callback)
    try:
        yield
    finally:
        gc.callbacks.remove(callback)


def test_housekeeping_survives_attach_and_detach_churn_with_thousands_attached(
    make_hub: Callable[..., WebhooksEmitter],
    receiver: Receiver,
    fast: Callable[..., Config],
    caplog: pytest.LogCaptureFixture,
    gil_let_go_in_collections: None,
) -> None:
    """2,000 emitters over an SQLite store, then detach and attach again in a loop (ending
    with detaches) while the housekeeping thread polls: it never fails (the emitters change
    under its look at them when a collection lets other threads run), and it still finds
    an event another process stores afterwards for an attached emitter."""
    caplog.set_level(logging.ERROR, logger=LOGGER)
    hub = make_hub("sqlite", idle_timeout=0.2)
    shared = fast(receiver.url)
    for i in range(2000):
        hub.attach(f"churn-{i}", "ping", shared)
    for n in range(1500):
        hub.detach(f"churn-{n % 2000}")
        hub.attach(f"churn-{n % 2000}", "ping", shared)
    for n in range(1000, 1300):
        hub.detach(f"churn-{n}")  # nothing here starts a stopped housekeeping thread again

    writer = make_hub("sqlite", deliver=False)
    writer.attach("churn-5", "ping", shared)
    request_id = writer.emit("ping", {}, to="churn-5")
    failures = [r.getMessage() for r in caplog.records if "housekeeping" in r.getMessage()]
    assert failures == [], f"{len(failures)} failure(s) of the housekeeping thread"
    try:
        [hook] = receiver.wait_for(1, timeout=WAIT)
    except TimeoutError:
        pytest.fail("an event stored by another process was never found (no poll)")
    assert hook.delivery_id == request_id


# -- memory ---------------------------------------------------------------------------------------


def test_an_idle_emitter_holds_at_most_10_kb_beyond_its_config(
    make_hub: Callable[..., WebhooksEmitter], receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """1,000 attached, never-used emitters sharing one Config: what tracemalloc sees
    allocated, divided by 1,000, is at most 10 KB (printed; run with -s to see it)."""
    hub = make_hub(idle_timeout=0.2)
    shared = fast(receiver.url)
    hub.attach("warm-up", "ping", shared)  # what the first attach sets up once
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1000):
            hub.attach(f"mem-{i}", "ping", shared)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    per_emitter = (after - before) / 1000
    print(f"\nidle emitter: {per_emitter:.0f} bytes beyond its Config")
    assert per_emitter <= 10 * 1024, f"{per_emitter:.0f} bytes per idle emitter"


# -- fork -----------------------------------------------------------------------------------------

FORK_CHILD = textwrap.dedent(
    """
    import json, os, sys, threading, traceback
    import webhooks_emitter

    url = sys.argv[1]
    webhooks_emitter.configure(idle_timeout=0.2)
    shared = webhooks_emitter.Config(f"{url}/shared")
    for i in range(2000):
        if i in (0, 1, 1999):  # the ones used get a path of their own
            config = webhooks_emitter.Config(
                f"{url}/fk-{i}", backoff_start=0.001, backoff_limit=0.01
            )
        else:
            config = shared
        webhooks_emitter.attach(f"fk-{i}", "ping", config)
    webhooks_emitter.emit("ping", {"who": "parent-before"}, to="fk-0")
    if not webhooks_emitter.flush(10):
        sys.exit(3)

    def threads():
        return sorted(
            t.name for t in threading.enumerate() if t.name.startswith("webhooks-emitter:fk-")
        )

    at_fork = threads()  # fk-0's thread is idle now, and does not survive the fork
    pid = os.fork()
    if pid == 0:
        try:
            rid = webhooks_emitter.emit(
                "ping", {"who": "child"}, to=["fk-0", "fk-1999", "fk-nobody"]
            )
            flushed = webhooks_emitter.flush(10)
            line = {"role": "child", "rid": rid, "flushed": flushed, "threads": threads()}
            print(json.dumps(line), flush=True)
            os._exit(0 if flushed else 1)
        except BaseException:
            traceback.print_exc()
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    rid = webhooks_emitter.emit("ping", {"who": "parent-after"}, to="fk-1")
    flushed = webhooks_emitter.flush(10)
    line = {
        "role": "parent",
        "rid": rid,
        "flushed": flushed,
        "at_fork": at_fork,
        "child": os.waitstatus_to_exitcode(status),
    }
    print(json.dumps(line), flush=True)
    """
)


def test_fork_with_many_idle_emitters_then_emit_in_the_child(receiver: Receiver) -> None:
    """A program with 2,000 attached emitters (one with an idle thread) forks; the child
    emits to two of them and flushes, then the parent emits: each event reaches its
    emitters' receivers once, and the child ends with threads only for the two it used."""
    completed = subprocess.run(
        [sys.executable, "-c", FORK_CHILD, receiver.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    detail = f"exit {completed.returncode}\n{completed.stdout}\n{completed.stderr}"
    assert completed.returncode == 0, detail
    lines = {d["role"]: d for d in map(json.loads, completed.stdout.splitlines())}
    child, parent = lines["child"], lines["parent"]
    assert child["flushed"] and parent["flushed"] and parent["child"] == 0, detail
    assert parent["at_fork"] == ["webhooks-emitter:fk-0"]
    assert set(child["threads"]) <= {"webhooks-emitter:fk-0", "webhooks-emitter:fk-1999"}
    got = by_path(receiver.requests)
    assert got[("/hooks/fk-0", child["rid"])] == 1
    assert got[("/hooks/fk-1999", child["rid"])] == 1
    assert got[("/hooks/fk-1", parent["rid"])] == 1
    assert len(receiver.requests) == 4  # with the parent's event before the fork
    whos = sorted(r.json()["who"] for r in receiver.requests)
    assert whos == ["child", "child", "parent-after", "parent-before"]
