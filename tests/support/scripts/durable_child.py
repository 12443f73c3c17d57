"""One process over a shared SQLite store, for the end-to-end tests (tests/test_durable_sqlite.py).

Usage: ``durable_child.py DB URL [options]``. Attaches one emitter (``--emitter``, default
``durable``) to every event over ``SQLiteStore(DB)`` (lease_timeout 1 s by default, so the
next process takes over soon after this one dies), emits ``--emit N`` events (``{"proc":
TAG, "n": i}``, in that order), then does what ``--then`` says:

- ``block``: wait in the main thread until a signal ends the process (the test kills it);
- ``kill``: SIGKILL itself at once, right after printing the ids (an acknowledged emit);
- ``flush``: ``flush(--flush-timeout)``, print the result, and end normally;
- ``exit``: end normally (the exit hook does what it does);
- ``commands``: read commands from stdin, one a line, until ``exit`` or end of input:
  ``emit N``, ``flush SECONDS``, ``state``, ``exit``.

With ``--wait-go`` it reads one line from stdin before emitting (to start several processes
together). ``--no-deliver`` makes a ``deliver=False`` instance (it only stores events).

Everything printed on stdout is one JSON object a line, flushed at once:

- ``{"ready": {"pid": ..., "holder": "host:pid"}}`` once attached;
- ``{"ids": [...], "stats": {...}}`` once the emits returned (``"error"`` added when one
  raised StoreError: the ids are those emitted before it);
- ``{"delivery": {"request_id", "attempts", "delivered", "status_code"}}`` from
  ``on_delivery``, in the delivering thread;
- ``{"flushed": bool, "stats": {...}}`` after a flush;
- ``{"state": {"started": bool, "listed": [...], "stats": {...}}}`` for ``state``.

The library's log records go to stderr as JSON lines (``jsonlog``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any, Optional

import attrs
import jsonlog

from webhooks_emitter import Config, DeliveryResult, StoreError, WebhooksEmitter
from webhooks_emitter.stores import SQLiteStore

_out = threading.Lock()


def say(**fields: Any) -> None:
    """Print one JSON line on stdout, whole, and flush it."""
    line = json.dumps(fields) + "\n"
    with _out:
        sys.stdout.write(line)
        sys.stdout.flush()


def stats_of(hooks: WebhooksEmitter, emitter_id: str) -> dict[str, Any]:
    """The emitter's stats as a dict."""
    return attrs.asdict(hooks.stats(emitter_id))


def on_delivery(result: DeliveryResult) -> None:
    """Report every outcome on stdout."""
    say(
        delivery={
            "request_id": result.request_id,
            "attempts": result.attempts,
            "delivered": result.delivered,
            "status_code": result.status_code,
        }
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("url")
    parser.add_argument("--emitter", default="durable")
    parser.add_argument("--event", default="tick")
    parser.add_argument("--tag", default="p")
    parser.add_argument("--emit", type=int, default=0)
    parser.add_argument(
        "--then", default="block", choices=("block", "kill", "flush", "exit", "commands")
    )
    parser.add_argument("--flush-timeout", type=float, default=30.0)
    parser.add_argument("--wait-go", action="store_true")
    parser.add_argument("--no-deliver", action="store_true")
    parser.add_argument("--lease-timeout", type=float, default=1.0)
    parser.add_argument("--store-timeout", type=float, default=5.0)
    parser.add_argument("--exit-timeout", type=float, default=5.0)
    parser.add_argument("--idle-timeout", type=float, default=30.0)
    parser.add_argument("--max-attempts", type=int)
    parser.add_argument("--retry-schedule", help="comma-separated seconds")
    parser.add_argument("--backoff-start", type=float, default=0.001)
    parser.add_argument("--request-timeout", type=float, default=2.0)
    parser.add_argument("--max-queue-size", type=int, default=10_000)
    parser.add_argument("--secret")
    return parser.parse_args()


def make_config(args: argparse.Namespace) -> Config:
    fields: dict[str, Any] = {
        "backoff_start": args.backoff_start,
        "backoff_limit": max(args.backoff_start, 0.01),
        "request_timeout": args.request_timeout,
        "max_queue_size": args.max_queue_size,
        "on_delivery": on_delivery,
    }
    if args.secret is not None:
        fields["secret"] = args.secret
    if args.retry_schedule:
        fields["retry_schedule"] = tuple(float(s) for s in args.retry_schedule.split(","))
    if args.max_attempts is not None:
        fields["max_attempts"] = args.max_attempts
    return Config(args.url, **fields)


def emit(hooks: WebhooksEmitter, args: argparse.Namespace, count: int, start: int) -> int:
    """Emit ``count`` events numbered from ``start``; print their ids; return the next number."""
    ids = []
    error: Optional[str] = None
    for n in range(start, start + count):
        try:
            ids.append(hooks.emit(args.event, {"proc": args.tag, "n": n}))
        except StoreError as exc:
            error = str(exc)
            break
    fields: dict[str, Any] = {"ids": ids, "stats": stats_of(hooks, args.emitter)}
    if error is not None:
        fields["error"] = error
    say(**fields)
    return start + count


def commands(hooks: WebhooksEmitter, args: argparse.Namespace, number: int) -> None:
    """Serve the stdin commands until ``exit`` or end of input."""
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "emit":
            number = emit(hooks, args, int(words[1]), number)
        elif words[0] == "flush":
            flushed = hooks.flush(float(words[1]))
            say(flushed=flushed, stats=stats_of(hooks, args.emitter))
        elif words[0] == "state":
            say(
                state={
                    "started": hooks.is_started(args.emitter),
                    "listed": hooks.list_emitters(),
                    "stats": stats_of(hooks, args.emitter),
                }
            )
        elif words[0] == "exit":
            return
        else:
            raise SystemExit(f"unknown command {line!r}")


def main() -> None:
    args = parse()
    jsonlog.install()
    store = SQLiteStore(args.db, lease_timeout=args.lease_timeout, timeout=args.store_timeout)
    hooks = WebhooksEmitter(
        exit_timeout=args.exit_timeout,
        store=store,
        deliver=not args.no_deliver,
        idle_timeout=args.idle_timeout,
    )
    hooks.attach(args.emitter, "*", make_config(args))
    say(ready={"pid": os.getpid(), "holder": hooks.lease.holder})
    if args.wait_go:
        sys.stdin.readline()
    number = emit(hooks, args, args.emit, 0) if args.emit else 0
    if args.then == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif args.then == "block":
        threading.Event().wait()  # until a signal ends the process
    elif args.then == "flush":
        flushed = hooks.flush(args.flush_timeout)
        say(flushed=flushed, stats=stats_of(hooks, args.emitter))
    elif args.then == "commands":
        commands(hooks, args, number)


if __name__ == "__main__":
    main()
