"""The Django app under Django's own test runner (``manage.py test shop``), on SQLite with
the CSRF middleware on. tests/test_django.py runs each of these in a subprocess."""

from __future__ import annotations

import json
import threading
from typing import Any

from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.test import Client, LiveServerTestCase, TestCase, TransactionTestCase

import webhooks_emitter
from shop import views
from shop.models import Order
from webhooks_emitter import DeliveryResult, signing
from webhooks_emitter.contrib.django import emit_on_commit
from webhooks_emitter.testing import Capture, capture


class Rollback(Exception):
    """Raised to roll an atomic block back."""


def delivered(hooks: Capture) -> list[Any]:
    """Flush the default instance; the JSON bodies captured so far."""
    assert webhooks_emitter.flush(10)
    return [request.json() for request in hooks.requests]


class SettingsTests(TestCase):
    """settings.WEBHOOKS_EMITTER applied to the default instance at start-up."""

    def test_emitters_attached_from_settings(self) -> None:
        """The 'shop' emitter of the settings is attached, with its Config fields, and the
        EXIT_TIMEOUT applied."""
        self.assertEqual(webhooks_emitter.list_emitters(), ["shop"])
        self.assertEqual(webhooks_emitter.default.exit_timeout, 10.0)
        self.assertFalse(webhooks_emitter.default.store.durable)

    def test_emit_in_a_view(self) -> None:
        """webhooks_emitter.emit works in a view; capture() shows the signed request."""
        with capture() as hooks:
            answer = self.client.post("/emit/", {"order": 1}, content_type="application/json")
            self.assertEqual(answer.status_code, 200)
            self.assertEqual(delivered(hooks), [{"order": 1}])
        [hook] = hooks.requests
        self.assertEqual(hook.delivery_id, answer.json()["request_id"])
        signing.verify(hook.body, hook.headers, "supersecret")


class EmitOnCommitTests(TransactionTestCase):
    """emit_on_commit with the memory store: emitted from transaction.on_commit."""

    def test_commit_emits_after_the_commit(self) -> None:
        """Inside atomic nothing is emitted; at the commit the event goes, with the
        request id returned at the call."""
        with capture() as hooks:
            with transaction.atomic():
                Order.objects.create(item="book")
                request_id = emit_on_commit("order.created", {"item": "book"})
                self.assertEqual(delivered(hooks), [])
            self.assertEqual(delivered(hooks), [{"item": "book"}])
        self.assertEqual(hooks.requests[0].delivery_id, request_id)

    def test_rollback_sends_nothing(self) -> None:
        """A rolled-back atomic block sends nothing, and its row is gone too."""
        with capture() as hooks:
            try:
                with transaction.atomic():
                    Order.objects.create(item="book")
                    emit_on_commit("order.created", {"item": "book"})
                    raise Rollback
            except Rollback:
                pass
            self.assertEqual(delivered(hooks), [])
        self.assertEqual(Order.objects.count(), 0)

    def test_savepoint_rollback_drops_only_its_events(self) -> None:
        """An inner atomic block rolled back drops its events; the outer block's go at
        the commit."""
        with capture() as hooks:
            with transaction.atomic():
                emit_on_commit("kept", {"n": 1})
                try:
                    with transaction.atomic():
                        emit_on_commit("dropped", {"n": 2})
                        raise Rollback
                except Rollback:
                    pass
                emit_on_commit("kept", {"n": 3})
            self.assertEqual(delivered(hooks), [{"n": 1}, {"n": 3}])
        self.assertEqual([r.event for r in hooks.requests], ["kept", "kept"])

    def test_outside_a_transaction_emits_at_once(self) -> None:
        """In autocommit mode the event is emitted during the call."""
        with capture() as hooks:
            request_id = emit_on_commit("order.created", {"n": 1}, request_id="given-id")
            self.assertEqual(request_id, "given-id")
            self.assertEqual(delivered(hooks), [{"n": 1}])

    def test_payload_is_taken_at_the_call(self) -> None:
        """Changes to the payload after the call, before the commit, are not sent; a
        payload that cannot be encoded fails at the call, not at the commit."""
        with capture() as hooks:
            with transaction.atomic():
                payload = {"items": ["a"]}
                emit_on_commit("order.created", payload)
                payload["items"].append("b")
                with self.assertRaises(TypeError):
                    emit_on_commit("order.created", ["not", "a", "mapping"])
                with self.assertRaises(ValueError):
                    emit_on_commit("bad\nname", {})
            self.assertEqual(delivered(hooks), [{"items": ["a"]}])

    def test_view_that_rolls_back_sends_nothing(self) -> None:
        """Through a view: a committed order's event is sent, a rolled-back one's is not."""
        with capture() as hooks:
            good = self.client.post("/orders/", {"item": "pen"}, content_type="application/json")
            bad = self.client.post(
                "/orders/", {"item": "ink", "fail": True}, content_type="application/json"
            )
            self.assertTrue(bad.json()["rolled_back"])
            bodies = delivered(hooks)
        self.assertEqual([b["item"] for b in bodies], ["pen"])
        self.assertEqual([r.delivery_id for r in hooks.requests], [good.json()["request_id"]])
        self.assertEqual(list(Order.objects.values_list("item", flat=True)), ["pen"])


