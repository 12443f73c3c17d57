"""Config (CONTRACT sections 3 and 9): defaults, validation, immutability, secrecy, and the
fields' effect on the requests a receiver on 127.0.0.1 gets; DeliveryResult's shape."""

from __future__ import annotations

import ipaddress
import re
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import attrs
import pytest

import webhooks_emitter
from webhooks_emitter import Config, DeliveryResult, WebhooksEmitter, signing
from webhooks_emitter.testing import ReceivedRequest, Receiver

URL = "https://example.com/hooks"
SECRET = "hunter2-s3cret"
OLD_SECRET = b"older-r0tated-key"
# A valid Standard Webhooks secret (the reference package's test vector).
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _secret_texts(*secrets: Any) -> list[str]:
    """Every way a secret could show up in text: itself, its repr, its decoded form."""
    found: list[str] = []
    for secret in secrets:
        found.append(repr(secret))
        found.append(secret.decode() if isinstance(secret, bytes) else secret)
    return found


def _assert_hidden(text: str, *secrets: Any) -> None:
    for shown in _secret_texts(*secrets):
        assert shown not in text, f"secret leaked: {shown!r} in {text!r}"


# -- defaults ---------------------------------------------------------------------------------


def test_defaults_match_the_contract() -> None:
    """A Config made from a URL alone has every default the contract's tables give."""
    config = Config(URL)
    assert config.url == URL
    assert config.secret is None
    assert config.header_identifier == "Webhooks"
    assert config.max_attempts == 3
    assert config.request_timeout == 5.0
    assert config.backoff_start == 1.0
    assert config.backoff_limit == 60.0
    assert len(config.additional_headers) == 0
    assert config.insecure is False
    assert config.max_queue_size == 10_000
    assert config.signature_scheme is signing.WEBHOOKS_EMITTER
    assert config.on_delivery is None
    # Section 9.
    assert config.ca_bundle is None
    assert config.client_cert is None
    assert config.proxies is None
    assert config.block_private_networks is False
    assert len(config.allowed_networks) == 0
    assert config.max_body_size == 1_048_576
    assert config.pause_on_gone is True
    # Section 13.
    assert config.max_in_flight == 1
    assert config.max_rate is None
    assert config.retry_schedule is None
    assert config.disable_after is None


def test_only_url_is_positional() -> None:
    """The url is the one positional argument; a second positional one is a TypeError."""
    with pytest.raises(TypeError):
        Config(URL, SECRET)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Config()  # type: ignore[call-arg]


def test_new_is_the_same_as_the_constructor() -> None:
    """Config.new(url, **fields) makes the same Config as Config(url, **fields)."""
    assert Config.new(URL) == Config(URL)
    made = Config.new(URL, secret=SECRET, max_attempts=7, header_identifier="Acme")
    assert made == Config(URL, secret=SECRET, max_attempts=7, header_identifier="Acme")
    assert isinstance(made, Config)
    with pytest.raises(ValueError, match="max_attempts"):
        Config.new(URL, max_attempts=0)


def test_numbers_are_accepted_as_int_or_float() -> None:
    """Seconds may be given as ints; the smallest values the rules allow are accepted."""
    config = Config(URL, request_timeout=1, backoff_start=0, backoff_limit=0, max_attempts=1)
    assert config.request_timeout == 1.0
    assert config.backoff_start == 0.0
    assert config.backoff_limit == 0.0
    assert config.max_attempts == 1
    assert Config(URL, backoff_start=2.5, backoff_limit=2.5).backoff_limit == 2.5
    assert Config(URL, max_queue_size=1).max_queue_size == 1
    assert Config(URL, max_body_size=None).max_body_size is None
    assert Config(URL, max_body_size=1).max_body_size == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "https://example.com/hooks?x=1",
        "HTTPS://Example.COM/hooks",
        "http://127.0.0.1:8080/h",
        "http://[::1]:8080/h",
        "https://user@example.com/hooks",
    ],
)
def test_valid_urls_are_accepted(url: str) -> None:
    """http and https URLs with a host are accepted and kept as given."""
    assert Config(url).url == url


@pytest.mark.parametrize(
    "url",
    [
        "",
        "example.com/hooks",
        "ftp://example.com/hooks",
        "file:///etc/passwd",
        "mailto:someone@example.com",
        "http://",
        "https:///hooks",
        "http://exa mple.com/hooks",
        "http://example.com/ho\r\nX-Evil: 1",
        "http://example.com:99999/hooks",
        "http://example.com:port/hooks",
    ],
)
def test_invalid_urls_are_value_errors(url: str) -> None:
    """Anything but an http/https URL with a host is a ValueError naming url."""
    with pytest.raises(ValueError, match="url"):
        Config(url)


@pytest.mark.parametrize("url", [None, b"http://example.com", 42, ["http://example.com"]])
def test_url_of_another_type_is_rejected(url: Any) -> None:
    """A url that is not a str is a TypeError (or ValueError) naming url."""
    with pytest.raises((TypeError, ValueError), match="url"):
        Config(url)


# -- validation of every field ----------------------------------------------------------------

