"""Log the library's records to stderr as JSON lines, for tests that run a program.

Each line is ``LOG {"phase": ..., "level": ..., "logger": ..., "message": ..., "emitter_id":
..., "event": ..., "request_id": ...}``; ``phase`` is ``"main"`` until the program's own code
ends and ``"exit"`` while the interpreter's exit hooks run.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys

PREFIX = "LOG "
_phase = {"name": "main"}


class JsonLines(logging.Handler):
    """Writes each record as one JSON line on stderr, flushed at once."""

    def emit(self, record: logging.LogRecord) -> None:
        line = {
            "phase": _phase["name"],
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "emitter_id": getattr(record, "emitter_id", None),
            "event": getattr(record, "event", None),
            "request_id": getattr(record, "request_id", None),
        }
        sys.stderr.write(PREFIX + json.dumps(line) + "\n")
        sys.stderr.flush()


def install() -> None:
    """Send the ``webhooks_emitter`` loggers' records, INFO and up, to stderr as JSON lines.

    Call it after importing webhooks_emitter: the exit hook registered here then runs
    before the library's (atexit runs hooks last in, first out) and marks the exit phase.
    """
    logger = logging.getLogger("webhooks_emitter")
    logger.setLevel(logging.INFO)
    logger.addHandler(JsonLines())
    atexit.register(_phase.update, name="exit")
