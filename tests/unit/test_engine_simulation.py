"""The engine's decisions under every interleaving a seeded scheduler finds.

The real :class:`webhooks_emitter._plan.Plan` and the real worker programs
(:func:`webhooks_emitter._program.worker`) run here, as in the driver (``_emitter.py``), but
over a fake clock, a store that can fail, lose leases and be slow, and a transport whose
answers are scripted; a model executor stands for the driver's threads (each op a worker
yields is performed in one scheduler step, its answer delivered in another, so anything
may happen in between, as when the driver's lock is let go). A seeded scheduler
interleaves the workers with emit, attach/detach/re-attach, pause/restart, flush, lease
loss, store errors, timers, polls, a second process over the same store (fork), and
shutdown. After every step it checks:

- per-emitter FIFO (``max_in_flight`` 1) and per-key order: a try starts only when every
  older event of its emitter (of its key) is done;
- never two tries of one emitter (of one key) on the wire at once, whichever process or
  incarnation made them;
- a try is sent only after the store recorded its start under a lease held then;
- ``flush`` (as the instance computes it) is true only when the events it covers are done;

and at the end, once the chaos stops and time runs on, that nothing is lost or stranded:
every emitted event is delivered, given up, dropped by a detach (memory store) or still
stored for an emitter that is paused or not attached.

A failing schedule prints its seed; ``WEBHOOKS_EMITTER_SIM_SEED=<seed>`` replays it alone
(and ``WEBHOOKS_EMITTER_SIM_RUNS`` changes how many schedules run).
"""

from __future__ import annotations

import os
import random
from collections.abc import Collection
from typing import Any, Optional

import pytest

from webhooks_emitter._ops import Begin, Fetch, Record, Release, Report, Send, Spawn, Wait
from webhooks_emitter._plan import Plan
from webhooks_emitter._program import worker
from webhooks_emitter.stores._base import (
    EmitterState,
    Lease,
    Message,
    StoredEvent,
    StoreError,
    Target,
)
from webhooks_emitter.stores.memory import MemoryStore

RUNS = int(os.environ.get("WEBHOOKS_EMITTER_SIM_RUNS", "1000"))
SEED = os.environ.get("WEBHOOKS_EMITTER_SIM_SEED")
STEPS = 160
REQUEST_TIMEOUT = 1.0
LEASE_TIMEOUT = 5.0
IDS = ("a", "b")
KEYS = (None, "k1", "k2")


class Outcome:
    """A scripted answer of the fake transport."""

    def __init__(self, ok: bool, status_code: Optional[int], retry_after: Optional[float] = None,
                 final: bool = False) -> None:
        self.ok = ok
        self.status_code = status_code
        self.retry_after = retry_after
        self.final = final
        self.error = None if ok else f"HTTP {status_code}"
        self.timed_out = False


