"""Open SQLite stores at the given paths and print how each attempt ended, as one JSON object.

Usage: ``durable_open.py UID PATH...``. With UID >= 0 the program first becomes that user
(root is not stopped by permissions, so a test running as root passes ``nobody``'s uid).
Each path is opened twice: as ``WebhooksEmitter(store="sqlite:///PATH")`` and as
``SQLiteStore(PATH)``. Prints ``{PATH: {"url": outcome, "store": outcome}}`` where an outcome
is ``"opened"`` or ``"StoreError: <message>"`` (or another exception's name and message).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Callable

from webhooks_emitter import StoreError, WebhooksEmitter
from webhooks_emitter.stores import SQLiteStore


def outcome(make: Callable[[], object]) -> str:
    """How one attempt to open ended."""
    try:
        make()
    except StoreError as exc:
        return f"StoreError: {exc}"
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        return f"{type(exc).__name__}: {exc}"
    return "opened"


def main() -> None:
    uid = int(sys.argv[1])
    if uid >= 0:  # the interpreter and the library are loaded: drop root now
        os.setgid(uid)
        os.setuid(uid)
    report = {}
    for path in sys.argv[2:]:
        report[path] = {
            "url": outcome(functools.partial(WebhooksEmitter, store="sqlite:///" + path)),
            "store": outcome(functools.partial(SQLiteStore, path)),
        }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
