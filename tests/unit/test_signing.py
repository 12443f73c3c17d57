"""Signing schemes (CONTRACT.md section 7): vectors, round trips, tolerance, malformed headers,
key rotation, secrets rules, header containers, and that no message ever shows a secret."""

from __future__ import annotations

import base64
import copy
import datetime
import email.message
import hashlib
import hmac
import pickle
import time
from collections.abc import Iterator, Mapping
from typing import Any, Callable

import pytest
import requests.structures
import seed_vectors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import webhooks_emitter
from webhooks_emitter import (
    Config,
    InvalidSignatureError,
    WebhooksEmitterError,
    signing,
)
from webhooks_emitter.signing import GITHUB, STANDARD_WEBHOOKS, WEBHOOKS_EMITTER

SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TIMESTAMP = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

SCHEMES = [WEBHOOKS_EMITTER, GITHUB, STANDARD_WEBHOOKS]
SCHEME_IDS = [s.name for s in SCHEMES]
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _sw_key(secret: Any) -> str:
    """A whsec_ secret for raw key bytes."""
    return "whsec_" + base64.b64encode(secret).decode()


def _secret_for(scheme: signing.Scheme, tag: str = "k") -> Any:
    """A valid secret for ``scheme``, different for each ``tag``."""
    if scheme is STANDARD_WEBHOOKS:
        return _sw_key(hashlib.sha256(tag.encode()).digest()[:24])
    return f"secret-{tag}"


def _signed(scheme: signing.Scheme, secret: Any, body: bytes = b'{"a":1}', stamp: int = 1000,
            delivery_id: str = "d-1") -> dict[str, str]:
    return scheme.sign(body, secret, delivery_id=delivery_id, timestamp=stamp)


def _error(call: Callable[[], object]) -> str:
    """The message of the InvalidSignatureError ``call`` raises."""
    with pytest.raises(InvalidSignatureError) as info:
        call()
    return str(info.value)


# --- vectors -------------------------------------------------------------------------------


def test_standard_webhooks_vector_signs_and_verifies() -> None:
    """The reference package's vector: our signature is byte for byte theirs, and verifies."""
    headers = STANDARD_WEBHOOKS.sign(
        SW_BODY, SW_SECRET, delivery_id=SW_ID, timestamp=SW_TIMESTAMP
    )
    assert headers == {
        "webhook-id": SW_ID,
        "webhook-timestamp": str(SW_TIMESTAMP),
        "webhook-signature": SW_SIGNATURE,
    }
    STANDARD_WEBHOOKS.verify(SW_BODY, headers, SW_SECRET, now=SW_TIMESTAMP)
    webhooks_emitter.verify(SW_BODY, headers, SW_SECRET, scheme=STANDARD_WEBHOOKS, now=SW_TIMESTAMP)


def test_standard_webhooks_vector_verifies_with_bare_base64_and_bytes_secret() -> None:
    """The same key given as bare base64 or as the raw key bytes gives the same signature."""
    bare = SW_SECRET[len("whsec_"):]
    raw = base64.b64decode(bare)
    for secret in (bare, raw, [raw], (bare,)):
        headers = STANDARD_WEBHOOKS.sign(SW_BODY, secret, delivery_id=SW_ID, timestamp=SW_TIMESTAMP)
        assert headers["webhook-signature"] == SW_SIGNATURE
        STANDARD_WEBHOOKS.verify(SW_BODY, headers, secret, now=SW_TIMESTAMP)


def test_github_vector_signs_and_verifies() -> None:
    """GitHub's documented vector holds for GITHUB, and verifies."""
    headers = GITHUB.sign(GH_BODY, GH_SECRET, delivery_id="ignored", timestamp=0)
    assert headers == {"X-Hub-Signature-256": GH_SIGNATURE}
    GITHUB.verify(GH_BODY, {"X-Hub-Signature-256": GH_SIGNATURE}, GH_SECRET)
    GITHUB.verify(GH_BODY, headers, GH_SECRET.encode("utf-8"))
    webhooks_emitter.verify(GH_BODY, headers, GH_SECRET, scheme="github")


@pytest.mark.parametrize("vector", seed_vectors.load(), ids=lambda v: v["signature"][7:15])
def test_original_vectors(vector: dict[str, str]) -> None:
    """Each vector computed by the Elixir original is reproduced exactly and verifies."""
    body = vector["body"].encode("utf-8")
    headers = WEBHOOKS_EMITTER.sign(body, vector["secret"], delivery_id="x", timestamp=0)
    assert headers == {"X-Webhooks-Signature": vector["signature"]}
    WEBHOOKS_EMITTER.verify(body, {"x-webhooks-signature": vector["signature"]}, vector["secret"])
    # The default scheme of the module-level functions is the original's.
    assert signing.sign(body, vector["secret"], delivery_id="x") == headers
    webhooks_emitter.verify(body, headers, vector["secret"])


def test_original_vectors_file_is_complete() -> None:
    """The seed file holds the six vectors the contract refers to, in the original's format."""
    vectors = seed_vectors.load()
    assert len(vectors) >= 6
    for vector in vectors:
        assert vector["signature"].startswith("sha256:")
        assert len(vector["signature"]) == len("sha256:") + 52


