"""``dashboard``: the operators' pages over a durable store, served on 127.0.0.1 until
SIGTERM or Ctrl-C (see :mod:`webhooks_emitter._dashboard`)."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from typing import Any

from .._dashboard._data import require_durable
from .._dashboard._server import DashboardServer, parse_bind
from ..stores import from_url
from ._common import EXIT_OK, FORMATTER, PROG, CommandFailed, Console, UsageError, configure_logging

__all__ = ["DEFAULT_BIND", "add_commands"]

#: Where the dashboard listens unless told: this host only.
DEFAULT_BIND = "127.0.0.1:8470"
_STORE_ENV = "WEBHOOKS_EMITTER_STORE"  # as the other operator commands read it
_DURABLE = "sqlite:///path.db or postgresql://..."


def _dashboard(args: argparse.Namespace) -> int:
    """Serve the pages until SIGTERM or SIGINT; exit 0."""
    configure_logging(args.verbose)
    url = args.store or os.environ.get(_STORE_ENV)
    if not url:
        raise UsageError(f"--store is required (or set ${_STORE_ENV}): {_DURABLE}")
    if url.partition(":")[0].strip().lower() == "memory":
        raise UsageError(
            f"--store {url!r}: {PROG} dashboard needs a durable store ({_DURABLE}); "
            "memory: holds only one process's events"
        )
    try:
        host, port = parse_bind(args.bind)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        # create=False: looking at a store never creates one (a mistyped path would
        # otherwise show as an empty store) nor changes its schema.
        store = from_url(url, create=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--store: {exc}") from None
    except ImportError as exc:  # psycopg 3 missing: the message says how to install it
        raise CommandFailed(str(exc)) from None
    try:
        try:
            require_durable(store, f"{PROG} dashboard")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        store.open()  # a wrong URL or password is one line and exit 1, before serving
        try:
            server = DashboardServer(store, host, port)
        except OSError as exc:
            raise CommandFailed(f"cannot listen on {args.bind}: {exc.strerror or exc}") from None
        return _serve(server, store.describe())
    finally:
        store.close()


def _serve(server: DashboardServer, where: str) -> int:
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}

    def handle(signum: int, frame: Any) -> None:
        stop.set()

    main = threading.current_thread() is threading.main_thread()
    if main:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handle)
    try:
        server.start()
        Console().say(f"dashboard of {where}: open {server.url} (stop with Ctrl-C or SIGTERM)")
        # Woken at once by the handler; the timeout only bounds a wait a signal might not cut.
        while not stop.wait(1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
    return EXIT_OK


def add_commands(commands: Any, verbose: argparse.ArgumentParser) -> None:
    """Add ``dashboard`` to ``commands`` (the subparsers action of the main parser);
    ``verbose`` is the parent parser of ``-v``."""
    parser = commands.add_parser(
        "dashboard",
        parents=[verbose],
        formatter_class=FORMATTER,
        help="web pages to watch and operate a durable store's emitters",
        description=(
            "Serve the operators' pages over --store: every emitter with its queued and\n"
            "failed events, and forms to pause, restart, replay and purge. Prints one line\n"
            "with the URL to open; it carries a random token (?token=...), which the browser\n"
            "then keeps in a cookie: a request without it gets 403. Serves until SIGTERM or\n"
            "Ctrl-C, then exits 0."
        ),
        epilog=(
            "Example:\n"
            f"  {PROG} dashboard --store sqlite:////var/lib/app/hooks.db\n"
            f"  ssh -L 8470:127.0.0.1:8470 host   # to open it from another machine\n\n"
            "It binds 127.0.0.1 unless --bind says otherwise: anyone who can reach the port\n"
            "and has the token can purge events; put it behind TLS to expose it further.\n"
            "Exit status: 0 stopped by a signal, 1 the store failed, 2 bad arguments."
        ),
    )
    parser.set_defaults(run=_dashboard)
    parser.add_argument(
        "--store",
        metavar="URL",
        help=f"the durable store: {_DURABLE} (default: ${_STORE_ENV}, which keeps a "
        "password out of the process list)",
    )
    parser.add_argument(
        "--bind",
        default=DEFAULT_BIND,
        metavar="HOST:PORT",
        help="where to listen (default: %(default)s; port 0 picks a free one)",
    )
