"""Detaching an emitter while its try is on the wire and attaching the same id again at
once (issue 17 item 6): the new incarnation's events are delivered, none is stranded."""

from __future__ import annotations

import threading
from typing import Callable

from webhooks_emitter import Config, WebhooksEmitter
from webhooks_emitter.testing import ReceivedRequest, Receiver


def test_reattach_while_the_old_try_is_on_the_wire_strands_nothing(
    hub: WebhooksEmitter, fast: Callable[..., Config]
) -> None:
    """attach X; emit; detach X mid-try; attach X; emit; flush: every cycle's second event
    arrives and nothing stays queued (the old incarnation's ending thread used to put the
    new one's fetched event back in the store's queue, where no thread looked for it)."""
    on_wire = threading.Event()
    release = threading.Event()

    def respond(request: ReceivedRequest) -> int:
        if request.json().get("first"):
            on_wire.set()
            release.wait(5)
        return 204

    with Receiver(responder=respond) as receiver:
        for cycle in range(40):
            on_wire.clear()
            release.clear()
            hub.attach("x", "*", fast(receiver.url))
            hub.emit("e", {"first": True, "cycle": cycle})
            assert on_wire.wait(5), f"cycle {cycle}: the first try never came"
            hub.detach("x")
            hub.attach("x", "*", fast(receiver.url))
            second = hub.emit("e", {"first": False, "cycle": cycle})
            release.set()
            assert hub.flush(3), f"cycle {cycle}: flush timed out, stats {hub.stats('x')}"
            assert hub.stats("x").queued == 0
            receiver.wait_for(1, where=lambda r, second=second: r.delivery_id == second)
            hub.detach("x")
