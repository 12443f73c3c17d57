"""The request on the wire (CONTRACT.md section 4), as a real receiver on 127.0.0.1 sees it.

Method, path, headers, body and signature are checked byte for byte, and the signature
against the vectors the original Elixir library computed (their copy in ``tests/support/vectors``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections import Counter
from typing import Any

import pytest
import seed_vectors

import webhooks_emitter
from webhooks_emitter import signing
from webhooks_emitter.testing import ReceivedRequest, Receiver, fail_first

BASE32HEX_LOWER = re.compile(r"[0-9a-v]{52}")

# Headers the wire format names; nothing else is sent (http.client's own
# "Accept-Encoding: identity" is suppressed).
TRANSPORT_HEADERS: set[str] = set()


@pytest.fixture(scope="module")
def vectors() -> list[dict[str, str]]:
    """The original library's signature vectors: secret, body and signature of each."""
    return seed_vectors.load()


def compact(payload: Any) -> str:
    """The contract's encoding: strict, compact JSON with non-ASCII characters unescaped."""
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def reference_signature(secret: str | bytes, body: bytes) -> str:
    """The contract's own Python expression for the signature header value."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    digest = hmac.new(key, body, hashlib.sha256).digest()
    return "sha256:" + base64.b32hexencode(digest).decode().lower().rstrip("=")


# -- the request itself -------------------------------------------------------------------


def test_request_line_and_headers_are_exactly_the_wire_format(hub, fast, receiver):
    """One delivery is a POST to the URL's path and query, with exactly the documented headers.

    Host, the three X-Webhooks-* headers, the User-Agent with the package version,
    Content-Type application/json and a Content-Length equal to the body's byte length;
    nothing else but transport headers http.client adds itself.
    """
    url = f"http://127.0.0.1:{receiver.port}/hooks/ah7Ahtet6abohbai?tenant=42&x=%C3%A9"
    hub.attach("wire", "averyimportantevent", fast(url, secret="supersecret"))
    payload = {"message": "thank you for all the fish", "n": 42, "ok": True, "none": None}
    request_id = hub.emit("averyimportantevent", payload)
    [request] = receiver.wait_for(1)

    assert request.method == "POST"
    assert request.path == "/hooks/ah7Ahtet6abohbai?tenant=42&x=%C3%A9"
    names = Counter(name.lower() for name, _ in request.headers)
    assert all(count == 1 for count in names.values()), names
    required = {
        "host",
        "x-webhooks-event",
        "x-webhooks-delivery",
        "x-webhooks-signature",
        "user-agent",
        "content-type",
        "content-length",
    }
    assert required <= set(names), names
    assert set(names) - required <= TRANSPORT_HEADERS, names
    assert request.header("Host") == f"127.0.0.1:{receiver.port}"
    assert request.header("X-Webhooks-Event") == "averyimportantevent"
    assert request.header("X-Webhooks-Delivery") == request_id
    assert request.header("User-Agent") == f"WebHooks-Emitter/{webhooks_emitter.__version__}"
    assert request.header("Content-Type") == "application/json"
    assert request.body == compact(payload).encode("utf-8")
    assert request.header("Content-Length") == str(len(request.body))
    signature = reference_signature("supersecret", request.body)
    assert request.header("X-Webhooks-Signature") == signature
    assert hub.flush(5)


def test_version_in_user_agent_is_a_real_version():
    """``__version__`` (sent in the User-Agent) comes from the installed package metadata."""
    from importlib.metadata import version

    assert webhooks_emitter.__version__ == version("webhooks_emitter")
    assert re.fullmatch(r"\d+(\.\d+)*\S*", webhooks_emitter.__version__)


def test_given_request_id_is_the_delivery_id(hub, fast, receiver):
    """``emit(..., request_id=...)`` returns that id and sends it as X-Webhooks-Delivery."""
    hub.attach("wire", "some_event", fast(receiver.url))
    assert hub.emit("some_event", {"data": 1}, request_id="an_optional_request_id") == (
        "an_optional_request_id"
    )
    [request] = receiver.wait_for(1)
    assert request.header("X-Webhooks-Delivery") == "an_optional_request_id"


def test_custom_header_identifier_renames_every_header(hub, fast):
    """With header_identifier="Acme-Hooks" the headers are X-Acme-Hooks-*, and no X-Webhooks-*."""
    with Receiver(secret="supersecret", header_identifier="Acme-Hooks") as receiver:
        config = fast(receiver.url, secret="supersecret", header_identifier="Acme-Hooks")
        hub.attach("acme", "order.paid", config)
        request_id = hub.emit("order.paid", {"order": 1234})
        [request] = receiver.wait_for(1)
    assert request.header("X-Acme-Hooks-Event") == "order.paid"
    assert request.header("X-Acme-Hooks-Delivery") == request_id
    signature = reference_signature("supersecret", request.body)
    assert request.header("X-Acme-Hooks-Signature") == signature
    assert not [name for name, _ in request.headers if name.lower().startswith("x-webhooks-")]
    assert request.signature_valid, request.signature_error


def test_no_signature_header_without_a_secret(hub, fast, receiver):
    """An emitter without a secret sends no signature header of any scheme."""
    hub.attach("plain", "ev", fast(receiver.url))
    hub.emit("ev", {"foo": "bar"})
    [request] = receiver.wait_for(1)
    lowered = {name.lower() for name, _ in request.headers}
    assert request.header("X-Webhooks-Event") == "ev"
    assert not {n for n in lowered if "signature" in n}, lowered
    assert "webhook-id" not in lowered and "webhook-timestamp" not in lowered


def test_bytes_secret_is_the_key_itself(hub, fast):
    """A ``bytes`` secret (not valid UTF-8) is used as the raw HMAC key."""
    secret = b"\x00\xffraw-key\x80"
    with Receiver(secret=secret) as receiver:
        hub.attach("bin", "ev", fast(receiver.url, secret=secret))
        hub.emit("ev", {"foo": "bar"})
        [request] = receiver.wait_for(1)
    assert request.body == b'{"foo":"bar"}'
    assert request.header("X-Webhooks-Signature") == reference_signature(secret, b'{"foo":"bar"}')
    assert request.signature_valid, request.signature_error


def test_str_secret_is_its_utf8_bytes(hub, fast, receiver):
    """A ``str`` secret with non-ASCII characters signs with its UTF-8 bytes."""
    hub.attach("utf8", "ev", fast(receiver.url, secret="s3cr3t-with-ünicode"))
    hub.emit("ev", {"foo": "bar"})
    [request] = receiver.wait_for(1)
    expected = reference_signature("s3cr3t-with-ünicode".encode(), request.body)
    assert request.header("X-Webhooks-Signature") == expected


def test_additional_headers_arrive(hub, fast, receiver):
    """additional_headers (a mapping or pairs) arrive as given, beside the standard headers."""
    hub.attach(
        "extra-map",
        "ev",
        fast(receiver.url, additional_headers={"Authorization": "Bearer t0k3n", "X-Tenant": "42"}),
    )
    hub.attach("extra-pairs", "ev", fast(receiver.url, additional_headers=[("X-Trace", "a b;c=d")]))
    hub.emit("ev", {"foo": "bar"})
    requests = receiver.wait_for(2)
    by_trace = {r.header("X-Trace"): r for r in requests}
    mapped, paired = by_trace[None], by_trace["a b;c=d"]
    assert mapped.header("Authorization") == "Bearer t0k3n"
    assert mapped.header("X-Tenant") == "42"
    assert paired.header("Authorization") is None
    for request in requests:
        assert request.header("Content-Type") == "application/json"
        assert request.header("X-Webhooks-Event") == "ev"


# -- signatures ---------------------------------------------------------------------------


def test_signature_format_is_base32hex_lower_unpadded(hub, fast, receiver):
    """Every signature is ``sha256:`` and 52 characters of lower-case base32hex, no padding."""
    hub.attach("fmt", "ev", fast(receiver.url, secret="supersecret"))
    payloads = [{"i": i, "text": "x" * i} for i in range(12)]
    for payload in payloads:
        hub.emit("ev", payload)
    requests = receiver.wait_for(len(payloads))
    for request in requests:
        value = request.header("X-Webhooks-Signature")
        assert value is not None and value.startswith("sha256:"), value
        assert BASE32HEX_LOWER.fullmatch(value[len("sha256:") :]), value
        assert "=" not in value


def test_library_signer_matches_original_vectors(vectors):
    """The library's signer and verifier reproduce every vector of the original library."""
    for vector in vectors:
        body = vector["body"].encode("utf-8")
        assert reference_signature(vector["secret"], body) == vector["signature"], vector
        headers = signing.sign(body, vector["secret"], delivery_id="d", timestamp=0)
        assert headers == {"X-Webhooks-Signature": vector["signature"]}, vector
        headers = signing.WEBHOOKS_EMITTER.sign(
            body, vector["secret"], delivery_id="d", timestamp=0, header_identifier="Acme"
        )
        assert headers == {"X-Acme-Signature": vector["signature"]}, vector
        lowered = {"x-webhooks-signature": vector["signature"]}
        webhooks_emitter.verify(body, lowered, vector["secret"])


