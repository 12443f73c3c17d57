"""webhooks_emitter.testing.capture(): deliveries recorded, never sent (CONTRACT section 12)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import pytest

import webhooks_emitter
from webhooks_emitter import Config, DeliveryResult, WebhooksEmitter, WebhooksEmitterError, signing
from webhooks_emitter.testing import Receiver, capture

# TEST-NET-3 (RFC 5737): a connect there would be recorded (and refused) by the fence.
UNROUTABLE = "http://203.0.113.7:8080/hooks"


def test_capture_records_what_the_network_would_carry(
    hub: WebhooksEmitter, fast: Callable[..., Config]
) -> None:
    """Under capture a signed delivery is recorded with the very headers (names, values,
    order) and body a real receiver gets for the same delivery, and nothing reaches it."""
    with Receiver(secret="supersecret") as receiver:
        hub.attach(
            "billing",
            "order.paid",
            fast(receiver.url, secret="supersecret", additional_headers={"X-Tenant": "acme"}),
        )
        payload = {"order": 1234, "name": "Zoë", "amount": 12.5}
        with capture(hub) as hooks:
            hub.emit("order.paid", payload, request_id="req-1")
            assert hub.flush(5)
        assert receiver.requests == []
        [captured] = hooks.requests

        hub.emit("order.paid", payload, request_id="req-1")
        assert hub.flush(5)
        [real] = receiver.wait_for(1)

    assert captured.headers == real.headers
    assert captured.body == real.body == '{"order":1234,"name":"Zoë","amount":12.5}'.encode()
    assert (captured.method, captured.path) == (real.method, real.path) == ("POST", "/hooks")
    assert real.signature_valid
    signing.verify(captured.body, dict(captured.headers), "supersecret")
    assert captured.event == "order.paid" and captured.delivery_id == "req-1"
    assert captured.try_number == 1 and captured.signature_error is None


def test_capture_opens_no_socket(
    hub: WebhooksEmitter, fast: Callable[..., Config], network_fence: Any
) -> None:
    """An emitter pointed at a public address delivers under capture without any connect
    or name lookup: the test fence records none."""
    hub.attach("public", "*", fast(UNROUTABLE))
    hub.attach("named", "*", fast("https://hooks.example.com/in"))
    with capture(hub) as hooks:
        for number in range(3):
            hub.emit("tick", {"n": number})
        assert hub.flush(5)
    assert len(hooks.requests) == 6
    assert {r.header("Host") for r in hooks.requests} == {"203.0.113.7:8080", "hooks.example.com"}
    assert network_fence.attempts == []
    assert network_fence.names == []


def test_capture_counts_as_a_2xx_answer(hub: WebhooksEmitter, fast: Callable[..., Config]) -> None:
    """Each captured try is a delivered event for the engine: on_delivery says delivered
    with status 204 after one try, and the stats count it."""
    results: list[DeliveryResult] = []
    hub.attach("one", "e", fast(UNROUTABLE, on_delivery=results.append))
    with capture(hub):
        hub.emit("e", {"a": 1})
        assert hub.flush(5)
    [result] = results
    assert result.delivered and result.status_code == 204 and result.attempts == 1
    stats = hub.stats("one")
    assert stats.delivered == 1 and stats.given_up == 0


def test_capture_ends_at_exit_of_the_block(
    hub: WebhooksEmitter, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """After the block the instance sends over the network again; what was captured stays
    readable, and clear() forgets it."""
    hub.attach("r", "e", fast(receiver.url))
    with capture(hub) as hooks:
        hub.emit("e", {"when": "inside"})
        assert hub.flush(5)
    hub.emit("e", {"when": "after"})
    assert hub.flush(5)
    [real] = receiver.wait_for(1)
    assert real.json() == {"when": "after"}
    assert [r.json() for r in hooks.requests] == [{"when": "inside"}]
    hooks.clear()
    assert hooks.requests == []


def test_capture_standard_webhooks_signature_verifies(
    hub: WebhooksEmitter, fast: Callable[..., Config]
) -> None:
    """A timestamped scheme's captured headers verify as a receiver would check them."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    hub.attach(
        "std", "e", fast(UNROUTABLE, secret=secret, signature_scheme=signing.STANDARD_WEBHOOKS)
    )
    with capture(hub) as hooks:
        request_id = hub.emit("e", {"x": [1, 2]})
        assert hub.flush(5)
    [hook] = hooks.requests
    assert hook.header("webhook-id") == request_id
    signing.STANDARD_WEBHOOKS.verify(hook.body, hook.headers, secret)


def test_capture_default_instance(fast: Callable[..., Config]) -> None:
    """capture() with no argument captures the default instance, that the module-level
    functions use."""
    webhooks_emitter.attach("capture-default", "signup", fast(UNROUTABLE))
    try:
        with capture() as hooks:
            webhooks_emitter.emit("signup", {"user": "ada"})
            assert webhooks_emitter.flush(5)
        [hook] = hooks.requests
        assert hook.json() == {"user": "ada"} and hook.event == "signup"
    finally:
        webhooks_emitter.detach("capture-default")


