"""One process of an application on a PostgreSQL store: a worker or a web process.

For the end-to-end tests of tests/test_durable_postgres.py and the benchmark
benchmarks/bench_postgres_delivery.py. Usage::

    pg_node.py STORE_URL URL_TEMPLATE [--web] [--emitters 8] [--event order.paid]
               [--lease-timeout 30] [--timeout 5] [--secret S] [--max-attempts 3]
               [--max-in-flight 1] [--request-timeout 5] [--wait-go]
               [--url EMITTER=URL ...]

It makes ``WebhooksEmitter(store=...)`` (``deliver=False`` with ``--web``) over a
:class:`PostgresStore` with the given ``lease_timeout`` and ``timeout``, and attaches the
emitters ``e0`` ... ``e<N-1>`` to ``event``, each to ``URL_TEMPLATE.format(emitter=id)``
(``http://127.0.0.1:PORT/hooks/{emitter}``: one path per emitter at the receiver), or to
the URL given for it by ``--url``. Every
request carries the header ``X-Worker: <pid>``, so that the receiver can tell the processes
apart. With ``--wait-go`` it makes the instance, says it is ready and attaches only after a
``go`` line on stdin (for processes that must start at once).

Talks in JSON lines. It prints ``{"ready": true, "pid": ..., "t": ...}`` once attached (``t``
is ``time.monotonic()``, which every process of the machine shares), then reads one command
per line on stdin and answers each with lines, the last one holding ``"done": <op>``:

``{"op": "emit", "first": 0, "count": 400, "emitters": ["e0", ...], "rate": 0}``
    emits events ``first`` ... ``first + count - 1``: event ``n`` goes to
    ``emitters[n % len(emitters)]`` (``to=``), with payload ``{"emitter": id, "n": n}`` and
    request id ``ev-<n>``; ``rate`` > 0 spaces them to that many per second. One line per
    event: ``{"n": n, "ok": true, "t": ...}``, or ``"ok": false`` and ``"error"`` when
    ``emit`` raised (a :class:`StoreError` while the database is away).
``{"op": "pause", "emitter": "e0"}``, ``{"op": "restart", "emitter": "e0"}``
    pauses or restarts it; ``t`` is when the call returned.
``{"op": "flush", "timeout": 1.0}``
    ``flush(timeout)``; answers ``{"result": bool, "elapsed": seconds}``.
``{"op": "exit", "timeout": 5.0}`` (or the end of stdin)
    ``shutdown(timeout)``, then the process ends with status 0.

The library's warnings go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from typing import Any

from webhooks_emitter import Config, StoreError, WebhooksEmitter
from webhooks_emitter.stores import from_url


def say(**line: Any) -> None:
    """Print one JSON line on stdout, flushed at once."""
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def emit(hub: WebhooksEmitter, event: str, command: dict[str, Any]) -> None:
    """The ``emit`` command: events ``first`` ... ``first + count - 1``, paced by ``rate``."""
    emitters = command["emitters"]
    first = int(command.get("first", 0))
    count = int(command["count"])
    rate = float(command.get("rate", 0))
    pace = threading.Event()  # never set: its wait spaces the emits
    start = time.monotonic()
    for n in range(first, first + count):
        if rate > 0:
            ahead = start + (n - first) / rate - time.monotonic()
            if ahead > 0:
                pace.wait(ahead)
        emitter = emitters[n % len(emitters)]
        try:
            hub.emit(event, {"emitter": emitter, "n": n}, f"ev-{n}", to=emitter)
        except StoreError as exc:
            say(n=n, ok=False, error=f"{type(exc).__name__}: {exc}", t=time.monotonic())
        else:
            say(n=n, ok=True, t=time.monotonic())
    say(done="emit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("store")
    parser.add_argument("url_template")
    parser.add_argument("--web", action="store_true", help="deliver=False")
    parser.add_argument("--emitters", type=int, default=8)
    parser.add_argument("--event", default="order.paid")
    parser.add_argument("--lease-timeout", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--secret")
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--max-in-flight", type=int, default=1)
    parser.add_argument("--request-timeout", type=float, default=5.0)
    parser.add_argument("--wait-go", action="store_true")
    parser.add_argument("--url", action="append", default=[], metavar="EMITTER=URL")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format=f"%(asctime)s pid {os.getpid()} %(levelname)s %(name)s: %(message)s",
    )

    store = from_url(args.store, lease_timeout=args.lease_timeout, timeout=args.timeout)
    hub = WebhooksEmitter(store=store, deliver=not args.web, exit_timeout=2.0)
    if args.wait_go:
        say(ready=False, pid=os.getpid(), t=time.monotonic())
        if sys.stdin.readline().strip() != "go":
            return
    urls = dict(item.split("=", 1) for item in args.url)
    for index in range(args.emitters):
        emitter_id = f"e{index}"
        config = Config(
            urls.get(emitter_id) or args.url_template.format(emitter=emitter_id),
            secret=args.secret,
            backoff_start=0.001,
            backoff_limit=0.05,
            request_timeout=args.request_timeout,
            max_attempts=args.max_attempts,
            max_in_flight=args.max_in_flight,
            additional_headers={"X-Worker": str(os.getpid())},
        )
        hub.attach(emitter_id, args.event, config)
    say(ready=True, pid=os.getpid(), t=time.monotonic())

    timeout = 5.0
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "emit":
            emit(hub, args.event, command)
        elif op in ("pause", "restart"):
            getattr(hub, op)(command["emitter"])
            say(done=op, t=time.monotonic())
        elif op == "flush":
            started = time.monotonic()
            result = hub.flush(float(command["timeout"]))
            say(done="flush", result=result, elapsed=time.monotonic() - started)
        elif op == "exit":
            timeout = float(command.get("timeout", timeout))
            break
        else:
            raise SystemExit(f"unknown command {op!r}")
    hub.shutdown(timeout)
    say(done="exit")


if __name__ == "__main__":
    main()
