"""Emit 8 KB events over an SQLite store on a tiny file system until the disk is full.

Usage: ``durable_full_disk.py PATH``, run by tests/test_durable_sqlite.py inside a private
mount namespace where PATH's directory is a 512 KB tmpfs. A ``deliver=False`` instance has
two emitters subscribed to the event, so every event is stored twice in one transaction.
Prints one JSON object: ``stored`` (emits that returned), ``error`` (the StoreError message
of the emit that failed), ``refused`` (that emit's request id), ``queued`` (each emitter's
``stats().queued`` afterwards) and ``found`` (whether any table of the file holds the
refused request id).
"""

from __future__ import annotations

import json
import sqlite3
import sys

from webhooks_emitter import Config, StoreError, WebhooksEmitter
from webhooks_emitter.stores import SQLiteStore


def holds(path: str, value: str) -> bool:
    """Whether any column of any table of the file equals ``value``."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        tables = [row[0] for row in names.fetchall()]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                if value in row:
                    return True
        return False
    finally:
        conn.close()


def main() -> None:
    path = sys.argv[1]
    hooks = WebhooksEmitter(store=SQLiteStore(path), deliver=False)
    config = Config("http://127.0.0.1:9/hooks", max_queue_size=10**6)
    hooks.attach("a", "tick", config)
    hooks.attach("b", "tick", config)
    stored = 0
    error = refused = None
    while stored < 100_000:
        request_id = f"req-{stored:06d}"
        try:
            hooks.emit("tick", {"n": stored, "pad": "x" * 8000}, request_id=request_id)
        except StoreError as exc:
            error, refused = str(exc), request_id
            break
        stored += 1
    queued = [hooks.stats(emitter_id).queued for emitter_id in ("a", "b")]
    found = refused is not None and holds(path, refused)
    report = {"stored": stored, "error": error, "refused": refused, "queued": queued}
    print(json.dumps({**report, "found": found}), flush=True)


if __name__ == "__main__":
    main()
