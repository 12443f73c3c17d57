"""Durable delivery over one SQLite file, end to end (CONTRACT sections 5, 6, 10 and 14).

Real child processes (``tests/support/scripts/durable_child.py``, and gunicorn serving
``tests/support/scripts/durable_app.py``) attach, emit and print what they emitted; the tests kill
them (kill -9, SIGTERM with Python's default handler) mid-stream, start others over the same
file, and check at a receiver on 127.0.0.1 that every event arrived, in emit order, with its
count of tries going on. The receiver holds its answers until the test releases them (or for
a few milliseconds), so "mid-stream" is a state the test sees, not a moment it guesses.

Every wait is on a condition with a deadline: a child's line, a request at the receiver, a
process's end, the store's state. Children use a lease_timeout of 1 s.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import attrs
import pytest
import requests
from tinyfs import mount_then, tmpfs_command

from webhooks_emitter import (
    Config,
    EmitterNotFoundError,
    StoreError,
    WebhooksEmitter,
)
from webhooks_emitter.stores import SQLiteStore
from webhooks_emitter.testing import ReceivedRequest, Receiver

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parents[1] / "support" / "scripts"
CHILD = SCRIPTS / "durable_child.py"
#: Seconds a test waits for a condition before it fails (generous: the machine is shared).
WAIT = 20.0
#: The lease_timeout of every process over the file.
LEASE = 1.0
#: How much later than ``LEASE`` another process may take over: its housekeeping thread
#: polls the store once a second when nothing changes (a dead holder changes nothing), plus
#: room for a loaded machine.
POLL_SLACK = 2.0


# -- helpers ---------------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child program: this checkout first on its path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 10 ms until it holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        threading.Event().wait(0.01)


class Child:
    """A running ``durable_child.py``: its JSON lines as they come, its stderr kept."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=SCRIPTS,
            env=child_env(),
        )
        self._cond = threading.Condition()
        self.lines: list[dict[str, Any]] = []
        self._returned: Counter[str] = Counter()
        self._stdout_done = self._stderr_done = False
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        self._pump(self.process.stdout, "_stdout_done", self._parsed)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self._pump(self.process.stderr, "_stderr_done", self._stderr.append)

    def _parsed(self, line: str) -> None:
        try:
            self.lines.append(json.loads(line))
        except ValueError:
            pass  # a line cut short by a kill

    def _pump(self, stream: Any, done: str, keep: Callable[[str], None]) -> None:
        """Hand each line of ``stream`` to ``keep`` under the lock, then set ``done``."""
        for line in stream:
            with self._cond:
                keep(line)
                self._cond.notify_all()
        with self._cond:
            setattr(self, done, True)
            self._cond.notify_all()

    def describe(self) -> str:
        """The program, its status and its error output, for assertion messages."""
        return (
            f"durable_child.py {' '.join(self.args)}: exit {self.process.poll()}\n"
            f"stdout lines: {self.lines}\nstderr:\n{''.join(self._stderr)}"
        )

    def expect(self, key: str, timeout: float = WAIT) -> dict[str, Any]:
        """The next line holding ``key`` (each line is returned once per key)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [line for line in self.lines if key in line]
                if len(found) > self._returned[key]:
                    self._returned[key] += 1
                    return found[self._returned[key] - 1]
                remaining = deadline - time.monotonic()
                if self._stdout_done or remaining <= 0:
                    pytest.fail(f"no {key!r} line from the child\n{self.describe()}")
                self._cond.wait(remaining)

    def deliveries(self) -> list[dict[str, Any]]:
        """What ``on_delivery`` reported in this process so far."""
        with self._cond:
            return [line["delivery"] for line in self.lines if "delivery" in line]

    def logs(self) -> list[dict[str, Any]]:
        """The library's log records the child wrote (see ``scripts/jsonlog.py``)."""
        with self._cond:
            lines = list(self._stderr)
        return [json.loads(line[4:]) for line in lines if line.startswith("LOG ")]

    def wait_log(self, text: str, timeout: float = WAIT) -> dict[str, Any]:
        """The first log record of the child whose message contains ``text``, waiting for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._stderr:
                    if line.startswith("LOG ") and text in json.loads(line[4:])["message"]:
                        return dict(json.loads(line[4:]))
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stderr_done:
                    pytest.fail(f"no log record saying {text!r}\n{self.describe()}")
                self._cond.wait(remaining)

    def send(self, line: str) -> None:
        """Write one line to the child's stdin."""
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def wait(self, timeout: float = WAIT) -> int:
        """Wait for the child to end (its output read to the end); its status."""
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the child did not end within {timeout:g} s\n{self.describe()}")
        for reader in self._readers:
            reader.join(timeout)
        return status

    def kill(self, signum: int = signal.SIGKILL) -> int:
        """Send ``signum`` and wait for the child to end; its status."""
        self.process.send_signal(signum)
        return self.wait()

    def close(self) -> None:
        """Make sure the child is gone."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(WAIT)
        for reader in self._readers:
            reader.join(WAIT)
        if self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except OSError:
                pass  # its reader is gone


class HookReceiver(Receiver):
    """A :class:`Receiver` that holds answers as the test says, answers by a rule, and counts
    the requests in flight per path.

    Args:
        gated: hold every answer until :meth:`allow` hands out answers or :meth:`open`
            releases them all.
        hold: otherwise, hold each answer this many seconds (cut short by :meth:`open`).
        status: the status to answer to a request (204 by default).
        secret: check signatures with this secret.

    A request counts as in flight from when it was read until its answer is decided, just
    before it is written: the sender cannot learn the answer (and send its next try) before
    that, so an overlap of one emitter's tries always shows here.
    """

    def __init__(
        self,
        *,
        gated: bool = False,
        hold: float = 0.0,
        status: Optional[Callable[[ReceivedRequest], int]] = None,
        secret: Optional[Any] = None,
    ) -> None:
        self._gate = threading.Condition()
        self._budget: Optional[int] = 0 if gated else None
        self._opened = threading.Event()
        self._hold = hold
        self._status = status or (lambda request: 204)
        self._inflight: Counter[str] = Counter()
        self.max_inflight: Counter[str] = Counter()
        #: (delivery id, try number, status) of every answer decided, in order.
        self.answers: list[tuple[Optional[str], int, int]] = []
        super().__init__(secret=secret, responder=self._respond)

    def allow(self, count: int) -> None:
        """Let ``count`` more held answers go."""
        with self._gate:
            assert self._budget is not None, "allow() needs gated=True"
            self._budget += count
            self._gate.notify_all()

    def open(self) -> None:
        """Answer every held request now, and every later one at once."""
        with self._gate:
            self._opened.set()
            self._gate.notify_all()

    def wait_answers(self, count: int, timeout: float = WAIT) -> None:
        """Wait until ``count`` answers were decided."""
        deadline = time.monotonic() + timeout
        with self._gate:
            while len(self.answers) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self.answers)} of {count} answers in {timeout} s")
                self._gate.wait(remaining)

    def _respond(self, request: ReceivedRequest) -> int:
        path = request.path
        with self._gate:
            self._inflight[path] += 1
            self.max_inflight[path] = max(self.max_inflight[path], self._inflight[path])
        status = 500
        try:
            if self._budget is not None:
                with self._gate:
                    deadline = time.monotonic() + 60
                    while not self._opened.is_set() and self._budget <= 0:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._gate.wait(remaining)
                    if not self._opened.is_set():
                        self._budget -= 1
            elif self._hold:
                self._opened.wait(self._hold)
            status = self._status(request)
        finally:
            with self._gate:
                self._inflight[path] -= 1
                self.answers.append((request.delivery_id, request.try_number, status))
                self._gate.notify_all()
        return status


def first_arrivals(receiver: Receiver, path: Optional[str] = None) -> list[str]:
    """The delivery ids the receiver got (on ``path``), each once, in order of first arrival."""
    seen: dict[str, None] = {}
    for request in receiver.requests:
        if path is None or request.path == path:
            seen.setdefault(str(request.delivery_id), None)
    return list(seen)


def tries_of(receiver: Receiver) -> dict[str, list[int]]:
    """Per delivery id, the try numbers the receiver saw, in arrival order."""
    tries: dict[str, list[int]] = {}
    for request in receiver.requests:
        tries.setdefault(str(request.delivery_id), []).append(request.try_number)
    return tries


def assert_in_emit_order(receiver: Receiver, ids: list[str]) -> None:
    """Every request of ``ids`` arrived in emit order: a try of an event never comes after a
    try of a later one (a repeat of the event under way at a death is allowed)."""
    position = {request_id: index for index, request_id in enumerate(ids)}
    order = [position[str(r.delivery_id)] for r in receiver.requests if r.delivery_id in position]
    assert order == sorted(order), order


def scan_file(path: Path, needles: list[bytes]) -> list[str]:
    """Where in the SQLite file ``path`` any of ``needles`` appears: every column of every
    table as SQLite reads it, and the raw bytes of the file and its -wal and -shm files."""
    found = []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        assert tables, "the file holds no table"
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    raw = value.encode() if isinstance(value, str) else value
                    if isinstance(raw, bytes) and any(needle in raw for needle in needles):
                        found.append(f"table {table}: {value!r}")
    finally:
        conn.close()
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{path}{suffix}")
        if part.exists():
            data = part.read_bytes()
            found += [f"{part.name}: {n!r}" for n in needles if n in data]
    return found


class LogWatch(logging.Handler):
    """Keeps the library's log records; :meth:`wait` for one whose message says something."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._cond = threading.Condition()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        with self._cond:
            self.records.append(record)
            self._cond.notify_all()

    def wait(self, text: str, timeout: float = WAIT) -> logging.LogRecord:
        """The first record whose message contains ``text``, waiting for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for record in self.records:
                    if text in record.getMessage():
                        return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    messages = [r.getMessage() for r in self.records]
                    pytest.fail(f"no log record saying {text!r} in {timeout:g} s: {messages}")
                self._cond.wait(remaining)


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The store file the processes of the test share (not created)."""
    return tmp_path / "hooks.db"


