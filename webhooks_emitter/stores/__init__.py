"""Where events wait for delivery: in memory (the default), in SQLite or in PostgreSQL.

    >>> from webhooks_emitter import WebhooksEmitter, stores
    >>> hub = WebhooksEmitter(store=stores.SQLiteStore("/var/lib/app/hooks.db"))  # doctest: +SKIP
    >>> hub = WebhooksEmitter(store="postgresql://app@db/app")                     # doctest: +SKIP

A durable store keeps each event, and its delivery state, until it is delivered or given
up, so a process that dies loses nothing (CONTRACT section 10). :func:`from_url` makes a
store from a URL; the interface every store implements is :class:`Store`.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from .._redaction import hide_passwords, scrub_exception
from ._base import EmitterState, FailedEvent, Store, StoreError
from ._pg_pool import userinfo_problem
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

#: The URL schemes :func:`from_url` knows.
SCHEMES = ("memory", "sqlite", "postgresql", "postgres")
_FORMS = "memory:, sqlite:///relative/path.db, sqlite:////absolute/path.db or postgresql://..."
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
# A "%" that does not start an escape: libpq refuses the URL, quoting it whole.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def check_url(url: object) -> tuple[str, str]:
    """What ``url`` names, without opening anything: ``("memory", "")``, ``("sqlite",
    path)`` or ``("postgresql", url)``.

    Read as SQLAlchemy reads them: ``sqlite:///relative/path.db`` is relative to the
    working directory, ``sqlite:////absolute/path.db`` absolute, ``sqlite:relative/path.db``
    relative; ``postgres://`` is ``postgresql://``. The messages never show a password,
    whatever the input (a libpq ``key=value`` string, a URL no parser accepts).

    Raises:
        TypeError: ``url`` is not a str.
        ValueError: ``url`` is none of those forms (the message says why).
    """
    if not isinstance(url, str):
        raise TypeError(f"store URL must be a str, not {type(url).__name__}")
    shown = redact(url)
    scheme, sep, rest = url.partition(":")
    if not sep or not _SCHEME.fullmatch(scheme):
        if "=" in url.partition(":")[0] or "=" in url and "://" not in url:
            raise ValueError(
                "store URL looks like a libpq key=value connection string: give a "
                "postgresql://user@host/db URL, or pass the string to "
                "stores.PostgresStore(conninfo)"
            )
        raise ValueError(f"store URL {shown!r} has no scheme: use {_FORMS}")
    scheme = scheme.lower()
    if scheme == "memory":
        if rest not in ("", "//"):
            raise ValueError(f"store URL {shown!r}: memory: takes nothing after the colon")
        return scheme, ""
    if scheme == "sqlite":
        return scheme, _sqlite_path(rest, shown)
    if scheme in ("postgresql", "postgres"):
        _check_postgres(url, shown)
        return "postgresql", url
    if scheme == "django":
        raise ValueError(
            f"store URL {shown!r} names a database of Django's settings.DATABASES: it "
            "belongs in settings.WEBHOOKS_EMITTER['STORE'] (with "
            "'webhooks_emitter.contrib.django' in INSTALLED_APPS), not here"
        )
    raise ValueError(f"store URL {shown!r}: unknown scheme {scheme!r} (use {_FORMS})")


def _sqlite_path(rest: str, shown: str) -> str:
    """The file of an ``sqlite:`` URL (``rest`` is what follows the colon)."""
    if rest.startswith("//"):
        host, slash, path = rest[2:].partition("/")
        if host:
            raise ValueError(
                f"store URL {shown!r}: an SQLite URL has no host; use "
                "sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        # As SQLAlchemy: sqlite:///x.db is "x.db" (relative), sqlite:////x.db is "/x.db".
        path = path if slash else ""
    else:
        path = rest
    path = urllib.parse.unquote(path)
    if not path.strip("/"):
        raise ValueError(f"store URL {shown!r} names no file")
    return path


def _check_postgres(url: str, shown: str) -> None:
    """Refuse what libpq would refuse while quoting the URL, password included."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError(f"store URL {shown!r} must not contain spaces or control characters")
    if _BAD_ESCAPE.search(url):
        raise ValueError(
            f"store URL {shown!r} has a '%' that is not followed by two hex digits (write a "
            "'%' in a password as %25)"
        )
    problem = userinfo_problem(url)
    if problem is not None:
        raise ValueError(f"store URL is not a valid postgresql:// URL ({problem}); it is not "
                         "repeated here, as it may hold a password")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        reason = hide_passwords(str(exc), url)
        raise ValueError(f"store URL {shown!r} is not a valid URL ({reason})") from None
    if not url.partition(":")[2].startswith("//"):
        raise ValueError(f"store URL {shown!r}: a PostgreSQL URL starts with postgresql://")


def from_url(url: str, **options: Any) -> Store:
    """Make a store from a URL.

    ``memory:``; ``sqlite:///relative/path.db`` (relative to the working directory),
    ``sqlite:////absolute/path.db`` or ``sqlite:relative/path.db``; ``postgresql://...``
    or ``postgres://...`` (a libpq connection URI). ``options`` are passed to the store's
    constructor (``lease_timeout=``, ``timeout=`` ...). No message of an error raised here
    shows a password.

    Raises:
        TypeError: ``url`` is not a str.
        ValueError: ``url`` is not one of those forms (``django:<alias>`` belongs in
            Django's settings).
        StoreError: the store could not be opened.
    """
    scheme, target = check_url(url)
    if scheme == "memory":
        if options:
            raise TypeError(f"MemoryStore takes no options, got {sorted(options)}")
        return MemoryStore()
    if scheme == "sqlite":
        return SQLiteStore(target, **options)
    try:
        return PostgresStore(target, **options)
    except Exception as exc:  # noqa: BLE001 - re-raised as it is, only its text cleaned
        raise scrub_exception(exc, url) from exc.__cause__


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs): that of its
    user info (parsable or not), and ``password=`` in its query or a libpq string."""
    return hide_passwords(url, url)