def test_capture_from_many_threads(hub: WebhooksEmitter, fast: Callable[..., Config]) -> None:
    """Emits from many threads at once are all recorded, each delivery once, in order per
    thread's request ids."""
    hub.attach("many", "e", fast(UNROUTABLE))
    with capture(hub) as hooks:

        def emit_some(thread: int) -> None:
            for number in range(25):
                hub.emit("e", {"t": thread, "n": number}, request_id=f"{thread}-{number}")

        threads = [threading.Thread(target=emit_some, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert hub.flush(10)
        recorded = hooks.wait_for(200)
    ids = [r.delivery_id for r in recorded]
    assert sorted(ids) == sorted(f"{t}-{n}" for t in range(8) for n in range(25))
    for thread in range(8):
        mine = [r.json()["n"] for r in recorded if r.json()["t"] == thread]
        assert mine == list(range(25))


def test_capture_refuses_a_durable_store(tmp_path: Path) -> None:
    """With a durable store another process could deliver for real, so capture refuses;
    the instance keeps its network transport."""
    instance = WebhooksEmitter(store=f"sqlite:///{tmp_path / 'hooks.db'}")
    try:
        with pytest.raises(WebhooksEmitterError, match="memory store"):
            with capture(instance):
                pass  # pragma: no cover - never entered
        assert instance.transport_generation == 0
    finally:
        instance.shutdown(1)


def test_capture_without_argument_takes_every_memory_instance(
    fast: Callable[..., Config], receiver: Receiver
) -> None:
    """No argument: an instance made before the block and one made inside it both deliver
    into the capture; the real receiver they point at gets nothing."""
    before = WebhooksEmitter(exit_timeout=1.0)
    inside = None
    try:
        before.attach("before", "e", fast(receiver.url))
        with capture() as hooks:
            inside = WebhooksEmitter(exit_timeout=1.0)
            inside.attach("inside", "e", fast(receiver.url))
            before.emit("e", {"from": "before"})
            inside.emit("e", {"from": "inside"})
            assert before.flush(5) and inside.flush(5)
        assert sorted(r.json()["from"] for r in hooks.requests) == ["before", "inside"]
        before.emit("e", {"from": "after"})
        assert before.flush(5)
        [real] = receiver.wait_for(1)
        assert real.json() == {"from": "after"}
    finally:
        before.shutdown(1)
        if inside is not None:
            inside.shutdown(1)
    assert [r.json()["from"] for r in receiver.requests] == ["after"]


def test_capture_leaves_a_durable_instance_alone(
    fast: Callable[..., Config], receiver: Receiver, tmp_path: Path
) -> None:
    """No argument: an instance on SQLite keeps delivering over the network."""
    durable = WebhooksEmitter(store=f"sqlite:///{tmp_path / 'hooks.db'}")
    try:
        durable.attach("durable", "e", fast(receiver.url))
        with capture() as hooks:
            durable.emit("e", {"n": 1})
            assert durable.flush(10)
        assert hooks.requests == []
        assert len(receiver.wait_for(1)) == 1
    finally:
        durable.shutdown(1)


def test_events_not_tried_when_the_block_ends_go_into_the_capture(
    hub: WebhooksEmitter, fast: Callable[..., Config], receiver: Receiver
) -> None:
    """200 events emitted and the block left at once, without flush: every one is in the
    capture when the block has ended, none reaches the receiver afterwards."""
    hub.attach("burst", "e", fast(receiver.url))
    with capture() as hooks:
        for number in range(200):
            hub.emit("e", {"n": number})
    assert [r.json()["n"] for r in hooks.requests] == list(range(200))
    hub.emit("e", {"n": "after"})
    assert hub.flush(5)
    assert [r.json()["n"] for r in receiver.wait_for(1)] == ["after"]


def test_an_event_in_a_slow_backoff_at_the_end_goes_into_the_capture(
    hub: WebhooksEmitter, fast: Callable[..., Config]
) -> None:
    """An event held by a 30 s Retry-After from before the block, and one emitted inside
    behind it: leaving the block delivers both into the capture at once; the receiver saw
    only the first try that answered 503."""
    with Receiver(responder=lambda r: (503, {"Retry-After": "30"}, b"")) as receiver:
        hub.attach("slow", "e", fast(receiver.url, backoff_limit=60.0))
        first = hub.emit("e", {"n": 1})
        receiver.wait_for(1)
        with capture() as hooks:
            second = hub.emit("e", {"n": 2})
        assert [r.delivery_id for r in hooks.requests] == [first, second]
        assert hub.stats("slow").queued == 0
        assert [r.delivery_id for r in receiver.requests] == [first]


def test_a_paused_emitters_events_are_dropped_at_the_end(
    hub: WebhooksEmitter, fast: Callable[..., Config], receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Events emitted under capture to a paused emitter are dropped when the block ends,
    logged with their count and counted; a restart afterwards sends nothing."""
    hub.attach("paused", "e", fast(receiver.url))
    hub.pause("paused")
    with capture() as hooks:
        for number in range(3):
            hub.emit("e", {"n": number})
    assert hooks.requests == []
    assert hub.stats("paused").dropped == 3 and hub.stats("paused").queued == 0
    assert any("3 undelivered event(s) dropped" in r.getMessage() for r in caplog.records)
    hub.restart("paused")
    hub.emit("e", {"n": "after"})
    assert hub.flush(5)
    assert [r.json()["n"] for r in receiver.wait_for(1)] == ["after"]
