"""The Prometheus collector (CONTRACT section 15): the series of the table, read from a
private ``CollectorRegistry`` after real deliveries to a loopback receiver, the store's
gauges in one cached query, ``per_emitter=False`` and ``unregister``.

The tests marked "engine" in their docstring need the engine to call the ``_observe`` hooks
(the ENGINE branch); the others need only what ``emit`` and the stores already do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, Callable, Optional

import pytest
from faultservers import HANG, FaultServer, closed_port, serve
from prometheus_client import CollectorRegistry, generate_latest

from webhooks_emitter import Config, WebhooksEmitter, _observe
from webhooks_emitter.contrib import prometheus
from webhooks_emitter.stores import MemoryStore
from webhooks_emitter.stores._base import EmitterState, StoredEvent
from webhooks_emitter.testing import Receiver, fail_first

WAIT = 10.0


def value(registry: CollectorRegistry, name: str, **labels: str) -> Optional[float]:
    """One sample of ``registry`` now (None when there is no such series)."""
    return registry.get_sample_value(name, labels)


def wait_value(registry: CollectorRegistry, name: str, expected: float, **labels: str) -> None:
    """Wait until the sample reaches ``expected`` (the collector reads at scrape time)."""
    deadline = time.monotonic() + WAIT
    while True:
        got = value(registry, name, **labels)
        if got == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}{labels} is {got}, expected {expected}")
        time.sleep(0.005)


@pytest.fixture
def registry() -> CollectorRegistry:
    """A private registry, so that tests never see each other's collectors."""
    return CollectorRegistry()


@pytest.fixture
def collect(
    hub: WebhooksEmitter, registry: CollectorRegistry
) -> Iterator[prometheus.WebhooksCollector]:
    """The test's hub reported on the private registry; unregistered afterwards."""
    collector = prometheus.register(hub, registry=registry)
    yield collector
    collector.unregister()


@pytest.fixture
def fresh_gauges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every scrape asks the store again (no one-second cache), so a test reads what just
    happened without waiting."""
    monkeypatch.setattr(_observe, "STATES_TTL", 0.0)


def stored(emitter_id: str, request_id: str = "r-1") -> StoredEvent:
    return StoredEvent(1, emitter_id, "order.paid", request_id, b"{}", emitted_at=time.time())


# -- read at collection time, without the engine's hooks ---------------------------------------


def test_the_store_gauges_show_queued_paused_and_the_oldest_age(
    hub: WebhooksEmitter, registry: CollectorRegistry, collect: Any, fresh_gauges: None
) -> None:
    """A paused emitter with two queued events: queued 2, paused 1, an oldest age above 0;
    a running emitter with nothing queued: 0 for each, its series present."""
    hub.attach("billing", "order.paid", Config("http://127.0.0.1:9/hooks"))
    hub.attach("crm", "user.created", Config("http://127.0.0.1:9/hooks"))
    hub.pause("billing")
    hub.emit("order.paid", {"n": 1})
    hub.emit("order.paid", {"n": 2})
    assert value(registry, "webhooks_emitter_queued", emitter="billing") == 2
    assert value(registry, "webhooks_emitter_paused", emitter="billing") == 1
    age = value(registry, "webhooks_emitter_oldest_queued_age_seconds", emitter="billing")
    assert age is not None and age > 0
    assert value(registry, "webhooks_emitter_queued", emitter="crm") == 0
    assert value(registry, "webhooks_emitter_paused", emitter="crm") == 0
    assert value(registry, "webhooks_emitter_oldest_queued_age_seconds", emitter="crm") == 0
    assert value(registry, "webhooks_emitter_in_flight", emitter="crm") == 0


def test_given_up_events_show_in_the_failed_gauge(
    hub: WebhooksEmitter,
    registry: CollectorRegistry,
    collect: Any,
    fresh_gauges: None,
    fast: Callable[..., Config],
) -> None:
    """An event given up after one try is a dead letter: ``failed`` 1, ``queued`` 0."""
    with Receiver(responder=lambda request: 500) as receiver:
        hub.attach("billing", "order.paid", fast(receiver.url, max_attempts=1))
        hub.emit("order.paid", {})
        assert hub.flush(WAIT)
    assert value(registry, "webhooks_emitter_failed", emitter="billing") == 1
    assert value(registry, "webhooks_emitter_queued", emitter="billing") == 0


def test_events_refused_by_a_full_queue_are_counted_as_dropped(
    hub: WebhooksEmitter, registry: CollectorRegistry, collect: Any
) -> None:
    """``max_queue_size=1`` on a paused emitter: of three events two are dropped, and the
    deliveries counter says so, read from the emitter's own counter."""
    hub.attach("billing", "order.paid", Config("http://127.0.0.1:9/hooks", max_queue_size=1))
    hub.pause("billing")
    for n in range(3):
        hub.emit("order.paid", {"n": n})
    assert (
        value(registry, "webhooks_emitter_deliveries_total", emitter="billing", outcome="dropped")
        == 2
    )
    assert (
        value(registry, "webhooks_emitter_deliveries_total", emitter="billing", outcome="delivered")
        == 0
    )


