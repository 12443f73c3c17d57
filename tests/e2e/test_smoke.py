"""A first end-to-end check: one event reaches a real receiver, signed."""

from webhooks_emitter.testing import Receiver


def test_one_event_is_delivered_signed(hub, fast):
    """An emitted event arrives once, with the event header, delivery id and a valid signature."""
    with Receiver(secret="supersecret") as receiver:
        hub.attach("smoke", "order.paid", fast(receiver.url, secret="supersecret"))
        request_id = hub.emit("order.paid", {"order": 1})
        [request] = receiver.wait_for(1)
        assert request.json() == {"order": 1}
        assert request.event == "order.paid"
        assert request.delivery_id == request_id
        assert request.signature_valid, request.signature_error
        assert hub.flush(5)
