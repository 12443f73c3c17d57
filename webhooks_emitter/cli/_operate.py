"""``worker``, ``status``, ``failed``, ``replay``, ``pause``, ``restart``, ``migrate``, ``purge``:
run and operate deliveries over a durable store, from any host that reaches it.

Each command is a thin layer over :mod:`webhooks_emitter._operator`, which the ``flask
webhooks`` and Django management commands share, so the three behave alike. What is only
here: the ``--store`` URL (or ``$WEBHOOKS_EMITTER_STORE``), ``--setup`` as a module or a file,
and errors as one line with the exit statuses of section 8 (a store error is 1, never a
traceback, and never shows the URL's password).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any, Callable, Optional

from .._encoding import check_name
from .._hub import WebhooksEmitter
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
from .._settings import load_callable, require_durable
from .._signals import on_stop_signals
from .._validate import integer_arg, number_arg
from .._worker import HTTP_HELP, parse_http, run_worker, serve_http
from ..exceptions import EmitterNotFoundError, WebhooksEmitterError
from ..stores import Store, StoreError, from_url
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

__all__ = ["STORE_ENV", "add_commands"]

#: Where ``--store`` is read from when it is not given (keeps a password out of ``ps``).
STORE_ENV = "WEBHOOKS_EMITTER_STORE"

_DURABLE = "sqlite:///path.db or postgresql://..."
_SHOWN_IDS = 10  # emitter ids named in the worker's first line; the rest are counted


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


def store_url(args: argparse.Namespace) -> Optional[str]:
    """The store URL the command was given (``--store`` or ``$WEBHOOKS_EMITTER_STORE``)."""
    url: Optional[str] = getattr(args, "store", None) or os.environ.get(STORE_ENV) or None
    return url


def _durable_url(args: argparse.Namespace) -> str:
    """The store URL, unless there is none or it is ``memory:`` (checked before anything is
    imported or opened).

    Raises:
        UsageError: no URL, or ``memory:``.
    """
    url = store_url(args)
    if url is None:
        raise UsageError(f"--store is required (or set ${STORE_ENV}): {_DURABLE}")
    if url.partition(":")[0].strip().lower() == "memory":
        raise UsageError(
            f"--store {url!r}: {PROG} {args.command} needs a durable store ({_DURABLE}); "
            "memory: holds only one process's events"
        )
    return url


def _open_store(args: argparse.Namespace, *, create: bool) -> Store:
    """The durable store of ``--store``.

    ``create=False`` (every command but ``worker`` and ``migrate``) runs no DDL: a command
    that only looks at or acts on a store never creates one (a mistyped path or database
    would otherwise show as an empty store) nor changes its schema.

    Raises:
        UsageError: no URL, ``memory:``, or a URL that names no store.
        CommandFailed: the store's driver is not installed.
        StoreError: the store could not be opened or reached, or (``create=False``) it has
            no schema or an older one.
    """
    url = _durable_url(args)
    what = f"{PROG} {args.command}"
    try:
        store = from_url(url, create=create)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--store: {exc}") from None
    except ImportError as exc:  # psycopg 3 missing: the message says how to install it
        raise CommandFailed(str(exc)) from None
    try:
        require_durable(store, what)
        # Reach it now (PostgreSQL connects lazily), so that a wrong URL, password or
        # schema is one line and exit status 1 before anything else is done or logged.
        store.open()
    except ValueError as exc:
        store.close()
        raise UsageError(str(exc)) from None
    except BaseException:
        store.close()
        raise
    return store


@contextlib.contextmanager
def _opened(args: argparse.Namespace, *, create: bool = False) -> Iterator[Store]:
    """``_open_store``, closed at the end."""
    store = _open_store(args, create=create)
    try:
        yield store
    finally:
        store.close()


def _note(args: argparse.Namespace, text: str) -> None:
    """A remark on standard error (standard output stays what scripts parse)."""
    print(f"{PROG} {args.command}: {text}", file=sys.stderr, flush=True)


def _note_if_unknown(args: argparse.Namespace, store: Store, emitter_id: str) -> None:
    """Say so on standard error when the store has never heard of ``emitter_id`` (a typo
    shows as nothing found, which is not an error for these functions)."""
    if not store.known(emitter_id):
        _note(args, f"note: {store.describe()} knows no emitter {emitter_id!r}")


# -- worker -------------------------------------------------------------------------------------


def _fault(spec: str, what: str, verbose: int) -> UsageError:
    """A ``--setup`` error; with ``-v`` the traceback of the exception being handled is
    printed first (the fault is in the user's code: its line matters)."""
    if verbose and sys.exc_info()[0] is not None:
        traceback.print_exc()
    hint = "" if verbose or sys.exc_info()[0] is None else " (-v shows the traceback)"
    return UsageError(f"--setup {spec!r}: {what}{hint}")


def _load_setup(spec: str, verbose: int) -> Callable[[WebhooksEmitter], object]:
    """The function ``--setup`` names (see ``_operator.load_callable``), checked to take one
    argument.

    Raises:
        UsageError: the spec is malformed, the module cannot be imported (whatever its code
            raised), it has no such name, or that is not a function of one argument.
    """
    try:
        found = load_callable(spec)
    except (TypeError, ValueError) as exc:
        cause = exc.__cause__
        if cause is not None:
            try:
                raise cause
            except BaseException:  # noqa: BLE001 - only to print the user's traceback
                raise _fault(spec, str(exc).split(": ", 1)[-1], verbose) from None
        raise UsageError(str(exc)) from None
    try:
        inspect.signature(found).bind(None)
    except TypeError:
        raise UsageError(
            f"--setup {spec!r}: {spec.rpartition(':')[2]}{inspect.signature(found)} cannot be "
            "called with one argument (the WebhooksEmitter to attach emitters to)"
        ) from None
    except ValueError:
        pass  # no signature to check (some builtins): the call will tell
    function: Callable[[WebhooksEmitter], object] = found
    return function


class _StopEvent(threading.Event):
    """An event that remembers when it was first set (the signal that stops the worker)."""

    at: Optional[float] = None

    def set(self) -> None:
        if self.at is None:
            self.at = time.monotonic()
        super().set()


def _await_releases(deadline: float) -> None:
    """Wait, until ``deadline`` at most, for the delivery threads to end.

    ``shutdown`` returns once every delivery thread has counted itself out, but the last
    one lets go of its emitter's lease *after* that (``Emitter._worker_ends``), so a process
    that exits at once may kill it mid-release and leave the lease to expire
    (``lease_timeout`` seconds without delivery for that emitter). Threads still in a try
    that outlives ``deadline`` are left, as the shutdown left them.
    """
    for thread in threading.enumerate():
        if (
            thread.name.startswith("webhooks-emitter:")
            and thread.name != "webhooks-emitter:housekeeping"
            and thread is not threading.current_thread()
        ):
            thread.join(max(deadline - time.monotonic(), 0.0))


def _worker(args: argparse.Namespace) -> int:
    """Deliver with the emitters ``--setup`` attaches until SIGTERM or SIGINT."""
    configure_logging(args.verbose, quiet_level=logging.WARNING)
    out = Console()
    stop = _StopEvent()
    _durable_url(args)
    # A worker must not die between attaching (which may take leases) and run_worker
    # (which handles the signals while it delivers): a signal meanwhile stops it as soon as
    # it starts.
    with on_stop_signals(lambda signum: stop.set()):
        function = _load_setup(args.setup, args.verbose)
        store = _open_store(args, create=True)
        try:
            instance = WebhooksEmitter(args.exit_timeout, store=store, deliver=True)
        except BaseException:
            store.close()
            raise
        server = None
        try:
            if args.http is not None:
                # Before anything is attached: a worker that cannot serve what its probes
                # ask delivers nothing (exit 2, one line saying why).
                try:
                    server = serve_http(instance, args.http)
                except WebhooksEmitterError as exc:
                    raise UsageError(str(exc)) from None
            try:
                function(instance)
            except StoreError:
                raise
            except Exception as exc:  # noqa: BLE001 - the user's code may raise anything
                raise _fault(
                    args.setup, f"raised {type(exc).__name__}: {exc}", args.verbose
                ) from None
            running = instance.list_emitters()
        except BaseException:
            if server is not None:
                server.close()
            instance.shutdown(0)
            _await_releases(time.monotonic() + args.exit_timeout)
            store.close()
            raise
        if not running:
            _note(
                args,
                f"warning: --setup {args.setup!r} attached no running emitter: "
                "there is nothing to deliver",
            )
        named = ", ".join(running[:_SHOWN_IDS])
        if len(running) > _SHOWN_IDS:
            named += f" and {len(running) - _SHOWN_IDS} more"

        def ready() -> None:
            out.say(
                f"worker: delivering for {len(running)} emitter(s)"
                f"{f' ({named})' if named else ''} over {store.describe()} as "
                f"{instance.lease.holder}; stop with SIGTERM or Ctrl-C"
            )
            if server is not None:
                out.say(f"worker: serving /metrics, /healthz and /readyz at {server.url}")

        code = run_worker(instance, args.exit_timeout, stop=stop, ready=ready, http=server)
    _await_releases((stop.at or time.monotonic()) + args.exit_timeout)
    held = instance.leases_held()
    if held:
        # A try was still under way: its thread records the outcome and lets go of the
        # lease if it ends before the process does; otherwise the lease expires.
        out.say(f"worker: stopped; {held} lease(s) left to expire (a try was under way)")
    else:
        store.close()
        out.say("worker: stopped; leases released")
    return code


# -- status, failed, replay -----------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    """Print the state of every emitter id the store knows."""
    configure_logging(args.verbose)
    with _opened(args) as store:
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
    with _opened(args) as store:
        events = list_failed(store, args.emitter_id, args.limit)
        if not events:
            _note_if_unknown(args, store, args.emitter_id)
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
    with _opened(args) as store:
        count = replay_failed(store, args.emitter_id, wanted or None)
        if count < len(wanted):
            missing = len(wanted) - count
            _note(
                args,
                f"note: {missing} of the {len(wanted)} request id(s) given are not failed "
                f"events of {args.emitter_id!r}",
            )
        elif not count:
            _note_if_unknown(args, store, args.emitter_id)
    Console().say(str(count))
    return EXIT_OK


# -- pause, restart -------------------------------------------------------------------------------


def _pause_or_restart(args: argparse.Namespace) -> int:
    """Pause or restart one emitter id for every process over the store."""
    configure_logging(args.verbose)
    emitter_id: str = args.emitter_id
    with _opened(args) as store:
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
    with _opened(args, create=True) as store:
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
    with _opened(args) as store:
        count = store.purge(args.emitter_id)
        if not count:
            _note_if_unknown(args, store, args.emitter_id)
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
        help=f"the durable store: {_DURABLE} (default: ${STORE_ENV}, which keeps a "
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
        _worker,
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