@pytest.fixture
def spawn() -> Iterator[Callable[..., Child]]:
    """Start ``durable_child.py`` with the given arguments; every child is gone at the end."""
    children: list[Child] = []

    def start(*args: Any) -> Child:
        child = Child(*(str(arg) for arg in args))
        children.append(child)
        return child

    yield start
    for child in children:
        child.close()


@pytest.fixture
def make_receiver() -> Iterator[Callable[..., HookReceiver]]:
    """Start a :class:`HookReceiver`; each is opened (held answers let go) and stopped."""
    receivers: list[HookReceiver] = []

    def make(**options: Any) -> HookReceiver:
        receiver = HookReceiver(**options)
        receiver.start()
        receivers.append(receiver)
        return receiver

    yield make
    for receiver in receivers:
        receiver.open()
        receiver.stop()


@pytest.fixture
def over() -> Iterator[Callable[..., WebhooksEmitter]]:
    """A WebhooksEmitter of this process over a file (``over(path, **store_options)``),
    shut down at the end."""
    made: list[WebhooksEmitter] = []

    def make(path: Path, **options: Any) -> WebhooksEmitter:
        options.setdefault("lease_timeout", LEASE)
        hub = WebhooksEmitter(exit_timeout=1.0, store=SQLiteStore(path, **options))
        made.append(hub)
        return hub

    yield make
    for hub in made:
        hub.shutdown(2.0)


@pytest.fixture
def log_watch() -> Iterator[LogWatch]:
    """The library's log records (INFO and up) of this process."""
    watch = LogWatch()
    logger = logging.getLogger("webhooks_emitter")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(watch)
    yield watch
    logger.removeHandler(watch)
    logger.setLevel(level)


def fast_config(url: str, **fields: Any) -> Config:
    """A Config with millisecond backoffs."""
    return attrs.evolve(
        Config(url, backoff_start=0.001, backoff_limit=0.01, request_timeout=10.0), **fields
    )


# -- a process dies mid-stream -----------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_process_killed_mid_stream_loses_nothing(
    db: Path,
    spawn: Callable[..., Child],
    make_receiver: Callable[..., HookReceiver],
    over: Callable[..., WebhooksEmitter],
    signum: int,
) -> None:
    """kill -9, or SIGTERM with Python's default handler, while the third of 8 events is on
    the wire (the receiver holds its answer): a new process attaching the same emitter id
    over the file delivers the rest, in emit order; the event that was under way is sent
    again with the same delivery id, as its second try (its count goes on)."""
    receiver = make_receiver(gated=True)
    receiver.allow(2)
    first = spawn(db, receiver.url, "--emit", 8, "--then", "block")
    ids = first.expect("ids")["ids"]
    receiver.wait_for(3)  # two answered, the third held on the wire
    assert first.kill(signum) == -signum, first.describe()
    assert [(d["request_id"], d["attempts"]) for d in first.deliveries()] == [
        (ids[0], 1),
        (ids[1], 1),
    ]

    receiver.open()
    second = spawn(db, receiver.url, "--then", "flush")
    assert second.expect("flushed")["flushed"] is True, second.describe()
    assert second.wait() == 0, second.describe()

    assert first_arrivals(receiver) == ids
    assert_in_emit_order(receiver, ids)
    assert tries_of(receiver) == {
        request_id: [1, 2] if index == 2 else [1] for index, request_id in enumerate(ids)
    }
    assert {d["request_id"]: (d["attempts"], d["delivered"]) for d in second.deliveries()} == {
        request_id: (2 if index == 2 else 1, True)
        for index, request_id in enumerate(ids)
        if index >= 2
    }
    stats = over(db).stats("durable")
    assert (stats.queued, stats.failed) == (0, 0)


