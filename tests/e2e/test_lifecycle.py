"""Lifecycle (CONTRACT.md section 6, and flush/shutdown of section 2).

The exit hook, ``os.fork()`` and multiprocessing run in real child programs
(``tests/scripts``) against a receiver in this process; ``flush`` and ``shutdown`` run
in-process.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultservers import Conn, FaultServer

from webhooks_emitter import WebhooksEmitter
from webhooks_emitter.testing import ReceivedRequest, Receiver, Response, fail_first

SCRIPTS = Path(__file__).resolve().parents[1] / "support" / "scripts"
# A hard bound on every child program: far above what each needs, so only a hang hits it.
PROGRAM_TIMEOUT = 60.0


def run_script(name: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``tests/support/scripts/<name>`` with this interpreter; return it and its duration."""
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        timeout=PROGRAM_TIMEOUT,
        cwd=SCRIPTS,
    )
    return completed, time.monotonic() - started


def log_lines(stderr: str) -> list[dict[str, Any]]:
    """The library's log records a child program wrote (see ``scripts/jsonlog.py``)."""
    return [json.loads(line[4:]) for line in stderr.splitlines() if line.startswith("LOG ")]


def describe(completed: subprocess.CompletedProcess[str]) -> str:
    """The program's outputs, for assertion messages."""
    return f"exit {completed.returncode}\nstdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"


def as_line(record: logging.LogRecord) -> dict[str, Any]:
    """An in-process log record in the form ``log_lines`` returns (phase "exit")."""
    return {
        "phase": "exit",
        "level": record.levelname,
        "message": record.getMessage(),
        "emitter_id": getattr(record, "emitter_id", None),
        "request_id": getattr(record, "request_id", None),
    }


def abandoned_count(records: list[dict[str, Any]], emitter_id: str) -> int:
    """How many events the exit-time WARNING/ERROR records of ``emitter_id`` say were abandoned.

    A record that counts events ("2 queued event(s) dropped, 1 event(s) in flight") adds
    its counts; a record about one event (it names a request id) adds one.
    """
    total = 0
    for record in records:
        if record["phase"] != "exit" or record["level"] not in ("WARNING", "ERROR", "CRITICAL"):
            continue
        if record["emitter_id"] != emitter_id:
            continue
        counts = re.findall(r"\b(\d+)\s+(?:\w+\s+)?event", record["message"])
        if counts:
            total += sum(int(count) for count in counts)
        elif record["request_id"]:
            total += 1
    return total


@pytest.fixture
def signed_receiver() -> Iterator[Receiver]:
    """A receiver that checks the ``supersecret`` signatures the scripts send, answering 204."""
    with Receiver(secret="supersecret") as running:
        yield running


# -- the exit hook ------------------------------------------------------------------------


def test_program_that_ends_normally_has_its_events_delivered():
    """A program that attaches, emits and ends (no flush) still delivers every event, in order.

    Each event's first try fails, so the exit hook has retries to wait for too.
    """
    with Receiver(secret="supersecret", responder=fail_first(1)) as receiver:
        completed, _ = run_script("emit_then_exit.py", receiver.url, "5")
        requests = receiver.requests
    assert completed.returncode == 0, describe(completed)
    ids = json.loads(completed.stdout)
    assert len(ids) == 5
    delivered = [r.delivery_id for r in requests if r.try_number == 2]
    assert delivered == ids
    assert all(r.signature_valid for r in requests)
    problems = [r for r in log_lines(completed.stderr) if r["level"] in ("WARNING", "ERROR")]
    assert problems == []


def test_instance_the_program_dropped_still_delivers_at_exit():
    """Events emitted through a WebhooksEmitter the program no longer references are delivered
    by the exit hook too: the emitter threads outlive the reference, so must the flush."""
    with Receiver(secret="supersecret") as receiver:
        completed, _ = run_script("emit_then_exit.py", receiver.url, "3", "--own-instance")
        requests = receiver.requests
    assert completed.returncode == 0, describe(completed)
    assert [r.delivery_id for r in requests] == json.loads(completed.stdout)


def test_exit_with_a_dead_receiver_ends_within_exit_timeout_and_logs_what_it_abandons():
    """With a receiver that never answers and exit_timeout=0.5, the program still exits.

    The try under way would last 30 s (request_timeout); the exit must not wait for it.
    All three events are logged as abandoned at exit: one in flight, two queued.
    """
    with FaultServer(Conn.hold) as server:  # accepts, reads, never answers
        completed, duration = run_script(
            "emit_then_exit.py", server.url, "3", "--exit-timeout", "0.5", "--request-timeout", "30"
        )
    assert completed.returncode == 0, describe(completed)
    # Interpreter start-up and imports included; far below the 30 s a try would take.
    assert duration < 15, describe(completed)
    records = log_lines(completed.stderr)
    assert abandoned_count(records, "exiting") == 3, describe(completed)


