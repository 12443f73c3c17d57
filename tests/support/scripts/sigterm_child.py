"""Emit a few events, then wait for a signal: for the SIGTERM tests (tests/test_sigterm.py).

Usage: ``sigterm_child.py URL COUNT [--handle] [--program-handler] [--ignore] [--check-only]
[--sqlite PATH] [--request-timeout SECONDS]``.

- ``--handle``: ``webhooks_emitter.configure(handle_sigterm=True)``.
- ``--program-handler``: before that, install the program's own SIGTERM handler, which
  ends the process with ``sys.exit(7)``.
- ``--ignore``: before that, ignore SIGTERM.
- ``--sqlite PATH``: a durable SQLite store (lease_timeout 1 s, so the next process takes
  over soon after this one dies).
- ``--request-timeout``: the emitter's ``request_timeout`` (20 s by default).
- ``--check-only``: print the line below and end at once, without emitting.

Prints one JSON line, ``{"request_ids": [...], "sigterm": "default" | "library" | "program" |
"ignored"}`` (what SIGTERM's handler is once configured), then blocks in the main thread until
a signal ends the process.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

import webhooks_emitter


def program_handler(signum: int, frame: Any) -> None:
    """The program's own handler: ends the process with status 7."""
    sys.exit(7)


def describe_sigterm() -> str:
    """Whose SIGTERM handler is in place."""
    handler = signal.getsignal(signal.SIGTERM)
    if handler is signal.SIG_DFL:
        return "default"
    if handler is signal.SIG_IGN:
        return "ignored"
    if handler is program_handler:
        return "program"
    return "library"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("count", type=int)
    parser.add_argument("--handle", action="store_true")
    parser.add_argument("--program-handler", action="store_true")
    parser.add_argument("--ignore", action="store_true")
    parser.add_argument("--check-only", action="store_true")
    parser.add_argument("--sqlite")
    parser.add_argument("--request-timeout", type=float, default=20.0)
    args = parser.parse_args()

    if args.program_handler:
        signal.signal(signal.SIGTERM, program_handler)
    if args.ignore:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.sqlite:
        from webhooks_emitter.stores.sqlite import SQLiteStore

        webhooks_emitter.configure(store=SQLiteStore(args.sqlite, lease_timeout=1.0))
    webhooks_emitter.configure(exit_timeout=20.0)
    if args.handle:
        webhooks_emitter.configure(handle_sigterm=True)
    request_ids = []
    if not args.check_only:
        config = webhooks_emitter.Config(
            args.url, backoff_start=0.001, request_timeout=args.request_timeout
        )
        webhooks_emitter.attach("child", "*", config)
        request_ids = [
            webhooks_emitter.emit("tick", {"n": number}) for number in range(args.count)
        ]
    print(json.dumps({"request_ids": request_ids, "sigterm": describe_sigterm()}), flush=True)
    if args.check_only:
        return
    threading.Event().wait()  # until a signal ends the process


if __name__ == "__main__":
    main()
