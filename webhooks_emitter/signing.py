"""Signing schemes: sign outgoing deliveries, verify incoming ones.

Three schemes are provided, each an object with ``sign`` and ``verify``:

- :data:`WEBHOOKS_EMITTER` (the default): ``X-<identifier>-Signature: sha256:<base32hex>``,
  byte-compatible with the original Elixir library.
- :data:`GITHUB`: ``X-Hub-Signature-256: sha256=<hex>``.
- :data:`STANDARD_WEBHOOKS`: ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature: v1,<base64>`` as in https://www.standardwebhooks.com/.

Receivers call :func:`verify` (also ``webhooks_emitter.verify``) with the raw body bytes,
the request headers and the secret (or a list of secrets while rotating keys)::

    webhooks_emitter.verify(request.get_data(), request.headers, "supersecret")

A secret may be a list, newest first: ``STANDARD_WEBHOOKS`` then sends one signature per
secret, the other schemes sign with the first; ``verify`` passes when any secret matches.
Failures raise :class:`~webhooks_emitter.InvalidSignatureError`, whose message says what was
wrong and never contains a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any, Optional, Protocol, Union, cast

from .exceptions import InvalidSignatureError

__all__ = [
    "GITHUB",
    "SCHEMES",
    "STANDARD_WEBHOOKS",
    "WEBHOOKS_EMITTER",
    "Headers",
    "Scheme",
    "SecretType",
    "sign",
    "verify",
]

Secret = Union[str, bytes]
#: What ``secret`` arguments accept: one secret, or a list (or tuple) of them, newest first.
SecretType = Union[Secret, Sequence[Secret]]


class _HeaderItems(Protocol):
    def items(self) -> Iterable[tuple[Any, Any]]: ...


#: What ``headers`` arguments accept: anything with ``items()`` (a dict, requests'
#: ``CaseInsensitiveDict``, Django's ``request.headers``, Flask's ``request.headers``,
#: ``http.server``'s message), or an iterable of ``(name, value)`` pairs (ASGI's
#: ``scope["headers"]``); names and values may be ``str`` or ``bytes``.
Headers = Union[_HeaderItems, Iterable[tuple[Any, Any]]]

_BASE64_KEY = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_BASE64_DIGEST = re.compile(r"[A-Za-z0-9+/]{43}=?")
_UNIX_SECONDS = re.compile(r"[0-9]{1,15}")
_WHSEC = "whsec_"


def _secrets(secret: SecretType) -> list[Secret]:
    """``secret`` as a non-empty list, or ``ValueError``/``TypeError`` naming ``secret``."""
    items: list[Any]
    if isinstance(secret, (str, bytes)):
        items = [secret]
    elif isinstance(secret, (list, tuple)):
        # Only ordered collections: the first secret is the one that signs.
        items = list(secret)
        if not items:
            raise ValueError("secret must not be an empty list")
    else:
        raise TypeError(
            f"secret must be str, bytes or a list of them, not {type(secret).__name__}"
        )
    for item in items:
        if not isinstance(item, (str, bytes)):
            raise TypeError(f"secret must be str or bytes, not {type(item).__name__}")
        if not item:
            raise ValueError("secret must not be empty")
        if isinstance(item, str):
            try:
                item.encode("utf-8")  # the key is the secret's UTF-8 bytes
            except UnicodeEncodeError:
                raise ValueError("secret must be text that UTF-8 can encode") from None
    return items


def _utf8(secret: Secret) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def _body(body: object) -> bytes:
    """The body as bytes (``str`` is taken as UTF-8), or ``TypeError`` naming ``body``."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    raise TypeError(f"body must be bytes (the raw request body), not {type(body).__name__}")


def _text(value: object) -> str:
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)


