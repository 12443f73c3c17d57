"""PostgreSQL leases vouched for by the holder's database session (CONTRACT section 10,
"Takeover"), tested on the store itself with real processes.

A lease names a session-level advisory lock that the holder's store keeps on a connection of
its own; when the holder's process dies, the server ends that session and the lease may be
taken at once, without waiting for ``lease_timeout``. ``lease_timeout`` (30 s here, so that
no expiry can explain a takeover) stays for holders the server cannot see die.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import psycopg
import pytest
from store_contract import closing_factory, fill, take

from webhooks_emitter.stores._base import Lease
from webhooks_emitter.stores.postgres import PostgresStore

#: The most a takeover may take after the holder's death (CONTRACT section 10).
TAKEOVER = 2.0


@pytest.fixture
def make_store(pg_store_url: str) -> Iterator[Callable[..., PostgresStore]]:
    """``make_store(**options)``: a PostgresStore (lease_timeout 30 s unless told) over the
    test's database, closed after the test."""
    def open_store(**options: Any) -> PostgresStore:
        options.setdefault("lease_timeout", 30.0)
        return PostgresStore(pg_store_url, **options)

    yield from closing_factory(open_store)


def sql(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on its own autocommit connection; its rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


class Holder:
    """Another process whose PostgresStore takes the leases of ``emitter_ids`` and then
    waits (idle: nothing in flight) until killed or told to go on stdin."""

    CODE = textwrap.dedent("""
        import sys
        from webhooks_emitter.stores._base import Lease
        from webhooks_emitter.stores.postgres import PostgresStore
        store = PostgresStore(sys.argv[1], lease_timeout=30.0)
        lease = Lease.new()
        for emitter_id in sys.argv[2:]:
            assert store.acquire(emitter_id, lease), emitter_id
        print("held", flush=True)
        if sys.stdin.readline().strip() == "close":
            store.close()
            print("closed", flush=True)
            sys.stdin.readline()
    """)

    def __init__(self, url: str, *emitter_ids: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", self.CODE, url, *emitter_ids],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line == "held\n", f"the holder did not start: {line!r}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def tell(self, line: str, answer: str) -> None:
        """Send ``line``; wait for ``answer``."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline() == answer + "\n"

    def kill(self) -> float:
        """SIGKILL; returns when (monotonic) it was sent, once the process is reaped."""
        os.kill(self.pid, signal.SIGKILL)
        killed = time.monotonic()
        self.process.wait(10)
        return killed

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def holders(pg_store_url: str) -> Iterator[Callable[..., Holder]]:
    """``holders(*emitter_ids)``: start a Holder of those leases; all killed after the test."""
    started: list[Holder] = []

    def start(*emitter_ids: str) -> Holder:
        holder = Holder(pg_store_url, *emitter_ids)
        started.append(holder)
        return holder

    yield start
    for holder in started:
        holder.stop()


def acquire_within(store: PostgresStore, emitter_id: str, lease: Lease, seconds: float) -> float:
    """Try to take the lease every 20 ms for up to ``seconds``; the monotonic time it was
    taken (fails if it never was)."""
    deadline = time.monotonic() + seconds
    while not store.acquire(emitter_id, lease):
        assert time.monotonic() < deadline, f"{emitter_id}'s lease not taken in {seconds} s"
        threading.Event().wait(0.02)
    return time.monotonic()


def test_kill_9_of_an_idle_holder_lets_another_take_its_lease_at_once(
    make_store: Callable[..., PostgresStore], holders: Callable[..., Holder]
) -> None:
    """The holder of e1's lease (lease_timeout 30 s) is killed with SIGKILL: another store
    takes the lease within 2 s and finds the events left; status shows no holder once the
    holder is gone."""
    store = make_store()
    fill(store, "e1", 2)
    holder = holders("e1")
    mine = Lease.new()
    assert not store.acquire("e1", mine)
    assert (store.state("e1").lease_holder or "").endswith(f":{holder.pid}")
    assert any((s.lease_holder or "").endswith(f":{holder.pid}") for s in store.poll())
    killed = holder.kill()
    deadline = killed + TAKEOVER
    while store.state("e1").lease_holder is not None:
        assert time.monotonic() < deadline, "state() still shows the dead holder"
        threading.Event().wait(0.02)
    assert [s.lease_holder for s in store.states() if s.emitter_id == "e1"] == [None]
    assert [s.lease_holder for s in store.poll() if s.emitter_id == "e1"] == [None]
    taken = acquire_within(store, "e1", mine, TAKEOVER)
    print(f"\ntaken over {taken - killed:.3f} s after the kill")
    assert taken - killed < TAKEOVER
    assert [event.request_id for event in take(store, "e1", lease=mine)] == ["req-0", "req-1"]
    assert (store.state("e1").lease_holder or "") == mine.holder


def test_a_live_holder_keeps_its_lease(
    make_store: Callable[..., PostgresStore], holders: Callable[..., Holder]
) -> None:
    """While the holder's process lives (and its lease has not expired), nobody takes its
    lease, however often they try, and status names it."""
    store = make_store()
    holder = holders("e1")
    mine = Lease.new()
    for _ in range(20):
        assert not store.acquire("e1", mine)
        assert (store.state("e1").lease_holder or "").endswith(f":{holder.pid}")


def test_close_lets_the_leases_go_at_once(
    make_store: Callable[..., PostgresStore], holders: Callable[..., Holder]
) -> None:
    """A holder that closes its store (a shutdown whose try is still under way, say) ends
    the session: its leases may be taken at once though the process lives on."""
    store = make_store()
    holder = holders("e1", "e2")
    mine = Lease.new()
    assert not store.acquire("e1", mine)
    holder.tell("close", "closed")
    assert holder.process.poll() is None
    closed = time.monotonic()
    acquire_within(store, "e1", mine, TAKEOVER)
    acquire_within(store, "e2", mine, TAKEOVER)
    assert time.monotonic() - closed < TAKEOVER


def test_a_holder_whose_session_was_ended_loses_its_lease_and_records_nothing(
    make_store: Callable[..., PostgresStore], pg_store_url: str
) -> None:
    """The holder's lock session is ended by the server (pg_terminate_backend) while the
    process lives: another process may take the lease; the first then records nothing
    under it (its try is refused, its renewal answers nothing), and its next acquire opens
    a new session that vouches for it again."""
    first, second = make_store(), make_store()
    fill(first, "e1", 2)
    fill(first, "e2", 1)
    lease_1, lease_2 = Lease.new(), Lease.new()
    assert first.acquire("e1", lease_1)
    (event, _) = take(first, "e1", lease=lease_1)
    key = first._session.key
    ended = sql(pg_store_url,
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted AND "
                "((classid::bigint << 32) | objid::bigint) = %s AND objsubid = 1", (key,))
    assert ended == [(True,)]
    acquire_within(second, "e1", lease_2, TAKEOVER)
    event.attempts = 1
    assert first.begin_try(lease_1, event, time.time()) is False
    assert first.renew(lease_1, ["e1"]) == set()
    # A new session vouches for the first store's next lease: e2 is not taken from it.
    assert first.acquire("e2", lease_1)
    assert not second.acquire("e2", lease_2)


def test_a_lease_of_the_previous_release_waits_for_its_expiry(
    make_store: Callable[..., PostgresStore], pg_store_url: str
) -> None:
    """A lease taken by the previous release (its token names no lock) is not taken over
    early during a rolling deploy: only once it expires."""
    store = make_store()
    store.register("e1")
    sql(pg_store_url,
        "UPDATE webhooks_emitter.emitters SET lease_holder = 'old:1', lease_token = 'ab12', "
        "lease_expires = clock_timestamp() + interval '30 seconds' WHERE emitter_id = 'e1'")
    mine = Lease.new()
    assert not store.acquire("e1", mine)
    assert store.state("e1").lease_holder == "old:1"
    sql(pg_store_url,
        "UPDATE webhooks_emitter.emitters SET lease_expires = clock_timestamp() "
        "WHERE emitter_id = 'e1'")
    assert store.acquire("e1", mine)


def test_a_forked_child_holds_its_own_session(
    make_store: Callable[..., PostgresStore]
) -> None:
    """A forked child's leases are vouched for by its own session: when it exits, its
    lease may be taken at once, and the parent's lease (on the session the child
    inherited, which it neither used nor closed) stays held."""
    parent_store = make_store()
    other = make_store()
    parent_lease = Lease.new()
    assert parent_store.acquire("e1", parent_lease)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            child_lease = Lease.new()
            code = 0 if parent_store.acquire("e2", child_lease) else 2
        finally:
            os.write(write, str(code).encode())
            os._exit(code)
    os.close(write)
    assert os.read(read, 10) == b"0"
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    mine = Lease.new()
    exited = time.monotonic()
    acquire_within(other, "e2", mine, TAKEOVER)
    assert time.monotonic() - exited < TAKEOVER
    assert not other.acquire("e1", mine)
    assert parent_store.renew(parent_lease, ["e1"]) == {"e1"}


def test_begin_try_keeps_the_end_of_the_try_for_the_next_holder(
    make_store: Callable[..., PostgresStore], holders: Callable[..., Holder]
) -> None:
    """begin_try stores the event's next_at (the engine sets it to the try's start plus
    request_timeout): a process that takes the lease after the holder's death fetches the
    event due only then, so its next try cannot overlap the dead one's."""
    first, second = make_store(), make_store()
    fill(first, "e1", 2)
    lease_1, lease_2 = Lease.new(), Lease.new()
    assert first.acquire("e1", lease_1)
    (event, _) = take(first, "e1", lease=lease_1)
    started = time.time()
    event.attempts = 1
    event.next_at = started + 3.0
    assert first.begin_try(lease_1, event, started)
    first.close()  # the holder's session ends, as at its death
    acquire_within(second, "e1", lease_2, TAKEOVER)
    fetched = take(second, "e1", lease=lease_2)
    assert [(e.request_id, e.attempts, e.next_at) for e in fetched] == [
        ("req-0", 1, started + 3.0), ("req-1", 0, 0.0)]
