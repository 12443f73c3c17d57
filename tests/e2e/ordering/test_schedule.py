"""Rate and schedule (CONTRACT.md section 13): ``max_rate``, ``retry_schedule`` (with
``Retry-After`` capped by its largest entry) and ``disable_after``.

Times are measured at an :class:`~inflight_receiver.InflightReceiver`: when each try was
read and when its answer was decided. A wait the emitter chose is therefore seen as the gap
between one try's answer and the next try's start, which can only be longer than the wait
itself (by the time it takes to read the answer and wake a thread): lower bounds are
checked closely, upper bounds with room for a loaded machine. Each test runs once per store.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

import pytest
from inflight_receiver import WAIT, Answer, LogWatch, Results, Try

from webhooks_emitter import Config, WebhooksEmitter

EVENT = "ev"
# Receiver and emitter read their clocks in different threads, around a request on the
# loopback: a lower bound in time is checked with this much room.
CLOCK_SLACK = 0.005
# Room above an upper bound: a thread wakes late on a loaded machine. Every schedule below
# keeps its entries further apart than this, so that a wrong entry still fails.
LATE_SLACK = 0.1


def config(url: str, **fields: Any) -> Config:
    """A Config with millisecond backoffs (unless a schedule is given) and a bounded timeout."""
    if "retry_schedule" not in fields:
        fields.setdefault("backoff_start", 0.001)
        fields.setdefault("backoff_limit", 0.01)
    fields.setdefault("request_timeout", 5.0)
    return Config(url, **fields)


def emit(hooks: WebhooksEmitter, n: int, key: Optional[str] = None) -> str:
    """Emit event number ``n`` with ordering key ``key`` (also written into the body)."""
    return hooks.emit(EVENT, {"key": key, "n": n}, ordering_key=key)


def gaps(tries: list[Try]) -> list[float]:
    """Seconds from each try's answer to the start of the next one (arrival order)."""
    ordered = sorted(tries, key=lambda t: t.start)
    return [after.start - (before.end or 0.0) for before, after in zip(ordered, ordered[1:])]


# -- max_rate -------------------------------------------------------------------------------


def fail_even_first_tries(t: Try) -> int:
    """500 to the first try of every even-numbered event, 204 otherwise."""
    return 500 if t.try_number == 1 and (t.n or 0) % 2 == 0 else 204


@pytest.mark.parametrize("max_in_flight", [1, 4])
def test_max_rate_spaces_the_starts_of_tries(hooks, receiver, max_in_flight):
    """With max_rate=10, no two tries (first tries and retries alike, whatever
    max_in_flight) start less than 1/10 s apart at the receiver, and no window of 0.5 s
    holds more than 6 starts.

    Each gap is checked with 40 ms of room: the receiver sees a request when it arrives,
    which on a busy machine (the suite runs four workers on two cores) is later than the
    emitter sent it by up to a few tens of milliseconds (23 ms seen), more for the first
    request of a connection. A burst shows as starts a millisecond or less apart, far below
    that room; the window, where the room does not add up, is checked exactly."""
    receiver.rule = fail_even_first_tries
    rate = 10.0
    hooks.attach(
        "rated",
        EVENT,
        config(receiver.url_for("/rated"), max_rate=rate, max_in_flight=max_in_flight),
    )
    for n in range(12):
        emit(hooks, n, f"k{n}")
    assert hooks.flush(WAIT)
    starts = sorted(t.start for t in receiver.tries)
    assert len(starts) == 18  # 12 events, 6 of them tried twice
    spacing = [round(b - a, 4) for a, b in zip(starts, starts[1:])]
    assert min(spacing) >= 1 / rate - 0.04, spacing
    window = 0.5
    for index, start in enumerate(starts):
        inside = [s for s in starts[index:] if s < start + window]
        assert len(inside) <= window * rate + 1, spacing


# -- retry_schedule ---------------------------------------------------------------------------


