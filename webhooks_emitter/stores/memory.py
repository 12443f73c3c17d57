"""The memory store: events in this process's memory (the default; lost when it ends)."""

from __future__ import annotations

import collections
import datetime
import itertools
import threading
import time
from collections.abc import Collection, Sequence
from typing import Any, Optional

from .. import _validate
from ._base import (
    EmitterState,
    FailedEvent,
    Lease,
    Message,
    Store,
    StoredEvent,
    TargetLike,
)

__all__ = ["MemoryStore"]

#: Failed events kept per emitter; older ones are forgotten.
KEEP_FAILED = 1000


class _Lane:
    """One emitter id's events and state."""

    __slots__ = (
        "failed",
        "failing_since",
        "fetched",
        "hold_until",
        "last_try_at",
        "lock",
        "next_due",
        "paused",
        "pending",
    )

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: collections.deque[StoredEvent] = collections.deque()  # not fetched
        self.fetched: dict[int, StoredEvent] = {}  # fetched, not finished (seq order)
        self.failed: collections.deque[tuple[StoredEvent, float]] = collections.deque(
            maxlen=KEEP_FAILED
        )
        self.paused = False
        self.hold_until = 0.0
        self.last_try_at = 0.0
        self.failing_since: Optional[float] = None
        self.next_due = 0.0

    def queued(self) -> int:
        return len(self.pending) + len(self.fetched)

    def unfetch(self) -> None:
        """Put the fetched events back in front of the pending ones (lease let go)."""
        if self.fetched:
            self.pending.extendleft(reversed(self.fetched.values()))
            self.fetched.clear()


