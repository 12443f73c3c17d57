"""PostgreSQL end to end (CONTRACT sections 10 and 11): real server, real processes.

Each test runs a real PostgreSQL (tests/support/postgres_server.py), a :class:`Receiver` on
127.0.0.1 in this process, and child processes (tests/support/scripts/pg_node.py) that make a
``WebhooksEmitter`` over the store: *workers* that deliver, and *web* processes
(``deliver=False``) that emit. Every request a worker sends carries ``X-Worker: <pid>``, and
each emitter has its own path at the receiver, which records how many tries of a path are in
flight at once. Tests kill workers with SIGKILL, restart the server, pause from the web
process, and race five processes on a fresh database; they synchronise on what they can
observe (lines the children print, requests the receiver got, the store's state), never on
sleeps. Times printed (commit to arrival, takeover) are for the report; the only ones
asserted are the contract's own bounds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import psycopg
import pytest

from webhooks_emitter import Config, StoreError, WebhooksEmitter
from webhooks_emitter._ops import SEND_GRACE
from webhooks_emitter.stores.postgres import PostgresStore
from webhooks_emitter.testing import ReceivedRequest, Receiver

if TYPE_CHECKING:
    from postgres_server import Server

# The server and database fixtures; registered as a plugin (not imported here first), so
# that pytest rewrites the module's asserts.

SCRIPT = Path(__file__).resolve().parents[1] / "support" / "scripts" / "pg_node.py"
EVENT = "order.paid"
#: Seconds a test waits for a condition before it fails (generous: the machine is shared).
WAIT = 15.0
SCHEMA = "webhooks_emitter"


# -- the receiver side ---------------------------------------------------------------------------


def emitter_of(request: ReceivedRequest) -> str:
    """The emitter id a request was sent for: the last segment of its path."""
    return request.path.split("?", 1)[0].rsplit("/", 1)[-1]


class Tracker:
    """Answers for a :class:`Receiver` and records the tries in flight per emitter.

    A try counts as in flight from the moment its request was read until its answer is
    decided, just before the answer is written: the emitter cannot learn the answer (and
    start its next try) before that, so what is seen here is never less overlap than there
    was.

    Args:
        delay: seconds each answer takes (a slow receiver), without blocking other requests.
        statuses: the status to answer, per emitter id (204 for the others).
        hold: called with each request; when it returns true, the answer waits until
            :attr:`release` is set (at most ``WAIT`` seconds), and :attr:`held` holds the
            request.
    """

    def __init__(
        self,
        delay: float = 0.0,
        statuses: Optional[dict[str, int]] = None,
        hold: Optional[Callable[[ReceivedRequest], bool]] = None,
    ) -> None:
        self.delay = delay
        self.statuses = statuses or {}
        self.hold = hold
        self.held: Optional[ReceivedRequest] = None
        self.holding = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._inflight: Counter[str] = Counter()
        self.most_inflight: Counter[str] = Counter()

    def on_request(self, request: ReceivedRequest) -> None:
        """The request was read: one more try of its emitter in flight."""
        emitter = emitter_of(request)
        with self._lock:
            self._inflight[emitter] += 1
            self.most_inflight[emitter] = max(
                self.most_inflight[emitter], self._inflight[emitter]
            )

    def respond(self, request: ReceivedRequest) -> int:
        """The answer: after ``delay`` (or the hold), the emitter's status."""
        emitter = emitter_of(request)
        try:
            if self.hold is not None and self.held is None and self.hold(request):
                self.held = request
                self.holding.set()
                self.release.wait(WAIT)
            elif self.delay:
                threading.Event().wait(self.delay)  # the receiver's own slowness
            return self.statuses.get(emitter, 204)
        finally:
            with self._lock:
                self._inflight[emitter] -= 1


def tracked_receiver(tracker: Tracker, **options: Any) -> Receiver:
    """A started receiver answering through ``tracker`` (``options`` for Receiver)."""
    return Receiver(on_request=tracker.on_request, responder=tracker.respond, **options).start()


def template(receiver: Receiver) -> str:
    """The URL template of pg_node.py: one path per emitter at ``receiver``."""
    return receiver.url + "/{emitter}"


def numbers(requests: list[ReceivedRequest], emitter: str) -> list[int]:
    """The ``n`` of each request sent for ``emitter``, in arrival order (repeats included)."""
    return [r.json()["n"] for r in requests if emitter_of(r) == emitter]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it is true; fail saying ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        tick.wait(0.02)  # a poll interval; the condition decides


