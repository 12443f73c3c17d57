"""webhooks_emitter._signals: the one SIGTERM/SIGINT helper of the worker and listen commands.

The signals are real (``signal.raise_signal`` in this process's main thread, where pytest
runs each test); nothing is patched.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest

from webhooks_emitter import WebhooksEmitterError
from webhooks_emitter._signals import exit_on_sigterm, on_stop_signals


@pytest.fixture
def recording_handlers() -> Iterator[list[int]]:
    """SIGTERM and SIGINT handlers that record what they get, restored after the test."""
    got: list[int] = []
    saved = {
        sig: signal.signal(sig, lambda signum, frame: got.append(signum))
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield got
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_first_signal_asks_to_stop_and_a_second_gets_the_previous_handler(
    recording_handlers: list[int], signum: int
) -> None:
    """Inside, the first signal calls ``first`` (and not the program's handler); a second
    one reaches the handler the program had installed (Ctrl-C twice interrupts)."""
    firsts: list[int] = []
    with on_stop_signals(firsts.append) as installed:
        assert installed
        signal.raise_signal(signum)
        assert (firsts, recording_handlers) == ([signum], [])
        signal.raise_signal(signum)
        assert (firsts, recording_handlers) == ([signum], [signum])


def test_repeat_ignore_keeps_a_clean_up_from_being_cut_short(
    recording_handlers: list[int],
) -> None:
    """With ``repeat="ignore"`` later signals do nothing while inside."""
    firsts: list[int] = []
    with on_stop_signals(firsts.append, repeat="ignore"):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
    assert (firsts, recording_handlers) == ([signal.SIGINT], [])


def test_the_programs_handlers_are_back_on_leaving(recording_handlers: list[int]) -> None:
    """Leaving restores the handlers that were in place, signal or not."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    with on_stop_signals(lambda signum: None):
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
    assert {sig: signal.getsignal(sig) for sig in before} == before
    signal.raise_signal(signal.SIGTERM)
    assert recording_handlers == [signal.SIGTERM]


def test_outside_the_main_thread_it_installs_nothing() -> None:
    """Only the main thread may set handlers: elsewhere the helper yields False and
    changes nothing."""
    seen: list[object] = []

    def run() -> None:
        before = signal.getsignal(signal.SIGTERM)
        with on_stop_signals(lambda signum: None) as installed:
            seen.append(installed)
            seen.append(signal.getsignal(signal.SIGTERM) is before)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert seen == [False, True]


def test_an_unknown_repeat_is_refused() -> None:
    """``repeat`` must be "previous" or "ignore": a ValueError naming it otherwise."""
    with pytest.raises(ValueError, match="repeat"), on_stop_signals(print, repeat="twice"):
        pass


def test_exit_on_sigterm_raises_system_exit_143_where_sigterm_had_its_default() -> None:
    """Where SIGTERM still has its default action, exit_on_sigterm makes it raise
    SystemExit(143) in the main thread; a handler the program set is left alone."""
    saved = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert exit_on_sigterm() is True
        with pytest.raises(SystemExit) as caught:
            signal.raise_signal(signal.SIGTERM)
        assert caught.value.code == 143
        def mine(signum: int, frame: object) -> None:
            """The program's own handler."""

        signal.signal(signal.SIGTERM, mine)
        assert exit_on_sigterm() is False
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, saved)


def test_exit_on_sigterm_is_refused_outside_the_main_thread() -> None:
    """Signal handlers belong to the main thread: elsewhere WebhooksEmitterError."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            exit_on_sigterm()
        except WebhooksEmitterError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert len(errors) == 1 and "main thread" in str(errors[0])
