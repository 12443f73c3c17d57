"""The durable store an operator command works on: ``--store`` (or ``$WEBHOOKS_EMITTER_STORE``),
checked and opened, and the remarks the commands print about it on standard error."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Optional

from .._settings import require_durable
from ..stores import Store, from_url, redact
from ._common import PROG, CommandFailed, UsageError

__all__ = [
    "DURABLE",
    "STORE_ENV",
    "durable_url",
    "note",
    "note_if_unknown",
    "open_store",
    "opened",
    "store_url",
]

#: Where ``--store`` is read from when it is not given (keeps a password out of ``ps``).
STORE_ENV = "WEBHOOKS_EMITTER_STORE"
#: The durable stores, as the messages name them.
DURABLE = "sqlite:///path.db or postgresql://..."


def store_url(args: argparse.Namespace) -> Optional[str]:
    """The store URL the command was given (``--store`` or ``$WEBHOOKS_EMITTER_STORE``)."""
    url: Optional[str] = getattr(args, "store", None) or os.environ.get(STORE_ENV) or None
    return url


def durable_url(args: argparse.Namespace) -> str:
    """The store URL, unless there is none or it is ``memory:`` (checked before anything is
    imported or opened).

    Raises:
        UsageError: no URL, or ``memory:``.
    """
    url = store_url(args)
    if url is None:
        raise UsageError(f"--store is required (or set ${STORE_ENV}): {DURABLE}")
    if url.partition(":")[0].strip().lower() == "memory":
        raise UsageError(
            f"--store {redact(url)!r}: {PROG} {args.command} needs a durable store ({DURABLE}); "
            "memory: holds only one process's events"
        )
    return url


def open_store(args: argparse.Namespace, *, create: bool) -> Store:
    """The durable store of ``--store``.

    ``create=False`` (every command but ``worker`` and ``migrate``) runs no DDL: a command
    that only looks at or acts on a store never creates one (a mistyped path or database
    would otherwise show as an empty store) nor changes its schema.

    Raises:
        UsageError: no URL, ``memory:``, or a URL that names no store.
        CommandFailed: the store's driver is not installed.
        StoreError: the store could not be opened or reached, or (``create=False``) it has
            no schema or an older one.
    """
    url = durable_url(args)
    what = f"{PROG} {args.command}"
    try:
        store = from_url(url, create=create)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--store: {exc}") from None
    except ImportError as exc:  # psycopg 3 missing: the message says how to install it
        raise CommandFailed(str(exc)) from None
    try:
        require_durable(store, what)
        # Reach it now (PostgreSQL connects lazily), so that a wrong URL, password or
        # schema is one line and exit status 1 before anything else is done or logged.
        store.open()
    except ValueError as exc:
        store.close()
        raise UsageError(str(exc)) from None
    except BaseException:
        store.close()
        raise
    return store


@contextlib.contextmanager
def opened(args: argparse.Namespace, *, create: bool = False) -> Iterator[Store]:
    """``open_store``, closed at the end."""
    store = open_store(args, create=create)
    try:
        yield store
    finally:
        store.close()


def note(args: argparse.Namespace, text: str) -> None:
    """A remark on standard error (standard output stays what scripts parse)."""
    print(f"{PROG} {args.command}: {text}", file=sys.stderr, flush=True)


def note_if_unknown(args: argparse.Namespace, store: Store, emitter_id: str) -> None:
    """Say so on standard error when the store has never heard of ``emitter_id`` (a typo
    shows as nothing found, which is not an error for these functions)."""
    if not store.known(emitter_id):
        note(args, f"note: {store.describe()} knows no emitter {emitter_id!r}")