BAD_VALUES = [
    # (field, value, exception): section 3.
    ("secret", "", ValueError),
    ("secret", b"", ValueError),
    ("secret", [], ValueError),
    ("secret", (), ValueError),
    ("secret", ["ok", ""], ValueError),
    ("secret", 42, (TypeError, ValueError)),
    ("secret", ["ok", 42], (TypeError, ValueError)),
    ("secret", {"unordered"}, (TypeError, ValueError)),  # a list is ordered: newest first
    ("header_identifier", "", ValueError),
    ("header_identifier", "Web Hooks", ValueError),
    ("header_identifier", "Web_Hooks", ValueError),
    ("header_identifier", "Web:Hooks", ValueError),
    ("header_identifier", "Hooks\r\nX-Evil", ValueError),
    ("header_identifier", "Über", ValueError),
    ("header_identifier", None, (TypeError, ValueError)),
    ("header_identifier", 5, (TypeError, ValueError)),
    ("max_attempts", 0, ValueError),
    ("max_attempts", -1, ValueError),
    ("max_attempts", 2.5, (TypeError, ValueError)),
    ("max_attempts", "3", (TypeError, ValueError)),
    ("max_attempts", True, TypeError),
    ("request_timeout", 0, ValueError),
    ("request_timeout", -1.0, ValueError),
    ("request_timeout", float("nan"), ValueError),
    ("request_timeout", "5", (TypeError, ValueError)),
    ("request_timeout", None, (TypeError, ValueError)),
    ("backoff_start", -0.001, ValueError),
    ("backoff_start", float("nan"), ValueError),
    ("backoff_start", "1", (TypeError, ValueError)),
    ("backoff_limit", -1.0, ValueError),
    ("backoff_limit", float("nan"), ValueError),
    ("backoff_limit", None, (TypeError, ValueError)),
    ("additional_headers", "X-A: 1", (TypeError, ValueError)),
    ("additional_headers", 5, (TypeError, ValueError)),
    ("additional_headers", [("X-A",)], (TypeError, ValueError)),
    ("additional_headers", [("X-A", "1", "2")], (TypeError, ValueError)),
    ("additional_headers", {"X-A": 1}, (TypeError, ValueError)),
    ("additional_headers", {b"X-A": "1"}, (TypeError, ValueError)),
    ("insecure", "yes", (TypeError, ValueError)),
    ("insecure", None, (TypeError, ValueError)),
    ("max_queue_size", 0, ValueError),
    ("max_queue_size", -5, ValueError),
    ("max_queue_size", 1.5, (TypeError, ValueError)),
    ("max_queue_size", "10", (TypeError, ValueError)),
    ("max_queue_size", None, (TypeError, ValueError)),
    ("signature_scheme", "no-such-scheme", ValueError),
    ("signature_scheme", 5, (TypeError, ValueError)),
    ("signature_scheme", None, (TypeError, ValueError)),
    ("on_delivery", "print", (TypeError, ValueError)),
    ("on_delivery", 5, (TypeError, ValueError)),
    # Section 9.
    ("ca_bundle", "/no/such/ca-bundle.pem", ValueError),
    ("ca_bundle", 5, (TypeError, ValueError)),
    ("client_cert", "/no/such/client.pem", ValueError),
    ("client_cert", ("/no/such/cert.pem", "/no/such/key.pem"), ValueError),
    ("client_cert", 5, (TypeError, ValueError)),
    ("proxies", ["http://proxy:3128"], (TypeError, ValueError)),
    ("proxies", "http://proxy:3128", (TypeError, ValueError)),
    ("proxies", {"https": 3128}, (TypeError, ValueError)),
    ("block_private_networks", "true", (TypeError, ValueError)),
    ("block_private_networks", None, (TypeError, ValueError)),
    ("allowed_networks", ["not-a-network"], ValueError),
    ("allowed_networks", ["10.0.0.0/33"], ValueError),
    ("allowed_networks", "300.1.2.3/8", ValueError),
    ("allowed_networks", 5, (TypeError, ValueError)),
    ("max_body_size", 0, ValueError),
    ("max_body_size", -1, ValueError),
    ("max_body_size", 1.5, (TypeError, ValueError)),
    ("max_body_size", "1024", (TypeError, ValueError)),
    ("pause_on_gone", "no", (TypeError, ValueError)),
    ("pause_on_gone", None, (TypeError, ValueError)),
    # Section 13.
    ("max_in_flight", 0, ValueError),
    ("max_in_flight", -2, ValueError),
    ("max_in_flight", 1.5, TypeError),
    ("max_in_flight", "4", TypeError),
    ("max_in_flight", True, TypeError),
    ("max_in_flight", None, TypeError),
    ("max_rate", 0, ValueError),
    ("max_rate", -1.5, ValueError),
    ("max_rate", float("nan"), ValueError),
    ("max_rate", float("inf"), ValueError),
    ("max_rate", "10", TypeError),
    ("max_rate", True, TypeError),
    ("retry_schedule", [], ValueError),
    ("retry_schedule", (), ValueError),
    ("retry_schedule", "1,5,30", TypeError),
    ("retry_schedule", b"\x01", TypeError),
    ("retry_schedule", 5, TypeError),
    ("retry_schedule", {1: 5}, TypeError),
    ("retry_schedule", {1, 5}, TypeError),  # unordered: no "n-th entry"
    ("retry_schedule", iter([1, 5]), TypeError),
    ("retry_schedule", [1, -0.5], ValueError),
    ("retry_schedule", [1, float("nan")], ValueError),
    ("retry_schedule", [float("inf")], ValueError),
    ("retry_schedule", [1, "5"], TypeError),
    ("retry_schedule", [True], TypeError),
    ("retry_schedule", [None], TypeError),
    ("disable_after", 0, ValueError),
    ("disable_after", -60, ValueError),
    ("disable_after", float("nan"), ValueError),
    ("disable_after", float("inf"), ValueError),
    ("disable_after", "3600", TypeError),
    ("disable_after", False, TypeError),
]


