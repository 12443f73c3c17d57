"""Signing schemes: sign outgoing deliveries, verify incoming ones.

Three schemes are provided, each an object with ``sign`` and ``verify``:

- :data:`WEBHOOKS_EMITTER` (the default): ``X-<identifier>-Signature: sha256:<base32hex>``,
  byte-compatible with the original Elixir library.
- :data:`GITHUB`: ``X-Hub-Signature-256: sha256=<hex>``.
- :data:`STANDARD_WEBHOOKS`: ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature: v1,<base64>`` as in https://www.standardwebhooks.com/.

Receivers call :func:`verify` (also ``webhooks_emitter.verify``) with the raw body bytes,
the request headers and the secret (or a list of secrets while rotating keys).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

from .exceptions import InvalidSignatureError

__all__ = [
    "GITHUB",
    "SCHEMES",
    "STANDARD_WEBHOOKS",
    "WEBHOOKS_EMITTER",
    "Scheme",
    "SecretType",
    "sign",
    "verify",
]

Secret = Union[str, bytes]
#: What ``secret`` arguments accept: one secret, or a sequence of them, newest first.
SecretType = Union[Secret, Sequence[Secret]]


def _secrets(secret: SecretType) -> list[Secret]:
    """``secret`` as a non-empty list, or ``ValueError``/``TypeError`` naming ``secret``."""
    if isinstance(secret, (str, bytes)):
        items: list[Any] = [secret]
    elif isinstance(secret, Iterable):
        items = list(secret)
        if not items:
            raise ValueError("secret must not be an empty list")
    else:
        raise TypeError(f"secret must be str, bytes or a list of them, not {type(secret).__name__}")
    for item in items:
        if not isinstance(item, (str, bytes)):
            raise TypeError(f"secret must be str or bytes, not {type(item).__name__}")
        if not item:
            raise ValueError("secret must not be empty")
    return items


def _utf8(secret: Secret) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def _header(headers: Mapping[str, str], name: str) -> str:
    """The value of header ``name``, matched case-insensitively, or InvalidSignatureError."""
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        for key, candidate in headers.items():
            if key.lower() == wanted:
                value = candidate
                break
    if value is None:
        raise InvalidSignatureError(f"missing header {name}")
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value).strip()


def _any_match(expected: Iterable[bytes], given: Iterable[bytes]) -> bool:
    """True if any of ``given`` equals any of ``expected``; every pair compared in constant time."""
    matched = False
    for want in expected:
        for got in given:
            matched |= hmac.compare_digest(want, got)
    return matched


class Scheme:
    """A signing scheme: how a delivery is signed, and how a receiver checks it.

    Use the module's instances (:data:`WEBHOOKS_EMITTER`, :data:`GITHUB`,
    :data:`STANDARD_WEBHOOKS`); they are stateless and thread-safe.
    """

    #: The scheme's name, as the command line takes it.
    name: str = ""
    #: Whether signatures depend on the time of the try (and so are made anew on each retry).
    timestamped: bool = False

    def check_secret(self, secret: SecretType) -> list[Secret]:
        """Return ``secret`` as a non-empty list, or raise ValueError/TypeError naming it."""
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
            delivery_id: the delivery id (the request id) sent with the request.
            timestamp: unix seconds of this try (used by timestamped schemes).
            header_identifier: the ``<identifier>`` in ``X-<identifier>-*`` header names.
        """
        raise NotImplementedError  # pragma: no cover - every scheme overrides it

    def verify(
        self,
        body: bytes,
        headers: Mapping[str, str],
        secret: SecretType,
        *,
        header_identifier: str = "Webhooks",
        tolerance: float = 300,
        now: float | None = None,
    ) -> None:
        """Check that ``headers`` sign ``body`` with ``secret`` (or any of a list of them).

        Args:
            body: the raw request body, as received.
            headers: the request headers (any mapping; names match case-insensitively).
            secret: the secret, or a list of secrets while rotating.
            header_identifier: the ``<identifier>`` in ``X-<identifier>-*`` header names.
            tolerance: for timestamped schemes, the most seconds the timestamp may be from now.
            now: unix seconds to check the timestamp against (default: the clock).

        Raises:
            InvalidSignatureError: a header is missing or malformed, no signature matches,
                or the timestamp is outside the tolerance.
        """
        raise NotImplementedError  # pragma: no cover - every scheme overrides it

    def __repr__(self) -> str:
        return f"webhooks_emitter.signing.{self.name.upper()}"


class _WebhooksEmitterScheme(Scheme):
    name = "webhooks_emitter"

    @staticmethod
    def _digest(body: bytes, secret: Secret) -> str:
        mac = hmac.new(_utf8(secret), body, hashlib.sha256).digest()
        return base64.b32hexencode(mac).decode("ascii").lower().rstrip("=")

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
        return {f"X-{header_identifier}-Signature": "sha256:" + self._digest(body, key)}

    def verify(
        self,
        body: bytes,
        headers: Mapping[str, str],
        secret: SecretType,
        *,
        header_identifier: str = "Webhooks",
        tolerance: float = 300,
        now: float | None = None,
    ) -> None:
        keys = _secrets(secret)
        name = f"X-{header_identifier}-Signature"
        value = _header(headers, name)
        prefix, _, given = value.partition(":")
        if prefix != "sha256" or len(given) != 52:
            raise InvalidSignatureError(f"malformed {name}: expected sha256:<52 base32hex characters>")
        expected = [self._digest(body, key).encode() for key in keys]
        if not _any_match(expected, [given.lower().encode("ascii", "replace")]):
            raise InvalidSignatureError(f"no signature in {name} matches the secret")