def test_webhooks_emitter_matches_contract_expression() -> None:
    """The default scheme is the contract's Python expression, under X-<identifier>-Signature."""
    body, key = b'{"x":"\xc3\xa9"}', "supersecret"
    digest = base64.b32hexencode(hmac.new(key.encode(), body, hashlib.sha256).digest())
    expected = "sha256:" + digest.decode().lower().rstrip("=")
    headers = WEBHOOKS_EMITTER.sign(
        body, key, delivery_id="x", timestamp=0, header_identifier="Acme"
    )
    assert headers == {"X-Acme-Signature": expected}
    WEBHOOKS_EMITTER.verify(body, headers, key, header_identifier="Acme")
    assert "missing header X-Webhooks-Signature" in _error(
        lambda: WEBHOOKS_EMITTER.verify(body, headers, key)
    )


# --- round trips (hypothesis) ---------------------------------------------------------------

_ids = st.text(min_size=1, max_size=40).filter(lambda s: not any(c in s for c in "\r\n\0"))
_ids = _ids.map(str.strip).filter(bool)
_stamps = st.integers(min_value=0, max_value=4_102_444_800)
_plain_secrets = st.one_of(st.text(min_size=1, max_size=80), st.binary(min_size=1, max_size=80))
_keys = st.binary(min_size=1, max_size=64)


def _sw_secret_forms(key: bytes) -> list[Any]:
    """Every way of giving one STANDARD_WEBHOOKS key."""
    text = base64.b64encode(key).decode()
    return [key, "whsec_" + text, text, "whsec_" + text.rstrip("="), text.rstrip("=")]


@PROPERTY
@given(body=st.binary(max_size=300), secret=_plain_secrets, delivery_id=_ids, stamp=_stamps,
       data=st.data())
def test_round_trip_plain_schemes(
    body: bytes, secret: Any, delivery_id: str, stamp: int, data: st.DataObject
) -> None:
    """WEBHOOKS_EMITTER and GITHUB: sign then verify passes; one changed body byte or secret
    character fails with 'no signature ... matches'."""
    scheme = data.draw(st.sampled_from([WEBHOOKS_EMITTER, GITHUB]))
    headers = scheme.sign(body, secret, delivery_id=delivery_id, timestamp=stamp)
    scheme.verify(body, headers, secret)

    if body:
        index = data.draw(st.integers(0, len(body) - 1))
        flip = data.draw(st.integers(1, 255))
        changed = body[:index] + bytes([body[index] ^ flip]) + body[index + 1:]
        assert "matches the secret" in _error(lambda: scheme.verify(changed, headers, secret))

    index = data.draw(st.integers(0, len(secret) - 1))
    if isinstance(secret, bytes):
        other: Any = secret[:index] + bytes([secret[index] ^ 1]) + secret[index + 1:]
    else:
        other = secret[:index] + chr(ord(secret[index]) ^ 1) + secret[index + 1:]
    assert "matches the secret" in _error(lambda: scheme.verify(body, headers, other))


@PROPERTY
@given(body=st.binary(max_size=300), key=_keys, delivery_id=_ids, stamp=_stamps, data=st.data())
def test_round_trip_standard_webhooks(
    body: bytes, key: bytes, delivery_id: str, stamp: int, data: st.DataObject
) -> None:
    """STANDARD_WEBHOOKS: sign then verify passes for every form of the key; changing one byte
    of the body, the id, the timestamp or the key fails with 'no signature ... matches'."""
    secret = data.draw(st.sampled_from(_sw_secret_forms(key)))
    headers = STANDARD_WEBHOOKS.sign(body, secret, delivery_id=delivery_id, timestamp=stamp)
    assert headers["webhook-timestamp"] == str(stamp)
    for form in _sw_secret_forms(key):
        STANDARD_WEBHOOKS.verify(body, headers, form, now=stamp)

    def fails(new_body: bytes, new_headers: dict[str, str], new_secret: Any) -> None:
        message = _error(
            lambda: STANDARD_WEBHOOKS.verify(new_body, new_headers, new_secret, now=stamp)
        )
        assert message == "no signature in webhook-signature matches the secret"

    if body:
        index = data.draw(st.integers(0, len(body) - 1))
        flip = data.draw(st.integers(1, 255))
        changed = body[:index] + bytes([body[index] ^ flip]) + body[index + 1:]
        fails(changed, headers, secret)

    wire_id = headers["webhook-id"]
    index = data.draw(st.integers(0, len(wire_id) - 1))
    replacement = data.draw(st.sampled_from("abcXYZ019_-"))
    other_id = wire_id[:index] + replacement + wire_id[index + 1:]
    if other_id != wire_id:
        fails(body, {**headers, "webhook-id": other_id}, secret)

    shift = data.draw(st.sampled_from([-1, 1]))
    if stamp + shift >= 0:
        fails(body, {**headers, "webhook-timestamp": str(stamp + shift)}, secret)

    index = data.draw(st.integers(0, len(key) - 1))
    other_key = key[:index] + bytes([key[index] ^ data.draw(st.integers(1, 255))]) + key[index + 1:]
    fails(body, headers, data.draw(st.sampled_from(_sw_secret_forms(other_key))))


@PROPERTY
@given(text=st.text(max_size=200), key=_keys, delivery_id=_ids)
def test_standard_webhooks_interoperates_with_reference_package(
    text: str, key: bytes, delivery_id: str
) -> None:
    """Our signatures verify with the reference package, and its signatures verify with ours
    (ids of any characters included: they travel as UTF-8 read back as latin-1)."""
    body = text.encode("utf-8")
    now = int(time.time())
    secret = _sw_key(key)
    headers = STANDARD_WEBHOOKS.sign(body, secret, delivery_id=delivery_id, timestamp=now)
    assert Webhook(secret).verify(body, headers, json_parse=False) is None

    theirs = Webhook(secret).sign(
        headers["webhook-id"], datetime.datetime.fromtimestamp(now, datetime.timezone.utc), text
    )
    STANDARD_WEBHOOKS.verify(body, {**headers, "webhook-signature": theirs}, key, now=now)
    assert theirs == headers["webhook-signature"]


