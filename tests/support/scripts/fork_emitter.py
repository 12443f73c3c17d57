"""os.fork() with an attached emitter: parent and child each deliver their own events.

Usage: ``fork_emitter.py URL``. Before forking, the parent delivers ``before`` (so its
session holds a kept-alive connection) and queues ``queued`` on its paused emitter. The
child restarts the emitter, emits ``child`` and flushes; the parent restarts, emits
``after`` and flushes. Prints one JSON object per process on stdout (``role``, ``pid``,
``ids``, ``flushed``, ``threads``); the exit status is 0 when both flushed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback

import jsonlog

import webhooks_emitter


def report(role: str, ids: dict[str, str], flushed: bool) -> None:
    threads = sorted(t.name for t in threading.enumerate() if t.name.startswith("webhooks"))
    line = {"role": role, "pid": os.getpid(), "ids": ids, "flushed": flushed, "threads": threads}
    print(json.dumps(line), flush=True)


def main() -> int:
    jsonlog.install()
    config = webhooks_emitter.Config(
        sys.argv[1], secret="supersecret", backoff_start=0.001, backoff_limit=0.01
    )
    webhooks_emitter.attach("forked", "*", config)
    ids = {"before": webhooks_emitter.emit("before", {"pid": os.getpid()})}
    if not webhooks_emitter.flush(10):
        return 3
    webhooks_emitter.pause("forked")
    ids["queued"] = webhooks_emitter.emit("queued", {"pid": os.getpid()})

    pid = os.fork()
    if pid == 0:
        try:
            webhooks_emitter.restart("forked")
            child_ids = {"child": webhooks_emitter.emit("child", {"pid": os.getpid()})}
            flushed = webhooks_emitter.flush(10)
            report("child", child_ids, flushed)
            # Threads do not survive a fork: an emitter thread alive here was started here.
            alive = any(t.name == "webhooks-emitter:forked" for t in threading.enumerate())
            os._exit(0 if flushed and alive else 1)
        except BaseException:  # noqa: BLE001 - report anything, never run the parent's code
            traceback.print_exc()
            os._exit(2)

    webhooks_emitter.restart("forked")
    ids["after"] = webhooks_emitter.emit("after", {"pid": os.getpid()})
    flushed = webhooks_emitter.flush(10)
    _, status = os.waitpid(pid, 0)
    report("parent", ids, flushed)
    return 0 if flushed and os.waitstatus_to_exitcode(status) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
