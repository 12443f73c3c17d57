"""When an emit may skip the room check (``max_queue_size``) of the PostgreSQL store.

Private to :mod:`webhooks_emitter.stores.postgres`. The room check costs about a third of an
emit (two index probes, and a count when the queue may be full). Its query also answers the
queue's depth (an upper bound: the range of its seqs), and while that depth plus the emits
this process made since stays below half of ``max_queue_size``, the process's next emits to
that emitter skip the check for up to :data:`ROOM_FOR` seconds. So one process never fills an
emitter past ``max_queue_size``; other processes' emits within those ``ROOM_FOR`` seconds
may overshoot it, as two emits racing for its last place already may (the check takes no
lock, so that no emit waits for another).
"""

from __future__ import annotations

import threading
import time

#: Seconds for which a room check that found a queue below half of max_queue_size lets
#: this process's next emits to that emitter skip it.
ROOM_FOR = 0.1
#: Emitters remembered at most (past it, all are forgotten: checked again).
_MAX_EMITTERS = 10_000


class RoomCheck:
    """Per emitter: until when, for which ``max_queue_size``, how many emits may skip the
    check. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, int, int]] = {}

    def skip_check(self, emitter_id: str, max_size: int) -> bool:
        """Whether an emit to ``emitter_id`` may skip the room check; counts it if so."""
        with self._lock:
            known = self._known.get(emitter_id)
            if known is None:
                return False
            until, size, allowance = known
            if allowance <= 0 or size != max_size or time.monotonic() >= until:
                del self._known[emitter_id]
                return False
            self._known[emitter_id] = (until, size, allowance - 1)
            return True

    def found(self, emitter_id: str, max_size: int, depth: int) -> None:
        """A room check found at most ``depth`` events queued for ``emitter_id`` (this
        emit's included)."""
        allowance = max_size // 2 - depth
        with self._lock:
            if allowance <= 0:
                self._known.pop(emitter_id, None)
                return
            if len(self._known) >= _MAX_EMITTERS and emitter_id not in self._known:
                self._known.clear()  # detached emitters' entries, mostly
            self._known[emitter_id] = (time.monotonic() + ROOM_FOR, max_size, allowance)