def _value_id(value: Any) -> str:
    """A test id from a value: its repr, without a memory address (the same in every
    process, as pytest-xdist and reruns need)."""
    return re.sub(r" at 0x[0-9a-f]+", "", repr(value))[:40]


@pytest.mark.parametrize(("field", "value", "error"), BAD_VALUES, ids=_value_id)
def test_bad_field_values_raise_naming_the_field(field: str, value: Any, error: Any) -> None:
    """Each value that breaks a rule of sections 3 or 9 raises, with the field in the message."""
    with pytest.raises(error) as caught:
        Config(URL, **{field: value})
    assert field in str(caught.value)


@pytest.mark.parametrize(("field", "value", "error"), BAD_VALUES[:20], ids=lambda v: repr(v)[:40])
def test_evolve_validates_too(field: str, value: Any, error: Any) -> None:
    """attrs.evolve goes through the same validation as the constructor."""
    with pytest.raises(error) as caught:
        attrs.evolve(Config(URL), **{field: value})
    assert field in str(caught.value)


def test_backoff_limit_must_not_be_below_backoff_start() -> None:
    """backoff_limit < backoff_start is a ValueError naming backoff_limit; equal is fine."""
    with pytest.raises(ValueError, match="backoff_limit"):
        Config(URL, backoff_start=2.0, backoff_limit=1.0)
    with pytest.raises(ValueError, match="backoff_limit"):
        Config(URL, backoff_limit=0.5)  # below the default backoff_start of 1.0
    assert Config(URL, backoff_start=0.5, backoff_limit=0.5).backoff_limit == 0.5


def test_unknown_fields_are_type_errors() -> None:
    """A misspelt field is a TypeError, never silently ignored."""
    with pytest.raises(TypeError, match="max_retries"):
        Config(URL, max_retries=3)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("given", "meant"),
    [("secert", "secret"), ("bakoff_limit", "backoff_limit"), ("max_attempt", "max_attempts")],
)
def test_a_misspelled_field_is_a_type_error_naming_the_closest_field(
    given: str, meant: str
) -> None:
    """CONTRACT section 3: ``Config(url, secert=...)`` is a TypeError that names both the
    misspelled keyword and the field meant; so is the same typo through attrs.evolve."""
    with pytest.raises(TypeError, match=rf"'{given}' \(did you mean '{meant}'\?\)"):
        Config(URL, **{given: 1})
    with pytest.raises(TypeError, match=rf"did you mean '{meant}'"):
        attrs.evolve(Config(URL), **{given: 1})


def test_fields_that_only_make_sense_together_are_accepted_together() -> None:
    """A backoff_limit below the default backoff_start is valid with a smaller
    backoff_start (the fields are checked together, not one by one)."""
    config = Config(URL, backoff_start=0.01, backoff_limit=0.05)
    assert (config.backoff_start, config.backoff_limit) == (0.01, 0.05)


# -- section 13 fields --------------------------------------------------------------------------


def test_section_13_fields_accept_their_documented_forms() -> None:
    """max_in_flight an int >= 1; max_rate and disable_after numbers > 0 (kept as floats);
    retry_schedule any non-empty sequence of numbers >= 0, kept as a tuple of floats."""
    config = Config(
        URL, max_in_flight=8, max_rate=5, retry_schedule=[0, 1, 2.5], disable_after=3600
    )
    assert config.max_in_flight == 8
    assert (config.max_rate, type(config.max_rate)) == (5.0, float)
    assert config.retry_schedule == (0.0, 1.0, 2.5)
    assert all(type(entry) is float for entry in config.retry_schedule)
    assert (config.disable_after, type(config.disable_after)) == (3600.0, float)
    assert Config(URL, max_rate=0.25, disable_after=0.5).max_rate == 0.25
    assert Config(URL, retry_schedule=(60,)).retry_schedule == (60.0,)
    assert Config(URL, retry_schedule=range(3)).retry_schedule == (0.0, 1.0, 2.0)
    assert Config(URL, max_rate=None, retry_schedule=None, disable_after=None) == Config(URL)


