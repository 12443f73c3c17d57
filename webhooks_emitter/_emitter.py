"""One attached emitter: threads on demand that deliver its stored events, by key, in order.

How it is organised
-------------------

The events live in the store (``stores/``); the emitter keeps a *window*: the next queued
events, fetched while it holds the emitter's lease, in emit (``seq``) order. Its worker
threads (at most ``Config.max_in_flight``, none at all while there is nothing to do) take
from the window, one try at a time:

- With ``max_in_flight=1`` only the oldest event may be tried: it is tried, waits for its
  backoff and is tried again while the events behind it wait (strict FIFO, CONTRACT 5).
- Above 1, a worker takes the oldest *due* event whose ordering key is free: an event holds
  its key from its first try until it is delivered or given up, waits included, so events
  of one key never overlap and arrive in emit order; events without a key hold nothing.
- A ``Retry-After`` answer holds every new try of the emitter until it has passed;
  ``max_rate`` spaces the starts of tries; both are kept in the store for the next holder.

Each try is recorded in the store before it is sent (``begin_try``, which also checks the
lease and the pause), and its outcome after (``retry_later``, ``finish``, ``give_up``): the
retry loop is the store's state, so it survives the process, while the policy (when to give
up, how long to wait) is tenacity's (``_delivery.RetryPolicy``).

A worker that finds nothing to do waits; the last one ends after ``idle_timeout`` seconds,
or at once when the next try is further away than that (the hub's timer then starts one
again), letting go of the lease. ``wake`` (after an emit) and ``kick`` (a timer, a poll of a
durable store) start a worker again; the lock makes "a worker decides to end" and "an event
arrives" exclusive, so no event is stranded between them. Each worker has its own
``requests.Session`` (a ``Transport``), made on first use.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from . import _observe
from ._config import Config, DeliveryResult, EmitterStats
from ._delivery import Deliverer, RetryPolicy
from ._transport import Transport, TryOutcome
from .stores._base import Message, StoredEvent, StoreError

if TYPE_CHECKING:
    from ._hub import WebhooksEmitter

__all__ = ["Emitter"]

logger = logging.getLogger(__name__)

#: The least seconds between two warnings of one kind for one emitter.
WARNING_INTERVAL = 5.0
#: Seconds between two tries of a store call that failed in a delivering thread (then more).
_STORE_RETRY_START = 0.05
_STORE_RETRY_LIMIT = 5.0
#: The longest a try may be taken to last when the next holder's wait is reckoned (a year).
_LONGEST_TRY = 365 * 86400.0


class RateLimitedCount:
    """Counts occurrences and says when to log them: at most once per ``WARNING_INTERVAL``."""

    __slots__ = ("last", "unreported")

    def __init__(self) -> None:
        self.unreported = 0
        self.last = float("-inf")

    def add(self, count: int = 1) -> None:
        self.unreported += count

    def take(self, *, force: bool) -> int:
        """The count to log now (0: not yet); call with the owner's lock held."""
        now = time.monotonic()
        if not self.unreported or (not force and now - self.last < WARNING_INTERVAL):
            return 0
        count, self.unreported = self.unreported, 0
        self.last = now
        return count