class MemoryStore(Store):
    """Events in this process's memory: fast, and lost when the process ends.

    The default store. Failed events are kept, the last 1,000 per emitter, until replayed or
    purged. A lease is always granted: only this process delivers these events.
    """

    durable = False

    def __init__(self) -> None:
        self._lanes: dict[str, _Lane] = {}
        self._lock = threading.Lock()
        self._seq = itertools.count(1)

    def __repr__(self) -> str:
        return "MemoryStore()"

    def describe(self) -> str:
        return "memory"

    def _lane(self, emitter_id: str) -> _Lane:
        lane = self._lanes.get(emitter_id)
        if lane is None:
            with self._lock:
                lane = self._lanes.setdefault(emitter_id, _Lane())
        return lane

    def after_fork(self) -> None:
        # The child starts with empty queues (CONTRACT section 6) and unlocked locks.
        self._lanes = {}
        self._lock = threading.Lock()

    # -- emitting -------------------------------------------------------------------------

    def append(
        self, message: Message, targets: Sequence[TargetLike], connection: Any = None
    ) -> list[bool]:
        if connection is not None:
            raise ValueError("connection= needs a PostgresStore; this instance uses memory")
        seq = next(self._seq)
        now = time.time()
        accepted = []
        for target in targets:
            lane = self._lane(target.emitter_id)
            with lane.lock:
                if len(lane.pending) + len(lane.fetched) >= target.max_queue_size:
                    accepted.append(False)
                    continue
                lane.pending.append(
                    StoredEvent(
                        seq,
                        target.emitter_id,
                        message.event,
                        message.request_id,
                        message.body,
                        message.ordering_key,
                        emitted_at=now,
                        trace_context=message.trace_context,
                    )
                )
            accepted.append(True)
        return accepted

    # -- emitters --------------------------------------------------------------------------

    def register(self, emitter_id: str) -> None:
        self._lane(emitter_id)

    def forget(self, emitter_id: str) -> int:
        lane = self._lanes.get(emitter_id)
        if lane is None:
            return 0
        with lane.lock:
            count = lane.queued()
            lane.pending.clear()
            lane.fetched.clear()
            lane.paused = False
            lane.hold_until = 0.0
            lane.failing_since = None
            if not lane.failed:
                with self._lock:
                    self._lanes.pop(emitter_id, None)
        return count

    def known(self, emitter_id: str) -> bool:
        return emitter_id in self._lanes

    def _state(self, emitter_id: str, lane: _Lane) -> EmitterState:
        oldest = None
        if lane.fetched:
            oldest = next(iter(lane.fetched.values())).emitted_at
        elif lane.pending:
            oldest = lane.pending[0].emitted_at
        return EmitterState(
            emitter_id=emitter_id,
            queued=lane.queued(),
            failed=len(lane.failed),
            paused=lane.paused,
            hold_until=lane.hold_until,
            last_try_at=lane.last_try_at,
            failing_since=lane.failing_since,
            next_due=lane.next_due,
            oldest_queued_at=oldest or None,
            lease_holder=None,
        )

    def state(self, emitter_id: str) -> EmitterState:
        lane = self._lanes.get(emitter_id)
        if lane is None:
            return EmitterState(emitter_id)
        with lane.lock:
            return self._state(emitter_id, lane)

    def states(self) -> list[EmitterState]:
        return [self.state(emitter_id) for emitter_id in sorted(list(self._lanes))]

    def poll(self) -> list[EmitterState]:
        result = []
        for emitter_id, lane in list(self._lanes.items()):
            if lane.paused or lane.pending or lane.fetched:
                with lane.lock:
                    result.append(self._state(emitter_id, lane))
        return result

    def set_paused(self, emitter_id: str, paused: bool) -> None:
        lane = self._lane(emitter_id)
        with lane.lock:
            lane.paused = paused
            if not paused:
                lane.hold_until = 0.0
                lane.failing_since = None
                lane.next_due = 0.0
                for event in itertools.chain(lane.fetched.values(), lane.pending):
                    event.next_at = 0.0

    def set_hold(self, emitter_id: str, lease: Lease, until: float) -> None:
        lane = self._lane(emitter_id)
        with lane.lock:
            lane.hold_until = until

    def set_failing_since(self, emitter_id: str, lease: Lease, since: Optional[float]) -> None:
        lane = self._lane(emitter_id)
        with lane.lock:
            lane.failing_since = since

    # -- leases: always granted in memory ---------------------------------------------------

    def acquire(self, emitter_id: str, lease: Lease) -> bool:
        self._lane(emitter_id)
        return True

    def renew(self, lease: Lease, emitter_ids: Collection[str]) -> set[str]:
        return set(emitter_ids)

    def release(self, emitter_id: str, lease: Lease, next_due: float = 0.0) -> None:
        lane = self._lanes.get(emitter_id)
        if lane is not None:
            with lane.lock:
                lane.unfetch()
                lane.next_due = next_due

    # -- events --------------------------------------------------------------------------------

    def fetch(
        self, emitter_id: str, lease: Lease, limit: int, skip: Collection[int] = ()
    ) -> list[StoredEvent]:
        lane = self._lanes.get(emitter_id)
        if lane is None:
            return []
        taken: list[StoredEvent] = []
        with lane.lock:
            if lane.fetched:
                # Handed out before but no longer held by the caller (its window was
                # trimmed): answered again, as a durable store would. They are older than
                # every pending event.
                taken = [e for e in lane.fetched.values() if e.seq not in skip][:limit]
            pending = lane.pending
            while pending and len(taken) < limit:
                event = pending.popleft()
                lane.fetched[event.seq] = event
                if event.seq not in skip:
                    taken.append(event)
        return taken

    def begin_try(self, lease: Lease, event: StoredEvent, now: float) -> bool:
        lane = self._lanes.get(event.emitter_id)
        if lane is None or lane.paused or event.seq not in lane.fetched:
            return False
        lane.last_try_at = now
        return True

    def retry_later(self, lease: Lease, event: StoredEvent) -> bool:
        lane = self._lanes.get(event.emitter_id)
        return lane is not None and event.seq in lane.fetched

    def finish(self, lease: Lease, event: StoredEvent) -> bool:
        lane = self._lanes.get(event.emitter_id)
        if lane is None:
            return False
        with lane.lock:
            return lane.fetched.pop(event.seq, None) is not None

    def give_up(self, lease: Lease, event: StoredEvent) -> bool:
        lane = self._lanes.get(event.emitter_id)
        if lane is None:
            return False
        with lane.lock:
            if lane.fetched.pop(event.seq, None) is None:
                return False
            lane.failed.append((event, time.time()))
        return True

    # -- for testing.capture() -------------------------------------------------------------

    def hurry(self, emitter_id: str) -> None:
        """Make every queued event of ``emitter_id`` due now and end its hold (the pause
        is left as it is)."""
        lane = self._lanes.get(emitter_id)
        if lane is None:
            return
        with lane.lock:
            lane.hold_until = 0.0
            lane.next_due = 0.0
            for event in itertools.chain(lane.fetched.values(), lane.pending):
                event.next_at = 0.0

    def drop_queued(self, emitter_id: str, keep: Collection[int] = ()) -> int:
        """Drop the queued events of ``emitter_id`` but those whose seq is in ``keep``
        (tries under way); failed ones stay. Returns how many were dropped."""
        lane = self._lanes.get(emitter_id)
        if lane is None:
            return 0
        with lane.lock:
            count = len(lane.pending)
            lane.pending.clear()
            for seq in [s for s in lane.fetched if s not in keep]:
                del lane.fetched[seq]
                count += 1
        return count

    # -- flush -----------------------------------------------------------------------------------

    def high_water(self, emitter_ids: Collection[str]) -> dict[str, int]:
        marks = {}
        for emitter_id in emitter_ids:
            lane = self._lanes.get(emitter_id)
            if lane is None:
                continue
            with lane.lock:
                seqs = list(lane.fetched)
                if lane.pending:
                    seqs.append(lane.pending[-1].seq)
            if seqs:
                marks[emitter_id] = max(seqs)
        return marks

    def queued_upto(self, emitter_id: str, seq: int) -> int:
        lane = self._lanes.get(emitter_id)
        if lane is None:
            return 0
        with lane.lock:
            count = sum(1 for s in lane.fetched if s <= seq)
            pending = lane.pending
            if pending and pending[-1].seq <= seq:
                return count + len(pending)  # the usual case: flush waits for all
            for event in pending:
                if event.seq > seq:
                    break
                count += 1
        return count

    # -- dead letters ------------------------------------------------------------------------------

    def queued_events(self, emitter_id: str, limit: int = 20) -> list[StoredEvent]:
        limit = _validate.integer("limit", limit, minimum=0)
        lane = self._lanes.get(emitter_id)
        if lane is None or limit == 0:
            return []
        with lane.lock:
            # Fetched events are older than every pending one, but a trimmed window may
            # leave them out of seq order: sorted, as a durable store's ORDER BY seq.
            events = sorted([*lane.fetched.values(), *lane.pending], key=lambda e: e.seq)
            # Copies, taken under the lock: the engine changes its events in place.
            return [_copy(event) for event in events[:limit]]

    def failed(self, emitter_id: str, limit: int = 100) -> list[FailedEvent]:
        lane = self._lanes.get(emitter_id)
        if lane is None:
            return []
        with lane.lock:
            entries = sorted(lane.failed, key=lambda entry: entry[0].seq)[:limit]
        return [
            FailedEvent(
                emitter_id=emitter_id,
                event=event.event,
                request_id=event.request_id,
                attempts=event.attempts,
                status_code=event.status_code,
                error=event.error,
                failed_at=datetime.datetime.fromtimestamp(at, datetime.timezone.utc),
                body=event.body,
            )
            for event, at in entries
        ]

    def replay(self, emitter_id: str, request_ids: Optional[Collection[str]] = None) -> int:
        lane = self._lanes.get(emitter_id)
        if lane is None:
            return 0
        wanted = None if request_ids is None else set(request_ids)
        with lane.lock:
            chosen = [e for e, _ in lane.failed if wanted is None or e.request_id in wanted]
            if not chosen:
                return 0
            lane.failed = collections.deque(
                (entry for entry in lane.failed if entry[0] not in chosen), maxlen=KEEP_FAILED
            )
            for event in sorted(chosen, key=lambda e: e.seq):
                lane.pending.append(
                    StoredEvent(
                        next(self._seq),
                        emitter_id,
                        event.event,
                        event.request_id,
                        event.body,
                        event.ordering_key,
                        emitted_at=event.emitted_at,
                        trace_context=event.trace_context,
                    )
                )
        return len(chosen)

    def purge(self, emitter_id: str) -> int:
        lane = self._lanes.get(emitter_id)
        if lane is None:
            return 0
        with lane.lock:
            count = lane.queued() + len(lane.failed)
            lane.pending.clear()
            lane.fetched.clear()
            lane.failed.clear()
        return count


def _copy(event: StoredEvent) -> StoredEvent:
    """A copy of ``event`` that shares nothing mutable with it."""
    return StoredEvent(
        event.seq, event.emitter_id, event.event, event.request_id, event.body,
        event.ordering_key, event.attempts, event.next_at, event.emitted_at,
        event.status_code, event.error, event.trace_context,
    )
