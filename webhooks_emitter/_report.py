"""What an emitter tells: its log lines (with their structured fields), ``on_delivery``,
the observers of ``_observe``, and its counters.

The driver (``_emitter.py``) hands each try to :meth:`Reporter.send` and each decision the
plan took after it to :meth:`Reporter.announce`; nothing here decides what happens next.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional, Union

from . import _observe
from ._config import Config, DeliveryResult
from ._delivery import Deliverer
from ._logcount import RateLimitedCount
from ._ops import Decision, Record, Report, Send
from ._transport import Transport, TryOutcome
from .stores._base import Message, StoredEvent

__all__ = ["Reporter"]

logger = logging.getLogger("webhooks_emitter._emitter")  # the name users filter on


class Reporter:
    """One emitter's log lines, callbacks, observers and counters.

    Args:
        emitter_id: the emitter's id.
        config: its configuration (``on_delivery``, ``propagate_trace``, the URL).
        max_attempts: the most tries of one event (for the log lines).
    """

    def __init__(self, emitter_id: str, config: Config, max_attempts: int) -> None:
        self.emitter_id = emitter_id
        self.config = config
        self.max_attempts = max_attempts
        self.deliverer = Deliverer(emitter_id, config)
        self.lock = threading.Lock()
        self.delivered = self.given_up = self.dropped = self.retries = 0
        self.full = RateLimitedCount()
        self.store_errors = RateLimitedCount()
        self.observer_errors = RateLimitedCount()
        self.first_try: Callable[[int], Optional[float]] = lambda seq: None

    def extra(self, event: Any = None) -> dict[str, Optional[str]]:
        """The ``extra`` fields of a log line about the emitter (and maybe an event)."""
        return {
            "emitter_id": self.emitter_id,
            "event": event.event if event is not None else None,
            "request_id": event.request_id if event is not None else None,
        }

    def counters(self) -> tuple[int, int, int, int]:
        """``(delivered, given_up, dropped, retries)`` now."""
        with self.lock:
            return self.delivered, self.given_up, self.dropped, self.retries

    def count_dropped(self, count: int) -> None:
        """``count`` events were dropped (logged by the caller)."""
        with self.lock:
            self.dropped += count

    def queue_full(self, message: Message) -> None:
        """``message`` was not stored for the emitter: its queue is full."""
        with self.lock:
            self.dropped += 1
            self.full.add()
            count = self.full.take(force=False)
        if count:
            self.log_full(count, message)

    def flush_full(self) -> None:
        """Log what the full queue dropped and was not logged yet."""
        with self.lock:
            count = self.full.take(force=True)
        if count:
            self.log_full(count)

    def log_full(self, count: int, message: Optional[Message] = None) -> None:
        """The WARNING about events a full queue dropped."""
        logger.warning(
            "webhook emitter %r dropped %d event(s): its queue is full (max_queue_size %d)",
            self.emitter_id,
            count,
            self.config.max_queue_size,
            extra=self.extra(message),
        )

    def left_behind(
        self,
        reason: str,
        left: Optional[int],
        taken: int,
        durable: bool,
        error: Optional[Exception] = None,
    ) -> int:
        """The emitter was closed (``reason``) with ``left`` events in the store (None: the
        store could not say), ``taken`` of them under way. A memory store dropped the
        others (a loss: WARNING, counted), a durable one keeps them (INFO). Returns how
        many were dropped."""
        if left is None:
            logger.warning(
                "webhook emitter %r %s; the store could not count what it keeps: %s",
                self.emitter_id,
                reason,
                error,
                extra=self.extra(),
            )
            return 0
        if durable:
            if left:
                logger.info(
                    "webhook emitter %r %s; %d event(s) stay in the store for its next attach",
                    self.emitter_id,
                    reason,
                    left,
                    extra=self.extra(),
                )
            return 0
        dropped = max(left - taken, 0)
        if dropped:
            self.count_dropped(dropped)
            logger.warning(
                "webhook emitter %r %s with %d undelivered event(s), dropped",
                self.emitter_id,
                reason,
                dropped,
                extra=self.extra(),
            )
        return dropped

    def abandoned(self, taken: list[StoredEvent], reason: str, durable: bool) -> None:
        """``shutdown`` stopped waiting for the tries of ``taken`` still under way."""
        if durable:
            logger.info(
                "webhook emitter %r: %d try(ies) still under way at %s; the event(s) stay "
                "in the store and may be sent again",
                self.emitter_id,
                len(taken),
                reason,
                extra=self.extra(taken[0]),
            )
            return
        self.count_dropped(len(taken))
        for event in taken:
            logger.warning(
                "webhook emitter %r stopped while delivering (%s); 1 event may not have "
                "been delivered",
                self.emitter_id,
                reason,
                extra=self.extra(event),
            )

    #: WARNING lines about the emitter itself, by name: (format, then its arguments).
    _SAYINGS = {
        "dropped": "webhook emitter %r: %d undelivered event(s) dropped (%s)",
        "lease_lost": "webhook emitter %r lost its lease (not renewed in time); another "
        "process may deliver its events now",
        "release_failed": "webhook emitter %r could not let go of its lease (it will "
        "expire): %s",
        "pause_failed": "webhook emitter %r could not record its pause in the store: %s",
    }

    def say(self, what: str, *args: Any, event: Any = None) -> None:
        """Log one of the WARNING lines of ``_SAYINGS`` (``dropped`` with a count of 0 is
        not said; a count said is counted as dropped)."""
        if what == "dropped":
            if not args[0]:
                return
            self.count_dropped(args[0])
        logger.warning(self._SAYINGS[what], self.emitter_id, *args, extra=self.extra(event))

    def store_error(self) -> int:
        """Count a store error; the count to log now (0: not yet)."""
        with self.lock:
            self.store_errors.add()
            return self.store_errors.take(force=False)

    def send(self, op: Send, transport: Transport) -> tuple[TryOutcome, float]:
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
            extra = {
                k: v for scope in scopes if scope is not None for k, v in scope.headers.items()
            }
        began = time.monotonic()
        try:
            outcome = self.deliverer.send(transport, event, extra)
        except Exception:  # noqa: BLE001 - logged; the event is given up, not lost silently
            logger.exception(
                "webhook emitter %r failed to deliver", self.emitter_id, extra=self.extra(event)
            )
            outcome = TryOutcome(False, error="internal error (logged)", final=True)
        duration = time.monotonic() - began
        if observers:
            self._try_ended(observers, scopes, event, outcome, duration)
        event.status_code = outcome.status_code
        event.error = None if outcome.ok else outcome.error
        return outcome, duration

    def announce(
        self,
        op: Union[Report, Record],
        close_reason: str,
        pause: Callable[[StoredEvent, str, dict[str, Any]], None],
    ) -> None:
        """Tell what the plan decided after a try: the log line, ``on_delivery``, the
        counters, the pause it asked for."""
        event = op.event
        decision: Decision = op.decision
        outcome, duration = op.outcome
        kind = decision.kind
        if kind == "abandoned":
            return
        if kind == "drop":
            self.count_dropped(1)
            logger.warning(
                "webhook emitter %r %s while it was being delivered; 1 undelivered event "
                "dropped",
                self.emitter_id,
                close_reason,
                extra=self.try_extra(event, outcome, duration, "dropped"),
            )
            return
        if kind in ("finish", "give_up", "report"):
            self.report(event, outcome, duration)
        elif decision.wait is not None:
            logger.info(
                "webhook try %d of %d failed (%s), retrying in %.3f s",
                event.attempts,
                self.max_attempts,
                outcome.error,
                decision.wait,
                extra=self.try_extra(event, outcome, duration, "retry"),
            )
        if decision.pause is not None:
            pause(event, decision.pause, self.try_extra(event, outcome, duration,
                                                                   "retry" if decision.keep
                                                                   else "given_up"))

    def report(self, event: StoredEvent, outcome: TryOutcome, duration: float) -> None:
        """Log the outcome, call ``on_delivery``, count it."""
        callback = self.config.on_delivery
        extra: Optional[dict[str, Any]] = None
        if outcome.ok:
            if logger.isEnabledFor(logging.DEBUG):  # the fields cost more than the check
                extra = self.try_extra(event, outcome, duration, "delivered")
                logger.debug(
                    "webhook delivered in %d tries (HTTP %s)",
                    event.attempts,
                    outcome.status_code,
                    extra=extra,
                )
        else:
            extra = self.try_extra(event, outcome, duration, "given_up")
            logger.error(
                "webhook given up by emitter %r: event %r, request id %s, after %d tries: %s",
                self.emitter_id,
                event.event,
                event.request_id,
                event.attempts,
                outcome.error,
                extra=extra,
            )
        if callback is not None:
            first = self.first_try(event.seq)
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
            try:
                callback(result)
            except BaseException:  # noqa: BLE001 - not even SystemExit stops the emitter
                logger.exception(
                    "on_delivery of emitter %r raised",
                    self.emitter_id,
                    extra=extra or self.try_extra(
                        event, outcome, duration, "delivered" if outcome.ok else "given_up"
                    ),
                )
        self._observed_outcome(event, "delivered" if outcome.ok else "given_up")
        with self.lock:
            self.retries += max(event.attempts - 1, 0)
            if outcome.ok:
                self.delivered += 1
            else:
                self.given_up += 1
            full = self.full.take(force=False)
        if full:
            self.log_full(full)

    # -- what observers and log handlers get ------------------------------------------------------

    def try_extra(
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
        with self.lock:
            self.observer_errors.add()
            count = self.observer_errors.take(force=False)
        if count:
            logger.warning(
                "webhook emitter %r: an observer failed (%d time(s)); ignored",
                self.emitter_id,
                count,
                exc_info=True,
                extra=self.extra(event),
            )
