"""Bad input, fuzzed with hypothesis: it works, or it fails in the caller; never in a thread.

Config fields, event names, request ids, payload shapes and header values are drawn from
wide strategies (wrong types, control characters, non-ASCII, NaN, huge numbers, cycles...).
Each call either succeeds or raises ValueError/TypeError in the caller's thread; whatever
was accepted is delivered (a real receiver on 127.0.0.1 checks the signature of every
request), and afterwards the emitter still delivers a normal event. An exception in an
emitter thread would fail the test (setup.cfg turns pytest's unhandled-thread-exception
warning into an error).

The runs are derandomized, so every run of the suite tries the same examples.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import enum
import json
import logging
import math
import threading
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, Callable

import attrs
import pytest
from faultservers import WAIT, Results
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from webhooks_emitter import Config, WebhooksEmitter, signing
from webhooks_emitter.testing import Receiver

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- strategies ---------------------------------------------------------------------------


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Draw from each strategy about ``weight`` times in the sum of the weights.

    (``st.one_of`` flattens nested one_ofs and draws among all their leaves, so a branch
    that is itself a wide one_of would crowd out the others.)
    """
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(pool) - 1).flatmap(lambda index: pool[index])


CONTROL = st.sampled_from(["\r", "\n", "\r\n", "\x00", "\x0b", "\x7f", "\x85", "\u2028", "\t", " "])
# Text with the characters that break headers and logs mixed in, empty text, lone surrogates.
NASTY_TEXT = weighted(
    (4, st.text(min_size=1, max_size=30)),
    (
        3,
        st.lists(st.one_of(st.text(min_size=1, max_size=5), CONTROL), min_size=1, max_size=6).map(
            "".join
        ),
    ),
    (1, st.just("")),
    (1, st.text(st.characters(codec="utf-8"), max_size=10).map(lambda t: t + "\ud800")),
)
ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    NASTY_TEXT,
    st.binary(max_size=20),
    st.lists(NASTY_TEXT, max_size=3),
    st.dictionaries(NASTY_TEXT, NASTY_TEXT, max_size=3),
    st.tuples(NASTY_TEXT, NASTY_TEXT),
    st.just(object()),
)


class Color(enum.Enum):
    """An Enum with a str value (valid as an event name) and..."""

    RED = "red"


class Number(enum.Enum):
    """...one with an int value (not a valid event name)."""

    ONE = 1


@dataclasses.dataclass
class Point:
    """A dataclass: encoded as an object."""

    x: Any
    y: Any


@attrs.define
class Box:
    """An attrs class: encoded as an object."""

    content: Any


LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities included: they become null
    NASTY_TEXT,
    st.binary(max_size=10),
    st.datetimes(),
    st.dates(),
    st.times(),
    st.decimals(),
    st.uuids(),
    st.sampled_from([Color.RED, Number.ONE]),
    st.just(object()),
)
KEYS = st.one_of(
    NASTY_TEXT,
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.tuples(st.integers()),
    st.frozensets(st.integers(), max_size=2),
    st.sampled_from([Color.RED]),
)
VALUES = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.sets(st.one_of(st.integers(), NASTY_TEXT), max_size=3),
        st.frozensets(st.integers(), max_size=3),
        st.dictionaries(KEYS, children, max_size=3),
        st.builds(Point, children, children),
        st.builds(Box, children),
    ),
    max_leaves=12,
)
# Mostly text (the interesting case), sometimes an Enum or anything at all.
NAMES = weighted((6, NASTY_TEXT), (1, st.sampled_from([Color.RED, Number.ONE])), (3, ANYTHING))
# Mostly mappings (what emit takes), sometimes anything else.
PAYLOADS = weighted((4, st.dictionaries(KEYS, VALUES, max_size=4)), (1, VALUES))


def self_referring() -> dict[str, Any]:
    """A payload that contains itself."""
    payload: dict[str, Any] = {"a": [1]}
    payload["a"].append(payload)
    return payload


def on_wire(text: str) -> str:
    """How a header value reads at a receiver that decodes headers as latin-1 (http.server)."""
    return text if text.isascii() else text.encode("utf-8").decode("latin-1")


