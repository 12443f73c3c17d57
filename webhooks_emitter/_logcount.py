"""Counts of repeated warnings, logged at most once per interval (house style 7)."""

from __future__ import annotations

import time

__all__ = ["WARNING_INTERVAL", "RateLimitedCount"]

#: The least seconds between two warnings of one kind for one emitter (or instance).
WARNING_INTERVAL = 5.0


class RateLimitedCount:
    """Counts occurrences and says when to log them: at most once per ``WARNING_INTERVAL``."""

    __slots__ = ("last", "unreported")

    def __init__(self) -> None:
        self.unreported = 0
        self.last = float("-inf")

    def add(self, count: int = 1) -> None:
        """Count ``count`` more occurrences."""
        self.unreported += count

    def take(self, *, force: bool) -> int:
        """The count to log now (0: not yet); call with the owner's lock held."""
        now = time.monotonic()
        if not self.unreported or (not force and now - self.last < WARNING_INTERVAL):
            return 0
        count, self.unreported = self.unreported, 0
        self.last = now
        return count
