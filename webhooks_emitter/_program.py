"""The program of one delivering thread: the plan's decisions and the ops that carry them
out, as a generator the driver runs (``_emitter.py``) or a test drives
(``tests/unit/test_engine_simulation.py``).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Callable, Optional

from ._ops import (
    SEND_GRACE,
    SETTLE,
    SPAWN,
    Begin,
    End,
    Fetch,
    Op,
    Record,
    Release,
    Report,
    Send,
    Wait,
    Worker,
)
from ._plan import Plan

if TYPE_CHECKING:
    from .stores._base import StoredEvent

__all__ = ["worker"]


def worker(
    plan: Plan,
    clock: Callable[[], tuple[float, float]],
    on_lease: Callable[[], None],
    on_timer: Callable[[float], None],
) -> Generator[Op, Any, None]:
    """One delivering thread's program: the plan's decisions, and the ops that carry them
    out, yielded to the driver (which lets its lock go while it performs each op).

    The worker was counted by :meth:`Plan.spawn` before it started. An exception thrown
    in at a yield (a driver's op failed unexpectedly) leaves its event queued, ends the
    worker as usual (the lease let go) and is raised again at the end.

    Args:
        plan: the emitter's plan.
        clock: ``() -> (mono, wall)``.
        on_lease: called when the lease was taken (the driver has it renewed).
        on_timer: ``on_timer(mono)``: a worker should start at that time.
    """
    me = Worker()
    event: Optional[StoredEvent] = None
    failure: Optional[BaseException] = None
    try:
        while True:
            mono, wall = clock()
            action = plan.step(me, mono, wall)
            if action is SETTLE:
                yield Begin(None, wall, me.pending)
                plan.settled(me)
                continue
            if isinstance(action, Wait):
                yield action
                continue
            if isinstance(action, Fetch):
                acquired, state, events, error = yield action
                end, leased = plan.fetched(me, action, acquired, state, events, error, clock()[0])
                if leased:
                    on_lease()
                if end is None:
                    continue
                action = end
            if isinstance(action, End):
                if action.timer is not None:
                    on_timer(action.timer)
                break
            event = action
            yield from _attempt(plan, me, event, clock)
            event = None
    except GeneratorExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - raised again once the worker has ended
        plan.crashed(me, event)
        failure = exc
    next_due = plan.ending()
    if next_due is not None:
        yield Release(next_due)
    if plan.ended(me, clock()[0]):
        yield SPAWN
    if failure is not None:
        raise failure


def _attempt(
    plan: Plan, me: Worker, event: StoredEvent, clock: Callable[[], tuple[float, float]]
) -> Generator[Op, Any, None]:
    """One try of a taken event: recorded (with the worker's deferred outcomes), sent,
    its outcome recorded now or deferred to the next try's start."""
    if plan.more_workers():
        yield SPAWN
    wall = clock()[1]
    due = plan.begin(event, wall)
    answer, paused = yield Begin(event, wall, me.pending)
    if me.pending:
        plan.settled(me)
    if not answer:
        plan.not_started(event, due, answer, paused)
        return
    mono, wall = clock()
    plan.started(event, mono, wall)
    outcome, duration = yield Send(event, wall + SEND_GRACE)
    decision = plan.decide(event, outcome, clock()[1])
    if decision.keep:
        yield Record(event, decision, (outcome, duration), False)
        plan.done(event, True)  # waiting now: a detach counts it among the queued
        yield Report(event, decision, (outcome, duration))
    elif not plan.defer(me, event, decision, (outcome, duration)):
        # Recorded, then told (on_delivery) in the same op: both before flush may end.
        yield Record(event, decision, (outcome, duration), True)
        plan.done(event, False)