def strict_json(body: bytes) -> Any:
    """Decode ``body`` as RFC 8259 JSON: NaN and Infinity are refused."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(body, parse_constant=refuse)


# -- Config --------------------------------------------------------------------------------

FIELDS = {
    "secret": st.one_of(
        ANYTHING, st.lists(st.one_of(NASTY_TEXT, st.binary(max_size=8)), max_size=3)
    ),
    "header_identifier": ANYTHING,
    "max_attempts": ANYTHING,
    "request_timeout": ANYTHING,
    "backoff_start": ANYTHING,
    "backoff_limit": ANYTHING,
    "additional_headers": st.one_of(
        ANYTHING,
        st.lists(st.tuples(NASTY_TEXT, NASTY_TEXT), max_size=3),
        st.lists(ANYTHING, max_size=3),
    ),
    "insecure": ANYTHING,
    "max_queue_size": ANYTHING,
    "signature_scheme": st.one_of(ANYTHING, st.sampled_from(sorted(signing.SCHEMES))),
    "on_delivery": ANYTHING,
    "ca_bundle": ANYTHING,
    "client_cert": st.one_of(ANYTHING, st.tuples(ANYTHING, ANYTHING)),
    "proxies": ANYTHING,
    "block_private_networks": ANYTHING,
    "allowed_networks": st.one_of(ANYTHING, st.lists(NASTY_TEXT, max_size=2)),
    "max_body_size": ANYTHING,
    "pause_on_gone": ANYTHING,
}
URLS = st.one_of(
    ANYTHING,
    st.builds(
        lambda scheme, host, rest: f"{scheme}://{host}{rest}",
        st.sampled_from(["http", "https", "HTTP", "ftp", "", "javascript"]),
        st.one_of(
            NASTY_TEXT, st.sampled_from(["127.0.0.1", "[::1]", "[::1", "a:b@host", "host:99999"])
        ),
        NASTY_TEXT,
    ),
)


def test_config_either_builds_or_raises_value_or_type_error() -> None:
    """Any value of any Config field gives a Config or a ValueError/TypeError, nothing else.

    A Config that builds never shows its secret in its repr.
    """

    @FUZZ
    @given(url=URLS, fields=st.fixed_dictionaries({}, optional=FIELDS))
    def check(url: Any, fields: dict[str, Any]) -> None:
        try:
            config = Config(url, **fields)
        except (ValueError, TypeError):
            return
        for secret in config.secrets:
            text = secret.decode("latin-1") if isinstance(secret, bytes) else secret
            if len(text) >= 4:
                assert text not in repr(config)

    check()


# Config fields as a delivering emitter may have them (the URL is the receiver's; nothing
# that needs the network or a file). One try: a valid config must succeed at once (the
# retry waits are fuzzed in test_huge_backoff_*).
DELIVERY_FIELDS = {
    "secret": st.one_of(
        st.none(),
        NASTY_TEXT,
        st.binary(max_size=8),
        st.lists(st.one_of(NASTY_TEXT, st.binary(min_size=1, max_size=8)), max_size=3),
        st.binary(min_size=1, max_size=24).map(lambda k: "whsec_" + base64.b64encode(k).decode()),
    ),
    "header_identifier": st.one_of(st.sampled_from(["Webhooks", "Acme-Hooks", "x"]), NASTY_TEXT),
    "request_timeout": st.floats(min_value=2.0, allow_nan=False, allow_infinity=False),
    "additional_headers": st.one_of(
        st.lists(
            st.tuples(
                st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}", fullmatch=True), NASTY_TEXT
            ),
            max_size=3,
        ),
        st.dictionaries(NASTY_TEXT, NASTY_TEXT, max_size=2),
    ),
    "max_queue_size": ANYTHING,
    "signature_scheme": st.sampled_from(
        [signing.WEBHOOKS_EMITTER, signing.GITHUB, signing.STANDARD_WEBHOOKS]
    ),
    "max_body_size": st.one_of(st.none(), st.integers(min_value=-5, max_value=10**7)),
    "pause_on_gone": st.booleans(),
}


def test_every_valid_config_delivers(hub: WebhooksEmitter, receiver: Receiver) -> None:
    """An emitter made from any Config that builds delivers, signed as configured.

    The receiver checks each signature with the emitter's secret, scheme and identifier,
    and sees every additional header with its value.
    """
    count = 0
    results = Results()

    @FUZZ
    @example(fields={"secret": "\ud800"})  # a lone surrogate: UTF-8 cannot encode it
    @example(fields={"secret": ["ok", "\udfff"]})
    @example(fields={"additional_headers": {"X-Note": "\u20ac uro"}})  # not latin-1
    @example(fields={"additional_headers": {"X-Note": "caf\xe9"}})  # latin-1, not ASCII
    @example(fields={"additional_headers": {"X-Note": "\ud800"}})
    @given(fields=st.fixed_dictionaries({}, optional=DELIVERY_FIELDS))
    def check(fields: dict[str, Any]) -> None:
        nonlocal count
        try:
            config = Config(receiver.url, max_attempts=1, on_delivery=results, **fields)
        except (ValueError, TypeError):
            return
        count += 1
        receiver.secret = config.secret
        receiver.scheme = config.signature_scheme
        receiver.header_identifier = config.header_identifier
        emitter_id = f"fuzz-{count}"
        hub.attach(emitter_id, "fuzzed", config)
        try:
            request_id = hub.emit("fuzzed", {"n": count})
            result = results.next()
            assert (result.emitter_id, result.delivered, result.attempts) == (
                emitter_id,
                True,
                1,
            ), result
            [request] = receiver.wait_for(1, where=lambda r: r.delivery_id == request_id)
            assert request.json() == {"n": count}
            if config.secret is not None:
                assert request.signature_valid, request.signature_error
            sent = {name.lower(): value for name, value in config.additional_headers}  # last wins
            for name, value in sent.items():
                assert request.header(name) == on_wire(value).strip(" \t"), name
        finally:
            hub.detach(emitter_id)

    check()
    assert count > 20  # the strategies do produce valid configs


# -- emit ------------------------------------------------------------------------------------


def test_emit_either_queues_or_raises_in_the_caller(
    hub: WebhooksEmitter, fast: Callable[..., Config], receiver: Receiver
) -> None:
    """Fuzzed event names, request ids and payloads: emit returns an id or raises ValueError/
    TypeError; everything it accepted is delivered as strict JSON with its event and id.

    Afterwards the same emitter still delivers a normal event.
    """
    hub.attach("everything", "*", fast(receiver.url, max_body_size=None))
    accepted: list[tuple[str, str]] = []

    @FUZZ
    @given(event=NAMES, request_id=weighted((1, st.none()), (3, NAMES)), payload=PAYLOADS)
    def check(event: Any, request_id: Any, payload: Any) -> None:
        try:
            returned = hub.emit(event, payload, request_id=request_id)
        except (ValueError, TypeError):
            return
        name = event.value if isinstance(event, enum.Enum) else event
        assert isinstance(name, str) and name and "\r" not in name and "\n" not in name
        assert isinstance(payload, Mapping)
        if request_id is not None:
            assert returned == (
                request_id.value if isinstance(request_id, enum.Enum) else request_id
            )
        accepted.append((name, returned))

    check()
    with pytest.raises(ValueError, match="itself"):
        hub.emit("cycle", self_referring())
    assert len(accepted) > 20
    requests = receiver.wait_for(len(accepted), timeout=WAIT * 3)
    assert hub.flush(WAIT)
    assert [(r.event, r.delivery_id) for r in requests] == [
        (on_wire(name), on_wire(rid)) for name, rid in accepted
    ]
    for request in requests:
        assert isinstance(strict_json(request.body), dict)
    normal = hub.emit("normal", {"still": "working"})
    [last] = receiver.wait_for(len(accepted) + 1)[-1:]
    assert (last.delivery_id, last.json()) == (normal, {"still": "working"})
    assert hub.stats("everything").given_up == 0


def test_float_edge_cases_become_valid_json(
    hub: WebhooksEmitter, fast: Callable[..., Config], receiver: Receiver
) -> None:
    """NaN, infinities, -0.0 and extreme floats anywhere reach the receiver as strict JSON."""
    hub.attach("floats", "f", fast(receiver.url))
    sent: list[Any] = []

    @FUZZ
    @given(st.lists(st.floats(), min_size=1, max_size=5))
    def check(values: list[float]) -> None:
        hub.emit("f", {"values": values, "nested": [{"v": v} for v in values]})
        sent.append(values)

    check()
    requests = receiver.wait_for(len(sent), timeout=WAIT * 3)
    for request, values in zip(requests, sent):
        body = strict_json(request.body)
        expected = [v if math.isfinite(v) else None for v in values]
        assert body["values"] == expected
        assert [item["v"] for item in body["nested"]] == expected


def test_odd_values_are_encoded_not_fatal(
    hub: WebhooksEmitter, fast: Callable[..., Config], receiver: Receiver
) -> None:
    """A payload of every kind of odd value at once is delivered (a smoke check beside the fuzz)."""
    hub.attach("odd", "odd", fast(receiver.url))
    payload = {
        "when": datetime.datetime(2020, 1, 2, 3, 4, 5),
        "amount": decimal.Decimal("1.10"),
        "id": uuid.UUID(int=1),
        "color": Color.RED,
        "raw": b"\xff\xfe",
        "set": {1},
        "point": Point(1, float("nan")),
        "box": Box(Box(None)),
        (1, 2): "tuple key",
        "thing": object(),
    }
    hub.emit("odd", payload)
    [request] = receiver.wait_for(1)
    body = strict_json(request.body)
    assert body["when"] == "2020-01-02T03:04:05"
    assert body["point"] == {"x": 1, "y": None}
    assert body["box"] == {"content": {"content": None}}
    assert body["(1, 2)"] == "tuple key"


# -- retry waits -----------------------------------------------------------------------------


class _Records(logging.Handler):
    """Keeps the library's log records; ``retrying`` is set by the line before a wait."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.retrying = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if "retrying in" in record.getMessage():
            self.retrying.set()


