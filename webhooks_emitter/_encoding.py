"""Payloads to strict, compact UTF-8 JSON bytes; event names and request ids checked."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import math
import uuid
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["check_name", "encode_payload"]

_KEY_TYPES = (str, int, float, bool, type(None))


def check_name(value: object, argument: str) -> str:
    """Return ``value`` as an event name or request id, or raise naming ``argument``.

    A name is a non-empty ``str`` without CR or LF; an ``Enum`` member is taken by its value.
    """
    if isinstance(value, enum.Enum):
        value = value.value
    if type(value) is not str:
        if not isinstance(value, str):
            raise TypeError(f"{argument} must be a str, not {type(value).__name__}")
        value = str.__str__(value)
    if not value:
        raise ValueError(f"{argument} must not be empty")
    if "\r" in value or "\n" in value:
        raise ValueError(f"{argument} must not contain CR or LF: {value!r}")
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
    if isinstance(key, enum.Enum) and isinstance(key.value, _KEY_TYPES):
        return key.value
    return repr(key)


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


_fast = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_default
).encode


def encode_payload(payload: object) -> bytes:
    """Encode ``payload`` (a mapping) as compact strict JSON in UTF-8.

    Raises:
        TypeError: ``payload`` is not a mapping.
        ValueError: ``payload`` refers to itself.
    """
    if not isinstance(payload, Mapping):
        raise TypeError(f"payload must be a mapping (a dict), not {type(payload).__name__}")
    try:
        text = _fast(payload)
    except (ValueError, TypeError, RecursionError):
        # NaN or Infinity, a key json refuses, or a cycle: take the slow, exact path.
        try:
            text = _fast(_sanitize(payload, set()))
        except RecursionError:
            raise ValueError("payload is nested too deeply to encode") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates cannot be UTF-8; JSON's \uXXXX escapes carry them intact.
        return json.dumps(json.loads(text), ensure_ascii=True, separators=(",", ":")).encode()