@pytest.mark.parametrize("last_answer", [500, 204], ids=["then-given-up", "then-delivered"])
def test_an_event_killed_mid_retry_goes_on_counting_its_tries(
    db: Path,
    spawn: Callable[..., Child],
    make_receiver: Callable[..., HookReceiver],
    over: Callable[..., WebhooksEmitter],
    last_answer: int,
) -> None:
    """max_attempts=3 and the first event failed twice (500) when the process is killed,
    waiting 1.5 s (retry_schedule) before its third try: the next process makes exactly one
    more try, its third, no sooner than the stored time, then gives the event up (failed()
    shows attempts=3) or has it delivered; the events behind it follow, in order."""

    def status(request: ReceivedRequest) -> int:
        if request.json()["n"] != 0:
            return 204
        return 500 if request.try_number <= 2 else last_answer

    receiver = make_receiver(status=status)
    retry = ("--retry-schedule", "0.01,1.5", "--max-attempts", 3)
    first = spawn(db, receiver.url, "--emit", 4, "--then", "block", *retry)
    ids = first.expect("ids")["ids"]
    first.wait_log("try 2 of 3 failed")  # logged once the failed try is recorded
    assert first.kill(signal.SIGKILL) == -signal.SIGKILL
    assert [str(r.delivery_id) for r in receiver.requests] == [ids[0], ids[0]]

    second = spawn(db, receiver.url, "--then", "flush", *retry)
    assert second.expect("flushed")["flushed"] is True, second.describe()
    assert second.wait() == 0, second.describe()

    requests_seen = receiver.requests
    tries = tries_of(receiver)
    assert tries[ids[0]] == [1, 2, 3]  # never a fourth
    assert all(tries[request_id] == [1] for request_id in ids[1:])
    assert first_arrivals(receiver) == ids
    assert_in_emit_order(receiver, ids)
    # The wait the dead process chose (1.5 s, +10 % jitter) was kept by the next one.
    assert requests_seen[2].received_at - requests_seen[1].received_at >= 1.5
    outcomes = {d["request_id"]: d for d in second.deliveries()}
    assert outcomes[ids[0]]["attempts"] == 3
    assert outcomes[ids[0]]["delivered"] is (last_answer == 204)
    assert all(outcomes[i]["delivered"] and outcomes[i]["attempts"] == 1 for i in ids[1:])

    hub = over(db)  # never attaches the emitter
    failed = hub.failed("durable")
    if last_answer == 500:
        assert [(f.request_id, f.attempts, f.status_code) for f in failed] == [(ids[0], 3, 500)]
        assert json.loads(failed[0].body) == {"proc": "p", "n": 0}
    else:
        assert failed == []
    stats = hub.stats("durable")
    assert (stats.queued, stats.failed) == (0, len(failed))


def test_an_acknowledged_emit_survives_a_kill_9_at_once(
    db: Path, spawn: Callable[..., Child], make_receiver: Callable[..., HookReceiver]
) -> None:
    """A process emits 20 events, prints their ids once emit() returned, and SIGKILLs itself
    at once (the receiver answers nothing meanwhile): a new process delivers all 20, in
    order."""
    receiver = make_receiver(gated=True)
    first = spawn(db, receiver.url, "--emit", 20, "--then", "kill")
    ids = first.expect("ids")["ids"]
    assert first.wait() == -signal.SIGKILL, first.describe()
    assert len(ids) == 20

    receiver.open()
    second = spawn(db, receiver.url, "--then", "flush")
    assert second.expect("flushed")["flushed"] is True, second.describe()
    assert second.wait() == 0, second.describe()
    assert first_arrivals(receiver) == ids
    assert_in_emit_order(receiver, ids)
    assert sorted(d["request_id"] for d in second.deliveries() if d["delivered"]) == sorted(ids)


def test_the_exit_hook_leaves_what_it_could_not_deliver_in_the_store(
    db: Path, spawn: Callable[..., Child], make_receiver: Callable[..., HookReceiver]
) -> None:
    """A program ends normally while the receiver holds its first event: its exit hook stops
    after exit_timeout (0.5 s), logs the 5 events left in the store at INFO and nothing at
    WARNING or above (nothing is lost); the next process delivers them all, in order."""
    receiver = make_receiver(gated=True)
    first = spawn(db, receiver.url, "--emit", 5, "--exit-timeout", 0.5, "--then", "exit")
    ids = first.expect("ids")["ids"]
    assert first.wait() == 0, first.describe()
    records = first.logs()
    assert [r for r in records if r["level"] not in ("DEBUG", "INFO")] == [], records
    kept = [r for r in records if r["phase"] == "exit" and "stay in the store" in r["message"]]
    assert kept and re.search(r"\b5 event", kept[0]["message"]), records

    receiver.open()
    second = spawn(db, receiver.url, "--then", "flush")
    assert second.expect("flushed")["flushed"] is True, second.describe()
    assert second.wait() == 0, second.describe()
    assert first_arrivals(receiver) == ids
    assert_in_emit_order(receiver, ids)


def test_detach_keeps_stored_events_for_the_next_attach(
    db: Path,
    make_receiver: Callable[..., HookReceiver],
    over: Callable[..., WebhooksEmitter],
    log_watch: LogWatch,
) -> None:
    """detach() with a try on the wire and 4 events behind it returns without waiting for
    the try and keeps all 5 in the store (logged at INFO with the count); the try, answered
    later, is recorded; attaching the id again delivers the other 4, in order, each once."""
    receiver = make_receiver(gated=True)
    hub = over(db)
    config = fast_config(receiver.url)
    hub.attach("d", "tick", config)
    ids = [hub.emit("tick", {"n": n}) for n in range(5)]
    receiver.wait_for(1)
    hub.detach("d")
    record = log_watch.wait("stay in the store")
    assert record.levelno == logging.INFO and re.search(r"\b5 event", record.getMessage())
    assert hub.stats("d").queued == 5

    receiver.allow(1)
    wait_until(lambda: hub.stats("d").queued == 4, WAIT, "the try under way at detach recorded")
    receiver.open()
    hub.attach("d", "tick", config)
    assert hub.flush(WAIT)
    assert [str(r.delivery_id) for r in receiver.requests] == ids