def _header(headers: Headers, name: str) -> str:
    """The value of header ``name``, matched case-insensitively, or InvalidSignatureError.

    Headers are read through ``items()`` (or as pairs), not ``get``: that is what every
    mapping-like object shares, whatever the case of the names it keeps. The first value
    wins when a header is repeated, as ``get`` does in the common frameworks.
    """
    items = getattr(headers, "items", None)
    pairs: Iterable[Any] = items() if callable(items) else cast("Iterable[Any]", headers)
    wanted = name.lower()
    for pair in pairs:
        try:
            key, value = pair
        except (TypeError, ValueError):
            raise TypeError(
                "headers must be a mapping or (name, value) pairs, "
                f"got an item of type {type(pair).__name__}"
            ) from None
        if _text(key).lower() == wanted:
            # Only SP and HTAB: what HTTP strips around a value (str.strip would also eat
            # latin-1 characters such as NBSP that a UTF-8 id's bytes may read as).
            text = _text(value).strip(" \t")
            if not text:
                raise InvalidSignatureError(f"malformed {name}: the header is empty")
            return text
    raise InvalidSignatureError(f"missing header {name}")


def _any_match(expected: Iterable[bytes], given: Iterable[bytes]) -> bool:
    """True if any of ``given`` equals any of ``expected``; every pair compared in constant time."""
    given = list(given)
    matched = False
    for want in expected:
        for got in given:
            matched |= hmac.compare_digest(want, got)
    return matched


def _no_match(header: str, keys: Sequence[object]) -> InvalidSignatureError:
    which = "the secret" if len(keys) == 1 else f"any of the {len(keys)} secrets"
    return InvalidSignatureError(f"no signature in {header} matches {which}")


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    return float(value)


class Scheme:
    """A signing scheme: how a delivery is signed, and how a receiver checks it.

    Use the module's instances (:data:`WEBHOOKS_EMITTER`, :data:`GITHUB`,
    :data:`STANDARD_WEBHOOKS`); they are stateless and thread-safe, and pickle as
    themselves.
    """

    #: The scheme's name, as the command line and ``Config(signature_scheme=...)`` take it.
    name: str = ""
    #: Whether signatures depend on the time of the try (and so are made anew on each retry).
    timestamped: bool = False

    def check_secret(self, secret: SecretType) -> list[Secret]:
        """Return ``secret`` as a non-empty list, or raise ValueError/TypeError naming it.

        The messages name the rule broken, never the secret.
        """
        return _secrets(secret)

    def sign(
        self,
        body: bytes,
        secret: SecretType,
        *,
        delivery_id: str,
        timestamp: int,
        header_identifier: str = "Webhooks",
    ) -> dict[str, str]:
        """Return the headers that sign ``body``.

        Args:
            body: the exact request body.
            secret: a secret, or a list of them newest first.
            delivery_id: the delivery id (the request id) sent with the request; with
                ``STANDARD_WEBHOOKS`` a non-ASCII id is sent (and signed) as its UTF-8 bytes,
                so the ``webhook-id`` value is their latin-1 reading, as receivers decode it.
            timestamp: unix seconds of this try (used by timestamped schemes).
            header_identifier: the ``<identifier>`` in ``X-<identifier>-*`` header names.

        Returns:
            The header names and values to add to the request.

        Raises:
            ValueError, TypeError: a bad secret, body or timestamp (the message names it).
        """
        raise NotImplementedError  # pragma: no cover - every scheme overrides it

    def verify(
        self,
        body: bytes,
        headers: Headers,
        secret: SecretType,
        *,
        header_identifier: str = "Webhooks",
        tolerance: float = 300,
        now: Optional[float] = None,
    ) -> None:
        """Check that ``headers`` sign ``body`` with ``secret`` (or any of a list of them).

        Args:
            body: the raw request body, as received (``str`` is taken as UTF-8).
            headers: the request headers: any mapping-like object with ``items()``, or
                ``(name, value)`` pairs; names match case-insensitively.
            secret: the secret, or a list of secrets while rotating.
            header_identifier: the ``<identifier>`` in ``X-<identifier>-*`` header names.
            tolerance: for timestamped schemes, the most seconds the timestamp may be
                from ``now``, either way (the limit itself passes).
            now: unix seconds to check the timestamp against (default: the clock).

        Raises:
            InvalidSignatureError: a header is missing or malformed, no signature matches,
                or the timestamp is outside the tolerance.
            ValueError, TypeError: a bad secret or argument (a mistake of the receiver,
                not of the request).
        """
        raise NotImplementedError  # pragma: no cover - every scheme overrides it

    def __repr__(self) -> str:
        return f"webhooks_emitter.signing.{self.name.upper()}"

    def __reduce__(self) -> str:
        # Pickled (a Config sent to another process) and copied as the module's singleton.
        return self.name.upper()


