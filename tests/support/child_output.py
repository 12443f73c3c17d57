"""Reading a child process's output a line at a time, each wait bounded (for CLI tests)."""

from __future__ import annotations

import queue
import threading
from typing import IO, Optional

WAIT = 20.0  # generous: the machine may be busy; every wait ends as soon as its line comes


class Lines:
    """The lines a process writes to a pipe, read in a thread so that each wait can time out."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[Optional[str]] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def next(self, timeout: float = WAIT) -> str:
        """The next line; AssertionError if none comes in ``timeout`` s or the pipe closed."""
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line of output within {timeout} s") from None
        if line is None:
            raise AssertionError(f"the process closed its output after {self.seen}")
        self.seen.append(line)
        return line

    def rest(self) -> list[str]:
        """Every line still to come, once the process has ended."""
        self._thread.join(WAIT)
        lines: list[str] = []
        while True:
            line = self._queue.get_nowait()
            if line is None:
                return lines
            lines.append(line)