def test_non_ascii_id_goes_as_utf8_bytes() -> None:
    """A non-ASCII delivery id is sent as its UTF-8 bytes (the header text is their latin-1
    reading, which is what a WSGI/ASGI receiver reads back) and verifies there."""
    headers = STANDARD_WEBHOOKS.sign(b"{}", SW_SECRET, delivery_id="commande-é-😀", timestamp=5)
    assert headers["webhook-id"].encode("latin-1") == "commande-é-😀".encode()
    # What a server hands the application: the raw bytes decoded as latin-1.
    received = {k: v.encode("latin-1").decode("latin-1") for k, v in headers.items()}
    STANDARD_WEBHOOKS.verify(b"{}", received, SW_SECRET, now=5)
    raw_pairs = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]
    STANDARD_WEBHOOKS.verify(b"{}", raw_pairs, SW_SECRET, now=5)


def test_whitespace_around_id_is_neither_sent_nor_signed() -> None:
    """Whitespace around a delivery id does not survive HTTP, so STANDARD_WEBHOOKS sends and
    signs the id without it (the signature verifies however the server treats it); an id of
    whitespace only cannot be signed."""
    for delivery_id in ("trail ", " lead", "\ttab\t"):
        headers = STANDARD_WEBHOOKS.sign(b"{}", SW_SECRET, delivery_id=delivery_id, timestamp=5)
        assert headers["webhook-id"] == delivery_id.strip()
        STANDARD_WEBHOOKS.verify(b"{}", headers, SW_SECRET, now=5)
        STANDARD_WEBHOOKS.verify(b"{}", {**headers, "webhook-id": delivery_id}, SW_SECRET, now=5)
    with pytest.raises(ValueError, match="delivery_id must not be only whitespace"):
        STANDARD_WEBHOOKS.sign(b"{}", SW_SECRET, delivery_id=" \t ", timestamp=5)


def test_plain_schemes_do_not_sign_id_or_timestamp() -> None:
    """WEBHOOKS_EMITTER and GITHUB sign the body only: id and timestamp do not change them,
    and no webhook-* header is added."""
    for scheme in (WEBHOOKS_EMITTER, GITHUB):
        first = scheme.sign(b"{}", "s", delivery_id="a", timestamp=1)
        assert first == scheme.sign(b"{}", "s", delivery_id="b", timestamp=99999)
        assert not any(name.lower().startswith("webhook-") for name in first)


# --- tolerance ------------------------------------------------------------------------------


@pytest.mark.parametrize("tolerance", [300, 10, 0])
def test_tolerance_edges(tolerance: int) -> None:
    """Exactly at the tolerance passes both ways; one second past fails, too old or too new."""
    stamp = 1_700_000_000
    headers = _signed(STANDARD_WEBHOOKS, SW_SECRET, stamp=stamp)

    def check(now: float) -> None:
        STANDARD_WEBHOOKS.verify(b'{"a":1}', headers, SW_SECRET, tolerance=tolerance, now=now)

    check(stamp)
    check(stamp + tolerance)
    check(stamp - tolerance)
    old = _error(lambda: check(stamp + tolerance + 1))
    assert old == (
        f"webhook-timestamp is too old: {tolerance + 1} s before now (tolerance {tolerance} s)"
    )
    new = _error(lambda: check(stamp - tolerance - 1))
    assert new == (
        f"webhook-timestamp is too new: {tolerance + 1} s after now (tolerance {tolerance} s)"
    )
    assert "too old" in _error(lambda: check(stamp + tolerance + 0.5))
    assert "too new" in _error(lambda: check(stamp - tolerance - 0.5))


def test_default_tolerance_is_300_seconds() -> None:
    """Without ``tolerance``, 300 s passes and 301 s fails, both ways."""
    headers = _signed(STANDARD_WEBHOOKS, SW_SECRET, stamp=10_000)
    for now in (10_300, 9_700):
        STANDARD_WEBHOOKS.verify(b'{"a":1}', headers, SW_SECRET, now=now)
    assert "too old" in _error(
        lambda: STANDARD_WEBHOOKS.verify(b'{"a":1}', headers, SW_SECRET, now=10_301)
    )
    assert "too new" in _error(
        lambda: webhooks_emitter.verify(b'{"a":1}', headers, SW_SECRET, scheme=STANDARD_WEBHOOKS,
                                        now=9_699)
    )


def test_default_now_is_the_clock() -> None:
    """Without ``now`` the clock is used: a fresh signature passes, an hour-old one fails."""
    fresh = _signed(STANDARD_WEBHOOKS, SW_SECRET, stamp=int(time.time()))
    STANDARD_WEBHOOKS.verify(b'{"a":1}', fresh, SW_SECRET)
    stale = _signed(STANDARD_WEBHOOKS, SW_SECRET, stamp=int(time.time()) - 3600)
    assert "too old" in _error(lambda: STANDARD_WEBHOOKS.verify(b'{"a":1}', stale, SW_SECRET))
    future = _signed(STANDARD_WEBHOOKS, SW_SECRET, stamp=int(time.time()) + 3600)
    assert "too new" in _error(lambda: STANDARD_WEBHOOKS.verify(b'{"a":1}', future, SW_SECRET))
    # The module-level sign stamps with the clock by default.
    now_signed = signing.sign(b"{}", SW_SECRET, delivery_id="x", scheme=STANDARD_WEBHOOKS)
    assert abs(int(now_signed["webhook-timestamp"]) - time.time()) < 60


