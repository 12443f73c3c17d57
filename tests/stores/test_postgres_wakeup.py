"""The PostgreSQL store's wake-up: fewer notifications, and delivery still within 0.5 s of
the commit (CONTRACT section 11).

An emit with its own transaction notifies only when its process sent no notification in the
last ``NOTIFY_EVERY`` seconds (NOTIFY serialises committers on a database-wide lock); the
listener answers "maybe changed" again at the delays of ``RECHECKS`` after each
notification, so an emit that skipped its own is found by one of those looks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Callable

import psycopg
import pytest
from store_contract import closing_factory, message

from webhooks_emitter.stores import _pg_notify
from webhooks_emitter.stores import postgres as postgres_module
from webhooks_emitter.stores._base import Target
from webhooks_emitter.stores.postgres import PostgresStore

#: The contract's bound from a commit to the start of its delivery.
DELIVERY_BOUND = 0.5


@pytest.fixture
def stores(pg_store_url: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores over the test's database: a listener (a worker) and an emitter (a web
    process)."""
    for make in closing_factory(lambda: PostgresStore(pg_store_url)):
        yield make(), make()


class Counter:
    """A raw LISTEN on the store's channel that counts the notifications sent."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute('LISTEN "webhooks_emitter.changed"')

    def count(self) -> int:
        """Notifications received so far (waiting 0.3 s for any still on their way)."""
        return len(list(self.conn.notifies(timeout=0.3)))


def settle_listener(store: PostgresStore) -> None:
    """Bring ``store``'s listener to rest: connected, its rechecks spent, nothing pending."""
    assert store.wait_for_change(0) is True  # connects: "maybe"
    for _ in _pg_notify.RECHECKS:
        assert store.wait_for_change(5.0) is True  # the rechecks after connecting
    assert store.wait_for_change(0) is False


def test_a_burst_of_emits_sends_one_notification(
    stores: tuple[PostgresStore, PostgresStore], pg_store_url: str
) -> None:
    """Twenty emits in a row from one process: one notification, not twenty."""
    listener, emitter = stores
    emitter.open()
    counter = Counter(pg_store_url)
    try:
        started = time.monotonic()
        for n in range(20):
            emitter.append(message(n), [Target("e1", 100)])
        elapsed = time.monotonic() - started
        sent = counter.count()
    finally:
        counter.conn.close()
    # At most one per NOTIFY_EVERY (plus the first), however long the burst took.
    assert 1 <= sent <= 1 + int(elapsed / _pg_notify.NOTIFY_EVERY), (sent, elapsed)
    assert sent < 20


def test_an_emit_that_skipped_its_notification_is_found_within_half_a_second(
    stores: tuple[PostgresStore, PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiting worker is woken by a first emit and polls; a second emit right after it
    sends no notification (made certain here by a long NOTIFY_EVERY): the worker still
    looks again, and finds it, within 0.5 s of its commit."""
    listener, emitter = stores
    settle_listener(listener)
    emitter.append(message(0), [Target("e1", 100)])
    assert listener.wait_for_change(5.0) is True
    assert listener.poll()[0].queued == 1  # the worker's poll after the wake-up
    monkeypatch.setattr(postgres_module, "NOTIFY_EVERY", 3600.0)
    emitter.append(message(1), [Target("e1", 100)])  # silent
    committed = time.monotonic()
    while True:
        assert listener.wait_for_change(DELIVERY_BOUND) is True, "not looked at again"
        if listener.poll()[0].queued == 2:
            break
    assert time.monotonic() - committed < DELIVERY_BOUND


def test_each_transaction_through_a_callers_connection_notifies(
    stores: tuple[PostgresStore, PostgresStore], pg_store_url: str
) -> None:
    """Emits through a caller's connection notify once per transaction, at its commit,
    however close together: a commit can come long after its emit."""
    listener, emitter = stores
    emitter.open()
    counter = Counter(pg_store_url)
    try:
        with psycopg.connect(pg_store_url) as conn:
            for transaction in range(3):
                for n in range(5):
                    emitter.append(message(10 * transaction + n), [Target("e1", 100)],
                                   connection=conn)
                conn.commit()
        assert counter.count() == 3
    finally:
        counter.conn.close()


def test_a_wait_with_nothing_new_stays_quiet(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    """With nothing emitted, a waiting worker at rest is not woken (the rechecks follow a
    notification or a reconnection only)."""
    listener, _ = stores
    settle_listener(listener)
    started = time.monotonic()
    assert listener.wait_for_change(0.6) is False
    assert time.monotonic() - started >= 0.6


def test_back_to_back_emits_are_delivered_within_half_a_second(
    pg_store_url: str, fast: Callable[..., Any]
) -> None:
    """A deliver=False instance emits pairs of events back to back (the second of each
    pair skips its notification), five times; a delivering instance over the same database
    sends every event less than 0.5 s after its emit returned."""
    from webhooks_emitter import WebhooksEmitter
    from webhooks_emitter.testing import Receiver

    web = WebhooksEmitter(store=PostgresStore(pg_store_url), deliver=False)
    worker = WebhooksEmitter(store=PostgresStore(pg_store_url), exit_timeout=1.0)
    try:
        with Receiver() as receiver:
            config = fast(receiver.url)
            web.attach("e1", "order.paid", config)
            worker.attach("e1", "order.paid", config)
            assert worker.flush(10)
            committed = {}
            for pair in range(5):
                for n in (2 * pair, 2 * pair + 1):
                    web.emit("order.paid", {"n": n})
                    committed[n] = time.monotonic()
                receiver.wait_for(2 * pair + 2)
            late = {hook.json()["n"]: hook.received_at - committed[hook.json()["n"]]
                    for hook in receiver.requests}
            print(f"\nemit to arrival, worst: {max(late.values()):.3f} s")
            assert sorted(late) == list(range(10))
            assert max(late.values()) < DELIVERY_BOUND, late
    finally:
        web.shutdown(timeout=2.0)
        worker.shutdown(timeout=2.0)
