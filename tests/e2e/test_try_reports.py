"""What the engine tells observers and log handlers about each try and outcome (CONTRACT 15):
the ``_observe`` hooks, the trace context an event carries from ``emit``, ``traceparent``
with ``propagate_trace``, and the structured ``extra`` fields of log records, read from
real deliveries to a receiver on 127.0.0.1."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable, Optional

import pytest

from webhooks_emitter import Config, WebhooksEmitter, _observe
from webhooks_emitter.testing import ReceivedRequest, Receiver, fail_first

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Recorder(_observe.Observer):
    """An observer that writes down every call, and can be told to raise."""

    def __init__(self, headers: Optional[dict[str, str]] = None, fail: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.headers = headers or {}
        self.fail = fail
        self.lock = threading.Lock()
        self.done = threading.Condition(self.lock)

    def try_started(self, emitter_id: str, event: Any, attempt: int, url: str) -> Any:
        with self.lock:
            self.calls.append(
                ("started", emitter_id, event.request_id, attempt, url, event.trace_context,
                 event.next_at - time.time())
            )
        if self.fail:
            raise RuntimeError("observer broke")
        return _observe.TryScope(self.headers)

    def try_ended(self, scope: Any, emitter_id: str, event: Any, attempt: int, result: str,
                  status_code: Optional[int], duration: Optional[float],
                  error: Optional[str]) -> None:
        with self.lock:
            self.calls.append(("ended", emitter_id, attempt, result, status_code,
                               duration is not None and duration >= 0, error, scope is not None))
        if self.fail:
            raise RuntimeError("observer broke")

    def outcome(self, emitter_id: str, event: Any, outcome: str, since_emit: float) -> None:
        with self.done:
            self.calls.append(("outcome", emitter_id, event.request_id, outcome,
                               0 <= since_emit < 30))
            self.done.notify_all()
        if self.fail:
            raise RuntimeError("observer broke")

    def wait_outcomes(self, count: int, timeout: float = 10.0) -> list[tuple[Any, ...]]:
        deadline = time.monotonic() + timeout
        with self.done:
            while True:
                found = [c for c in self.calls if c[0] == "outcome"]
                if len(found) >= count:
                    return list(self.calls)
                left = deadline - time.monotonic()
                assert left > 0, f"{len(found)} of {count} outcomes observed"
                self.done.wait(left)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """A Recorder added to the process's observers for the test, removed after."""
    observer = Recorder(headers={"traceparent": TRACEPARENT})
    _observe.add_observer(observer)
    yield observer
    _observe.remove_observer(observer)


@pytest.fixture
def captured_trace() -> Iterator[None]:
    """``emit`` captures TRACEPARENT as the caller's trace context during the test."""
    _observe.trace_capture = lambda: TRACEPARENT
    yield
    _observe.trace_capture = None


def test_observer_sees_each_try_and_the_outcome(
    hub: WebhooksEmitter, fast: Callable[..., Config], recorder: Recorder
) -> None:
    """Two failed tries then a 2xx: three started/ended pairs in order, then one outcome."""
    with Receiver(responder=fail_first(2, 503)) as receiver:
        hub.attach("obs", "*", fast(receiver.url))
        request_id = hub.emit("e", {"n": 1})
        calls = recorder.wait_outcomes(1)
    kinds = [c[0] for c in calls]
    assert kinds == ["started", "ended"] * 3 + ["outcome"]
    started = [c for c in calls if c[0] == "started"]
    assert [c[3] for c in started] == [1, 2, 3]
    assert all(c[1:3] == ("obs", request_id) and c[4] == receiver.url for c in started)
    ended = [c for c in calls if c[0] == "ended"]
    assert [(c[3], c[4]) for c in ended] == [("5xx", 503), ("5xx", 503), ("2xx", 204)]
    assert all(c[5] and c[7] for c in ended)  # a duration, and the scope handed back
    assert [c[6] for c in ended] == ["HTTP 503", "HTTP 503", None]
    assert calls[-1][1:4] == ("obs", request_id, "delivered") and calls[-1][4]


def test_observer_sees_a_given_up_event_and_a_refused_try(
    hub: WebhooksEmitter, fast: Callable[..., Config], recorder: Recorder
) -> None:
    """A blocked address is a ``refused`` try without a duration, and the event is given up."""
    hub.attach("blocked", "*", fast("http://127.0.0.1:9/hooks", block_private_networks=True))
    hub.emit("e", {})
    calls = recorder.wait_outcomes(1)
    (ended,) = [c for c in calls if c[0] == "ended"]
    assert (ended[3], ended[4], ended[5]) == ("refused", None, False)
    assert calls[-1][3] == "given_up"


def test_a_timed_out_try_is_reported_as_timeout(
    hub: WebhooksEmitter, fast: Callable[..., Config], recorder: Recorder
) -> None:
    """A receiver slower than request_timeout: the try's result is ``timeout``."""
    gate = threading.Event()

    def slow(request: ReceivedRequest) -> int:
        gate.wait(5)
        return 204

    with Receiver(responder=slow) as receiver:
        hub.attach("slow", "*", fast(receiver.url, request_timeout=0.2, max_attempts=1))
        hub.emit("e", {})
        calls = recorder.wait_outcomes(1)
        gate.set()
    (ended,) = [c for c in calls if c[0] == "ended"]
    assert ended[3] == "timeout" and ended[4] is None


