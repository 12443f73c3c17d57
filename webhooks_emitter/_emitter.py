"""One attached emitter: the driver that runs its plan with threads, a lock and the store.

Every decision (what to try next, when to fetch, wait, end a thread or let go of the
lease, what follows a try) is taken by the emitter's :class:`~._plan.Plan`, and each
delivering thread runs the :func:`~._program.worker` program. This module carries
the program out: it holds the lock while the program runs, lets it go while it performs
an op (a store call, a try on the wire, ``on_delivery``), starts threads when the plan
says so, and notifies the threads that wait. It decides nothing itself.

The events live in the store (``stores/``); each try is recorded there before it is sent
(``begin_try``, which also checks the lease and the pause) and its outcome after, so the
retry loop survives the process; the policy (when to give up, how long to wait) is
tenacity's (``_delivery.RetryPolicy``). See ``docs/explanation/engine.rst``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Optional

from . import _observe
from ._config import Config, EmitterStats
from ._context import EmitterContext
from ._delivery import RetryPolicy
from ._ops import Begin, Fetch, Op, Record, Release, Report, Send, Spawn, Wait
from ._plan import Plan
from ._program import worker
from ._report import Reporter
from ._storesteps import StoreSteps
from .stores._base import Message, StoredEvent, StoreError

__all__ = ["Emitter"]

logger = logging.getLogger(__name__)



def _clock() -> tuple[float, float]:
    return time.monotonic(), time.time()


class Emitter:
    """An attached endpoint: its plan, and the threads that carry it out.

    Args:
        ctx: the instance it belongs to (its store, lease, timers and settings).
        emitter_id: the emitter's id.
        events: the event names it is subscribed to (``"*"`` for every event).
        config: how it delivers.
    """

    def __init__(
        self, ctx: EmitterContext, emitter_id: str, events: frozenset[str], config: Config
    ) -> None:
        self.ctx = ctx
        self.emitter_id = emitter_id
        self.events = events
        self.config = config
        self.max_queue_size = config.max_queue_size  # read by the store's append
        self.policy = RetryPolicy(config)
        self._setup()

    def _setup(self) -> None:
        """Make the runtime state: new at attach, and again in a forked child."""
        config = self.config
        store = self.ctx.store
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # workers wait on it
        self._flushed = threading.Condition(self._lock)  # flush() waits on it
        self._flush_mark: Optional[int] = None  # the seq a flush waits for
        self._sleepers = 0  # workers in a Wait (no notify when there are none)
        self.plan = Plan(
            max_in_flight=config.max_in_flight,
            min_interval=1.0 / config.max_rate if config.max_rate else 0.0,
            disable_after=config.disable_after,
            request_timeout=config.request_timeout,
            pause_on_gone=config.pause_on_gone,
            next_wait=self.policy.next_wait,
            durable=store.durable,
            lease_timeout=store.lease_timeout,
            poll_interval=store.poll_interval,
            delivers=self.ctx.delivers,
        )
        self.plan.leases_held = self.ctx.leases_held
        self._successor: Optional[Emitter] = None
        self._predecessor: Optional[Emitter] = None
        self._close_reason = "detached"
        self.report = Reporter(self.emitter_id, config, self.policy.max_attempts)
        self.report.first_try = self.plan.first_try.get
        self._extra = self.report.extra
        self.steps = StoreSteps(
            self.ctx, self.emitter_id, self.report, lambda: self.plan.closed, self._retry_pause
        )

    def __repr__(self) -> str:
        return f"<Emitter {self.emitter_id!r} workers={self.plan.workers}>"

    # -- the caller's side ---------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """Whether this process sees the emitter paused."""
        return self.plan.paused

    @property
    def closed(self) -> bool:
        """Whether the emitter was detached or shut down."""
        return self.plan.closed

    @property
    def workers(self) -> int:
        """How many threads the emitter has now."""
        return self.plan.workers

    @property
    def holds_lease(self) -> bool:
        """Whether the emitter holds its lease now."""
        return self.plan.lease

    def wake(self) -> None:
        """New events were stored for this emitter (by this process): deliver them."""
        with self._lock:
            if self.plan.wake():
                self._start_locked()
            elif self.plan.seeking:
                self._cond.notify()

    def kick(self, refresh: bool = False) -> None:
        """A timer fired or a poll found work: start a thread if none runs.

        ``refresh`` (from a durable store's poll): events waiting for their next try are
        read again from the store, where another process may have made them due at once."""
        with self._lock:
            if self.plan.kick(time.monotonic(), refresh):
                self._start_locked()
            elif self.plan.seeking:
                self._cond.notify_all()

    def wake_at(self, at: float) -> None:
        """Start a thread at monotonic time ``at`` unless one is scheduled already."""
        with self._lock:
            wanted = self.plan.schedule(at)
        if wanted:
            self.ctx.schedule(self, at)

    def refused(self, message: Message) -> None:
        """``message`` was not stored for this emitter: its queue is full."""
        self.report.queue_full(message)

    def set_paused(self, paused: bool) -> None:
        """Pause or resume here (the store was told by the caller, or told us)."""
        with self._lock:
            if self.plan.set_paused(paused):
                self._start_locked()
            self._cond.notify_all()
            self._flushed.notify_all()
        if not paused:
            self.report.flush_full()  # what was dropped while paused

    def pause(self) -> None:
        """Stop delivering in every process; what is queued stays queued."""
        self.ctx.store.set_paused(self.emitter_id, True)
        self.set_paused(True)

    def restart(self) -> None:
        """Resume delivering after ``pause``; a no-op when running."""
        store = self.ctx.store
        if not store.state(self.emitter_id).paused and not self.plan.paused:
            return
        store.set_paused(self.emitter_id, False)
        self.set_paused(False)

    def due_now(self) -> None:
        """Cut every wait short (a backoff, a Retry-After hold): what is queued is tried
        at once (``testing.capture``'s end). The pause is left as it is."""
        hurry = getattr(self.ctx.store, "hurry", None)  # the memory store's
        if hurry is not None:
            hurry(self.emitter_id)
        with self._lock:
            self.plan.due_now()
        self.kick()

    def drop_held(self, reason: str) -> int:
        """Drop every queued event no try is under way for (memory store); returns how
        many, logged as a WARNING with the count and counted as dropped."""
        drop = getattr(self.ctx.store, "drop_queued", None)  # the memory store's
        if drop is None:
            return 0
        with self._lock:
            self.plan.trim()
            keep = set(self.plan.taken)
        dropped = int(drop(self.emitter_id, keep))
        self.report.say("dropped", dropped, reason)
        return dropped

    def busy(self) -> bool:
        """Whether a try of this emitter is under way or being reported here (by this
        incarnation, or a detached one of the same id it waits for)."""
        if self.plan.taken or self.plan.settling:
            return True
        predecessor = self._predecessor
        return predecessor is not None and self.plan.predecessor and predecessor.busy()

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
            if self.plan.closed:
                return 0
            self._close_reason = reason
            taken = self.plan.close()
            self._cond.notify_all()
            self._flushed.notify_all()
        self.report.flush_full()
        store = self.ctx.store
        try:
            left: Optional[int] = store.forget(self.emitter_id)
        except StoreError as exc:
            self.report.left_behind(reason, None, taken, store.durable, exc)
            return 0
        return self.report.left_behind(reason, left, taken, store.durable)

    def abandon(self) -> int:
        """After ``close``: give up waiting for the tries still under way; returns how many.

        ``shutdown`` calls it when its time is up, so that what it leaves behind is logged
        even when the interpreter exits before those tries end; with a durable store the
        lease is let go now (the process is about to end), the next holder waiting for
        those tries' start plus ``request_timeout``.
        """
        with self._lock:
            taken, release = self.plan.abandon()
            self._cond.notify_all()
        if not taken:
            return 0
        if release:
            self._release(max(e.next_at for e in taken))
        self.report.abandoned(taken, self._close_reason, self.ctx.store.durable)
        return len(taken)

    def join(self, deadline: Optional[float]) -> bool:
        """Wait until every thread of the emitter has ended, or ``deadline``."""
        with self._cond:
            while self.plan.workers:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def stats(self) -> EmitterStats:
        """The emitter's counters now; ``queued`` and ``failed`` are the store's."""
        state = self.ctx.store.state(self.emitter_id)
        delivered, given_up, dropped, retries = self.report.counters()
        return EmitterStats(
            queued=state.queued,
            delivered=delivered,
            given_up=given_up,
            dropped=dropped,
            retries=retries,
            paused=state.paused,
            failed=state.failed,
        )

    def after_fork(self) -> None:
        """In a forked child: new lock and state, no thread, no lease, no session."""
        paused = self.plan.paused
        self._setup()
        self.plan.paused = paused

    # -- re-attach of the same id while the detached one still runs --------------------------

    def follow(self, predecessor: Emitter) -> None:
        """This emitter replaces ``predecessor`` (same id, detached): while that one's
        threads run (a try on the wire), start none here; its last thread kicks this one.
        (Both share the instance's lease token and the memory store's lane.)"""
        with predecessor._lock:
            if predecessor.plan.workers:
                predecessor._successor = self
                self._predecessor = predecessor
                self.plan.predecessor = True

    def _predecessor_ended(self) -> None:
        with self._lock:
            self._predecessor = None
            if self.plan.predecessor_ended():
                self._start_locked()
            else:
                self._cond.notify_all()

    # -- leases (the instance's housekeeping thread) -------------------------------------------

    def lease_renewed(self, until: float) -> None:
        """The lease was renewed: trust it until ``until`` (monotonic)."""
        with self._lock:
            self.plan.lease_renewed(until)

    def lease_lost(self) -> None:
        """Another process holds the lease now: start no new try, forget the window."""
        with self._lock:
            lost = self.plan.lease_lost()
            self._cond.notify_all()
        if lost:
            self.report.say("lease_lost")

    def try_takeover(self) -> None:
        """The store holds work for this emitter under a process that looks dead: try to
        take the lease (the store decides), and deliver if it was taken."""
        with self._lock:
            plan = self.plan
            if (
                plan.workers
                or plan.closed
                or plan.paused
                or plan.predecessor
                or plan.yield_until > time.monotonic()
                or not plan.delivers
            ):
                return
        try:
            taken = self.ctx.store.acquire(self.emitter_id, self.ctx.lease)
        except StoreError:
            return  # the poll reports the store's errors
        if not taken:
            return
        self.kick()
        with self._lock:
            started = self.plan.workers > 0
        if not started:
            self._release(0.0)  # paused or closed meanwhile: hold nothing idle

    def _release(self, next_due: float) -> None:
        self.ctx.lease_released(self)
        try:
            self.ctx.store.release(self.emitter_id, self.ctx.lease, next_due)
        except StoreError as exc:
            self.report.say("release_failed", exc)

    # -- the threads --------------------------------------------------------------------------

    def _start_locked(self) -> None:
        """Start the worker the plan has just counted."""
        if self._pid != os.getpid():
            self.plan.workers -= 1  # a forked child's emitters are set up anew first
            return
        thread = threading.Thread(
            target=self._work, name=f"webhooks-emitter:{self.emitter_id}", daemon=True
        )
        try:
            thread.start()
        except BaseException:
            self.plan.workers -= 1
            raise

    def _on_lease(self) -> None:
        self.ctx.lease_acquired(self)

    def _on_timer(self, at: float) -> None:
        self.ctx.schedule(self, at)

    def _work(self) -> None:
        """A delivering thread: runs the plan's worker program, performing its ops."""
        plan = self.plan
        ctx = self.ctx
        # Observer hooks name no instance: they learn it from the thread they run in.
        _observe.delivering_for.instance = ctx
        transport: Optional[Any] = None
        generation = -1
        program = worker(plan, _clock, self._on_lease, self._on_timer)
        answer: Any = None
        failure: Optional[BaseException] = None
        lock = self._lock
        lock.acquire()
        try:
            plan.idle_timeout = ctx.idle_timeout
            while True:
                try:
                    op = program.send(answer) if failure is None else program.throw(failure)
                except StopIteration:
                    break
                except BaseException:  # noqa: BLE001 - logged; a new thread starts later
                    logger.exception(
                        "webhook emitter %r: a delivery thread failed", self.emitter_id,
                        extra=self._extra(),
                    )
                    break
                answer = failure = None
                if isinstance(op, Wait):
                    self._sleepers += 1
                    try:
                        self._cond.wait(op.timeout)
                    finally:
                        self._sleepers -= 1
                    continue
                if isinstance(op, Spawn):
                    self._start_locked()
                    continue
                lock.release()
                try:
                    if isinstance(op, Send):
                        if transport is None or generation != ctx.transport_generation:
                            if transport is not None:
                                transport.close()
                            transport = None
                            generation = ctx.transport_generation
                            transport = ctx.make_transport(self.config)
                        answer = self.report.send(op, transport)
                    else:
                        answer = self._perform(op)
                except BaseException as exc:  # noqa: BLE001 - thrown into the program
                    failure = exc
                finally:
                    lock.acquire()
                    if self._sleepers:
                        self._cond.notify_all()  # the plan changed: waiters look again
                    if self._flush_mark is not None:
                        self._flushed.notify_all()
        finally:
            successor = None
            if not plan.workers:
                successor, self._successor = self._successor, None
            self._cond.notify_all()
            self._flushed.notify_all()
            lock.release()
            if transport is not None:
                transport.close()
            if successor is not None:
                successor._predecessor_ended()

    # -- the ops ------------------------------------------------------------------------------

    def _perform(self, op: Op) -> Any:
        """Carry out one op of the worker program (the lock let go); returns its answer."""
        if isinstance(op, Begin):
            answer = self.steps.begin(op)
            for told in op.outcomes:
                self.report.announce(told, self._close_reason, self._pause_for)
            return answer
        if isinstance(op, Fetch):
            return self.steps.fetch(op)
        if isinstance(op, Record):
            self.steps.record(op)
            if op.report:
                self.report.announce(op, self._close_reason, self._pause_for)
        elif isinstance(op, Report):
            self.report.announce(op, self._close_reason, self._pause_for)
        elif isinstance(op, Release):
            self._release(op.next_due)
        return None

    def _retry_pause(self, delay: float) -> None:
        with self._cond:
            if not self.plan.closed:
                self._cond.wait(delay)

    def _pause_for(self, event: StoredEvent, why: str, extra: dict[str, Any]) -> None:
        try:
            self.ctx.store.set_paused(self.emitter_id, True)
        except StoreError as exc:
            self.report.say("pause_failed", exc, event=event)
        self.set_paused(True)  # before the WARNING says so, for whoever acts on it
        logger.warning("webhook emitter %r paused: %s", self.emitter_id, why, extra=extra)