def test_timestamp_is_checked_before_it_is_trusted_for_plain_schemes() -> None:
    """Schemes without a timestamp ignore tolerance and now."""
    for scheme in (WEBHOOKS_EMITTER, GITHUB):
        headers = _signed(scheme, "s")
        scheme.verify(b'{"a":1}', headers, "s", tolerance=0, now=0)


@pytest.mark.parametrize("bad, kind", [(-1, ValueError), (float("nan"), ValueError),
                                        ("300", TypeError), (True, TypeError)])
def test_bad_tolerance_is_an_argument_error(bad: Any, kind: type) -> None:
    """A negative, non-finite or non-numeric tolerance is the receiver's mistake, named."""
    headers = _signed(STANDARD_WEBHOOKS, SW_SECRET)
    with pytest.raises(kind, match="tolerance") as info:
        STANDARD_WEBHOOKS.verify(b'{"a":1}', headers, SW_SECRET, tolerance=bad, now=1000)
    assert not isinstance(info.value, InvalidSignatureError)


# --- malformed headers ----------------------------------------------------------------------

WE_GOOD = _signed(WEBHOOKS_EMITTER, "s")["X-Webhooks-Signature"]
GH_GOOD = _signed(GITHUB, "s")["X-Hub-Signature-256"]


@pytest.mark.parametrize(
    "headers, message",
    [
        ({}, "missing header X-Webhooks-Signature"),
        ({"X-Other-Signature": WE_GOOD}, "missing header X-Webhooks-Signature"),
        ({"X-Webhooks-Signature": ""}, "malformed X-Webhooks-Signature: the header is empty"),
        ({"X-Webhooks-Signature": "   "}, "malformed X-Webhooks-Signature: the header is empty"),
        ({"X-Webhooks-Signature": WE_GOOD[7:]},
         "malformed X-Webhooks-Signature: expected sha256:<52 base32hex characters>"),
        ({"X-Webhooks-Signature": "sha1:" + WE_GOOD[7:]},
         "malformed X-Webhooks-Signature: expected sha256:<52 base32hex characters>"),
        ({"X-Webhooks-Signature": "sha256=" + WE_GOOD[7:]},
         "malformed X-Webhooks-Signature: expected sha256:<52 base32hex characters>"),
        ({"X-Webhooks-Signature": WE_GOOD[:-1]},
         "malformed X-Webhooks-Signature: expected sha256:<52 base32hex characters>"),
        ({"X-Webhooks-Signature": WE_GOOD + "0"},
         "malformed X-Webhooks-Signature: expected sha256:<52 base32hex characters>"),
        ({"X-Webhooks-Signature": WE_GOOD[:-1] + "w"},
         "malformed X-Webhooks-Signature: expected sha256:<52 base32hex characters>"),
        ({"X-Webhooks-Signature": WE_GOOD[:-1] + "é"},
         "malformed X-Webhooks-Signature: expected sha256:<52 base32hex characters>"),
        ({"X-Webhooks-Signature": "sha256:" + "0" * 52},
         "no signature in X-Webhooks-Signature matches the secret"),
    ],
)
def test_webhooks_emitter_malformed(headers: dict[str, str], message: str) -> None:
    """Each broken X-Webhooks-Signature is refused with a message saying what is wrong."""
    assert _error(lambda: WEBHOOKS_EMITTER.verify(b'{"a":1}', headers, "s")) == message


@pytest.mark.parametrize(
    "headers, message",
    [
        ({}, "missing header X-Hub-Signature-256"),
        ({"X-Hub-Signature": GH_GOOD}, "missing header X-Hub-Signature-256"),
        ({"X-Hub-Signature-256": ""}, "malformed X-Hub-Signature-256: the header is empty"),
        ({"X-Hub-Signature-256": GH_GOOD[7:]},
         "malformed X-Hub-Signature-256: expected sha256=<64 hex digits>"),
        ({"X-Hub-Signature-256": "sha256:" + GH_GOOD[7:]},
         "malformed X-Hub-Signature-256: expected sha256=<64 hex digits>"),
        ({"X-Hub-Signature-256": "sha1=" + GH_GOOD[7:47]},
         "malformed X-Hub-Signature-256: expected sha256=<64 hex digits>"),
        ({"X-Hub-Signature-256": GH_GOOD[:-1]},
         "malformed X-Hub-Signature-256: expected sha256=<64 hex digits>"),
        ({"X-Hub-Signature-256": GH_GOOD[:-1] + "g"},
         "malformed X-Hub-Signature-256: expected sha256=<64 hex digits>"),
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64},
         "no signature in X-Hub-Signature-256 matches the secret"),
    ],
)
def test_github_malformed(headers: dict[str, str], message: str) -> None:
    """Each broken X-Hub-Signature-256 is refused with a message saying what is wrong."""
    assert _error(lambda: GITHUB.verify(b'{"a":1}', headers, "s")) == message


SW_GOOD = _signed(STANDARD_WEBHOOKS, SW_SECRET)
SW_SIG = SW_GOOD["webhook-signature"]
SW_MALFORMED_SIG = "malformed webhook-signature: expected v1,<base64 digest>, space-separated"