class SimDurableStore:
    """The store contract in memory, durable-like: fetch answers copies, leases exclude and
    expire on the fake clock, outcomes are guarded by the token that made the try."""

    durable = True
    lease_timeout = LEASE_TIMEOUT
    poll_interval = 0.25

    def __init__(self, world: World) -> None:
        self.world = world
        self.rows: dict[int, StoredEvent] = {}  # seq -> the stored truth (queued only)
        self.failed_rows: dict[int, StoredEvent] = {}
        self.leases: dict[str, tuple[str, float]] = {}  # id -> (token, expires wall)
        self.paused: dict[str, bool] = {}
        self.hold: dict[str, float] = {}
        self.last_try: dict[str, float] = {}
        self.failing: dict[str, Optional[float]] = {}
        self.next_due: dict[str, float] = {}
        self.under_way: set[int] = set()  # begun, no outcome recorded since

    def _check(self) -> None:
        if self.world.failing:
            raise StoreError("simulated store error")

    def _held(self, emitter_id: str, lease: Lease, live: bool = True) -> bool:
        held = self.leases.get(emitter_id)
        if held is None or held[0] != lease.token:
            return False
        return not live or held[1] >= self.world.wall

    def add(self, seq: int, emitter_id: str, key: Optional[str]) -> None:
        self.rows[seq] = StoredEvent(seq, emitter_id, "e", f"r{seq}", b"{}", key)

    def acquire(self, emitter_id: str, lease: Lease) -> bool:
        self._check()
        held = self.leases.get(emitter_id)
        if held is None or held[0] == lease.token or held[1] < self.world.wall:
            self.leases[emitter_id] = (lease.token, self.world.wall + LEASE_TIMEOUT)
            return True
        return False

    def renew(self, lease: Lease, ids: Collection[str]) -> set[str]:
        self._check()
        kept = set()
        for emitter_id in ids:
            held = self.leases.get(emitter_id)
            if held is not None and held[0] == lease.token:
                self.leases[emitter_id] = (lease.token, self.world.wall + LEASE_TIMEOUT)
                kept.add(emitter_id)
        return kept

    def release(self, emitter_id: str, lease: Lease, next_due: float = 0.0) -> None:
        self._check()
        if self._held(emitter_id, lease, live=False):
            del self.leases[emitter_id]
            self.next_due[emitter_id] = next_due

    def state(self, emitter_id: str) -> EmitterState:
        self._check()
        queued = [e for e in self.rows.values() if e.emitter_id == emitter_id]
        held = self.leases.get(emitter_id)
        return EmitterState(
            emitter_id,
            queued=len(queued),
            paused=self.paused.get(emitter_id, False),
            hold_until=self.hold.get(emitter_id, 0.0),
            last_try_at=self.last_try.get(emitter_id, 0.0),
            failing_since=self.failing.get(emitter_id),
            next_due=self.next_due.get(emitter_id, 0.0),
            lease_holder=None if held is None or held[1] < self.world.wall else held[0],
        )

    def fetch(self, emitter_id: str, lease: Lease, limit: int,
              skip: Collection[int] = ()) -> list[StoredEvent]:
        self._check()
        found = sorted(
            (e for e in self.rows.values() if e.emitter_id == emitter_id and e.seq not in skip),
            key=lambda e: e.seq,
        )[:limit]
        return [_copy(e) for e in found]

    def begin_try(self, lease: Lease, event: StoredEvent, now: float) -> bool:
        self._check()
        row = self.rows.get(event.seq)
        if row is None or not self._held(event.emitter_id, lease) or self.paused.get(
            event.emitter_id
        ):
            return False
        row.attempts, row.next_at = event.attempts, event.next_at
        self.under_way.add(event.seq)
        self.last_try[event.emitter_id] = now
        return True

    def _outcome(self, lease: Lease, event: StoredEvent) -> Optional[StoredEvent]:
        self._check()
        row = self.rows.get(event.seq)
        if row is None or not self._held(event.emitter_id, lease, live=False):
            return None
        return row

    def retry_later(self, lease: Lease, event: StoredEvent) -> bool:
        row = self._outcome(lease, event)
        if row is None:
            return False
        row.attempts, row.next_at = event.attempts, event.next_at
        self.under_way.discard(event.seq)
        return True

    def finish(self, lease: Lease, event: StoredEvent) -> bool:
        if self._outcome(lease, event) is None:
            return False
        del self.rows[event.seq]
        return True

    def give_up(self, lease: Lease, event: StoredEvent) -> bool:
        if self._outcome(lease, event) is None:
            return False
        self.failed_rows[event.seq] = self.rows.pop(event.seq)
        return True

    def set_paused(self, emitter_id: str, paused: bool) -> None:
        self._check()
        self.paused[emitter_id] = paused
        if not paused:
            self.hold[emitter_id] = 0.0
            self.failing[emitter_id] = None
            self.next_due[emitter_id] = 0.0
            for row in self.rows.values():
                # A try begun and not answered yet may still be on the wire (its process
                # may have died): it keeps the wait begin_try wrote, the takeover rule.
                if row.emitter_id == emitter_id and row.seq not in self.under_way:
                    row.next_at = 0.0

    def set_hold(self, emitter_id: str, lease: Lease, until: float) -> None:
        self._check()
        if self._held(emitter_id, lease, live=False):
            self.hold[emitter_id] = until

    def set_failing_since(self, emitter_id: str, lease: Lease, since: Optional[float]) -> None:
        self._check()
        if self._held(emitter_id, lease, live=False):
            self.failing[emitter_id] = since

    def forget(self, emitter_id: str) -> int:
        return sum(1 for e in self.rows.values() if e.emitter_id == emitter_id)

    def queued(self, emitter_id: str) -> list[int]:
        return sorted(s for s, e in self.rows.items() if e.emitter_id == emitter_id)


def _copy(event: StoredEvent) -> StoredEvent:
    return StoredEvent(event.seq, event.emitter_id, event.event, event.request_id, event.body,
                       event.ordering_key, event.attempts, event.next_at)


