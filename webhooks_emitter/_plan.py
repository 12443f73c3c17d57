"""The decisions of one emitter's delivery, apart from threads, clocks and I/O.

An attached emitter delivers its stored events with threads on demand (``_emitter.py``);
every choice those threads make is taken here, by a :class:`Plan` that holds no lock,
reads no clock and calls no store. It keeps the emitter's *window* (the next queued events,
fetched under its lease), the ordering keys and tries under way, the ``Retry-After`` hold
and ``max_rate`` spacing, the trust in its lease, and the bookkeeping that lets threads
come and go without stranding an event.

A delivering thread runs ``_program.worker``, a generator: it calls the plan (with the
driver's lock held) and *yields* what must happen outside it, one :class:`Op` at a time
(fetch from the store, record the start of a try, send it, record its outcome, wait, let
go of the lease); the driver performs the op with its lock let go and sends the answer
back. Between two yields nothing else runs on this emitter's state, so a test can run the
very same generators against a fake store, transport and clock, interleaving them at
every yield, and check the invariants after each step (``tests/unit/test_engine_simulation.py``).
This is tenacity's ``DoAttempt``/``DoSleep`` and h11's "bytes in, events out" applied to
one emitter.

Time comes in as arguments: ``mono`` (monotonic seconds, for waits and lease trust) and
``wall`` (Unix seconds, the store's clock, for ``next_at``, holds and ``max_rate``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from ._ops import (
    LONGEST_TRY,
    SEND_GRACE,
    SETTLE,
    Decision,
    End,
    Fetch,
    Outcome,
    Report,
    Wait,
    Worker,
)

if TYPE_CHECKING:
    from .stores._base import EmitterState, StoredEvent

__all__ = ["Plan"]


class Plan:
    """The state and decisions of one emitter; every method is called with the driver's
    lock held, and none blocks.

    Args:
        max_in_flight, min_interval (1 / max_rate, or 0), disable_after, request_timeout,
        pause_on_gone: from the emitter's ``Config``.
        next_wait: ``RetryPolicy.next_wait``: seconds before the next try, None to give up.
        durable: whether the store outlives the process (leases that can be lost).
        lease_timeout, poll_interval: the store's.
        delivers: False in a ``deliver=False`` instance (no worker ever starts).
    """

    def __init__(
        self,
        *,
        max_in_flight: int,
        min_interval: float,
        disable_after: Optional[float],
        request_timeout: float,
        pause_on_gone: bool,
        next_wait: Callable[[int, Any], Optional[float]],
        durable: bool,
        lease_timeout: float,
        poll_interval: float,
        delivers: bool = True,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.min_interval = min_interval
        self.disable_after = disable_after
        self.request_timeout = min(request_timeout, LONGEST_TRY)
        self.pause_on_gone = pause_on_gone
        self.next_wait = next_wait
        self.durable = durable
        self.lease_timeout = lease_timeout
        self.poll_interval = poll_interval
        self.delivers = delivers
        self.window_size = max(32, 4 * max_in_flight)
        self.window: list[StoredEvent] = []  # fetched, not finished, in seq order
        self.taken: dict[int, StoredEvent] = {}  # seq -> event a worker tries or reports
        self.first_try: dict[int, float] = {}  # seq -> mono of its first try here
        # Delivered or given up here, recorded in the store with the next try's start
        # (one commit per delivery): out of the window, still skipped by fetches.
        self.settling: dict[int, StoredEvent] = {}
        self.workers = 0
        self.seeking = 0  # workers between asking for work and getting some
        self.fetching = False  # a worker's Fetch is under way (one at a time)
        self.more = True  # the store may hold events that are not in the window
        self.wakes = 0  # counts wakes: a fetch or an ending worker knows it missed one
        self.trims = 0  # counts window trims: a fetch under way knows it is stale
        self.refresh = False  # read the waiting events' state again (a poll asked)
        self.releasing = False  # the last worker is letting go of the lease
        self.lease = False
        self.lease_until = 0.0  # mono: the lease is trusted until then
        self.lease_since = 0.0  # mono: held since then
        self.yield_until = 0.0  # mono: let go for others; not taken again before
        self.closed = False
        self.paused = False
        self.hold_until = 0.0  # wall: Retry-After holds new tries until then
        self.last_try_at = 0.0  # wall: start of the last try (max_rate)
        self.starting = False  # max_rate: a try was picked and has not started
        self.failing_since: Optional[float] = None
        self.timer_at: Optional[float] = None  # mono: a timer will start a worker then
        self.predecessor = False  # a detached incarnation of this id still runs
        self.leases_held: Callable[[], int] = lambda: 1  # the instance's count (yield)
        self.idle_timeout = 30.0  # the instance's; the driver keeps it current
        self.done_count = 0  # events let go of (flush waiters look again)

    # -- inputs from the caller's side -------------------------------------------------

    def spawn(self) -> bool:
        """Whether to start one more worker now (counted as started when True)."""
        if (
            self.closed
            or self.paused
            or not self.delivers
            or self.releasing  # the ending worker starts one once the lease is let go
            or self.predecessor  # the detached incarnation's last worker starts one
        ):
            return False
        self.workers += 1
        return True

    def wake(self) -> bool:
        """New events were stored for this emitter; True: start a worker."""
        self.more = True
        self.wakes += 1
        if self.seeking:
            return False  # a worker looking for work sees it (the driver notifies)
        return self.workers < self.max_in_flight and self.spawn()

    def kick(self, mono: float, refresh: bool = False) -> bool:
        """A timer fired or a poll found work; True: start a worker."""
        self.timer_at = None
        if refresh:
            self.refresh = True
        if self.yield_until > mono:
            return False  # it let go of its lease for other processes to take
        return self.wake()

    def schedule(self, at: float) -> bool:
        """A wake-up at mono ``at`` is wanted; True unless one comes no later."""
        if self.timer_at is not None and self.timer_at <= at:
            return False
        self.timer_at = at
        return True

    def set_paused(self, paused: bool) -> bool:
        """Pause or resume here; True: start a worker (a resume)."""
        if paused == self.paused:
            return False
        self.paused = paused
        if paused:
            return False
        self.hold_until = 0.0
        self.failing_since = None
        for event in self.window:
            if event.seq not in self.taken:  # one under way keeps its takeover wait
                event.next_at = 0.0  # a wait cut short by the pause: tried again at once
        self.more = True
        self.wakes += 1  # a worker ending because of the pause starts one again
        return self.workers == 0 and self.spawn()

    def due_now(self) -> None:
        """Cut every wait short (a backoff, a hold); the pause stays."""
        self.hold_until = 0.0
        for event in self.window:
            if event.seq not in self.taken:
                event.next_at = 0.0

    def close(self) -> int:
        """Detached or shut down: start nothing more; returns the tries under way."""
        self.closed = True
        self.trim()
        return len(self.taken)

    def abandon(self) -> tuple[list[StoredEvent], bool]:
        """After ``close``, the end is here: forget the tries under way. Returns them and
        whether the lease must be let go now (the ending workers will not)."""
        taken = list(self.taken.values())
        if not (self.closed and taken):
            return [], False
        self.taken.clear()
        release = self.lease and self.durable
        self.lease = False
        return taken, release

    def predecessor_ended(self) -> bool:
        """The detached incarnation of this id has ended; True: start a worker."""
        self.predecessor = False
        return self.wake()

    def lease_renewed(self, until: float) -> None:
        """The lease was renewed: trust it until mono ``until``."""
        if self.lease:
            self.lease_until = until

    def lease_lost(self) -> bool:
        """Another process holds the lease now; True when it was held (log it)."""
        if not self.lease:
            return False
        self.lease = False
        self.trim()
        return True

    def trim(self) -> None:
        """Forget the fetched events no worker has taken (the lease is gone, or their
        state must be read again); a fetch under way then drops what it read."""
        self.window = [e for e in self.window if e.seq in self.taken]
        self.trims += 1

    def next_due(self) -> float:
        """When the next try is due (wall), for the next holder of the lease."""
        if not self.window:
            return 0.0
        head = self.window if self.max_in_flight > 1 else self.window[:1]
        return max(min(e.next_at for e in head), self.hold_until)

    # -- a worker's side -------------------------------------------------------------------

    def step(self, worker: Worker, mono: float, wall: float) -> Any:
        """What ``worker`` does next: a :class:`Fetch`, an event to try (taken for it),
        a :class:`Wait`, or an :class:`End`."""
        if not worker.seeking:
            worker.seeking = True
            self.seeking += 1
            worker.idle_deadline = mono + self.idle_timeout
        if worker.pending:
            # Outcomes wait to be recorded with the start of the next try: only when one
            # can start at once; anything else (a wait, a fetch, the end) records them first.
            event = self._next_at_once(worker, mono, wall)
            if event is None:
                return SETTLE
            self.taken[event.seq] = event
            worker.seeking = False
            self.seeking -= 1
            return event
        if self.closed or self.paused or self.predecessor or self.yield_until > mono:
            return self._end(worker)
        if (
            self.durable
            and self.lease
            and not self.taken
            and mono - self.lease_since > self.lease_timeout
            and self.leases_held() > 1
        ):
            # Held long enough while this instance holds others: let another process
            # take it, so that the work spreads over the workers.
            self.yield_until = mono + self.poll_interval * 4
            return self._end(worker)
        if self.refresh:
            self.refresh = False
            if self.lease and any(e.next_at > wall for e in self.window):
                self.trim()
                self.more = True
        if self.lease and mono > self.lease_until:
            # Not renewed in time (a frozen process, a lost database): trust nothing
            # fetched under it; acquire it again before any new try.
            self.lease = False
            self.trim()
        if not self.lease or (self.more and len(self.window) <= self.window_size // 2):
            if self.fetching:
                return Wait(None)
            return self._fetch(grow=False)
        event, wait = self._pick(wall, worker)
        if event is not None:
            self.taken[event.seq] = event
            worker.seeking = False
            self.seeking -= 1
            return event
        if self.more and self.max_in_flight > 1 and not self.fetching:
            # Nothing ready among those fetched (their keys are busy): look further.
            return self._fetch(grow=True)
        if self.seeking > 1:
            return self._end(worker)  # another worker is already looking for work
        if wait is None:
            if self.taken:
                return Wait(None)  # an outcome will notify
            if mono >= worker.idle_deadline:
                return self._end(worker)
            return Wait(worker.idle_deadline - mono)
        if wait > self.idle_timeout and not self.taken:
            self.timer_at = mono + wait
            return self._end(worker, timer=self.timer_at)
        worker.idle_deadline = mono + wait + self.idle_timeout
        return Wait(wait)

    def _next_at_once(self, worker: Worker, mono: float, wall: float) -> Optional[StoredEvent]:
        if (
            self.closed
            or self.paused
            or self.predecessor
            or self.refresh
            or self.yield_until > mono
            or not self.lease
            or mono > self.lease_until
            or (self.more and len(self.window) <= self.window_size // 2)
        ):
            return None
        return self._pick(wall, worker)[0]  # no side effect: deferring needs min_interval 0

    def defer(self, worker: Worker, event: StoredEvent, decision: Decision,
              outcome: Any) -> bool:
        """Keep a delivered (or given-up) event's outcome to record with the next try's
        start, in one commit; False when it must be recorded now."""
        if (
            decision.kind not in ("finish", "give_up")
            or decision.pause is not None
            or self.min_interval
            or self.closed
        ):
            return False
        self.taken.pop(event.seq, None)
        self.settling[event.seq] = event
        window = self.window
        if window and window[0] is event:
            del window[0]
        else:
            try:
                window.remove(event)
            except ValueError:
                pass
        worker.pending.append(Report(event, decision, outcome))
        return True

    def settled(self, worker: Worker) -> None:
        """The worker's deferred outcomes were recorded and told."""
        for report in worker.pending:
            seq = report.event.seq
            self.settling.pop(seq, None)
            self.first_try.pop(seq, None)
            self.done_count += 1
        worker.pending = []

    def more_workers(self) -> bool:
        """After a worker took an event: True to start another (more may be ready)."""
        return (
            self.workers < self.max_in_flight
            and self.seeking == 0
            and len(self.taken) < self.max_in_flight
            and len(self.window) > len(self.taken)
            and self.spawn()
        )

    def _end(self, worker: Worker, timer: Optional[float] = None) -> End:
        worker.seeking = False
        self.seeking -= 1
        worker.seen = self.wakes
        return End(timer)

    def _fetch(self, grow: bool) -> Fetch:
        self.fetching = True
        need_lease = not self.lease
        if need_lease:
            # Without the lease only the events under way are still ours: the store must
            # answer every other one again (a paused begin leaves its event in the window).
            self.window = [e for e in self.window if e.seq in self.taken]
        skip = {e.seq for e in self.window}
        if self.settling:
            skip.update(self.settling)  # done here, not recorded yet: not fetched again
        size = self.window_size
        limit = size if grow or need_lease else size - len(self.window)
        return Fetch(need_lease, max(limit, 1), skip, self.wakes, self.trims, grow)

    def fetched(
        self,
        worker: Worker,
        fetch: Fetch,
        acquired: bool,
        state: Optional[EmitterState],
        events: list[StoredEvent],
        error: bool,
        mono: float,
    ) -> tuple[Optional[End], bool]:
        """The answer to ``fetch``. Returns an :class:`End` when the worker should end
        (the lease is another's, the store fails: then with a timer a second later), and
        whether the lease was taken now (the driver has it renewed)."""
        self.fetching = False
        if error:
            taken_now = False
            if fetch.need_lease and acquired and state is not None:
                self.lease = True  # acquired before the error: let it go at the end
                self.lease_until = mono + self.lease_timeout * 0.5
                taken_now = True
            if self.lease and self.window:
                return None, taken_now
            self.timer_at = mono + 1.0
            return self._end(worker, timer=self.timer_at), taken_now
        taken_now = False
        if fetch.need_lease:
            if not acquired:
                return self._end(worker), False
            assert state is not None
            self.lease = True
            self.lease_until = mono + self.lease_timeout * 0.5 if self.durable else float("inf")
            self.lease_since = mono
            self.hold_until = state.hold_until
            self.last_try_at = max(self.last_try_at, state.last_try_at)
            self.failing_since = state.failing_since
            if state.paused:
                self.paused = True
            taken_now = True
            if any(e.seq not in self.taken for e in self.window):
                # A try under way when the fetch began has ended, its event waiting again:
                # the fetch skipped it, and what this process knows of it may be stale
                # (the lease was another's meanwhile). Read it again, with the rest.
                self.window = [e for e in self.window if e.seq in self.taken]
                self.more = True
                return None, taken_now
        if self.closed:
            return self._end(worker), taken_now
        if self.trims != fetch.trims:
            # The window was trimmed meanwhile: the fetch skipped events no longer in it
            # (one waiting on its key, say). Fetch again: the store answers them again.
            self.more = True
            return None, taken_now
        fresh = [e for e in events if e.seq not in fetch.skip]
        if fresh:
            self.window.extend(fresh)
            self.window.sort(key=_seq)
        # An event stored meanwhile may have come after the fetch.
        self.more = len(events) >= fetch.limit or self.wakes != fetch.wakes
        return None, taken_now

    def _pick(
        self, wall: float, worker: Worker
    ) -> tuple[Optional[StoredEvent], Optional[float]]:
        """The event to try now, or None and the seconds until one may be (None: unknown)."""
        if self.hold_until > wall:
            return None, self.hold_until - wall
        if len(self.taken) >= self.max_in_flight or self.starting:
            return None, None  # a slot, or the start of the try picked last, frees it
        chosen: Optional[StoredEvent] = None
        soonest: Optional[float] = None
        if self.max_in_flight == 1:
            if self.window:
                head = self.window[0]
                if head.next_at <= wall:
                    chosen = head
                else:
                    soonest = head.next_at
        else:
            busy = {e.ordering_key for e in self.taken.values() if e.ordering_key}
            if self.settling:
                # A delivery not recorded yet still holds its key, but for the worker that
                # records it with its next try's start (in one transaction).
                mine = {r.event.seq for r in worker.pending}
                busy.update(
                    e.ordering_key for e in self.settling.values()
                    if e.ordering_key and e.seq not in mine
                )
            for event in self.window:
                if event.seq in self.taken:
                    continue
                key = event.ordering_key
                if key is not None:
                    if key in busy:
                        continue
                    busy.add(key)  # the oldest of its key: those behind it wait
                if event.next_at <= wall:
                    chosen = event
                    break
                if soonest is None or event.next_at < soonest:
                    soonest = event.next_at
        if chosen is None:
            return None, None if soonest is None else max(soonest - wall, 0.0)
        if self.min_interval:
            gap = self.last_try_at + self.min_interval - wall
            if gap > 0:
                return None, gap
            # Until this try has started no other does: the next one is spaced from the
            # moment this one is sent, not from when it was picked.
            self.starting = True
        return chosen, None

    def begin(self, event: StoredEvent, wall: float) -> float:
        """Before ``begin_try``: count the try and make the event due no sooner than its
        end (what a takeover after a death waits for). Returns the ``next_at`` to restore
        if the store refuses."""
        event.attempts += 1
        due = event.next_at
        event.next_at = wall + self.request_timeout + SEND_GRACE
        return due

    def started(self, event: StoredEvent, mono: float, wall: float) -> None:
        """``begin_try`` recorded the try: it is sent now."""
        self.last_try_at = max(self.last_try_at, wall)
        self.first_try.setdefault(event.seq, mono)
        self.starting = False

    def not_started(self, event: StoredEvent, due: float, answer: Optional[bool],
                    paused: bool) -> None:
        """``begin_try`` refused (``answer`` False; ``paused``: the store says so) or the
        emitter closed (None): the try is not sent."""
        event.attempts -= 1
        event.next_at = due
        self.taken.pop(event.seq, None)
        self.starting = False
        if paused:
            self.paused = True
        elif answer is False:
            self.lease = False
            self.trim()

    def decide(self, event: StoredEvent, outcome: Outcome, wall: float) -> Decision:
        """What follows the try of ``event`` that ended with ``outcome``."""
        if self.closed and not self.durable:
            if event.seq not in self.taken:
                return Decision("abandoned")  # abandon() logged it already
            return Decision("report" if outcome.ok else "drop")
        if outcome.ok:
            decision = Decision("finish")
            if self.failing_since is not None:
                self.failing_since = None
                decision.set_failing = True
            return decision
        gone = outcome.status_code == 410 and self.pause_on_gone
        wait = None if gone else self.next_wait(event.attempts, outcome)
        if gone:
            decision = Decision("retry_later")
            event.next_at = 0.0
            decision.keep = True
            decision.pause = "the receiver answered 410 Gone; restart it to resume"
        elif wait is None:
            decision = Decision("give_up")
        else:
            decision = Decision("retry_later")
            decision.keep = True
            decision.wait = wait
            event.next_at = wall + wait
            if outcome.retry_after is not None:
                decision.hold = wall + wait
                self.hold_until = max(self.hold_until, decision.hold)
        if self.failing_since is None:
            self.failing_since = wall
            decision.failing = wall
            decision.set_failing = True
        if (
            decision.pause is None
            and self.disable_after is not None
            and wall - self.failing_since >= self.disable_after
            and not self.paused
        ):
            decision.pause = (
                f"every try has failed for {self.disable_after:g} s (disable_after); "
                "restart it to resume"
            )
        return decision

    def done(self, event: StoredEvent, keep: bool) -> None:
        """The try of ``event`` is recorded: let it go (``keep``: it waits for another)."""
        self.taken.pop(event.seq, None)
        self.done_count += 1
        if not keep:
            self.first_try.pop(event.seq, None)
            window = self.window
            if window and window[0] is event:
                del window[0]
            else:
                try:
                    window.remove(event)
                except ValueError:
                    pass

    def crashed(self, worker: Worker, event: Optional[StoredEvent]) -> None:
        """The worker failed unexpectedly (logged): its event stays queued."""
        self.starting = False
        if event is not None:
            self.done(event, keep=True)
        for report in worker.pending:  # not recorded: still queued, fetched again
            self.settling.pop(report.event.seq, None)
        worker.pending = []
        worker.crashed = True
        if worker.seeking:
            worker.seeking = False
            self.seeking -= 1

    def ending(self) -> Optional[float]:
        """A worker ends. When it is the last and holds the lease: returns when the next
        try is due (the lease is let go now, before others may start); else None."""
        # A closed memory-store emitter lets go too: a fetch under way at its close may
        # have taken events of a new incarnation of its id from the store's lane (given
        # back now); that incarnation starts no worker before this one has ended.
        if not (self.workers == 1 and self.lease):
            return None
        next_due = self.next_due()
        self.lease = False
        self.trim()
        self.releasing = True
        return next_due

    def ended(self, worker: Worker, mono: float) -> bool:
        """The worker has ended (its lease let go); True: start one again, because work
        came after it decided to end (nothing is stranded between the two)."""
        self.releasing = False
        self.workers -= 1
        seen = -1 if worker.crashed else worker.seen
        return self.wakes != seen and self.yield_until <= mono and self.spawn()


def _seq(event: StoredEvent) -> int:
    return event.seq