def wait_for_ids(receiver: Receiver, ids: set[str], timeout: float = WAIT) -> None:
    """Wait until every delivery id in ``ids`` reached ``receiver``."""

    def missing() -> set[str]:
        return ids - {r.delivery_id for r in receiver.requests}

    try:
        wait_until(lambda: not missing(), timeout, "every event delivered")
    except AssertionError:
        raise AssertionError(f"never delivered: {sorted(missing())[:20]}...") from None


def check_order(requests: list[ReceivedRequest], emitter: str, expected: list[int],
                repeatable: frozenset[int] = frozenset()) -> list[int]:
    """Assert ``emitter`` got ``expected`` in order, each once, but for the events of
    ``repeatable`` (tries under way at a death), which may come once more right after
    their first copy. Returns the repeated ones."""
    got = numbers(requests, emitter)
    repeated = [n for n, count in Counter(got).items() if count > 1]
    assert set(repeated) <= repeatable, (emitter, repeated, repeatable)
    assert all(count <= 2 for count in Counter(got).values()), (emitter, got)
    assert got == sorted(got), f"{emitter}: out of order: {got}"
    assert list(dict.fromkeys(got)) == expected, (emitter, got, expected)
    return repeated


# -- the child processes ---------------------------------------------------------------------------


class Node:
    """A running tests/support/scripts/pg_node.py: its JSON lines, its commands, its stderr."""

    def __init__(self, store_url: str, url_template: str, *options: str) -> None:
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT), store_url, url_template, *options],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self.lines: list[dict[str, Any]] = []
        self._log = ""
        self._eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def __repr__(self) -> str:
        return f"<Node pid={self.pid}>"

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._cond:
                self.lines.append(json.loads(line))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def stderr(self) -> str:
        """What the child wrote on stderr so far (all of it once stopped)."""
        if self._stderr.closed:
            return self._log
        self._stderr.seek(0)
        return self._stderr.read()

    def wait_line(self, match: Callable[[dict[str, Any]], bool], timeout: float = WAIT,
                  start: int = 0) -> dict[str, Any]:
        """The first line from index ``start`` on that ``match`` accepts, waiting for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    if match(line):
                        return line
                if self._eof:
                    raise AssertionError(f"{self} ended without it:\n{self.stderr()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self}: no such line in {timeout:g} s:\n"
                                         f"{self.lines[-5:]}\n{self.stderr()}")
                self._cond.wait(remaining)

    def ready(self) -> dict[str, Any]:
        """Wait until the child has attached its emitters; its ready line."""
        return self.wait_line(lambda line: line.get("ready") is True)

    def send(self, **command: Any) -> int:
        """Send one command; returns the index its answer lines start at."""
        with self._cond:
            mark = len(self.lines)
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return mark

    def done(self, op: str, start: int, timeout: float = WAIT) -> dict[str, Any]:
        """Wait for the last answer line of the command ``op`` sent at ``start``."""
        return self.wait_line(lambda line: line.get("done") == op, timeout, start)

    def call(self, op: str, wait: float = WAIT, **fields: Any) -> dict[str, Any]:
        """Send a command (``fields`` are its arguments) and wait up to ``wait`` seconds for
        its last answer line."""
        return self.done(op, self.send(op=op, **fields), wait)

    def emitted(self, start: int = 0) -> tuple[set[str], set[str]]:
        """The delivery ids of the events emitted so far, and of those whose emit raised."""
        with self._cond:
            lines = [line for line in self.lines[start:] if "n" in line]
        ok = {f"ev-{line['n']}" for line in lines if line["ok"]}
        return ok, {f"ev-{line['n']}" for line in lines if not line["ok"]}

    def stop(self, timeout: float = 2.0) -> None:
        """Shut the child down (``exit``), killing it if it does not end in time."""
        if self.process.poll() is None:
            try:
                self.send(op="exit", timeout=timeout)
                assert self.process.stdin is not None
                self.process.stdin.close()
                self.process.wait(timeout + 10)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        if not self._stderr.closed:
            self._log = self.stderr()
            self._stderr.close()

    def kill(self) -> None:
        """SIGKILL: the process dies at once, wherever it is."""
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture
def launch(pg_store_url: str) -> Iterator[Callable[..., Node]]:
    """``launch(url_template, *options)``: a pg_node.py over the test's database; every
    node is stopped after the test (before the database is dropped)."""
    nodes: list[Node] = []

    def start(url_template: str, *options: str, store_url: str = pg_store_url) -> Node:
        node = Node(store_url, url_template, *options)
        nodes.append(node)
        return node

    yield start
    crashes = []
    for node in nodes:
        node.stop(timeout=1.0)
        log = node.stderr()
        if "Traceback" in log:
            crashes.append(f"{node}:\n{log}")
    assert not crashes, "a child logged an exception:\n" + "\n".join(crashes)


def workers(launch: Callable[..., Node], url_template: str, count: int,
            *options: str) -> list[Node]:
    """``count`` worker processes, started at once and waited for until attached."""
    started = [launch(url_template, *options) for _ in range(count)]
    for node in started:
        node.ready()
    return started


def sql(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on its own autocommit connection; its rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


# -- the caller's connections ------------------------------------------------------------------


def _sa_engine(url: str, driver: str) -> Any:
    import sqlalchemy
    from postgres_server import conninfo_to_url

    return sqlalchemy.create_engine(
        conninfo_to_url(url).replace("postgresql://", f"postgresql+{driver}://", 1),
        poolclass=sqlalchemy.pool.NullPool,
    )


class Caller:
    """An application's connection of one kind: ``conn``, ``execute``, ``commit``,
    ``rollback``, ``close``."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self._engine: Any = None
        if kind == "psycopg":
            self.conn: Any = psycopg.connect(url)
        elif kind == "psycopg2":
            import psycopg2  # type: ignore[import-untyped,unused-ignore]

            self.conn = psycopg2.connect(url)
        elif kind.startswith("sqlalchemy-connection-"):
            self._engine = _sa_engine(url, kind.rsplit("-", 1)[1])
            self.conn = self._engine.connect()
        elif kind == "sqlalchemy-session":
            from sqlalchemy.orm import Session

            self._engine = _sa_engine(url, "psycopg")
            self.conn = Session(self._engine)
        else:  # pragma: no cover - the parameters below
            raise ValueError(kind)

    def execute(self, query: str) -> list[tuple[Any, ...]]:
        """Run ``query`` in the caller's transaction; its rows."""
        if self._engine is not None:
            import sqlalchemy

            result = self.conn.execute(sqlalchemy.text(query))
            return [tuple(row) for row in result] if result.returns_rows else []
        cursor = self.conn.cursor()
        cursor.execute(query)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def close(self) -> None:
        self.conn.close()
        if self._engine is not None:
            self._engine.dispose()


