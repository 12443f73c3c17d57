"""The frozen, validated ``Config`` of one emitter, and the result objects handed back."""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import types
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Optional, Union

import attrs
import requests
import urllib3.exceptions
import urllib3.util

from . import signing
from ._validate import integer as _integer
from ._validate import number, unknown_name

__all__ = ["Config", "DeliveryResult", "EmitterStats"]

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_IDENTIFIER = re.compile(r"[0-9A-Za-z-]+")
# Headers that the library writes itself; additional_headers may not replace them.
_RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding"})

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
ClientCert = Union[str, tuple[str, str]]


def _url_problem(url: str) -> Optional[tuple[str, str]]:
    """What is wrong with ``url`` as ``(rule, separator)``, or None when it may be used.

    The message is ``url`` + rule + separator + the URL as shown. Texts of urllib, requests
    and urllib3 are included as they come: they may quote the URL, so for a URL with user
    info they are taken from the URL with its password hidden (see :func:`_check_url`).
    """
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return " must not contain whitespace or control characters", ": "
    problem: Optional[str] = None
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        problem = f" is not a valid URL ({exc})"
    if problem is not None:
        return problem, ": "
    if parts.scheme.lower() not in ("http", "https"):
        return " must be an http or https URL", ", got "
    if not parts.hostname:
        return " must have a host", ", got "
    try:
        # What the emitter will send to must also be a URL requests and urllib3 can use
        # (IDNA labels, a parsable host): refuse it here, not in attach() or the thread.
        requests.Request("POST", url).prepare()
        urllib3.util.parse_url(url)
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, ValueError) as exc:
        problem = f" is not a valid URL ({exc})"
    if problem is not None:
        return problem, ": "
    return None


class _Derived(int):
    """A ``max_attempts`` that ``Config`` worked out itself, not one that was given.

    ``attrs.evolve`` passes every field of the old ``Config`` to the new one; this type tells
    ``__attrs_post_init__`` that the count was derived (from ``retry_schedule``, or the
    default 3), so it is derived again from the new schedule:
    ``attrs.evolve(Config(url), retry_schedule=[1, 5, 30])`` makes 4 tries, as
    ``Config(url, retry_schedule=[1, 5, 30])`` does. It compares, hashes, prints and
    serialises as the plain int it is.
    """

    __slots__ = ()


def _to_attempts(value: Optional[int]) -> int:
    """``max_attempts`` as given; None (not given) is worked out in ``__attrs_post_init__``."""
    return _Derived(0) if value is None else value


def _to_schedule(value: object) -> Optional[tuple[float, ...]]:
    if value is None:
        return None
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise TypeError(
            f"retry_schedule must be a sequence of seconds (a list or tuple) or None, "
            f"not {type(value).__name__}"
        )
    if not value:
        raise ValueError("retry_schedule must not be empty (None keeps the exponential backoff)")
    return tuple(
        number(f"retry_schedule[{index}]", item)
        for index, item in enumerate(value)
    )


def _check_url(url: object) -> str:
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    problem = _url_problem(url)
    if problem is None:
        return url
    shown = _redact_url(url)
    if shown != url:
        # Described from the URL as shown, never from the one with the password: urllib's
        # own messages quote the netloc, password included.
        problem = _url_problem(shown) or (" has user info that is not valid", ": ")
    rule, separator = problem
    raise ValueError(f"url{rule}{separator}{shown!r}")


def _redact_url(url: str) -> str:
    """``url`` with the password of its user info, if any, replaced by ``***``.

    A URL that urllib cannot parse is redacted by its text, generously: everything from the
    first ``:`` after ``//`` to the last ``@`` (a password may hold ``/``, ``?`` or ``#``
    that the parser took for the end of the host).
    """
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - a bad port: the netloc is not what it seems
        password = parts.password
    except ValueError:
        return _redact_url_text(url)
    if password is None:
        # Without "//" there is no user info to the parser, but "hook:pw@host" (the scheme
        # forgotten) still holds what its writer meant as a password.
        return url if parts.netloc else _redact_url_text(url)
    netloc = f"{parts.username}:***@{parts.netloc.rpartition('@')[2]}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _redact_url_text(url: str) -> str:
    start = url.find("//")
    start = 0 if start < 0 else start + 2
    at = url.rfind("@", start)
    colon = url.find(":", start, at) if at >= 0 else -1
    if colon < 0:
        return url
    return f"{url[: colon + 1]}***{url[at:]}"


