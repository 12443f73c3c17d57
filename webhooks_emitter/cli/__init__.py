"""The ``webhooks-emitter`` command line.

Run ``webhooks-emitter --help`` (or ``python -m webhooks_emitter --help``) for the list, and
``webhooks-emitter <command> --help`` for each command's options and an example. One module
per group of commands:

``_develop``
    ``demo``, ``send``, ``listen`` and ``verify``: try webhooks from the shell.
``_operate``
    ``worker``, ``status``, ``failed``, ``replay``, ``pause``, ``restart``, ``migrate`` and
    ``purge``: deliver and operate over a durable store (SQLite or PostgreSQL); the worker
    command itself is in ``_deliver``, and ``--store`` is read and opened by ``_store``.
``_observe``
    ``health``: a probe of a store's health, for containers and monitoring.
``_dashboard``
    ``dashboard``: the operators' web pages over a durable store.

Exit status: 0 on success, 1 when a delivery, a signature check or a store operation failed
(a store error is one line on standard error, never a traceback), 2 for bad arguments
(reported as one line on standard error), 130 when interrupted during ``send`` or ``demo``
(``listen`` and ``worker`` end with 0 on Ctrl-C or SIGTERM: that is how they are stopped).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Sequence
from typing import Optional

import webhooks_emitter

from ..stores import StoreError
from . import _dashboard, _develop, _observe, _operate
from ._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    FORMATTER,
    PROG,
    SECRET_ENV,
    CommandFailed,
    Parser,
    Stop,
    UsageError,
    hide_passwords,
    restore_logging,
)
from ._develop import DEMO_EVENTS, DEMO_SECRET
from ._operate import STORE_ENV

__all__ = [
    "DEMO_EVENTS",
    "DEMO_SECRET",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "SECRET_ENV",
    "STORE_ENV",
    "CommandFailed",
    "UsageError",
    "build_parser",
    "main",
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``webhooks-emitter`` and its subcommands."""
    parser = Parser(
        prog=PROG,
        formatter_class=FORMATTER,
        description="Emit events as signed, retried outgoing HTTP webhooks; try it from the shell.",
        epilog=(
            "Start with the demo, then watch real deliveries:\n"
            f"  {PROG} demo\n"
            f"  {PROG} listen --port 8080 --secret s3cret              # one terminal\n"
            f"  {PROG} send http://127.0.0.1:8080/hooks --secret s3cret \\\n"
            "      --event order.paid --data '{\"order\": 1}'             # another\n\n"
            "Deliver and operate over a durable store (SQLite on one host, PostgreSQL on many):\n"
            f"  {PROG} worker --store sqlite:////var/lib/app/hooks.db --setup myapp.hooks:setup\n"
            f"  {PROG} status --store sqlite:////var/lib/app/hooks.db\n\n"
            "Exit status: 0 success, 1 delivery, check or store operation failed, "
            "2 bad arguments."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {webhooks_emitter.__version__}"
    )
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )

    verbose = Parser(add_help=False)
    verbose.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="show the library's log lines on standard error (-vv for debug)",
    )
    _develop.add_commands(commands, verbose)
    _operate.add_commands(commands, verbose)
    _observe.add_commands(commands, verbose)
    _dashboard.add_commands(commands, verbose)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    with contextlib.suppress(AttributeError, ValueError):
        # A terminal that cannot show a character gets an escape, not a crash.
        sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run

    def error(exc: BaseException) -> None:
        # Store errors name the store without its password; this also hides one that a
        # message might repeat from the URL as it was given.
        message = hide_passwords(str(exc), _operate.store_url(args))
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)

    try:
        return run(args)
    except UsageError as exc:
        error(exc)
        return EXIT_USAGE
    except (CommandFailed, StoreError) as exc:
        error(exc)
        return EXIT_FAILED
    except (KeyboardInterrupt, Stop):
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_FAILED  # the reader of standard output went away (see Console.say)
    finally:
        restore_logging()
