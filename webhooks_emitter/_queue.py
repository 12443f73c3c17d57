"""What an emitter holds between ``emit`` and delivery: the message, and the queue seam.

The emitter only uses the small :class:`EventQueue` interface, so that an on-disk queue that
survives restarts can replace :class:`MemoryQueue` without touching the emitter.
"""

from __future__ import annotations

import queue
from typing import Optional, Protocol

__all__ = ["EventQueue", "MemoryQueue", "Message"]


class Message:
    """One emitted event, encoded once and shared by every emitter subscribed to it."""

    __slots__ = ("body", "event", "request_id")

    def __init__(self, event: str, request_id: str, body: bytes) -> None:
        self.event = event
        self.request_id = request_id
        self.body = body

    def __repr__(self) -> str:
        return f"<Message {self.event!r} {self.request_id!r} {len(self.body)} bytes>"


class EventQueue(Protocol):
    """A FIFO of messages for one emitter's thread. Bounding is the emitter's job."""

    def put(self, message: Message) -> None:
        """Append ``message``; never blocks."""

    def get(self) -> Optional[Message]:
        """Remove and return the oldest message, waiting for one; None once closed."""

    def close(self) -> None:
        """Wake a waiting ``get`` with None; later ``get`` calls return what is left, then None."""

    def drain(self) -> list[Message]:
        """Remove and return everything still queued."""


_CLOSED = None


class MemoryQueue:
    """:class:`EventQueue` in memory, on ``queue.Queue`` (lost when the process ends)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Optional[Message]] = queue.SimpleQueue()

    def put(self, message: Message) -> None:
        self._queue.put(message)

    def get(self) -> Optional[Message]:
        return self._queue.get()

    def close(self) -> None:
        self._queue.put(_CLOSED)

    def drain(self) -> list[Message]:
        left: list[Message] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return left
            if item is not _CLOSED:
                left.append(item)