def test_events_left_at_detach_with_the_memory_store_are_counted_as_dropped(
    hub: WebhooksEmitter, registry: CollectorRegistry, collect: Any
) -> None:
    """The memory store loses a detached emitter's queue: the counter keeps those two
    events after the emitter is gone."""
    hub.attach("billing", "order.paid", Config("http://127.0.0.1:9/hooks"))
    hub.pause("billing")
    assert (
        value(registry, "webhooks_emitter_deliveries_total", emitter="billing", outcome="dropped")
        == 0
    )
    hub.emit("order.paid", {"n": 1})
    hub.emit("order.paid", {"n": 2})
    hub.detach("billing")
    assert (
        value(registry, "webhooks_emitter_deliveries_total", emitter="billing", outcome="dropped")
        == 2
    )
    # And it stays: a counter never goes back.
    assert (
        value(registry, "webhooks_emitter_deliveries_total", emitter="billing", outcome="dropped")
        == 2
    )


def test_what_was_dropped_before_register_is_not_counted(hub: WebhooksEmitter) -> None:
    """Counters start at register: drops that happened before belong to no scrape."""
    hub.attach("billing", "order.paid", Config("http://127.0.0.1:9/hooks", max_queue_size=1))
    hub.pause("billing")
    hub.emit("order.paid", {"n": 1})
    hub.emit("order.paid", {"n": 2})  # dropped before register
    registry = CollectorRegistry()
    collector = prometheus.register(hub, registry=registry)
    try:
        hub.emit("order.paid", {"n": 3})  # dropped after
        assert (
            value(
                registry, "webhooks_emitter_deliveries_total", emitter="billing", outcome="dropped"
            )
            == 1
        )
    finally:
        collector.unregister()


class CountingStore(MemoryStore):
    """A memory store that counts the ``states()`` queries made of it."""

    def __init__(self) -> None:
        super().__init__()
        self.queries = 0

    def states(self) -> list[EmitterState]:
        self.queries += 1
        return super().states()


def test_gauges_of_many_emitters_cost_one_query_reused_within_the_cache_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fifty emitters, two scrapes within the cache time: one ``states()`` query in all."""
    monkeypatch.setattr(_observe, "STATES_TTL", 3600.0)
    store = CountingStore()
    hub = WebhooksEmitter(store=store)
    registry = CollectorRegistry()
    collector = prometheus.register(hub, registry=registry)
    try:
        for n in range(50):
            hub.attach(f"e{n}", "order.paid", Config("http://127.0.0.1:9/hooks"))
        generate_latest(registry)
        generate_latest(registry)
        assert store.queries == 1
        assert value(registry, "webhooks_emitter_queued", emitter="e49") == 0
    finally:
        collector.unregister()
        hub.shutdown(1)


def test_after_the_cache_time_a_scrape_asks_the_store_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no cache time left, each scrape makes one query, whatever the emitter count."""
    monkeypatch.setattr(_observe, "STATES_TTL", 0.0)
    store = CountingStore()
    hub = WebhooksEmitter(store=store)
    registry = CollectorRegistry()
    collector = prometheus.register(hub, registry=registry)
    try:
        for n in range(5):
            hub.attach(f"e{n}", "order.paid", Config("http://127.0.0.1:9/hooks"))
        generate_latest(registry)
        generate_latest(registry)
        assert store.queries == 2
    finally:
        collector.unregister()
        hub.shutdown(1)


