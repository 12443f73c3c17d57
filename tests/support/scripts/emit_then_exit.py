"""Attach one emitter, emit some events and end without flushing: the exit hook delivers.

Usage: ``emit_then_exit.py URL COUNT [--exit-timeout S] [--request-timeout S]
[--backoff-start S] [--pause] [--own-instance]``. With ``--own-instance`` the events go
through a ``WebhooksEmitter`` made inside a function and no longer referenced at exit.
Prints the request ids, in emit order, as one JSON list on stdout before the program's
code ends.
"""

from __future__ import annotations

import argparse
import json

import jsonlog

import webhooks_emitter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("count", type=int)
    parser.add_argument("--exit-timeout", type=float)
    parser.add_argument("--request-timeout", type=float, default=5.0)
    parser.add_argument("--backoff-start", type=float, default=0.001)
    parser.add_argument("--pause", action="store_true", help="pause the emitter before emitting")
    parser.add_argument(
        "--own-instance", action="store_true", help="use a WebhooksEmitter the program drops"
    )
    args = parser.parse_args()

    jsonlog.install()
    if args.exit_timeout is not None:
        webhooks_emitter.configure(exit_timeout=args.exit_timeout)
    config = webhooks_emitter.Config(
        args.url,
        secret="supersecret",
        request_timeout=args.request_timeout,
        backoff_start=args.backoff_start,
        backoff_limit=max(args.backoff_start, 0.01),
    )
    if args.own_instance:
        ids = emit_through_a_dropped_instance(config, args.count)
    else:
        webhooks_emitter.attach("exiting", "ev", config)
        if args.pause:
            webhooks_emitter.pause("exiting")
        ids = [webhooks_emitter.emit("ev", {"seq": seq}) for seq in range(args.count)]
    print(json.dumps(ids), flush=True)


def emit_through_a_dropped_instance(config: webhooks_emitter.Config, count: int) -> list[str]:
    """Emit through an instance whose last reference goes when this function returns."""
    hooks = webhooks_emitter.WebhooksEmitter()
    hooks.attach("exiting", "ev", config)
    return [hooks.emit("ev", {"seq": seq}) for seq in range(count)]


if __name__ == "__main__":
    main()
