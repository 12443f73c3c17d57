"""Takeover, the engine's side (issue 18): a process that ends with a try under way lets its
lease go at its end, and the next holder waits for that try's start plus request_timeout."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from webhooks_emitter import Config, WebhooksEmitter
from webhooks_emitter.stores import SQLiteStore
from webhooks_emitter.testing import ReceivedRequest, Receiver

CHILD = textwrap.dedent(
    """
    import sys, webhooks_emitter
    from webhooks_emitter import Config
    webhooks_emitter.configure(store="sqlite:///" + sys.argv[1], exit_timeout=0.3)
    webhooks_emitter.attach("held", "*", Config(sys.argv[2], request_timeout=2.0,
                            backoff_start=0.001, backoff_limit=0.01))
    webhooks_emitter.emit("e", {"n": 1}, request_id="the-one")
    sys.stdin.readline()  # the parent says when the try is on the wire
    """
)


def test_a_process_ending_mid_try_lets_its_lease_go_at_its_end(tmp_path: Path) -> None:
    """The child's exit hook gives up waiting for a try on the wire: once it has exited the
    store shows no holder (not for lease_timeout, 30 s), and another process delivers the
    event within a few seconds of that end, its try no earlier than the first one's start
    plus request_timeout when the store keeps the ``next_at`` written before begin_try."""
    db = tmp_path / "hooks.db"
    first_seen = threading.Event()

    def respond(request: ReceivedRequest) -> int:
        if request.try_number == 1:
            first_seen.set()
            time.sleep(2.5)  # the receiver is slow: the child's try is still on the wire
        return 204

    with Receiver(responder=respond) as receiver:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), receiver.url],
            stdin=subprocess.PIPE,
            env=env,
        )
        try:
            assert first_seen.wait(20), "the child's try never came"
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            child.stdin.flush()
            assert child.wait(20) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        ended = time.monotonic()
        store = SQLiteStore(db)
        try:
            assert store.state("held").lease_holder is None
        finally:
            store.close()
        other = WebhooksEmitter(store=f"sqlite:///{db}")
        try:
            other.attach("held", "*", Config(receiver.url, request_timeout=2.0))
            assert other.flush(15)
            tries = [r for r in receiver.wait_for(2) if r.delivery_id == "the-one"]
        finally:
            other.shutdown(2)
    first, second = tries[:2]
    gap = second.received_at - first.received_at
    assert gap < 6.0, f"the next try came {gap:.2f} s after the first"
    assert second.received_at - ended < 4.0


def test_the_poll_tells_a_dead_holder_of_this_host_from_a_live_one() -> None:
    """The housekeeping poll tries the lease of an emitter whose holder names this host and
    a process that has ended; never for a live process, another host, or itself."""
    from webhooks_emitter._housekeeping import _gone

    host = socket.gethostname()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    assert _gone(f"{host}:{ended.pid}", host)
    assert not _gone(f"{host}:{os.getppid()}", host)  # alive
    assert not _gone(f"{host}:{os.getpid()}", host)  # this process
    assert not _gone(f"elsewhere:{ended.pid}", host)
    assert not _gone("no-pid-here", host)
