"""The one way this package handles SIGTERM and SIGINT while a command runs.

``worker`` (all three), ``listen`` and the CLI's worker set-up each want the same thing: the
first signal asks the command to stop cleanly, a second one does what it would have done
without us (Ctrl-C twice interrupts a slow shutdown), and the program's own handlers are
back once the command returns. Only the main thread may set handlers; elsewhere the helper
does nothing and the caller stops by other means (a ``threading.Event``).

:func:`exit_on_sigterm` is ``configure(handle_sigterm=True)``'s handler (``_hub`` installs
it), kept here so that every handler this package installs lives in one module.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any, Callable

from .exceptions import WebhooksEmitterError

__all__ = ["STOP_SIGNALS", "exit_on_sigterm", "on_stop_signals"]

#: The signals that stop a command.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def on_stop_signals(
    first: Callable[[int], None], *, repeat: str = "previous"
) -> Iterator[bool]:
    """While inside, the first SIGTERM or SIGINT calls ``first(signum)``.

    Args:
        first: called in the main thread, in the signal handler: keep it short (set an
            event) or raise (to unwind the main thread).
        repeat: what a later signal does: ``"previous"`` what the handler in place before
            did (the default action included: SIGTERM ends the process, SIGINT raises
            KeyboardInterrupt), ``"ignore"`` nothing (a clean-up must not be cut short).

    Yields:
        True when the handlers are in place (the main thread), False otherwise.
    """
    if repeat not in ("previous", "ignore"):
        raise ValueError(f"repeat must be 'previous' or 'ignore', got {repeat!r}")
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous: dict[int, Any] = {}
    received: list[int] = []

    def handle(signum: int, frame: Any) -> None:
        if not received:
            received.append(signum)
            first(signum)
            return
        if repeat == "ignore":
            return
        original = previous[signum]
        signal.signal(signum, original)
        if callable(original):
            original(signum, frame)
        elif original == signal.SIG_DFL:
            os.kill(os.getpid(), signum)

    for stop_signal in STOP_SIGNALS:
        previous[stop_signal] = signal.signal(stop_signal, handle)
    try:
        yield True
    finally:
        for signum, original in previous.items():
            if signal.getsignal(signum) is handle:
                signal.signal(signum, original)


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def exit_on_sigterm() -> bool:
    """Make SIGTERM raise ``SystemExit(143)`` in the main thread, where it still has
    Python's default action, so that the program unwinds and the exit hook flushes;
    returns whether the handler was installed (a handler the program set, or an ignored
    SIGTERM, is left as it is). Nothing is done inside the handler but the raise: the main
    thread may hold a lock.

    Raises:
        WebhooksEmitterError: called outside the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        raise WebhooksEmitterError("handle_sigterm must be configured from the main thread")
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    signal.signal(signal.SIGTERM, _raise_exit)
    return True