class SimWorker:
    """One delivering thread of the model executor."""

    def __init__(self, emitter: SimEmitter) -> None:
        self.emitter = emitter
        self.program = worker(emitter.plan, emitter.proc.world.clock, emitter.on_lease,
                              emitter.on_timer)
        self.state = "resume"  # resume | op | wire | wait | done
        self.answer: Any = None
        self.op: Any = None
        self.deadline: Optional[float] = None
        self.notified = False
        self.outcome: Any = None


class SimEmitter:
    """The model of ``_emitter.Emitter``: the same plan calls, with workers as generators."""

    def __init__(self, proc: Process, emitter_id: str, config: dict[str, Any]) -> None:
        self.proc = proc
        self.world = proc.world
        self.emitter_id = emitter_id
        self.max_in_flight = config["max_in_flight"]
        rng = self.world.rng
        self.plan = Plan(
            max_in_flight=config["max_in_flight"],
            min_interval=config["min_interval"],
            disable_after=config["disable_after"],
            request_timeout=REQUEST_TIMEOUT,
            pause_on_gone=True,
            next_wait=lambda attempts, outcome: (
                None if attempts >= 3 or outcome.final
                else min(outcome.retry_after, 0.5) if outcome.retry_after is not None
                else rng.choice((0.01, 0.05, 0.3, 2.0))
            ),
            durable=proc.store.durable,
            lease_timeout=LEASE_TIMEOUT,
            poll_interval=0.25,
        )
        self.plan.idle_timeout = 0.5
        self.plan.leases_held = lambda: sum(e.plan.lease for e in proc.emitters.values())
        self.workers: list[SimWorker] = []
        self.successor: Optional[SimEmitter] = None
        self.predecessor: Optional[SimEmitter] = None
        self.attached_after = self.world.seq  # the events emitted before its attach

    def start(self, spawn: bool) -> None:
        if spawn:
            self.workers.append(SimWorker(self))

    def notify(self) -> None:
        for w in self.workers:
            if w.state == "wait":
                w.notified = True

    def on_lease(self) -> None:
        pass

    def on_timer(self, at: float) -> None:
        self.world.timers.append((at, self))

    # the caller's side, as in _emitter.Emitter
    def wake(self) -> None:
        self.start(self.plan.wake())
        self.notify()

    def kick(self, refresh: bool = False) -> None:
        self.start(self.plan.kick(self.world.mono, refresh))
        self.notify()

    def set_paused(self, paused: bool) -> None:
        self.start(self.plan.set_paused(paused))
        self.notify()

    def close(self) -> None:
        self.plan.close()
        self.notify()
        left = self.proc.store.forget(self.emitter_id)
        if not self.proc.store.durable:
            self.world.dropped_by_detach(self)
        del left

    def abandon(self) -> None:
        taken, release = self.plan.abandon()
        self.notify()
        if release:
            try:
                self.proc.store.release(self.emitter_id, self.proc.lease,
                                        max(e.next_at for e in taken))
            except StoreError:
                pass  # the lease expires (the driver logs it)
        if not self.proc.store.durable:
            for event in taken:
                self.world.done(event.seq, "dropped")

    def follow(self, predecessor: SimEmitter) -> None:
        if predecessor.plan.workers:
            predecessor.successor = self
            self.predecessor = predecessor
            self.plan.predecessor = True

    def busy(self) -> bool:
        """As ``_emitter.Emitter.busy``: a try of this emitter (or of the detached
        incarnation it waits for) is under way or being reported."""
        if self.plan.taken or self.plan.settling:
            return True
        return (self.predecessor is not None and self.plan.predecessor
                and self.predecessor.busy())

    def predecessor_ended(self) -> None:
        self.predecessor = None
        self.start(self.plan.predecessor_ended())
        self.notify()

    def lease_lost(self) -> None:
        self.plan.lease_lost()
        self.notify()