class OnCommitInTestCaseTests(TestCase):
    """How a project tests emit_on_commit inside Django's TestCase (one transaction)."""

    def test_capture_on_commit_callbacks(self) -> None:
        """TestCase never commits; captureOnCommitCallbacks(execute=True) runs the
        callbacks, and capture() records the event."""
        with capture() as hooks:
            with self.captureOnCommitCallbacks(execute=True) as callbacks:
                emit_on_commit("order.created", {"n": 7})
            self.assertEqual(len(callbacks), 1)
            self.assertEqual(delivered(hooks), [{"n": 7}])


class WebhookViewTests(TestCase):
    """webhook_view: CSRF-exempt, POST only, 401 on a bad signature (CSRF middleware on)."""

    def setUp(self) -> None:
        """A client that enforces CSRF checks, as browsers' requests are checked."""
        self.csrf_client = Client(enforce_csrf_checks=True)
        views.RECEIVED.clear()

    def signed(self, body: bytes, secret: str = "supersecret") -> dict[str, str]:
        """Headers signing ``body``, as the test client takes them."""
        headers = signing.WEBHOOKS_EMITTER.sign(body, secret, delivery_id="d", timestamp=0)
        return {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}

    def test_csrf_middleware_is_on(self) -> None:
        """A plain view refuses a POST without a CSRF token: the middleware is active."""
        answer = self.csrf_client.post("/emit/", {}, content_type="application/json")
        self.assertEqual(answer.status_code, 403)

    def test_signed_post_reaches_the_view_without_a_csrf_token(self) -> None:
        """A signed POST gets through without any CSRF token, body intact."""
        body = b'{"order":1}'
        answer = self.csrf_client.post(
            "/hooks/", body, content_type="application/json", **self.signed(body)
        )
        self.assertEqual(answer.status_code, 204)
        self.assertEqual(views.RECEIVED, [body])

    def test_bad_signature_is_401(self) -> None:
        """A wrong secret, a changed body or no signature: 401, the view not called."""
        body = b'{"order":1}'
        for content, headers in [
            (body, self.signed(body, "wrong")),
            (b'{"order":2}', self.signed(body)),
            (body, {}),
        ]:
            answer = self.csrf_client.post(
                "/hooks/", content, content_type="application/json", **headers
            )
            self.assertEqual(answer.status_code, 401)
        self.assertEqual(views.RECEIVED, [])

    def test_other_methods_are_405(self) -> None:
        """GET, PUT and HEAD are refused with 405 and an Allow: POST header."""
        for method in ("get", "put", "head"):
            answer = getattr(self.csrf_client, method)("/hooks/")
            self.assertEqual(answer.status_code, 405, method)
            self.assertEqual(answer["Allow"], "POST")


class LiveDeliveryTests(LiveServerTestCase):
    """The library's real deliveries to a Django receiver served on 127.0.0.1."""

    def test_webhooks_verify_at_a_django_receiver(self) -> None:
        """An emitter signing with the right secret is answered 204 and its body reaches
        the view; one with a wrong secret is answered 401 and gives up."""
        views.RECEIVED.clear()
        results: list[DeliveryResult] = []
        lock = threading.Lock()

        def record(result: DeliveryResult) -> None:
            with lock:
                results.append(result)

        url = f"{self.live_server_url}/hooks/"
        for emitter_id, secret in (("live-good", "supersecret"), ("live-bad", "wrong")):
            config = webhooks_emitter.Config(
                url, secret=secret, backoff_start=0.001, max_attempts=1, on_delivery=record
            )
            webhooks_emitter.attach(emitter_id, "live", config)
        try:
            webhooks_emitter.emit("live", {"order": 42}, to=["live-good", "live-bad"])
            self.assertTrue(webhooks_emitter.flush(10))
        finally:
            webhooks_emitter.detach("live-good")
            webhooks_emitter.detach("live-bad")
        self.assertEqual(
            sorted((r.emitter_id, r.status_code, r.delivered) for r in results),
            [("live-bad", 401, False), ("live-good", 204, True)],
        )
        self.assertEqual([json.loads(b) for b in views.RECEIVED], [{"order": 42}])


class CommandTests(TestCase):
    """The management commands need a durable store."""

    def test_commands_refuse_the_memory_store(self) -> None:
        """On the memory store each command is a usage error (exit status 2)."""
        for name, args in [
            ("webhooks_status", []),
            ("webhooks_failed", ["shop"]),
            ("webhooks_replay", ["shop"]),
            ("webhooks_worker", []),
        ]:
            with self.assertRaises(CommandError) as raised:
                call_command(name, *args)
            self.assertEqual(raised.exception.returncode, 2, name)
            self.assertIn("durable store", str(raised.exception))
