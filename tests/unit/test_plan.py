"""The plan of one emitter (``webhooks_emitter._plan``), without threads, clocks or I/O:
what it decides for given inputs, step by step."""

from __future__ import annotations

from typing import Any, Optional

from webhooks_emitter._ops import SEND_GRACE, Begin, End, Fetch, Release, Send, Wait, Worker
from webhooks_emitter._plan import Plan
from webhooks_emitter._program import worker
from webhooks_emitter.stores._base import EmitterState, StoredEvent

MONO = 100.0
WALL = 1_700_000_000.0


class Outcome:
    """A try's result, as the plan reads it."""

    def __init__(self, ok: bool, status_code: Optional[int] = None,
                 retry_after: Optional[float] = None, final: bool = False) -> None:
        self.ok = ok
        self.status_code = status_code
        self.retry_after = retry_after
        self.final = final


def plan(**overrides: Any) -> Plan:
    """A plan with small numbers; ``next_wait`` retries twice after 0.5 s (or Retry-After)."""
    settings: dict[str, Any] = {
        "max_in_flight": 1,
        "min_interval": 0.0,
        "disable_after": None,
        "request_timeout": 5.0,
        "pause_on_gone": True,
        "next_wait": lambda attempts, outcome: (
            None if attempts >= 3 or outcome.final
            else outcome.retry_after if outcome.retry_after is not None else 0.5
        ),
        "durable": True,
        "lease_timeout": 30.0,
        "poll_interval": 0.25,
    }
    settings.update(overrides)
    made = Plan(**settings)
    made.idle_timeout = 10.0
    return made


def event(seq: int, key: Optional[str] = None, next_at: float = 0.0) -> StoredEvent:
    """Event ``seq`` of emitter ``e``."""
    return StoredEvent(seq, "e", "ev", f"r{seq}", b"{}", key, next_at=next_at)


def leased(p: Plan, events: list[StoredEvent], wall: float = WALL) -> Worker:
    """A worker of ``p`` that took the lease and fetched ``events``."""
    assert p.spawn()
    me = Worker()
    fetch = p.step(me, MONO, wall)
    assert isinstance(fetch, Fetch) and fetch.need_lease
    end, taken = p.fetched(me, fetch, True, EmitterState("e"), events, False, MONO)
    assert end is None and taken
    return me


def test_a_first_step_takes_the_lease_and_fetches_a_window() -> None:
    """No lease yet: the first step is a fetch that takes the lease, for a whole window."""
    p = plan(max_in_flight=4)
    assert p.spawn()
    fetch = p.step(Worker(), MONO, WALL)
    assert isinstance(fetch, Fetch)
    assert (fetch.need_lease, fetch.limit, fetch.skip) == (True, 32, set())


def test_one_in_flight_tries_the_head_only_and_waits_for_its_backoff() -> None:
    """max_in_flight 1: the head is tried; while it waits for its next try nothing behind
    it is, and the step says how long to wait."""
    p = plan()
    head, behind = event(1, next_at=WALL + 2.0), event(2)
    me = leased(p, [head, behind])
    action = p.step(me, MONO, WALL)
    assert isinstance(action, Wait) and action.timeout == 2.0
    assert p.step(me, MONO, WALL + 2.0) is head


def test_keys_keep_order_and_a_waiting_event_holds_its_key() -> None:
    """Above 1 in flight: the oldest event of a key holds it, even while waiting; events
    of other keys and without a key go on."""
    p = plan(max_in_flight=4)
    first = event(1, "k", next_at=WALL + 5.0)
    me = leased(p, [first, event(2, "k"), event(3, "j"), event(4)])
    picked = [p.step(me, MONO, WALL) for _ in range(2)]
    assert [e.seq for e in picked] == [3, 4]


def test_a_retry_after_answer_holds_every_new_try() -> None:
    """A 503 with Retry-After: the event waits, and so does every other new try."""
    p = plan(max_in_flight=2)
    me = leased(p, [event(1), event(2)])
    first = p.step(me, MONO, WALL)
    p.begin(first, WALL)
    p.started(first, MONO, WALL)
    decision = p.decide(first, Outcome(False, 503, retry_after=3.0), WALL)
    assert (decision.kind, decision.hold, decision.keep) == ("retry_later", WALL + 3.0, True)
    p.done(first, keep=True)
    action = p.step(me, MONO, WALL + 1.0)
    assert isinstance(action, Wait) and action.timeout == 2.0


def test_max_rate_spaces_the_starts_of_tries() -> None:
    """min_interval 0.1: a second try is not picked before the first has started, and
    then not before 0.1 s after that start."""
    p = plan(max_in_flight=2, min_interval=0.1)
    me = leased(p, [event(1), event(2)])
    first = p.step(me, MONO, WALL)
    other = Worker()
    assert isinstance(p.step(other, MONO, WALL), (Wait, End))  # picked, not started
    p.begin(first, WALL)
    p.started(first, MONO, WALL)
    action = p.step(other, MONO, WALL + 0.04)
    assert isinstance(action, Wait) and abs(action.timeout - 0.06) < 1e-6


def test_decide_after_each_kind_of_answer() -> None:
    """2xx: finish; 410: kept, paused; a failure with tries left: retried later; the last
    one: given up; failing for disable_after: paused."""
    p = plan(disable_after=10.0)
    e = event(1)
    e.attempts = 1
    assert p.decide(e, Outcome(True, 204), WALL).kind == "finish"
    gone = p.decide(e, Outcome(False, 410), WALL)
    assert (gone.kind, gone.keep, gone.pause is not None, e.next_at) == (
        "retry_later", True, True, 0.0)
    p.failing_since = None
    retried = p.decide(e, Outcome(False, 500), WALL)
    assert (retried.kind, retried.wait, retried.set_failing, retried.failing) == (
        "retry_later", 0.5, True, WALL)
    e.attempts = 3
    assert p.decide(e, Outcome(False, 500), WALL + 1).kind == "give_up"
    e.attempts = 1
    assert "disable_after" in (p.decide(e, Outcome(False, 500), WALL + 11).pause or "")