def test_delivered_signatures_match_original_vectors(hub, fast, receiver, vectors):
    """Payloads whose encoding is a vector's body arrive with that body and that signature.

    A vector is sent on the wire when its body is what the contract's encoding makes of
    the decoded body (compact, non-ASCII unescaped); the others (an empty body, escaped
    characters) are checked by the signer test above.
    """
    wire: list[tuple[int, dict[str, str]]] = []
    for index, vector in enumerate(vectors):
        try:
            payload = json.loads(vector["body"])
        except ValueError:
            continue
        if isinstance(payload, dict) and compact(payload) == vector["body"]:
            wire.append((index, vector))
            config = fast(receiver.url, secret=vector["secret"])
            hub.attach(f"vector-{index}", f"vector.{index}", config)
    assert len(wire) >= 3, "fewer vectors than expected can be produced by encoding"
    for index, vector in wire:
        hub.emit(f"vector.{index}", json.loads(vector["body"]))
    requests = receiver.wait_for(len(wire))
    by_event = {r.event: r for r in requests}
    for index, vector in wire:
        request = by_event[f"vector.{index}"]
        assert request.body == vector["body"].encode("utf-8"), index
        assert request.header("X-Webhooks-Signature") == vector["signature"], index


# -- retries ------------------------------------------------------------------------------


