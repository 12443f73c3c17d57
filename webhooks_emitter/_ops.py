"""The vocabulary the engine's plan and its driver share: the ops a worker yields, the
decision that follows a try, and a worker's own bookkeeping.

See ``_plan.py`` for the decisions and ``_program.py`` for the worker program that yields
these ops; ``_emitter.py`` performs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Protocol

if TYPE_CHECKING:
    from .stores._base import StoredEvent

__all__ = [
    "LONGEST_TRY",
    "SEND_GRACE",
    "SETTLE",
    "SPAWN",
    "Begin",
    "Decision",
    "End",
    "Fetch",
    "Op",
    "Outcome",
    "Record",
    "Release",
    "Report",
    "Send",
    "Spawn",
    "Wait",
    "Worker",
]

#: A try is taken to last at most this long when the next holder's wait is reckoned.
LONGEST_TRY = 365 * 86400.0
#: Seconds a try may wait between the store recording its start and the request going out;
#: past that it is not sent (a failed try). So a try ends before its start plus
#: ``request_timeout`` plus this, the ``next_at`` a holder taking over after a death waits
#: for: the receiver never sees two tries of one emitter (of one key) overlap.
SEND_GRACE = 1.0


class Outcome(Protocol):
    """What the plan reads of a try's result (``_transport.TryOutcome``)."""

    @property
    def ok(self) -> bool: ...

    @property
    def status_code(self) -> Optional[int]: ...

    @property
    def retry_after(self) -> Optional[float]: ...

    @property
    def final(self) -> bool: ...


# -- what a worker asks its driver to do -------------------------------------------------


class Op:
    """One step a worker yields to its driver."""

    __slots__ = ()


class Fetch(Op):
    """Take the lease if ``need_lease``, read the emitter's state then, and fetch up to
    ``limit`` events not in ``skip``. Answer: ``(acquired, state, events, error)``."""

    __slots__ = ("grow", "limit", "need_lease", "skip", "trims", "wakes")

    def __init__(self, need_lease: bool, limit: int, skip: set[int], wakes: int, trims: int,
                 grow: bool) -> None:
        self.need_lease = need_lease
        self.limit = limit
        self.skip = skip
        self.wakes = wakes
        self.trims = trims
        self.grow = grow


class Begin(Op):
    """Record that a try of ``event`` starts at ``wall`` (``begin_try``, retried while the
    store fails), after the ``outcomes`` of earlier tries (:class:`Report` ops, not
    recorded yet), all in one ``Store.settle``; then tell those outcomes (as ``Report``
    does). ``event`` None: record and tell the outcomes only. Answer: ``(answer,
    paused)``: True, False (refused: paused, lease or event gone; ``paused`` says whether
    the store shows the emitter paused) or None (closed, or no event)."""

    __slots__ = ("event", "outcomes", "wall")

    def __init__(self, event: Optional[StoredEvent], wall: float,
                 outcomes: Optional[list[Report]] = None) -> None:
        self.event = event
        self.wall = wall
        self.outcomes = outcomes or []


class Send(Op):
    """Send one try of ``event``, unless the wall clock is past ``not_after`` (the try is
    then a failure, not sent: see ``SEND_GRACE``). Answer: ``(outcome, duration)``."""

    __slots__ = ("event", "not_after")

    def __init__(self, event: StoredEvent, not_after: float) -> None:
        self.event = event
        self.not_after = not_after


class Record(Op):
    """Record ``decision`` for ``event`` in the store (the outcome, the shared failing
    and hold state); with ``report``, then do what :class:`Report` does. Answer: ignored."""

    __slots__ = ("decision", "event", "outcome", "report")

    def __init__(self, event: StoredEvent, decision: Decision, outcome: Any,
                 report: bool = False) -> None:
        self.event = event
        self.decision = decision
        self.outcome = outcome
        self.report = report


class Report(Op):
    """Tell the user what ``decision`` means for ``event``: the log line, ``on_delivery``,
    the counters, a pause the plan asked for. Answer: ignored."""

    __slots__ = ("decision", "event", "outcome")

    def __init__(self, event: StoredEvent, decision: Decision, outcome: Any) -> None:
        self.event = event
        self.decision = decision
        self.outcome = outcome


class Wait(Op):
    """Wait until notified or ``timeout`` seconds (None: until notified)."""

    __slots__ = ("timeout",)

    def __init__(self, timeout: Optional[float]) -> None:
        self.timeout = timeout


class Release(Op):
    """Let go of the lease, noting ``next_due`` (Unix seconds) for the next holder."""

    __slots__ = ("next_due",)

    def __init__(self, next_due: float) -> None:
        self.next_due = next_due


class End:
    """What :meth:`Plan.step` answers when the worker should end; ``timer``: monotonic
    time at which the driver's timer starts a worker again (None: none)."""

    __slots__ = ("timer",)

    def __init__(self, timer: Optional[float] = None) -> None:
        self.timer = timer


class Decision:
    """What follows a try, for :class:`Record` (and the log).

    ``kind``: ``finish``, ``retry_later``, ``give_up`` (store calls), ``drop`` (a
    memory-store emitter closed mid-try), ``report`` (closed, delivered: report only) or
    ``abandoned`` (closed, and ``abandon`` logged it already: nothing).
    ``failing``: a value to store as ``failing_since`` (``None`` clears it), unchanged when
    ``set_failing`` is False. ``hold``: a Retry-After hold to store. ``pause``: why the
    emitter pauses itself (410, ``disable_after``), or None. ``wait``: seconds to the next
    try of a retried event. ``keep``: the event stays queued.
    """

    __slots__ = ("failing", "hold", "keep", "kind", "pause", "set_failing", "wait")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.failing: Optional[float] = None
        self.set_failing = False
        self.hold: Optional[float] = None
        self.pause: Optional[str] = None
        self.wait: Optional[float] = None
        self.keep = False


class Worker:
    """One delivering thread's bookkeeping in the plan."""

    __slots__ = ("crashed", "idle_deadline", "pending", "seeking", "seen")

    def __init__(self) -> None:
        self.pending: list[Report] = []  # outcomes to record with the next try's start
        self.seeking = False  # between asking for work and getting a try or the end
        self.idle_deadline = 0.0
        self.seen = 0  # the wake count when it decided to end
        self.crashed = False


class Spawn(Op):
    """Start one more worker (already counted by the plan). Answer: ignored."""

    __slots__ = ()


SPAWN = Spawn()


class _Settle:
    """:meth:`Plan.step`'s answer when the worker must first record its deferred outcomes."""

    __slots__ = ()


SETTLE = _Settle()