@pytest.fixture
def library_log(caplog: pytest.LogCaptureFixture) -> Iterator[_Records]:
    """The records of the ``webhooks_emitter`` logger, INFO and up."""
    caplog.set_level(logging.INFO, logger="webhooks_emitter")
    handler = _Records()
    logger = logging.getLogger("webhooks_emitter")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def test_any_valid_backoff_is_waited_not_fatal(hub: WebhooksEmitter, library_log: _Records) -> None:
    """Any valid backoff_start/backoff_limit, and any Retry-After, gives a wait, never an error.

    The receiver fails every try, asking for a Retry-After from the fuzz. After the first try
    the emitter waits (however long: 1e308 s is a valid backoff_limit) until detach ends it;
    it must not end the delivery with an internal error instead, and a wait past
    ``idle_timeout`` (thread ended, a timer set) must not fail either.
    """
    failing = {"retry_after": "0"}
    with Receiver(
        responder=lambda request: (503, {"Retry-After": failing["retry_after"]}, b"")
    ) as receiver:
        count = 0

        @FUZZ
        @example(start=1e300, limit=1e308, retry_after="")
        @example(start=0.0, limit=1e308, retry_after="99999999999")
        @example(start=5.0, limit=9.3e9, retry_after="")
        @given(
            start=st.floats(min_value=0, allow_nan=False, allow_infinity=False),
            limit=st.floats(min_value=0, allow_nan=False, allow_infinity=False),
            retry_after=st.one_of(st.just(""), st.integers(0, 10**20).map(str), NASTY_TEXT),
        )
        def check(start: float, limit: float, retry_after: str) -> None:
            nonlocal count
            try:
                config = Config(
                    receiver.url, backoff_start=start, backoff_limit=limit, max_attempts=2
                )
            except ValueError:
                return
            if any(c in retry_after for c in "\r\n\0") or not retry_after.isascii():
                retry_after = "1"  # only what can be a header value
            failing["retry_after"] = retry_after
            count += 1
            emitter_id = f"backoff-{count}"
            library_log.retrying.clear()
            del library_log.records[:]
            hub.attach(emitter_id, "e", config)
            hub.emit("e", {"n": count})
            assert library_log.retrying.wait(WAIT)
            # A wait longer than idle_timeout holds no thread: it may have ended already.
            threads = [
                t for t in threading.enumerate() if t.name == f"webhooks-emitter:{emitter_id}"
            ]
            hub.detach(emitter_id)
            for thread in threads:
                thread.join(WAIT)
                assert not thread.is_alive()
            failures = [r for r in library_log.records if r.levelno >= logging.ERROR and r.exc_info]
            assert failures == [], failures[0].getMessage()

        check()
        assert count > 10