class Process:
    """One instance (a process) over the store: its lease token and attached emitters."""

    def __init__(self, world: World, name: str) -> None:
        self.world = world
        self.name = name
        self.store: Any = world.store
        self.lease = Lease(holder=f"sim:{name}", token=f"token-{name}-{world.rng.random()}")
        self.emitters: dict[str, SimEmitter] = {}
        self.ending: list[SimEmitter] = []  # detached, maybe with a try still under way
        self.alive = True

    def attach(self, emitter_id: str) -> None:
        emitter = SimEmitter(self, emitter_id, self.world.configs[emitter_id])
        state = self.store.state(emitter_id) if self.store.durable else None
        if state is not None and state.paused:
            emitter.set_paused(True)
        old = next((e for e in reversed(self.ending) if e.emitter_id == emitter_id), None)
        if old is not None and self.world.handoff:
            emitter.follow(old)
        self.emitters[emitter_id] = emitter
        if state is not None and state.queued and not state.paused:
            emitter.kick()

    def detach(self, emitter_id: str) -> None:
        emitter = self.emitters.pop(emitter_id)
        emitter.close()
        if emitter.plan.workers:
            self.ending.append(emitter)


class World:
    """The fake clock, store and receiver, and the ledger the invariants read."""

    def __init__(self, seed: int, *, durable: bool, handoff: bool = True) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.mono = 1000.0
        self.durable = durable
        self.handoff = handoff
        self.failing = False
        self.store: Any = SimDurableStore(self) if durable else MemoryStore()
        self.timers: list[tuple[float, SimEmitter]] = []
        self.seq = 0
        self.emitted: dict[int, tuple[str, Optional[str]]] = {}  # seq -> (emitter id, key)
        self.outcome: dict[int, str] = {}  # seq -> delivered | given_up | dropped
        self.wire: dict[int, tuple[SimEmitter, float]] = {}  # seq -> (emitter, start)
        self.begun: set[tuple[int, int]] = set()  # (seq, attempt) recorded by the store
        self.begun_by: dict[int, Process] = {}  # seq -> the process that tried it last
        mif = self.rng.choice((1, 1, 3))
        self.configs = {
            emitter_id: {
                "max_in_flight": mif,
                "min_interval": self.rng.choice((0.0, 0.0, 0.05)),
                "disable_after": self.rng.choice((None, None, 3.0)),
            }
            for emitter_id in IDS
        }
        self.procs = [Process(self, "p0")]
        self.log: list[str] = []
        self.flushes: list[tuple[Process, dict[str, tuple[SimEmitter, int]]]] = []
        self.dead_wire: list[tuple[float, int]] = []  # (end, seq): a dead process's tries

    @property
    def wall(self) -> float:
        return self.mono + 1_700_000_000.0

    def clock(self) -> tuple[float, float]:
        return self.mono, self.wall

    def fail(self, message: str) -> None:
        tail = "\n  ".join(self.log[-25:])
        pytest.fail(
            f"{message}\nseed {self.seed} (replay: WEBHOOKS_EMITTER_SIM_SEED={self.seed})\n"
            f"last steps:\n  {tail}"
        )

    def done(self, seq: int, how: str) -> None:
        if seq not in self.outcome or self.outcome[seq] == "dropped":
            self.outcome[seq] = how

    def dropped_by_detach(self, emitter: SimEmitter) -> None:
        for seq, (emitter_id, _) in self.emitted.items():
            if emitter_id == emitter.emitter_id and seq not in self.outcome:
                if seq not in self.wire:
                    self.outcome[seq] = "dropped"

    # -- the invariants checked at the start of every try, and after every step ----------

    def check_try_start(self, emitter: SimEmitter, event: StoredEvent) -> None:
        seq = event.seq
        if (seq, event.attempts) not in self.begun:
            self.fail(f"event {seq} try {event.attempts} sent without begin_try recorded")
        emitter_id, key = self.emitted[seq]
        ordered = emitter.max_in_flight == 1 or key is not None
        for other, (other_id, other_key) in self.emitted.items():
            if other >= seq or other_id != emitter_id or self.settled(other):
                continue
            if not self.durable and other <= emitter.attached_after:
                continue  # the memory store dropped it with a detached incarnation
            if emitter.max_in_flight == 1 or (key is not None and other_key == key):
                self.fail(f"event {seq} tried by {emitter.proc.name} while older event {other} "
                          f"of {emitter_id!r} (key {key!r}) is not done: order broken")
        for other in self.wire:
            other_id, other_key = self.emitted[other]
            if other_id != emitter_id:
                continue
            if emitter.max_in_flight == 1 or (ordered and key is not None and other_key == key):
                self.fail(f"event {seq} tried while event {other} of {emitter_id!r} is on "
                          "the wire: overlap")

    def settled(self, seq: int) -> bool:
        """Whether event ``seq`` is done for ordering: reported, or (durable store) its
        delivery or giving up recorded by whichever process, even one that died before
        telling it."""
        if seq in self.outcome:
            return True
        return self.durable and seq not in self.store.rows

    def check_flushes(self) -> None:
        for proc, marks in list(self.flushes):
            if not proc.alive:
                self.flushes.remove((proc, marks))
                continue
            settled = True
            for emitter_id, (emitter, mark) in marks.items():
                if emitter.plan.paused or emitter.plan.closed:
                    continue
                if emitter.busy() or self.queued_upto(emitter_id, mark):
                    settled = False
            if not settled:
                continue
            self.flushes.remove((proc, marks))
            for emitter_id, (emitter, mark) in marks.items():
                if emitter.plan.paused or emitter.plan.closed:
                    continue
                for seq, (other_id, _) in self.emitted.items():
                    if not self.durable and seq <= emitter.attached_after:
                        continue  # emitted to a detached incarnation: detach dropped it
                    if self.begun_by.get(seq, proc) is not proc:
                        continue  # another process tries it: flush sees only the store
                    if other_id == emitter_id and seq <= mark and seq not in self.outcome:
                        self.fail(f"flush of {emitter_id!r} would return True while event "
                                  f"{seq} is not done")

    def queued_upto(self, emitter_id: str, mark: int) -> int:
        if self.durable:
            return sum(1 for s in self.store.queued(emitter_id) if s <= mark)
        return int(self.store.queued_upto(emitter_id, mark))


