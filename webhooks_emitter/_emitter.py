"""One attached emitter: its daemon thread, its queue, pause/restart, flush and counters."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Optional

from ._config import Config, DeliveryResult, EmitterStats
from ._delivery import Deliverer, Delivery, Interrupted
from ._queue import EventQueue, MemoryQueue, Message
from ._transport import Transport, TryOutcome

__all__ = ["Emitter"]

logger = logging.getLogger(__name__)

#: The least seconds between two "queue full" warnings of one emitter.
_DROP_WARNING_INTERVAL = 5.0


class Emitter:
    """An attached endpoint: a bounded FIFO drained by a daemon thread, one delivery at a time.

    Args:
        emitter_id: the emitter's id.
        events: the event names it is subscribed to (``"*"`` for every event).
        config: how it delivers.
    """

    def __init__(self, emitter_id: str, events: frozenset[str], config: Config) -> None:
        self.emitter_id = emitter_id
        self.events = events
        self.config = config
        self._paused = False
        self._setup()

    def _setup(self) -> None:
        """Make the runtime state: new at attach, and again in a forked child."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running = threading.Event()  # set while not paused (or when closing)
        self._interrupt = threading.Event()  # set to cut a backoff wait short
        if not self._paused:
            self._running.set()
        else:
            self._interrupt.set()
        self._closed = False
        self._pending = 0  # queued plus in flight
        self._held: Optional[Message] = None  # taken from the queue, not yet reported
        self._busy = False  # ... and is delivering it (not paused, not closed)
        self._abandoned = False  # shutdown() reported the event under way as dropped
        self._delivered = self._given_up = self._dropped = self._retries = 0
        self._unreported_drops = 0
        self._last_drop_warning = float("-inf")
        self._queue: EventQueue = MemoryQueue()
        self._transport = Transport(self.config)
        self._deliverer = Deliverer(self.emitter_id, self.config, self._transport, self._interrupt)
        self._thread: Optional[threading.Thread] = None

    def _extra(self, message: Optional[Message] = None) -> dict[str, Optional[str]]:
        return {
            "emitter_id": self.emitter_id,
            "event": message.event if message else None,
            "request_id": message.request_id if message else None,
        }

    # -- the caller's side ---------------------------------------------------------------

    def start(self) -> None:
        """Start the thread (again after a fork)."""
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(
                target=self._run,
                args=(self._queue, self._deliverer),
                name=f"webhooks-emitter:{self.emitter_id}",
                daemon=True,
            )
            self._thread.start()

    def submit(self, message: Message) -> bool:
        """Queue ``message`` unless the emitter is full or closed; never blocks on I/O."""
        if self._pid != os.getpid():
            self.after_fork()
        with self._lock:
            if not self._closed and self._pending < self.config.max_queue_size:
                self._pending += 1
                if self._thread is None:
                    self._start_locked()
                self._queue.put(message)
                return True
            self._dropped += 1
            closed = self._closed
            if not closed:
                self._unreported_drops += 1
                count = self._take_drops(force=False)
        if closed:  # emitted while detach ran: rare, so each is told
            logger.warning(
                "webhook emitter %r dropped 1 event: it was detached",
                self.emitter_id,
                extra=self._extra(message),
            )
        elif count:
            self._log_drops(count, message)
        return False

    def _take_drops(self, *, force: bool) -> int:
        """With the lock held: the drops to log now (at most one line per interval)."""
        now = time.monotonic()
        if not self._unreported_drops or (
            not force and now - self._last_drop_warning < _DROP_WARNING_INTERVAL
        ):
            return 0
        count, self._unreported_drops = self._unreported_drops, 0
        self._last_drop_warning = now
        return count

    def _log_drops(self, count: int, message: Optional[Message] = None) -> None:
        logger.warning(
            "webhook emitter %r dropped %d event(s): its queue is full (max_queue_size %d)",
            self.emitter_id,
            count,
            self.config.max_queue_size,
            extra=self._extra(message),
        )

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Stop delivering; what is queued stays queued. A backoff wait ends at once."""
        with self._lock:
            self._paused = True
            self._running.clear()
            self._interrupt.set()
            self._idle.notify_all()

    def restart(self) -> None:
        """Resume delivering after ``pause``; a no-op when running."""
        with self._lock:
            if not self._paused:
                return
            self._paused = False
            # The interrupt stays set: the thread clears it when it resumes, so a pause that
            # came just before the thread entered its backoff wait still cuts that wait short.
            self._running.set()
            count = self._take_drops(force=True)  # what was dropped while paused
        if count:
            self._log_drops(count)

    def flush(self, deadline: Optional[float]) -> bool:
        """Wait until nothing is queued or in flight (or the emitter is paused or closed).

        Args:
            deadline: a ``time.monotonic()`` value to give up at, or None to wait forever.
        """
        with self._idle:
            while self._pending and not self._paused and not self._closed:
                if deadline is None:
                    self._idle.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._idle.wait(remaining)
            return not self._pending or self._paused

    def close(self) -> int:
        """Stop the thread and drop what the emitter holds; returns how many were dropped.

        What is queued, and an event held between tries (paused, or waiting to retry), is
        dropped and logged in one line with its count. A try under way ends on its own:
        delivered, it is reported as usual; failed, it is dropped and logged then.
        """
        with self._lock:
            if self._closed:
                return 0
            self._closed = True
            self._interrupt.set()
            self._running.set()
            count = len(self._queue.drain())
            self._queue.close()
            if self._held is not None and not self._busy:
                self._held = None
                count += 1
            self._pending -= count
            self._dropped += count
            self._idle.notify_all()
            thread = self._thread
            full = self._take_drops(force=True)
        if full:
            self._log_drops(full)
        if count:
            logger.warning(
                "webhook emitter %r detached with %d undelivered event(s), dropped",
                self.emitter_id,
                count,
                extra=self._extra(),
            )
        if thread is None:
            self._transport.close()
        return count

    def abandon(self) -> int:
        """After ``close``: drop an event whose delivery is still under way; returns 0 or 1.

        ``shutdown`` calls it when its time is up, so that what it leaves behind is logged
        even when the interpreter exits before that try ends; the thread then reports
        nothing more about it.
        """
        with self._lock:
            message = self._held
            if not (self._closed and message is not None and self._busy):
                return 0
            self._held = None
            self._abandoned = True
        self._drop(message, "stopped while delivering")
        return 1

    def join(self, timeout: Optional[float]) -> None:
        """Wait up to ``timeout`` seconds for the thread to end after ``close``."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def stats(self) -> EmitterStats:
        """The emitter's counters now."""
        with self._lock:
            return EmitterStats(
                queued=self._pending,
                delivered=self._delivered,
                given_up=self._given_up,
                dropped=self._dropped,
                retries=self._retries,
                paused=self._paused,
            )

    def after_fork(self) -> None:
        """In a forked child: new lock, thread, session and an empty queue; same config."""
        self._setup()

    # -- the emitter's thread -------------------------------------------------------------

    def _run(self, queue: EventQueue, deliverer: Deliverer) -> None:
        current: Optional[Delivery] = None
        try:
            while True:
                if current is None:
                    message = queue.get()
                    if message is None:
                        return
                    with self._lock:
                        closed = self._closed
                        self._held = None if closed else message
                    if closed:  # taken from the queue just as close() drained it
                        self._drop(message, "detached")
                        return
                    current = Delivery(message)
                self._running.wait()
                with self._lock:
                    if self._closed:
                        return  # close() counted the held event
                    if not self._paused:
                        self._interrupt.clear()
                    self._busy = True
                outcome = self._deliver(deliverer, current)
                with self._lock:
                    self._busy = False
                    closed = self._closed
                    abandoned = self._abandoned
                    gone = (
                        outcome is not None
                        and outcome.status_code == 410
                        and self.config.pause_on_gone
                    )
                    if closed or (outcome is not None and not gone):
                        self._held = None  # this thread reports or drops it now
                if closed:
                    if abandoned:
                        return  # abandon() counted and logged it
                    if outcome is not None and outcome.ok:
                        self._finish(current, outcome)
                    else:
                        self._drop(current.message, "detached while it was being delivered")
                    return
                if outcome is None:
                    continue  # interrupted by pause: tried again after restart
                if gone:
                    self.pause()  # before the WARNING says so, for whoever acts on it
                    logger.warning(
                        "webhook emitter %r paused: the receiver answered 410 Gone; "
                        "restart it to resume",
                        self.emitter_id,
                        extra=self._extra(current.message),
                    )
                    continue
                self._finish(current, outcome)
                current = None
        finally:
            self._transport.close()

    def _deliver(self, deliverer: Deliverer, delivery: Delivery) -> Optional[TryOutcome]:
        """Run the delivery; None when pause, detach or shutdown cut it short."""
        try:
            return deliverer.run(delivery)
        except Interrupted:
            return None
        except BaseException:  # noqa: BLE001 - the thread must survive anything
            logger.exception(
                "webhook emitter %r failed to deliver; the event is given up",
                self.emitter_id,
                extra=self._extra(delivery.message),
            )
            return TryOutcome(False, error="internal error (logged)")

    def _drop(self, message: Message, why: str) -> None:
        """Count and log one event this thread drops."""
        with self._lock:
            self._pending -= 1
            self._dropped += 1
            self._idle.notify_all()
        logger.warning(
            "webhook emitter %r %s; 1 undelivered event dropped",
            self.emitter_id,
            why,
            extra=self._extra(message),
        )

    def _finish(self, delivery: Delivery, outcome: TryOutcome) -> None:
        message = delivery.message
        started = delivery.started if delivery.started is not None else time.monotonic()
        result = DeliveryResult(
            emitter_id=self.emitter_id,
            event=message.event,
            request_id=message.request_id,
            delivered=outcome.ok,
            attempts=delivery.tries,
            status_code=outcome.status_code,
            error=None if outcome.ok else outcome.error,
            elapsed=time.monotonic() - started,
        )
        extra = self._extra(message)
        if outcome.ok:
            logger.debug(
                "webhook delivered in %d tries (HTTP %s)",
                delivery.tries,
                outcome.status_code,
                extra=extra,
            )
        else:
            logger.error(
                "webhook given up by emitter %r: event %r, request id %s, after %d tries: %s",
                self.emitter_id,
                message.event,
                message.request_id,
                delivery.tries,
                outcome.error,
                extra=extra,
            )
        callback = self.config.on_delivery
        if callback is not None:
            try:
                callback(result)
            except BaseException:  # noqa: BLE001 - not even SystemExit stops the emitter
                logger.exception("on_delivery of emitter %r raised", self.emitter_id, extra=extra)
        with self._lock:
            self._pending -= 1
            self._retries += max(delivery.tries - 1, 0)
            if outcome.ok:
                self._delivered += 1
            else:
                self._given_up += 1
            if not self._pending:
                self._idle.notify_all()
            drops = self._take_drops(force=False)
        if drops:
            self._log_drops(drops)