def test_retry_schedule_is_not_shared_with_the_caller() -> None:
    """The frozen Config does not change when the caller's list changes later."""
    schedule = [1, 5]
    config = Config(URL, retry_schedule=schedule)
    schedule.append(30)
    assert config.retry_schedule == (1.0, 5.0)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, 3),
        ({"max_attempts": None}, 3),
        ({"retry_schedule": [1, 5, 30, 300]}, 5),
        ({"retry_schedule": [0]}, 2),
        ({"retry_schedule": [1, 5, 30, 300], "max_attempts": None}, 5),
        ({"retry_schedule": [1, 5, 30, 300], "max_attempts": 2}, 2),
        ({"retry_schedule": [1, 5], "max_attempts": 3}, 3),
        ({"retry_schedule": None}, 3),
        ({"max_attempts": 7}, 7),
    ],
)
def test_max_attempts_left_out_follows_retry_schedule(
    fields: dict[str, Any], expected: int
) -> None:
    """max_attempts not given (or None) is 3, or len(retry_schedule) + 1; given, it is kept."""
    config = Config(URL, **fields)
    assert config.max_attempts == expected
    assert isinstance(config.max_attempts, int) and not isinstance(config.max_attempts, bool)
    assert repr(config.max_attempts) == str(expected)
    assert f"max_attempts={expected}," in repr(config)


def test_evolve_derives_max_attempts_again_unless_it_was_given() -> None:
    """attrs.evolve keeps the rule: a derived count follows a new retry_schedule, a given one
    stays; ``max_attempts=None`` in evolve makes it derived again."""
    base = Config(URL)
    scheduled = attrs.evolve(base, retry_schedule=[1, 5, 30])
    assert scheduled.max_attempts == 4
    assert attrs.evolve(scheduled, retry_schedule=[1]).max_attempts == 2
    assert attrs.evolve(scheduled, retry_schedule=None).max_attempts == 3
    assert attrs.evolve(scheduled, backoff_start=0.5).max_attempts == 4
    given = attrs.evolve(scheduled, max_attempts=10)
    assert given.max_attempts == 10
    assert attrs.evolve(given, retry_schedule=[1]).max_attempts == 10
    assert attrs.evolve(given, max_attempts=None).max_attempts == 4
    assert attrs.evolve(Config(URL, max_attempts=3), retry_schedule=[1]).max_attempts == 3


def test_a_derived_max_attempts_is_equal_to_the_same_count_given() -> None:
    """Derived or given, 3 tries are 3 tries: the Configs compare (and hash) equal."""
    assert Config(URL) == Config(URL, max_attempts=3)
    assert hash(Config(URL)) == hash(Config(URL, max_attempts=3))
    assert Config(URL, retry_schedule=[1]) == Config(URL, retry_schedule=[1], max_attempts=2)


def test_bad_section_13_values_have_clear_messages() -> None:
    """The messages say the rule, and for a schedule entry which entry broke it."""
    with pytest.raises(ValueError, match=r"^max_in_flight must be >= 1, got 0$"):
        Config(URL, max_in_flight=0)
    with pytest.raises(ValueError, match=r"^max_rate must be a finite number > 0, got 0$"):
        Config(URL, max_rate=0)
    with pytest.raises(TypeError, match=r"^max_rate must be a number of tries per second, not str"):
        Config(URL, max_rate="10")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^retry_schedule must not be empty"):
        Config(URL, retry_schedule=[])
    with pytest.raises(ValueError, match=r"^retry_schedule\[2\] must be a finite number >= 0, "):
        Config(URL, retry_schedule=[1, 5, -30])
    with pytest.raises(TypeError, match=r"^retry_schedule must be a sequence of seconds"):
        Config(URL, retry_schedule="1,5")
    with pytest.raises(ValueError, match=r"^disable_after must be a finite number > 0, got inf$"):
        Config(URL, disable_after=float("inf"))


def test_every_field_is_documented_in_the_docstring() -> None:
    """Config's docstring has an entry for each of its fields."""
    doc = Config.__doc__ or ""
    missing = [f.name for f in attrs.fields(Config) if f"    {f.name}: " not in doc]
    assert missing == []


# -- section 9 fields that are valid ----------------------------------------------------------


def test_transport_fields_accept_their_documented_forms(tmp_path: Path) -> None:
    """ca_bundle and client_cert take existing paths (or a cert/key pair), proxies a mapping,
    allowed_networks CIDR ranges (one string or several), the rest bools."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not parsed until used\n")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert\n")
    key.write_text("key\n")

    config = Config(
        URL,
        ca_bundle=str(bundle),
        client_cert=(str(cert), str(key)),
        proxies={"https": "http://proxy.example:3128"},
        block_private_networks=True,
        allowed_networks=["10.0.0.0/8", "fd00::/8"],
        pause_on_gone=False,
        insecure=True,
    )
    assert config.ca_bundle == str(bundle)
    assert tuple(config.client_cert) == (str(cert), str(key))  # type: ignore[arg-type]
    assert dict(config.proxies or {}) == {"https": "http://proxy.example:3128"}
    assert config.block_private_networks is True
    assert [ipaddress.ip_network(n) for n in config.allowed_networks] == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
    ]
    assert config.pause_on_gone is False
    assert config.insecure is True
    assert Config(URL, client_cert=str(cert)).client_cert == str(cert)
    single = Config(URL, allowed_networks="192.168.0.0/16").allowed_networks
    assert [ipaddress.ip_network(n) for n in single] == [ipaddress.ip_network("192.168.0.0/16")]


def test_proxies_given_are_not_shared_with_the_caller() -> None:
    """The frozen Config does not change when the caller's proxies dict changes later."""
    proxies = {"https": "http://proxy.example:3128"}
    config = Config(URL, proxies=proxies)
    proxies["https"] = "http://elsewhere.example:1"
    assert dict(config.proxies or {}) == {"https": "http://proxy.example:3128"}