def test_exit_during_a_long_backoff_ends_and_logs_the_abandoned_event():
    """An event waiting a 30 s backoff at exit is abandoned after exit_timeout, and logged."""
    with Receiver(responder=lambda request: 500) as receiver:
        completed, duration = run_script(
            "emit_then_exit.py", receiver.url, "1", "--exit-timeout", "0.5", "--backoff-start", "30"
        )
        assert len(receiver.requests) == 1
    assert completed.returncode == 0, describe(completed)
    assert duration < 15, describe(completed)
    assert abandoned_count(log_lines(completed.stderr), "exiting") == 1, describe(completed)


def test_exit_with_a_paused_emitter_logs_the_dropped_count(signed_receiver):
    """A paused emitter's queue is not delivered at exit; its count is logged as dropped."""
    completed, duration = run_script(
        "emit_then_exit.py", signed_receiver.url, "4", "--pause", "--exit-timeout", "5"
    )
    assert completed.returncode == 0, describe(completed)
    assert duration < 15, describe(completed)
    assert signed_receiver.requests == []
    assert abandoned_count(log_lines(completed.stderr), "exiting") == 4, describe(completed)


# -- fork ---------------------------------------------------------------------------------


def test_forked_child_delivers_its_own_events_and_the_parent_is_unaffected(signed_receiver):
    """After os.fork() the child has the attachment, a new thread and an empty queue.

    The event queued (paused) in the parent before the fork is delivered once, by the
    parent; the child delivers only what it emitted; the parent goes on as before.
    """
    completed, _ = run_script("fork_emitter.py", signed_receiver.url)
    assert completed.returncode == 0, describe(completed)
    reports = {line["role"]: line for line in map(json.loads, completed.stdout.splitlines())}
    parent, child = reports["parent"], reports["child"]
    assert parent["flushed"] and child["flushed"]
    assert child["pid"] != parent["pid"]
    assert "webhooks-emitter:forked" in child["threads"]
    requests = signed_receiver.wait_for(4)
    assert len(signed_receiver.requests) == 4
    seen = {r.event: r for r in requests}
    assert sorted(seen) == ["after", "before", "child", "queued"]
    for name in ("before", "queued", "after"):
        assert seen[name].delivery_id == parent["ids"][name]
        assert seen[name].json() == {"pid": parent["pid"]}
    assert seen["child"].delivery_id == child["ids"]["child"]
    assert seen["child"].json() == {"pid": child["pid"]}
    assert all(r.signature_valid for r in requests)


def test_multiprocessing_fork_child_delivers(signed_receiver):
    """A multiprocessing "fork" child emits and flushes through its own emitter."""
    completed, _ = run_script("multiprocessing_fork.py", signed_receiver.url)
    assert completed.returncode == 0, describe(completed)
    outcome = json.loads(completed.stdout)
    assert outcome["child_exitcode"] == 0 and outcome["flushed"]
    requests = signed_receiver.wait_for(3)
    assert len(signed_receiver.requests) == 3
    assert {r.event: r.delivery_id for r in requests} == outcome["ids"]


def test_multiprocessing_child_that_returns_without_flush_still_delivers(signed_receiver):
    """A multiprocessing "fork" child that emits and returns is ended with os._exit (atexit
    never runs); the library's multiprocessing finalizer delivers its event all the same."""
    completed, _ = run_script("multiprocessing_fork.py", signed_receiver.url, "--no-flush")
    assert completed.returncode == 0, describe(completed)
    outcome = json.loads(completed.stdout)
    assert outcome["child_exitcode"] == 0
    requests = signed_receiver.wait_for(3)
    assert {r.event: r.delivery_id for r in requests} == outcome["ids"]


def test_exit_deadline_says_what_happened_not_detached():
    """At exit with a receiver that never answers, the log says the exit deadline was reached
    and that the event under way may not have been delivered; it never says "detached"
    (the program detached nothing)."""
    with FaultServer(Conn.hold) as server:
        completed, _ = run_script(
            "emit_then_exit.py", server.url, "3", "--exit-timeout", "0.5", "--request-timeout", "30"
        )
    assert completed.returncode == 0, describe(completed)
    messages = [r["message"] for r in log_lines(completed.stderr) if r["phase"] == "exit"]
    assert any("exit deadline reached" in m for m in messages), messages
    assert any("may not have been delivered" in m for m in messages), messages
    assert not any("detached" in m for m in messages), messages