# -- several processes over one file -----------------------------------------------------------


def test_three_processes_emitting_never_overlap_one_emitters_tries(
    db: Path,
    spawn: Callable[..., Child],
    make_receiver: Callable[..., HookReceiver],
    over: Callable[..., WebhooksEmitter],
) -> None:
    """Three processes attach the same emitter id over one file, deliver=True, and emit at
    the same time, 5 events each per round for 6 rounds; between rounds the lease is let
    go (idle_timeout 0.05 s), so that the processes race for it again. The receiver never
    has two tries of the emitter in flight at once, gets every event exactly once, and each
    process's events in its emit order."""
    receiver = make_receiver(hold=0.005)
    store = over(db).store
    names = ("a", "b", "c")
    children = [
        spawn(db, receiver.url, "--idle-timeout", 0.05, "--tag", name, "--then", "commands")
        for name in names
    ]
    for child in children:
        child.expect("ready")
    ids: dict[str, list[str]] = {name: [] for name in names}
    for _ in range(6):
        for child in children:
            child.send("emit 5")
        for name, child in zip(names, children):
            ids[name] += child.expect("ids")["ids"]
        for child in children:
            child.send("flush 20")
        for child in children:
            assert child.expect("flushed")["flushed"] is True, child.describe()
        wait_until(lambda: store.state("durable").lease_holder is None, WAIT, "the lease let go")
    for child in children:
        child.send("exit")
    for child in children:
        assert child.wait() == 0, child.describe()

    requests_seen = receiver.requests
    assert receiver.max_inflight["/hooks"] == 1
    assert sorted(str(r.delivery_id) for r in requests_seen) == sorted(
        request_id for emitted in ids.values() for request_id in emitted
    )
    for name in names:
        delivered = [str(r.delivery_id) for r in requests_seen if r.json()["proc"] == name]
        assert delivered == ids[name], name
    assert sum(len(child.deliveries()) for child in children) == 90


def test_the_lease_holder_killed_is_taken_over_within_lease_timeout(
    db: Path,
    spawn: Callable[..., Child],
    make_receiver: Callable[..., HookReceiver],
    over: Callable[..., WebhooksEmitter],
) -> None:
    """Two processes attach one emitter id; the one holding its lease is killed (kill -9)
    with a try on the wire: the other takes over (at once: the store sees the holder gone)
    and delivers the rest, in order, repeating only the try under way, no sooner than that
    try's start plus request_timeout (5 s) once the engine waits it out."""
    receiver = make_receiver(gated=True)
    receiver.allow(1)
    holder = spawn(db, receiver.url, "--emit", 10, "--then", "block", "--request-timeout", 5)
    holder_name = holder.expect("ready")["ready"]["holder"]
    ids = holder.expect("ids")["ids"]
    receiver.wait_for(2)
    store = over(db).store
    assert store.state("durable").lease_holder == holder_name

    other = spawn(db, receiver.url, "--then", "flush", "--request-timeout", 5)
    other.expect("ready")
    assert holder.kill(signal.SIGKILL) == -signal.SIGKILL
    killed_at = time.monotonic()
    receiver.open()
    taken_over = receiver.wait_for(3)[2]
    assert taken_over.delivery_id == ids[1]  # the try under way at the death, again
    assert taken_over.received_at - killed_at < 5 + POLL_SLACK

    assert other.expect("flushed")["flushed"] is True, other.describe()
    assert other.wait() == 0, other.describe()
    assert first_arrivals(receiver) == ids
    assert_in_emit_order(receiver, ids)
    assert tries_of(receiver)[ids[1]] == [1, 2]
    assert {d["request_id"]: d["attempts"] for d in other.deliveries()} == {
        request_id: 2 if index == 1 else 1 for index, request_id in enumerate(ids) if index >= 1
    }


#: CONTRACT section 10, "Takeover": another process takes over within 2 s of a holder's end.
TAKEOVER = 2.0
#: A lease_timeout far above the takeover, so that only the store's proof of death explains
#: a takeover in time.
LONG_LEASE = 30.0


@pytest.mark.parametrize("emitted_by", ["the other worker", "a deliver=False process"])
def test_an_idle_holder_killed_is_taken_over_within_two_seconds(
    db: Path,
    spawn: Callable[..., Child],
    make_receiver: Callable[..., HookReceiver],
    emitted_by: str,
) -> None:
    """kill -9 of a process that holds an emitter's lease with nothing to send: the next
    event, emitted by another running process (which then delivers it), or by a
    deliver=False process (another running process sees it by polling), arrives within
    2 s of the kill, although the lease_timeout is 30 s (the dead holder's lock beside the
    file is gone)."""
    receiver = make_receiver()
    holder = spawn(db, receiver.url, "--emit", 1, "--lease-timeout", LONG_LEASE)
    holder_name = holder.expect("ready")["ready"]["holder"]
    holder.expect("ids")
    receiver.wait_for(1)
    other = spawn(db, receiver.url, "--then", "commands", "--lease-timeout", LONG_LEASE)
    other.expect("ready")
    emitter = other
    if emitted_by == "a deliver=False process":
        emitter = spawn(db, receiver.url, "--then", "commands", "--no-deliver")
        emitter.expect("ready")
    assert status_json(db)["durable"]["lease_holder"] == holder_name  # idle, and holding
    assert holder.kill(signal.SIGKILL) == -signal.SIGKILL
    killed_at = time.monotonic()
    emitter.send("emit 1")
    (request_id,) = emitter.expect("ids")["ids"]
    arrival = receiver.wait_for(2)[1]
    assert arrival.delivery_id == request_id
    assert arrival.received_at - killed_at < TAKEOVER
    holders = {status_json(db)["durable"]["lease_holder"] for _ in range(2)}
    assert holder_name not in holders  # `status` never names the dead process again