# -- the model executor: one op of one worker per step ----------------------------------------


def resume(world: World, w: SimWorker) -> None:
    """Give the worker its answer (it holds the lock again) and take its next op."""
    emitter = w.emitter
    try:
        op = w.program.send(w.answer)
    except StopIteration:
        w.state = "done"
        emitter.workers.remove(w)
        emitter.notify()
        if not emitter.plan.workers and emitter.successor is not None:
            successor, emitter.successor = emitter.successor, None
            successor.predecessor_ended()
        return
    w.answer = None
    emitter.notify()  # the driver notifies after each op: the plan may have changed
    if isinstance(op, Spawn):
        emitter.start(True)
        w.state = "resume"
    elif isinstance(op, Wait):
        w.state = "wait"
        w.notified = False
        w.deadline = None if op.timeout is None else world.mono + op.timeout
    else:
        w.op = op
        w.state = "op"


def perform(world: World, w: SimWorker) -> bool:
    """Carry out the worker's op against the store or the receiver; False: not now (the
    store fails and the driver would retry)."""
    emitter = w.emitter
    proc = emitter.proc
    store = proc.store
    op = w.op
    if isinstance(op, Fetch):
        acquired, state, events, error = True, None, [], False
        try:
            if op.need_lease:
                acquired = store.acquire(emitter.emitter_id, proc.lease)
                if acquired:
                    state = store.state(emitter.emitter_id)
            if acquired:
                events = store.fetch(emitter.emitter_id, proc.lease, op.limit, op.skip)
        except StoreError:
            error = True
        w.answer = (acquired, state, events, error)
    elif isinstance(op, Begin):
        try:
            if op.outcomes and world.durable:  # Store.settle: one transaction, all or none
                store._check()
            for told in op.outcomes:
                calls = {"finish": store.finish, "give_up": store.give_up}
                calls[told.decision.kind](proc.lease, told.event)
            answer = None if op.event is None else store.begin_try(proc.lease, op.event,
                                                                   op.wall)
        except StoreError:
            if not emitter.plan.closed:
                return False
            answer = None
        for told in op.outcomes:
            report(world, emitter, told)
        paused = False
        if answer is False:
            paused = store.state(emitter.emitter_id).paused if not world.failing else False
        if answer and op.event is not None:
            world.begun.add((op.event.seq, op.event.attempts))
            world.begun_by[op.event.seq] = proc
        w.answer = (answer, paused)
    elif isinstance(op, Send):
        if world.wall > op.not_after:
            w.answer = (Outcome(False, None), 0.0)  # stalled past SEND_GRACE: not sent
            w.state = "resume"
            return True
        world.check_try_start(emitter, op.event)
        world.wire[op.event.seq] = (emitter, world.mono)
        w.outcome = world.rng.choice(
            [Outcome(True, 204)] * 5
            + [Outcome(False, 500), Outcome(False, 503, 0.2), Outcome(False, None, final=True)]
            + [Outcome(False, 410)] * (1 if world.rng.random() < 0.2 else 0)
        )
        w.state = "wire"
        return True
    elif isinstance(op, Record):
        if not record(world, emitter, op):
            return False
        if op.report:
            report(world, emitter, op)  # type: ignore[arg-type]
    elif isinstance(op, Report):
        report(world, emitter, op)
    elif isinstance(op, Release):
        try:
            emitter.proc.store.release(emitter.emitter_id, proc.lease, op.next_due)
        except StoreError:
            pass
    w.state = "resume"
    return True


