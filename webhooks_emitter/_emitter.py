"""One attached emitter: the driver that runs its plan with threads, a lock and the store.

Every decision (what to try next, when to fetch, wait, end a thread or let go of the
lease, what follows a try) is taken by the emitter's :class:`~._plan.Plan`, and each
delivering thread runs the plan's :func:`~._plan.worker` program. This module carries
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
from typing import Any, Callable, Optional

from . import _observe
from ._config import Config, DeliveryResult, EmitterStats
from ._context import EmitterContext
from ._delivery import Deliverer, RetryPolicy
from ._logcount import RateLimitedCount
from ._plan import (
    Begin,
    Decision,
    Fetch,
    Plan,
    Record,
    Release,
    Report,
    Send,
    Spawn,
    Wait,
    worker,
)
from ._transport import Transport, TryOutcome
from .stores._base import Message, StoredEvent, StoreError

__all__ = ["Emitter"]

logger = logging.getLogger(__name__)

#: Seconds between two tries of a store call that failed in a delivering thread (then more).
_STORE_RETRY_START = 0.05
_STORE_RETRY_LIMIT = 5.0


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
        self.deliverer = Deliverer(emitter_id, config)
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
        self._delivered = self._given_up = self._dropped = self._retries = 0
        self._full = RateLimitedCount()
        self._store_errors = RateLimitedCount()
        self._observer_errors = RateLimitedCount()

    def __repr__(self) -> str:
        return f"<Emitter {self.emitter_id!r} workers={self.plan.workers}>"

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

    def set_paused(self, paused: bool) -> None:
        """Pause or resume here (the store was told by the caller, or told us)."""
        count = 0
        with self._lock:
            if self.plan.set_paused(paused):
                self._start_locked()
            self._cond.notify_all()
            self._flushed.notify_all()
            if not paused:
                count = self._full.take(force=True)  # what was dropped while paused
        if count:
            self._log_full(count)

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
        """Whether a try of this emitter is under way or being reported here (by this
        incarnation, or a detached one of the same id it waits for)."""
        if self.plan.taken:
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
            full = self._full.take(force=True)
        if full:
            self._log_full(full)
        store = self.ctx.store
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
        if self.ctx.store.durable:
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
            logger.warning(
                "webhook emitter %r lost its lease (not renewed in time); another process may "
                "deliver its events now",
                self.emitter_id,
                extra=self._extra(),
            )

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
            logger.warning(
                "webhook emitter %r could not let go of its lease (it will expire): %s",
                self.emitter_id,
                exc,
                extra=self._extra(),
            )

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
                kind = type(op)
                if kind is Wait:
                    self._cond.wait(op.timeout)  # type: ignore[attr-defined]
                    continue
                if kind is Spawn:
                    self._start_locked()
                    continue
                lock.release()
                try:
                    if kind is Send:
                        if transport is None or generation != ctx.transport_generation:
                            if transport is not None:
                                transport.close()
                            transport = None
                            generation = ctx.transport_generation
                            transport = ctx.make_transport(self.config)
                        answer = self._send(op, transport)  # type: ignore[arg-type]
                    elif kind is Begin:
                        answer = self._begin(op)  # type: ignore[arg-type]
                    elif kind is Record:
                        self._record(op)  # type: ignore[arg-type]
                    elif kind is Report:
                        self._announce(op)  # type: ignore[arg-type]
                    elif kind is Fetch:
                        answer = self._fetch(op)  # type: ignore[arg-type]
                    elif kind is Release:
                        self._release(op.next_due)  # type: ignore[attr-defined]
                except BaseException as exc:  # noqa: BLE001 - thrown into the program
                    failure = exc
                finally:
                    lock.acquire()
                    self._cond.notify_all()  # the plan changed: waiting threads look again
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

    def _fetch(self, op: Fetch) -> tuple[bool, Any, list[StoredEvent], bool]:
        store = self.ctx.store
        lease = self.ctx.lease
        acquired = True
        state = None
        events: list[StoredEvent] = []
        try:
            if op.need_lease:
                acquired = store.acquire(self.emitter_id, lease)
                if acquired:
                    state = store.state(self.emitter_id)
            if acquired:
                events = store.fetch(self.emitter_id, lease, op.limit, op.skip)
        except StoreError as exc:
            with self._lock:
                self._store_errors.add()
                count = self._store_errors.take(force=False)
            if count:
                logger.warning(
                    "webhook emitter %r cannot read its store, will try again: %s",
                    self.emitter_id,
                    exc,
                    extra=self._extra(),
                )
            return acquired, state, events, True
        return acquired, state, events, False

    def _begin(self, op: Begin) -> tuple[Optional[bool], bool]:
        store = self.ctx.store
        lease = self.ctx.lease
        event = op.event
        answer = self._store("a try", lambda: store.begin_try(lease, event, op.wall), event)
        paused = False
        if answer is False:
            try:
                paused = store.state(self.emitter_id).paused
            except StoreError:
                paused = False
        return answer, paused

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
                    closed = self.plan.closed
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
                    if not self.plan.closed:
                        self._cond.wait(delay)
                delay = min(delay * 2, _STORE_RETRY_LIMIT)

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

    def _send(self, op: Send, transport: Transport) -> tuple[TryOutcome, float]:
        """One try on the wire, reported to observers; never raises."""
        event = op.event
        if time.time() > op.not_after:
            # This thread stalled between recording the try and sending it: a holder
            # taking over could already be trying the event. Not sent; tried again.
            outcome = TryOutcome(False, error="not sent: the try was recorded too long ago")
            event.status_code, event.error = None, outcome.error
            return outcome, 0.0
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
        return outcome, duration

    def _record(self, op: Record) -> None:
        """Record what the plan decided after a try in the store: the outcome, the shared
        failing and hold state."""
        event = op.event
        decision: Decision = op.decision
        kind = decision.kind
        if kind in ("abandoned", "drop", "report"):
            return
        store = self.ctx.store
        lease = self.ctx.lease
        if kind == "finish":
            self._store("a delivery", lambda: store.finish(lease, event), event)
        elif kind == "retry_later":
            self._store("a failed try", lambda: store.retry_later(lease, event), event)
        elif kind == "give_up":
            self._store("a given-up event", lambda: store.give_up(lease, event), event)
        if decision.set_failing:
            since = decision.failing
            self._store_quietly(lambda: store.set_failing_since(self.emitter_id, lease, since))
        if decision.hold is not None:
            until = decision.hold
            self._store_quietly(lambda: store.set_hold(self.emitter_id, lease, until))

    def _announce(self, op: Report) -> None:
        """Tell what the plan decided after a try: the log line, ``on_delivery``, the
        counters, the pause it asked for."""
        event = op.event
        decision: Decision = op.decision
        outcome, duration = op.outcome
        kind = decision.kind
        if kind == "abandoned":
            return
        if kind == "drop":
            with self._lock:
                self._dropped += 1
            logger.warning(
                "webhook emitter %r %s while it was being delivered; 1 undelivered event "
                "dropped",
                self.emitter_id,
                self._close_reason,
                extra=self._try_extra(event, outcome, duration, "dropped"),
            )
            return
        if kind in ("finish", "give_up", "report"):
            self._report(event, outcome, duration)
        elif decision.wait is not None:
            logger.info(
                "webhook try %d of %d failed (%s), retrying in %.3f s",
                event.attempts,
                self.policy.max_attempts,
                outcome.error,
                decision.wait,
                extra=self._try_extra(event, outcome, duration, "retry"),
            )
        if decision.pause is not None:
            self._pause_for(event, decision.pause, self._try_extra(event, outcome, duration,
                                                                   "retry" if decision.keep
                                                                   else "given_up"))

    def _pause_for(self, event: StoredEvent, why: str, extra: dict[str, Any]) -> None:
        try:
            self.ctx.store.set_paused(self.emitter_id, True)
        except StoreError as exc:
            logger.warning(
                "webhook emitter %r could not record its pause in the store: %s",
                self.emitter_id,
                exc,
                extra=self._extra(event),
            )
        self.set_paused(True)  # before the WARNING says so, for whoever acts on it
        logger.warning("webhook emitter %r paused: %s", self.emitter_id, why, extra=extra)

    def _report(self, event: StoredEvent, outcome: TryOutcome, duration: float) -> None:
        """Log the outcome, call ``on_delivery``, count it."""
        first = self.plan.first_try.get(event.seq)
        result = DeliveryResult(
            emitter_id=self.emitter_id,
            event=event.event,
            request_id=event.request_id,
            delivered=outcome.ok,
            attempts=event.attempts,
            status_code=outcome.status_code,
            error=None if outcome.ok else outcome.error,
            elapsed=0.0 if first is None else time.monotonic() - first,
        )
        extra = self._try_extra(event, outcome, duration,
                                "delivered" if outcome.ok else "given_up")
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
        if full:
            self._log_full(full)

    # -- what observers and log handlers get ------------------------------------------------------

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
