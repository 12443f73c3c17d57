"""emit()'s request_id: 1 to 200 printable ASCII characters without spaces (CONTRACT section 2)."""

from __future__ import annotations

import pytest

from webhooks_emitter import WebhooksEmitter


@pytest.mark.parametrize(
    "bad, says",
    [
        ("a" * 201, "at most 200 characters, got 201"),
        ("a" * 100_000, "at most 200 characters, got 100000"),
        ("two words", "printable ASCII without spaces"),
        ("caf\u00e9", "printable ASCII without spaces"),
        ("", "must not be empty"),
        ("a\r\nX-Injected: 1", "CR or LF"),
    ],
)
def test_a_request_id_that_cannot_travel_as_a_header_is_refused(bad: str, says: str) -> None:
    """The ValueError names request_id and the rule, whether or not an emitter listens."""
    hub = WebhooksEmitter()
    try:
        with pytest.raises(ValueError, match="request_id") as caught:
            hub.emit("order.paid", {}, request_id=bad)
        assert says in str(caught.value)
    finally:
        hub.shutdown(1)


def test_the_longest_request_id_is_accepted_as_given() -> None:
    """200 printable ASCII characters pass, and the id is returned unchanged."""
    hub = WebhooksEmitter()
    try:
        rid = "r-" + "x" * 196 + "!~"
        assert hub.emit("order.paid", {}, request_id=rid) == rid
    finally:
        hub.shutdown(1)