def test_emits_during_shutdown_are_counted_in_few_lines(fast, caplog):
    """500 events emitted while shutdown flushes are each refused, and the log says so in a
    few rate-limited lines whose counts add up to 500, not one WARNING per event."""
    gate = threading.Event()
    with Receiver(responder=lambda request: 204 if gate.wait(30) else 503) as receiver:
        instance = WebhooksEmitter()
        instance.attach("closing", "ev", fast(receiver.url, request_timeout=30.0))
        instance.emit("ev", {"seq": 0})
        receiver.wait_for(1)
        caplog.set_level(logging.WARNING, logger="webhooks_emitter")
        stopper = threading.Thread(target=instance.shutdown, args=(30,))
        stopper.start()
        refused = []

        def shutting_down() -> bool:
            return any("shutting down" in r.getMessage() for r in caplog.records)

        while not shutting_down():  # emit until one is refused: shutdown has begun
            assert stopper.is_alive()
            instance.emit("ev", {"seq": -1})
        for seq in range(500):
            refused.append(instance.emit("ev", {"seq": seq}))
        gate.set()
        stopper.join(30)
        assert not stopper.is_alive()
    lines = [r.getMessage() for r in caplog.records if "shutting down" in r.getMessage()]
    assert 1 < len(lines) <= 5, lines
    counted = sum(int(re.search(r"dropped (\d+) event", m).group(1)) for m in lines)
    assert counted >= 501, lines  # 500 plus the one that showed shutdown had begun


# -- flush and shutdown -------------------------------------------------------------------


def test_flush_returns_false_on_timeout_and_true_once_done(hub, fast):
    """flush(timeout) is False while a delivery is held up, True after it completes."""
    gate = threading.Event()

    def respond(request: ReceivedRequest) -> Response:
        gate.wait(30)
        return 204

    with Receiver(responder=respond) as receiver:
        hub.attach("held", "ev", fast(receiver.url, request_timeout=30.0))
        hub.emit("ev", {})
        receiver.wait_for(1)
        started = time.monotonic()
        assert hub.flush(0.2) is False
        assert time.monotonic() - started >= 0.2 - 0.01
        gate.set()
        assert hub.flush(10) is True
        assert hub.stats("held").delivered == 1


def test_flush_without_timeout_waits_for_retries(hub, fast):
    """flush() with no timeout returns True only after the retried event was delivered."""
    with Receiver(responder=fail_first(2)) as receiver:
        hub.attach("retried", "ev", fast(receiver.url))
        request_id = hub.emit("ev", {})
        assert hub.flush() is True
        assert [(r.delivery_id, r.try_number) for r in receiver.requests] == [
            (request_id, 1),
            (request_id, 2),
            (request_id, 3),
        ]


def test_flush_with_nothing_attached_is_true(hub):
    """flush on an instance with no emitters returns True at once."""
    assert hub.flush(0) is True


def test_shutdown_with_a_paused_emitter_logs_the_dropped_count(fast, receiver, caplog):
    """shutdown does not wait for a paused emitter; its queued events are logged, counted."""
    instance = WebhooksEmitter()
    instance.attach("paused", "ev", fast(receiver.url))
    instance.pause("paused")
    for seq in range(3):
        instance.emit("ev", {"seq": seq})
    caplog.set_level(logging.WARNING, logger="webhooks_emitter")
    started = time.monotonic()
    instance.shutdown(timeout=5)
    assert time.monotonic() - started < 4  # it did not wait the timeout for the paused one
    assert receiver.requests == []
    assert instance.list_emitters() == []
    records = [as_line(r) for r in caplog.records]
    assert abandoned_count(records, "paused") == 3, [r["message"] for r in records]
    instance.shutdown(timeout=1)  # a second call is harmless


def test_shutdown_delivers_what_is_queued_first(fast, receiver):
    """shutdown(timeout) delivers the queued events before stopping the emitters."""
    instance = WebhooksEmitter()
    instance.attach("draining", "ev", fast(receiver.url))
    ids = [instance.emit("ev", {"seq": seq}) for seq in range(20)]
    instance.shutdown(timeout=10)
    assert [r.delivery_id for r in receiver.requests] == ids
    assert instance.list_emitters() == []