def test_every_try_carries_the_same_delivery_id_body_and_signature(hub, fast):
    """Retries of one delivery repeat its delivery id, body and signature exactly.

    The body is also the one encoded at ``emit``: changing the caller's dict afterwards
    does not reach the receiver.
    """
    results: list[webhooks_emitter.DeliveryResult] = []
    with Receiver(secret="supersecret", responder=fail_first(2)) as receiver:
        config = fast(receiver.url, secret="supersecret", on_delivery=results.append)
        hub.attach("retry", "ev", config)
        payload: dict[str, Any] = {"items": [1, 2, 3], "name": "café"}
        request_id = hub.emit("ev", payload)
        payload["items"].append(4)
        payload["name"] = "changed"
        tries = receiver.wait_for(3)
        assert hub.flush(5)
    assert [t.try_number for t in tries] == [1, 2, 3]
    assert {t.delivery_id for t in tries} == {request_id}
    assert {t.body for t in tries} == {'{"items":[1,2,3],"name":"café"}'.encode()}
    assert len({t.header("X-Webhooks-Signature") for t in tries}) == 1
    assert all(t.signature_valid for t in tries)
    [result] = results
    assert result.delivered and result.attempts == 3 and result.request_id == request_id


def test_each_emit_gets_a_fresh_delivery_id(hub, fast, receiver):
    """Distinct emits carry distinct delivery ids, each a UUID4 string returned by emit."""
    import uuid

    hub.attach("ids", "ev", fast(receiver.url))
    returned = [hub.emit("ev", {"i": i}) for i in range(5)]
    requests = receiver.wait_for(5)
    assert [r.delivery_id for r in requests] == returned
    assert len(set(returned)) == 5
    for value in returned:
        assert uuid.UUID(value).version == 4


def test_one_event_to_two_emitters_same_body_own_signatures(hub, fast, receiver):
    """One emit reaches two emitters with the same body and delivery id, each with its own key."""
    hub.attach("one", "ev", fast(receiver.url, secret="first"))
    hub.attach("two", "ev", fast(receiver.url, secret="second"))
    request_id = hub.emit("ev", {"shared": True})
    requests: list[ReceivedRequest] = receiver.wait_for(2)
    assert {r.body for r in requests} == {b'{"shared":true}'}
    assert {r.delivery_id for r in requests} == {request_id}
    signatures = {r.header("X-Webhooks-Signature") for r in requests}
    assert signatures == {
        reference_signature("first", b'{"shared":true}'),
        reference_signature("second", b'{"shared":true}'),
    }


def test_module_level_default_instance_sends_the_same_wire_format(fast, receiver, vectors):
    """The module-level functions use the default instance and sign as the original does."""
    [vector] = [v for v in vectors if v["body"] == '{"foo":"bar"}' and v["secret"] == "supersecret"]
    webhooks_emitter.attach("module-level", "mod.ev", fast(receiver.url, secret="supersecret"))
    try:
        request_id = webhooks_emitter.emit("mod.ev", {"foo": "bar"})
        [request] = receiver.wait_for(1)
        assert webhooks_emitter.flush(5)
    finally:
        webhooks_emitter.detach("module-level")
    assert request.delivery_id == request_id
    assert request.body == b'{"foo":"bar"}'
    assert request.header("X-Webhooks-Signature") == vector["signature"]


def test_user_info_in_the_url_is_sent_as_basic_authorization(
    hub: webhooks_emitter.WebhooksEmitter, receiver: Receiver, fast: Any
) -> None:
    """A URL with user info (https://user:pass@host/...) authenticates as requests would:
    an Authorization: Basic header, while the user info never reaches the request line."""
    url = receiver.url.replace("http://", "http://bob:s3cret@")
    hub.attach("auth", "e", fast(url))
    hub.emit("e", {"x": 1})
    [request] = receiver.wait_for(1)
    assert request.header("Authorization") == "Basic " + base64.b64encode(b"bob:s3cret").decode()
    assert request.path == "/hooks"
