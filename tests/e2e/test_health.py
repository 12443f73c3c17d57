"""``health()`` and ``Health`` (CONTRACT section 15): a store that does not answer in time
or cannot be reached, an emitter whose oldest queued event is too old, and the arguments.

Checked through ``webhooks_emitter._health.check`` (what ``WebhooksEmitter.health`` calls);
the test marked "engine" goes through the method itself.
"""

from __future__ import annotations

import time
from typing import Callable

import attrs
import pytest
from faultservers import FaultServer, closed_port

from webhooks_emitter import Config, WebhooksEmitter
from webhooks_emitter._health import Health, check
from webhooks_emitter.testing import Receiver

PASSWORD = "s3cret-pw-42"


def test_an_instance_whose_store_answers_is_healthy(hub: WebhooksEmitter) -> None:
    """A memory store, one running emitter with nothing queued: ok, no problem."""
    hub.attach("billing", "order.paid", Config("http://127.0.0.1:9/hooks"))
    health = check(hub, max_age=60)
    assert health == Health(ok=True, problems=[])


def test_health_is_frozen() -> None:
    """An answer cannot be changed after the fact."""
    health = Health.of(["x"])
    assert not health.ok
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        health.ok = True  # type: ignore[misc]


def test_an_unreachable_store_is_one_problem_without_its_password() -> None:
    """A PostgreSQL store on a port that refuses connections: not ok, one line naming the
    store and the cause, and the password nowhere."""
    with closed_port() as port:
        hub = WebhooksEmitter(store=f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/app")
        try:
            health = check(hub, timeout=5.0)
        finally:
            hub.shutdown(0)
    assert not health.ok
    (problem,) = health.problems
    assert problem.startswith("store unreachable: ") and f"127.0.0.1:{port}" in problem
    assert PASSWORD not in repr(health)


def test_a_store_that_does_not_answer_in_time_is_a_problem_and_the_check_returns() -> None:
    """A server that accepts and never answers: the check returns after about ``timeout``
    with "no answer within", and a second check waits on the same query."""
    with FaultServer(lambda conn: conn.hold()) as silent:
        hub = WebhooksEmitter(store=f"postgresql://app:{PASSWORD}@127.0.0.1:{silent.port}/app")
        try:
            for _ in range(2):
                health = check(hub, timeout=0.2)
                assert not health.ok
                (problem,) = health.problems
                assert "no answer within 0.2 s" in problem and PASSWORD not in problem
            silent.wait_connections(1)
            assert silent.connections == 1  # one query, still waited on
        finally:
            silent.stop()
            hub.shutdown(0)


def test_max_age_names_a_running_emitter_with_an_old_queued_event(
    hub: WebhooksEmitter, fast: Callable[..., Config]
) -> None:
    """An emitter whose receiver fails (its event waits for a retry far away): with a
    max_age below the event's age, one problem naming it; a paused emitter with an old
    event and an emitter of another instance are not named."""
    other = WebhooksEmitter()
    try:
        with Receiver(responder=lambda request: 500) as receiver:
            hub.attach(
                "billing", "order.paid", fast(receiver.url, backoff_start=3600, backoff_limit=3600)
            )
            hub.attach("paused", "order.paid", Config("http://127.0.0.1:9/hooks"))
            hub.pause("paused")
            other.attach("elsewhere", "order.paid", Config("http://127.0.0.1:9/hooks"))
            other.pause("elsewhere")
            hub.emit("order.paid", {})
            other.emit("order.paid", {})
            receiver.wait_for(1)
            emitted = hub.store.state("billing").oldest_queued_at
            assert emitted is not None
            while time.time() - emitted <= 0.05:  # older than max_age below, by the store's clock
                time.sleep(0.01)
            health = check(hub, max_age=0.05)
            assert not health.ok
            assert len(health.problems) == 1
            assert health.problems[0].startswith("emitter 'billing': oldest queued event is ")
            assert health.problems[0].endswith("old (max age 0.05 s)")
            assert check(hub, max_age=3600).ok
    finally:
        other.shutdown(0)


@pytest.mark.parametrize(
    "kwargs, error, says",
    [
        ({"max_age": -1}, ValueError, "max_age must be >= 0"),
        ({"max_age": "60"}, TypeError, "max_age must be a number"),
        ({"timeout": 0}, ValueError, "timeout must be > 0"),
        ({"timeout": float("nan")}, ValueError, "timeout"),
        ({"max_age": True}, TypeError, "max_age"),
    ],
)
def test_bad_arguments_name_the_argument(
    hub: WebhooksEmitter, kwargs: dict[str, object], error: type[Exception], says: str
) -> None:
    """max_age: None or seconds >= 0; timeout: seconds > 0."""
    with pytest.raises(error, match=says):
        check(hub, **kwargs)  # type: ignore[arg-type]


def test_the_method_answers_as_the_check(hub: WebhooksEmitter, fast: Callable[..., Config]) -> None:
    """Engine. ``WebhooksEmitter.health`` returns a ``Health`` and passes ``max_age`` on:
    an event waiting for its retry is a problem with ``max_age=0``, not without it."""
    with Receiver(responder=lambda request: 500) as receiver:
        hub.attach(
            "billing", "order.paid", fast(receiver.url, backoff_start=3600, backoff_limit=3600)
        )
        hub.emit("order.paid", {})
        receiver.wait_for(1)
        assert hub.health().ok  # type: ignore[attr-defined]
        answer = hub.health(max_age=0, timeout=1.0)  # type: ignore[attr-defined]
    assert isinstance(answer, Health) and not answer.ok
    assert answer.problems[0].startswith("emitter 'billing': ")


def test_a_problem_of_several_lines_becomes_one() -> None:
    """A driver's message with line breaks is one line in the answer, and the answer keeps
    its own copy of the list it was given."""
    given = ["store unreachable: connection refused\n\tIs the server running?"]
    health = Health.of(given)
    given.append("later")
    assert health.problems == ["store unreachable: connection refused Is the server running?"]