def record(world: World, emitter: SimEmitter, op: Record) -> bool:
    """``_emitter.Emitter._record`` on the fake store: False while the store fails."""
    store = emitter.proc.store
    lease = emitter.proc.lease
    decision = op.decision
    event = op.event
    kind = decision.kind
    if kind in ("abandoned", "drop", "report"):
        if kind == "drop":
            world.done(event.seq, "dropped")
        return True
    calls = {"finish": store.finish, "retry_later": store.retry_later, "give_up": store.give_up}
    if kind in calls:
        try:
            calls[kind](lease, event)  # False (not recorded: the lease moved) is fine
        except StoreError:
            if not emitter.plan.closed:
                return False
    return True


def report(world: World, emitter: SimEmitter, op: Any) -> None:
    """``_emitter.Emitter._announce``: the outcome is told (on_delivery), a pause made."""
    store = emitter.proc.store
    decision = op.decision
    kind = decision.kind
    if kind in ("abandoned", "drop"):
        return
    if kind in ("finish", "report"):
        world.done(op.event.seq, "delivered")
    elif kind == "give_up":
        world.done(op.event.seq, "given_up")
    if decision.pause is not None:
        try:
            store.set_paused(emitter.emitter_id, True)
        except StoreError:
            pass
        emitter.set_paused(True)


def end_try(world: World, w: SimWorker) -> None:
    """The try on the wire ends (the receiver answered, or it failed)."""
    event = w.op.event
    world.wire.pop(event.seq, None)
    event.status_code = w.outcome.status_code
    w.answer = (w.outcome, 0.01)
    w.state = "resume"


# -- the scheduler -------------------------------------------------------------------------------


def runnable(world: World) -> list[tuple[str, Any]]:
    moves: list[tuple[str, Any]] = []
    for proc in world.procs:
        if not proc.alive:
            continue
        emitters = list(proc.emitters.values()) + proc.ending
        for emitter in emitters:
            for w in emitter.workers:
                if w.state == "resume":
                    moves.append(("resume", w))
                elif w.state == "op":
                    moves.append(("perform", w))
                elif w.state == "wire":
                    moves.append(("answer", w))
                elif w.state == "wait" and (
                    w.notified or (w.deadline is not None and w.deadline <= world.mono)
                ):
                    moves.append(("resume", w))
    return moves


def advance(world: World) -> bool:
    """Let time run to the next deadline (a wait, a timer, a try's end); False: none."""
    times = [at for at, _ in world.timers] + [at for at, _ in world.dead_wire]
    for proc in world.procs:
        for emitter in list(proc.emitters.values()) + proc.ending:
            times += [w.deadline for w in emitter.workers
                      if w.state == "wait" and w.deadline is not None]
    times = [t for t in times if t > world.mono]
    if not times:
        return False
    world.mono = min(times) + 1e-6
    fire_timers(world)
    end_dead_tries(world)
    return True


def fire_timers(world: World) -> None:
    due = [(at, e) for at, e in world.timers if at <= world.mono]
    world.timers = [(at, e) for at, e in world.timers if at > world.mono]
    for _, emitter in due:
        if emitter.proc.alive and not emitter.plan.closed:
            emitter.kick()


def poll(world: World, proc: Process) -> None:
    """The housekeeping thread's poll and lease renewal, as ``_housekeeping`` does them."""
    store = proc.store
    if not store.durable or world.failing:
        return
    held = store.renew(proc.lease, [i for i, e in proc.emitters.items() if e.plan.lease])
    for emitter_id, emitter in proc.emitters.items():
        if emitter.plan.lease:
            if emitter_id in held:
                emitter.plan.lease_renewed(world.mono + LEASE_TIMEOUT * 0.9)
            else:
                emitter.lease_lost()
    for emitter_id, emitter in proc.emitters.items():
        state = store.state(emitter_id)
        if state.paused:
            emitter.set_paused(True)
            continue
        if emitter.plan.paused:
            emitter.set_paused(False)
        if not state.queued:
            continue
        if emitter.plan.workers:
            emitter.kick(refresh=True)
        elif state.lease_holder is None:
            if state.next_due <= world.wall:
                emitter.kick()
            elif emitter.plan.schedule(world.mono + state.next_due - world.wall):
                world.timers.append((world.mono + state.next_due - world.wall, emitter))


