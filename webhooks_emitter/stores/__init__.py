"""Where events wait for delivery: in memory (the default), in SQLite or in PostgreSQL.

    >>> from webhooks_emitter import WebhooksEmitter, stores
    >>> hub = WebhooksEmitter(store=stores.SQLiteStore("/var/lib/app/hooks.db"))  # doctest: +SKIP
    >>> hub = WebhooksEmitter(store="postgresql://app@db/app")                     # doctest: +SKIP

A durable store keeps each event, and its delivery state, until it is delivered or given
up, so a process that dies loses nothing (CONTRACT section 10). :func:`from_url` makes a
store from a URL; the interface every store implements is :class:`Store`.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from ._base import EmitterState, FailedEvent, Store, StoreError
from .memory import MemoryStore
from .postgres import PostgresStore
from .sqlite import SQLiteStore

__all__ = [
    "EmitterState",
    "FailedEvent",
    "MemoryStore",
    "PostgresStore",
    "SQLiteStore",
    "Store",
    "StoreError",
    "from_url",
]


def from_url(url: str, **options: Any) -> Store:
    """Make a store from a URL.

    ``memory:``; ``sqlite:///absolute/path.db`` or ``sqlite:relative/path.db``;
    ``postgresql://...`` or ``postgres://...`` (a libpq connection URI). ``options`` are
    passed to the store's constructor (``lease_timeout=``, ``timeout=`` ...).

    Raises:
        TypeError: ``url`` is not a str.
        ValueError: ``url`` is not one of those forms.
        StoreError: the store could not be opened.
    """
    if not isinstance(url, str):
        raise TypeError(f"store URL must be a str, not {type(url).__name__}")
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(
            f"store URL {redact(url)!r} has no scheme: use memory:, sqlite:///path.db "
            "or postgresql://..."
        )
    if scheme == "memory":
        if rest not in ("", "//"):
            raise ValueError(f"store URL {url!r}: memory: takes nothing after the colon")
        if options:
            raise TypeError(f"MemoryStore takes no options, got {sorted(options)}")
        return MemoryStore()
    if scheme == "sqlite":
        if rest.startswith("//"):
            # sqlite:///abs/path (empty host) or sqlite:////abs; a host is not allowed.
            host, _, path = rest[2:].partition("/")
            if host:
                raise ValueError(
                    f"store URL {url!r}: an SQLite URL has no host; use sqlite:///absolute/path"
                    " or sqlite:relative/path"
                )
            path = "/" + path.lstrip("/")  # sqlite:////abs/path (SQLAlchemy's form) too
        else:
            path = rest
        path = urllib.parse.unquote(path)
        if not path or path == "/":
            raise ValueError(f"store URL {url!r} names no file")
        return SQLiteStore(path, **options)
    if scheme in ("postgresql", "postgres"):
        return PostgresStore(url, **options)
    raise ValueError(
        f"store URL {redact(url)!r}: unknown scheme {scheme!r} "
        "(use memory:, sqlite:///path.db or postgresql://...)"
    )


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        netloc = f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<an unparsable URL>"
