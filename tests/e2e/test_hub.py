"""The registry (CONTRACT section 2): attach/detach/pause/restart/emit/flush/shutdown/stats, as
module functions and as methods of independent WebhooksEmitter instances, checked against
real receivers on 127.0.0.1."""

from __future__ import annotations

import logging
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any, Callable

import attrs
import pytest

import webhooks_emitter
from webhooks_emitter import (
    Config,
    DeliveryResult,
    EmitterExistsError,
    EmitterNotFoundError,
    WebhooksEmitter,
    WebhooksEmitterError,
)
from webhooks_emitter.testing import ReceivedRequest, Receiver, fail_first

LOGGER = "webhooks_emitter"
#: Events emitted to a paused emitter before it is detached or shut down (see those tests).
PAUSED_EVENTS = 500


@pytest.fixture(params=["module", "instance"])
def api(request: pytest.FixtureRequest, hub: WebhooksEmitter) -> Iterator[Any]:
    """The module-level functions (on the default instance, shut down afterwards so nothing
    leaks into other tests) or the methods of a fresh WebhooksEmitter."""
    if request.param == "module":
        yield webhooks_emitter
        webhooks_emitter.shutdown(timeout=2.0)
        assert webhooks_emitter.list_emitters() == []
    else:
        yield hub


@attrs.define
class Held:
    """A receiver whose answers wait until ``gate`` is set, and the gate."""

    receiver: Receiver
    gate: threading.Event


@pytest.fixture
def held() -> Iterator[Held]:
    """A receiver on 127.0.0.1 that holds every request until the test sets the gate
    (set again at teardown, so nothing stays blocked)."""
    gate = threading.Event()

    def respond(request: ReceivedRequest) -> int:
        return 204 if gate.wait(30) else 503

    with Receiver(responder=respond) as receiver:
        yield Held(receiver, gate)
        gate.set()


def seqs(requests: list[ReceivedRequest]) -> list[Any]:
    """The "seq" field of each request's JSON body, in arrival order."""
    return [r.json()["seq"] for r in requests]


def on_path(name: str) -> Callable[[ReceivedRequest], bool]:
    """A wait_for filter for requests to ``<receiver.url>/<name>``."""
    return lambda request: request.path == f"/hooks/{name}"


def emitter_threads(emitter_id: str) -> list[threading.Thread]:
    """The live threads of emitter ``emitter_id`` (daemon threads named after it)."""
    return [t for t in threading.enumerate() if t.name == f"webhooks-emitter:{emitter_id}"]


def assert_threads_end(emitter_id: str) -> None:
    """Join every thread of ``emitter_id`` (10 s at most) and assert none is left."""
    for thread in emitter_threads(emitter_id):
        assert thread.daemon
        thread.join(10)
    assert emitter_threads(emitter_id) == []


def assert_dropped_logged(
    records: list[logging.LogRecord], emitter_id: str, *, queued: int, in_flight: int
) -> None:
    """Assert that a WARNING about ``emitter_id`` gives the count of events it dropped.

    The contract fixes the count of queued events; an event whose try was under way may be
    counted with them or not (it may yet reach the receiver), so either count is accepted.
    """
    counts = []
    for record in records:
        if getattr(record, "emitter_id", None) == emitter_id and record.levelno == logging.WARNING:
            counts += [int(n) for n in re.findall(r"\b(\d+)\b", record.getMessage())]
    assert set(counts) & {queued, queued + in_flight}, (counts, queued, in_flight)


# -- the API, as module functions and as methods ----------------------------------------------