def status_json(db: Path) -> dict[str, Any]:
    """``webhooks-emitter status --store sqlite:///DB --json`` (DB absolute), run as a process
    of its own."""
    url = f"sqlite:///{db}"
    done = subprocess.run(
        [sys.executable, "-m", "webhooks_emitter", "status", "--store", url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.mark.parametrize(
    "how",
    [
        "kill-9",
        "sigterm",
        "exit",
    ],
)
def test_a_holder_that_ends_mid_try_is_taken_over_after_request_timeout(
    db: Path,
    spawn: Callable[..., Child],
    make_receiver: Callable[..., HookReceiver],
    how: str,
) -> None:
    """A holder ends (kill -9, SIGTERM, a normal exit past exit_timeout) with a try on the
    wire and request_timeout=3: another process takes over and tries that event again 3 to
    5 s after the first try started (never while the first could still be under way), then
    the rest in order."""
    receiver = make_receiver(gated=True)
    options = ("--lease-timeout", LONG_LEASE, "--request-timeout", 3, "--exit-timeout", 0.5)
    holder = spawn(db, receiver.url, "--emit", 3, "--then", "commands", *options)
    holder_name = holder.expect("ready")["ready"]["holder"]
    ids = holder.expect("ids")["ids"]
    first = receiver.wait_for(1)[0]
    store = SQLiteStore(db, lease_timeout=LONG_LEASE)
    try:
        assert store.state("durable").lease_holder == holder_name
    finally:
        store.close()
    other = spawn(db, receiver.url, "--then", "flush", *options)
    other.expect("ready")
    if how == "kill-9":
        assert holder.kill(signal.SIGKILL) == -signal.SIGKILL
    elif how == "sigterm":
        assert holder.kill(signal.SIGTERM) == -signal.SIGTERM
    else:
        holder.send("exit")
        assert holder.wait() == 0, holder.describe()
    receiver.open()
    again = receiver.wait_for(2)[1]
    assert (again.delivery_id, again.try_number) == (ids[0], 2)
    assert 2.9 <= again.received_at - first.received_at <= 5.0
    assert other.expect("flushed")["flushed"] is True, other.describe()
    assert first_arrivals(receiver) == ids
    assert_in_emit_order(receiver, ids)


def test_a_pause_in_one_process_stops_delivery_in_another_within_a_second(
    db: Path,
    spawn: Callable[..., Child],
    make_receiver: Callable[..., HookReceiver],
    over: Callable[..., WebhooksEmitter],
) -> None:
    """pause() on an instance that never attached the emitter stops its delivery in the
    process that delivers it within a second (no try starts later, its lease is let go),
    and every process reports it paused; restart() there resumes it, in order."""
    receiver = make_receiver(hold=0.05)
    worker = spawn(db, receiver.url, "--emit", 40, "--then", "commands")
    ids = worker.expect("ids")["ids"]
    receiver.wait_for(3)
    hub = over(db)
    store = hub.store
    assert hub.is_started("durable")

    hub.pause("durable")
    paused_at = time.monotonic()
    assert not hub.is_started("durable") and hub.stats("durable").paused
    worker.send("state")
    state = worker.expect("state")["state"]
    assert (state["started"], state["listed"], state["stats"]["paused"]) == (False, [], True)
    wait_until(
        lambda: store.state("durable").lease_holder is None,
        1.0 + POLL_SLACK,
        "the delivering process let go of the paused emitter's lease",
    )
    seen = len(receiver.requests)
    assert all(r.received_at <= paused_at + 1.0 for r in receiver.requests)
    with pytest.raises(TimeoutError):
        receiver.wait_for(seen + 1, timeout=0.5)
    assert hub.stats("durable").queued == 40 - seen

    hub.restart("durable")
    assert hub.is_started("durable")
    receiver.wait_for(40)
    worker.send("flush 20")
    assert worker.expect("flushed")["flushed"] is True, worker.describe()
    worker.send("state")
    state = worker.expect("state")["state"]
    assert (state["started"], state["listed"]) == (True, ["durable"])
    worker.send("exit")
    assert worker.wait() == 0, worker.describe()
    assert [str(r.delivery_id) for r in receiver.requests] == ids


def test_a_deliver_false_process_stores_and_a_worker_delivers(
    db: Path, spawn: Callable[..., Child], make_receiver: Callable[..., HookReceiver]
) -> None:
    """A web process (deliver=False) emits 10 events; its flush returns True and it exits
    while the receiver has answered nothing (it sends nothing itself); a worker process
    attaching the same id delivers all 10, in order."""
    receiver = make_receiver(gated=True)
    worker = spawn(db, receiver.url, "--then", "commands")
    worker.expect("ready")
    web = spawn(db, receiver.url, "--no-deliver", "--emit", 10, "--then", "flush")
    ids = web.expect("ids")["ids"]
    assert web.expect("flushed")["flushed"] is True
    assert web.wait() == 0, web.describe()
    assert web.deliveries() == []

    receiver.open()
    receiver.wait_for(10)
    worker.send("flush 20")
    assert worker.expect("flushed")["flushed"] is True, worker.describe()
    worker.send("exit")
    assert worker.wait() == 0, worker.describe()
    assert [str(r.delivery_id) for r in receiver.requests] == ids
    assert [d["request_id"] for d in worker.deliveries()] == ids


def test_max_queue_size_holds_across_two_processes(
    db: Path,
    spawn: Callable[..., Child],
    make_receiver: Callable[..., HookReceiver],
    over: Callable[..., WebhooksEmitter],
) -> None:
    """Two deliver=False processes emit 8 events each at once to one emitter id with
    max_queue_size=10: 10 are stored, the 6 others dropped, counted and logged where they
    were emitted; what each process got stored is the start of its emits."""
    receiver = make_receiver()
    # The file is made first: processes starting together over a new file race to set it up
    # (test_opening_a_new_file_waits_for_another_process_setting_it_up).
    hub = over(db)
    bounded = ("--emitter", "bounded", "--max-queue-size", 10)
    emitting = ("--no-deliver", "--wait-go", "--emit", 8, "--then", "exit")
    children = [spawn(db, receiver.url, *bounded, *emitting, "--tag", n) for n in ("a", "b")]
    for child in children:
        child.expect("ready")
    for child in children:
        child.send("go")
    lines = [child.expect("ids") for child in children]
    for child in children:
        assert child.wait() == 0, child.describe()
    assert sum(line["stats"]["dropped"] for line in lines) == 6
    assert hub.stats("bounded").queued == 10
    for child, line in zip(children, lines):
        warned = [r for r in child.logs() if r["level"] == "WARNING" and "full" in r["message"]]
        assert bool(warned) == bool(line["stats"]["dropped"]), child.describe()

    worker = spawn(db, receiver.url, *bounded, "--then", "flush")
    assert worker.expect("flushed")["flushed"] is True, worker.describe()
    assert worker.wait() == 0
    delivered = set(first_arrivals(receiver))
    assert len(delivered) == 10 and len(receiver.requests) == 10
    for line in lines:
        kept = 8 - line["stats"]["dropped"]
        assert [i for i in line["ids"] if i in delivered] == line["ids"][:kept]


# -- gunicorn -----------------------------------------------------------------------------------


def start_gunicorn(
    listener: socket.socket, db: Path, url: str, log: Path, preload: bool
) -> subprocess.Popen[bytes]:
    """gunicorn with 2 workers of ``durable_app`` serving on ``listener`` (a bound socket)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--workers",
                "2",
                "--bind",
                f"fd://{listener.fileno()}",
                "--graceful-timeout",
                "10",
                "--chdir",
                str(SCRIPTS),
                *(["--preload"] if preload else []),
                "durable_app:app",
            ],
            pass_fds=(listener.fileno(),),
            stdout=out,
            stderr=out,
            env=child_env(DURABLE_DB=str(db), DURABLE_URL=url, DURABLE_EXIT_TIMEOUT="0.5"),
        )


def stop_gunicorn(process: subprocess.Popen[bytes], log: Path) -> int:
    """SIGTERM (a graceful stop, as a restart does); its status once it ended."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"gunicorn did not stop within {WAIT} s:\n{log.read_text()}")


@pytest.mark.parametrize("preload", [False, True], ids=["app-per-worker", "preload"])
def test_a_gunicorn_restart_mid_stream_loses_nothing(
    db: Path,
    tmp_path: Path,
    make_receiver: Callable[..., HookReceiver],
    over: Callable[..., WebhooksEmitter],
    preload: bool,
) -> None:
    """gunicorn, 2 workers of a Flask app that emits on POST over one SQLite file (the app
    imported by each worker, or once by the master before it forks them: --preload); 30
    orders posted; SIGTERM (a restart) while the slow receiver holds the 4th delivery, the
    exit flush cut short at 0.5 s: after the next start every order arrives, in order."""
    receiver = make_receiver(gated=True)
    receiver.allow(3)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    log = tmp_path / "gunicorn.log"
    # The file is made first: workers booting together over a new file race to set it up
    # (test_opening_a_new_file_waits_for_another_process_setting_it_up).
    hub = over(db)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        servers.append(start_gunicorn(listener, db, receiver.url, log, preload))
        ids = []
        pids = set()
        with requests.Session() as session:
            for n in range(30):  # waits in the listen queue until a worker has booted
                answer = session.post(f"{base}/orders", json={"order": n}, timeout=WAIT)
                assert answer.status_code == 200, log.read_text()
                ids.append(answer.json()["request_id"])
                pids.add(answer.json()["pid"])
        receiver.wait_for(4)
        assert stop_gunicorn(servers[0], log) == 0, log.read_text()
        left = set(ids) - set(first_arrivals(receiver))
        assert len(left) >= 26  # mid-stream indeed

        receiver.open()
        servers.append(start_gunicorn(listener, db, receiver.url, log, preload))
        wait_until(
            lambda: set(ids) <= set(first_arrivals(receiver)),
            WAIT,
            "every order delivered after the restart",
        )
        assert stop_gunicorn(servers[1], log) == 0, log.read_text()
    finally:
        for server in servers:
            if server.poll() is None:
                server.kill()
                server.wait()
        listener.close()
    assert first_arrivals(receiver) == ids
    assert_in_emit_order(receiver, ids)
    # Only a try under way when a process ended is repeated: the worker's, and with --preload
    # also the master's (it has the emitter attached, so it delivers too, and took over the
    # dead worker's lease while stopping).
    assert max(len(tries) for tries in tries_of(receiver).values()) <= (3 if preload else 2)
    stats = hub.stats("app")
    assert (stats.queued, stats.failed) == (0, 0)


# -- the store cannot take it ------------------------------------------------------------------


def test_emit_under_a_lock_held_past_the_timeout_raises_and_stores_nothing(
    db: Path, make_receiver: Callable[..., HookReceiver], over: Callable[..., WebhooksEmitter]
) -> None:
    """Another connection holds the write lock (BEGIN EXCLUSIVE): emit raises StoreError
    naming the file after about the store's timeout (0.5 s), and neither subscribed emitter
    got the event; once the lock is let go, emit works again."""
    receiver = make_receiver()
    hub = over(db, timeout=0.5)
    hub.attach("a", "tick", fast_config(receiver.url + "/a"))
    hub.attach("b", "tick", fast_config(receiver.url + "/b"))
    hub.emit("tick", {"n": 0}, request_id="before")
    assert hub.flush(WAIT)

    lock = sqlite3.connect(str(db), isolation_level=None, timeout=0)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        with pytest.raises(StoreError) as caught:
            hub.emit("tick", {"n": 1}, request_id="under-lock")
        elapsed = time.monotonic() - started
        assert str(db) in str(caught.value) and "locked" in str(caught.value)
        assert 0.4 <= elapsed < 2.5, elapsed
        assert (hub.stats("a").queued, hub.stats("b").queued) == (0, 0)
    finally:
        lock.execute("ROLLBACK")
        lock.close()

    hub.emit("tick", {"n": 2}, request_id="after")
    assert hub.flush(WAIT)
    for path in ("/hooks/a", "/hooks/b"):
        assert first_arrivals(receiver, path) == ["before", "after"]
    assert scan_file(db, [b"under-lock"]) == []


def test_emit_on_a_full_disk_raises_and_stores_nothing(tmp_path: Path) -> None:
    """On a real 512 KB tmpfs (a private mount namespace of the child): emits of 8 KB events
    to two emitters go on until the disk is full; that emit raises StoreError naming the
    file and saying so, and nothing of it is stored (each emitter holds exactly the events
    whose emit returned; no table holds its request id)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    command = tmpfs_command(mount)
    completed = subprocess.run(
        [
            *command,
            mount_then('exec "$2" "$3" "$1/hooks.db"'),
            "sh",
            str(mount),
            sys.executable,
            str(SCRIPTS / "durable_full_disk.py"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["stored"] > 5, report
    assert report["error"] is not None and "disk is full" in report["error"], report
    assert str(mount / "hooks.db") in report["error"]
    assert report["queued"] == [report["stored"]] * 2
    assert report["found"] is False


def test_opening_a_new_file_waits_for_another_process_setting_it_up(tmp_path: Path) -> None:
    """Processes that start together over a new file (gunicorn workers without --preload)
    race to set it up: one holds the write lock of the still empty file while another opens
    it. The other waits for the lock, within its timeout, and opens the file: it must not
    fail at once with a StoreError saying the lock was held past the timeout (3 processes
    opening a new file at once failed so in 2 of 180 openings)."""
    path = tmp_path / "new.db"
    path.touch()  # as a starting process's O_EXCL create leaves it
    holder = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    # A lock held for a while by the other process (not a synchronisation).
    release = threading.Timer(0.3, holder.execute, ("COMMIT",))
    release.start()
    started = time.monotonic()
    try:
        store = SQLiteStore(path, timeout=5.0)
    except StoreError as exc:
        pytest.fail(f"after {time.monotonic() - started:.3f} s: {exc}")
    finally:
        release.join()
        holder.close()
    store.close()


def test_a_non_sqlite_file_is_refused_when_the_store_is_made(tmp_path: Path) -> None:
    """A file that is not an SQLite database: StoreError naming it, from
    WebhooksEmitter(store="sqlite:///...") and from SQLiteStore(...); the file is untouched."""
    path = tmp_path / "notes.db"
    content = b"these are my notes, not a database\n" * 200
    path.write_bytes(content)
    makers: list[Callable[[], object]] = [
        lambda: WebhooksEmitter(store=f"sqlite:///{path}"),
        lambda: SQLiteStore(path),
    ]
    for make in makers:
        with pytest.raises(StoreError) as caught:
            make()
        assert str(path) in str(caught.value)
        assert "not an SQLite database" in str(caught.value)
    assert path.read_bytes() == content


@pytest.fixture
def unwritable_directory() -> Iterator[tuple[Path, int]]:
    """A directory the child program cannot write, holding a store file it may write, and
    the uid to run the child as (-1: as is). Root is not stopped by permissions, so a test
    running as root has its child become ``nobody`` in a directory outside the pytest tree."""
    directory = Path(tempfile.mkdtemp(prefix="webhooks-durable-unwritable-"))
    uid = -1
    try:
        existing = directory / "existing.db"
        SQLiteStore(existing).close()  # a valid store, no -wal or -shm left beside it
        if os.geteuid() == 0:
            uid = 65534
            os.chown(existing, uid, -1)
        directory.chmod(0o555)
        yield directory, uid
    finally:
        directory.chmod(0o755)
        shutil.rmtree(directory)


def test_an_unwritable_directory_is_refused_when_the_store_is_made(
    unwritable_directory: tuple[Path, int],
) -> None:
    """In a directory the process may not write: a new file cannot be created, and an
    existing store cannot get its -wal and -shm files: StoreError naming the file, from
    WebhooksEmitter(store="sqlite:///...") and from SQLiteStore(...) alike."""
    directory, uid = unwritable_directory
    paths = [str(directory / "new.db"), str(directory / "existing.db")]
    completed = subprocess.run(
        [sys.executable, str(SCRIPTS / "durable_open.py"), str(uid), *paths],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        cwd=SCRIPTS,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    for path in paths:
        for how, outcome in report[path].items():
            assert outcome.startswith("StoreError: "), (path, how, outcome)
            assert path in outcome, (path, how, outcome)
    assert not (directory / "new.db").exists()


def test_a_store_error_while_delivering_is_logged_and_loses_nothing(
    db: Path,
    make_receiver: Callable[..., HookReceiver],
    over: Callable[..., WebhooksEmitter],
    log_watch: LogWatch,
) -> None:
    """The delivering thread cannot record a delivery (another connection holds the lock
    past the store's 0.2 s timeout): it logs a WARNING and retries the store; once the lock
    is let go the outcome is recorded, the event is not sent again, and the next one is
    delivered."""
    receiver = make_receiver(gated=True)
    hub = over(db, timeout=0.2)
    hub.attach("d", "tick", fast_config(receiver.url))
    first = hub.emit("tick", {"n": 0})
    second = hub.emit("tick", {"n": 1})
    receiver.wait_for(1)  # the first event on the wire, held

    lock = sqlite3.connect(str(db), isolation_level=None, timeout=0)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        receiver.allow(1)  # answered 204: the delivery cannot be recorded
        record = log_watch.wait("could not record a delivery")
        assert record.levelno == logging.WARNING
        assert getattr(record, "emitter_id", None) == "d"
        assert str(db) in record.getMessage()
    finally:
        lock.execute("ROLLBACK")
        lock.close()

    receiver.open()
    assert hub.flush(WAIT)
    assert [str(r.delivery_id) for r in receiver.requests] == [first, second]
    stats = hub.stats("d")
    assert (stats.delivered, stats.queued, stats.failed) == (2, 0, 0)


def test_a_store_error_before_a_try_is_logged_and_the_try_waits(
    db: Path,
    make_receiver: Callable[..., HookReceiver],
    over: Callable[..., WebhooksEmitter],
    log_watch: LogWatch,
) -> None:
    """The first try failed (500) and its retry is due while another connection holds the
    lock: the try cannot be recorded, so it is not sent; the thread logs a WARNING and
    retries the store, and once the lock is let go the second try is sent, once."""
    receiver = make_receiver(status=lambda request: 500 if request.try_number == 1 else 204)
    hub = over(db, timeout=0.2)
    hub.attach("d", "tick", fast_config(receiver.url, retry_schedule=(0.3,)))
    request_id = hub.emit("tick", {"n": 0})
    log_watch.wait("try 1 of 2 failed")  # logged once the failed try is recorded

    lock = sqlite3.connect(str(db), isolation_level=None, timeout=0)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        record = log_watch.wait("could not record a try")
        assert record.levelno == logging.WARNING and str(db) in record.getMessage()
        assert len(receiver.requests) == 1
    finally:
        lock.execute("ROLLBACK")
        lock.close()

    assert hub.flush(WAIT)
    assert [(r.delivery_id, r.try_number) for r in receiver.requests] == [
        (request_id, 1),
        (request_id, 2),
    ]
    stats = hub.stats("d")
    assert (stats.delivered, stats.queued, stats.failed) == (1, 0, 0)


def wait_then_restart(
    db: Path,
    spawn: Callable[..., Child],
    receiver: HookReceiver,
    hub: WebhooksEmitter,
    seen_paused: bool,
) -> tuple[str, float]:
    """A delivering process whose one event waits 10 s after a failed first try (its thread
    waiting with the lease, idle_timeout being 30 s); ``hub`` pauses the emitter, waits
    until that process let go of the lease if ``seen_paused``, and restarts it. Returns the
    event's request id and when the restart returned."""
    worker = spawn(db, receiver.url, "--emit", 1, "--retry-schedule", 10, "--then", "block")
    (request_id,) = worker.expect("ids")["ids"]
    worker.wait_log("try 1 of 2 failed")
    hub.pause("durable")
    if seen_paused:
        wait_until(
            lambda: hub.store.state("durable").lease_holder is None,
            1.0 + POLL_SLACK,
            "the delivering process saw the pause",
        )
    hub.restart("durable")
    return request_id, time.monotonic()


def test_a_restart_from_another_process_cuts_a_retry_wait_short(
    db: Path,
    spawn: Callable[..., Child],
    make_receiver: Callable[..., HookReceiver],
    over: Callable[..., WebhooksEmitter],
) -> None:
    """An event waits 10 s after its failed first try in the delivering process; pause()
    from this process (which never attached the emitter), seen there, then restart(): the
    event is due at once, and its second try comes within a poll, not after the 10 s."""
    receiver = make_receiver(status=lambda request: 500 if request.try_number == 1 else 204)
    request_id, restarted_at = wait_then_restart(db, spawn, receiver, over(db), True)
    second = receiver.wait_for(2, timeout=1.0 + POLL_SLACK)[1]
    assert (second.delivery_id, second.try_number) == (request_id, 2)
    assert second.received_at - restarted_at < 1.0 + POLL_SLACK


def test_a_pause_and_restart_at_once_from_another_process_cut_a_retry_wait_short(
    db: Path,
    spawn: Callable[..., Child],
    make_receiver: Callable[..., HookReceiver],
    over: Callable[..., WebhooksEmitter],
) -> None:
    """As above, but restart() follows pause() at once, before the delivering process polls
    the store: the restart must still cut the 10 s wait short (CONTRACT section 5: after
    restart an event whose wait was cut short is tried again at once; the store's restart
    makes waiting events due at once)."""
    receiver = make_receiver(status=lambda request: 500 if request.try_number == 1 else 204)
    request_id, restarted_at = wait_then_restart(db, spawn, receiver, over(db), False)
    second = receiver.wait_for(2, timeout=1.0 + POLL_SLACK)[1]
    assert (second.delivery_id, second.try_number) == (request_id, 2)


# -- dead letters, stats -------------------------------------------------------------------------


def test_failed_replay_and_purge_from_a_process_that_never_attached(
    db: Path,
    spawn: Callable[..., Child],
    make_receiver: Callable[..., HookReceiver],
    over: Callable[..., WebhooksEmitter],
) -> None:
    """A process gives up 3 events (max_attempts=2, the receiver answers 500) and ends.
    Here, with the emitter never attached: failed() lists them oldest first with their
    tries, status and body; stats().failed counts them; replay() of one queues it again,
    and the next process attaching the id delivers it with the same delivery id and a fresh
    count of tries; replay() of the rest and purge() empty the store."""
    answer = {"status": 500}
    receiver = make_receiver(status=lambda request: answer["status"])
    options = ("--emitter", "dead-letters", "--max-attempts", 2, "--then", "flush")
    first = spawn(db, receiver.url, "--emit", 3, *options)
    ids = first.expect("ids")["ids"]
    assert first.expect("flushed")["flushed"] is True, first.describe()
    assert first.wait() == 0

    hub = over(db)
    failed = hub.failed("dead-letters")
    assert [f.request_id for f in failed] == ids
    for n, event in enumerate(failed):
        assert (event.emitter_id, event.event, event.attempts, event.status_code) == (
            "dead-letters",
            "tick",
            2,
            500,
        )
        assert event.failed_at.tzinfo is not None
        assert event.failed_at.utcoffset() == datetime.timedelta(0)
        assert json.loads(event.body) == {"proc": "p", "n": n}
    assert hub.failed("dead-letters", limit=2) == failed[:2]
    stats = hub.stats("dead-letters")
    assert (stats.queued, stats.failed, stats.delivered) == (0, 3, 0)

    assert hub.replay("dead-letters", [ids[1]]) == 1
    stats = hub.stats("dead-letters")
    assert (stats.queued, stats.failed) == (1, 2)
    answer["status"] = 204
    second = spawn(db, receiver.url, *options)
    assert second.expect("flushed")["flushed"] is True, second.describe()
    assert second.wait() == 0
    assert [(d["request_id"], d["attempts"], d["delivered"]) for d in second.deliveries()] == [
        (ids[1], 1, True)
    ]
    replayed = receiver.requests[-1]
    assert (replayed.delivery_id, replayed.try_number) == (ids[1], 3)
    assert json.loads(replayed.body) == {"proc": "p", "n": 1}
    assert [f.request_id for f in hub.failed("dead-letters")] == [ids[0], ids[2]]

    assert hub.replay("dead-letters") == 2
    stats = hub.stats("dead-letters")
    assert (stats.queued, stats.failed) == (2, 0)
    assert hub.purge("dead-letters") == 2
    stats = hub.stats("dead-letters")
    assert (stats.queued, stats.failed) == (0, 0)
    assert hub.failed("dead-letters") == []
    with pytest.raises(EmitterNotFoundError):
        hub.stats("never-seen-anywhere")


# -- no secret in the file -----------------------------------------------------------------------


def test_no_secret_is_ever_written_to_the_file(
    db: Path, make_receiver: Callable[..., HookReceiver], over: Callable[..., WebhooksEmitter]
) -> None:
    """After deliveries signed with two secrets (delivered, given up, and queued behind a
    pause), neither secret appears in any column of any table of the file, nor anywhere in
    its bytes, its -wal or its -shm file (the bodies, which are stored, are found there)."""
    secrets = ("first-secret-3f9a1c77e2d04b", b"second-secret-b81d0e44a97c51")
    receiver = make_receiver(
        status=lambda request: 500 if request.json()["n"] % 3 == 0 else 204, secret=secrets[0]
    )
    hub = over(db)
    config = fast_config(receiver.url, secret=secrets, max_attempts=2)
    hub.attach("signed", "*", config)
    hub.attach("parked", "*", attrs.evolve(config, url=receiver.url + "/parked"))
    hub.pause("parked")
    for n in range(12):
        hub.emit("tick", {"n": n, "marker": "body-marker-5e21"})
    assert hub.flush(WAIT)
    assert len(hub.failed("signed")) == 4
    assert hub.stats("parked").queued == 12
    assert receiver.requests and all(r.signature_valid for r in receiver.requests)

    assert Path(f"{db}-wal").stat().st_size > 0
    assert scan_file(db, [b"body-marker-5e21"])  # the scan sees what is stored
    needles = [secrets[0].encode(), secrets[1]]
    assert scan_file(db, needles) == []
