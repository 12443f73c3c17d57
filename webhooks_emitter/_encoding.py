"""Payloads to strict, compact UTF-8 JSON bytes; event names and request ids checked and made."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import json
import json.encoder
import math
import os
import uuid
from collections.abc import Mapping
from typing import Any, Callable, Optional

import attrs

__all__ = ["check_name", "check_request_id", "encode_payload", "new_request_id"]

_KEY_TYPES = (str, int, float, bool, type(None))


def check_name(value: object, argument: str) -> str:
    """Return ``value`` as an event name or request id, or raise naming ``argument``.

    A name is a non-empty ``str`` of printable characters (no CR, LF or other control
    characters, no lone surrogates) without whitespace at either end: it is sent as an HTTP
    header value, which cannot carry those intact. An ``Enum`` member is taken by its value.
    """
    if isinstance(value, enum.Enum):
        value = value.value
    if type(value) is not str:
        if not isinstance(value, str):
            raise TypeError(f"{argument} must be a str, not {type(value).__name__}")
        value = str.__str__(value)
    if not value:
        raise ValueError(f"{argument} must not be empty")
    if not value.isprintable():
        if "\r" in value or "\n" in value:
            raise ValueError(f"{argument} must not contain CR or LF: {value!r}")
        raise ValueError(
            f"{argument} must not contain control or unprintable characters: {value!r}"
        )
    if value[0] == " " or value[-1] == " ":
        # HTTP drops it, so the receiver would see another name or id than the one sent.
        raise ValueError(f"{argument} must not start or end with a space: {value!r}")
    return value


#: The longest request id accepted: it travels as a header, and receivers refuse long ones.
MAX_REQUEST_ID = 200


def check_request_id(value: object) -> str:
    """Return ``value`` as a request id, or raise naming ``request_id``.

    A request id is sent as the ``X-<identifier>-Delivery`` header (and Standard Webhooks'
    ``webhook-id``): 1 to 200 printable ASCII characters, no spaces (CONTRACT section 2).
    """
    value = check_name(value, "request_id")
    if len(value) > MAX_REQUEST_ID:
        raise ValueError(
            f"request_id must be at most {MAX_REQUEST_ID} characters, got {len(value)}"
        )
    if not (value.isascii() and value.isprintable()) or " " in value:
        raise ValueError(
            f"request_id must be printable ASCII without spaces: {value!r}"
        )
    return value


def _default(obj: Any) -> Any:
    """Make one value that the json module cannot hold JSON-safe (the original's rules)."""
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return obj.isoformat()
    if isinstance(obj, (decimal.Decimal, uuid.UUID)):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return repr(raw)
    if attrs.has(type(obj)):
        return {a.name: getattr(obj, a.name) for a in attrs.fields(type(obj))}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return dict(obj)
    return repr(obj)


def _safe_key(key: Any) -> Any:
    if isinstance(key, float) and not math.isfinite(key):
        return repr(key)
    if isinstance(key, _KEY_TYPES):
        return key
    return repr(key)  # an Enum key too, unless it is also a str or an int


def _sanitize(obj: Any, active: set[int]) -> Any:
    """Rebuild ``obj`` from JSON types only; the slow path taken when the fast one refuses.

    It maps non-finite floats to None and odd keys to their repr, and raises ValueError on
    a value that contains itself (``active`` holds the ids of the containers being walked).
    """
    if isinstance(obj, float) and not isinstance(obj, enum.Enum):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool, type(None))) and not isinstance(obj, enum.Enum):
        return obj
    marker = id(obj)
    if marker in active:
        raise ValueError("payload refers to itself (a circular reference)")
    active.add(marker)
    try:
        if isinstance(obj, Mapping):
            return {_safe_key(k): _sanitize(v, active) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [_sanitize(v, active) for v in obj]
        return _sanitize(_default(obj), active)
    finally:
        active.discard(marker)


_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_default
)


def _c_encoder() -> Optional[Callable[[object], str]]:
    """json's C encoder made once, with the settings of ``_encoder``; None where unavailable.

    ``JSONEncoder.encode`` builds this encoder, and a dict of markers to detect cycles, on
    every call; emit() is on the caller's thread, so that is done once here. Without the
    markers a payload that refers to itself ends in RecursionError, which takes the slow
    path below, as a cycle did before. Checked on a probe against ``JSONEncoder.encode``;
    any mismatch (another Python, another signature) keeps the plain encoder.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    basestring = getattr(json.encoder, "c_encode_basestring", None)
    if make is None or basestring is None:
        return None
    try:
        encode = make(None, _default, basestring, None, ":", ",", False, False, False)

        def fast(payload: object) -> str:
            return "".join(encode(payload, 0))

        probe = {"a": [1, 2.5, True, None, "\u00e9\n\"", {"b": (3,)}], 1: {2}, "c": -0.0}
        if fast(probe) != _encoder.encode(probe):
            return None
    except Exception:  # noqa: BLE001 - any surprise keeps the plain encoder
        return None
    try:
        fast({"nan": float("nan")})
    except ValueError:
        return fast  # NaN refused, as allow_nan=False does
    return None


_fast: Callable[[object], str] = _c_encoder() or _encoder.encode


def encode_payload(payload: object) -> bytes:
    """Encode ``payload`` (a mapping) as compact strict JSON in UTF-8.

    Raises:
        TypeError: ``payload`` is not a mapping.
        ValueError: ``payload`` refers to itself.
    """
    if type(payload) is not dict and not isinstance(payload, Mapping):
        raise TypeError(f"payload must be a mapping (a dict), not {type(payload).__name__}")
    try:
        text = _fast(payload)
    except (ValueError, TypeError, RecursionError):
        # NaN or Infinity, a key json refuses, or a cycle: take the slow, exact path.
        try:
            clean = _sanitize(payload, set())
        except RecursionError:
            raise ValueError("payload is nested too deeply to encode") from None
        try:
            text = _fast(clean)
        except (ValueError, TypeError, RecursionError) as exc:  # e.g. an int of 5000 digits
            raise ValueError(f"payload cannot be encoded as JSON: {exc}") from None
    # A lone surrogate (only possible inside a JSON string) cannot be UTF-8: it goes as
    # JSON's \uXXXX escape, which is what backslashreplace writes; the rest stays UTF-8.
    return text.encode("utf-8", "backslashreplace")


# Request ids: the random bytes of 256 ids are read at once, because os.urandom releases
# the GIL (a syscall): on every emit() that let a busy delivery thread take the GIL and
# keep the caller waiting for as long as it ran. A deque pops atomically across threads;
# a forked child empties it, so it never repeats its parent's ids.
_ID_BATCH = 256
_id_bytes: collections.deque[bytes] = collections.deque()
# The hex digit that carries the RFC 4122 variant (binary 10xx), by the random digit.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
os.register_at_fork(after_in_child=_id_bytes.clear)


def new_request_id() -> str:
    """A new random request id, as ``str(uuid.uuid4())`` makes (from ``os.urandom``)."""
    try:
        raw = _id_bytes.popleft()
    except IndexError:
        block = os.urandom(16 * _ID_BATCH)
        _id_bytes.extend([block[i : i + 16] for i in range(16, len(block), 16)])
        raw = block[:16]
    text = raw.hex()  # then version 4 and the variant, where uuid.UUID(version=4) puts them
    return f"{text[:8]}-{text[8:12]}-4{text[13:16]}-{_VARIANT[text[16]]}{text[17:20]}-{text[20:]}"