def test_per_emitter_false_reports_every_series_under_star(
    hub: WebhooksEmitter, registry: CollectorRegistry, fresh_gauges: None
) -> None:
    """Two paused emitters: queued adds up, oldest age is the larger one, paused counts
    them; tries add up; no series names an emitter id."""
    collector = prometheus.register(hub, registry=registry, per_emitter=False)
    try:
        hub.attach("billing", "order.paid", Config("http://127.0.0.1:9/hooks"))
        hub.attach("crm", "order.paid", Config("http://127.0.0.1:9/hooks"))
        hub.attach("idle", "nothing", Config("http://127.0.0.1:9/hooks"))
        hub.pause("billing")
        hub.emit("order.paid", {"n": 1}, to="billing")
        hub.pause("crm")
        hub.emit("order.paid", {"n": 2})
        for emitter_id in ("billing", "crm"):
            scope = collector._tally.try_started(emitter_id, stored(emitter_id), 1, "http://x/")
            collector._tally.try_ended(
                scope, emitter_id, stored(emitter_id), 1, "5xx", 500, 0.01, "HTTP 500"
            )
        assert value(registry, "webhooks_emitter_queued", emitter="*") == 3
        assert value(registry, "webhooks_emitter_paused", emitter="*") == 2
        billing_age = time.time() - hub.store.state("billing").oldest_queued_at  # type: ignore[operator]
        oldest = value(registry, "webhooks_emitter_oldest_queued_age_seconds", emitter="*")
        assert oldest is not None and oldest >= billing_age - 0.5
        assert value(registry, "webhooks_emitter_tries_total", emitter="*", result="5xx") == 2
        assert (
            value(registry, "webhooks_emitter_try_duration_seconds_count", emitter="*", code="500")
            == 2
        )
        text = generate_latest(registry).decode()
        assert 'emitter="billing"' not in text and 'emitter="crm"' not in text
    finally:
        collector.unregister()


def test_one_instance_is_reported_and_not_another(
    hub: WebhooksEmitter, registry: CollectorRegistry, collect: Any, fresh_gauges: None
) -> None:
    """``register(hub)`` reports hub's emitters only: another instance's emitter (and its
    tries) is not in the registry."""
    other = WebhooksEmitter()
    try:
        other.attach("elsewhere", "order.paid", Config("http://127.0.0.1:9/hooks"))
        hub.attach("billing", "order.paid", Config("http://127.0.0.1:9/hooks"))
        for observer in _observe.OBSERVERS:
            observer.try_ended(None, "elsewhere", stored("elsewhere"), 1, "2xx", 204, 0.01, None)
        text = generate_latest(registry).decode()
        assert 'emitter="billing"' in text
        assert "elsewhere" not in text
    finally:
        other.shutdown(1)


def test_another_instance_with_the_same_emitter_id_is_not_counted(
    hub: WebhooksEmitter, registry: CollectorRegistry, collect: Any, fast: Callable[..., Config]
) -> None:
    """Engine. Two instances attach the same id (as two Flask apps with one settings file
    do): ``register(hub)`` counts hub's tries and outcomes only, not the other's 500s."""
    other = WebhooksEmitter()
    try:
        with Receiver() as good, Receiver(responder=lambda request: 500) as bad:
            other.attach("billing", "order.paid", fast(bad.url, max_attempts=1))
            hub.attach("billing", "order.paid", fast(good.url))
            other.emit("order.paid", {"n": 1})
            other.emit("order.paid", {"n": 2})
            hub.emit("order.paid", {"n": 3})
            assert other.flush(WAIT) and hub.flush(WAIT)
            assert len(bad.requests) == 2 and len(good.requests) == 1
        wait_value(
            registry, "webhooks_emitter_deliveries_total", 1, emitter="billing",
            outcome="delivered",
        )
        assert not value(
            registry, "webhooks_emitter_tries_total", emitter="billing", result="5xx"
        )
        assert not value(
            registry, "webhooks_emitter_deliveries_total", emitter="billing", outcome="given_up"
        )
        assert value(registry, "webhooks_emitter_tries_total", emitter="billing", result="2xx") == 1
    finally:
        other.shutdown(1)