def test_a_config_that_builds_never_shows_its_secret() -> None:
    """Whatever the secret (text, bytes, a rotation list) and the other fields, a Config that
    builds has a repr that does not depend on its secret; most draws build."""
    secret_text = st.text(st.characters(codec="utf-8"), min_size=4, max_size=40).filter(
        lambda t: t.strip() == t and t.isprintable()
    )
    one_secret = st.one_of(secret_text, st.binary(min_size=4, max_size=40))
    built = []

    @FUZZ
    @given(
        secret=st.one_of(one_secret, st.lists(one_secret, min_size=1, max_size=3)),
        identifier=st.sampled_from(["Webhooks", "Acme", "X-1"]),
        scheme=st.sampled_from(["webhooks_emitter", "github"]),
        headers=st.dictionaries(
            st.sampled_from(["X-Trace", "Authorization", "X-Tenant"]), secret_text, max_size=2
        ),
    )
    def check(secret: Any, identifier: str, scheme: str, headers: dict[str, str]) -> None:
        try:
            config = Config(
                "http://127.0.0.1:9/h",
                secret=secret,
                header_identifier=identifier,
                signature_scheme=scheme,
                additional_headers=headers,
            )
        except (ValueError, TypeError):
            return
        built.append(config)
        # The repr does not depend on the secret at all (so nothing of it can show), and
        # it says that there is one.
        assert repr(config) == repr(attrs.evolve(config, secret="another secret"))
        assert "secret='***'" in repr(config)

    check()
    assert len(built) > 60, len(built)