# -- frozen -----------------------------------------------------------------------------------


def test_config_is_frozen_and_evolve_makes_variants() -> None:
    """Assigning to a field fails; attrs.evolve returns a new Config and leaves the old alone."""
    config = Config(URL, secret=SECRET)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.max_attempts = 10  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.url = "https://elsewhere.example/"  # type: ignore[misc]
    variant = attrs.evolve(config, max_attempts=10, header_identifier="Acme")
    assert (variant.max_attempts, variant.header_identifier) == (10, "Acme")
    assert (config.max_attempts, config.header_identifier) == (3, "Webhooks")
    assert variant.secret == config.secret
    assert variant.url == URL


# -- the secret never shows -------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [SECRET, SECRET.encode(), [SECRET, OLD_SECRET], (OLD_SECRET, SECRET)],
    ids=["str", "bytes", "list", "tuple"],
)
def test_repr_never_shows_the_secret(secret: Any) -> None:
    """repr() and str() of a Config, and of an evolved one, show no part of the secret."""
    config = Config(URL, secret=secret)
    secrets = [secret] if isinstance(secret, (str, bytes)) else list(secret)
    for shown in (repr(config), str(config), repr(attrs.evolve(config, max_attempts=1))):
        assert "secret" in shown  # the field is listed, its value masked
        _assert_hidden(shown, *secrets)


def test_secret_is_kept_for_signing() -> None:
    """The secret stays readable on the object (it is needed to sign), only not displayed."""
    assert Config(URL, secret=SECRET).secret == SECRET
    assert Config(URL, secret=OLD_SECRET).secret == OLD_SECRET
    assert list(Config(URL, secret=[SECRET, OLD_SECRET]).secret) == [SECRET, OLD_SECRET]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [
        {"secret": [SECRET, ""]},
        {"secret": [SECRET, 42]},
        {"secret": [OLD_SECRET, b""]},
        {"secret": SECRET + "!not base64!", "signature_scheme": signing.STANDARD_WEBHOOKS},
        {"secret": "whsec_" + SECRET + "%%", "signature_scheme": "standard_webhooks"},
        {"secret": [WHSEC, SECRET + "!"], "signature_scheme": signing.STANDARD_WEBHOOKS},
        {"secret": SECRET, "max_attempts": 0},
        {"secret": SECRET, "url": "ftp://example.com/"},
        {"secret": SECRET, "additional_headers": {"Content-Type": "text/plain"}},
        {"secret": SECRET, "signature_scheme": "nope"},
    ],
    ids=lambda f: ",".join(sorted(f)),
)
def test_exceptions_never_show_the_secret(fields: dict[str, Any]) -> None:
    """A Config that fails validation raises a message (and traceback) without the secret."""
    fields = dict(fields)
    url = fields.pop("url", URL)
    with pytest.raises((TypeError, ValueError)) as caught:
        Config(url, **fields)
    secret = fields["secret"]
    secrets = [secret] if isinstance(secret, (str, bytes)) else list(secret)
    secrets = [s for s in secrets if isinstance(s, (str, bytes)) and len(s) > 3]
    _assert_hidden(str(caught.value), *secrets)
    _assert_hidden(repr(caught.value), *secrets)
    rendered = "".join(traceback.format_exception(caught.type, caught.value, caught.tb))
    _assert_hidden(rendered, *secrets)


# -- additional_headers -----------------------------------------------------------------------


def test_additional_headers_from_mapping_or_pairs() -> None:
    """additional_headers takes a mapping or (name, value) pairs and keeps every header."""
    from_map = Config(URL, additional_headers={"X-Trace": "abc", "Authorization": "Bearer t"})
    from_pairs = Config(URL, additional_headers=[("X-Trace", "abc"), ("Authorization", "Bearer t")])
    expected = {"X-Trace": "abc", "Authorization": "Bearer t"}
    assert dict(from_map.additional_headers) == expected
    assert dict(from_pairs.additional_headers) == expected
    assert dict(Config(URL, additional_headers={}).additional_headers) == {}
    # Every token character is allowed in a name.
    token = "!#$%&'*+-.^_`|~09azAZ"
    assert dict(Config(URL, additional_headers={token: ""}).additional_headers) == {token: ""}