CONNECTION_KINDS = [
    "psycopg",
    "psycopg2",
    "sqlalchemy-connection-psycopg",
    "sqlalchemy-connection-psycopg2",
    "sqlalchemy-session",
]


# -- transactional emit --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CONNECTION_KINDS)
def test_transactional_emit_end_to_end(
    kind: str, pg_store_url: str, launch: Callable[..., Node]
) -> None:
    """A web instance (deliver=False, in this process) emits through the application's
    connection of each kind; a worker process delivers. Before the commit the receiver
    has nothing and the worker's flush() does not wait for the event; after it the event
    arrives within 0.5 s. A rolled-back emit never arrives (a later event of the same
    emitter does, and order would put it first). A StoreError inside the emit's savepoint
    (the events table locked past the caller's lock_timeout) leaves the transaction usable:
    its other work and a second emit commit."""
    tracker = Tracker()
    receiver = tracked_receiver(tracker)
    store = PostgresStore(pg_store_url)
    peek = PostgresStore(pg_store_url)  # another process's view of the store
    web = WebhooksEmitter(store=store, deliver=False)
    caller = Caller(kind, pg_store_url)
    try:
        web.attach("e0", EVENT, Config(receiver.url + "/e0"))
        (worker,) = workers(launch, template(receiver), 1, "--emitters", "1")
        latencies = []

        # 1. Committed: nothing before the commit, delivered within 0.5 s after it.
        caller.execute("CREATE TABLE orders (id int)")
        caller.execute("INSERT INTO orders VALUES (1)")
        web.emit(EVENT, {"emitter": "e0", "n": 1}, "ev-1", connection=caller.conn)
        flushed = worker.call("flush", timeout=1.0)
        assert flushed["result"] is True  # the uncommitted event is not waited for
        assert receiver.requests == []
        assert peek.state("e0").queued == 0
        caller.commit()
        committed = time.monotonic()
        (hook,) = receiver.wait_for(1, WAIT)
        latencies.append(hook.received_at - committed)
        assert hook.delivery_id == "ev-1" and hook.json() == {"emitter": "e0", "n": 1}

        # 2. Rolled back: never delivered; the next committed event is.
        caller.execute("INSERT INTO orders VALUES (2)")
        web.emit(EVENT, {"emitter": "e0", "n": 2}, "ev-2", connection=caller.conn)
        caller.rollback()
        caller.execute("INSERT INTO orders VALUES (3)")
        web.emit(EVENT, {"emitter": "e0", "n": 3}, "ev-3", connection=caller.conn)
        caller.commit()
        committed = time.monotonic()
        hooks = receiver.wait_for(2, WAIT)
        latencies.append(hooks[1].received_at - committed)

        # 3. A StoreError inside the savepoint: the caller's transaction goes on.
        caller.execute("SET LOCAL lock_timeout = '200ms'")
        caller.execute("INSERT INTO orders VALUES (4)")
        with psycopg.connect(pg_store_url) as locker:
            locker.execute(f"LOCK TABLE {SCHEMA}.events IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StoreError):
                web.emit(EVENT, {"emitter": "e0", "n": 40}, "ev-40", connection=caller.conn)
            locker.rollback()
        assert caller.execute("SELECT 41 + 1") == [(42,)]
        web.emit(EVENT, {"emitter": "e0", "n": 5}, "ev-5", connection=caller.conn)
        caller.execute("INSERT INTO orders VALUES (5)")
        caller.commit()
        committed = time.monotonic()
        hooks = receiver.wait_for(3, WAIT)
        latencies.append(hooks[2].received_at - committed)
        assert worker.call("flush", timeout=WAIT)["result"] is True

        assert [hook.delivery_id for hook in receiver.requests] == ["ev-1", "ev-3", "ev-5"]
        assert sorted(sql(pg_store_url, "SELECT id FROM orders")) == [(1,), (3,), (4,), (5,)]
        print(f"\n{kind}: commit to arrival " + ", ".join(f"{s * 1000:.1f} ms" for s in latencies))
        assert max(latencies) < 0.5, latencies
    finally:
        caller.close()
        web.shutdown(timeout=1.0)
        store.close()
        peek.close()
        receiver.stop()


# -- many processes --------------------------------------------------------------------------


def test_three_workers_and_a_web_process(launch: Callable[..., Node]) -> None:
    """Three workers (deliver=True, the same 8 emitters) and a web process (deliver=False)
    emitting 400 events over the 8: each event delivered once, every emitter's events in
    emit order and one at a time at the receiver, and more than one worker delivering
    soon after the first emit (within lease_timeout, 2 s, and a poll interval)."""
    tracker = Tracker(delay=0.01)
    receiver = tracked_receiver(tracker)
    try:
        url = template(receiver)
        pool = workers(launch, url, 3, "--lease-timeout", "2")
        web = launch(url, "--web")
        web.ready()
        emitters = [f"e{i}" for i in range(8)]
        mark = web.send(op="emit", first=0, count=400, emitters=emitters, rate=100)
        web.done("emit", mark)
        ok, failed = web.emitted(mark)
        assert len(ok) == 400 and not failed
        wait_for_ids(receiver, ok)
        requests = receiver.requests
        logs = "\n".join(node.stderr() for node in pool)
        repeated = [i for i, n in Counter(r.delivery_id for r in requests).items() if n > 1]
        assert repeated == [], f"sent twice though nobody died: {repeated}\n{logs}"
        for index, emitter in enumerate(emitters):
            check_order(requests, emitter, list(range(index, 400, 8)))
        assert max(tracker.most_inflight.values()) == 1, tracker.most_inflight
        pids = {str(node.pid) for node in pool}
        senders = Counter(r.header("X-Worker") for r in requests)
        assert set(senders) <= pids
        first_emit = web.wait_line(lambda line: "n" in line, start=mark)["t"]
        first_by: dict[Optional[str], float] = {}
        for r in requests:
            first_by.setdefault(r.header("X-Worker"), r.received_at)
        spread = sorted(t - first_emit for t in first_by.values())
        print(f"\ndeliveries per worker {sorted(senders.values())}; each worker's first "
              f"delivery after the first emit: {[f'{s:.2f} s' for s in spread]}")
        assert len(senders) > 1, senders
        # A holder of several leases hands one over once it has held it for lease_timeout
        # (2 s); the others find it at their next poll (1 s).
        assert spread[1] < 2.0 + 1.0, spread
    finally:
        receiver.stop()


def test_kill_9_of_the_lease_holder(launch: Callable[..., Node]) -> None:
    """The worker holding e0's lease is killed with SIGKILL while its try is at the
    receiver (request_timeout 1 s): another worker takes over and delivers the rest in order,
    repeating at most that one try (same delivery id), and nothing comes from the dead
    worker afterwards."""
    tracker = Tracker(delay=0.005, hold=lambda r: emitter_of(r) == "e0" and r.json()["n"] >= 40)
    receiver = tracked_receiver(tracker)
    try:
        url = template(receiver)
        # request_timeout 1 s: the held try is tried again no sooner than its start plus
        # request_timeout (CONTRACT section 10), which must fit the bound below.
        pool = workers(launch, url, 3, "--emitters", "2", "--lease-timeout", "1",
                       "--request-timeout", "1")
        web = launch(url, "--web", "--emitters", "2")
        web.ready()
        mark = web.send(op="emit", first=0, count=300, emitters=["e0", "e1"], rate=0)
        web.done("emit", mark)
        ok, failed = web.emitted(mark)
        assert len(ok) == 300 and not failed
        assert tracker.holding.wait(WAIT), "no try of e0 reached the hold"
        assert tracker.held is not None
        victim = next(n for n in pool if str(n.pid) == tracker.held.header("X-Worker"))
        victim.kill()
        killed = time.monotonic()
        tracker.release.set()
        wait_for_ids(receiver, ok)
        requests = receiver.requests
        # The victim's last try of each emitter may have been under way when it died (its
        # answer never recorded): only that one may come again. Taken now, once everything
        # arrived: the victim kept delivering e1 until the kill.
        under_way = {emitter_of(r): r.json()["n"] for r in requests
                     if r.header("X-Worker") == str(victim.pid)}
        repeated = check_order(requests, "e0", list(range(0, 300, 2)),
                               repeatable=frozenset({tracker.held.json()["n"]}))
        repeated += check_order(requests, "e1", list(range(1, 300, 2)),
                                repeatable=frozenset({under_way.get("e1", -1)}))
        late = [r for r in requests if r.received_at > killed]
        assert all(r.header("X-Worker") != str(victim.pid) for r in late)
        takeover = min(r.received_at for r in late if emitter_of(r) == "e0") - killed
        print(f"\nkilled {victim.pid} holding e0 at n={tracker.held.json()['n']}; "
              f"e0 taken over after {takeover:.2f} s; repeated: {repeated}")
        # Within request_timeout (and the engine's send grace) of the held try's start (the
        # dead holder's session ends at once), plus a poll interval (1 s) of the others.
        assert takeover < 1.0 + SEND_GRACE + 1.0, takeover
        assert max(tracker.most_inflight.values()) == 1, tracker.most_inflight
    finally:
        tracker.release.set()
        receiver.stop()


@pytest.mark.parametrize("outage", ["restart", "past-lease"])
def test_server_restart_mid_stream(
    outage: str, launch: Callable[..., Node], postgres_server: Server
) -> None:
    """The server is stopped (fast) and started again while three workers deliver and the
    web process emits: at once (``restart``), or once it has been down for longer than
    the workers' lease_timeout (``past-lease``: every lease expires meanwhile). Emits
    during the outage raise StoreError (counted as not emitted); afterwards every event
    that was emitted is delivered, in order per emitter, and a delivery id comes twice
    only for a try that was under way at the outage."""
    from postgres_server import PostgresServer

    tracker = Tracker(delay=0.005)
    receiver = tracked_receiver(tracker)
    try:
        url = template(receiver)
        workers(launch, url, 3, "--lease-timeout", "2", "--timeout", "1")
        web = launch(url, "--web", "--timeout", "1")
        web.ready()
        emitters = [f"e{i}" for i in range(8)]
        count = 600
        mark = web.send(op="emit", first=0, count=count, emitters=emitters, rate=100)
        web.wait_line(lambda line: line.get("n", 0) >= 100, start=mark)
        receiver.wait_for(50, WAIT)
        stopped = time.monotonic()
        if outage == "restart" or not isinstance(postgres_server, PostgresServer):
            postgres_server.restart("fast")
        else:
            postgres_server.stop("fast")
            # Down until the web process has seen it down for lease_timeout + 0.5 s.
            web.wait_line(lambda line: line.get("ok") is False and line["t"] - stopped > 2.5,
                          start=mark)
            postgres_server.start()
        back = time.monotonic()
        web.done("emit", mark, timeout=30)
        ok, failed = web.emitted(mark)
        print(f"\nserver down for {back - stopped:.2f} s; {len(ok)} emitted, "
              f"{len(failed)} emits raised StoreError")
        assert len(ok) + len(failed) == count
        assert ok, "nothing was emitted"
        wait_for_ids(receiver, ok, timeout=30)
        requests = receiver.requests
        delivered = {str(r.delivery_id) for r in requests}
        assert delivered <= ok | failed  # an emit that raised may still have committed
        repeats = 0
        for index, emitter in enumerate(emitters):
            got = numbers(requests, emitter)
            mine = sorted(n for n in (int(i[3:]) for i in delivered) if n % 8 == index)
            # A try under way at the outage was sent before the server was back (the
            # server may answer a little before start() returns, so any try sent before
            # then may be it). A restart also ends every holder's lock session (CONTRACT
            # section 10, takeover): until a holder's next store call opens it again (at
            # the latest its renewal, lease_timeout / 2), another worker may take the lease
            # over, and the try the holder had under way then repeats too. check_order
            # sees that a copy comes right after its first (in order, nothing between),
            # and one emitter has one try under way at a time.
            lock_back = back + 2.0  # the workers' lease_timeout
            before = frozenset(r.json()["n"] for r in requests
                               if emitter_of(r) == emitter and r.received_at < lock_back)
            repeated = check_order(requests, emitter, mine, repeatable=before)
            assert len(repeated) <= 1, (emitter, repeated, got)
            repeats += len(repeated)
        print(f"repeated deliveries: {repeats}")
        assert max(tracker.most_inflight.values()) == 1, tracker.most_inflight
    finally:
        receiver.stop()


def test_pause_from_the_web_process_stops_the_workers(launch: Callable[..., Node]) -> None:
    """A pause from the web process (deliver=False) stops delivery in the workers within a
    second; after a restart from the web process the rest is delivered, in order, once."""
    tracker = Tracker(delay=0.01)
    receiver = tracked_receiver(tracker)
    try:
        url = template(receiver)
        workers(launch, url, 2, "--emitters", "1", "--lease-timeout", "2")
        web = launch(url, "--web", "--emitters", "1")
        web.ready()
        mark = web.send(op="emit", first=0, count=200, emitters=["e0"], rate=0)
        web.done("emit", mark)
        ok, _ = web.emitted(mark)
        assert len(ok) == 200
        receiver.wait_for(20, WAIT)
        paused = web.call("pause", emitter="e0")["t"]
        # Watch for two seconds after the pause: deliveries may go on for at most one.
        with pytest.raises(TimeoutError):
            receiver.wait_for(200, max(paused + 2.0 - time.monotonic(), 0.0))
        requests = receiver.requests
        last = max(r.received_at for r in requests) - paused
        print(f"\nlast delivery {last * 1000:.0f} ms after the pause; "
              f"{len(requests)} of 200 delivered while paused")
        assert [r for r in requests if r.received_at > paused + 1.0] == []
        assert len(requests) < 200
        web.call("restart", emitter="e0")
        wait_for_ids(receiver, ok)
        check_order(receiver.requests, "e0", list(range(200)))
        assert max(tracker.most_inflight.values()) == 1, tracker.most_inflight
    finally:
        receiver.stop()


# -- the store's content ---------------------------------------------------------------------------

SECRET = "s3cr3t-value-7d41c09e2b"


def test_no_secret_in_any_table(launch: Callable[..., Node], pg_store_url: str) -> None:
    """Workers and a web process with Config(secret=...), the secret also as the URL's
    password and as a query token, deliver (e0), give up on a receiver answering 500 (e1)
    and on a closed port (e2), and keep events of a paused emitter (e3): no column of any
    table of the database holds the secret, in text or in bytes (and the same search finds
    what is stored)."""
    tracker = Tracker(statuses={"e1": 500})
    receiver = tracked_receiver(tracker, secret=SECRET)
    try:
        with_secret = receiver.url.replace("http://", f"http://hook:{SECRET}@", 1)
        url = with_secret + "/{emitter}?token=" + SECRET
        options = ["--emitters", "4", "--secret", SECRET, "--max-attempts", "2",
                   "--url", f"e2=http://hook:{SECRET}@127.0.0.1:9/hooks/e2?token={SECRET}"]
        workers(launch, url, 2, *options)
        web = launch(url, "--web", *options)
        web.ready()
        web.call("pause", emitter="e3")
        mark = web.send(op="emit", first=0, count=40, emitters=["e0", "e1", "e2", "e3"])
        web.done("emit", mark)
        assert len(web.emitted(mark)[0]) == 40
        receiver.wait_for(10 + 2 * 10, WAIT)  # e0 once each, e1 twice each
        store = PostgresStore(pg_store_url)
        try:
            wait_until(lambda: store.state("e1").failed == 10 and store.state("e2").failed == 10,
                       WAIT, "e1 and e2 gave up on every event")
            assert store.state("e3").queued == 10
            errors = {event.error for e in ("e1", "e2") for event in store.failed(e)}
        finally:
            store.close()
        assert all(r.signature_valid for r in receiver.requests)  # signed with the secret
    finally:
        receiver.stop()

    columns = sql(
        pg_store_url,
        "SELECT c.table_schema, c.table_name, c.column_name, c.data_type "
        "FROM information_schema.columns c JOIN information_schema.tables t "
        "USING (table_schema, table_name) WHERE t.table_type = 'BASE TABLE' "
        "AND c.table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    assert {table for schema, table, _, _ in columns if schema == SCHEMA} >= {"events",
                                                                              "emitters"}

    def rows_holding(schema: Any, table: Any, column: Any, data_type: Any, needle: str) -> int:
        # bytea is searched byte for byte (its text form is hex); every other type as text.
        found = (
            f'position(convert_to(%s, \'UTF8\') IN "{column}")'
            if data_type == "bytea"
            else f'strpos("{column}"::text, %s)'
        )
        query = f'SELECT count(*) FROM "{schema}"."{table}" WHERE {found} > 0'
        return int(sql(pg_store_url, query, (needle,))[0][0])

    # The search finds what is there, so that finding no secret means something.
    types = {(table, column): data_type for schema, table, column, data_type in columns
             if schema == SCHEMA}
    assert rows_holding(SCHEMA, "events", "body", types["events", "body"],
                        '"emitter":"e3"') == 10
    print(f"\nerrors stored: {sorted(str(e) for e in errors)}")
    assert rows_holding(SCHEMA, "events", "error", types["events", "error"], "500") == 10, errors
    holding = {f"{s}.{t}.{c}": rows_holding(s, t, c, d, SECRET) for s, t, c, d in columns}
    assert {name: count for name, count in holding.items() if count} == {}, errors
    for needle in (SECRET.encode().hex(), "token="):
        assert {c: n for (s, t, c, d) in columns
                if (n := rows_holding(s, t, c, d, needle))} == {}, (needle, errors)


def test_five_processes_start_at_once_on_a_fresh_database(
    launch: Callable[..., Node], pg_store_url: str, receiver: Receiver
) -> None:
    """Five processes, each with its own store, attach and emit at the same moment on a
    fresh database: none fails, the schema is made once (one transaction made every
    relation of it, one version row), and every event is stored."""
    url = template(receiver)
    racers = [launch(url, "--web", "--wait-go", "--emitters", "2") for _ in range(5)]
    for node in racers:
        node.wait_line(lambda line: line.get("ready") is False)
    for node in racers:
        node.process.stdin.write("go\n")  # type: ignore[union-attr]
        node.process.stdin.flush()  # type: ignore[union-attr]
    marks = []
    for index, node in enumerate(racers):
        node.ready()
        marks.append(node.send(op="emit", first=index * 10, count=10, emitters=["e0", "e1"]))
    for node, mark in zip(racers, marks):
        node.done("emit", mark)
        ok, failed = node.emitted(mark)
        assert len(ok) == 10 and not failed, node.stderr()
    for node in racers:
        node.stop()
        assert node.process.returncode == 0
    assert sql(pg_store_url, f"SELECT count(*) FROM {SCHEMA}.schema_version") == [(1,)]
    creators = sql(
        pg_store_url,
        "SELECT DISTINCT xmin::text FROM pg_class WHERE relnamespace = %s::regnamespace "
        "UNION SELECT xmin::text FROM pg_namespace WHERE nspname = %s",
        (SCHEMA, SCHEMA),
    )
    assert len(creators) == 1, creators
    queued = sql(pg_store_url, f"SELECT emitter_id, count(*) FROM {SCHEMA}.events "
                 "GROUP BY emitter_id ORDER BY emitter_id")
    assert queued == [("e0", 25), ("e1", 25)]


# -- takeover: the holder's session tells whether it lives (CONTRACT section 10) ------------


def lease_holder(url: str, emitter_id: str) -> Optional[str]:
    """The holder of ``emitter_id``'s unexpired lease, as its row says (dead or alive)."""
    rows = sql(url, f"SELECT lease_holder FROM {SCHEMA}.emitters WHERE emitter_id = %s "
               "AND lease_expires > clock_timestamp()", (emitter_id,))
    return rows[0][0] if rows else None


def test_kill_9_of_an_idle_holder_is_taken_over_within_2_seconds(
    launch: Callable[..., Node], pg_store_url: str
) -> None:
    """The worker holding e0's lease (lease_timeout 30 s), idle between tries, is killed
    with SIGKILL; the next event is delivered by the other, running worker within 2 s of
    the kill."""
    receiver = tracked_receiver(Tracker())
    try:
        url = template(receiver)
        pool = workers(launch, url, 2, "--emitters", "1")
        web = launch(url, "--web", "--emitters", "1")
        web.ready()
        web.call("emit", first=0, count=1, emitters=["e0"])
        wait_for_ids(receiver, {"ev-0"})
        first = receiver.requests[0].header("X-Worker")
        victim = next(n for n in pool if str(n.pid) == first)
        survivor = next(n for n in pool if n is not victim)
        assert (lease_holder(pg_store_url, "e0") or "").endswith(f":{victim.pid}")
        victim.kill()
        killed = time.monotonic()
        web.call("emit", first=1, count=1, emitters=["e0"])
        wait_for_ids(receiver, {"ev-1"})
        (late,) = [r for r in receiver.requests if r.delivery_id == "ev-1"]
        print(f"\nidle holder killed; next event delivered {late.received_at - killed:.2f} s "
              "after the kill")
        assert late.header("X-Worker") == str(survivor.pid)
        assert late.received_at - killed < 2.0
    finally:
        receiver.stop()


@pytest.mark.parametrize("end", ["SIGKILL", "SIGTERM", "exit"])
def test_a_holder_ending_mid_try_is_followed_after_request_timeout_never_overlapping(
    launch: Callable[..., Node], end: str
) -> None:
    """The worker whose try of e0's first event is at the receiver (request_timeout 3 s)
    ends: killed with SIGKILL, with SIGTERM (Python's default handler), or told to exit
    (shutdown with a 0.5 s exit deadline, the try still under way); the receiver takes
    2.9 s over that try, as a slow one would. The other worker tries the event again 3 to
    5 s after the first try began, never while the first is still in flight, then delivers
    the rest in order."""
    tracker = Tracker(hold=lambda r: emitter_of(r) == "e0" and r.json()["n"] == 0)
    receiver = tracked_receiver(tracker)
    try:
        url = template(receiver)
        pool = workers(launch, url, 2, "--emitters", "1", "--request-timeout", "3")
        web = launch(url, "--web", "--emitters", "1")
        web.ready()
        mark = web.send(op="emit", first=0, count=5, emitters=["e0"], rate=0)
        web.done("emit", mark)
        assert tracker.holding.wait(WAIT), "the first try never reached the receiver"
        held = tracker.held
        assert held is not None
        victim = next(n for n in pool if str(n.pid) == held.header("X-Worker"))
        if end == "exit":
            victim.send(op="exit", timeout=0.5)
        else:
            os.kill(victim.pid, getattr(signal, end))
        # The slow receiver answers the dead worker's try 2.9 s after it began.
        threading.Timer(max(0.0, held.received_at + 2.9 - time.monotonic()),
                        tracker.release.set).start()
        wait_for_ids(receiver, {f"ev-{n}" for n in range(5)})
        tries = [r for r in receiver.requests if r.delivery_id == "ev-0"]
        assert len(tries) == 2, [r.header("X-Worker") for r in tries]
        gap = tries[1].received_at - tries[0].received_at
        print(f"\n{end} mid-try; tried again {gap:.2f} s after the first try began")
        # The first try began (its start plus 3 s is the earliest next try) a little before
        # the receiver read it; the receiver kept it in flight 2.9 s after that.
        assert tracker.most_inflight["e0"] == 1, tracker.most_inflight
        assert 2.9 <= gap <= 5.0, gap
        check_order(receiver.requests, "e0", list(range(5)), repeatable=frozenset({0}))
    finally:
        tracker.release.set()
        receiver.stop()


def test_a_worker_killed_and_replaced_at_once_resumes_within_request_timeout_and_2_seconds(
    launch: Callable[..., Node],
) -> None:
    """The only worker is killed with SIGKILL while delivering a stream (request_timeout
    3 s, lease_timeout 30 s) and a new worker is started at once, as a supervisor would:
    deliveries resume within request_timeout + 2 s of the kill, in order, nothing lost."""
    receiver = tracked_receiver(Tracker(delay=0.02))
    try:
        url = template(receiver)
        (victim,) = workers(launch, url, 1, "--emitters", "1", "--request-timeout", "3")
        web = launch(url, "--web", "--emitters", "1")
        web.ready()
        mark = web.send(op="emit", first=0, count=200, emitters=["e0"], rate=0)
        web.done("emit", mark)
        ok, failed = web.emitted(mark)
        assert len(ok) == 200 and not failed
        wait_until(lambda: len(receiver.requests) >= 20, WAIT, "the stream under way")
        victim.kill()
        killed = time.monotonic()
        replacement = launch(url, "--emitters", "1", "--request-timeout", "3")
        wait_for_ids(receiver, ok)
        resumed = min(r.received_at for r in receiver.requests
                      if r.header("X-Worker") == str(replacement.pid))
        print(f"\nworker killed and replaced; deliveries resumed {resumed - killed:.2f} s "
              "after the kill")
        assert resumed - killed < 3.0 + 2.0
        under_way = max(numbers([r for r in receiver.requests
                                 if r.header("X-Worker") == str(victim.pid)], "e0"))
        check_order(receiver.requests, "e0", list(range(200)),
                    repeatable=frozenset({under_way}))
    finally:
        receiver.stop()