#: Request headers whose values are credentials, shown as ``'***'`` in a ``repr``...
CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-access-token",
        "private-token",
        "x-amz-security-token",
    }
)
#: ... and so is any header whose lower-case name contains one of these.
CREDENTIAL_WORDS = (
    "auth",
    "token",
    "secret",
    "key",
    "password",
    "passwd",
    "passphrase",
    "cookie",
    "session",
    "credential",
    "signature",
    "hmac",
    "jwt",
    "bearer",
)


def is_credential_header(name: str) -> bool:
    """Whether the value of the header ``name`` is to be hidden wherever it would be shown."""
    lowered = name.lower()
    return lowered in CREDENTIAL_HEADERS or any(word in lowered for word in CREDENTIAL_WORDS)


def redact_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """``headers`` with the value of every credential header replaced by ``***``."""
    return tuple((name, "***" if is_credential_header(name) else value) for name, value in headers)


def _to_headers(value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    pairs: Iterable[Any]
    if isinstance(value, Mapping):
        pairs = value.items()
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        pairs = value
    else:
        raise TypeError(
            f"additional_headers must be a mapping or pairs of str, not {type(value).__name__}"
        )
    result = []
    for pair in pairs:
        # Never quote a pair or a value: it may be a credential (Authorization...).
        try:
            name, text = pair
        except (TypeError, ValueError):
            what = f"{len(pair)} items" if isinstance(pair, (tuple, list)) else type(pair).__name__
            raise TypeError(
                f"additional_headers must hold (name, value) pairs, got {what}"
            ) from None
        if not isinstance(name, str) or not isinstance(text, str):
            raise TypeError(
                "additional_headers names and values must be str, got "
                f"{type(name).__name__} and {type(text).__name__}"
            )
        if not _TOKEN.fullmatch(name):
            # A name with a space or a colon may be a whole "Authorization: Bearer ..." line.
            shown = (
                "with a space or ':' in it"
                if any(c.isspace() or c == ":" for c in name)
                else repr(name)
            )
            raise ValueError(f"additional_headers name {shown} is not an HTTP token")
        if any(c in text for c in "\r\n\0"):
            raise ValueError(f"additional_headers value of {name!r} must not contain CR, LF or NUL")
        try:
            text.encode("utf-8")  # a non-ASCII value is sent as its UTF-8 bytes
        except UnicodeEncodeError:
            raise ValueError(
                f"additional_headers value of {name!r} must be text that UTF-8 can encode"
            ) from None
        result.append((name, text))
    return tuple(result)


def _to_secret(value: object) -> Union[str, bytes, tuple[Union[str, bytes], ...], None]:
    if value is None or isinstance(value, (str, bytes)):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(value)  # ordered, newest first; a set would have no "newest"
    raise TypeError(f"secret must be str, bytes or a list of them, not {type(value).__name__}")


def _to_scheme(value: object) -> signing.Scheme:
    if isinstance(value, str):
        try:
            return signing.SCHEMES[value.lower()]
        except KeyError:
            names = ", ".join(sorted(signing.SCHEMES))
            raise ValueError(f"signature_scheme {value!r} is unknown (one of: {names})") from None
    if not isinstance(value, signing.Scheme):
        raise TypeError(
            f"signature_scheme must be a webhooks_emitter.signing scheme, not {value!r}"
        )
    return value


def _to_networks(value: object) -> tuple[Network, ...]:
    items = (
        [value] if isinstance(value, (str, ipaddress.IPv4Network, ipaddress.IPv6Network)) else value
    )
    if not isinstance(items, Iterable):
        raise TypeError(f"allowed_networks must be CIDR strings, not {type(value).__name__}")
    result = []
    for item in items:
        try:
            result.append(ipaddress.ip_network(item, strict=False))
        except (TypeError, ValueError):
            raise ValueError(f"allowed_networks entry {item!r} is not a CIDR range") from None
    return tuple(result)


def _to_proxies(value: object) -> Optional[Mapping[str, str]]:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(
            f"proxies must be a mapping like requests takes, not {type(value).__name__}"
        )
    for key, url in value.items():
        if not isinstance(key, str) or not isinstance(url, str):
            # Types only: a proxy URL may hold a password.
            raise TypeError(
                f"proxies must map str to str, got {type(key).__name__}: {type(url).__name__}"
            )
    return types.MappingProxyType(dict(value))


def _path(name: str, value: object) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path, not {type(value).__name__}")
    path = os.fspath(value)
    if not isinstance(path, str) or not os.path.exists(path):
        raise ValueError(f"{name} {value!r} does not exist")
    return path


def _to_ca_bundle(value: object) -> Optional[str]:
    return None if value is None else _path("ca_bundle", value)


def _to_client_cert(value: object) -> Optional[ClientCert]:
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError("client_cert must be a path or a (cert_path, key_path) pair")
        return (_path("client_cert", value[0]), _path("client_cert", value[1]))
    return _path("client_cert", value)


def _hide(value: object) -> str:
    return "None" if value is None else "'***'"


def _show_headers(value: tuple[tuple[str, str], ...]) -> str:
    return repr(redact_headers(value))


def _show_proxies(value: Optional[Mapping[str, str]]) -> str:
    if value is None:
        return "None"
    return repr({key: _redact_url(url) for key, url in value.items()})


@attrs.frozen(kw_only=True)
class Config:
    """How one emitter delivers: where to, how signed, how patient.

    ``url`` is positional; every other field is a keyword. Instances are immutable and
    validated on construction (``ValueError``/``TypeError`` naming the field); use
    ``attrs.evolve(config, field=value)`` to make a variant. No credential appears in the
    ``repr`` or in an error message: not the secret, not the password of ``url`` or of a
    proxy URL, not the value of a credential header in ``additional_headers``
    (``Authorization``, ``Proxy-Authorization``, ``Cookie``, ``X-Api-Key``... and any name
    containing ``auth``, ``token``, ``secret``, ``key``, ``password`` and the like); they
    show as ``***``.

    Args:
        url: the ``http``/``https`` endpoint that receives the POSTs.
        secret: ``str`` (its UTF-8 bytes) or ``bytes``, or a list of them newest first
            (key rotation); when set, every request is signed.
        header_identifier: the ``<identifier>`` in ``X-<identifier>-Event`` and friends.
        max_attempts: total tries for one delivery (>= 1); see below when it is left out.
        request_timeout: seconds one try may take as a whole (> 0): resolving the name,
            connecting, sending and reading the answer.
        backoff_start: seconds before the first retry (>= 0).
        backoff_limit: the most seconds between two tries (>= ``backoff_start``).
        additional_headers: extra request headers, a mapping or (name, value) pairs.
        insecure: skip TLS certificate verification.
        max_queue_size: the most events this emitter holds; beyond it events are dropped
            and counted.
        signature_scheme: a scheme of :mod:`webhooks_emitter.signing` (or its name).
        on_delivery: called with a :class:`DeliveryResult` in the emitter's thread after
            each event is delivered or given up.
        ca_bundle: a CA bundle to trust instead of the system's.
        client_cert: a PEM with certificate and key, or a ``(cert, key)`` pair (mutual TLS).
        proxies: a mapping as requests takes it; ``None`` uses the environment's.
        block_private_networks: refuse to connect to addresses that are not globally
            routable (checked on the address actually connected to).
        allowed_networks: CIDR ranges exempt from ``block_private_networks``.
        max_body_size: the largest encoded payload ``emit`` accepts, in bytes (or ``None``).
        pause_on_gone: pause the emitter when the receiver answers ``410 Gone``.
        max_in_flight: the most tries this emitter has under way at once (an int >= 1). With
            1, events are delivered one at a time in emit order; above 1 they go in
            parallel, in order only among events of the same ordering key.
        max_rate: the most tries per second this emitter starts (> 0), spaced evenly (no
            bursts); ``None`` for no limit.
        retry_schedule: the seconds to wait after the 1st, 2nd... failed try (the last
            entry repeats), plus up to 10 % jitter: a non-empty sequence of numbers >= 0,
            kept as a tuple of floats. It replaces ``backoff_start`` and ``backoff_limit``
            (``Retry-After`` is then capped by its largest entry). ``None``: the exponential
            backoff.
        disable_after: seconds > 0: an emitter whose tries have all failed for this long is
            paused, as on a ``410``; ``None`` never pauses it for that.
        propagate_trace: send the W3C ``traceparent`` (and ``tracestate``) of each try's
            span with the request, when tracing is instrumented
            (:func:`webhooks_emitter.contrib.opentelemetry.instrument`). Off by default: a
            third party's receiver should not learn your trace ids.

    ``max_attempts`` left out (or ``None``) is 3, or ``len(retry_schedule) + 1`` with a
    schedule. ``attrs.evolve`` keeps that link: a variant with another ``retry_schedule``
    derives its count again, unless ``max_attempts`` was given.
    """

    url: str = attrs.field(
        kw_only=False, validator=lambda _, __, v: _check_url(v), repr=lambda v: repr(_redact_url(v))
    )
    secret: Union[str, bytes, tuple[Union[str, bytes], ...], None] = attrs.field(
        default=None, converter=_to_secret, repr=_hide
    )
    header_identifier: str = "Webhooks"
    # None: not given, worked out in __attrs_post_init__ (3, or from retry_schedule).
    max_attempts: int = attrs.field(default=None, converter=_to_attempts)
    request_timeout: float = attrs.field(default=5.0)
    backoff_start: float = attrs.field(default=1.0)
    backoff_limit: float = attrs.field(default=60.0)
    additional_headers: tuple[tuple[str, str], ...] = attrs.field(
        default=(), converter=_to_headers, repr=_show_headers
    )
    insecure: bool = False
    max_queue_size: int = 10_000
    signature_scheme: signing.Scheme = attrs.field(
        default=signing.WEBHOOKS_EMITTER, converter=_to_scheme
    )
    on_delivery: Optional[Callable[[DeliveryResult], Any]] = attrs.field(default=None)
    ca_bundle: Optional[str] = attrs.field(default=None, converter=_to_ca_bundle)
    client_cert: Optional[ClientCert] = attrs.field(default=None, converter=_to_client_cert)
    proxies: Optional[Mapping[str, str]] = attrs.field(
        default=None, converter=_to_proxies, repr=_show_proxies
    )
    block_private_networks: bool = False
    allowed_networks: tuple[Network, ...] = attrs.field(default=(), converter=_to_networks)
    max_body_size: Optional[int] = 1_048_576
    pause_on_gone: bool = True
    max_in_flight: int = 1
    max_rate: Optional[float] = None
    retry_schedule: Optional[tuple[float, ...]] = attrs.field(default=None, converter=_to_schedule)
    disable_after: Optional[float] = None
    propagate_trace: bool = False

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.header_identifier, str) or not _IDENTIFIER.fullmatch(
            self.header_identifier
        ):
            raise ValueError(
                f"header_identifier must be letters, digits and '-', got {self.header_identifier!r}"
            )
        # Floats are normalised in place: the class is frozen, so go through object.
        for name, minimum, strict in (
            ("request_timeout", 0.0, True),
            ("backoff_start", 0.0, False),
            ("backoff_limit", 0.0, False),
        ):
            object.__setattr__(
                self, name, number(name, getattr(self, name), minimum=minimum, strict=strict)
            )
        if self.backoff_limit < self.backoff_start:
            raise ValueError(
                f"backoff_limit ({self.backoff_limit:g}) must be >= backoff_start "
                f"({self.backoff_start:g})"
            )
        if isinstance(self.max_attempts, _Derived):
            schedule = self.retry_schedule
            object.__setattr__(self, "max_attempts", _Derived(len(schedule) + 1 if schedule else 3))
        else:
            _integer("max_attempts", self.max_attempts, minimum=1)
        _integer("max_queue_size", self.max_queue_size, minimum=1)
        _integer("max_in_flight", self.max_in_flight, minimum=1)
        for name, what in (
            ("max_rate", "a number of tries per second"),
            ("disable_after", "a number of seconds"),
        ):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, number(name, value, strict=True, what=what))
        if self.max_body_size is not None:
            _integer("max_body_size", self.max_body_size, minimum=1)
        for name in ("insecure", "block_private_networks", "pause_on_gone"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, not {type(getattr(self, name)).__name__}")
        if self.on_delivery is not None and not callable(self.on_delivery):
            raise TypeError(f"on_delivery must be callable or None, not {self.on_delivery!r}")
        if self.secret is not None:
            try:
                self.signature_scheme.check_secret(self.secret)
            except (TypeError, ValueError) as exc:
                # Re-raised without the cause: the original message may not, but a
                # traceback's locals could, show the secret; the message names the rule.
                raise type(exc)(str(exc)) from None
        reserved = set(_RESERVED_HEADERS)
        probe = self.signature_scheme.sign(
            b"",
            "probe" if self.signature_scheme is not signing.STANDARD_WEBHOOKS else b"k",
            delivery_id="probe",
            timestamp=0,
            header_identifier=self.header_identifier,
        )
        reserved.update(name.lower() for name in probe)
        prefix = f"x-{self.header_identifier.lower()}-"
        for name, _ in self.additional_headers:
            lowered = name.lower()
            if lowered in reserved or lowered.startswith(prefix):
                raise ValueError(f"additional_headers may not replace the {name} header")

    @classmethod
    def new(cls, url: str, **kwargs: Any) -> Config:
        """Make a ``Config`` for ``url`` (the original's ``Config.new``); fields as keywords."""
        return cls(url, **kwargs)

    @property
    def secrets(self) -> tuple[Union[str, bytes], ...]:
        """The secrets as a tuple, newest first (empty when unsigned)."""
        if self.secret is None:
            return ()
        if isinstance(self.secret, (str, bytes)):
            return (self.secret,)
        return self.secret


_FIELD_NAMES = frozenset(field.name for field in attrs.fields(Config))
_attrs_init = Config.__init__


@functools.wraps(_attrs_init)
def _checked_init(self: Config, *args: Any, **kwargs: Any) -> None:
    # attrs' own message ("got an unexpected keyword argument 'secert'") names the typo but
    # not the field meant; a misspelled field must not pass for a missing feature.
    for name in kwargs:
        if name not in _FIELD_NAMES:
            raise TypeError(f"Config: {unknown_name('field', name, sorted(_FIELD_NAMES))}")
    _attrs_init(self, *args, **kwargs)


# Assigned, not written in the class: attrs generates __init__, and type checkers read its
# signature from the fields (a misspelled keyword is then also a type checker's error).
setattr(Config, "__init__", _checked_init)  # noqa: B010


@attrs.frozen
class DeliveryResult:
    """What became of one event at one emitter, handed to ``Config.on_delivery``.

    Attributes:
        emitter_id: the emitter that delivered (or gave up).
        event: the event name.
        request_id: the request id, also sent as the delivery id.
        delivered: True if a try got a 2xx answer.
        attempts: how many tries were made.
        status_code: the last answer's HTTP status, or None if none came.
        error: why the last try failed, or None when delivered.
        elapsed: seconds from the first try to the outcome, waits included.
    """

    emitter_id: str
    event: str
    request_id: str
    delivered: bool
    attempts: int
    status_code: Optional[int]
    error: Optional[str]
    elapsed: float


@attrs.frozen
class EmitterStats:
    """Counters of one emitter since it was attached.

    Attributes:
        queued: events held now (waiting or being delivered).
        delivered: events delivered.
        given_up: events given up after their last try.
        dropped: events dropped because the queue was full.
        retries: tries beyond the first, over all events.
        paused: whether the emitter is paused.
        failed: failed events kept now (dead letters; see ``failed()``).

    With a durable store ``queued``, ``failed`` and ``paused`` are the store's (every
    process); the other counters are this process's.
    """

    queued: int
    delivered: int
    given_up: int
    dropped: int
    retries: int
    paused: bool
    failed: int = 0
