"""``PostgresStore.settle``: tries' outcomes and the next try's start in ONE transaction.

The engine records event N's outcome and event N+1's try together (one commit per delivery
instead of two); with ``max_in_flight`` above 1, outcomes that end together share it. These
tests show it is one transaction (all rows written carry one transaction id, and a failure
in any part writes nothing), with the same guards as the single calls.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from store_contract import LEASE, OTHER, closing_factory, fill, take

from webhooks_emitter.stores._base import StoreError
from webhooks_emitter.stores.postgres import PostgresStore


@pytest.fixture
def store(pg_store_url: str) -> Iterator[PostgresStore]:
    """A fresh PostgresStore in a fresh database."""
    for made in closing_factory(lambda: PostgresStore(pg_store_url)):
        yield made()


def sql(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on its own autocommit connection; its rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def rows(url: str) -> dict[str, tuple[Any, ...]]:
    """request_id -> (attempts, next_at, status_code, error, failed_at is set, xmin)."""
    return {
        request_id: tuple(rest)
        for request_id, *rest in sql(
            url,
            "SELECT request_id, attempts, next_at, status_code, error, failed_at IS NOT NULL, "
            "xmin::text FROM webhooks_emitter.events",
        )
    }


def test_outcomes_and_the_next_try_are_one_transaction(
    store: PostgresStore, pg_store_url: str
) -> None:
    """finish, retry_later and give_up of three events and the start of a fourth's try:
    each recorded as its single call would, all by one transaction (one xmin on every
    row written, the emitter's last try included)."""
    fill(store, "e1", 5)
    done, retried, dropped, following, _ = take(store, "e1")
    started = time.time()
    for event in (done, retried, dropped):
        event.attempts = 1
        assert store.begin_try(LEASE, event, started)
    retried.next_at, retried.status_code, retried.error = started + 60, 503, "HTTP 503"
    dropped.status_code, dropped.error = 400, "HTTP 400"
    following.attempts, following.next_at = 1, started + 5.0
    recorded, began = store.settle(
        LEASE,
        [("finish", done), ("retry_later", retried), ("give_up", dropped)],
        begin=following,
        now=started + 1,
    )
    assert (recorded, began) == ([True, True, True], True)
    after = rows(pg_store_url)
    assert "req-0" not in after
    assert after["req-1"][:5] == (1, started + 60, 503, "HTTP 503", False)
    assert after["req-2"][:5] == (1, 0.0, 400, "HTTP 400", True)
    assert after["req-3"][:5] == (1, started + 5.0, None, None, False)
    assert store.state("e1").last_try_at == started + 1
    emitter_xmin = sql(pg_store_url, "SELECT xmin::text FROM webhooks_emitter.emitters "
                       "WHERE emitter_id = 'e1'")[0][0]
    assert {after[r][5] for r in ("req-1", "req-2", "req-3")} == {emitter_xmin}
    assert after["req-4"][5] != emitter_xmin  # untouched: still its emit's transaction


def test_a_failing_part_writes_nothing(store: PostgresStore, pg_store_url: str) -> None:
    """One outcome the database refuses (a status that does not fit its column): a
    StoreError, and neither the other outcome nor the next try is recorded."""
    fill(store, "e1", 3)
    done, refused, following = take(store, "e1")
    done.attempts = refused.attempts = following.attempts = 1
    refused.status_code = 2**40
    before = rows(pg_store_url)
    with pytest.raises(StoreError, match="recording the tries failed"):
        store.settle(LEASE, [("finish", done), ("retry_later", refused)], begin=following,
                     now=time.time())
    assert rows(pg_store_url) == before
    assert store.state("e1").last_try_at == 0.0
    # The store's connection is usable afterwards.
    assert store.settle(LEASE, [("finish", done)]) == ([True], None)


def test_without_the_lease_nothing_is_recorded(store: PostgresStore, pg_store_url: str) -> None:
    """Another process took the lease: every outcome and the try answer False and change
    nothing (the same guards as the single calls)."""
    fill(store, "e1", 2)
    done, following = take(store, "e1")
    store.release("e1", LEASE)
    assert store.acquire("e1", OTHER)
    done.attempts = following.attempts = 1
    before = rows(pg_store_url)
    assert store.settle(LEASE, [("finish", done)], begin=following, now=time.time()) == (
        [False], False)
    assert rows(pg_store_url) == before


def test_a_paused_emitter_records_the_outcome_but_starts_no_try(
    store: PostgresStore, pg_store_url: str
) -> None:
    """Paused between two tries: the ended try's outcome is recorded, the next try is
    refused (False) and not counted."""
    fill(store, "e1", 2)
    done, following = take(store, "e1")
    store.set_paused("e1", True)
    following.attempts = 1
    assert store.settle(LEASE, [("finish", done)], begin=following, now=time.time()) == (
        [True], False)
    assert rows(pg_store_url)["req-1"][0] == 0


def test_an_unknown_kind_is_a_value_error_naming_it(store: PostgresStore) -> None:
    """A kind other than retry_later, finish and give_up: ValueError naming it, nothing
    written; no outcome and no try: nothing to do."""
    fill(store, "e1", 1)
    (event,) = take(store, "e1")
    with pytest.raises(ValueError, match="'delivered'"):
        store.settle(LEASE, [("finish", event), ("delivered", event)])
    assert store.state("e1").queued == 1
    assert store.settle(LEASE, []) == ([], None)


def test_settle_only_begins_a_try(store: PostgresStore, pg_store_url: str) -> None:
    """No outcome, a try to begin: recorded as begin_try would (attempts and next_at)."""
    fill(store, "e1", 1)
    (event,) = take(store, "e1")
    event.attempts, event.next_at = 1, time.time() + 3
    assert store.settle(LEASE, [], begin=event, now=time.time()) == ([], True)
    assert rows(pg_store_url)["req-0"][:2] == (1, event.next_at)


def test_many_outcomes_in_one_call(store: PostgresStore) -> None:
    """Fifty finished events settled at once (max_in_flight above 1): all deleted."""
    count = 50
    fill(store, "e1", count)
    events = take(store, "e1", limit=count)
    assert store.settle(LEASE, [("finish", e) for e in events]) == ([True] * count, None)
    assert store.state("e1").queued == 0


def test_single_delivery_state_writes_commit_asynchronously_and_only_themselves(
    store: PostgresStore,
) -> None:
    """begin_try and finish, called alone, set synchronous_commit off for their own
    transaction (the statement's RETURNING says so for the row written), and the setting
    ends with it: the connection's next transaction (an emit) commits durably again."""
    fill(store, "e1", 1)
    (event,) = take(store, "e1")
    event.attempts = 1
    # The tests' server never waits for its disk: make this session durable first. One
    # thread, so the pool hands out this same connection for the calls below.
    store._run("durable", lambda conn: conn.execute("SET synchronous_commit = on"))
    began = store._query("begin_try", store._params("begin_try", LEASE, event, time.time()))
    assert began == [("off",)]
    assert store._query("finish", store._params("finish", LEASE, event)) == [("off",)]
    setting = store._run(
        "show", lambda conn: conn.execute("SHOW synchronous_commit").fetchone())
    assert setting == ("on",)