def test_max_attempts_defaults_to_one_more_than_the_schedule():
    """retry_schedule without max_attempts gives len(retry_schedule) + 1 tries; a
    max_attempts given is kept."""
    url = "http://127.0.0.1:9/hooks"
    assert Config(url, retry_schedule=[1, 2, 3]).max_attempts == 4
    assert Config(url, retry_schedule=(60.0,)).max_attempts == 2
    assert Config(url, retry_schedule=[1, 2, 3], max_attempts=2).max_attempts == 2
    assert Config(url).max_attempts == 3


def test_gaps_between_tries_follow_the_schedule_and_its_last_entry_repeats(hooks, receiver):
    """A receiver that always fails: the wait after the n-th failed try is the n-th entry
    plus at most 10 % (the last entry repeats), and the event is given up after
    max_attempts tries."""
    receiver.rule = lambda t: 500
    schedule = (0.1, 0.3, 0.6)
    results = Results()
    hooks.attach(
        "sched",
        EVENT,
        config(
            receiver.url_for("/sched"),
            retry_schedule=schedule,
            max_attempts=5,
            on_delivery=results,
        ),
    )
    emit(hooks, 0)
    [result] = results.wait_for(1)
    assert not result.delivered and result.attempts == 5
    expected = [0.1, 0.3, 0.6, 0.6]
    seen = gaps(receiver.tries)
    assert len(seen) == len(expected)
    for gap, wait in zip(seen, expected):
        assert wait - CLOCK_SLACK <= gap <= wait * 1.1 + LATE_SLACK, (seen, expected)


def test_the_default_max_attempts_of_a_schedule_is_used(hooks, receiver):
    """With retry_schedule of three entries and no max_attempts, an event that always fails
    is tried four times, and one with max_attempts=2 twice."""
    receiver.rule = lambda t: 500
    results = Results()
    schedule = (0.01, 0.01, 0.01)
    hooks.attach(
        "default",
        EVENT,
        config(receiver.url_for("/default"), retry_schedule=schedule, on_delivery=results),
    )
    hooks.attach(
        "two",
        EVENT,
        config(
            receiver.url_for("/two"), retry_schedule=schedule, max_attempts=2, on_delivery=results
        ),
    )
    emit(hooks, 0)
    attempts = {r.emitter_id: r.attempts for r in results.wait_for(2)}
    assert attempts == {"default": 4, "two": 2}
    assert len([t for t in receiver.tries if t.path == "/default"]) == 4
    assert len([t for t in receiver.tries if t.path == "/two"]) == 2


@pytest.mark.parametrize(
    ("retry_after", "schedule", "expected"),
    [
        ("5", (0.05, 0.4), 0.4),  # capped by the largest entry
        ("1", (0.05, 3.0), 1.0),  # under the cap: taken as it is
    ],
)
def test_retry_after_is_capped_by_the_largest_entry(
    hooks, receiver, retry_after, schedule, expected
):
    """A 503 with Retry-After waits that long instead of the schedule's entry, but never
    longer than the schedule's largest entry (and without jitter)."""
    receiver.rule = lambda t: (
        Answer(503, {"Retry-After": retry_after}) if t.try_number == 1 else Answer()
    )
    results = Results()
    hooks.attach(
        "sched",
        EVENT,
        config(receiver.url_for("/sched"), retry_schedule=schedule, on_delivery=results),
    )
    emit(hooks, 0)
    [result] = results.wait_for(1)
    assert result.delivered and result.attempts == 2
    [gap] = gaps(receiver.tries)
    assert expected - CLOCK_SLACK <= gap <= expected + LATE_SLACK


# -- disable_after ------------------------------------------------------------------------------


def paused_warnings(log: LogWatch, emitter_id: str) -> list[str]:
    """The WARNINGs that say ``emitter_id`` was paused."""
    return [m for m in log.messages(logging.WARNING) if "paused" in m and repr(emitter_id) in m]


