"""``webhooks-emitter health``: the store's side of a health check, for container probes."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from .._health import Health, stale_emitters
from .._validate import number_arg
from ..stores import StoreError
from . import _store
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    FORMATTER,
    PROG,
    CommandFailed,
    Console,
    configure_logging,
    hide_passwords,
)

__all__ = ["add_commands"]

_STORE_EXAMPLE = "sqlite:////var/lib/app/hooks.db"


def _health(args: argparse.Namespace) -> int:
    """Print ``ok`` or one line per problem (or one JSON object); exit 0 healthy, 1 not."""
    configure_logging(args.verbose)
    problems: list[str] = []
    try:
        # Runs no DDL: a missing or older schema is a StoreError, as is an unreachable store.
        with _store.opened(args) as store:
            if args.max_age is not None:
                problems += stale_emitters(store.states(), args.max_age, time.time())
    except (StoreError, CommandFailed) as exc:
        problems.append(hide_passwords(str(exc), _store.store_url(args)))
    health = Health.of(problems)  # one line each
    console = Console()
    if args.json:
        console.say(json.dumps({"ok": health.ok, "problems": health.problems}))
    else:
        console.say(*(health.problems or ["ok"]))
    return EXIT_OK if health.ok else EXIT_FAILED


#: ``--max-age``: a finite number of seconds >= 0 (the shared validator).
_max_age = number_arg()


def add_commands(commands: Any, verbose: argparse.ArgumentParser) -> None:
    """Add ``health`` to ``commands`` (the subparsers action of the main parser); ``verbose``
    is the parent parser of ``-v``."""
    parser = commands.add_parser(
        "health",
        parents=[verbose],
        formatter_class=FORMATTER,
        help="check that a durable store is reachable and current (for probes)",
        description=(
            "Check the store's side of a deployment: the store answers, and its schema is\n"
            "present and current (this command never creates nor upgrades it). With\n"
            "--max-age, also every running emitter the store knows whose oldest queued event\n"
            "is older than SECONDS (paused emitters are left out). Prints ok, or one line per\n"
            "problem naming the emitter id where there is one."
        ),
        epilog=(
            "Example (a container's liveness or readiness probe):\n"
            f"  {PROG} health --store {_STORE_EXAMPLE} --max-age 300\n"
            f"  {PROG} health --store {_STORE_EXAMPLE} --json\n\n"
            '--json prints {"ok": true|false, "problems": ["...", ...]}.\n'
            "Exit status: 0 healthy, 1 not healthy, 2 bad arguments."
        ),
    )
    parser.set_defaults(run=_health)
    parser.add_argument(
        "--store",
        metavar="URL",
        help="the durable store: sqlite:///path.db or postgresql://... (default: "
        f"${_store.STORE_ENV}, which keeps a password out of the process list)",
    )
    parser.add_argument(
        "--max-age",
        type=_max_age,
        default=None,
        metavar="SECONDS",
        help="not healthy when a running emitter's oldest queued event is older than this",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