def test_trace_context_reaches_the_try_and_traceparent_is_sent_when_asked(
    hub: WebhooksEmitter, fast: Callable[..., Config], recorder: Recorder, captured_trace: None,
    receiver: Receiver,
) -> None:
    """``emit`` keeps the caller's context with the event; ``propagate_trace`` sends the
    scope's headers, and without it none is sent."""
    hub.attach("plain", "*", fast(receiver.url + "?plain"))
    hub.attach("traced", "*", fast(receiver.url + "?traced", propagate_trace=True))
    hub.emit("e", {})
    assert hub.flush(10)
    by_path = {r.path: r for r in receiver.wait_for(2)}
    assert by_path["/hooks?traced"].header("traceparent") == TRACEPARENT
    assert by_path["/hooks?plain"].header("traceparent") is None
    started = [c for c in recorder.calls if c[0] == "started"]
    assert {c[5] for c in started} == {TRACEPARENT}


def test_without_observers_no_context_is_captured_or_sent(
    hub: WebhooksEmitter, fast: Callable[..., Config], receiver: Receiver
) -> None:
    """Not instrumented: the event carries no context, and the request no traceparent."""
    hub.attach("traced", "*", fast(receiver.url, propagate_trace=True))
    hub.emit("e", {})
    assert hub.flush(10)
    (request,) = receiver.wait_for(1)
    assert request.header("traceparent") is None


def test_the_try_under_way_is_due_again_only_after_request_timeout(
    hub: WebhooksEmitter, fast: Callable[..., Config], recorder: Recorder, receiver: Receiver
) -> None:
    """While a try is on the wire its event's ``next_at`` (what ``begin_try`` stores) is
    its start plus ``request_timeout`` plus the 1 s a recorded try may wait to be sent:
    a holder that takes over after a death waits so long."""
    hub.attach("held", "*", fast(receiver.url, request_timeout=3.0))
    hub.emit("e", {})
    assert hub.flush(10)
    (started,) = [c for c in recorder.calls if c[0] == "started"]
    assert 3.0 < started[6] <= 4.0


def test_an_observer_that_raises_is_logged_and_ignored(
    hub: WebhooksEmitter, fast: Callable[..., Config], receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every hook raises: deliveries go on, and a WARNING names the emitter."""
    broken = Recorder(fail=True)
    _observe.add_observer(broken)
    try:
        with caplog.at_level(logging.WARNING, logger="webhooks_emitter"):
            hub.attach("broken", "*", fast(receiver.url))
            for n in range(3):
                hub.emit("e", {"n": n})
            assert hub.flush(10)
    finally:
        _observe.remove_observer(broken)
    assert len(receiver.wait_for(3)) == 3
    assert hub.stats("broken").delivered == 3
    assert any("observer failed" in r.getMessage() for r in caplog.records)


def test_log_records_of_tries_and_outcomes_carry_the_fields(
    hub: WebhooksEmitter, fast: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    """A retried then delivered event and a given-up one: every try or outcome record has
    emitter_id, event, request_id, attempt, status_code, duration and outcome."""
    fields = ("emitter_id", "event", "request_id", "attempt", "status_code", "duration",
              "outcome")
    with caplog.at_level(logging.DEBUG, logger="webhooks_emitter"), Receiver(
        responder=fail_first(1, 500)
    ) as receiver:
        hub.attach("ok", "a", fast(receiver.url))
        hub.attach("dead", "b", fast(receiver.url, max_attempts=1))
        delivered = hub.emit("a", {})
        lost = hub.emit("b", {})
        assert hub.flush(10)
    records = [r for r in caplog.records if hasattr(r, "outcome")]
    seen = {(r.emitter_id, r.request_id, r.attempt, r.status_code, r.outcome) for r in records}
    assert ("ok", delivered, 1, 500, "retry") in seen
    assert ("ok", delivered, 2, 204, "delivered") in seen
    assert ("dead", lost, 1, 500, "given_up") in seen
    for record in records:
        assert all(hasattr(record, name) for name in fields)
        assert record.event in ("a", "b")
        assert isinstance(record.duration, float) and record.duration >= 0


def test_housekeeping_age_and_emitter_ids_for_health(
    hub: WebhooksEmitter, fast: Callable[..., Config], receiver: Receiver
) -> None:
    """No thread needed at rest (age None, alive); a timer makes one run (a small age);
    ``emitter_ids`` lists what is attached here and whether it runs."""
    assert hub.housekeeping_age() is None and hub.housekeeping_alive()
    hub.attach("b", "*", fast(receiver.url))
    hub.attach("a", "*", fast(receiver.url))
    hub.pause("b")
    assert hub.emitter_ids() == [("a", True), ("b", False)]
    assert hub.emitter_ids(include_paused=False) == [("a", True)]
    # A Retry-After wait longer than idle_timeout is a timer of the housekeeping thread.
    hub.configure(idle_timeout=0.05)
    hub.restart("b")
    with Receiver(responder=lambda r: (503, {"Retry-After": "60"}, b"")) as slow:
        hub.attach("later", "*", fast(slow.url, backoff_limit=60.0))
        hub.emit("e", {}, to="later")
        slow.wait_for(1)
        deadline = time.monotonic() + 10
        while hub.housekeeping_age() is None:
            assert time.monotonic() < deadline, "no housekeeping thread for the timer"
            time.sleep(0.01)
        age = hub.housekeeping_age()
        assert age is not None and 0 <= age < 5
        assert hub.housekeeping_alive()