class _BodyScheme(Scheme):
    """A scheme with one header holding ``sha256<separator><digest>`` of the body alone."""

    #: The separator between ``sha256`` and the digest, and the digest's form in messages.
    separator = ""
    form = ""
    pattern: re.Pattern[str]

    def header_name(self, header_identifier: str) -> str:
        """The name of the signature header."""
        raise NotImplementedError  # pragma: no cover - every scheme overrides it

    @staticmethod
    def digest(body: bytes, secret: Secret) -> str:
        """The text of the HMAC-SHA256 of ``body`` keyed with ``secret``."""
        raise NotImplementedError  # pragma: no cover - every scheme overrides it

    def sign(
        self,
        body: bytes,
        secret: SecretType,
        *,
        delivery_id: str,
        timestamp: int,
        header_identifier: str = "Webhooks",
    ) -> dict[str, str]:
        key = _secrets(secret)[0]
        value = f"sha256{self.separator}{self.digest(_body(body), key)}"
        return {self.header_name(header_identifier): value}

    def verify(
        self,
        body: bytes,
        headers: Headers,
        secret: SecretType,
        *,
        header_identifier: str = "Webhooks",
        tolerance: float = 300,
        now: Optional[float] = None,
    ) -> None:
        keys = _secrets(secret)
        data = _body(body)
        name = self.header_name(header_identifier)
        prefix, _, given = _header(headers, name).partition(self.separator)
        if prefix != "sha256" or not self.pattern.fullmatch(given):
            raise InvalidSignatureError(
                f"malformed {name}: expected sha256{self.separator}<{self.form}>"
            )
        expected = [self.digest(data, key).encode("ascii") for key in keys]
        if not _any_match(expected, [given.lower().encode("ascii")]):
            raise _no_match(name, keys)


class _WebhooksEmitterScheme(_BodyScheme):
    name = "webhooks_emitter"
    separator = ":"
    form = "52 base32hex characters"
    pattern = re.compile(r"[0-9a-v]{52}", re.IGNORECASE)

    def header_name(self, header_identifier: str) -> str:
        return f"X-{header_identifier}-Signature"

    @staticmethod
    def digest(body: bytes, secret: Secret) -> str:
        mac = hmac.new(_utf8(secret), body, hashlib.sha256).digest()
        return base64.b32hexencode(mac).decode("ascii").lower().rstrip("=")


class _GitHubScheme(_BodyScheme):
    name = "github"
    separator = "="
    form = "64 hex digits"
    pattern = re.compile(r"[0-9a-f]{64}", re.IGNORECASE)

    def header_name(self, header_identifier: str) -> str:
        return "X-Hub-Signature-256"

    @staticmethod
    def digest(body: bytes, secret: Secret) -> str:
        return hmac.new(_utf8(secret), body, hashlib.sha256).hexdigest()


