"""The housekeeping thread of one instance: timers, and the poll of a durable store."""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from typing import Optional

from ._context import EmitterHandle, HousekeepingContext
from ._logcount import RateLimitedCount
from .stores._base import StoreError

__all__ = ["Housekeeper"]

logger = logging.getLogger(__name__)


def _gone(holder: str, host: str) -> bool:
    """Whether ``holder`` ("host:pid") is a process of this host that no longer runs.

    The stores report a holder they can tell is dead as no holder at all (an OS lock, a
    database session); this covers what they cannot see, on this host, for the price of
    one ``kill(pid, 0)``: the lease is then tried (the store still decides)."""
    name, _, pid = holder.rpartition(":")
    if name != host or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, another user's
    return False


class Housekeeper:
    """One thread per instance: timers that wake emitters, and, over a durable store, the
    poll that finds work stored by other processes, the shared pause state and the renewal
    of this process's leases. It runs only while it has something to do."""

    def __init__(self, hub: HousekeepingContext) -> None:
        self.hub = hub
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.timers: list[tuple[float, int, EmitterHandle]] = []
        self.counter = itertools.count()
        self.thread: Optional[threading.Thread] = None
        self.stopping = False
        self.leased_set: set[EmitterHandle] = set()
        self.poll_errors = RateLimitedCount()
        self.poll_now = False
        self.paused: set[str] = set()  # emitter ids paused in the store at the last poll
        self.last_loop = 0.0  # monotonic: when the thread last went round its loop
        self.died = False  # the thread ended on an error (until one starts again)

    def age(self) -> Optional[float]:
        """Seconds since the thread last went round its loop; None when no thread is
        needed now (threads on demand: nothing to time, nothing to poll)."""
        with self.lock:
            if self.thread is None and not self.died:
                return None
            return max(time.monotonic() - self.last_loop, 0.0)

    def alive(self) -> bool:
        """False when the thread is needed but died (or was never started)."""
        with self.lock:
            if self.died:
                return False
            thread = self.thread
            if thread is None:
                return not self._needed_locked() or self.stopping
            return thread.is_alive()

    def leased(self, emitter: EmitterHandle, held: bool) -> None:
        """``emitter`` took (``held``) or let go of its lease: renew it, or no more."""
        with self.lock:
            if held:
                self.leased_set.add(emitter)
            else:
                self.leased_set.discard(emitter)

    def leases_held(self) -> int:
        """How many emitters hold their lease now."""
        return len(self.leased_set)

    def schedule(self, emitter: EmitterHandle, at: float) -> None:
        with self.lock:
            heapq.heappush(self.timers, (at, next(self.counter), emitter))
            self._ensure_locked()
            self.cond.notify()

    def ensure(self, poll: bool = False) -> None:
        """Run the thread if it is needed; ``poll`` asks it to poll the store now."""
        with self.lock:
            if poll:
                self.poll_now = True
                self.cond.notify()
            self._ensure_locked()
        if poll:
            self.hub.store.wake()

    def _ensure_locked(self) -> None:
        if self.thread is None and not self.stopping:
            self.died = False
            self.last_loop = time.monotonic()
            self.thread = threading.Thread(
                target=self._run, name="webhooks-emitter:housekeeping", daemon=True
            )
            self.thread.start()

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            thread = self.thread
            self.cond.notify_all()
        self.hub.store.wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)
        with self.lock:
            self.stopping = False
            self.timers = []

    def _needed_locked(self) -> bool:
        hub = self.hub
        if self.stopping:
            return False
        if self.timers:
            return True
        return hub.store.durable and hub.delivers and hub.has_emitters()

    def _run(self) -> None:
        store = self.hub.store
        durable = store.durable
        interval = store.poll_interval
        next_poll = 0.0
        next_renewal = time.monotonic() + store.lease_timeout / 3
        try:
            while True:
                due: list[EmitterHandle] = []
                with self.lock:
                    if not self._needed_locked():
                        self.thread = None
                        return
                    now = self.last_loop = time.monotonic()
                    while self.timers and self.timers[0][0] <= now:
                        due.append(heapq.heappop(self.timers)[2])
                    wait = self.timers[0][0] - now if self.timers else 1.0
                    if not durable and not due:
                        self.cond.wait(min(wait, 1.0))
                        continue
                for emitter in due:
                    emitter.kick()
                if not durable:
                    continue
                now = time.monotonic()
                if now >= next_renewal:
                    self._renew()
                    next_renewal = time.monotonic() + store.lease_timeout / 3
                changed = False
                with self.lock:
                    changed, self.poll_now = self.poll_now, False
                if not changed and now < next_poll:
                    changed = store.wait_for_change(max(min(wait, next_poll - now, interval), 0))
                periodic = time.monotonic() >= next_poll
                if changed or periodic:
                    self._poll(periodic)
                    next_poll = time.monotonic() + 1.0
        except BaseException:  # noqa: BLE001 - logged; restarted by the next schedule
            logger.exception("webhooks_emitter housekeeping thread failed")
            with self.lock:
                self.thread = None
                self.died = True

    def _renew(self) -> None:
        hub = self.hub
        with self.lock:
            leased = {e.emitter_id: e for e in self.leased_set}
        if not leased:
            return
        start = time.monotonic()
        try:
            held = hub.store.renew(hub.lease, list(leased))
        except StoreError as exc:
            logger.warning("webhooks_emitter could not renew its leases: %s", exc)
            return
        until = start + hub.store.lease_timeout * 0.9
        for emitter_id, emitter in leased.items():
            if emitter_id in held:
                emitter.lease_renewed(until)
            else:
                emitter.lease_lost()

    def _poll(self, periodic: bool = True) -> None:
        """Read the store's view of the emitters; ``periodic`` (about once a second): also
        try to take over those whose work another process holds (a dead holder's lease is
        takeable at once, so its emitters move within about a second)."""
        hub = self.hub
        try:
            rows = hub.store.poll()
        except StoreError as exc:
            with self.lock:
                self.poll_errors.add()
                count = self.poll_errors.take(force=False)
            if count:
                logger.warning(
                    "webhooks_emitter cannot poll its store (%d time(s)): %s", count, exc
                )
            return
        # Work in proportion to the rows, not to the emitters attached: each row's emitter
        # is looked up (one dict read), and only the emitters this thread saw paused at the
        # last poll are checked for a restart made elsewhere.
        attached = hub.attached
        paused = set()
        wall = time.time()
        host = hub.lease.holder.rsplit(":", 1)[0]
        takeover = []
        for row in rows:
            emitter = attached(row.emitter_id)
            if emitter is None:
                continue
            if row.paused:
                paused.add(row.emitter_id)
                emitter.set_paused(True)
                continue
            if emitter.paused:
                emitter.set_paused(False)
            if not row.queued:
                continue
            if emitter.workers:
                emitter.kick(refresh=True)  # look for what another process stored
            elif row.lease_holder is None:
                if row.next_due <= wall:
                    emitter.kick()
                else:
                    emitter.wake_at(time.monotonic() + (row.next_due - wall))
            elif periodic and _gone(row.lease_holder, host):
                takeover.append(emitter)
        for emitter in takeover:
            emitter.try_takeover()
        for emitter_id in self.paused - paused:
            emitter = attached(emitter_id)
            if emitter is not None and emitter.paused:
                emitter.set_paused(False)  # restarted by another process
        self.paused = paused