def test_attach_emit_flush_detach(
    api: Any, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """attach/attach_many start running emitters that deliver what emit queues; flush waits
    for it; stats counts it; detach forgets the emitter."""
    api.attach("single", "order.paid", fast(receiver.url + "/single"))
    api.attach_many("multi", ["user.created", "user.deleted"], fast(receiver.url + "/multi"))
    assert sorted(api.list_emitters()) == ["multi", "single"]
    assert api.is_started("single") and api.is_started("multi")

    paid = api.emit("order.paid", {"order": 1})
    created = api.emit("user.created", {"user": 1})
    deleted = api.emit("user.deleted", {"user": 1})
    api.emit("nobody.listens", {"x": 1})
    assert api.flush(timeout=10) is True

    assert [r.delivery_id for r in receiver.requests if on_path("single")(r)] == [paid]
    assert [r.delivery_id for r in receiver.requests if on_path("multi")(r)] == [created, deleted]
    assert len(receiver.requests) == 3
    assert attrs.asdict(api.stats("multi")) == {
        "queued": 0,
        "delivered": 2,
        "given_up": 0,
        "dropped": 0,
        "retries": 0,
        "paused": False,
        "failed": 0,
    }

    assert api.detach("single") is None
    assert api.list_emitters() == ["multi"]
    assert not api.is_started("single")
    with pytest.raises(EmitterNotFoundError):
        api.stats("single")


def test_attach_returns_none_and_accepts_any_iterable(
    api: Any, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """attach and attach_many return None; attach_many takes any non-empty iterable."""
    assert api.attach("a", "e1", fast(receiver.url)) is None
    assert api.attach_many("b", (name for name in ["e2", "e3"]), fast(receiver.url)) is None
    assert api.attach_many("c", {"e4"}, fast(receiver.url)) is None
    assert sorted(api.list_emitters()) == ["a", "b", "c"]


def test_attach_refuses_an_id_in_use(
    api: Any, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """A second attach with the same id is EmitterExistsError, for a paused emitter too, and
    leaves the first emitter as it was."""
    config = fast(receiver.url)
    api.attach("taken", "e", config)
    with pytest.raises(EmitterExistsError) as caught:
        api.attach("taken", "other", config)
    assert isinstance(caught.value, WebhooksEmitterError)
    assert "taken" in str(caught.value)
    with pytest.raises(EmitterExistsError):
        api.attach_many("taken", ["x", "y"], config)
    api.pause("taken")
    with pytest.raises(EmitterExistsError):
        api.attach("taken", "e", config)
    api.restart("taken")
    api.emit("other", {})
    request_id = api.emit("e", {})
    assert api.flush(10)
    assert [r.delivery_id for r in receiver.requests] == [request_id]


def test_unknown_ids(api: Any) -> None:
    """pause and restart of an unknown id raise EmitterNotFoundError; detach is a no-op;
    is_started is False; list_emitters does not show it."""
    with pytest.raises(EmitterNotFoundError) as caught:
        api.pause("ghost")
    assert isinstance(caught.value, WebhooksEmitterError)
    assert "ghost" in str(caught.value)
    with pytest.raises(EmitterNotFoundError):
        api.restart("ghost")
    assert api.detach("ghost") is None
    assert api.is_started("ghost") is False
    assert "ghost" not in api.list_emitters()


def test_detach_twice_is_a_no_op(api: Any, receiver: Receiver, fast: Callable[..., Config]) -> None:
    """Detaching an emitter that was already detached does nothing and raises nothing."""
    api.attach("once", "e", fast(receiver.url))
    api.detach("once")
    api.detach("once")
    assert "once" not in api.list_emitters()
    # The id is free again.
    api.attach("once", "e", fast(receiver.url))
    assert "once" in api.list_emitters()


def test_emit_returns_the_request_id(
    api: Any, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """emit returns the given request id, or a new uuid4 string each time, subscribed or not."""
    assert api.emit("nobody", {"x": 1}) != api.emit("nobody", {"x": 1})
    fresh = api.emit("nobody", {"x": 1})
    assert type(fresh) is str
    assert uuid.UUID(fresh).version == 4 and str(uuid.UUID(fresh)) == fresh
    assert api.emit("nobody", {}, request_id="mine-1") == "mine-1"
    assert api.emit("nobody", {}, "positional-id") == "positional-id"

    api.attach("ids", "e", fast(receiver.url))
    generated = api.emit("e", {})
    given = api.emit("e", {}, request_id="an_optional_request_id")
    assert uuid.UUID(generated).version == 4
    assert given == "an_optional_request_id"
    assert [r.delivery_id for r in receiver.wait_for(2)] == [generated, given]


def test_pause_hides_and_restart_delivers_in_order(
    api: Any, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """A paused emitter is not listed or started, keeps every event emitted to it, and after
    restart delivers them all in the order they were emitted."""
    api.attach("pausable", "e", fast(receiver.url))
    api.attach("other", "x", fast(receiver.url + "/other"))
    api.pause("pausable")
    assert api.list_emitters() == ["other"]
    assert api.is_started("pausable") is False
    ids = [api.emit("e", {"seq": n}) for n in range(5)]
    stats = api.stats("pausable")
    assert (stats.queued, stats.paused, stats.delivered, stats.dropped) == (5, True, 0, 0)
    assert api.flush(10) is True  # paused emitters are not waited for
    api.pause("pausable")  # pausing twice is harmless
    assert receiver.requests == []

    api.restart("pausable")
    assert api.is_started("pausable")
    assert sorted(api.list_emitters()) == ["other", "pausable"]
    requests = receiver.wait_for(5)
    assert seqs(requests) == [0, 1, 2, 3, 4]
    assert [r.delivery_id for r in requests] == ids
    assert api.flush(10)
    assert api.stats("pausable").delivered == 5


def test_restart_of_a_running_emitter_is_a_no_op(
    api: Any, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """restart on an emitter that is not paused changes nothing; it keeps delivering."""
    api.attach("running", "e", fast(receiver.url))
    assert api.restart("running") is None
    assert api.is_started("running")
    api.emit("e", {"seq": 0})
    assert seqs(receiver.wait_for(1)) == [0]


def test_bad_arguments(api: Any, receiver: Receiver, fast: Callable[..., Config]) -> None:
    """Bad attach/flush arguments raise ValueError or TypeError naming the argument."""
    config = fast(receiver.url)
    with pytest.raises(ValueError, match="events"):
        api.attach_many("empty", [], config)
    with pytest.raises(TypeError, match="events"):
        api.attach_many("str", "user.created", config)
    with pytest.raises(ValueError, match="emitter_id"):
        api.attach("", "e", config)
    with pytest.raises(TypeError, match="emitter_id"):
        api.attach(7, "e", config)
    with pytest.raises(TypeError, match="config"):
        api.attach("cfg", "e", {"url": receiver.url})
    with pytest.raises(ValueError, match="timeout"):
        api.flush(timeout=-1)
    with pytest.raises((TypeError, ValueError), match="timeout"):
        api.flush(timeout="1")
    assert api.list_emitters() == []


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda h: h.failed("e", limit=0), ValueError, "limit must be >= 1"),
        (lambda h: h.failed("e", limit=2.0), TypeError, "limit must be an int"),
        (lambda h: h.failed("e", limit=True), TypeError, "limit must be an int"),
        (lambda h: h.configure(exit_timeout=-1), ValueError, "exit_timeout must be"),
        (lambda h: h.configure(exit_timeout=float("nan")), ValueError, "exit_timeout"),
        (lambda h: h.configure(idle_timeout=0), ValueError, "idle_timeout must be a number > 0"),
        (lambda h: h.configure(idle_timeout="5"), TypeError, "idle_timeout"),
        (lambda h: h.flush(timeout=float("nan")), ValueError, "timeout must be"),
    ],
)
def test_bad_limits_and_seconds_are_refused_naming_the_argument(
    call: Callable[[webhooks_emitter.WebhooksEmitter], Any], error: type, words: str
) -> None:
    """``failed``'s limit (an int >= 1), ``exit_timeout`` (>= 0), ``idle_timeout`` (> 0)
    and ``flush``'s timeout are checked by the shared validators, and the message names the
    argument; infinity stays a valid "no deadline"."""
    hub = webhooks_emitter.WebhooksEmitter(1.0)
    try:
        with pytest.raises(error, match=words):
            call(hub)
        hub.configure(exit_timeout=float("inf"), idle_timeout=float("inf"))
        assert hub.failed("e", limit=1) == []
    finally:
        hub.shutdown(0)


def test_module_functions_act_on_the_default_instance(
    receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """The module-level functions share one default instance that other instances cannot see."""
    other = WebhooksEmitter()
    try:
        webhooks_emitter.attach("default-only", "e", fast(receiver.url))
        assert "default-only" in webhooks_emitter.default.list_emitters()
        assert other.list_emitters() == []
        assert other.is_started("default-only") is False
        other.emit("e", {"via": "other"})
        marker = webhooks_emitter.emit("e", {"via": "default"})
        [request] = receiver.wait_for(1)
        assert request.delivery_id == marker
        assert webhooks_emitter.flush(10)
        assert len(receiver.requests) == 1
    finally:
        webhooks_emitter.shutdown(timeout=2.0)
        other.shutdown(timeout=2.0)
    assert webhooks_emitter.list_emitters() == []


# -- independent instances --------------------------------------------------------------------


def test_instances_do_not_see_each_others_emitters(
    receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """Two WebhooksEmitter instances may use the same ids; emit on one reaches only its own."""
    first, second = WebhooksEmitter(), WebhooksEmitter()
    try:
        first.attach("same-id", "e", fast(receiver.url + "/first"))
        assert second.list_emitters() == []
        with pytest.raises(EmitterNotFoundError):
            second.pause("same-id")
        second.attach("same-id", "e", fast(receiver.url + "/second"))
        second.pause("same-id")
        assert first.is_started("same-id") and not second.is_started("same-id")

        only_first = first.emit("e", {"n": 1})
        assert first.flush(10)
        assert [r.delivery_id for r in receiver.requests] == [only_first]
        assert second.stats("same-id").queued == 0

        second.restart("same-id")
        only_second = second.emit("e", {"n": 2})
        assert second.flush(10)
        first.detach("same-id")
        assert second.list_emitters() == ["same-id"]
        assert [r.path for r in receiver.requests] == ["/hooks/first", "/hooks/second"]
        assert receiver.requests[1].delivery_id == only_second
    finally:
        first.shutdown(timeout=2.0)
        second.shutdown(timeout=2.0)


# -- routing ----------------------------------------------------------------------------------


def test_wildcard_emitters_get_every_event_once(
    hub: WebhooksEmitter, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """A "*" emitter gets every event; one subscribed to an event and "*" gets that event once."""
    hub.attach("all", "*", fast(receiver.url + "/all"))
    hub.attach("one", "a", fast(receiver.url + "/one"))
    hub.attach_many("both", ["a", "*"], fast(receiver.url + "/both"))
    hub.attach_many("dup", ["b", "b"], fast(receiver.url + "/dup"))
    sent = {event: hub.emit(event, {"event": event}) for event in ["a", "b", "c"]}
    assert hub.flush(10)

    def got(name: str) -> list[tuple[str | None, str | None]]:
        return [(r.event, r.delivery_id) for r in receiver.requests if on_path(name)(r)]

    every = [(event, sent[event]) for event in ["a", "b", "c"]]
    assert got("all") == every
    assert got("both") == every
    assert got("one") == [("a", sent["a"])]
    assert got("dup") == [("b", sent["b"])]


def test_emit_never_waits_on_a_receiver(
    hub: WebhooksEmitter, held: Held, fast: Callable[..., Config]
) -> None:
    """While the receiver holds a request, emit keeps returning at once and queues in order."""
    hub.attach("slow", "e", fast(held.receiver.url, request_timeout=30))
    hub.emit("e", {"seq": 0})
    held.receiver.wait_for(1)
    # A blocking emit would hang here: the receiver answers nothing until the gate opens.
    for n in range(1, 50):
        hub.emit("e", {"seq": n})
    assert hub.stats("slow").queued == 50
    held.gate.set()
    assert seqs(held.receiver.wait_for(50)) == list(range(50))


# -- pause with events in flight and queued ---------------------------------------------------


def test_pause_keeps_queued_events_behind_one_in_flight(
    hub: WebhooksEmitter, held: Held, fast: Callable[..., Config]
) -> None:
    """Pausing while one event is in flight lets it finish, keeps those queued behind it and
    those emitted while paused, and restart delivers the rest in emit order."""
    results: list[DeliveryResult] = []
    finished = threading.Event()

    def on_delivery(result: DeliveryResult) -> None:
        results.append(result)
        finished.set()

    hub.attach("p", "e", fast(held.receiver.url, request_timeout=30, on_delivery=on_delivery))
    hub.emit("e", {"seq": 0})
    held.receiver.wait_for(1)
    hub.emit("e", {"seq": 1})
    hub.emit("e", {"seq": 2})
    hub.pause("p")
    hub.emit("e", {"seq": 3})
    # The receiver still holds event 0, so these counts cannot move yet.
    stats = hub.stats("p")
    assert (stats.queued, stats.delivered, stats.dropped, stats.paused) == (4, 0, 0, True)
    assert hub.flush(10) is True  # the paused emitter is not waited for

    held.gate.set()
    assert finished.wait(10)
    assert [(r.delivered, r.attempts) for r in results] == [(True, 1)]
    assert len(held.receiver.requests) == 1  # the rest wait for restart

    hub.restart("p")
    assert seqs(held.receiver.wait_for(4)) == [0, 1, 2, 3]
    assert hub.flush(10)
    assert [r.delivered for r in results] == [True] * 4
    assert hub.stats("p").delivered == 4


# -- bounds and dropping ----------------------------------------------------------------------


def test_max_queue_size_drops_beyond_the_bound(
    hub: WebhooksEmitter,
    receiver: Receiver,
    fast: Callable[..., Config],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Beyond max_queue_size new events are dropped (emit still returns their ids at once),
    counted in stats().dropped and logged; the kept ones are delivered in order."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    hub.attach("bounded", "e", fast(receiver.url + "/bounded", max_queue_size=3))
    hub.attach("roomy", "e", fast(receiver.url + "/roomy"))
    hub.pause("bounded")
    # While paused nothing leaves the queue, so the bound is reached deterministically; a
    # blocking emit would hang here (the paused emitter never makes room).
    ids = [hub.emit("e", {"seq": n}) for n in range(8)]
    assert len(set(ids)) == 8
    stats = hub.stats("bounded")
    assert (stats.queued, stats.dropped) == (3, 5)
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and getattr(r, "emitter_id", None) == "bounded"
    ]
    assert warnings, "dropping events must be logged"
    assert all("drop" in r.getMessage() for r in warnings)
    # The first warning names the first event dropped (the fourth emitted).
    first = warnings[0]
    assert (first.event, first.request_id) == ("e", ids[3])  # type: ignore[attr-defined]

    hub.restart("bounded")
    assert hub.flush(10)
    assert seqs([r for r in receiver.requests if on_path("bounded")(r)]) == [0, 1, 2]
    # The other emitter of the same event lost nothing.
    assert seqs([r for r in receiver.requests if on_path("roomy")(r)]) == list(range(8))
    assert hub.stats("roomy").dropped == 0
    assert hub.stats("bounded").dropped == 5


def test_bound_counts_the_event_in_flight(
    hub: WebhooksEmitter, held: Held, fast: Callable[..., Config]
) -> None:
    """An emitter holds at most max_queue_size events, the one being delivered included."""
    hub.attach("tight", "e", fast(held.receiver.url, request_timeout=30, max_queue_size=2))
    hub.emit("e", {"seq": 0})
    held.receiver.wait_for(1)
    for n in range(1, 5):
        hub.emit("e", {"seq": n})
    stats = hub.stats("tight")
    assert (stats.queued, stats.dropped) == (2, 3)
    held.gate.set()
    assert hub.flush(10)
    assert seqs(held.receiver.requests) == [0, 1]


def test_detach_drops_what_is_queued_and_logs_its_count(
    hub: WebhooksEmitter, held: Held, fast: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    """detach forgets the emitter at once: the 3 events queued behind the one in flight are
    never sent, and a warning gives their count."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    hub.attach("leaving", "e", fast(held.receiver.url, request_timeout=30))
    hub.emit("e", {"seq": 0})
    held.receiver.wait_for(1)
    for n in range(1, 4):
        hub.emit("e", {"seq": n})
    hub.detach("leaving")
    assert "leaving" not in hub.list_emitters()
    assert_dropped_logged(caplog.records, "leaving", queued=3, in_flight=1)
    held.gate.set()
    assert_threads_end("leaving")
    assert seqs(held.receiver.requests) == [0]


def test_detach_of_a_paused_emitter_drops_everything_it_held(
    hub: WebhooksEmitter,
    receiver: Receiver,
    fast: Callable[..., Config],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Detaching a paused emitter drops all its events (none was tried) and one warning gives
    their full count."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    hub.attach("parked", "e", fast(receiver.url))
    hub.pause("parked")
    # Emitting many events keeps this thread busy past the interpreter's switch interval, so
    # the emitter's thread (idle in its queue) is sure to wake and take the first event while
    # paused: that event is still undelivered and must be counted with the others.
    for n in range(PAUSED_EVENTS):
        hub.emit("e", {"seq": n})
    assert hub.stats("parked").queued == PAUSED_EVENTS
    hub.detach("parked")
    assert_threads_end("parked")
    assert receiver.requests == []
    assert_dropped_logged(caplog.records, "parked", queued=PAUSED_EVENTS, in_flight=0)


# -- flush ------------------------------------------------------------------------------------


def test_flush_true_when_done_false_on_timeout(
    hub: WebhooksEmitter, held: Held, fast: Callable[..., Config]
) -> None:
    """flush(timeout) is False while a receiver holds a request past the timeout, and True
    once everything was delivered; with nothing queued it is True at once."""
    assert hub.flush(timeout=0) is True
    hub.attach("held", "e", fast(held.receiver.url, request_timeout=30))
    hub.emit("e", {"seq": 0})
    hub.emit("e", {"seq": 1})
    held.receiver.wait_for(1)
    assert hub.flush(timeout=0.2) is False
    assert hub.flush(timeout=0) is False
    held.gate.set()
    assert hub.flush(timeout=10) is True
    assert seqs(held.receiver.requests) == [0, 1]
    assert hub.stats("held").queued == 0


def test_flush_waits_for_on_delivery(
    hub: WebhooksEmitter, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """flush does not return True while an on_delivery call is still running; once it has
    returned, flush is True and every result was handed over."""
    entered, release = threading.Event(), threading.Event()
    results: list[DeliveryResult] = []

    def on_delivery(result: DeliveryResult) -> None:
        entered.set()
        release.wait(10)
        results.append(result)

    hub.attach("cb", "e", fast(receiver.url, on_delivery=on_delivery))
    hub.emit("e", {"seq": 0})
    assert entered.wait(10)
    assert hub.flush(timeout=0.2) is False  # delivered, but on_delivery has not returned
    release.set()
    assert hub.flush(timeout=10) is True
    assert len(results) == 1 and results[0].delivered


def test_flush_does_not_wait_for_paused_emitters(
    hub: WebhooksEmitter, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """flush returns True once running emitters are done, though a paused one holds events."""
    hub.attach("paused", "e", fast(receiver.url + "/paused"))
    hub.attach("running", "e", fast(receiver.url + "/running"))
    hub.pause("paused")
    for n in range(5):
        hub.emit("e", {"seq": n})
    assert hub.flush(timeout=10) is True
    assert seqs([r for r in receiver.requests if on_path("running")(r)]) == list(range(5))
    assert hub.stats("paused").queued == 5


# -- shutdown ---------------------------------------------------------------------------------


def test_shutdown_logs_what_is_left_and_is_safe_twice(
    hub: WebhooksEmitter, held: Held, fast: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    """shutdown delivers what it can within its timeout, logs the count of what is left, stops
    the threads and forgets the emitters; a second call is harmless; the instance is reusable."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    hub.attach("stuck", "e", fast(held.receiver.url, request_timeout=30))
    hub.emit("e", {"seq": 0})
    held.receiver.wait_for(1)
    for n in range(1, 4):
        hub.emit("e", {"seq": n})
    assert hub.shutdown(timeout=0.2) is None
    assert hub.list_emitters() == []
    assert_dropped_logged(caplog.records, "stuck", queued=3, in_flight=1)
    assert hub.shutdown(timeout=0.2) is None
    held.gate.set()
    assert_threads_end("stuck")
    assert seqs(held.receiver.requests) == [0]

    # Emptied, not broken: emit still answers and a new emitter works.
    assert isinstance(hub.emit("e", {}), str)
    hub.attach("stuck", "e", fast(held.receiver.url))
    hub.emit("e", {"seq": "again"})
    assert hub.flush(10)
    assert seqs(held.receiver.requests) == [0, "again"]


def test_shutdown_delivers_what_it_can_in_time(
    hub: WebhooksEmitter, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """shutdown with a healthy receiver delivers everything queued before stopping."""
    hub.attach("s", "e", fast(receiver.url))
    for n in range(30):
        hub.emit("e", {"seq": n})
    hub.shutdown(timeout=10)
    assert seqs(receiver.requests) == list(range(30))
    hub.shutdown()


def test_shutdown_of_a_paused_emitter_logs_its_events(
    hub: WebhooksEmitter,
    receiver: Receiver,
    fast: Callable[..., Config],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """shutdown does not wait for a paused emitter; what it held is dropped and its count logged."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    hub.attach("zzz", "e", fast(receiver.url))
    hub.pause("zzz")
    for n in range(PAUSED_EVENTS):  # many, as in the detach test above
        hub.emit("e", {"seq": n})
    hub.shutdown(timeout=5)
    assert hub.list_emitters() == []
    assert_threads_end("zzz")
    assert receiver.requests == []
    assert_dropped_logged(caplog.records, "zzz", queued=PAUSED_EVENTS, in_flight=0)


# -- logging and callbacks --------------------------------------------------------------------


def test_log_records_carry_emitter_event_and_request_id(
    hub: WebhooksEmitter, fast: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    """Every library log record has emitter_id, event and request_id extras; those about a
    delivery name it, and the give-up is an ERROR with the tries and the last status."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with Receiver(responder=lambda request: 500) as receiver:
        hub.attach("logged", "order.paid", fast(receiver.url, max_attempts=2))
        request_id = hub.emit("order.paid", {"x": 1})
        assert hub.flush(10)
    records = [r for r in caplog.records if r.name.startswith(LOGGER)]
    assert records
    for record in records:
        for extra in ("emitter_id", "event", "request_id"):
            assert hasattr(record, extra), (extra, record.getMessage())
    [gave_up] = [r for r in records if r.levelno == logging.ERROR]
    extras = [getattr(gave_up, name) for name in ("emitter_id", "event", "request_id")]
    assert extras == ["logged", "order.paid", request_id]
    message = gave_up.getMessage()
    assert "logged" in message and "order.paid" in message and request_id in message
    rest = message.replace(request_id, "")
    assert re.search(r"\b2\b", rest) and "500" in rest  # the tries and the last status
    retries = [
        r
        for r in records
        if r.levelno == logging.INFO and getattr(r, "request_id", None) == request_id
    ]
    assert retries, "a failed try that is retried is logged"


def test_on_delivery_raising_is_logged_and_the_emitter_goes_on(
    hub: WebhooksEmitter,
    receiver: Receiver,
    fast: Callable[..., Config],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception from on_delivery is logged with its traceback and does not stop the emitter."""
    calls: list[str] = []

    def explode(result: DeliveryResult) -> None:
        calls.append(result.request_id)
        raise RuntimeError("callback exploded")

    hub.attach("fragile", "e", fast(receiver.url, on_delivery=explode))
    ids = [hub.emit("e", {"seq": n}) for n in range(3)]
    assert hub.flush(10)
    assert seqs(receiver.requests) == [0, 1, 2]
    assert calls == ids
    assert hub.is_started("fragile")
    stats = hub.stats("fragile")
    assert (stats.delivered, stats.given_up, stats.queued) == (3, 0, 0)
    logged = [
        r for r in caplog.records if r.exc_info and getattr(r, "emitter_id", None) == "fragile"
    ]
    assert [r.request_id for r in logged] == ids  # type: ignore[attr-defined]
    assert all(r.levelno >= logging.ERROR for r in logged)
    assert all("callback exploded" in str(r.exc_info[1]) for r in logged if r.exc_info)


# -- concurrency ------------------------------------------------------------------------------


def test_concurrent_emits_lose_nothing_and_keep_per_thread_order(
    hub: WebhooksEmitter, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """8 threads emit 200 events each while another thread attaches and detaches an unrelated
    emitter: every event arrives exactly once, each thread's events in emit order."""
    threads_n, events_n = 8, 200
    hub.attach("load", "load", fast(receiver.url + "/load"))
    start = threading.Barrier(threads_n + 1)
    emitted: dict[int, list[str]] = {}
    failures: list[BaseException] = []
    emitting_done = threading.Event()
    churned = [0]

    def emitter(thread: int) -> None:
        try:
            start.wait(10)
            emitted[thread] = [
                hub.emit("load", {"thread": thread, "seq": n}) for n in range(events_n)
            ]
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    def churn() -> None:
        try:
            start.wait(10)
            while not emitting_done.is_set() or churned[0] == 0:
                name = f"churn-{churned[0]}"
                hub.attach(name, "unrelated", fast(receiver.url + "/churn"))
                hub.emit("unrelated", {"n": churned[0]})
                hub.detach(name)
                churned[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    workers = [threading.Thread(target=emitter, args=(t,)) for t in range(threads_n)]
    churner = threading.Thread(target=churn)
    for worker in [*workers, churner]:
        worker.start()
    for worker in workers:
        worker.join(60)
    emitting_done.set()
    churner.join(60)
    assert not failures, failures
    assert churned[0] > 0

    receiver.wait_for(threads_n * events_n, timeout=60, where=on_path("load"))
    assert hub.flush(30)
    requests = [r for r in receiver.requests if on_path("load")(r)]
    assert len(requests) == threads_n * events_n
    all_ids = [i for ids in emitted.values() for i in ids]
    assert sorted(r.delivery_id or "" for r in requests) == sorted(all_ids)
    for thread in range(threads_n):
        mine = [r for r in requests if r.json()["thread"] == thread]
        assert seqs(mine) == list(range(events_n))
        assert [r.delivery_id for r in mine] == emitted[thread]
    stats = hub.stats("load")
    assert (stats.delivered, stats.dropped, stats.given_up) == (threads_n * events_n, 0, 0)
    assert stats.queued == 0
    assert hub.list_emitters() == ["load"]


# -- DeliveryResult ---------------------------------------------------------------------------


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_delivery_result_of_a_delivered_event(
    hub: WebhooksEmitter, fast: Callable[..., Config]
) -> None:
    """A delivered event's result names emitter, event and request id, has the answer's status,
    no error, one try and a positive elapsed time."""
    results: list[DeliveryResult] = []
    with Receiver(responder=lambda request: 201) as receiver:
        hub.attach("ok", "order.paid", fast(receiver.url, on_delivery=results.append))
        request_id = hub.emit("order.paid", {"x": 1})
        assert hub.flush(10)
    [result] = results
    assert isinstance(result, DeliveryResult)
    fields = attrs.asdict(result)
    elapsed = fields.pop("elapsed")
    assert fields == {
        "emitter_id": "ok",
        "event": "order.paid",
        "request_id": request_id,
        "delivered": True,
        "attempts": 1,
        "status_code": 201,
        "error": None,
    }
    assert isinstance(elapsed, float) and 0 < elapsed < 10


def test_delivery_result_after_retries(hub: WebhooksEmitter, fast: Callable[..., Config]) -> None:
    """An event delivered on its third try counts three attempts and carries no error."""
    results: list[DeliveryResult] = []
    with Receiver(responder=fail_first(2)) as receiver:
        hub.attach("retried", "e", fast(receiver.url, max_attempts=3, on_delivery=results.append))
        hub.emit("e", {})
        assert hub.flush(10)
    [result] = results
    outcome = (result.delivered, result.attempts, result.status_code, result.error)
    assert outcome == (True, 3, 204, None)
    assert hub.stats("retried").retries == 2


def test_delivery_result_of_an_event_given_up_on_http_errors(
    hub: WebhooksEmitter, fast: Callable[..., Config]
) -> None:
    """An event refused with 500 on every try is given up: delivered False, attempts =
    max_attempts, the last status, an error saying why, elapsed > 0."""
    results: list[DeliveryResult] = []
    with Receiver(responder=lambda request: 500) as receiver:
        hub.attach("failing", "e", fast(receiver.url, max_attempts=3, on_delivery=results.append))
        request_id = hub.emit("e", {})
        assert hub.flush(10)
    [result] = results
    assert (result.emitter_id, result.event, result.request_id) == ("failing", "e", request_id)
    assert (result.delivered, result.attempts, result.status_code) == (False, 3, 500)
    assert isinstance(result.error, str) and "500" in result.error
    assert 0 < result.elapsed < 10
    stats = hub.stats("failing")
    assert (stats.given_up, stats.delivered, stats.retries) == (1, 0, 2)


def test_delivery_result_of_an_event_given_up_on_connection_errors(
    hub: WebhooksEmitter, fast: Callable[..., Config], network_fence: Any
) -> None:
    """An event whose receiver refuses connections is given up with no status and an error."""
    results: list[DeliveryResult] = []
    hub.attach(
        "refused",
        "e",
        fast(
            f"http://127.0.0.1:{_closed_port()}/hooks", max_attempts=2, on_delivery=results.append
        ),
    )
    hub.emit("e", {})
    assert hub.flush(10)
    [result] = results
    assert (result.delivered, result.attempts, result.status_code) == (False, 2, None)
    assert isinstance(result.error, str) and result.error
    assert result.elapsed > 0
    assert network_fence.attempts == []


# -- fixes from the contract review -------------------------------------------------------------


def test_every_dropped_event_is_in_a_log_line_by_restart(
    hub: WebhooksEmitter,
    receiver: Receiver,
    fast: Callable[..., Config],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Drop warnings are rate-limited, yet no drop goes unlogged: what the first line did not
    cover is logged when the emitter restarts, so the logged counts add up to stats().dropped."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    hub.attach("tiny", "e", fast(receiver.url, max_queue_size=3))
    hub.pause("tiny")
    for n in range(10):
        hub.emit("e", {"seq": n})
    hub.restart("tiny")
    assert hub.flush(10)
    logged = sum(
        int(re.search(r"dropped (\d+) event", r.getMessage()).group(1))  # type: ignore[union-attr]
        for r in caplog.records
        if getattr(r, "emitter_id", None) == "tiny" and "dropped" in r.getMessage()
    )
    assert logged == hub.stats("tiny").dropped == 7


def test_on_delivery_raising_system_exit_does_not_stop_the_emitter(
    hub: WebhooksEmitter,
    receiver: Receiver,
    fast: Callable[..., Config],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Even SystemExit from on_delivery is logged and swallowed: the thread goes on, flush
    returns True and every event arrives."""
    caplog.set_level(logging.ERROR, logger=LOGGER)

    def leave(result: Any) -> None:
        raise SystemExit(3)

    hub.attach("exits", "e", fast(receiver.url, on_delivery=leave))
    for n in range(3):
        hub.emit("e", {"seq": n})
    assert hub.flush(10)
    assert seqs(receiver.requests) == [0, 1, 2]
    assert hub.stats("exits").delivered == 3
    assert sum("on_delivery" in r.getMessage() for r in caplog.records) == 3


def test_infinite_timeouts_mean_no_deadline(
    hub: WebhooksEmitter, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """flush(inf) and shutdown(inf) wait as long as it takes, like flush(None); they neither
    overflow nor refuse; configure(exit_timeout=inf) is accepted too."""
    hub.attach("inf", "e", fast(receiver.url))
    hub.emit("e", {"seq": 0})
    assert hub.flush(float("inf")) is True
    hub.configure(exit_timeout=float("inf"))
    hub.emit("e", {"seq": 1})
    hub.shutdown(timeout=float("inf"))
    assert seqs(receiver.requests) == [0, 1]
    assert hub.list_emitters() == []


def test_detach_names_emitter_id_when_it_is_not_a_str(hub: WebhooksEmitter) -> None:
    """detach() of an unhashable or non-str id is a TypeError naming emitter_id, not a crash
    from the dict lookup."""
    with pytest.raises(TypeError, match="emitter_id"):
        hub.detach(["x"])  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["memory:", "sqlite"])
def test_connection_needs_a_postgres_store(url: str, tmp_path: Any, receiver: Receiver) -> None:
    """emit(connection=...) on a memory or SQLite store is a ValueError naming the need for
    a PostgresStore, whether or not an emitter is subscribed, and nothing is delivered."""
    store = f"sqlite:///{tmp_path}/s.db" if url == "sqlite" else url
    instance = WebhooksEmitter(store=store)
    try:
        with pytest.raises(ValueError, match="connection= needs a PostgresStore"):
            instance.emit("nobody.listens", {}, connection=object())
        instance.attach("one", "e", Config(receiver.url))
        with pytest.raises(ValueError, match="connection= needs a PostgresStore"):
            instance.emit("e", {}, connection=object())
        assert instance.flush(5)
        assert receiver.requests == []
    finally:
        instance.shutdown(timeout=2)
