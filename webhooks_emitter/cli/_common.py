"""What every group of subcommands shares: exit statuses, errors, the parser, output, logging."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
from typing import NoReturn, Optional, TextIO

from .._redaction import hide_passwords

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "FORMATTER",
    "PROG",
    "SECRET_ENV",
    "CommandFailed",
    "Console",
    "Parser",
    "Stop",
    "UsageError",
    "configure_logging",
    "restore_logging",
    "hide_passwords",
    "shown",
    "tries",
    "usage_message",
]

PROG = "webhooks-emitter"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Where ``--secret`` is read from when it is not given (keeps it out of ``ps`` and history).
SECRET_ENV = "WEBHOOKS_EMITTER_SECRET"

FORMATTER = argparse.RawDescriptionHelpFormatter

# Config fields named as the command line's options, so errors name what the user typed.
_OPTION_OF_FIELD = {
    "url": "URL",
    "secret": "--secret",
    "header_identifier": "--header-identifier",
    "max_attempts": "--max-attempts",
    "request_timeout": "--timeout",
    "backoff_start": "--backoff",
    "backoff_limit": "--backoff-limit",
    "additional_headers": "--header",
    "event": "--event",
    "request_id": "--request-id",
    "tolerance": "--tolerance",
}

# Control characters a remote sender could use to drive the terminal (escape sequences):
# shown as \xNN. Bodies keep their tabs and newlines.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(32), *range(127, 160))}
_BODY_ESCAPES = {code: text for code, text in _ESCAPES.items() if chr(code) not in "\t\n"}

class UsageError(Exception):
    """A bad argument found after parsing: one line on standard error, exit status 2."""


class CommandFailed(Exception):
    """An operation that could not be done: one line on standard error, exit status 1."""


class Stop(Exception):
    """Raised in the main thread by SIGINT or SIGTERM to end ``listen`` cleanly."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on standard error (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        # argparse repeats unrecognized arguments, which may be a store URL with a password.
        message = hide_passwords(message)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Console:
    """Writes whole lines to standard output from any thread, flushed at once."""

    def __init__(self) -> None:
        self._stream: TextIO = sys.stdout
        self._lock = threading.Lock()
        self.broken = False

    def say(self, *lines: str) -> None:
        """Write ``lines`` together (never interleaved with another thread's) and flush."""
        with self._lock:
            if self.broken:
                return
            try:
                for line in lines:
                    self._stream.write(line + "\n")
                self._stream.flush()
            except BrokenPipeError:
                # The reader went away (``| head``): what is left, and what Python flushes
                # at exit, goes to devnull. The main thread stops; other threads' lines are
                # dropped (``listen`` watches ``broken`` and stops).
                self.broken = True
                with contextlib.suppress(OSError, ValueError):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())
                if threading.current_thread() is threading.main_thread():
                    raise


def shown(text: Optional[str], *, body: bool = False) -> str:
    """``text`` from the network (or a store) made safe for a terminal; ``-`` when absent."""
    if text is None:
        return "-"
    return text.translate(_BODY_ESCAPES if body else _ESCAPES)


def usage_message(exc: BaseException) -> str:
    """The message of a ``ValueError``/``TypeError`` with the Config field named as its option."""
    message = str(exc)
    field, space, rest = message.partition(" ")
    if space and field in _OPTION_OF_FIELD:
        return f"{_OPTION_OF_FIELD[field]} {rest}"
    return message


def tries(count: int) -> str:
    """``1 try``, ``2 tries``."""
    return f"{count} {'try' if count == 1 else 'tries'}"


_log_handler: Optional[logging.Handler] = None
_log_level: Optional[int] = None  # the logger's level before configure_logging changed it


def configure_logging(verbosity: int, *, quiet_level: Optional[int] = None) -> None:
    """Show the library's own log lines on standard error with ``-v`` (INFO) or ``-vv`` (DEBUG).

    Without ``-v`` they are not shown (every outcome they report is printed by the command),
    unless ``quiet_level`` is given: then lines from that level up are (the worker shows its
    warnings and errors, as a service should). :func:`restore_logging` undoes it.
    """
    global _log_handler, _log_level
    logger = logging.getLogger("webhooks_emitter")
    restore_logging()  # main() may run more than once in a process
    _log_level = logger.level
    if verbosity or quiet_level is not None:
        _log_handler = logging.StreamHandler(sys.stderr)
        _log_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        if verbosity:
            logger.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)
        else:
            assert quiet_level is not None
            logger.setLevel(quiet_level)
    else:
        _log_handler = logging.NullHandler()  # keeps logging's last-resort handler quiet
    logger.addHandler(_log_handler)


def restore_logging() -> None:
    """Take the handler and level :func:`configure_logging` set off the library's logger
    (``main`` returns with the logging of the program that called it as it was)."""
    global _log_handler, _log_level
    logger = logging.getLogger("webhooks_emitter")
    if _log_handler is not None:
        logger.removeHandler(_log_handler)
        _log_handler = None
    if _log_level is not None:
        logger.setLevel(_log_level)
        _log_level = None