class _StandardWebhooksScheme(Scheme):
    name = "standard_webhooks"
    timestamped = True

    @staticmethod
    def _key(secret: Secret) -> bytes:
        """The HMAC key: ``bytes`` as they are; ``str`` as ``whsec_`` + base64, or bare base64.

        The reference package decodes ``b64decode(text + "==")``, which tolerates missing
        padding but also silently drops characters outside the alphabet; here padding may
        be left out, and anything else outside base64 is refused rather than guessed at.
        """
        if isinstance(secret, bytes):
            return secret
        text = secret.removeprefix(_WHSEC)
        data = text.rstrip("=")
        if not _BASE64_KEY.fullmatch(text) or len(data) % 4 == 1:
            raise ValueError(
                "secret for STANDARD_WEBHOOKS must be 'whsec_' followed by base64 "
                "(or bare base64), or bytes"
            )
        try:
            key = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
        except (binascii.Error, ValueError):  # pragma: no cover - the pattern rules it out
            raise ValueError("secret for STANDARD_WEBHOOKS is not valid base64") from None
        return key

    def check_secret(self, secret: SecretType) -> list[Secret]:
        items = _secrets(secret)
        for item in items:
            self._key(item)
        return items

    @staticmethod
    def _signature(key: bytes, delivery_id: str, timestamp: int, body: bytes) -> bytes:
        signed = f"{delivery_id}.{timestamp}.".encode() + body
        return hmac.new(key, signed, hashlib.sha256).digest()

    def sign(
        self,
        body: bytes,
        secret: SecretType,
        *,
        delivery_id: str,
        timestamp: int,
        header_identifier: str = "Webhooks",
    ) -> dict[str, str]:
        keys = [self._key(item) for item in _secrets(secret)]
        data = _body(body)
        if not isinstance(delivery_id, str) or not delivery_id:
            raise ValueError("delivery_id must be a non-empty str")
        if any(c in delivery_id for c in "\r\n\0"):
            raise ValueError("delivery_id must not contain CR, LF or NUL")
        stamp = math.floor(_seconds("timestamp", timestamp))
        if stamp < 0:
            raise ValueError(f"timestamp must be unix seconds >= 0, got {timestamp!r}")
        # Header values travel as bytes that receivers decode as latin-1 (WSGI, ASGI,
        # http.server). A non-ASCII id goes as its UTF-8 bytes, like X-<id>-Delivery, and is
        # signed as the text a receiver reads back, so that it verifies there. Whitespace
        # around a value does not survive HTTP, so it is neither sent nor signed.
        wire_id = delivery_id if delivery_id.isascii() else delivery_id.encode().decode("latin-1")
        wire_id = wire_id.strip(" \t")
        if not wire_id:
            raise ValueError("delivery_id must not be only whitespace")
        signatures = " ".join(
            "v1," + base64.b64encode(self._signature(key, wire_id, stamp, data)).decode()
            for key in keys
        )
        return {
            "webhook-id": wire_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signatures,
        }

    def verify(
        self,
        body: bytes,
        headers: Headers,
        secret: SecretType,
        *,
        header_identifier: str = "Webhooks",
        tolerance: float = 300,
        now: Optional[float] = None,
    ) -> None:
        keys = [self._key(item) for item in _secrets(secret)]
        data = _body(body)
        limit = _seconds("tolerance", tolerance)
        if limit < 0:
            raise ValueError(f"tolerance must be >= 0 seconds, got {tolerance!r}")
        clock = time.time() if now is None else _seconds("now", now)
        delivery_id = _header(headers, "webhook-id")
        text = _header(headers, "webhook-timestamp")
        value = _header(headers, "webhook-signature")
        if not _UNIX_SECONDS.fullmatch(text):
            raise InvalidSignatureError("malformed webhook-timestamp: expected unix seconds")
        # Signed as the integer, as the reference package does (leading zeros dropped).
        stamp = int(text)
        if stamp < clock - limit:
            raise InvalidSignatureError(
                f"webhook-timestamp is too old: {clock - stamp:g} s before now "
                f"(tolerance {limit:g} s)"
            )
        if stamp > clock + limit:
            raise InvalidSignatureError(
                f"webhook-timestamp is too new: {stamp - clock:g} s after now "
                f"(tolerance {limit:g} s)"
            )
        # Entries of other versions (v1a, ...) are skipped, as the reference does; a v1
        # entry must be the base64 of a SHA-256 digest.
        given = []
        for entry in value.split():
            version, _, signature = entry.partition(",")
            if version == "v1" and _BASE64_DIGEST.fullmatch(signature):
                given.append(base64.b64decode(signature[:43] + "=", validate=True))
        if not given:
            raise InvalidSignatureError(
                "malformed webhook-signature: expected v1,<base64 digest>, space-separated"
            )
        expected = [self._signature(key, delivery_id, stamp, data) for key in keys]
        if not _any_match(expected, given):
            raise _no_match("webhook-signature", keys)


