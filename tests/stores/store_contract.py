"""What every store must do: the semantics of the Store interface (stores/_base.py).

A test module subclasses one of these classes and provides the fixtures:

``store``
    A fresh, empty store.
``make_store`` (durable stores only)
    ``make_store(**options)`` opens another store over the same storage as ``store``, as
    another process would, with constructor options such as ``lease_timeout``.

:class:`StoreContract` holds what every store does, :class:`DurableStoreContract` adds what
only stores shared by several processes can do (leases that exclude, expire and move). The
memory store grants every lease, so it subclasses the first only and never collects the
lease tests. ``durable`` says which a class checks; a test asserts the store agrees.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Callable, ClassVar, TypeVar

import pytest

from webhooks_emitter.stores._base import (
    EmitterState,
    Lease,
    Message,
    Store,
    StoredEvent,
    Target,
)

LEASE = Lease(holder="host-a:1001", token="a" * 32)
OTHER = Lease(holder="host-b:2002", token="b" * 32)


def message(n: int, event: str = "order.created", key: Any = None) -> Message:
    """The ``n``-th test message: request id ``req-<n>``, a small JSON body."""
    return Message(event, f"req-{n}", b'{"n":%d}' % n, key)


def fill(store: Store, emitter_id: str, count: int, first: int = 0, size: int = 1000) -> None:
    """Append ``count`` messages to ``emitter_id`` (request ids from ``req-<first>``)."""
    for n in range(first, first + count):
        assert store.append(message(n), [Target(emitter_id, size)]) == [True]


def take(store: Store, emitter_id: str, limit: int = 100, lease: Lease = LEASE) -> list[Any]:
    """Acquire ``emitter_id`` for ``lease`` and fetch up to ``limit`` of its events."""
    assert store.acquire(emitter_id, lease)
    return store.fetch(emitter_id, lease, limit)


def refetch(store: Store, emitter_id: str, lease: Lease = LEASE) -> list[StoredEvent]:
    """Let go of the lease and take it again: the events as the store now holds them."""
    store.release(emitter_id, lease)
    return take(store, emitter_id, lease=lease)


def request_ids(events: Sequence[Any]) -> list[str]:
    """The request ids of ``events`` (stored or failed), in order."""
    return [event.request_id for event in events]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Return once ``predicate()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


StoreT = TypeVar("StoreT", bound=Store)


def closing_factory(open_store: Callable[..., StoreT]) -> Iterator[Callable[..., StoreT]]:
    """For a ``make_store`` fixture: yields ``make(**options)``, which opens a store with
    ``open_store(**options)``; every store it opened is closed after the test."""
    made: list[StoreT] = []

    def make(**options: Any) -> StoreT:
        store = open_store(**options)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()

class StoreContract:
    """The semantics every store keeps, memory and durable alike."""

    #: Whether the store under test outlives its process (and shares leases).
    durable: ClassVar[bool] = False

    def test_durable_as_declared(self, store: Store) -> None:
        """The store says it is durable exactly when the contract class checks a durable one."""
        assert type(store).durable is self.durable

    # -- append -------------------------------------------------------------------------

    def test_append_stores_one_event_per_target(self, store: Store) -> None:
        """One message for two targets: each stores its own event, with the message's fields."""
        before = time.time()
        accepted = store.append(message(7, key="order-7"), [Target("e1", 10), Target("e2", 10)])
        after = time.time()
        assert accepted == [True, True]
        for emitter_id in ("e1", "e2"):
            assert store.state(emitter_id).queued == 1
            (event,) = take(store, emitter_id)
            assert event.emitter_id == emitter_id
            assert (event.event, event.request_id, event.body) == (
                "order.created",
                "req-7",
                b'{"n":7}',
            )
            assert event.ordering_key == "order-7"
            assert (event.attempts, event.next_at) == (0, 0.0)
            assert event.status_code is None and event.error is None
            assert before - 1 <= event.emitted_at <= after + 1

    def test_append_to_no_target_stores_nothing(self, store: Store) -> None:
        """No target: nothing stored, an empty answer."""
        assert store.append(message(1), []) == []
        assert store.poll() == []

    def test_append_refuses_beyond_max_queue_size(self, store: Store) -> None:
        """A full emitter refuses the event; the other targets of the same message take it."""
        fill(store, "small", 2, size=2)
        accepted = store.append(message(9), [Target("small", 2), Target("big", 10)])
        assert accepted == [False, True]
        assert store.state("small").queued == 2
        assert store.state("big").queued == 1
        assert request_ids(take(store, "small")) == ["req-0", "req-1"]

    def test_fetched_events_still_count_toward_max_queue_size(self, store: Store) -> None:
        """Fetching does not make room; delivering does."""
        fill(store, "e1", 2, size=2)
        first, _ = take(store, "e1")
        assert store.append(message(5), [Target("e1", 2)]) == [False]
        assert store.finish(LEASE, first)
        assert store.append(message(5), [Target("e1", 2)]) == [True]

    def test_failed_events_do_not_count_toward_max_queue_size(self, store: Store) -> None:
        """A given-up event leaves the queue, so it makes room."""
        fill(store, "e1", 1, size=1)
        (event,) = take(store, "e1")
        assert store.give_up(LEASE, event)
        assert store.append(message(5), [Target("e1", 1)]) == [True]
        assert (store.state("e1").queued, store.state("e1").failed) == (1, 1)

    def test_connection_is_a_value_error(self, store: Store) -> None:
        """``connection=`` is for PostgreSQL only, and stores nothing."""
        with pytest.raises(ValueError, match="connection"):
            store.append(message(1), [Target("e1", 10)], connection=object())
        assert store.state("e1").queued == 0

    def test_seq_never_goes_back(self, store: Store) -> None:
        """An event emitted after the newest was delivered still gets a larger seq."""
        fill(store, "e1", 2)
        events = take(store, "e1")
        assert events[0].seq < events[1].seq
        assert store.finish(LEASE, events[1])
        fill(store, "e1", 1, first=2)
        newest = store.fetch("e1", LEASE, 10, skip={events[0].seq})
        assert request_ids(newest) == ["req-2"]
        assert newest[0].seq > events[1].seq

    def test_append_from_many_threads(self, store: Store) -> None:
        """Threads appending at once: every event counted once, each thread's order kept."""
        threads, per_thread = 4, 100
        barrier = threading.Barrier(threads)

        def emit(t: int) -> None:
            barrier.wait()
            for n in range(per_thread):
                message_ = Message("e", f"t{t}-{n:03d}", b"{}")
                assert store.append(message_, [Target("e1", 10_000)]) == [True]

        workers = [threading.Thread(target=emit, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert store.state("e1").queued == threads * per_thread
        ids = request_ids(take(store, "e1", limit=10_000))
        assert len(ids) == threads * per_thread
        for t in range(threads):
            mine = [i for i in ids if i.startswith(f"t{t}-")]
            assert mine == sorted(mine) and len(mine) == per_thread

    # -- fetch ----------------------------------------------------------------------------

    def test_fetch_oldest_first_up_to_limit(self, store: Store) -> None:
        """``fetch`` answers the oldest queued events, in emit order, at most ``limit``."""
        fill(store, "e1", 5)
        events = take(store, "e1", limit=3)
        assert request_ids(events) == ["req-0", "req-1", "req-2"]
        seqs = [event.seq for event in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3

    def test_fetch_skips_the_window(self, store: Store) -> None:
        """Events whose seq is in ``skip`` (the caller's window) are passed over."""
        fill(store, "e1", 5)
        window = take(store, "e1", limit=2)
        more = store.fetch("e1", LEASE, 2, skip={event.seq for event in window})
        assert request_ids(more) == ["req-2", "req-3"]

    def test_fetch_answers_again_what_the_caller_no_longer_holds(self, store: Store) -> None:
        """An event fetched before but left out of ``skip`` (the caller's window was
        trimmed) is answered again, oldest first, before newer ones."""
        fill(store, "e1", 4)
        _first, second, _third = take(store, "e1", limit=3)
        again = store.fetch("e1", LEASE, 10, skip={second.seq})
        assert request_ids(again) == ["req-0", "req-2", "req-3"]

    def test_fetch_after_release_answers_the_unfinished_again(self, store: Store) -> None:
        """Events fetched but not finished are fetched again by the next lease holder."""
        fill(store, "e1", 3)
        first, _ = take(store, "e1", limit=2)
        assert store.finish(LEASE, first)
        assert request_ids(refetch(store, "e1")) == ["req-1", "req-2"]

    def test_fetch_of_an_unknown_emitter_is_empty(self, store: Store) -> None:
        """No events, no error, for an id the store never saw."""
        assert store.acquire("nobody", LEASE)
        assert store.fetch("nobody", LEASE, 10) == []

    # -- an operator's look at the queue ------------------------------------------------------

    def test_queued_events_lists_the_oldest_queued_without_a_lease(self, store: Store) -> None:
        """``queued_events`` answers the oldest queued events in emit order, at most
        ``limit``, with their tries and last error, and leaves out failed ones; it takes no
        lease (another holder's lease stays, and that holder's fetch answers them all)."""
        fill(store, "e1", 5)
        events = take(store, "e1", limit=2, lease=OTHER)
        events[0].attempts = 1
        assert store.begin_try(OTHER, events[0], time.time())
        events[0].status_code, events[0].error, events[0].next_at = 503, "HTTP 503", 0.0
        assert store.retry_later(OTHER, events[0])
        assert store.give_up(OTHER, events[1])
        listed = store.queued_events("e1", limit=3)
        assert request_ids(listed) == ["req-0", "req-2", "req-3"]
        assert all(isinstance(event, StoredEvent) for event in listed)
        assert [e.emitter_id for e in listed] == ["e1"] * 3
        assert (listed[0].attempts, listed[0].status_code, listed[0].error) == (
            1, 503, "HTTP 503")
        assert listed[1].body == b'{"n":2}' and listed[1].attempts == 0
        assert request_ids(store.queued_events("e1")) == ["req-0", "req-2", "req-3", "req-4"]
        # Nothing changed: the lease is the other holder's still, and its fetch answers
        # every queued event (none was taken by the listing).
        assert store.state("e1").lease_holder in (None, OTHER.holder)
        if self.durable:
            assert store.state("e1").lease_holder == OTHER.holder
            assert not store.acquire("e1", LEASE)
        again = store.fetch("e1", OTHER, 10)
        assert request_ids(again) == ["req-0", "req-2", "req-3", "req-4"]

    def test_queued_events_are_copies_and_change_nothing(self, store: Store) -> None:
        """Changing an event ``queued_events`` answered changes nothing in the store, and
        a listing does not count as a fetch (a later fetch answers the same events)."""
        fill(store, "e1", 2)
        listed = store.queued_events("e1")
        listed[0].attempts = 7
        listed[0].error = "changed by a reader"
        assert request_ids(take(store, "e1")) == ["req-0", "req-1"]
        (first, _second) = store.queued_events("e1")
        assert (first.attempts, first.error) == (0, None)
        assert store.state("e1").queued == 2

    def test_queued_events_of_an_unknown_emitter_or_limit_0_are_empty(
        self, store: Store
    ) -> None:
        """An id the store never saw, or ``limit=0``, answers an empty list."""
        fill(store, "e1", 1)
        assert store.queued_events("nobody") == []
        assert store.queued_events("e1", limit=0) == []

    @pytest.mark.parametrize(
        ("limit", "error"), [(-1, ValueError), (2.5, TypeError), (True, TypeError)]
    )
    def test_queued_events_refuses_a_bad_limit_naming_it(
        self, store: Store, limit: Any, error: type[Exception]
    ) -> None:
        """A limit that is not an int >= 0 is refused, and the message names ``limit``."""
        with pytest.raises(error, match="limit"):
            store.queued_events("e1", limit=limit)

    # -- one try ----------------------------------------------------------------------------

    def test_begin_try_records_the_try(self, store: Store) -> None:
        """``begin_try`` stores the count of tries and the start of the last try."""
        fill(store, "e1", 1)
        (event,) = take(store, "e1")
        event.attempts = 1
        now = time.time()
        assert store.begin_try(LEASE, event, now)
        assert store.state("e1").last_try_at == now
        (again,) = refetch(store, "e1")
        assert again.attempts == 1

    def test_begin_try_refused_while_paused(self, store: Store) -> None:
        """A paused emitter starts no try: False, and nothing recorded; restart allows it."""
        fill(store, "e1", 1)
        (event,) = take(store, "e1")
        store.set_paused("e1", True)
        event.attempts = 1
        assert not store.begin_try(LEASE, event, time.time())
        assert store.state("e1").last_try_at == 0.0
        store.set_paused("e1", False)
        assert store.begin_try(LEASE, event, time.time())

    def test_begin_try_refused_for_a_finished_event(self, store: Store) -> None:
        """An event that is no longer queued (delivered meanwhile) starts no try."""
        fill(store, "e1", 1)
        (event,) = take(store, "e1")
        assert store.finish(LEASE, event)
        assert not store.begin_try(LEASE, event, time.time())

    def test_retry_later_records_the_failed_try(self, store: Store) -> None:
        """Tries, next try time, status and error are kept for the next holder."""
        fill(store, "e1", 1)
        (event,) = take(store, "e1")
        event.attempts = 1
        assert store.begin_try(LEASE, event, time.time())
        due = time.time() + 60
        event.next_at, event.status_code, event.error = due, 503, "HTTP 503"
        assert store.retry_later(LEASE, event)
        (again,) = refetch(store, "e1")
        assert (again.attempts, again.next_at, again.status_code, again.error) == (
            1,
            due,
            503,
            "HTTP 503",
        )
        assert store.state("e1").queued == 1

    def test_finish_deletes_the_event(self, store: Store) -> None:
        """A delivered event is gone: counted out, not fetched again; a second finish is False."""
        fill(store, "e1", 2)
        first, second = take(store, "e1")
        assert store.finish(LEASE, first)
        assert store.state("e1").queued == 1
        assert request_ids(refetch(store, "e1")) == ["req-1"]
        assert not store.finish(LEASE, first)
        assert store.state("e1").queued == 1
        assert store.finish(LEASE, second)
        assert store.state("e1").queued == 0

    def test_give_up_keeps_a_dead_letter(self, store: Store) -> None:
        """A given-up event moves from queued to failed with its tries, status and error."""
        fill(store, "e1", 1)
        (event,) = take(store, "e1")
        event.attempts, event.status_code, event.error = 3, 500, "HTTP 500"
        before = datetime.datetime.now(datetime.timezone.utc)
        assert store.give_up(LEASE, event)
        state = store.state("e1")
        assert (state.queued, state.failed) == (0, 1)
        (dead,) = store.failed("e1")
        assert (dead.emitter_id, dead.event, dead.request_id, dead.body) == (
            "e1",
            "order.created",
            "req-0",
            b'{"n":0}',
        )
        assert (dead.attempts, dead.status_code, dead.error) == (3, 500, "HTTP 500")
        assert dead.failed_at.tzinfo is not None
        assert dead.failed_at.utcoffset() == datetime.timedelta(0)
        assert abs((dead.failed_at - before).total_seconds()) < 5
        assert not store.give_up(LEASE, event)
        assert store.state("e1").failed == 1
        assert refetch(store, "e1") == []

    def test_outcomes_are_recorded_even_if_paused_meanwhile(self, store: Store) -> None:
        """A try that was sent is recorded after a pause: retry_later, finish and give_up."""
        fill(store, "e1", 2)
        first, second = take(store, "e1")
        for event in (first, second):
            event.attempts = 1
            assert store.begin_try(LEASE, event, time.time())
        store.set_paused("e1", True)
        first.next_at, first.error = time.time() + 5, "timed out"
        assert store.retry_later(LEASE, first)
        assert store.finish(LEASE, first)
        assert store.give_up(LEASE, second)
        state = store.state("e1")
        assert (state.queued, state.failed, state.paused) == (0, 1, True)

    # -- settle: several outcomes and the next try in one call ---------------------------------

    def test_settle_records_each_outcome_and_the_next_try(self, store: Store) -> None:
        """``settle`` finishes one event, fails another, gives up a third and starts a fourth."""
        fill(store, "e1", 4)
        done, later, dead, following = take(store, "e1")
        for event in (done, later, dead):
            event.attempts = 1
            assert store.begin_try(LEASE, event, time.time())
        due = time.time() + 60
        later.next_at, later.status_code, later.error = due, 503, "HTTP 503"
        dead.status_code, dead.error = 500, "HTTP 500"
        following.attempts = 1
        now = time.time()
        answers, started = store.settle(
            LEASE,
            [("finish", done), ("retry_later", later), ("give_up", dead)],
            begin=following,
            now=now,
        )
        assert (answers, started) == ([True, True, True], True)
        state = store.state("e1")
        assert (state.queued, state.failed, state.last_try_at) == (2, 1, now)
        again = refetch(store, "e1")
        assert request_ids(again) == ["req-1", "req-3"]
        assert (again[0].next_at, again[0].status_code, again[0].error) == (due, 503, "HTTP 503")
        assert again[1].attempts == 1
        assert request_ids(store.failed("e1")) == ["req-2"]

    def test_settle_without_begin_answers_none(self, store: Store) -> None:
        """No ``begin``: the outcomes' answers, and None for the try; a repeat finish is False."""
        fill(store, "e1", 1)
        (event,) = take(store, "e1")
        assert store.settle(LEASE, [("finish", event)]) == ([True], None)
        assert store.settle(LEASE, [("finish", event)]) == ([False], None)
        assert store.state("e1").queued == 0

    def test_settle_refuses_the_begin_of_a_paused_emitter_but_keeps_outcomes(
        self, store: Store
    ) -> None:
        """Paused meanwhile: the outcome is recorded, the next try is refused (False)."""
        fill(store, "e1", 2)
        first, second = take(store, "e1")
        first.attempts = 1
        assert store.begin_try(LEASE, first, time.time())
        store.set_paused("e1", True)
        second.attempts = 1
        assert store.settle(LEASE, [("finish", first)], begin=second, now=time.time()) == (
            [True],
            False,
        )
        state = store.state("e1")
        assert (state.queued, state.last_try_at != 0.0) == (1, True)
        store.set_paused("e1", False)
        assert request_ids(refetch(store, "e1")) == ["req-1"]

    def test_settle_with_an_unknown_kind_records_nothing(self, store: Store) -> None:
        """A bad kind is a ValueError naming it, raised before anything is recorded."""
        fill(store, "e1", 1)
        (event,) = take(store, "e1")
        with pytest.raises(ValueError, match="'delete'"):
            store.settle(LEASE, [("finish", event), ("delete", event)])
        assert store.state("e1").queued == 1

    # -- emitters ------------------------------------------------------------------------------

    def test_state_of_an_unknown_id_is_the_defaults(self, store: Store) -> None:
        """An id the store never saw: default state, not known."""
        assert store.state("nobody") == EmitterState("nobody")
        assert not store.known("nobody")

    def test_register_makes_an_id_known(self, store: Store) -> None:
        """``register`` is idempotent; ``states`` lists every known id sorted."""
        store.register("b")
        store.register("a")
        store.register("b")
        assert store.known("a") and store.known("b")
        assert [state.emitter_id for state in store.states()] == ["a", "b"]
        assert store.state("a") == EmitterState("a")

    def test_an_id_with_events_is_known(self, store: Store) -> None:
        """Emitting to an id makes the store know it."""
        fill(store, "e1", 1)
        assert store.known("e1")

    def test_forget_answers_the_count_left(self, store: Store) -> None:
        """``forget`` counts what is queued: a durable store keeps it, memory drops it."""
        fill(store, "e1", 3)
        take(store, "e1", limit=1)
        assert store.forget("e1") == 3
        assert store.state("e1").queued == (3 if self.durable else 0)

    def test_state_counts_and_oldest_queued(self, store: Store) -> None:
        """``state`` counts queued and failed events and dates the oldest queued one."""
        fill(store, "e1", 3)
        first, second, third = take(store, "e1")
        assert store.state("e1").oldest_queued_at == first.emitted_at
        assert store.give_up(LEASE, first)
        state = store.state("e1")
        assert (state.queued, state.failed) == (2, 1)
        assert state.oldest_queued_at == second.emitted_at
        assert store.finish(LEASE, second) and store.finish(LEASE, third)
        assert store.state("e1").oldest_queued_at is None

    def test_poll_lists_queued_or_paused_emitters(self, store: Store) -> None:
        """``poll`` answers the ids with queued events or paused, not idle or only failed ones."""
        fill(store, "queued", 2)
        store.set_paused("paused", True)
        store.register("idle")
        fill(store, "dead", 1)
        (event,) = take(store, "dead")
        assert store.give_up(LEASE, event)
        states = {state.emitter_id: state for state in store.poll()}
        assert sorted(states) == ["paused", "queued"]
        assert states["queued"].queued == 2
        assert states["paused"].paused

    def test_pause_is_recorded(self, store: Store) -> None:
        """``set_paused(True)`` shows in the state, for ids known or not."""
        store.set_paused("e1", True)
        assert store.state("e1").paused
        assert store.known("e1")

    def test_hold_and_failing_since_are_recorded(self, store: Store) -> None:
        """The Retry-After hold and the start of the failures are kept per emitter."""
        fill(store, "e1", 1)
        take(store, "e1")
        until, since = time.time() + 30, time.time() - 5
        store.set_hold("e1", LEASE, until)
        store.set_failing_since("e1", LEASE, since)
        state = store.state("e1")
        assert (state.hold_until, state.failing_since) == (until, since)
        store.set_failing_since("e1", LEASE, None)
        assert store.state("e1").failing_since is None

    def test_restart_ends_holds_and_waits(self, store: Store) -> None:
        """``set_paused(False)`` clears the hold, the failing start and makes every event due."""
        fill(store, "e1", 2)
        first, second = take(store, "e1")
        later = time.time() + 3600
        for event in (first, second):
            event.attempts, event.next_at, event.error = 1, later, "HTTP 503"
            assert store.begin_try(LEASE, event, time.time())
            assert store.retry_later(LEASE, event)
        store.set_hold("e1", LEASE, later)
        store.set_failing_since("e1", LEASE, time.time())
        store.release("e1", LEASE, next_due=later)
        assert store.state("e1").next_due == later
        store.set_paused("e1", True)
        store.set_paused("e1", False)
        state = store.state("e1")
        assert not state.paused
        assert (state.hold_until, state.failing_since, state.next_due) == (0.0, None, 0.0)
        events = take(store, "e1")
        assert [event.next_at for event in events] == [0.0, 0.0]
        assert [event.attempts for event in events] == [1, 1]

    # -- flush ----------------------------------------------------------------------------------

    def test_high_water_and_queued_upto(self, store: Store) -> None:
        """The newest queued seq per emitter, and how many are queued up to a seq."""
        fill(store, "e1", 3)
        fill(store, "e2", 1, first=3)
        marks = store.high_water(["e1", "e2", "e3"])
        assert sorted(marks) == ["e1", "e2"]
        events = take(store, "e1")
        assert marks["e1"] == events[-1].seq
        assert store.queued_upto("e1", marks["e1"]) == 3
        fill(store, "e1", 2, first=4)
        assert store.queued_upto("e1", marks["e1"]) == 3
        assert store.finish(LEASE, events[0])
        assert store.queued_upto("e1", marks["e1"]) == 2
        assert store.queued_upto("e3", marks["e1"]) == 0
        assert store.high_water([]) == {}

    def test_high_water_leaves_out_failed_events(self, store: Store) -> None:
        """An emitter whose events all failed has nothing left to flush."""
        fill(store, "e1", 1)
        (event,) = take(store, "e1")
        assert store.give_up(LEASE, event)
        assert store.high_water(["e1"]) == {}

    # -- dead letters -----------------------------------------------------------------------------

    def test_failed_oldest_first_up_to_limit(self, store: Store) -> None:
        """Failed events come in emit order, whatever order they failed in."""
        fill(store, "e1", 3)
        events = take(store, "e1")
        for event in reversed(events):
            assert store.give_up(LEASE, event)
        assert request_ids(store.failed("e1")) == ["req-0", "req-1", "req-2"]
        assert request_ids(store.failed("e1", limit=2)) == ["req-0", "req-1"]

    def test_replay_queues_every_failed_event_at_the_tail(self, store: Store) -> None:
        """Replayed events go behind the queued ones, in emit order, with no tries counted."""
        fill(store, "e1", 4)
        events = take(store, "e1")
        for event in events[:3]:
            event.attempts, event.status_code, event.error = 3, 500, "HTTP 500"
            assert store.give_up(LEASE, event)
        assert store.replay("e1") == 3
        state = store.state("e1")
        assert (state.queued, state.failed) == (4, 0)
        assert store.failed("e1") == []
        replayed = refetch(store, "e1")
        assert request_ids(replayed) == ["req-3", "req-0", "req-1", "req-2"]
        assert [event.attempts for event in replayed] == [0, 0, 0, 0]
        assert replayed[1].seq > events[3].seq
        assert replayed[1].body == events[0].body
        assert replayed[1].status_code is None and replayed[1].error is None

    def test_replay_chosen_request_ids(self, store: Store) -> None:
        """Only the given request ids are replayed, in emit order; unknown ids are ignored."""
        fill(store, "e1", 3)
        for event in take(store, "e1"):
            assert store.give_up(LEASE, event)
        assert store.replay("e1", ["req-2", "req-0", "req-9"]) == 2
        assert request_ids(store.failed("e1")) == ["req-1"]
        assert request_ids(refetch(store, "e1")) == ["req-0", "req-2"]
        assert store.replay("e1", []) == 0

    def test_replay_ignores_max_queue_size(self, store: Store) -> None:
        """Replay is an operator's decision: it is not bounded by max_queue_size."""
        fill(store, "e1", 2, size=2)
        for event in take(store, "e1"):
            assert store.give_up(LEASE, event)
        fill(store, "e1", 2, first=2, size=2)
        assert store.replay("e1") == 2
        assert store.state("e1").queued == 4

    def test_purge_deletes_queued_and_failed(self, store: Store) -> None:
        """``purge`` deletes every event of the id and resets its counters."""
        fill(store, "e1", 3)
        fill(store, "e2", 1, first=3)
        first, *_ = take(store, "e1")
        assert store.give_up(LEASE, first)
        assert store.purge("e1") == 3
        state = store.state("e1")
        assert (state.queued, state.failed) == (0, 0)
        assert store.failed("e1") == [] and refetch(store, "e1") == []
        assert store.purge("e1") == 0
        assert store.state("e2").queued == 1
        assert store.append(message(9), [Target("e1", 1)]) == [True]

    def test_dead_letters_of_unknown_ids(self, store: Store) -> None:
        """``failed``, ``replay`` and ``purge`` work on ids nothing was ever stored for."""
        assert store.failed("nobody") == []
        assert store.replay("nobody") == 0
        assert store.purge("nobody") == 0


class TraceContextContract:
    """A store keeps the emitting caller's trace context with each event (CONTRACT 15).

    Mixed into a store's test class once the store keeps it (the memory store does; the
    SQL stores in a nullable column)."""

    def test_trace_context_travels_with_the_event(self, store: Store) -> None:
        """Appended with a context, fetched with it; without one, None; kept by replay."""
        context = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        store.append(Message("a", "req-a", b"{}", None, context), [Target("e1", 10)])
        store.append(Message("b", "req-b", b"{}"), [Target("e1", 10)])
        with_context, without = take(store, "e1")
        assert (with_context.trace_context, without.trace_context) == (context, None)
        with_context.attempts = 1
        assert store.give_up(LEASE, with_context)
        assert store.finish(LEASE, without)
        assert store.replay("e1") == 1
        (again,) = refetch(store, "e1")
        assert again.trace_context == context


class DurableStoreContract(StoreContract):
    """What a store shared by several processes adds: leases that exclude, expire and move."""

    durable = True

    def test_another_instance_sees_the_events(
        self, store: Store, make_store: Callable[..., Store]
    ) -> None:
        """Another process over the same store sees what this one stored."""
        fill(store, "e1", 2)
        other = make_store()
        assert other.state("e1").queued == 2
        assert request_ids(take(other, "e1", lease=OTHER)) == ["req-0", "req-1"]

    def test_lease_is_exclusive(self, store: Store, make_store: Callable[..., Store]) -> None:
        """One holder at a time; the holder may take it again; the state names the holder."""
        other = make_store()
        assert store.acquire("e1", LEASE)
        assert not other.acquire("e1", OTHER)
        assert store.acquire("e1", LEASE)
        assert other.state("e1").lease_holder == LEASE.holder

    def test_release_lets_another_take_it(
        self, store: Store, make_store: Callable[..., Store]
    ) -> None:
        """After ``release`` another process takes the lease; ``next_due`` is kept."""
        other = make_store()
        assert store.acquire("e1", LEASE)
        store.release("e1", LEASE, next_due=1234.5)
        state = other.state("e1")
        assert (state.lease_holder, state.next_due) == (None, 1234.5)
        assert other.acquire("e1", OTHER)

    def test_release_by_another_changes_nothing(self, store: Store) -> None:
        """A process that does not hold the lease cannot let it go, nor set ``next_due``."""
        assert store.acquire("e1", LEASE)
        store.release("e1", OTHER, next_due=99.0)
        state = store.state("e1")
        assert (state.lease_holder, state.next_due) == (LEASE.holder, 0.0)
        assert not store.acquire("e1", OTHER)

    def test_renew_answers_the_leases_still_held(self, store: Store) -> None:
        """``renew`` extends and answers only the leases this token holds."""
        assert store.acquire("e1", LEASE) and store.acquire("e2", LEASE)
        assert store.acquire("e3", OTHER)
        assert store.renew(LEASE, ["e1", "e2", "e3", "unknown"]) == {"e1", "e2"}
        assert store.renew(LEASE, []) == set()

    def test_renew_many_leases(self, store: Store) -> None:
        """Hundreds of ids in one call (more than one statement's worth) are all renewed."""
        ids = [f"customer-{n:04d}" for n in range(700)]
        for emitter_id in ids:
            assert store.acquire(emitter_id, LEASE)
        assert store.renew(LEASE, ids) == set(ids)
        assert store.renew(LEASE, ids[:3]) == set(ids[:3])

    def test_expired_lease_is_taken_over(self, make_store: Callable[..., Store]) -> None:
        """A lease not renewed within lease_timeout goes to another; the old holder's try
        records change nothing."""
        mine, theirs = make_store(lease_timeout=0.2), make_store(lease_timeout=0.2)
        fill(mine, "e1", 1)
        (event,) = take(mine, "e1")
        event.attempts = 1
        assert mine.begin_try(LEASE, event, time.time())
        assert not theirs.acquire("e1", OTHER)
        wait_until(lambda: theirs.state("e1").lease_holder is None)
        assert theirs.acquire("e1", OTHER)
        assert theirs.state("e1").lease_holder == OTHER.holder
        assert mine.renew(LEASE, ["e1"]) == set()
        event.attempts = 2
        assert not mine.begin_try(LEASE, event, time.time())
        event.next_at, event.error = time.time() + 5, "late"
        assert not mine.retry_later(LEASE, event)
        assert not mine.finish(LEASE, event)
        assert not mine.give_up(LEASE, event)
        mine.set_hold("e1", LEASE, time.time() + 99)
        mine.set_failing_since("e1", LEASE, 1.0)
        state = theirs.state("e1")
        assert (state.queued, state.failed, state.hold_until, state.failing_since) == (
            1,
            0,
            0.0,
            None,
        )
        (again,) = theirs.fetch("e1", OTHER, 10)
        assert (again.attempts, again.error) == (1, None)

    def test_expired_lease_starts_no_try_until_renewed(
        self, make_store: Callable[..., Store]
    ) -> None:
        """An expired lease nobody took starts no try, still records outcomes, and renews."""
        mine = make_store(lease_timeout=0.2)
        fill(mine, "e1", 2)
        first, second = take(mine, "e1")
        first.attempts = 1
        assert mine.begin_try(LEASE, first, time.time())
        wait_until(lambda: mine.state("e1").lease_holder is None)
        second.attempts = 1
        assert not mine.begin_try(LEASE, second, time.time())
        assert mine.finish(LEASE, first)  # the try under way is recorded
        assert mine.renew(LEASE, ["e1"]) == {"e1"}
        assert mine.begin_try(LEASE, second, time.time())

    def test_pause_is_seen_by_another_process(
        self, store: Store, make_store: Callable[..., Store]
    ) -> None:
        """A pause made by one process stops the tries of the lease holder in another."""
        other = make_store()
        fill(store, "e1", 1)
        (event,) = take(store, "e1")
        other.set_paused("e1", True)
        event.attempts = 1
        assert not store.begin_try(LEASE, event, time.time())
        assert [state.emitter_id for state in store.poll()] == ["e1"]
        other.set_paused("e1", False)
        assert store.begin_try(LEASE, event, time.time())

    def test_max_queue_size_holds_across_processes(
        self, store: Store, make_store: Callable[..., Store]
    ) -> None:
        """Two processes appending to one emitter share its max_queue_size."""
        other = make_store()
        fill(store, "e1", 2, size=3)
        assert other.append(message(2), [Target("e1", 3)]) == [True]
        assert other.append(message(3), [Target("e1", 3)]) == [False]
        assert store.append(message(4), [Target("e1", 3)]) == [False]
        assert store.state("e1").queued == 3