@pytest.mark.parametrize(
    "name",
    ["", "X Trace", "X-Trace:", "X(Trace)", "X\tTrace", "X-Tr\u00e4ce", "X-Trace\r\n", "X/Y"],
)
def test_additional_header_names_must_be_tokens(name: str) -> None:
    """A header name that is not an HTTP token is a ValueError naming additional_headers."""
    with pytest.raises(ValueError, match="additional_headers"):
        Config(URL, additional_headers={name: "v"})


@pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\r\nX-Evil: 1", "\n", "trailing\r"])
def test_additional_header_values_must_not_hold_cr_or_lf(value: str) -> None:
    """A header value with CR or LF (header injection) is a ValueError naming additional_headers."""
    with pytest.raises(ValueError, match="additional_headers"):
        Config(URL, additional_headers={"X-Trace": value})
    with pytest.raises(ValueError, match="additional_headers"):
        Config(URL, additional_headers=[("X-Trace", value)])


@pytest.mark.parametrize(
    ("identifier", "name"),
    [
        ("Webhooks", "Content-Type"),
        ("Webhooks", "content-type"),
        ("Webhooks", "CONTENT-TYPE"),
        ("Webhooks", "X-Webhooks-Event"),
        ("Webhooks", "x-webhooks-delivery"),
        ("Webhooks", "X-WEBHOOKS-SIGNATURE"),
        ("Webhooks", "X-Webhooks-Anything-Else"),
        ("Acme", "X-Acme-Event"),
        ("Acme", "x-acme-delivery"),
        ("Acme", "Content-Type"),
    ],
)
def test_additional_headers_may_not_replace_the_librarys_headers(
    identifier: str, name: str
) -> None:
    """Content-Type and X-<identifier>-* (any case) cannot be set through additional_headers."""
    with pytest.raises(ValueError, match="additional_headers"):
        Config(URL, header_identifier=identifier, additional_headers={name: "forged"})


def test_evolving_the_identifier_revalidates_additional_headers() -> None:
    """A header that becomes X-<identifier>-* after attrs.evolve is refused as well."""
    config = Config(URL, additional_headers={"X-Acme-Tenant": "t1"})
    with pytest.raises(ValueError, match="additional_headers"):
        attrs.evolve(config, header_identifier="Acme")


# -- signature_scheme -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (signing.WEBHOOKS_EMITTER, signing.WEBHOOKS_EMITTER),
        (signing.GITHUB, signing.GITHUB),
        (signing.STANDARD_WEBHOOKS, signing.STANDARD_WEBHOOKS),
        ("webhooks_emitter", signing.WEBHOOKS_EMITTER),
        ("github", signing.GITHUB),
        ("standard_webhooks", signing.STANDARD_WEBHOOKS),
    ],
)
def test_signature_scheme_by_object_or_name(given: Any, expected: signing.Scheme) -> None:
    """signature_scheme takes a scheme of webhooks_emitter.signing or its name."""
    assert Config(URL, signature_scheme=given).signature_scheme is expected


def test_standard_webhooks_secret_must_be_base64() -> None:
    """With STANDARD_WEBHOOKS a str secret must be whsec_+base64 or bare base64; bytes are keys."""
    assert Config(URL, secret=WHSEC, signature_scheme="standard_webhooks").secret == WHSEC
    bare = WHSEC[len("whsec_") :]
    assert Config(URL, secret=bare, signature_scheme="standard_webhooks").secret == bare
    assert Config(URL, secret=b"raw key", signature_scheme="standard_webhooks").secret == b"raw key"
    with pytest.raises(ValueError, match="secret"):
        Config(URL, secret="not base64!", signature_scheme="standard_webhooks")
    # Changing the scheme of an existing Config checks its secret again.
    with pytest.raises(ValueError, match="secret"):
        attrs.evolve(Config(URL, secret="plain words"), signature_scheme=signing.STANDARD_WEBHOOKS)


# -- DeliveryResult ---------------------------------------------------------------------------


def test_delivery_result_is_frozen_with_the_contracts_fields() -> None:
    """DeliveryResult has exactly the contract's fields and cannot be changed."""
    names = [field.name for field in attrs.fields(DeliveryResult)]
    assert sorted(names) == sorted(
        [
            "emitter_id",
            "event",
            "request_id",
            "delivered",
            "attempts",
            "status_code",
            "error",
            "elapsed",
        ]
    )
    result = DeliveryResult(
        emitter_id="e",
        event="ev",
        request_id="r",
        delivered=True,
        attempts=1,
        status_code=204,
        error=None,
        elapsed=0.01,
    )
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        result.delivered = False  # type: ignore[misc]
    assert attrs.evolve(result, delivered=False).delivered is False
    assert result.delivered is True


# -- what the fields do on the wire -----------------------------------------------------------


@pytest.fixture
def results() -> list[DeliveryResult]:
    """A list that an on_delivery callback appends to."""
    return []


def _only(receiver: Receiver, hub: WebhooksEmitter, request_id: str) -> ReceivedRequest:
    """The one request with ``request_id`` as delivery id, once the hub is idle."""
    receiver.wait_for(1, where=lambda r: r.delivery_id == request_id)
    assert hub.flush(10)
    [request] = [r for r in receiver.requests if r.delivery_id == request_id]
    return request