#: The original library's scheme (the default): ``X-<identifier>-Signature: sha256:<base32hex>``.
WEBHOOKS_EMITTER: Scheme = _WebhooksEmitterScheme()
#: GitHub's scheme: ``X-Hub-Signature-256: sha256=<hex>``.
GITHUB: Scheme = _GitHubScheme()
#: Standard Webhooks: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64>``.
STANDARD_WEBHOOKS: Scheme = _StandardWebhooksScheme()
#: Every scheme by its name.
SCHEMES: dict[str, Scheme] = {s.name: s for s in (WEBHOOKS_EMITTER, GITHUB, STANDARD_WEBHOOKS)}


def _scheme(scheme: Union[Scheme, str]) -> Scheme:
    if isinstance(scheme, Scheme):
        return scheme
    names = ", ".join(sorted(SCHEMES))
    if not isinstance(scheme, str):
        raise TypeError(f"scheme must be a webhooks_emitter.signing scheme, not {scheme!r}")
    if scheme.lower() not in SCHEMES:
        raise ValueError(f"scheme {scheme!r} is unknown (one of: {names})")
    return SCHEMES[scheme.lower()]


def sign(
    body: bytes,
    secret: SecretType,
    *,
    delivery_id: str,
    timestamp: Optional[int] = None,
    scheme: Union[Scheme, str] = WEBHOOKS_EMITTER,
    header_identifier: str = "Webhooks",
) -> dict[str, str]:
    """Return the headers that sign ``body`` with ``scheme``.

    Args:
        body: the exact request body.
        secret: a secret, or a list of them newest first.
        delivery_id: the delivery id sent with the request (``webhook-id``).
        timestamp: unix seconds (default: now); only timestamped schemes use it.
        scheme: a scheme of this module, or its name.
        header_identifier: the ``<identifier>`` in ``X-<identifier>-*`` header names.

    Raises:
        ValueError, TypeError: a bad argument; the message names it.
    """
    stamp = int(time.time()) if timestamp is None else timestamp
    return _scheme(scheme).sign(
        body, secret, delivery_id=delivery_id, timestamp=stamp, header_identifier=header_identifier
    )


def verify(
    body: Union[bytes, bytearray, memoryview, str],
    headers: Headers,
    secret: SecretType,
    *,
    scheme: Union[Scheme, str] = WEBHOOKS_EMITTER,
    header_identifier: str = "Webhooks",
    tolerance: float = 300,
    now: Optional[float] = None,
) -> None:
    """Check a received webhook: pass the raw body, the request headers and the secret.

    Args:
        body: the raw request body, exactly as received (``str`` is taken as UTF-8);
            never a re-encoded copy of the parsed JSON.
        headers: the request headers: ``request.headers`` of Flask, Django, requests or
            Starlette, a dict, or ``(name, value)`` pairs; names match case-insensitively.
        secret: the secret, or a list of them while rotating (any one may match).
        scheme: the scheme the sender uses (default :data:`WEBHOOKS_EMITTER`), or its name.
        header_identifier: the ``<identifier>`` in ``X-<identifier>-*`` header names.
        tolerance: for ``STANDARD_WEBHOOKS``, the most seconds the timestamp may be from now.
        now: unix seconds to check the timestamp against (default: the clock).

    Raises:
        InvalidSignatureError: the signature does not verify; the message says why.
        ValueError, TypeError: a bad secret or argument.
    """
    _scheme(scheme).verify(
        _body(body),
        headers,
        secret,
        header_identifier=header_identifier,
        tolerance=tolerance,
        now=now,
    )
