"""A multiprocessing child started with the "fork" method delivers its own events.

Usage: ``multiprocessing_fork.py URL [--no-flush]``. The parent delivers ``before``, starts a
child that emits ``mp-child`` and flushes (exit code 0 if it flushed; with ``--no-flush`` it
just returns, and multiprocessing ends it with ``os._exit``, so only the library's
multiprocessing finalizer can deliver), then emits ``after``. Prints the parent's and
child's request ids as one JSON object on stdout.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys

import jsonlog

import webhooks_emitter


def child(queue: multiprocessing.Queue[str], flush: bool) -> None:
    queue.put(webhooks_emitter.emit("mp-child", {"pid": os.getpid()}))
    if flush and not webhooks_emitter.flush(10):
        sys.exit(3)


def main() -> int:
    jsonlog.install()
    config = webhooks_emitter.Config(
        sys.argv[1],
        request_timeout=2.0,
        secret="supersecret", backoff_start=0.001, backoff_limit=0.01
    )
    webhooks_emitter.attach("mp", "*", config)
    ids = {"before": webhooks_emitter.emit("before", {"pid": os.getpid()})}
    if not webhooks_emitter.flush(10):
        return 3
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = context.Queue()
    process = context.Process(target=child, args=(queue, "--no-flush" not in sys.argv))
    process.start()
    ids["mp-child"] = queue.get(timeout=20)
    process.join(20)
    ids["after"] = webhooks_emitter.emit("after", {"pid": os.getpid()})
    flushed = webhooks_emitter.flush(10)
    print(json.dumps({"ids": ids, "child_exitcode": process.exitcode, "flushed": flushed}))
    return 0 if flushed and process.exitcode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