def emit(world: World, proc: Process) -> None:
    targets = [e for e in proc.emitters.values()]
    if not targets:
        return
    emitter = world.rng.choice(targets)
    key = world.rng.choice(KEYS)
    world.seq += 1
    seq = world.seq
    if world.durable:
        world.store.add(seq, emitter.emitter_id, key)
    else:
        # The memory store numbers messages 1, 2, 3... as they come: all come from here.
        world.store.append(Message("e", f"r{seq}", b"{}", key),
                           [Target(emitter.emitter_id, 10_000)])
    world.emitted[seq] = (emitter.emitter_id, key)
    world.log.append(f"emit #{seq} to {emitter.emitter_id} key {key}")
    emitter.wake()


def chaos(world: World) -> None:
    """One external step, chosen at random."""
    rng = world.rng
    proc = rng.choice([p for p in world.procs if p.alive])
    roll = rng.random()
    if roll < 0.30:
        emit(world, proc)
        return
    emitter_id = rng.choice(IDS)
    emitter = proc.emitters.get(emitter_id)
    if roll < 0.40:
        world.log.append("time runs")
        advance(world)
    elif roll < 0.47 and emitter is not None:
        world.log.append(f"{proc.name}: pause {emitter_id}")
        if not world.failing:
            proc.store.set_paused(emitter_id, True)
            emitter.set_paused(True)
    elif roll < 0.56 and emitter is not None:
        world.log.append(f"{proc.name}: restart {emitter_id}")
        if not world.failing and (emitter.plan.paused or _store_paused(proc, emitter_id)):
            proc.store.set_paused(emitter_id, False)
            emitter.set_paused(False)
    elif roll < 0.62 and emitter is not None:
        world.log.append(f"{proc.name}: detach {emitter_id}, attach again at once")
        proc.detach(emitter_id)
        if not world.failing:
            proc.attach(emitter_id)
    elif roll < 0.66:
        world.failing = not world.failing
        world.log.append(f"store {'fails' if world.failing else 'recovers'}")
    elif roll < 0.72:
        world.log.append(f"{proc.name}: poll")
        poll(world, proc)
    elif roll < 0.75 and world.durable and emitter is not None:
        world.log.append(f"{proc.name}: lease of {emitter_id} taken by a stalled process")
        world.store.leases[emitter_id] = ("stalled", world.wall + 0.5)
    elif roll < 0.80:
        marks = {}  # as flush() takes them: the emitters attached now, the newest seq
        for emitter_id2, emitter2 in proc.emitters.items():
            seqs = [s for s, (i, _) in world.emitted.items() if i == emitter_id2]
            if seqs:
                marks[emitter_id2] = (emitter2, max(seqs))
        world.log.append(f"{proc.name}: flush {({i: m for i, (_, m) in marks.items()})}")
        world.flushes.append((proc, marks))
    elif roll < 0.82 and world.durable and len(world.procs) < 2 and not world.failing:
        world.log.append("fork: a second process attaches the same ids")
        child = Process(world, f"p{len(world.procs)}")
        world.procs.append(child)
        for emitter_id2 in IDS:
            child.attach(emitter_id2)
    elif roll < 0.84 and world.durable and sum(p.alive for p in world.procs) > 1:
        victim = rng.choice([p for p in world.procs if p.alive])
        world.log.append(f"{victim.name}: shuts down (deadline passed)")
        shutdown(world, victim)
    elif emitter is None and not world.failing:
        world.log.append(f"{proc.name}: attach {emitter_id}")
        proc.attach(emitter_id)


def _store_paused(proc: Process, emitter_id: str) -> bool:
    return bool(proc.store.state(emitter_id).paused)


def shutdown(world: World, proc: Process) -> None:
    """``shutdown`` whose deadline passed: close, abandon the tries under way; the process
    ends (its tries still on the wire end at the receiver later)."""
    for emitter_id in list(proc.emitters):
        emitter = proc.emitters.pop(emitter_id)
        emitter.close()
        proc.ending.append(emitter)
    for emitter in proc.ending:  # as _hub does: detached ones still trying included
        emitter.abandon()
    proc.alive = False
    # Its threads are gone with the process; a try it had on the wire still ends at the
    # receiver, within request_timeout of its start.
    for emitter in proc.ending:
        for w in emitter.workers:
            if w.state == "wire":
                seq = w.op.event.seq
                world.dead_wire.append((world.wire[seq][1] + REQUEST_TIMEOUT, seq))
        emitter.workers = []