def test_disable_after_pauses_an_emitter_whose_tries_all_fail(hooks, receiver, log):
    """Every try fails for disable_after (0.3 s): the emitter is paused with a WARNING that
    names it, no try starts after that, its events stay queued. restart resumes and counts
    afresh: with the receiver still failing it is paused again only after another 0.3 s;
    once the receiver answers, restart delivers everything."""
    failing = True
    receiver.rule = lambda t: 500 if failing else 204
    disable_after = 0.3
    hooks.attach(
        "dis",
        EVENT,
        config(
            receiver.url_for("/dis"),
            retry_schedule=(0.02,),
            max_attempts=1000,
            disable_after=disable_after,
        ),
    )
    for n in range(3):
        emit(hooks, n)
    log.wait_for("'dis' paused", level=logging.WARNING)
    [warning] = paused_warnings(log, "dis")
    assert "disable_after" in warning
    first = receiver.tries
    assert all(t.status == 500 and t.n == 0 for t in first)
    with pytest.raises(TimeoutError):
        receiver.wait_tries(len(first) + 1, timeout=0.3)  # tries came every 0.02 s before
    assert first[-1].end - first[0].end >= disable_after - 0.05  # type: ignore[operator]
    stats = hooks.stats("dis")
    assert stats.paused and stats.queued == 3 and stats.delivered == 0 and stats.given_up == 0
    assert not hooks.is_started("dis")
    assert "dis" not in hooks.list_emitters()

    restarted = time.monotonic()
    hooks.restart("dis")
    log.wait_for("'dis' paused", 2, level=logging.WARNING)
    second = [t for t in receiver.tries if t.start > restarted]
    assert len(second) >= 2
    # Counted from the first failure after the restart, not from the first one ever.
    assert second[-1].end - second[0].end >= disable_after - 0.05  # type: ignore[operator]
    assert hooks.stats("dis").queued == 3

    failing = False
    hooks.restart("dis")
    assert hooks.flush(WAIT)
    stats = hooks.stats("dis")
    assert stats.delivered == 3 and stats.queued == 0 and not stats.paused
    assert [t.n for t in receiver.tries if t.status == 204] == [0, 1, 2]


def test_a_2xx_answer_resets_the_disable_after_count(hooks, receiver, log):
    """Failures that never last disable_after without a 2xx between them (each event fails
    for about 0.1 s, then succeeds; 0.5 s of failures in all) do not pause the emitter."""
    receiver.rule = lambda t: 500 if t.try_number <= 3 else 204
    results = Results()
    hooks.attach(
        "dis",
        EVENT,
        config(
            receiver.url_for("/dis"),
            retry_schedule=(0.04,),
            max_attempts=10,
            disable_after=0.3,
            on_delivery=results,
        ),
    )
    for n in range(5):
        emit(hooks, n)
    items = results.wait_for(5)
    assert all(r.delivered and r.attempts == 4 for r in items)
    assert paused_warnings(log, "dis") == []
    assert hooks.is_started("dis")


def test_disable_after_counts_on_across_a_process_restart_with_sqlite(tmp_path, receiver, log):
    """With a durable store the failing time lives in the store: an instance that attaches
    the same emitter after another one failed for 0.3 s pauses it after the remaining
    0.2 s of disable_after (0.5 s), not after a fresh 0.5 s."""
    receiver.rule = lambda t: 500
    url = f"sqlite:///{tmp_path}/s.db"
    settings = config(
        receiver.url_for("/dis"), retry_schedule=(0.02,), max_attempts=1000, disable_after=0.5
    )
    first = WebhooksEmitter(exit_timeout=0.0, store=url)
    try:
        first.attach("dis", EVENT, settings)
        emit(first, 0)
        receiver.wait_until(lambda tries: len(tries) > 1 and tries[-1].start - tries[0].start > 0.3)
    finally:
        first.shutdown(timeout=0.0)
    assert paused_warnings(log, "dis") == []
    second = WebhooksEmitter(exit_timeout=0.0, store=url)
    try:
        resumed = time.monotonic()
        second.attach("dis", EVENT, settings)
        log.wait_for("'dis' paused", level=logging.WARNING)
        after = [t for t in receiver.tries if t.start > resumed]
        assert after, "the second instance made no try"
        assert after[-1].end - after[0].start < 0.4  # type: ignore[operator]
        assert second.stats("dis").queued == 1
    finally:
        second.shutdown(timeout=0.0)