class Emitter:
    """An attached endpoint: its window of stored events and the threads that deliver them.

    Args:
        hub: the instance it belongs to (its store, lease, timers and settings).
        emitter_id: the emitter's id.
        events: the event names it is subscribed to (``"*"`` for every event).
        config: how it delivers.
    """

    def __init__(
        self, hub: WebhooksEmitter, emitter_id: str, events: frozenset[str], config: Config
    ) -> None:
        self.hub = hub
        self.emitter_id = emitter_id
        self.events = events
        self.config = config
        self.max_queue_size = config.max_queue_size  # read by the store's append
        self._max_in_flight = config.max_in_flight
        self._min_interval = 1.0 / config.max_rate if config.max_rate else 0.0
        self._disable_after = config.disable_after
        self._window_size = max(32, 4 * self._max_in_flight)
        self.policy = RetryPolicy(config)
        self.deliverer = Deliverer(emitter_id, config)
        self._paused = False
        self._setup()

    def _setup(self) -> None:
        """Make the runtime state: new at attach, and again in a forked child."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # workers wait on it
        self._flushed = threading.Condition(self._lock)  # flush() waits on it
        self._flush_mark: Optional[int] = None  # the seq a flush waits for
        self._window: list[StoredEvent] = []  # fetched, not finished, in seq order
        self._taken: dict[int, StoredEvent] = {}  # seq -> event a worker is trying/reporting
        self._first_try: dict[int, float] = {}  # seq -> monotonic time of its first try here
        self._workers = 0
        self._waiting = 0
        self._refilling = False
        self._more = True  # the store may hold events that are not in the window
        self._wakes = 0  # counts wake() calls: a refill under way knows it missed one
        self._refresh = False  # a poll asks: read the waiting events' state again
        self._releasing = False  # the last thread is letting go of the lease
        self._trims = 0  # counts window trims: a refill under way knows its fetch is stale
        self._lease = False
        self._lease_until = 0.0  # monotonic: the lease is trusted until then
        self._lease_since = 0.0  # monotonic: held since then
        self._yield_until = 0.0  # monotonic: let go for others; not taken again before
        self._closed = False
        self._close_reason = "detached"
        self._hold_until = 0.0  # wall clock: Retry-After holds new tries until then
        self._last_try_at = 0.0  # wall clock: the start of the last try (max_rate)
        self._starting = False  # max_rate: a try was picked and is not sent yet
        self._failing_since: Optional[float] = None
        self._timer_at: Optional[float] = None  # monotonic: a wake-up is scheduled then
        # Re-attach of this id while the detached incarnation's threads still run: this one
        # starts no try until that one has ended and let go of the lease (two incarnations
        # share the instance's lease token, and the memory store's lane).
        self._predecessor: Optional[Emitter] = None
        self._successor: Optional[Emitter] = None
        self._delivered = self._given_up = self._dropped = self._retries = 0
        self._full = RateLimitedCount()
        self._store_errors = RateLimitedCount()
        self._observer_errors = RateLimitedCount()

    def __repr__(self) -> str:
        return f"<Emitter {self.emitter_id!r} workers={self._workers}>"

    def _extra(self, event: Any = None) -> dict[str, Optional[str]]:
        return {
            "emitter_id": self.emitter_id,
            "event": event.event if event is not None else None,
            "request_id": event.request_id if event is not None else None,
        }

    # -- the caller's side ---------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """Whether this process sees the emitter paused."""
        return self._paused

    @property
    def closed(self) -> bool:
        """Whether the emitter was detached or shut down."""
        return self._closed

    @property
    def workers(self) -> int:
        """How many threads the emitter has now."""
        return self._workers

    def wake(self) -> None:
        """New events were stored for this emitter (by this process): deliver them."""
        with self._lock:
            self._more = True
            self._wakes += 1
            if self._waiting:
                self._cond.notify()
            elif self._workers < self._max_in_flight:
                self._spawn_locked()  # none, or all busy with a try: one more may start

    def kick(self, refresh: bool = False) -> None:
        """A timer fired or a poll found work: start a thread if none runs.

        ``refresh`` (from a durable store's poll): events waiting for their next try are
        read again from the store, where another process may have made them due at once
        (a pause and restart made there between two polls)."""
        with self._lock:
            self._timer_at = None
            if refresh:
                self._refresh = True
            if self._yield_until > time.monotonic():
                return  # it let go of its lease for other processes to take
            self._more = True
            self._wakes += 1
            if self._waiting:
                self._cond.notify_all()
            elif self._workers < self._max_in_flight:
                self._spawn_locked()

    def wake_at(self, at: float) -> None:
        """Start a thread at monotonic time ``at`` unless one is scheduled already."""
        with self._lock:
            if self._timer_at is not None and self._timer_at <= at:
                return
            self._timer_at = at
        self.hub.schedule(self, at)

    def refused(self, message: Message) -> None:
        """``message`` was not stored for this emitter: its queue is full."""
        with self._lock:
            self._dropped += 1
            self._full.add()
            count = self._full.take(force=False)
        if count:
            self._log_full(count, message)

    def _log_full(self, count: int, message: Optional[Message] = None) -> None:
        logger.warning(
            "webhook emitter %r dropped %d event(s): its queue is full (max_queue_size %d)",
            self.emitter_id,
            count,
            self.config.max_queue_size,
            extra=self._extra(message),
        )

    def follow(self, predecessor: Emitter) -> None:
        """This emitter replaces ``predecessor`` (same id, detached): if that one's threads
        still run, start none here until the last of them has ended (it kicks this one)."""
        with predecessor._lock:
            if predecessor._workers:
                predecessor._successor = self
                self._predecessor = predecessor

    def _predecessor_ended(self) -> None:
        with self._lock:
            self._predecessor = None
            self._more = True
            self._wakes += 1
            if self._waiting:
                self._cond.notify_all()
            elif self._workers < self._max_in_flight:
                self._spawn_locked()

    def _spawn_locked(self) -> None:
        if self._closed or self._paused or not self.hub.delivers:
            return
        if self._predecessor is not None:
            return  # the detached incarnation's last thread starts one (_predecessor_ended)
        if self._releasing:
            return  # the ending thread starts one once the lease is let go (_worker_ends)
        if self._pid != os.getpid():
            return  # a forked child's emitters are set up anew by the fork hook first
        self._workers += 1
        thread = threading.Thread(
            target=self._work, name=f"webhooks-emitter:{self.emitter_id}", daemon=True
        )
        try:
            thread.start()
        except BaseException:
            self._workers -= 1
            raise

    def set_paused(self, paused: bool) -> None:
        """Pause or resume here (the store was told by the caller, or told us)."""
        with self._lock:
            if paused == self._paused:
                return
            self._paused = paused
            if paused:
                self._cond.notify_all()
                self._flushed.notify_all()
                return
            self._hold_until = 0.0
            self._failing_since = None
            for event in self._window:
                event.next_at = 0.0  # a wait cut short by the pause: tried again at once
            count = self._full.take(force=True)  # what was dropped while paused
            self._more = True
            self._wakes += 1  # a thread ending because of the pause starts one again
            if self._workers == 0:
                self._spawn_locked()
            else:
                self._cond.notify_all()
        if count:
            self._log_full(count)

    def pause(self) -> None:
        """Stop delivering in every process; what is queued stays queued."""
        self.hub.store.set_paused(self.emitter_id, True)
        self.set_paused(True)

    def restart(self) -> None:
        """Resume delivering after ``pause``; a no-op when running."""
        store = self.hub.store
        if not store.state(self.emitter_id).paused and not self._paused:
            return
        store.set_paused(self.emitter_id, False)
        self.set_paused(False)

    def due_now(self) -> None:
        """Cut every wait short (a backoff, a Retry-After hold): what is queued is tried
        at once (``testing.capture``'s end). The pause is left as it is."""
        store = self.hub.store
        hurry = getattr(store, "hurry", None)
        if hurry is not None:
            hurry(self.emitter_id)
        with self._lock:
            self._hold_until = 0.0
            for event in self._window:
                if event.seq not in self._taken:
                    event.next_at = 0.0
        self.kick()

    def drop_held(self, reason: str) -> int:
        """Drop every queued event no try is under way for (memory store); returns how
        many, logged as a WARNING with the count and counted as dropped."""
        store = self.hub.store
        drop = getattr(store, "drop_queued", None)
        if drop is None:
            return 0
        with self._lock:
            self._trim_window_locked()
            keep = set(self._taken)
        dropped = int(drop(self.emitter_id, keep))
        if dropped:
            with self._lock:
                self._dropped += dropped
            logger.warning(
                "webhook emitter %r: %d undelivered event(s) dropped (%s)",
                self.emitter_id,
                dropped,
                reason,
                extra=self._extra(),
            )
        return dropped

    def busy(self) -> bool:
        """Whether a try of this emitter is under way or being reported here."""
        return bool(self._taken)

    def wait_flushed(self, mark: Optional[int], timeout: Optional[float]) -> None:
        """Wait until the event ``mark`` (a seq), or every event this process had taken, is
        done here, or the emitter pauses or closes, or ``timeout`` seconds pass."""
        with self._lock:
            if mark is not None and (self._flush_mark is None or mark < self._flush_mark):
                self._flush_mark = mark
            self._flushed.wait(timeout)
            self._flush_mark = None

    def close(self, reason: str = "detached") -> int:
        """Stop delivering; returns how many events this process dropped (memory store).

        A memory store drops what the emitter had queued (a loss, logged as a WARNING with
        its count); a durable store keeps it for the next attach (logged at INFO). A try
        under way ends on its own: delivered, it is reported as usual.
        """
        with self._lock:
            if self._closed:
                return 0
            self._closed = True
            self._close_reason = reason
            taken = len(self._taken)
            self._trim_window_locked()
            self._cond.notify_all()
            self._flushed.notify_all()
            full = self._full.take(force=True)
        if full:
            self._log_full(full)
        store = self.hub.store
        try:
            left = store.forget(self.emitter_id)
        except StoreError as exc:
            logger.warning(
                "webhook emitter %r %s; the store could not count what it keeps: %s",
                self.emitter_id,
                reason,
                exc,
                extra=self._extra(),
            )
            left = 0
        dropped = 0
        if store.durable:
            if left:
                logger.info(
                    "webhook emitter %r %s; %d event(s) stay in the store for its next attach",
                    self.emitter_id,
                    reason,
                    left,
                    extra=self._extra(),
                )
        else:
            dropped = max(left - taken, 0)
            if dropped:
                with self._lock:
                    self._dropped += dropped
                logger.warning(
                    "webhook emitter %r %s with %d undelivered event(s), dropped",
                    self.emitter_id,
                    reason,
                    dropped,
                    extra=self._extra(),
                )
        return dropped

    def abandon(self) -> int:
        """After ``close``: give up waiting for the tries still under way; returns how many.

        ``shutdown`` calls it when its time is up, so that what it leaves behind is logged
        even when the interpreter exits before those tries end.
        """
        with self._lock:
            taken = list(self._taken.values())
            if not (self._closed and taken):
                return 0
            self._taken.clear()
            release = self._lease and self.hub.store.durable
            self._lease = False  # the ending thread must not let go of it a second time
            self._cond.notify_all()
        if release:
            self._release_now(max(e.next_at for e in taken))
        if self.hub.store.durable:
            logger.info(
                "webhook emitter %r: %d try(ies) still under way at %s; the event(s) stay "
                "in the store and may be sent again",
                self.emitter_id,
                len(taken),
                self._close_reason,
                extra=self._extra(taken[0]),
            )
        else:
            with self._lock:
                self._dropped += len(taken)
            for event in taken:
                logger.warning(
                    "webhook emitter %r stopped while delivering (%s); 1 event may not have "
                    "been delivered",
                    self.emitter_id,
                    self._close_reason,
                    extra=self._extra(event),
                )
        return len(taken)

    def _release_now(self, next_due: float) -> None:
        """Let go of the lease while a try may still be on the wire (the process is about
        to end): another process takes over at once, and waits until ``next_due`` (that
        try's start plus request_timeout, which begin_try stored) before it tries again.
        The try's own outcome, if it comes, is then refused by the store: at least once."""
        self.hub.lease_released(self)
        try:
            self.hub.store.release(self.emitter_id, self.hub.lease, next_due)
        except StoreError as exc:
            logger.warning(
                "webhook emitter %r could not let go of its lease (it will expire): %s",
                self.emitter_id,
                exc,
                extra=self._extra(),
            )

    def try_takeover(self) -> None:
        """The store holds work for this emitter under another process's lease (which may
        be dead): try to take the lease (cheap when the holder is alive: refused), and
        deliver if it was taken. Called at most about once a second by the poll."""
        with self._lock:
            if (
                self._workers
                or self._closed
                or self._paused
                or self._predecessor is not None
                or self._yield_until > time.monotonic()
                or not self.hub.delivers
            ):
                return
        try:
            taken = self.hub.store.acquire(self.emitter_id, self.hub.lease)
        except StoreError:
            return  # the poll reports the store's errors
        if not taken:
            return
        self.kick()
        with self._lock:
            started = self._workers > 0
        if not started:
            self._release_now(0.0)  # paused or closed meanwhile: hold nothing idle

    def join(self, deadline: Optional[float]) -> bool:
        """Wait until every thread of the emitter has ended, or ``deadline``."""
        with self._cond:
            while self._workers:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def stats(self) -> EmitterStats:
        """The emitter's counters now; ``queued`` and ``failed`` are the store's."""
        state = self.hub.store.state(self.emitter_id)
        with self._lock:
            return EmitterStats(
                queued=state.queued,
                delivered=self._delivered,
                given_up=self._given_up,
                dropped=self._dropped,
                retries=self._retries,
                paused=state.paused,
                failed=state.failed,
            )

    def after_fork(self) -> None:
        """In a forked child: new lock and state, no thread, no lease, no session."""
        self._setup()

    # -- leases (the hub's housekeeping thread) --------------------------------------------

    @property
    def holds_lease(self) -> bool:
        return self._lease

    def lease_renewed(self, until: float) -> None:
        """The hub renewed the lease: trust it until ``until`` (monotonic)."""
        with self._lock:
            if self._lease:
                self._lease_until = until

    def lease_lost(self) -> None:
        """Another process holds the lease now: start no new try, forget the window."""
        with self._lock:
            if not self._lease:
                return
            self._lease = False
            self._trim_window_locked()
            self._cond.notify_all()
        logger.warning(
            "webhook emitter %r lost its lease (not renewed in time); another process may "
            "deliver its events now",
            self.emitter_id,
            extra=self._extra(),
        )

    # -- the workers -----------------------------------------------------------------------

    def _work(self) -> None:
        transport: Optional[Transport] = None
        generation = -1
        seen = [0]  # the wake count when this thread decided to end
        try:
            while True:
                event = self._next_job(seen)
                if event is None:
                    return
                try:
                    if transport is None or generation != self.hub.transport_generation:
                        if transport is not None:
                            transport.close()
                        transport = None
                        generation = self.hub.transport_generation
                        transport = self.hub.make_transport(self.config)
                    self._attempt(event, transport)
                except BaseException:
                    with self._lock:
                        self._starting_done_locked()
                    self._untake(event, keep=True)  # stays queued; tried again later
                    raise
        except BaseException:  # noqa: BLE001 - logged; the emitter starts a new thread later
            logger.exception(
                "webhook emitter %r: a delivery thread failed", self.emitter_id,
                extra=self._extra(),
            )
            seen[0] = -1  # look again: the events it left are still queued
        finally:
            if transport is not None:
                transport.close()
            self._worker_ends(seen[0])

    def _worker_ends(self, seen: int) -> None:
        """This thread ends. The last one lets go of the lease first (so that ``join``, and
        so ``shutdown``, wait for that), then, if an event arrived after it decided to end,
        starts a thread again: no event is stranded between the two."""
        with self._lock:
            release = self._workers == 1 and self._lease
            if release and self._closed and not self.hub.store.durable:
                # forget() emptied the lane at close; a release now could only touch the
                # lane of a new incarnation of this id.
                self._lease = False
                release = False
            next_due = self._next_due_locked() if release else 0.0
            if release:
                self._lease = False
                self._trim_window_locked()
                self._releasing = True
        try:
            if release:
                self.hub.lease_released(self)
                self.hub.store.release(self.emitter_id, self.hub.lease, next_due)
        except StoreError as exc:
            logger.warning(
                "webhook emitter %r could not let go of its lease (it will expire): %s",
                self.emitter_id,
                exc,
                extra=self._extra(),
            )
        finally:
            successor = None
            with self._lock:
                self._releasing = False
                self._workers -= 1
                if self._wakes != seen and self._yield_until <= time.monotonic():
                    self._spawn_locked()  # checks closed, paused and a fork
                if not self._workers:
                    successor, self._successor = self._successor, None
                self._cond.notify_all()
                self._flushed.notify_all()
            if successor is not None:
                successor._predecessor_ended()

    def _trim_window_locked(self) -> None:
        """Forget the fetched events no thread has taken (the lease is gone, or their state
        must be read again); a refill under way when this happens drops what it fetched."""
        self._window = [e for e in self._window if e.seq in self._taken]
        self._trims += 1

    def _next_due_locked(self) -> float:
        if not self._window:
            return 0.0
        head = self._window if self._max_in_flight > 1 else self._window[:1]
        return max(min(e.next_at for e in head), self._hold_until)

    def _next_job(self, seen: list[int]) -> Optional[StoredEvent]:
        """Wait for an event to try and take it; None when this thread should end (then
        ``seen[0]`` is the wake count at that moment)."""
        idle_timeout = self.hub.idle_timeout
        idle_deadline = time.monotonic() + idle_timeout
        with self._cond:
            self._waiting += 1
            try:
                event = self._next_job_locked(idle_timeout, idle_deadline)
                if event is None:
                    seen[0] = self._wakes
                return event
            finally:
                self._waiting -= 1

    def _next_job_locked(
        self, idle_timeout: float, idle_deadline: float
    ) -> Optional[StoredEvent]:
        while True:
            if self._closed or self._paused or self._pid != os.getpid():
                return None
            if self._yield_until > time.monotonic():
                return None
            if self._should_yield_locked():
                # Held long enough while this process holds others: let another
                # process take it, so that the work spreads over the workers.
                self._yield_until = time.monotonic() + self.hub.store.poll_interval * 4
                self._cond.notify_all()
                return None
            if self._refresh:
                self._refresh = False
                now = time.time()
                if self._lease and any(e.next_at > now for e in self._window):
                    self._trim_window_locked()
                    self._more = True
            if self._lease and time.monotonic() > self._lease_until:
                # Not renewed in time (a frozen process, a lost database): trust
                # nothing fetched under it; acquire it again before any new try.
                self._lease = False
                self._trim_window_locked()
            if not self._lease or (
                self._more and len(self._window) <= self._window_size // 2
            ):
                if self._refilling:
                    self._cond.wait()
                    continue
                if not self._refill_locked():
                    return None
                continue
            now = time.time()
            event, wait = self._pick_locked(now)
            if event is not None:
                self._taken[event.seq] = event
                if (
                    self._workers < self._max_in_flight
                    and self._waiting == 1
                    and len(self._taken) < self._max_in_flight
                    and len(self._window) > len(self._taken)
                ):
                    self._spawn_locked()  # more may be ready: a thread to look
                return event
            if self._more and self._max_in_flight > 1 and not self._refilling:
                # Nothing ready among those fetched (their keys are busy): look
                # further into the store.
                before = len(self._window)
                if not self._refill_locked(grow=True):
                    return None
                if len(self._window) > before:
                    continue
            if self._waiting > 1:
                return None  # another thread is already waiting for work
            if wait is None:
                if self._taken:
                    self._cond.wait()  # an outcome will notify
                    continue
                timeout = idle_deadline - time.monotonic()
                if timeout <= 0:
                    return None
                self._cond.wait(timeout)
                continue
            if wait > idle_timeout and not self._taken:
                self._timer_at = time.monotonic() + wait
                self.hub.schedule(self, self._timer_at)
                return None
            self._cond.wait(wait)
            idle_deadline = time.monotonic() + idle_timeout

    def _should_yield_locked(self) -> bool:
        store = self.hub.store
        return (
            store.durable
            and self._lease
            and not self._taken
            and time.monotonic() - self._lease_since > store.lease_timeout
            and self.hub.leases_held() > 1
        )

    def _pick_locked(self, now: float) -> tuple[Optional[StoredEvent], Optional[float]]:
        """The event to try now, or None and the seconds until one may be (None: unknown)."""
        if self._hold_until > now:
            return None, self._hold_until - now
        if len(self._taken) >= self._max_in_flight or self._starting:
            return None, None  # a slot, or the start of the try picked last, frees it
        chosen: Optional[StoredEvent] = None
        soonest: Optional[float] = None
        if self._max_in_flight == 1:
            if self._window:
                head = self._window[0]
                if head.next_at <= now:
                    chosen = head
                else:
                    soonest = head.next_at
        else:
            busy_keys = {e.ordering_key for e in self._taken.values() if e.ordering_key}
            for event in self._window:
                key = event.ordering_key
                if event.seq in self._taken:
                    continue
                if key is not None:
                    if key in busy_keys:
                        continue
                    busy_keys.add(key)  # the oldest of its key: those behind it wait
                if event.next_at <= now:
                    chosen = event
                    break
                if soonest is None or event.next_at < soonest:
                    soonest = event.next_at
        if chosen is None:
            return None, None if soonest is None else max(soonest - now, 0.0)
        if self._min_interval:
            gap = self._last_try_at + self._min_interval - now
            if gap > 0:
                return None, gap
            # Until this try is on its way, no other starts: the next one is spaced from
            # the moment this one is sent, not from when it was picked.
            self._starting = True
        return chosen, None

    def _refill_locked(self, grow: bool = False) -> bool:
        """Take the lease if needed and fetch more events (the lock is let go meanwhile).

        Returns False when this thread should end: the lease is another process's, or the
        store cannot be reached (the hub's poll tries again later).
        """
        self._refilling = True
        wakes = self._wakes
        trims = self._trims
        need_lease = not self._lease
        skip = {e.seq for e in self._window} if self._window else set()
        limit = self._window_size if grow or need_lease else self._window_size - len(self._window)
        store = self.hub.store
        lease = self.hub.lease
        acquired = True
        state = None
        events: list[StoredEvent] = []
        error: Optional[StoreError] = None
        self._lock.release()
        try:
            if need_lease:
                acquired = store.acquire(self.emitter_id, lease)
                if acquired:
                    state = store.state(self.emitter_id)
            if acquired:
                events = store.fetch(self.emitter_id, lease, max(limit, 1), skip)
        except StoreError as exc:
            error = exc
        finally:
            self._lock.acquire()
            self._refilling = False
            self._cond.notify_all()
        if error is not None:
            self._store_errors.add()
            if self._store_errors.take(force=False):
                logger.warning(
                    "webhook emitter %r cannot read its store, will try again: %s",
                    self.emitter_id,
                    error,
                    extra=self._extra(),
                )
            if need_lease and acquired and state is not None:
                self._lease = True  # acquired before the error: let it go at the end
                self._lease_until = time.monotonic() + store.lease_timeout * 0.5
            if self._lease:
                return True if self._window else self._retry_soon()
            return self._retry_soon()
        if need_lease:
            if not acquired:
                return False
            assert state is not None
            self._lease = True
            self._lease_until = (
                time.monotonic() + store.lease_timeout * 0.5 if store.durable else float("inf")
            )
            # Only taken events are left in it (the lease was let go or lost); not a trim
            # that makes this very fetch stale.
            self._window = [e for e in self._window if e.seq in self._taken]
            skip = {e.seq for e in self._window}
            self._lease_since = time.monotonic()
            self._hold_until = state.hold_until
            self._last_try_at = max(self._last_try_at, state.last_try_at)
            self._failing_since = state.failing_since
            if state.paused:
                self._paused = True
            self.hub.lease_acquired(self)
        if self._closed:
            return False
        if self._trims != trims and store.durable:
            # The window was trimmed while the lock was let go: the fetch skipped events
            # that are no longer in it (one waiting on its key, say). Fetch again (a durable
            # store returns them again; the memory store hands each out once, and is never
            # trimmed for a refresh).
            self._more = True
            return True
        fresh = [e for e in events if e.seq not in skip]
        if fresh:
            self._window.extend(fresh)
            self._window.sort(key=_seq)
        # An event stored while the lock was let go may have come after the fetch.
        self._more = len(events) >= max(limit, 1) or self._wakes != wakes
        return True

    def _retry_soon(self) -> bool:
        """After a store error: end this thread; the hub's timer starts one again soon."""
        self._timer_at = time.monotonic() + 1.0
        self.hub.schedule(self, self._timer_at)
        return False

    # -- one try ---------------------------------------------------------------------------

    def _store(self, what: str, call: Callable[[], bool], event: StoredEvent) -> Optional[bool]:
        """Run a store call for a try, retrying it (logged) until it answers.

        Returns None when the emitter was closed before the store answered: what the store
        holds stays as it was (the event may then be sent again, at least once).
        """
        delay = _STORE_RETRY_START
        while True:
            try:
                return call()
            except StoreError as exc:
                with self._lock:
                    self._store_errors.add()
                    count = self._store_errors.take(force=False)
                    closed = self._closed
                if count:
                    logger.warning(
                        "webhook emitter %r could not record %s in its store (%d time(s)), "
                        "retrying: %s",
                        self.emitter_id,
                        what,
                        count,
                        exc,
                        extra=self._extra(event),
                    )
                if closed:
                    return None
                with self._cond:
                    if not self._closed:
                        self._cond.wait(delay)
                delay = min(delay * 2, _STORE_RETRY_LIMIT)

    def _attempt(self, event: StoredEvent, transport: Transport) -> None:
        store = self.hub.store
        lease = self.hub.lease
        now = time.time()
        event.attempts += 1
        due = event.next_at
        # Written by begin_try: should this process end mid-try, the next holder waits for
        # this try's end before the next one (the receiver never sees two overlap).
        event.next_at = now + min(self.config.request_timeout, _LONGEST_TRY)
        started = self._store("a try", lambda: store.begin_try(lease, event, now), event)
        if not started:
            event.attempts -= 1
            event.next_at = due
            self._not_started(event, started)
            return
        with self._lock:
            self._last_try_at = max(self._last_try_at, time.time())
            first = self._first_try.setdefault(event.seq, time.monotonic())
            self._starting_done_locked()
        observers = _observe.OBSERVERS
        scopes = self._try_started(observers, event) if observers else None
        extra = None
        if scopes and self.config.propagate_trace:
            extra = {k: v for scope in scopes if scope is not None for k, v in scope.headers.items()}
        began = time.monotonic()
        try:
            outcome = self.deliverer.send(transport, event, extra)
        except Exception:  # noqa: BLE001 - logged; the event is given up, not lost silently
            logger.exception(
                "webhook emitter %r failed to deliver", self.emitter_id, extra=self._extra(event)
            )
            outcome = TryOutcome(False, error="internal error (logged)", final=True)
        duration = time.monotonic() - began
        if observers:
            self._try_ended(observers, scopes, event, outcome, duration)
        event.status_code = outcome.status_code
        event.error = None if outcome.ok else outcome.error
        if self._closed and not self.hub.store.durable:
            self._after_close(event, outcome, first, duration)
            return
        if outcome.ok:
            self._store("a delivery", lambda: store.finish(lease, event), event)
            if self._failing_since is not None:
                self._failing_since = None
                self._store_quietly(lambda: store.set_failing_since(self.emitter_id, lease, None))
            self._report(event, outcome, first, duration)
            return
        now = time.time()
        gone = outcome.status_code == 410 and self.config.pause_on_gone
        wait = None if gone else self.policy.next_wait(event.attempts, outcome)
        if gone or wait is not None:
            event.next_at = 0.0 if gone else now + wait  # type: ignore[operator]
            self._store("a failed try", lambda: store.retry_later(lease, event), event)
        if self._failing_since is None:
            self._failing_since = now
            self._store_quietly(lambda: store.set_failing_since(self.emitter_id, lease, now))
        if gone:
            self._untake(event, keep=True)
            self._pause_for(
                event,
                "the receiver answered 410 Gone; restart it to resume",
                self._try_extra(event, outcome, duration, "retry"),
            )
            return
        if wait is None:
            self._store("a given-up event", lambda: store.give_up(lease, event), event)
            self._report(event, outcome, first, duration)
        else:
            if outcome.retry_after is not None:
                until = now + wait
                with self._lock:
                    self._hold_until = max(self._hold_until, until)
                self._store_quietly(lambda: store.set_hold(self.emitter_id, lease, until))
            self._untake(event, keep=True)  # waiting now: detach or shutdown drops it
            logger.info(
                "webhook try %d of %d failed (%s), retrying in %.3f s",
                event.attempts,
                self.policy.max_attempts,
                outcome.error,
                wait,
                extra=self._try_extra(event, outcome, duration, "retry"),
            )
        disable_after = self._disable_after
        if (
            disable_after is not None
            and self._failing_since is not None
            and now - self._failing_since >= disable_after
            and not self._paused
        ):
            self._pause_for(
                event,
                f"every try has failed for {disable_after:g} s (disable_after); "
                "restart it to resume",
            )

    def _try_extra(
        self, event: StoredEvent, outcome: TryOutcome, duration: float, result: str
    ) -> dict[str, Any]:
        """The ``extra`` fields of a log line about a try or an outcome (CONTRACT 15)."""
        return {
            "emitter_id": self.emitter_id,
            "event": event.event,
            "request_id": event.request_id,
            "attempt": event.attempts,
            "status_code": outcome.status_code,
            "duration": duration,
            "outcome": result,
        }

    def _try_started(
        self, observers: tuple[_observe.Observer, ...], event: StoredEvent
    ) -> list[Optional[_observe.TryScope]]:
        scopes: list[Optional[_observe.TryScope]] = []
        for observer in observers:
            try:
                scopes.append(
                    observer.try_started(self.emitter_id, event, event.attempts, self.config.url)
                )
            except Exception:  # noqa: BLE001 - an observer never stops a delivery
                scopes.append(None)
                self._observer_failed(event)
        return scopes

    def _try_ended(
        self,
        observers: tuple[_observe.Observer, ...],
        scopes: Optional[list[Optional[_observe.TryScope]]],
        event: StoredEvent,
        outcome: TryOutcome,
        duration: float,
    ) -> None:
        refused = outcome.final and outcome.status_code is None
        result = _observe.result_of(
            outcome.ok, outcome.status_code, outcome.error, refused, outcome.timed_out
        )
        error = None if outcome.ok else outcome.error
        for index, observer in enumerate(observers):
            scope = scopes[index] if scopes is not None and index < len(scopes) else None
            try:
                observer.try_ended(
                    scope,
                    self.emitter_id,
                    event,
                    event.attempts,
                    result,
                    outcome.status_code,
                    None if refused else duration,
                    error,
                )
            except Exception:  # noqa: BLE001 - an observer never stops a delivery
                self._observer_failed(event)

    def _observed_outcome(self, event: StoredEvent, result: str) -> None:
        observers = _observe.OBSERVERS
        if not observers:
            return
        since = max(time.time() - event.emitted_at, 0.0) if event.emitted_at else 0.0
        for observer in observers:
            try:
                observer.outcome(self.emitter_id, event, result, since)
            except Exception:  # noqa: BLE001 - an observer never stops a delivery
                self._observer_failed(event)

    def _observer_failed(self, event: StoredEvent) -> None:
        """An observer raised: logged (at most once per WARNING_INTERVAL), then ignored."""
        with self._lock:
            self._observer_errors.add()
            count = self._observer_errors.take(force=False)
        if count:
            logger.warning(
                "webhook emitter %r: an observer failed (%d time(s)); ignored",
                self.emitter_id,
                count,
                exc_info=True,
                extra=self._extra(event),
            )

    def _store_quietly(self, call: Callable[[], None]) -> None:
        """A store call whose failure costs nothing lasting (shared state for handovers)."""
        try:
            call()
        except StoreError as exc:
            logger.warning(
                "webhook emitter %r could not update its state in the store: %s",
                self.emitter_id,
                exc,
                extra=self._extra(),
            )

    def _pause_for(
        self, event: StoredEvent, why: str, extra: Optional[dict[str, Any]] = None
    ) -> None:
        try:
            self.hub.store.set_paused(self.emitter_id, True)
        except StoreError as exc:
            logger.warning(
                "webhook emitter %r could not record its pause in the store: %s",
                self.emitter_id,
                exc,
                extra=self._extra(event),
            )
        self.set_paused(True)  # before the WARNING says so, for whoever acts on it
        logger.warning(
            "webhook emitter %r paused: %s", self.emitter_id, why,
            extra=self._extra(event) if extra is None else extra,
        )

    def _not_started(self, event: StoredEvent, answer: Optional[bool]) -> None:
        """``begin_try`` refused (paused, or the lease is gone) or the emitter closed."""
        state = None
        if answer is False:
            try:
                state = self.hub.store.state(self.emitter_id)
            except StoreError:
                state = None
        with self._lock:
            self._taken.pop(event.seq, None)
            self._starting_done_locked()
            if state is not None and state.paused:
                self._paused = True
            elif answer is False:
                self._lease = False
                self._trim_window_locked()
            self._cond.notify_all()

    def _starting_done_locked(self) -> None:
        if self._starting:
            self._starting = False
            if self._waiting:
                self._cond.notify_all()

    def _untake(self, event: StoredEvent, *, keep: bool) -> None:
        with self._lock:
            self._taken.pop(event.seq, None)
            if not keep:
                self._first_try.pop(event.seq, None)
                window = self._window
                if window and window[0] is event:
                    del window[0]
                else:
                    try:
                        window.remove(event)
                    except ValueError:
                        pass
            if self._waiting:
                self._cond.notify_all()  # a key or a slot is free
            mark = self._flush_mark
            if mark is not None and (event.seq >= mark or not self._taken):
                self._flushed.notify_all()

    def _after_close(
        self, event: StoredEvent, outcome: TryOutcome, first: float, duration: float
    ) -> None:
        """A try that was under way when a memory-store emitter was closed has ended."""
        with self._lock:
            abandoned = event.seq not in self._taken
        if abandoned:
            return  # abandon() logged it already
        if outcome.ok:
            self._report(event, outcome, first, duration)
            return
        with self._lock:
            self._dropped += 1
        logger.warning(
            "webhook emitter %r %s while it was being delivered; 1 undelivered event dropped",
            self.emitter_id,
            self._close_reason,
            extra=self._try_extra(event, outcome, duration, "dropped"),
        )
        self._untake(event, keep=False)

    def _report(
        self, event: StoredEvent, outcome: TryOutcome, first: float, duration: float
    ) -> None:
        """Log the outcome, call ``on_delivery``, count it, and let the event go."""
        result = DeliveryResult(
            emitter_id=self.emitter_id,
            event=event.event,
            request_id=event.request_id,
            delivered=outcome.ok,
            attempts=event.attempts,
            status_code=outcome.status_code,
            error=None if outcome.ok else outcome.error,
            elapsed=time.monotonic() - first,
        )
        extra = self._try_extra(
            event, outcome, duration, "delivered" if outcome.ok else "given_up"
        )
        if outcome.ok:
            logger.debug(
                "webhook delivered in %d tries (HTTP %s)",
                event.attempts,
                outcome.status_code,
                extra=extra,
            )
        else:
            logger.error(
                "webhook given up by emitter %r: event %r, request id %s, after %d tries: %s",
                self.emitter_id,
                event.event,
                event.request_id,
                event.attempts,
                outcome.error,
                extra=extra,
            )
        callback = self.config.on_delivery
        if callback is not None:
            try:
                callback(result)
            except BaseException:  # noqa: BLE001 - not even SystemExit stops the emitter
                logger.exception("on_delivery of emitter %r raised", self.emitter_id, extra=extra)
        self._observed_outcome(event, "delivered" if outcome.ok else "given_up")
        with self._lock:
            self._retries += max(event.attempts - 1, 0)
            if outcome.ok:
                self._delivered += 1
            else:
                self._given_up += 1
            full = self._full.take(force=False)
        self._untake(event, keep=False)
        if full:
            self._log_full(full)


def _seq(event: StoredEvent) -> int:
    return event.seq