def test_begin_makes_the_event_due_after_the_try_and_a_refusal_restores_it() -> None:
    """begin counts the try and sets next_at to its start + request_timeout + the send
    grace (what a takeover waits for); a refused begin puts both back."""
    p = plan()
    me = leased(p, [event(1, next_at=0.0)])
    e = p.step(me, MONO, WALL)
    due = p.begin(e, WALL)
    assert (e.attempts, e.next_at) == (1, WALL + 5.0 + SEND_GRACE)
    p.not_started(e, due, False, paused=False)
    assert (e.attempts, e.next_at, p.lease, p.taken) == (0, 0.0, False, {})


def test_a_wake_while_the_last_worker_ends_starts_another() -> None:
    """A worker decided to end; an event came before it was gone: ended() says start one
    (no event is stranded between the two)."""
    p = plan()
    me = leased(p, [])
    assert isinstance(p.step(me, MONO, WALL), Wait)
    end = p.step(me, MONO + 11.0, WALL + 11.0)
    assert isinstance(end, End)
    assert p.ending() is not None  # the last one lets go of the lease
    assert not p.wake()  # counted; none started while the lease is being let go
    assert p.ended(me, MONO + 11.0)


def test_a_restart_while_the_paused_worker_lets_go_starts_one_after_it() -> None:
    """Paused: the worker ends and lets go of the lease; a restart meanwhile starts none
    (a new worker must not take the lease the old one is letting go), and the ending
    worker starts one once it is gone (commit b02342e)."""
    p = plan()
    me = leased(p, [event(1)])
    assert not p.set_paused(True)
    assert isinstance(p.step(me, MONO, WALL), End)
    assert p.ending() is not None
    assert not p.set_paused(False)
    assert p.ended(me, MONO)
    assert p.workers == 1


def test_a_fetch_that_raced_a_trim_is_read_again() -> None:
    """A poll asks to read waiting events again while a fetch is under way: that fetch's
    answer is dropped and the window read again (commit d3ab46b)."""
    p = plan(max_in_flight=4)
    me = leased(p, [event(1, "k", next_at=WALL + 5.0)])
    p.more = True  # the store may hold more: the next step fetches
    fetch = p.step(me, MONO, WALL)
    assert isinstance(fetch, Fetch) and not fetch.need_lease and 1 in fetch.skip
    p.refresh = True
    p.step(Worker(), MONO, WALL)  # another worker trims the window
    end, _ = p.fetched(me, fetch, True, None, [event(20, "k")], False, MONO)
    assert end is None and p.more and 20 not in {e.seq for e in p.window}


def test_a_delivery_is_recorded_with_the_next_try_in_one_settle() -> None:
    """Two due events: the first one's delivery is recorded by the Begin of the second
    (Store.settle: one commit per delivery), and counts as busy until then."""
    p = plan(durable=False)
    now = (MONO, WALL)
    assert p.spawn()
    program = worker(p, lambda: now, lambda: None, lambda at: None)
    next(program)
    first = program.send((True, EmitterState("e"), [event(1), event(2)], False))
    assert isinstance(first, Begin) and first.outcomes == []
    program.send((True, False))
    second = program.send((Outcome(True, 204), 0.01))
    assert isinstance(second, Begin) and second.event is not None and second.event.seq == 2
    assert [r.event.seq for r in second.outcomes] == [1] and 1 in p.settling
    program.send((True, False))
    assert p.settling == {}


def test_a_reattached_id_starts_no_worker_until_the_old_one_ended() -> None:
    """predecessor set: wake starts nothing; predecessor_ended starts the worker."""
    p = plan()
    p.predecessor = True
    assert not p.wake()
    assert p.predecessor_ended() and p.workers == 1


def test_the_worker_program_yields_each_op_of_a_delivery() -> None:
    """A worker's program over one event: fetch, begin, send, then the outcome recorded
    and told (alone: no next try to record it with); then, the store having had no more,
    it waits idle, ends after idle_timeout and lets go of the lease."""
    p = plan(durable=False)
    now = [MONO, WALL]
    timers: list[float] = []
    assert p.spawn()
    program = worker(p, lambda: (now[0], now[1]), lambda: None, timers.append)
    ops = [next(program)]
    assert isinstance(ops[0], Fetch)
    ops.append(program.send((True, EmitterState("e"), [event(1)], False)))
    assert isinstance(ops[-1], Begin)
    ops.append(program.send((True, False)))
    assert isinstance(ops[-1], Send) and ops[-1].not_after == WALL + SEND_GRACE
    ops.append(program.send((Outcome(True, 204), 0.01)))
    # Nothing else to try at once: the delivery is recorded (and told) on its own.
    settle = ops[-1]
    assert isinstance(settle, Begin) and settle.event is None
    assert [(r.decision.kind, r.event.seq) for r in settle.outcomes] == [("finish", 1)]
    ops.append(program.send((None, False)))
    assert isinstance(ops[-1], Wait) and ops[-1].timeout == 10.0  # nothing more: idle
    now[0] += 10.0
    ops.append(program.send(None))
    assert isinstance(ops[-1], Release)
    try:
        program.send(None)
    except StopIteration:
        pass
    assert p.workers == 0 and not p.lease
