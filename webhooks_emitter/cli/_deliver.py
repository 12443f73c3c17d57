"""``worker``: deliver a durable store's events with the emitters ``--setup`` attaches, until
SIGTERM or Ctrl-C, then let go of the leases (optionally serving ``--http HOST:PORT``)."""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
import threading
import time
import traceback
from typing import Callable, Optional

from .._hub import WebhooksEmitter
from .._settings import load_callable
from .._signals import on_stop_signals
from .._worker import run_worker, serve_http
from ..exceptions import WebhooksEmitterError
from ..stores import StoreError
from ._common import Console, UsageError, configure_logging
from ._store import durable_url, note, open_store

__all__ = ["run"]

_SHOWN_IDS = 10  # emitter ids named in the worker's first line; the rest are counted


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


def run(args: argparse.Namespace) -> int:
    """Deliver with the emitters ``--setup`` attaches until SIGTERM or SIGINT."""
    configure_logging(args.verbose, quiet_level=logging.WARNING)
    out = Console()
    stop = _StopEvent()
    durable_url(args)
    # A worker must not die between attaching (which may take leases) and run_worker
    # (which handles the signals while it delivers): a signal meanwhile stops it as soon as
    # it starts.
    with on_stop_signals(lambda signum: stop.set()):
        function = _load_setup(args.setup, args.verbose)
        store = open_store(args, create=True)
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
            note(
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