def test_register_without_an_instance_reports_instances_made_later(
    registry: CollectorRegistry,
) -> None:
    """``register()`` covers every instance of the process, one made after it included."""
    collector = prometheus.register(registry=registry)
    later = WebhooksEmitter()
    try:
        later.attach("made-later", "order.paid", Config("http://127.0.0.1:9/hooks"))
        assert value(registry, "webhooks_emitter_queued", emitter="made-later") == 0
    finally:
        collector.unregister()
        later.shutdown(1)


def test_unregister_takes_the_series_off_and_stops_the_hooks(
    hub: WebhooksEmitter, registry: CollectorRegistry
) -> None:
    """After ``unregister`` the registry has none of the series and the tally is no
    longer an observer; a second call is harmless."""
    collector = prometheus.register(hub, registry=registry)
    hub.attach("billing", "order.paid", Config("http://127.0.0.1:9/hooks"))
    assert collector._tally in _observe.OBSERVERS
    assert value(registry, "webhooks_emitter_queued", emitter="billing") == 0
    collector.unregister()
    collector.unregister()
    assert collector._tally not in _observe.OBSERVERS
    assert "webhooks_emitter" not in generate_latest(registry).decode()


def test_register_refuses_bad_arguments_and_a_second_registration() -> None:
    """TypeError names the argument; the same registry twice is a ValueError from
    prometheus_client (the names are taken), and the failed call leaves no observer."""
    registry = CollectorRegistry()
    with pytest.raises(TypeError, match="instance"):
        prometheus.register("hub", registry=registry)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="registry"):
        prometheus.register(registry={})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="per_emitter"):
        prometheus.register(registry=registry, per_emitter="no")  # type: ignore[arg-type]
    first = prometheus.register(registry=registry)
    before = _observe.OBSERVERS
    try:
        with pytest.raises(ValueError):
            prometheus.register(registry=registry)
        assert _observe.OBSERVERS == before
    finally:
        first.unregister()


# -- real deliveries (engine: the hooks are called per try) ----------------------------------------


def test_a_retried_delivery_counts_its_tries_durations_and_outcome(
    hub: WebhooksEmitter, registry: CollectorRegistry, collect: Any, fast: Callable[..., Config]
) -> None:
    """Engine. A 503 then a 204: tries 5xx 1 and 2xx 1, a duration for each with its code,
    one delivery and one emit-to-delivered duration."""
    with Receiver(responder=fail_first(1, 503)) as receiver:
        hub.attach("billing", "order.paid", fast(receiver.url))
        hub.emit("order.paid", {"n": 1})
        assert hub.flush(WAIT)
    wait_value(
        registry, "webhooks_emitter_deliveries_total", 1, emitter="billing", outcome="delivered"
    )
    assert value(registry, "webhooks_emitter_tries_total", emitter="billing", result="5xx") == 1
    assert value(registry, "webhooks_emitter_tries_total", emitter="billing", result="2xx") == 1
    assert (
        value(
            registry, "webhooks_emitter_try_duration_seconds_count", emitter="billing", code="503"
        )
        == 1
    )
    assert (
        value(
            registry, "webhooks_emitter_try_duration_seconds_count", emitter="billing", code="204"
        )
        == 1
    )
    assert (
        value(
            registry,
            "webhooks_emitter_delivery_duration_seconds_count",
            emitter="billing",
            outcome="delivered",
        )
        == 1
    )
    assert (
        value(registry, "webhooks_emitter_deliveries_total", emitter="billing", outcome="given_up")
        == 0
    )


