"""configure(handle_sigterm=True): SIGTERM unwinds the program so the exit hook delivers
(CONTRACT section 12), tried on child processes (tests/support/scripts/sigterm_child.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from webhooks_emitter import Config, WebhooksEmitter, WebhooksEmitterError
from webhooks_emitter.testing import ReceivedRequest, Receiver

SCRIPT = Path(__file__).resolve().parents[1] / "support" / "scripts" / "sigterm_child.py"


class Child:
    """A running sigterm_child.py, with what it printed first."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            _, err = self.process.communicate(timeout=30)
            pytest.fail(f"the child printed nothing; its stderr:\n{err}")
        self.info: dict[str, Any] = json.loads(line)

    def end(self, timeout: float = 30.0) -> tuple[int, str]:
        """Wait for the child to end; its status and stderr."""
        _, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, err

    def kill(self) -> None:
        """Make sure it is gone."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Held shut, the slow receiver answers nothing; set at the end of every test."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def slow_receiver(gate: threading.Event) -> Iterator[Receiver]:
    """A receiver that answers each request (204) only once the gate is open."""

    def answer(request: ReceivedRequest) -> int:
        gate.wait(30)
        return 204

    with Receiver(responder=answer) as receiver:
        yield receiver


def first_tries(receiver: Receiver) -> list[str]:
    """The delivery ids the receiver got, each once."""
    return sorted({str(r.delivery_id) for r in receiver.requests})


def test_handle_sigterm_flushes_then_exits_143(
    slow_receiver: Receiver, gate: threading.Event
) -> None:
    """With handle_sigterm=True, SIGTERM while a slow receiver holds the first event makes
    the main thread raise SystemExit(143): the exit hook delivers every event, and the
    process ends with status 143."""
    child = Child(slow_receiver.url, "3", "--handle")
    try:
        assert child.info["sigterm"] == "library"
        slow_receiver.wait_for(1)  # the first delivery is on the wire, the rest queued
        child.process.send_signal(signal.SIGTERM)
        gate.set()
        status, err = child.end()
    finally:
        child.kill()
    assert status == 143, err
    assert first_tries(slow_receiver) == sorted(child.info["request_ids"])


def test_default_sigterm_kills_and_a_durable_store_keeps_the_events(
    slow_receiver: Receiver, gate: threading.Event, tmp_path: Path
) -> None:
    """Without handle_sigterm (the default) SIGTERM kills the process at once (status
    -15, nothing flushed); with an SQLite store the next process over the same file
    delivers every event the dead one had emitted."""
    try:
        from webhooks_emitter.stores.sqlite import SQLiteStore
    except ImportError as exc:
        pytest.fail(
            f"webhooks_emitter.stores.sqlite.SQLiteStore is missing ({exc}): this test needs "
            "the durable SQLite store of CONTRACT section 10"
        )
    path = tmp_path / "hooks.db"
    # The try under way at the death is tried again no sooner than its start plus
    # request_timeout (CONTRACT section 10, takeover): keep that short.
    child = Child(slow_receiver.url, "4", "--sqlite", str(path), "--request-timeout", "2")
    try:
        assert child.info["sigterm"] == "default"
        slow_receiver.wait_for(1)
        child.process.send_signal(signal.SIGTERM)
        status, _ = child.end()
    finally:
        child.kill()
    assert status == -signal.SIGTERM
    assert len(first_tries(slow_receiver)) <= 1  # only the try that was under way

    gate.set()
    instance = WebhooksEmitter(store=SQLiteStore(str(path), lease_timeout=1.0))
    try:
        instance.attach(
            "child", "*", Config(slow_receiver.url, backoff_start=0.001, request_timeout=20.0)
        )
        assert instance.flush(30)
    finally:
        instance.shutdown(5)
    assert first_tries(slow_receiver) == sorted(child.info["request_ids"])


def test_default_sigterm_with_memory_store_dies_by_the_signal(slow_receiver: Receiver) -> None:
    """Off by default: the process dies by SIGTERM (status -15) and the library does not
    get in the way."""
    child = Child(slow_receiver.url, "1")
    try:
        assert child.info["sigterm"] == "default"
        slow_receiver.wait_for(1)
        child.process.send_signal(signal.SIGTERM)
        status, _ = child.end()
    finally:
        child.kill()
    assert status == -signal.SIGTERM


def test_a_program_handler_is_left_in_place_and_its_exit_flushes(
    slow_receiver: Receiver, gate: threading.Event
) -> None:
    """A SIGTERM handler the program installed first is kept; it ends the process with
    sys.exit(7), and the exit hook still delivers what was queued."""
    child = Child(slow_receiver.url, "3", "--program-handler", "--handle")
    try:
        assert child.info["sigterm"] == "program"
        slow_receiver.wait_for(1)
        child.process.send_signal(signal.SIGTERM)
        gate.set()
        status, err = child.end()
    finally:
        child.kill()
    assert status == 7, err
    assert first_tries(slow_receiver) == sorted(child.info["request_ids"])


def test_an_ignored_sigterm_stays_ignored(receiver: Receiver) -> None:
    """Where the program ignores SIGTERM, handle_sigterm=True leaves it ignored."""
    child = Child(receiver.url, "0", "--ignore", "--handle", "--check-only")
    try:
        status, err = child.end()
    finally:
        child.kill()
    assert status == 0, err
    assert child.info["sigterm"] == "ignored"


def test_handle_sigterm_outside_the_main_thread_is_refused() -> None:
    """Signal handlers belong to the main thread: configuring from another thread raises
    WebhooksEmitterError and installs nothing."""
    before = signal.getsignal(signal.SIGTERM)
    errors: list[BaseException] = []

    def configure() -> None:
        try:
            WebhooksEmitter().configure(handle_sigterm=True)
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    thread = threading.Thread(target=configure)
    thread.start()
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], WebhooksEmitterError)
    assert "main thread" in str(errors[0])
    assert signal.getsignal(signal.SIGTERM) is before


def test_handle_sigterm_must_be_a_bool() -> None:
    """handle_sigterm takes True or False (None leaves it as it is)."""
    with pytest.raises(TypeError, match="handle_sigterm"):
        WebhooksEmitter().configure(handle_sigterm="yes")  # type: ignore[arg-type]