class _GitHubScheme(Scheme):
    name = "github"
    _header_name = "X-Hub-Signature-256"

    @staticmethod
    def _digest(body: bytes, secret: Secret) -> str:
        return hmac.new(_utf8(secret), body, hashlib.sha256).hexdigest()

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
        return {self._header_name: "sha256=" + self._digest(body, key)}

    def verify(
        self,
        body: bytes,
        headers: Mapping[str, str],
        secret: SecretType,
        *,
        header_identifier: str = "Webhooks",
        tolerance: float = 300,
        now: float | None = None,
    ) -> None:
        keys = _secrets(secret)
        value = _header(headers, self._header_name)
        prefix, _, given = value.partition("=")
        if prefix != "sha256" or len(given) != 64:
            raise InvalidSignatureError(
                f"malformed {self._header_name}: expected sha256=<64 hex digits>"
            )
        expected = [self._digest(body, key).encode() for key in keys]
        if not _any_match(expected, [given.lower().encode("ascii", "replace")]):
            raise InvalidSignatureError(f"no signature in {self._header_name} matches the secret")


class _StandardWebhooksScheme(Scheme):
    name = "standard_webhooks"
    timestamped = True

    @staticmethod
    def _key(secret: Secret) -> bytes:
        if isinstance(secret, bytes):
            return secret
        text = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                "secret for STANDARD_WEBHOOKS must be 'whsec_' followed by base64"
            ) from None
        if not key:
            raise ValueError("secret for STANDARD_WEBHOOKS must not decode to an empty key")
        return key

    def check_secret(self, secret: SecretType) -> list[Secret]:
        items = _secrets(secret)
        for item in items:
            self._key(item)
        return items

    @classmethod
    def _signature(cls, key: bytes, delivery_id: str, timestamp: int | str, body: bytes) -> bytes:
        signed = f"{delivery_id}.{timestamp}.".encode() + body
        return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())

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
        signatures = " ".join(
            "v1," + self._signature(key, delivery_id, timestamp, body).decode() for key in keys
        )
        return {
            "webhook-id": delivery_id,
            "webhook-timestamp": str(int(timestamp)),
            "webhook-signature": signatures,
        }

    def verify(
        self,
        body: bytes,
        headers: Mapping[str, str],
        secret: SecretType,
        *,
        header_identifier: str = "Webhooks",
        tolerance: float = 300,
        now: float | None = None,
    ) -> None:
        keys = [self._key(item) for item in _secrets(secret)]
        delivery_id = _header(headers, "webhook-id")
        stamp = _header(headers, "webhook-timestamp")
        value = _header(headers, "webhook-signature")
        if not stamp.isascii() or not stamp.isdigit():
            raise InvalidSignatureError("malformed webhook-timestamp: expected unix seconds")
        clock = time.time() if now is None else now
        if int(stamp) < clock - tolerance:
            raise InvalidSignatureError("webhook-timestamp is too old")
        if int(stamp) > clock + tolerance:
            raise InvalidSignatureError("webhook-timestamp is too new")
        given = []
        for part in value.split():
            version, _, signature = part.partition(",")
            if version == "v1" and signature:
                given.append(signature.encode("ascii", "replace"))
        if not given:
            raise InvalidSignatureError("malformed webhook-signature: expected v1,<base64>")
        expected = [self._signature(key, delivery_id, stamp, body) for key in keys]
        if not _any_match(expected, given):
            raise InvalidSignatureError("no signature in webhook-signature matches the secret")


#: The original library's scheme (the default): ``X-<identifier>-Signature: sha256:<base32hex>``.
WEBHOOKS_EMITTER: Scheme = _WebhooksEmitterScheme()
#: GitHub's scheme: ``X-Hub-Signature-256: sha256=<hex>``.
GITHUB: Scheme = _GitHubScheme()
#: Standard Webhooks: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64>``.
STANDARD_WEBHOOKS: Scheme = _StandardWebhooksScheme()
#: Every scheme by its name.
SCHEMES: dict[str, Scheme] = {s.name: s for s in (WEBHOOKS_EMITTER, GITHUB, STANDARD_WEBHOOKS)}


def sign(
    body: bytes,
    secret: SecretType,
    *,
    delivery_id: str,
    timestamp: int | None = None,
    scheme: Scheme = WEBHOOKS_EMITTER,
    header_identifier: str = "Webhooks",
) -> dict[str, str]:
    """Return the headers that sign ``body`` with ``scheme`` (``timestamp`` defaults to now)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return scheme.sign(
        body, secret, delivery_id=delivery_id, timestamp=stamp, header_identifier=header_identifier
    )


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secret: SecretType,
    *,
    scheme: Scheme = WEBHOOKS_EMITTER,
    **kwargs: Any,
) -> None:
    """Check a received webhook; see :meth:`Scheme.verify` for the arguments.

    Raises:
        InvalidSignatureError: the signature does not verify; the message says why.
    """
    if not isinstance(scheme, Scheme):
        raise TypeError(f"scheme must be a webhooks_emitter.signing scheme, not {scheme!r}")
    if isinstance(body, str):
        body = body.encode("utf-8")
    scheme.verify(body, headers, secret, **kwargs)