def test_tries_without_an_answer_are_counted_by_result(
    hub: WebhooksEmitter, registry: CollectorRegistry, collect: Any, fast: Callable[..., Config]
) -> None:
    """Engine. A refused connection is ``connection_error``, a receiver that never answers
    is ``timeout``, and a blocked address is ``refused`` with no duration; each given up."""
    with closed_port() as port, FaultServer(serve(lambda request: HANG)) as hanging:
        hub.attach("down", "a", fast(f"http://127.0.0.1:{port}/hooks", max_attempts=1))
        hub.attach("slow", "b", fast(hanging.url, max_attempts=1, request_timeout=0.2))
        hub.attach("blocked", "c", fast("http://127.0.0.1:9/hooks", block_private_networks=True))
        for event in ("a", "b", "c"):
            hub.emit(event, {})
        assert hub.flush(WAIT)
    for emitter_id in ("down", "slow", "blocked"):
        wait_value(
            registry, "webhooks_emitter_deliveries_total", 1, emitter=emitter_id, outcome="given_up"
        )
    assert (
        value(registry, "webhooks_emitter_tries_total", emitter="down", result="connection_error")
        == 1
    )
    assert value(registry, "webhooks_emitter_tries_total", emitter="slow", result="timeout") == 1
    assert value(registry, "webhooks_emitter_tries_total", emitter="blocked", result="refused") == 1
    assert (
        value(registry, "webhooks_emitter_try_duration_seconds_count", emitter="down", code="") == 1
    )
    assert (
        value(registry, "webhooks_emitter_try_duration_seconds_count", emitter="blocked", code="")
        is None
    )


def test_in_flight_counts_a_try_on_the_wire(
    hub: WebhooksEmitter, registry: CollectorRegistry, collect: Any, fast: Callable[..., Config]
) -> None:
    """Engine. While the receiver holds the answer, ``in_flight`` is 1; after it, 0."""
    release = threading.Event()
    arrived = threading.Event()

    def respond(request: Any) -> int:
        arrived.set()
        release.wait(WAIT)
        return 204

    with Receiver(responder=respond) as receiver:
        hub.attach("billing", "order.paid", fast(receiver.url))
        hub.emit("order.paid", {})
        assert arrived.wait(WAIT)
        wait_value(registry, "webhooks_emitter_in_flight", 1, emitter="billing")
        release.set()
        assert hub.flush(WAIT)
    wait_value(registry, "webhooks_emitter_in_flight", 0, emitter="billing")


def test_a_try_on_the_wire_when_its_emitter_is_detached_still_leaves_in_flight(
    hub: WebhooksEmitter, registry: CollectorRegistry, collect: Any
) -> None:
    """The try is counted under the label it started with: ending it after a detach takes
    ``in_flight`` back to 0 and counts it in ``tries`` (hooks called as the engine does)."""
    hub.attach("billing", "order.paid", Config("http://127.0.0.1:9/hooks"))
    tally = collect._tally
    scope = tally.try_started("billing", stored("billing"), 1, "http://127.0.0.1:9/hooks")
    assert value(registry, "webhooks_emitter_in_flight", emitter="billing") == 1
    hub.detach("billing")
    tally.try_ended(scope, "billing", stored("billing"), 1, "2xx", 204, 0.01, None)
    assert value(registry, "webhooks_emitter_in_flight", emitter="billing") == 0
    assert value(registry, "webhooks_emitter_tries_total", emitter="billing", result="2xx") == 1


def test_the_store_gauges_of_a_postgresql_store_are_its_view_for_every_process(
    pg_store_url: str, registry: CollectorRegistry, fresh_gauges: None
) -> None:
    """A web process (``deliver=False``) queues two events over PostgreSQL; the worker
    process's collector (here another instance over the same database) reports them, and
    the pause made by the web process."""
    web = WebhooksEmitter(store=pg_store_url, deliver=False)
    worker = WebhooksEmitter(store=pg_store_url)
    collector = prometheus.register(worker, registry=registry)
    try:
        for instance in (web, worker):
            instance.attach("billing", "order.paid", Config("http://127.0.0.1:9/hooks"))
        web.pause("billing")
        web.emit("order.paid", {"n": 1})
        web.emit("order.paid", {"n": 2})
        assert value(registry, "webhooks_emitter_queued", emitter="billing") == 2
        assert value(registry, "webhooks_emitter_paused", emitter="billing") == 1
        age = value(registry, "webhooks_emitter_oldest_queued_age_seconds", emitter="billing")
        assert age is not None and age > 0
    finally:
        collector.unregister()
        worker.shutdown(1)
        web.shutdown(0)