def test_additional_headers_reach_the_receiver(
    hub: WebhooksEmitter, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """Headers from a mapping and from pairs arrive at the receiver with their values."""
    hub.attach(
        "map",
        "a",
        fast(receiver.url + "/map", additional_headers={"X-Trace": "t-1", "X-Tenant": "acme"}),
    )
    hub.attach(
        "pairs",
        "b",
        fast(receiver.url + "/pairs", additional_headers=[("Authorization", "Bearer abc")]),
    )
    first = _only(receiver, hub, hub.emit("a", {"n": 1}))
    second = _only(receiver, hub, hub.emit("b", {"n": 2}))
    assert (first.header("X-Trace"), first.header("X-Tenant")) == ("t-1", "acme")
    assert first.header("Authorization") is None
    assert second.header("Authorization") == "Bearer abc"
    assert second.header("Content-Type") == "application/json"


def test_non_latin1_additional_header_values_are_sent_as_utf8(
    hub: WebhooksEmitter, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """A header value that latin-1 cannot hold is sent as its UTF-8 bytes, as event names
    are, and the delivery succeeds."""
    value = "J\u00fcrgen \u65e5\u672c"
    results: list[DeliveryResult] = []
    config = fast(receiver.url, additional_headers={"X-Name": value}, on_delivery=results.append)
    hub.attach("utf8", "e", config)
    request_id = hub.emit("e", {})
    assert hub.flush(10)
    assert [(r.request_id, r.delivered, r.error) for r in results] == [(request_id, True, None)]
    [request] = receiver.requests
    # http.server reads header bytes as latin-1; undo that to see the bytes sent.
    assert (request.header("X-Name") or "").encode("latin-1").decode("utf-8") == value


def test_header_identifier_names_the_headers_on_the_wire(
    hub: WebhooksEmitter, fast: Callable[..., Config]
) -> None:
    """header_identifier='Acme-Corp' sends X-Acme-Corp-Event/-Delivery/-Signature, signed."""
    with Receiver(secret=SECRET, header_identifier="Acme-Corp") as receiver:
        hub.attach(
            "acme", "order.paid", fast(receiver.url, secret=SECRET, header_identifier="Acme-Corp")
        )
        request_id = hub.emit("order.paid", {"order": 1})
        request = _only(receiver, hub, request_id)
    assert request.header("X-Acme-Corp-Event") == "order.paid"
    assert request.header("X-Acme-Corp-Delivery") == request_id
    assert (request.header("X-Acme-Corp-Signature") or "").startswith("sha256:")
    assert request.header("X-Webhooks-Event") is None
    assert request.signature_valid, request.signature_error


def test_no_secret_means_no_signature(
    hub: WebhooksEmitter, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """Without a secret the request carries no signature header of any scheme."""
    hub.attach("plain", "e", fast(receiver.url))
    request = _only(receiver, hub, hub.emit("e", {}))
    names = {name.lower() for name, _ in request.headers}
    assert "x-webhooks-signature" not in names
    assert "x-hub-signature-256" not in names
    assert "webhook-signature" not in names


@pytest.mark.parametrize(
    ("scheme", "secret"),
    [
        ("webhooks_emitter", SECRET),
        ("github", SECRET),
        ("standard_webhooks", WHSEC),
        (signing.GITHUB, SECRET.encode()),
        (signing.STANDARD_WEBHOOKS, b"a raw bytes key"),
    ],
    ids=["name-default", "name-github", "name-standard", "object-github", "object-standard"],
)
def test_signature_scheme_signs_requests_that_the_receiver_verifies(
    hub: WebhooksEmitter, fast: Callable[..., Config], scheme: Any, secret: Any
) -> None:
    """A scheme given by name or object signs each request so that its verify accepts it."""
    expected = Config(URL, signature_scheme=scheme).signature_scheme
    with Receiver(secret=secret, scheme=expected) as receiver:
        hub.attach("signed", "e", fast(receiver.url, secret=secret, signature_scheme=scheme))
        request = _only(receiver, hub, hub.emit("e", {"x": "y"}))
    assert request.signature_valid, request.signature_error


def test_str_secret_is_used_as_its_utf8_bytes(
    hub: WebhooksEmitter, fast: Callable[..., Config]
) -> None:
    """A str secret signs exactly as its UTF-8 bytes do (non-ASCII included)."""
    text = "cl\u00e9-\u2603-secret"
    with Receiver(secret=text.encode("utf-8")) as receiver:
        hub.attach("str", "e", fast(receiver.url + "/str", secret=text))
        hub.attach("bytes", "e", fast(receiver.url + "/bytes", secret=text.encode("utf-8")))
        request_id = hub.emit("e", {"same": "body"})
        requests = receiver.wait_for(2, where=lambda r: r.delivery_id == request_id)
    assert all(r.signature_valid for r in requests), [r.signature_error for r in requests]
    assert requests[0].header("X-Webhooks-Signature") == requests[1].header("X-Webhooks-Signature")


def test_secret_list_signs_with_the_newest(
    hub: WebhooksEmitter, fast: Callable[..., Config]
) -> None:
    """With a list of secrets the default scheme signs with the first (newest) one."""
    with Receiver(secret=SECRET) as newest, Receiver(secret=OLD_SECRET) as oldest:
        hub.attach("n", "e", fast(newest.url, secret=[SECRET, OLD_SECRET]))
        hub.attach("o", "e", fast(oldest.url, secret=[SECRET, OLD_SECRET]))
        request_id = hub.emit("e", {"rotating": True})
        [good] = newest.wait_for(1)
        [other] = oldest.wait_for(1)
    assert good.delivery_id == other.delivery_id == request_id
    assert good.signature_valid, good.signature_error
    assert not other.signature_valid


@pytest.mark.parametrize("max_attempts", [1, 2, 4])
def test_max_attempts_is_the_total_number_of_tries(
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    results: list[DeliveryResult],
    max_attempts: int,
) -> None:
    """A receiver that always fails sees exactly max_attempts tries, all with one delivery id."""
    with Receiver(responder=lambda request: 500) as receiver:
        hub.attach(
            "tries", "e", fast(receiver.url, max_attempts=max_attempts, on_delivery=results.append)
        )
        request_id = hub.emit("e", {})
        assert hub.flush(10)
        tries = receiver.requests
    assert [r.try_number for r in tries] == list(range(1, max_attempts + 1))
    assert {r.delivery_id for r in tries} == {request_id}
    assert [(r.delivered, r.attempts) for r in results] == [(False, max_attempts)]


def test_secret_never_reaches_results_or_logs(
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    results: list[DeliveryResult],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No DeliveryResult or log record of a signed, given-up delivery shows the secret."""
    caplog.set_level("DEBUG", logger="webhooks_emitter")
    with Receiver(responder=lambda request: 401) as receiver:
        hub.attach(
            "leak",
            "e",
            fast(
                receiver.url,
                secret=[SECRET, OLD_SECRET],
                max_attempts=2,
                on_delivery=results.append,
            ),
        )
        hub.emit("e", {"k": "v"})
        assert hub.flush(10)
    [result] = results
    assert result.delivered is False
    _assert_hidden(repr(result), SECRET, OLD_SECRET)
    _assert_hidden(repr(attrs.asdict(result)), SECRET, OLD_SECRET)
    assert caplog.records, "the given-up delivery should have been logged"
    for record in caplog.records:
        _assert_hidden(record.getMessage(), SECRET, OLD_SECRET)
        _assert_hidden(repr(record.__dict__), SECRET, OLD_SECRET)


def test_on_delivery_is_called_in_the_emitters_thread(
    hub: WebhooksEmitter, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """on_delivery gets one DeliveryResult per event, in a thread that is not the caller's."""
    seen: list[tuple[DeliveryResult, threading.Thread]] = []
    hub.attach(
        "cb",
        "e",
        fast(receiver.url, on_delivery=lambda r: seen.append((r, threading.current_thread()))),
    )
    request_id = hub.emit("e", {})
    assert hub.flush(10)
    [(result, thread)] = seen
    assert result.request_id == request_id and result.delivered
    assert thread is not threading.current_thread()


@pytest.fixture
def module_default() -> Iterator[None]:
    """Restore the default instance's exit timeout after a test changes it."""
    before = webhooks_emitter.default.exit_timeout
    yield
    webhooks_emitter.configure(exit_timeout=before)


def test_configure_changes_the_default_exit_timeout(module_default: None) -> None:
    """configure(exit_timeout=...) changes the default instance's setting and validates it."""
    webhooks_emitter.configure(exit_timeout=2.5)
    assert webhooks_emitter.default.exit_timeout == 2.5
    with pytest.raises(ValueError, match="exit_timeout"):
        webhooks_emitter.configure(exit_timeout=-1)
    with pytest.raises((TypeError, ValueError), match="exit_timeout"):
        webhooks_emitter.configure(exit_timeout="soon")  # type: ignore[arg-type]
    assert webhooks_emitter.default.exit_timeout == 2.5
    assert WebhooksEmitter(exit_timeout=0.5).exit_timeout == 0.5
    with pytest.raises(ValueError, match="exit_timeout"):
        WebhooksEmitter(exit_timeout=-0.1)


@pytest.mark.parametrize(
    "url", ["http://.example.com/", "http://*.example.com/", "http://\u2603\u2603.-x/"]
)
def test_urls_requests_cannot_use_are_refused_where_the_config_is_made(url: str) -> None:
    """A URL that parses but that requests/urllib3 refuse (empty or wildcard labels, bad IDNA)
    is a ValueError naming url at Config(), not an error later in attach() or emit()."""
    with pytest.raises(ValueError, match="url"):
        Config(url)


def test_url_password_is_hidden_in_repr_and_errors() -> None:
    """The password of a URL's user info never shows in the Config's repr or in its errors."""
    config = Config("https://user:hunter2@hooks.example/x")
    assert "hunter2" not in repr(config)
    assert "user:***@hooks.example" in repr(config)
    with pytest.raises(ValueError) as caught:
        Config("ftp://user:hunter2@hooks.example/x")
    assert "hunter2" not in str(caught.value)