def end_dead_tries(world: World) -> None:
    """The dead processes' tries whose time is up have ended at the receiver."""
    for at, seq in list(world.dead_wire):
        if at <= world.mono:
            world.dead_wire.remove((at, seq))
            world.wire.pop(seq, None)


def step(world: World) -> None:
    end_dead_tries(world)
    moves = runnable(world)
    if moves and world.rng.random() < 0.7:
        move, w = world.rng.choice(moves)
        world.log.append(f"{w.emitter.proc.name}:{w.emitter.emitter_id} {move} "
                         f"{type(w.op).__name__ if move != 'resume' else ''}")
        if move == "resume":
            resume(world, w)
        elif move == "perform":
            perform(world, w)
        else:
            end_try(world, w)
    else:
        chaos(world)
    # Tries on the wire end within request_timeout: time does not run past that.
    world.check_flushes()


def settle(world: World) -> None:
    """Stop the chaos and let everything run out; then nothing may be stranded."""
    world.failing = False
    if world.durable:
        world.store.leases = {i: h for i, h in world.store.leases.items() if h[0] != "stalled"}
    polled_at = None
    for _ in range(50_000):
        end_dead_tries(world)
        moves = runnable(world)
        if moves:
            move, w = world.rng.choice(moves)
            world.log.append(f"settle {w.emitter.proc.name}:{w.emitter.emitter_id} {move} "
                             f"{type(w.op).__name__}")
            if move == "resume":
                resume(world, w)
            elif move == "perform":
                if not perform(world, w):
                    world.fail("a store call fails after the store recovered")
            else:
                end_try(world, w)
            world.check_flushes()
            continue
        if polled_at != world.mono:
            polled_at = world.mono  # the housekeeping poll, once per moment of fake time
            for proc in world.procs:
                if proc.alive:
                    poll(world, proc)
            continue
        if not advance(world):
            if not _stored_work(world):
                break
            world.mono += 1.0  # the poll's own period
    else:
        world.fail("the engine never came to rest")
    alive = [p for p in world.procs if p.alive]
    for seq, (emitter_id, _) in sorted(world.emitted.items()):
        if seq in world.outcome:
            continue
        owners = [p.emitters.get(emitter_id) for p in alive]
        owners = [e for e in owners if e is not None]
        if not owners:
            continue  # not attached anywhere: it waits in the store for the next attach
        if any(e.plan.paused for e in owners):
            continue
        if not world.durable and all(seq <= e.attached_after for e in owners):
            continue  # emitted to an incarnation that was detached: dropped with it
        if world.durable:
            if seq in world.store.rows:
                world.fail(f"event {seq} of {emitter_id!r} stranded: still queued at rest")
            if seq in world.store.failed_rows:
                continue  # given up by a process whose report was cut short by its end
        else:
            world.fail(f"event {seq} of {emitter_id!r} stranded: never delivered")


def _stored_work(world: World) -> bool:
    alive = [p for p in world.procs if p.alive]
    for seq, (emitter_id, _) in world.emitted.items():
        if seq in world.outcome:
            continue
        owners = [p.emitters.get(emitter_id) for p in alive]
        if any(e is not None and not e.plan.paused for e in owners):
            if world.durable and seq not in world.store.rows:
                continue
            return True
    return False


def run(seed: int, durable: bool, handoff: bool = True) -> None:
    """One schedule: attach both ids, STEPS random steps checked one by one, then rest."""
    world = World(seed, durable=durable, handoff=handoff)
    for emitter_id in IDS:
        world.procs[0].attach(emitter_id)
    for _ in range(STEPS):
        step(world)
    settle(world)


def seeds(kind: int) -> list[int]:
    if SEED is not None:
        return [int(SEED)]
    return [kind * 1_000_000 + n for n in range(RUNS)]


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "durable"])
def test_every_schedule_keeps_order_exclusion_and_loses_nothing(durable: bool) -> None:
    """Thousands of seeded schedules per store kind: every invariant holds after every
    step, and at rest nothing is stranded."""
    for seed in seeds(2 if durable else 1):
        run(seed, durable)
