"""The store calls of one emitter's delivering threads: fetch, the start of a try, and
what follows it, each retried or reported as the engine's guarantees need.

``_emitter.py`` performs the plan's :class:`~._ops.Fetch`, :class:`~._ops.Begin` and
:class:`~._ops.Record` ops through a :class:`StoreSteps`; it decides nothing.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Optional

from ._context import EmitterContext
from ._ops import Begin, Decision, Fetch, Record
from ._report import Reporter
from .stores._base import StoredEvent, StoreError

__all__ = ["StoreSteps"]

logger = logging.getLogger("webhooks_emitter._emitter")  # the name users filter on

#: Seconds between two tries of a store call that failed in a delivering thread (then more).
_STORE_RETRY_START = 0.05
_STORE_RETRY_LIMIT = 5.0


class StoreSteps:
    """The store calls of one emitter.

    Args:
        ctx: the instance (its store and lease).
        emitter_id: the emitter's id.
        report: where errors are counted and logged.
        closed: whether the emitter was closed (a failing call then gives up).
        pause: ``pause(seconds)``: wait before a failed call is tried again (cut short
            by a close).
    """

    def __init__(
        self,
        ctx: EmitterContext,
        emitter_id: str,
        report: Reporter,
        closed: Callable[[], bool],
        pause: Callable[[float], None],
    ) -> None:
        self.ctx = ctx
        self.emitter_id = emitter_id
        self.report = report
        self.closed = closed
        self.pause = pause

    def fetch(self, op: Fetch) -> tuple[bool, Any, list[StoredEvent], bool]:
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
            if self.report.store_error():
                logger.warning(
                    "webhook emitter %r cannot read its store, will try again: %s",
                    self.emitter_id,
                    exc,
                    extra=self.report.extra(),
                )
            return acquired, state, events, True
        return acquired, state, events, False

    def begin(self, op: Begin) -> tuple[Optional[bool], bool]:
        """``begin_try`` of ``op.event``, after its deferred outcomes, in one ``settle``."""
        store = self.ctx.store
        lease = self.ctx.lease
        event = op.event
        answer: Optional[bool]
        if op.outcomes:
            outcomes = [(report.decision.kind, report.event) for report in op.outcomes]
            now = op.wall
            settled = self.call(
                "a delivery", lambda: store.settle(lease, outcomes, event, now),
                op.outcomes[0].event,
            )
            answer = None if settled is None else settled[1]
            for report in op.outcomes:
                if report.decision.set_failing:
                    self.quietly(
                        functools.partial(
                            store.set_failing_since,
                            self.emitter_id,
                            lease,
                            report.decision.failing,
                        )
                    )
        elif event is None:
            return None, False
        else:
            try:
                answer = store.begin_try(lease, event, op.wall)  # the usual case
            except StoreError:
                answer = self.call("a try", lambda: store.begin_try(lease, event, op.wall), event)
        paused = False
        if answer is False:
            try:
                paused = store.state(self.emitter_id).paused
            except StoreError:
                paused = False
        return answer, paused

    def call(self, what: str, call: Callable[[], Any], event: StoredEvent) -> Any:
        """Run a store call for a try, retrying it (logged) until it answers.

        Returns None when the emitter was closed before the store answered: what the store
        holds stays as it was (the event may then be sent again, at least once).
        """
        delay = _STORE_RETRY_START
        while True:
            try:
                return call()
            except StoreError as exc:
                count = self.report.store_error()
                closed = self.closed()
                if count:
                    logger.warning(
                        "webhook emitter %r could not record %s in its store (%d time(s)), "
                        "retrying: %s",
                        self.emitter_id,
                        what,
                        count,
                        exc,
                        extra=self.report.extra(event),
                    )
                if closed:
                    return None
                self.pause(delay)
                delay = min(delay * 2, _STORE_RETRY_LIMIT)

    def quietly(self, call: Callable[[], None]) -> None:
        """A store call whose failure costs nothing lasting (shared state for handovers)."""
        try:
            call()
        except StoreError as exc:
            logger.warning(
                "webhook emitter %r could not update its state in the store: %s",
                self.emitter_id,
                exc,
                extra=self.report.extra(),
            )

    def record(self, op: Record) -> None:
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
            try:
                store.finish(lease, event)  # the usual case, without a closure
            except StoreError:
                self.call("a delivery", lambda: store.finish(lease, event), event)
        elif kind == "retry_later":
            self.call("a failed try", lambda: store.retry_later(lease, event), event)
        elif kind == "give_up":
            self.call("a given-up event", lambda: store.give_up(lease, event), event)
        if decision.set_failing:
            since = decision.failing
            self.quietly(lambda: store.set_failing_since(self.emitter_id, lease, since))
        if decision.hold is not None:
            until = decision.hold
            self.quietly(lambda: store.set_hold(self.emitter_id, lease, until))