def _without(name: str) -> dict[str, str]:
    return {k: v for k, v in SW_GOOD.items() if k != name}


@pytest.mark.parametrize(
    "headers, message",
    [
        (_without("webhook-id"), "missing header webhook-id"),
        (_without("webhook-timestamp"), "missing header webhook-timestamp"),
        (_without("webhook-signature"), "missing header webhook-signature"),
        ({}, "missing header webhook-id"),
        ({**SW_GOOD, "webhook-id": ""}, "malformed webhook-id: the header is empty"),
        ({**SW_GOOD, "webhook-timestamp": ""}, "malformed webhook-timestamp: the header is empty"),
        ({**SW_GOOD, "webhook-signature": " "}, "malformed webhook-signature: the header is empty"),
        ({**SW_GOOD, "webhook-timestamp": "abc"},
         "malformed webhook-timestamp: expected unix seconds"),
        ({**SW_GOOD, "webhook-timestamp": "-1000"},
         "malformed webhook-timestamp: expected unix seconds"),
        ({**SW_GOOD, "webhook-timestamp": "1000.0"},
         "malformed webhook-timestamp: expected unix seconds"),
        ({**SW_GOOD, "webhook-timestamp": "1e3"},
         "malformed webhook-timestamp: expected unix seconds"),
        ({**SW_GOOD, "webhook-timestamp": "１０００"},
         "malformed webhook-timestamp: expected unix seconds"),
        ({**SW_GOOD, "webhook-timestamp": "9" * 5000},
         "malformed webhook-timestamp: expected unix seconds"),
        ({**SW_GOOD, "webhook-signature": SW_SIG[3:]}, SW_MALFORMED_SIG),
        ({**SW_GOOD, "webhook-signature": "v1"}, SW_MALFORMED_SIG),
        ({**SW_GOOD, "webhook-signature": "v1,"}, SW_MALFORMED_SIG),
        ({**SW_GOOD, "webhook-signature": "v2," + SW_SIG[3:]}, SW_MALFORMED_SIG),
        ({**SW_GOOD, "webhook-signature": "v1a," + SW_SIG[3:]}, SW_MALFORMED_SIG),
        ({**SW_GOOD, "webhook-signature": "v1,not base64!"}, SW_MALFORMED_SIG),
        ({**SW_GOOD, "webhook-signature": "v1," + SW_SIG[3:-4]}, SW_MALFORMED_SIG),
        ({**SW_GOOD, "webhook-signature": "v1," + base64.b64encode(b"x" * 16).decode()},
         SW_MALFORMED_SIG),
        ({**SW_GOOD, "webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()},
         "no signature in webhook-signature matches the secret"),
        ({**SW_GOOD, "webhook-timestamp": "999"},
         "no signature in webhook-signature matches the secret"),
    ],
)
def test_standard_webhooks_malformed(headers: dict[str, str], message: str) -> None:
    """Each missing or broken webhook-* header is refused with a message saying what is wrong."""
    assert _error(
        lambda: STANDARD_WEBHOOKS.verify(b'{"a":1}', headers, SW_SECRET, now=1000)
    ) == message


def test_standard_webhooks_tolerant_parsing() -> None:
    """Unknown versions and junk entries are skipped when a good v1 entry is there; an
    unpadded v1 signature and leading zeros in the timestamp verify, as with the reference."""
    body = b'{"a":1}'
    for value in (f"v1a,abc {SW_SIG}", f"{SW_SIG} v2,xyz", f"junk  {SW_SIG}", SW_SIG.rstrip("=")):
        STANDARD_WEBHOOKS.verify(body, {**SW_GOOD, "webhook-signature": value}, SW_SECRET, now=1000)
    padded = {**SW_GOOD, "webhook-timestamp": "0001000"}
    STANDARD_WEBHOOKS.verify(body, padded, SW_SECRET, now=1000)
    assert (
        Webhook(SW_SECRET).sign(SW_GOOD["webhook-id"],
                                datetime.datetime.fromtimestamp(1000, datetime.timezone.utc),
                                body.decode())
        == SW_SIG
    )


def test_upper_case_digests_verify() -> None:
    """Digests whose letters a proxy or client upper-cased still verify (they are case-free)."""
    WEBHOOKS_EMITTER.verify(b'{"a":1}', {"X-Webhooks-Signature": "sha256:" + WE_GOOD[7:].upper()},
                            "s")
    GITHUB.verify(b'{"a":1}', {"X-Hub-Signature-256": "sha256=" + GH_GOOD[7:].upper()}, "s")


def test_invalid_signature_error_is_library_error_and_value_error() -> None:
    """InvalidSignatureError is both a WebhooksEmitterError and a ValueError."""
    with pytest.raises(WebhooksEmitterError):
        webhooks_emitter.verify(b"{}", {}, "s")
    with pytest.raises(ValueError):
        webhooks_emitter.verify(b"{}", {}, "s")
    assert issubclass(InvalidSignatureError, WebhooksEmitterError)
    assert issubclass(InvalidSignatureError, ValueError)


# --- header containers ----------------------------------------------------------------------


class MinimalMapping(Mapping[str, str]):
    """A Mapping with only the three abstract methods, as third-party header classes are."""

    def __init__(self, data: dict[str, str]) -> None:
        self._data = {k.upper(): v for k, v in data.items()}

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def _environ(headers: dict[str, str]) -> dict[str, str]:
    return {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}


def _werkzeug(headers: dict[str, str]) -> Any:
    from werkzeug.datastructures import EnvironHeaders  # Flask's request.headers

    return EnvironHeaders(_environ(headers))


def _django(headers: dict[str, str]) -> Any:
    from django.http.request import HttpHeaders  # Django's request.headers

    return HttpHeaders(_environ(headers))


def _http_message(headers: dict[str, str]) -> Any:
    message = email.message.Message()  # http.server's self.headers
    for name, value in headers.items():
        message[name] = value
    return message


CONTAINERS: dict[str, Callable[[dict[str, str]], Any]] = {
    "dict": dict,
    "lower-dict": lambda h: {k.lower(): v for k, v in h.items()},
    "upper-dict": lambda h: {k.upper(): v for k, v in h.items()},
    "requests-CaseInsensitiveDict": requests.structures.CaseInsensitiveDict,
    "http.server-message": _http_message,
    "werkzeug-EnvironHeaders": _werkzeug,
    "django-HttpHeaders": _django,
    "minimal-Mapping": MinimalMapping,
    "str-pairs": lambda h: list(h.items()),
    "asgi-bytes-pairs": lambda h: [(k.lower().encode(), v.encode("latin-1")) for k, v in h.items()],
}


@pytest.mark.parametrize("container", CONTAINERS, ids=str)
@pytest.mark.parametrize("scheme", SCHEMES, ids=SCHEME_IDS)
def test_header_containers(container: str, scheme: signing.Scheme) -> None:
    """Every common header container verifies, names matched case-insensitively, and a missing
    header is still reported as missing."""
    secret = _secret_for(scheme)
    signed = {"X-Webhooks-Event": "e", "X-Webhooks-Delivery": "d-1", **_signed(scheme, secret)}
    headers = CONTAINERS[container](signed)
    scheme.verify(b'{"a":1}', headers, secret, now=1000)
    webhooks_emitter.verify(b'{"a":1}', headers, secret, scheme=scheme, now=1000)
    assert "matches the secret" in _error(
        lambda: scheme.verify(b'{"a":2}', headers, secret, now=1000)
    )
    unsigned = CONTAINERS[container]({"X-Webhooks-Event": "e"})
    assert _error(lambda: scheme.verify(b'{"a":1}', unsigned, secret, now=1000)).startswith(
        "missing header "
    )


def test_first_value_of_a_repeated_header_is_used() -> None:
    """A repeated header (pairs) is read by its first value, as frameworks' get() does."""
    good = _signed(GITHUB, "s")["X-Hub-Signature-256"]
    GITHUB.verify(b'{"a":1}', [("x-hub-signature-256", good), ("X-Hub-Signature-256", "junk")], "s")
    assert "malformed" in _error(
        lambda: GITHUB.verify(b'{"a":1}', [("X-Hub-Signature-256", "junk"),
                                           ("x-hub-signature-256", good)], "s")
    )


def test_headers_that_are_not_pairs_are_a_type_error() -> None:
    """Headers that are neither mapping-like nor pairs are refused with a TypeError."""
    with pytest.raises(TypeError, match="headers must be a mapping"):
        GITHUB.verify(b"{}", ["X-Hub-Signature-256"], "s")
    with pytest.raises(TypeError):
        GITHUB.verify(b"{}", 42, "s")  # type: ignore[arg-type]


def test_body_forms() -> None:
    """The body may be bytes, bytearray, memoryview or str (taken as UTF-8); not other types."""
    body = '{"x":"é"}'
    for scheme in SCHEMES:
        secret = _secret_for(scheme)
        headers = _signed(scheme, secret, body=body.encode())
        for form in (body, body.encode(), bytearray(body.encode()), memoryview(body.encode())):
            webhooks_emitter.verify(form, headers, secret, scheme=scheme, now=1000)
        with pytest.raises(TypeError, match="body must be bytes"):
            scheme.verify({"x": "é"}, headers, secret, now=1000)  # type: ignore[arg-type]


# --- key rotation ---------------------------------------------------------------------------


def test_standard_webhooks_rotation_sends_one_signature_per_secret() -> None:
    """With [new, old] STANDARD_WEBHOOKS sends two v1 signatures, newest first; a receiver
    knowing either key (ours or the reference package) verifies; an unrelated key does not."""
    new, old, other = (_secret_for(STANDARD_WEBHOOKS, t) for t in ("new", "old", "other"))
    now = int(time.time())
    headers = STANDARD_WEBHOOKS.sign(b'{"a":1}', [new, old], delivery_id="d", timestamp=now)
    first, second = headers["webhook-signature"].split(" ")
    assert first == STANDARD_WEBHOOKS.sign(b'{"a":1}', new, delivery_id="d",
                                           timestamp=now)["webhook-signature"]
    assert second == STANDARD_WEBHOOKS.sign(b'{"a":1}', old, delivery_id="d",
                                            timestamp=now)["webhook-signature"]
    for secret in (new, old, [old], [other, old], (new, other)):
        STANDARD_WEBHOOKS.verify(b'{"a":1}', headers, secret)
    for key in (new, old):
        Webhook(key).verify(b'{"a":1}', headers, json_parse=False)
    assert _error(lambda: STANDARD_WEBHOOKS.verify(b'{"a":1}', headers, other)) == (
        "no signature in webhook-signature matches the secret"
    )
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(b'{"a":1}', headers, json_parse=False)


@pytest.mark.parametrize("scheme", [WEBHOOKS_EMITTER, GITHUB], ids=["webhooks_emitter", "github"])
def test_plain_rotation_signs_with_newest_and_verifies_with_any(scheme: signing.Scheme) -> None:
    """WEBHOOKS_EMITTER and GITHUB sign with the first (newest) secret only; a receiver that
    lists several secrets passes when any matches, whatever their order."""
    headers = scheme.sign(b'{"a":1}', ["new", "old"], delivery_id="d", timestamp=0)
    assert headers == scheme.sign(b'{"a":1}', "new", delivery_id="d", timestamp=0)
    for secret in (["new", "old"], ["old", "new"], ("x", "y", b"new"), "new"):
        scheme.verify(b'{"a":1}', headers, secret)
    only_old = _error(lambda: scheme.verify(b'{"a":1}', headers, "old"))
    assert only_old.endswith("matches the secret")
    several = _error(lambda: scheme.verify(b'{"a":1}', headers, ["old", "older"]))
    assert several.endswith("matches any of the 2 secrets")


def test_verify_compares_every_secret_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Digests go through hmac.compare_digest, and every secret is compared even after a match
    (no early exit that would time which key matched)."""
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for scheme in SCHEMES:
        secrets = [_secret_for(scheme, t) for t in ("a", "b", "c")]
        headers = _signed(scheme, secrets[0])
        calls.clear()
        scheme.verify(b'{"a":1}', headers, secrets, now=1000)
        assert len(calls) == 3, scheme
        calls.clear()
        _error(lambda s=scheme, h=headers, k=secrets: s.verify(b'{"a":2}', h, k, now=1000))
        assert len(calls) == 3, scheme


# --- secrets --------------------------------------------------------------------------------

TOP_SECRET = "whsec_" + base64.b64encode(b"correct horse battery staple!!").decode()


@pytest.mark.parametrize("scheme", SCHEMES, ids=SCHEME_IDS)
@pytest.mark.parametrize(
    "secret, kind, message",
    [
        ("", ValueError, "secret must not be empty"),
        (b"", ValueError, "secret must not be empty"),
        ([], ValueError, "secret must not be an empty list"),
        ((), ValueError, "secret must not be an empty list"),
        ([TOP_SECRET, ""], ValueError, "secret must not be empty"),
        ([TOP_SECRET, 3], TypeError, "secret must be str or bytes, not int"),
        (None, TypeError, "secret must be str, bytes or a list of them, not NoneType"),
        ({TOP_SECRET}, TypeError, "secret must be str, bytes or a list of them, not set"),
        (42, TypeError, "secret must be str, bytes or a list of them, not int"),
    ],
)
def test_bad_secrets_are_refused(scheme: signing.Scheme, secret: Any, kind: type,
                                 message: str) -> None:
    """Empty secrets, empty lists and wrong types are refused by sign, verify and check_secret,
    with a message naming the rule and never the secret."""
    for call in (
        lambda: scheme.check_secret(secret),
        lambda: scheme.sign(b"{}", secret, delivery_id="d", timestamp=0),
        lambda: scheme.verify(b"{}", _signed(scheme, _secret_for(scheme)), secret, now=1000),
    ):
        with pytest.raises(kind) as info:
            call()
        assert str(info.value) == message
        assert not isinstance(info.value, InvalidSignatureError)
        assert "correct horse" not in repr(info.value) and TOP_SECRET not in repr(info.value)


SW_SECRET_RULE = (
    "secret for STANDARD_WEBHOOKS must be 'whsec_' followed by base64 (or bare base64), or bytes"
)


@pytest.mark.parametrize(
    "secret",
    ["whsec_", "whsec_====", "whsec_!!!!", "whsec_abc-_def", "whsec_ab cd", "whsec_a", "abcde",
     "whsec_ab=c", "whsec_abc===", "supersecret!", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
     ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "not base64!"]],
)
def test_standard_webhooks_refuses_secrets_that_are_not_base64(secret: Any) -> None:
    """A str secret that is not whsec_+base64 or bare base64 is a ValueError for
    STANDARD_WEBHOOKS in Config, sign, verify and check_secret, without echoing it."""
    url = "http://127.0.0.1/hooks"
    calls = [
        lambda: Config(url, secret=secret, signature_scheme=STANDARD_WEBHOOKS),
        lambda: Config(url, secret=secret, signature_scheme="standard_webhooks"),
        lambda: STANDARD_WEBHOOKS.check_secret(secret),
        lambda: STANDARD_WEBHOOKS.sign(b"{}", secret, delivery_id="d", timestamp=0),
        lambda: STANDARD_WEBHOOKS.verify(b"{}", SW_GOOD, secret, now=1000),
    ]
    for call in calls:
        with pytest.raises(ValueError) as info:
            call()
        # A fixed message: nothing of the secret can be in it.
        assert str(info.value) == SW_SECRET_RULE
        assert not isinstance(info.value, InvalidSignatureError)


@pytest.mark.parametrize("secret", ["supersecret", "whsec_abc", "whsec_abc=", "abcd", "ab==",
                                    "whsec_" + "A" * 43])
def test_standard_webhooks_reads_base64_as_the_reference_package(secret: str) -> None:
    """Valid (also unpadded) base64 secrets give the key the reference package reads."""
    headers = STANDARD_WEBHOOKS.sign(b'{"a":1}', secret, delivery_id="d", timestamp=SW_TIMESTAMP)
    theirs = Webhook(secret).sign(
        "d", datetime.datetime.fromtimestamp(SW_TIMESTAMP, datetime.timezone.utc), '{"a":1}'
    )
    assert headers["webhook-signature"] == theirs
    Config("http://127.0.0.1/hooks", secret=secret, signature_scheme=STANDARD_WEBHOOKS)


def test_plain_schemes_take_any_non_empty_secret() -> None:
    """WEBHOOKS_EMITTER and GITHUB take any non-empty str (as UTF-8) or bytes, whsec_ included."""
    for scheme in (WEBHOOKS_EMITTER, GITHUB):
        for secret in ("whsec_!!", "ü", b"\x00", "a b"):
            scheme.verify(b"{}", scheme.sign(b"{}", secret, delivery_id="d", timestamp=0), secret)
        assert scheme.sign(b"{}", "ü", delivery_id="d", timestamp=0) == scheme.sign(
            b"{}", "ü".encode(), delivery_id="d", timestamp=0
        )


def test_messages_never_contain_the_secret() -> None:
    """No failure message (or repr) of any scheme shows the secret, its key or its digest."""
    raw = b"correct horse battery staple!!"
    for scheme in SCHEMES:
        secret = TOP_SECRET if scheme is STANDARD_WEBHOOKS else "correct horse battery staple!!"
        good = _signed(scheme, secret, stamp=int(time.time()))
        broken: list[dict[str, str]] = [{}]
        for name, value in good.items():
            broken.append({**good, name: ""})
            broken.append({**good, name: value[:-2]})
            broken.append({**good, name: value[:-2] + "AA"})
            broken.append({**good, name: value + " junk"})
            broken.append({k: v for k, v in good.items() if k != name})
        forbidden = [secret, raw.decode(), base64.b64encode(raw).decode(), repr(raw)]
        for headers in broken:
            for body in (b'{"a":1}', b'{"a":2}'):
                for now in (None, 0.0, 4e9):
                    try:
                        scheme.verify(body, headers, [secret, "whsec_QUFBQQ=="], now=now)
                    except InvalidSignatureError as exc:
                        text = f"{exc} {exc!r} {exc.args}"
                        assert not any(f in text for f in forbidden), text
        assert "correct horse" not in repr(scheme)


# --- the module-level API -------------------------------------------------------------------


def test_module_level_verify_is_reexported_and_takes_scheme_names() -> None:
    """webhooks_emitter.verify is signing.verify; schemes may be given by name; unknown ones
    are a ValueError naming the choices."""
    assert webhooks_emitter.verify is signing.verify
    for name, scheme in signing.SCHEMES.items():
        secret = _secret_for(scheme)
        headers = _signed(scheme, secret)
        webhooks_emitter.verify(b'{"a":1}', headers, secret, scheme=name.upper(), now=1000)
        assert signing.sign(b'{"a":1}', secret, delivery_id="d-1", timestamp=1000,
                            scheme=name) == headers
    with pytest.raises(ValueError, match="github, standard_webhooks, webhooks_emitter"):
        webhooks_emitter.verify(b"{}", {}, "s", scheme="hmac")
    with pytest.raises(TypeError, match="scheme must be"):
        webhooks_emitter.verify(b"{}", {}, "s", scheme=None)  # type: ignore[arg-type]


def test_schemes_are_singletons_with_names() -> None:
    """The schemes are named, repr as their module path, and pickle and copy as themselves
    (so a Config sent to another process keeps its scheme)."""
    assert set(signing.SCHEMES) == {"webhooks_emitter", "github", "standard_webhooks"}
    assert repr(STANDARD_WEBHOOKS) == "webhooks_emitter.signing.STANDARD_WEBHOOKS"
    assert STANDARD_WEBHOOKS.timestamped and not GITHUB.timestamped
    assert not WEBHOOKS_EMITTER.timestamped
    for scheme in SCHEMES:
        assert pickle.loads(pickle.dumps(scheme)) is scheme
        assert copy.deepcopy(scheme) is scheme
    config = Config("http://127.0.0.1/hooks", secret=SW_SECRET, signature_scheme=STANDARD_WEBHOOKS)
    assert pickle.loads(pickle.dumps(config)).signature_scheme is STANDARD_WEBHOOKS


@pytest.mark.parametrize(
    "kwargs, kind, match",
    [
        ({"delivery_id": ""}, ValueError, "delivery_id"),
        ({"delivery_id": "a\nb"}, ValueError, "delivery_id"),
        ({"timestamp": -1}, ValueError, "timestamp"),
        ({"timestamp": True}, TypeError, "timestamp"),
        ({"timestamp": "1000"}, TypeError, "timestamp"),
        ({"timestamp": float("inf")}, ValueError, "timestamp"),
    ],
)
def test_standard_webhooks_sign_checks_its_arguments(kwargs: dict[str, Any], kind: type,
                                                     match: str) -> None:
    """STANDARD_WEBHOOKS refuses ids and timestamps it could not sign faithfully."""
    arguments: dict[str, Any] = {"delivery_id": "d", "timestamp": 1000, **kwargs}
    with pytest.raises(kind, match=match):
        STANDARD_WEBHOOKS.sign(b"{}", SW_SECRET, **arguments)


def test_standard_webhooks_float_timestamp_is_floored_consistently() -> None:
    """A float timestamp is floored once: the header and the signed content agree."""
    headers = STANDARD_WEBHOOKS.sign(b"{}", SW_SECRET, delivery_id="d", timestamp=1000.9)  # type: ignore[arg-type]
    assert headers["webhook-timestamp"] == "1000"
    assert headers == STANDARD_WEBHOOKS.sign(b"{}", SW_SECRET, delivery_id="d", timestamp=1000)
