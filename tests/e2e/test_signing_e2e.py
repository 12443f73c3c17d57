"""Signing end to end: deliveries through the real engine to receivers on 127.0.0.1 that verify
them, for every scheme, with retries re-signed, and with keys being rotated."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from typing import Any, Callable

import pytest
import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import webhooks_emitter
from webhooks_emitter import (
    Config,
    DeliveryResult,
    InvalidSignatureError,
    WebhooksEmitter,
    signing,
)
from webhooks_emitter.signing import GITHUB, STANDARD_WEBHOOKS, WEBHOOKS_EMITTER
from webhooks_emitter.testing import ReceivedRequest, Receiver, Response, fail_first

FastConfig = Callable[..., Config]

SW_NEW = "whsec_" + base64.b64encode(b"the new key, 24 bytes ok").decode()
SW_OLD = "whsec_" + base64.b64encode(b"the old key, 24 bytes ok").decode()
SECRETS = {
    WEBHOOKS_EMITTER: ("new-plain-secret", "old-plain-secret"),
    GITHUB: ("new-github-secret", "old-github-secret"),
    STANDARD_WEBHOOKS: (SW_NEW, SW_OLD),
}
SCHEMES = [WEBHOOKS_EMITTER, GITHUB, STANDARD_WEBHOOKS]
IDS = [s.name for s in SCHEMES]
SIGNATURE_HEADERS = {
    WEBHOOKS_EMITTER: {"x-webhooks-signature"},
    GITHUB: {"x-hub-signature-256"},
    STANDARD_WEBHOOKS: {"webhook-id", "webhook-timestamp", "webhook-signature"},
}
ALL_SIGNATURE_HEADERS = set().union(*SIGNATURE_HEADERS.values())


def _as_received(text: str) -> str:
    """A header value as a Python server hands it over: its UTF-8 bytes read as latin-1."""
    return text.encode("utf-8").decode("latin-1")


def _names(request: ReceivedRequest) -> set[str]:
    return {name.lower() for name, _ in request.headers}


def _independent_check(scheme: signing.Scheme, secret: str, request: ReceivedRequest) -> None:
    """Verify ``request`` without this library: the contract's expression, GitHub's recipe,
    or the reference standardwebhooks package."""
    key = secret.encode()
    if scheme is WEBHOOKS_EMITTER:
        digest = base64.b32hexencode(hmac.new(key, request.body, hashlib.sha256).digest())
        assert request.header("X-Webhooks-Signature") == (
            "sha256:" + digest.decode().lower().rstrip("=")
        )
    elif scheme is GITHUB:
        digest_hex = hmac.new(key, request.body, hashlib.sha256).hexdigest()
        assert request.header("X-Hub-Signature-256") == "sha256=" + digest_hex
    else:
        assert Webhook(secret).verify(request.body, dict(request.headers), json_parse=False) is None


@pytest.mark.parametrize("scheme", SCHEMES, ids=IDS)
def test_every_scheme_is_verified_by_the_receiver(
    hub: WebhooksEmitter, fast: FastConfig, scheme: signing.Scheme
) -> None:
    """Each delivery carries X-Webhooks-Event, X-Webhooks-Delivery and exactly its scheme's
    signature headers; the receiver, an independent check and webhooks_emitter.verify pass."""
    secret = SECRETS[scheme][0]
    results: list[DeliveryResult] = []
    with Receiver(secret=secret, scheme=scheme) as receiver:
        hub.attach("e2e", "order.paid", fast(receiver.url, secret=secret, signature_scheme=scheme,
                                             on_delivery=results.append))
        sent = {hub.emit("order.paid", {"order": n, "text": "café ☕"}): n for n in range(3)}
        sent[hub.emit("order.paid", {"order": 3}, request_id="commande:42.~_!")] = 3
        requests_seen = receiver.wait_for(4)
        assert hub.flush(10)

    received = {_as_received(request_id): n for request_id, n in sent.items()}
    assert {r.delivery_id for r in requests_seen} == set(received)
    for request in requests_seen:
        assert request.signature_error is None
        assert request.event == "order.paid"
        assert request.header("X-Webhooks-Event") == "order.paid"
        assert request.json()["order"] == received[request.delivery_id]  # type: ignore[index]
        present = _names(request) & ALL_SIGNATURE_HEADERS
        assert present == SIGNATURE_HEADERS[scheme]
        _independent_check(scheme, secret, request)
        headers = dict(request.headers)
        webhooks_emitter.verify(request.body, headers, secret, scheme=scheme)
        webhooks_emitter.verify(request.body, headers, [secret], scheme=scheme.name)
        if scheme is STANDARD_WEBHOOKS:
            assert request.header("webhook-id") == request.header("X-Webhooks-Delivery")
            assert abs(int(request.header("webhook-timestamp") or 0) - time.time()) < 60
        with pytest.raises(InvalidSignatureError, match="matches the secret"):
            webhooks_emitter.verify(request.body + b" ", headers, secret, scheme=scheme)
    assert sorted(r.request_id for r in results) == sorted(sent)
    assert all(r.delivered and r.attempts == 1 and r.status_code == 204 for r in results)


@pytest.mark.parametrize("scheme", SCHEMES, ids=IDS)
def test_header_identifier_with_every_scheme(
    hub: WebhooksEmitter, fast: FastConfig, scheme: signing.Scheme
) -> None:
    """With header_identifier="Acme" the Event and Delivery headers (and the original scheme's
    signature) are named X-Acme-*, and a receiver told so verifies."""
    secret = SECRETS[scheme][0]
    with Receiver(secret=secret, scheme=scheme, header_identifier="Acme") as receiver:
        hub.attach("acme", "ping", fast(receiver.url, secret=secret, signature_scheme=scheme,
                                        header_identifier="Acme"))
        request_id = hub.emit("ping", {"ok": True})
        [request] = receiver.wait_for(1)
        assert hub.flush(10)
    assert request.signature_error is None
    assert request.header("X-Acme-Event") == "ping"
    assert request.header("X-Acme-Delivery") == request_id
    assert request.header("X-Webhooks-Event") is None
    if scheme is WEBHOOKS_EMITTER:
        assert request.header("X-Acme-Signature", "").startswith("sha256:")  # type: ignore[union-attr]
    webhooks_emitter.verify(request.body, dict(request.headers), secret, scheme=scheme,
                            header_identifier="Acme")


@pytest.mark.parametrize("scheme", SCHEMES, ids=IDS)
def test_without_secret_nothing_is_signed(
    hub: WebhooksEmitter, fast: FastConfig, scheme: signing.Scheme
) -> None:
    """Without a secret no signature header is sent, whatever the scheme; Event and Delivery
    headers still are."""
    with Receiver() as receiver:
        hub.attach("plain", "ping", fast(receiver.url, signature_scheme=scheme))
        request_id = hub.emit("ping", {})
        [request] = receiver.wait_for(1)
        assert hub.flush(10)
    assert not _names(request) & ALL_SIGNATURE_HEADERS
    assert request.header("X-Webhooks-Event") == "ping"
    assert request.header("X-Webhooks-Delivery") == request_id


def _reference_responder(secret: str, verdicts: list[str]) -> Callable[[ReceivedRequest], Response]:
    """A receiver's view as a real application would write it with the reference package:
    204 when standardwebhooks verifies the request, 401 otherwise."""

    def respond(request: ReceivedRequest) -> Response:
        try:
            Webhook(secret).verify(request.body, dict(request.headers))
        except WebhookVerificationError as exc:
            verdicts.append(f"invalid: {exc}")
            return 401
        verdicts.append("valid")
        return 204

    return respond


def test_standard_webhooks_receiver_using_reference_package(
    hub: WebhooksEmitter, fast: FastConfig
) -> None:
    """A receiver built on the reference standardwebhooks package accepts every delivery
    (unicode bodies and an id full of punctuation included) and refuses one signed with
    another key."""
    verdicts: list[str] = []
    results: list[DeliveryResult] = []
    with Receiver(responder=_reference_responder(SW_NEW, verdicts)) as receiver:
        good = fast(receiver.url, secret=SW_NEW, signature_scheme=STANDARD_WEBHOOKS,
                    on_delivery=results.append, max_attempts=1)
        hub.attach("good", "note", good)
        hub.attach("wrong-key", "other", fast(receiver.url, secret=SW_OLD, max_attempts=1,
                                              signature_scheme=STANDARD_WEBHOOKS,
                                              on_delivery=results.append))
        ids = [hub.emit("note", {"n": n, "text": "naïve 😀"}) for n in range(5)]
        ids.append(hub.emit("note", {"n": 5}, request_id="evt:2024-01-01T00:00:00Z/~#5"))
        wrong = hub.emit("other", {"n": -1})
        receiver.wait_for(7)
        assert hub.flush(10)
    by_id = {r.request_id: r for r in results}
    assert all(by_id[i].delivered and by_id[i].status_code == 204 for i in ids)
    assert not by_id[wrong].delivered and by_id[wrong].status_code == 401
    assert sorted(verdicts) == ["invalid: No matching signature found"] + ["valid"] * 6


def test_ids_with_surrounding_whitespace_are_refused_at_emit(
    hub: WebhooksEmitter, fast: FastConfig
) -> None:
    """Request ids with whitespace around them would reach the receiver changed (HTTP strips
    it), so the signed webhook-id could not match: emit refuses them in the caller, naming
    request_id, and nothing is sent."""
    with Receiver(secret=SW_NEW, scheme=STANDARD_WEBHOOKS) as receiver:
        hub.attach("spaces", "note", fast(receiver.url, secret=SW_NEW,
                                          signature_scheme=STANDARD_WEBHOOKS))
        for request_id in ("trailing ", " leading", "tab\t"):
            with pytest.raises(ValueError, match="request_id"):
                hub.emit("note", {"id": request_id}, request_id=request_id)
        assert hub.flush(10)
        assert receiver.requests == []


def test_standard_webhooks_retry_keeps_id_and_resigns_each_try(
    hub: WebhooksEmitter, fast: FastConfig
) -> None:
    """A retried STANDARD_WEBHOOKS delivery keeps its webhook-id on every try, and each try
    carries a timestamp taken at that try with a signature the reference package accepts."""
    verdicts: list[str] = []
    check = _reference_responder(SW_NEW, verdicts)
    fail_twice = fail_first(2)
    seen: list[tuple[ReceivedRequest, float]] = []
    clock_moved = threading.Event()

    def respond(request: ReceivedRequest) -> Response:
        seen.append((request, time.time()))
        assert check(request) == 204
        if request.try_number == 1:
            # Hold the first answer until the clock is in a later second, so that a
            # signature made at each try must differ from the first one.
            later = int(request.header("webhook-timestamp") or 0) + 1
            while time.time() < later:
                clock_moved.wait(later - time.time())
        return fail_twice(request)

    results: list[DeliveryResult] = []
    with Receiver(responder=respond) as receiver:
        hub.attach("retried", "job", fast(receiver.url, secret=SW_NEW, request_timeout=5.0,
                                          signature_scheme=STANDARD_WEBHOOKS, max_attempts=3,
                                          on_delivery=results.append))
        request_id = hub.emit("job", {"job": 1})
        receiver.wait_for(3)
        assert hub.flush(10)

    assert [r.try_number for r, _ in seen] == [1, 2, 3]
    assert verdicts == ["valid"] * 3
    stamps = [int(r.header("webhook-timestamp") or 0) for r, _ in seen]
    for (request, received_at), stamp in zip(seen, stamps):
        assert request.header("webhook-id") == request_id
        assert request.header("X-Webhooks-Delivery") == request_id
        assert received_at - 5 <= stamp <= received_at  # taken at this try
        STANDARD_WEBHOOKS.verify(request.body, dict(request.headers), SW_NEW, tolerance=5)
    assert stamps[0] < stamps[1] <= stamps[2]
    signatures = [r.header("webhook-signature") for r, _ in seen]
    assert signatures[0] != signatures[1]
    assert len({r.body for r, _ in seen}) == 1
    [result] = results
    assert result.delivered and result.attempts == 3


@pytest.mark.parametrize("scheme", [WEBHOOKS_EMITTER, GITHUB], ids=["webhooks_emitter", "github"])
def test_plain_schemes_resend_the_same_signature(
    hub: WebhooksEmitter, fast: FastConfig, scheme: signing.Scheme
) -> None:
    """Schemes without a timestamp send the same signature and delivery id on every try."""
    secret = SECRETS[scheme][0]
    with Receiver(secret=secret, scheme=scheme, responder=fail_first(1)) as receiver:
        hub.attach("retried", "job", fast(receiver.url, secret=secret, signature_scheme=scheme))
        request_id = hub.emit("job", {"job": 1})
        first, second = receiver.wait_for(2)
        assert hub.flush(10)
    assert first.headers == second.headers
    assert first.delivery_id == second.delivery_id == request_id
    assert first.signature_error is None and second.signature_error is None


def test_standard_webhooks_rotation_old_key_receiver_still_verifies(
    hub: WebhooksEmitter, fast: FastConfig
) -> None:
    """While rotating ([new, old]) STANDARD_WEBHOOKS signs with both keys: a receiver that
    knows only the old key verifies (ours and the reference package), one that knows only
    the new key does too, and a receiver with an unrelated key does not."""
    verdicts: list[str] = []
    other = "whsec_" + base64.b64encode(b"an unrelated key").decode()
    with Receiver(secret=SW_OLD, scheme=STANDARD_WEBHOOKS) as old_only, Receiver(
        secret=SW_NEW, scheme=STANDARD_WEBHOOKS
    ) as new_only, Receiver(responder=_reference_responder(SW_OLD, verdicts)) as reference_old:
        for name, receiver in (("old", old_only), ("new", new_only), ("ref", reference_old)):
            hub.attach(name, "rotate", fast(receiver.url, secret=[SW_NEW, SW_OLD],
                                            signature_scheme=STANDARD_WEBHOOKS))
        hub.emit("rotate", {"step": "both keys"})
        [seen_old] = old_only.wait_for(1)
        [seen_new] = new_only.wait_for(1)
        reference_old.wait_for(1)
        assert hub.flush(10)
    assert seen_old.signature_error is None and seen_new.signature_error is None
    assert verdicts == ["valid"]
    assert len((seen_old.header("webhook-signature") or "").split(" ")) == 2
    Webhook(SW_NEW).verify(seen_new.body, dict(seen_new.headers), json_parse=False)
    with pytest.raises(InvalidSignatureError, match="no signature in webhook-signature"):
        webhooks_emitter.verify(seen_old.body, dict(seen_old.headers), other,
                                scheme=STANDARD_WEBHOOKS)


@pytest.mark.parametrize("scheme", [WEBHOOKS_EMITTER, GITHUB], ids=["webhooks_emitter", "github"])
def test_plain_rotation_receiver_accepts_both_keys_first(
    hub: WebhooksEmitter, fast: FastConfig, scheme: signing.Scheme
) -> None:
    """WEBHOOKS_EMITTER and GITHUB carry one signature, made with the first secret: the
    receiver lists [new, old] first, so senders on the old key and on [new, old] both verify;
    a receiver still on the old key alone refuses the new signature, which is why it must
    learn the new key before the sender switches."""
    new, old = SECRETS[scheme]
    with Receiver(secret=[new, old], scheme=scheme) as both, Receiver(
        secret=old, scheme=scheme
    ) as old_only:
        for receiver, label in ((both, "both"), (old_only, "old-only")):
            hub.attach(f"{label}-before", "before", fast(receiver.url, secret=old,
                                                         signature_scheme=scheme))
            hub.attach(f"{label}-during", "during", fast(receiver.url, secret=[new, old],
                                                         signature_scheme=scheme))
        hub.emit("before", {"sender": "old key"})
        hub.emit("during", {"sender": "new key first"})
        both_seen = both.wait_for(2)
        old_seen = old_only.wait_for(2)
        assert hub.flush(10)
    assert [r.signature_error for r in both_seen] == [None, None]
    verdicts = {r.event: r.signature_error for r in old_seen}
    assert verdicts["before"] is None
    header = "X-Webhooks-Signature" if scheme is WEBHOOKS_EMITTER else "X-Hub-Signature-256"
    assert verdicts["during"] == f"no signature in {header} matches the secret"


def test_receiver_rejects_a_forged_delivery() -> None:
    """A request signed with the wrong key, sent straight to a verifying receiver, is reported
    as invalid there (the receiver's verification is not a formality)."""

    body = b'{"forged":true}'
    with Receiver(secret=SW_NEW, scheme=STANDARD_WEBHOOKS) as verifying:
        headers: dict[str, Any] = {
            "X-Webhooks-Event": "x",
            "X-Webhooks-Delivery": "forged-1",
            **STANDARD_WEBHOOKS.sign(body, SW_OLD, delivery_id="forged-1",
                                     timestamp=int(time.time())),
        }
        requests.post(verifying.url, data=body, headers=headers, timeout=5)
        [request] = verifying.wait_for(1)
    assert request.signature_error == "no signature in webhook-signature matches the secret"
