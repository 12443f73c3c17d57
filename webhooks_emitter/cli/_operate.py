"""``worker``, ``status``, ``failed``, ``replay``, ``pause``, ``restart``, ``migrate``, ``purge``:
run and operate deliveries over a durable store, from any host that reaches it.

Each command is a thin layer over :mod:`webhooks_emitter._reports` and
:mod:`webhooks_emitter._worker`, which the ``flask webhooks`` and Django management commands
share, so the three behave alike. What is only here: the ``--store`` URL (or
``$WEBHOOKS_EMITTER_STORE``, :mod:`._store`), ``--setup`` as a module or a file (the worker
command, :mod:`._deliver`), and errors as one line with the exit statuses of section 8 (a
store error is 1, never a traceback, and never shows the URL's password). Every command but
``worker`` acts on the store alone: none makes an instance or starts a thread.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from .._encoding import check_name
from .._reports import (
    failed_json,
    format_failed,
    format_status,
    list_failed,
    pause_emitter,
    replay_failed,
    restart_emitter,
    status,
)
from .._validate import integer_arg, number_arg
from .._worker import HTTP_HELP, parse_http
from ..exceptions import EmitterNotFoundError
from . import _deliver
from ._common import (
    EXIT_OK,
    FORMATTER,
    PROG,
    CommandFailed,
    Console,
    UsageError,
    configure_logging,
    shown,
)
from ._store import DURABLE, STORE_ENV, note, note_if_unknown, opened, store_url

__all__ = ["STORE_ENV", "add_commands", "store_url"]


# -- arguments ----------------------------------------------------------------------------------


def _name(argument: str) -> Callable[[str], str]:
    """An argparse ``type`` for an emitter or request id (the rules of ``emit``'s names)."""

    def check(text: str) -> str:
        try:
            return check_name(text, argument)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check


_positive_int = integer_arg(minimum=1)
_seconds = number_arg()


def _http(text: str) -> tuple[str, int]:
    """An argparse ``type`` for ``--http HOST:PORT``."""
    try:
        return parse_http(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- status, failed, replay -----------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    """Print the state of every emitter id the store knows."""
    configure_logging(args.verbose)
    with opened(args) as store:
        report = status(store)
    out = Console()
    if args.json:
        out.say(json.dumps(report, indent=2))
    else:
        out.say(*(shown(line) for line in format_status(report).splitlines()))
    return EXIT_OK


def _failed(args: argparse.Namespace) -> int:
    """Print the failed events of one emitter id, oldest first."""
    configure_logging(args.verbose)
    with opened(args) as store:
        events = list_failed(store, args.emitter_id, args.limit)
        if not events:
            note_if_unknown(args, store, args.emitter_id)
    out = Console()
    if args.json:
        out.say(json.dumps(failed_json(events), indent=2))
    else:
        out.say(*(shown(line) for line in format_failed(events).splitlines()))
    return EXIT_OK


def _replay(args: argparse.Namespace) -> int:
    """Queue failed events again; print how many."""
    configure_logging(args.verbose)
    wanted = list(dict.fromkeys(args.request_ids))
    with opened(args) as store:
        count = replay_failed(store, args.emitter_id, wanted or None)
        if count < len(wanted):
            missing = len(wanted) - count
            note(
                args,
                f"note: {missing} of the {len(wanted)} request id(s) given are not failed "
                f"events of {args.emitter_id!r}",
            )
        elif not count:
            note_if_unknown(args, store, args.emitter_id)
    Console().say(str(count))
    return EXIT_OK


# -- pause, restart -------------------------------------------------------------------------------


def _pause_or_restart(args: argparse.Namespace) -> int:
    """Pause or restart one emitter id for every process over the store."""
    configure_logging(args.verbose)
    emitter_id: str = args.emitter_id
    with opened(args) as store:
        # On the store alone: no instance, so nothing here can start a delivery thread.
        try:
            if args.command == "pause":
                was_paused = pause_emitter(store, emitter_id)
            else:
                was_paused = restart_emitter(store, emitter_id)
        except EmitterNotFoundError:
            raise CommandFailed(
                f"{store.describe()} knows no emitter {emitter_id!r} "
                f"(see {PROG} status for the ids it knows)"
            ) from None
        where = store.describe()
    out = Console()
    if args.command == "pause":
        already = " (it was paused already)" if was_paused else ""
        out.say(
            f"paused {emitter_id}{already}: no process over {where} starts a new try of it "
            "(tries under way finish); its events stay queued"
        )
    elif was_paused:
        out.say(f"restarted {emitter_id}: the process holding its lease delivers what is queued")
    else:
        out.say(f"{emitter_id} was not paused: nothing to do")
    return EXIT_OK


# -- migrate, purge -------------------------------------------------------------------------------


def _migrate(args: argparse.Namespace) -> int:
    """Create or upgrade the store's schema; print its version."""
    configure_logging(args.verbose)
    with opened(args, create=True) as store:
        version = store.migrate()
    Console().say(str(version))
    return EXIT_OK


def _purge(args: argparse.Namespace) -> int:
    """Delete every event of one emitter id (with --yes); print how many."""
    configure_logging(args.verbose)
    if not args.yes:
        raise UsageError(
            f"purge deletes every queued and failed event of {args.emitter_id!r} for good: "
            "add --yes to do it (nothing was deleted)"
        )
    with opened(args) as store:
        count = store.purge(args.emitter_id)
        if not count:
            note_if_unknown(args, store, args.emitter_id)
    Console().say(str(count))
    return EXIT_OK


# -- the parsers --------------------------------------------------------------------------------

_STORE_EXAMPLE = "sqlite:////var/lib/app/hooks.db"


def add_commands(commands: Any, verbose: argparse.ArgumentParser) -> None:
    """Add the operator commands to ``commands`` (the subparsers action of the main parser);
    ``verbose`` is the parent parser of ``-v``."""
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--store",
        metavar="URL",
        help=f"the durable store: {DURABLE} (default: ${STORE_ENV}, which keeps a "
        "password out of the process list)",
    )
    parents = [store, verbose]
    emitter_id = _name("EMITTER_ID")

    def command(name: str, run: Callable[[argparse.Namespace], int], **kwargs: Any) -> Any:
        parser = commands.add_parser(name, parents=parents, formatter_class=FORMATTER, **kwargs)
        parser.set_defaults(run=run)
        return parser

    worker = command(
        "worker",
        _deliver.run,
        help="deliver a durable store's events until SIGTERM or Ctrl-C",
        description=(
            "Make a WebhooksEmitter over --store, call the --setup function with it (that\n"
            "function attaches the emitters, as the web processes do with deliver=False), and\n"
            "deliver until SIGTERM or SIGINT. Then shut down within --exit-timeout seconds,\n"
            "letting go of its leases, and exit with status 0. Any number of workers, on any\n"
            "number of hosts (PostgreSQL), may run at once: each emitter is delivered by one of\n"
            "them at a time, in order. The first line printed says what it delivers and names\n"
            "this process as the status command shows lease holders (host:pid). The library's\n"
            "warnings and errors go to standard error (-v adds its INFO lines)."
        ),
        epilog=(
            "Example (myapp/hooks.py defines setup(instance), which calls instance.attach):\n"
            f"  {PROG} worker --store {_STORE_EXAMPLE} --setup myapp.hooks:setup\n"
            f"  {PROG} worker --store {_STORE_EXAMPLE} --setup deploy/hooks.py:setup\n\n"
            "Exit status: 0 stopped by a signal, 1 the store failed, 2 bad arguments (a --setup\n"
            "that cannot be imported or called included)."
        ),
    )
    worker.add_argument(
        "--setup",
        required=True,
        metavar="MODULE:FUNCTION",
        help="the function that attaches the emitters, called with the worker's "
        "WebhooksEmitter: package.module:function or path/to/file.py:function (the current "
        "directory is on sys.path)",
    )
    worker.add_argument(
        "--exit-timeout",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="the most the shutdown may spend delivering after the signal (default: "
        "%(default)s)",
    )
    worker.add_argument("--http", type=_http, metavar="HOST:PORT", help=HTTP_HELP)

    status_parser = command(
        "status",
        _status,
        help="per emitter: queued, failed, paused, oldest queued event, lease holder",
        description=(
            "For every emitter id the store knows: events queued (every process's), failed\n"
            "events kept, whether it is paused, the age of its oldest queued event, and the\n"
            "process (host:pid) that holds its lease, if any. Never changes the store."
        ),
        epilog=(
            "Example:\n"
            f"  {PROG} status --store {_STORE_EXAMPLE} --json\n\n"
            "--json prints one JSON object keyed by emitter id; each value has queued, failed,\n"
            "paused, oldest_queued_age (seconds, or null) and lease_holder (or null).\n"
            "Exit status: 0 shown, 1 the store failed, 2 bad arguments."
        ),
    )
    status_parser.add_argument("--json", action="store_true", help="print one JSON object")

    failed = command(
        "failed",
        _failed,
        help="list the events an emitter gave up, oldest first",
        description=(
            "List the failed events (dead letters) of EMITTER_ID, oldest first: when each was\n"
            "given up, its request id, event, tries and last status or error."
        ),
        epilog=(
            "Example:\n"
            f"  {PROG} failed --store {_STORE_EXAMPLE} billing --json\n\n"
            "--json prints a JSON list of objects with emitter_id, event, request_id, attempts,\n"
            "status_code, error, failed_at (ISO 8601) and body (as text).\n"
            "Exit status: 0 listed (none is not an error), 1 the store failed, 2 bad arguments."
        ),
    )
    failed.add_argument("emitter_id", metavar="EMITTER_ID", type=emitter_id)
    failed.add_argument("--json", action="store_true", help="print a JSON list")
    failed.add_argument(
        "--limit",
        type=_positive_int,
        default=100,
        metavar="N",
        help="show at most N events (default: %(default)s)",
    )

    replay = command(
        "replay",
        _replay,
        help="queue an emitter's failed events again; prints how many",
        description=(
            "Queue the failed events of EMITTER_ID again (all of them, or those REQUEST_IDs),\n"
            "at the tail of its queue in their original order, with a fresh count of tries and\n"
            "the same delivery ids. The process holding the emitter's lease delivers them.\n"
            "Prints how many were queued."
        ),
        epilog=(
            "Example:\n"
            f"  {PROG} replay --store {_STORE_EXAMPLE} billing\n"
            f"  {PROG} replay --store {_STORE_EXAMPLE} billing 6f1c0e1a-... 9b2d...\n\n"
            "Exit status: 0 done, 1 the store failed, 2 bad arguments."
        ),
    )
    replay.add_argument("emitter_id", metavar="EMITTER_ID", type=emitter_id)
    replay.add_argument(
        "request_ids",
        metavar="REQUEST_ID",
        nargs="*",
        type=_name("REQUEST_ID"),
        help="only these failed events (default: all of them)",
    )

    for name, run, summary, effect in (
        (
            "pause",
            _pause_or_restart,
            "stop delivering an emitter, in every process over the store",
            "Within a second no process starts a new try of EMITTER_ID (tries under way\n"
            "finish). Its events stay queued, and events emitted meanwhile are queued too.",
        ),
        (
            "restart",
            _pause_or_restart,
            "resume a paused emitter, in every process over the store",
            "The process holding the lease of EMITTER_ID delivers what is queued, in order,\n"
            "at once (a backoff or Retry-After wait is cut short). Not paused: nothing to do.",
        ),
    ):
        parser = command(
            name,
            run,
            help=summary,
            description=f"{effect}\nAn id the store does not know is an error.",
            epilog=(
                f"Example:\n  {PROG} {name} --store {_STORE_EXAMPLE} billing\n\n"
                "Exit status: 0 done, 1 unknown emitter id or the store failed, "
                "2 bad arguments."
            ),
        )
        parser.add_argument("emitter_id", metavar="EMITTER_ID", type=emitter_id)

    command(
        "migrate",
        _migrate,
        help="create or upgrade the store's schema; prints its version",
        description=(
            "Create the store's tables (and the SQLite file), or upgrade older ones to this\n"
            "library's schema; safe to run again and from several hosts at once. Prints the\n"
            "schema version (a number). The other commands, and stores made with\n"
            "create=False, never run DDL: run this first, as a role that may create tables."
        ),
        epilog=(
            "Example:\n"
            f"  {PROG} migrate --store postgresql://admin@db.internal/app\n\n"
            "Exit status: 0 done, 1 the store refused (a schema newer than this library\n"
            "understands included), 2 bad arguments."
        ),
    )

    purge = command(
        "purge",
        _purge,
        help="delete every queued and failed event of an emitter (needs --yes)",
        description=(
            "Delete every event stored for EMITTER_ID, queued and failed, for good; prints how\n"
            "many. Without --yes nothing is deleted (exit status 2)."
        ),
        epilog=(
            "Example:\n"
            f"  {PROG} purge --store {_STORE_EXAMPLE} billing --yes\n\n"
            "Exit status: 0 done, 1 the store failed, 2 bad arguments or no --yes."
        ),
    )
    purge.add_argument("emitter_id", metavar="EMITTER_ID", type=emitter_id)
    purge.add_argument("--yes", action="store_true", help="really delete them")
