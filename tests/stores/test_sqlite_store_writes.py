"""The SQLite store's writes: settle in one transaction, seq numbering without AUTOINCREMENT,
schema 3 and the previous release's statements on it (a rolling deploy), trace_context.

Everything runs on real files under ``tmp_path``. Transactions are counted where SQLite
writes them: each commit ends with one commit frame in the ``-wal`` file.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from store_contract import LEASE, OTHER, closing_factory, fill, message, request_ids, take

from webhooks_emitter.stores import _sql
from webhooks_emitter.stores import sqlite as sqlite_module
from webhooks_emitter.stores._base import Message, StoredEvent, Target
from webhooks_emitter.stores.sqlite import SCHEMA_VERSION, SQLiteStore


def previous_queries() -> dict[str, str]:
    """The statements of the release that made schema 2, as it shipped and filled them."""
    support = Path(__file__).resolve().parents[1] / "support"
    text = (support / "sqlite_queries_schema_2.sql").read_text()
    queries = _sql.parse_queries(text)
    columns = queries.pop("state_columns")
    return {name: query.replace("__STATE_COLUMNS__", columns) for name, query in queries.items()}


PREVIOUS = previous_queries()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the test's store file goes (not created)."""
    return tmp_path / "webhooks.db"


@pytest.fixture
def make_store(db_path: Path) -> Iterator[Callable[..., SQLiteStore]]:
    """Open stores over ``db_path``; closed at the end."""
    yield from closing_factory(lambda **options: SQLiteStore(db_path, **options))


@pytest.fixture
def store(make_store: Callable[..., SQLiteStore]) -> SQLiteStore:
    """A fresh store on a new file."""
    return make_store()


def raw(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection to ``path``, outside the store."""
    return sqlite3.connect(path, isolation_level=None)


def commits(path: Path) -> int:
    """How many transactions the ``-wal`` file of ``path`` holds (its commit frames)."""
    wal = Path(f"{path}-wal")
    data = wal.read_bytes() if wal.exists() else b""
    if len(data) < 32:
        return 0
    page_size = int.from_bytes(data[8:12], "big")
    salts = data[16:24]
    count, offset = 0, 32
    while offset + 24 + page_size <= len(data):
        header = data[offset : offset + 24]
        if header[8:16] != salts:
            break  # frames left over from before the WAL was restarted
        if int.from_bytes(header[4:8], "big"):  # the file's size in pages: a commit frame
            count += 1
        offset += 24 + page_size
    return count


class TracedMessage(Message):
    """A Message with the trace context the engine adds (issue 20) on its branch."""

    __slots__ = ("trace_context",)

    def __init__(self, request_id: str, trace_context: Optional[str]) -> None:
        super().__init__("order.created", request_id, b"{}")
        self.trace_context = trace_context


def column(path: Path, sql: str, *args: Any) -> list[Any]:
    """The first column of ``sql``'s rows, read outside the store."""
    with raw(path) as conn:
        return [row[0] for row in conn.execute(sql, args).fetchall()]


# -- settle ----------------------------------------------------------------------------------


def started(store: SQLiteStore, events: list[StoredEvent], lease: Any = LEASE) -> None:
    """Record a try of each of ``events``, one call each (as the engine does today)."""
    for event in events:
        event.attempts += 1
        assert store.begin_try(lease, event, time.time())


def test_settle_records_outcomes_and_the_next_try_in_one_transaction(
    store: SQLiteStore, db_path: Path
) -> None:
    """Three outcomes and the next event's try: one commit in the file, each recorded."""
    fill(store, "e1", 4)
    first, second, third, fourth = take(store, "e1")
    started(store, [first, second, third])
    second.next_at, second.status_code, second.error = time.time() + 60, 500, "HTTP 500"
    third.status_code, third.error = 400, "HTTP 400"
    fourth.attempts = 1
    fourth.next_at = 1234.5
    before = commits(db_path)

    done, begun = store.settle(
        LEASE,
        [("finish", first), ("retry_later", second), ("give_up", third)],
        begin=fourth,
        now=1000.0,
    )

    assert (done, begun) == ([True, True, True], True)
    assert commits(db_path) - before == 1
    state = store.state("e1")
    assert (state.queued, state.failed, state.last_try_at) == (2, 1, 1000.0)
    rows = {e.request_id: e for e in store.fetch("e1", LEASE, 10)}
    assert list(rows) == ["req-1", "req-3"]
    assert (rows["req-1"].status_code, rows["req-1"].attempts) == (500, 1)
    assert (rows["req-3"].attempts, rows["req-3"].next_at) == (1, 1234.5)
    (dead,) = store.failed("e1")
    assert (dead.request_id, dead.status_code) == ("req-2", 400)


def test_settle_keeps_each_calls_guard(store: SQLiteStore) -> None:
    """An outcome under another token is not recorded; a try while paused does not begin;
    what passes its guard is recorded all the same."""
    fill(store, "e1", 3)
    first, second, third = take(store, "e1")
    started(store, [first, second])
    store.set_paused("e1", True)
    third.attempts = 1

    done, begun = store.settle(OTHER, [("finish", first)], begin=None)
    assert (done, begun) == ([False], None)
    done, begun = store.settle(LEASE, [("finish", first), ("finish", second)], begin=third)
    assert (done, begun) == ([True, True], False)  # outcomes pass while paused; a try not
    state = store.state("e1")
    assert (state.queued, state.last_try_at > 0) == (1, True)
    assert [e.attempts for e in store.fetch("e1", LEASE, 10)] == [0]


def test_settle_with_only_a_try_or_only_an_outcome_is_one_write(
    store: SQLiteStore, db_path: Path
) -> None:
    """A first try alone (nothing to settle yet), or a last outcome alone (nothing due
    next): one commit each, answered as the single calls would."""
    fill(store, "e1", 1)
    (event,) = take(store, "e1")
    event.attempts = 1
    before = commits(db_path)
    assert store.settle(LEASE, [], begin=event, now=5.0) == ([], True)
    assert store.settle(LEASE, [("finish", event)]) == ([True], None)
    assert commits(db_path) - before == 2
    assert store.state("e1").queued == 0


def test_settle_with_a_bad_kind_records_nothing(store: SQLiteStore) -> None:
    """An unknown outcome kind is a ValueError naming it, before anything is written."""
    fill(store, "e1", 2)
    first, second = take(store, "e1")
    started(store, [first, second])
    with pytest.raises(ValueError, match="'delivered'"):
        store.settle(LEASE, [("finish", first), ("delivered", second)])
    assert store.state("e1").queued == 2
    assert store.settle(LEASE, []) == ([], None)


def test_begin_try_records_when_a_try_may_follow(
    make_store: Callable[..., SQLiteStore],
) -> None:
    """``begin_try`` writes ``event.next_at`` (the engine sets it to the try's start plus
    request_timeout): a holder that takes over after a death fetches it and waits."""
    store = make_store()
    fill(store, "e1", 1)
    (event,) = take(store, "e1")
    event.attempts = 1
    event.next_at = time.time() + 3.0
    assert store.begin_try(LEASE, event, time.time())
    other = make_store()
    (seen,) = other.fetch("e1", OTHER, 10)
    assert (seen.attempts, seen.next_at) == (1, event.next_at)


# -- numbering --------------------------------------------------------------------------------


def test_a_seq_is_never_reused_once_the_newest_event_is_gone(store: SQLiteStore) -> None:
    """Without AUTOINCREMENT, events are still numbered above every seq the emitter ever
    had: delivering (deleting) the newest events, then emitting, never reuses one."""
    fill(store, "e1", 3)
    events = take(store, "e1")
    newest = max(e.seq for e in events)
    for event in events:
        assert store.finish(LEASE, event)
    store.append(message(3), [Target("e1", 100)])
    (again,) = take(store, "e1")
    assert again.seq > newest
    fill(store, "e2", 1, first=10)
    (other,) = take(store, "e2")
    assert other.seq > again.seq  # above every seq in the table, whoever's


def test_emit_writes_no_autoincrement_counter(store: SQLiteStore, db_path: Path) -> None:
    """Schema 3's events table has no AUTOINCREMENT: an emit writes no sqlite_sequence row."""
    fill(store, "e1", 3)
    (table,) = column(db_path, "SELECT sql FROM sqlite_master WHERE name = 'events'")
    assert "AUTOINCREMENT" not in table.upper()
    assert "events" not in column(db_path, "SELECT name FROM sqlite_sequence")
    assert column(db_path, "SELECT last_seq FROM emitters") == [take(store, "e1")[-1].seq]


def test_replay_numbers_copies_at_the_tail_in_emit_order(store: SQLiteStore) -> None:
    """Replayed events get new seqs above the emitter's newest, in emit order."""
    fill(store, "e1", 3)
    for event in take(store, "e1"):
        assert store.give_up(LEASE, event)
    fill(store, "e1", 1, first=3)
    assert store.replay("e1", ["req-2", "req-0"]) == 2
    events = take(store, "e1")
    assert request_ids(events) == ["req-3", "req-0", "req-2"]
    assert [e.seq for e in events] == sorted(e.seq for e in events)


# -- schema 3 -----------------------------------------------------------------------------------


def make_version_2(path: Path) -> int:
    """A file as schema 2 left it: a queued and a failed event of e1, and a newer event
    already delivered (so AUTOINCREMENT's counter is above every seq left). Returns that
    counter."""
    with raw(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        for version in (1, 2):
            for statement in sqlite_module.schema_statements(version):
                conn.execute(statement)
        conn.execute("INSERT INTO meta VALUES ('schema_version', 2), ('compatible_from', 1)")
        conn.execute("INSERT INTO emitters (id) VALUES ('e1'), ('e2')")
        for n, state in enumerate(["queued", "failed", "queued"]):
            conn.execute(
                "INSERT INTO events (emitter_id, event, request_id, body, state, emitted_at,"
                " failed_at) VALUES ('e1', 'order.created', ?, x'7B7D', ?, 1.0, 2.0)",
                (f"old-{n}", state),
            )
        conn.execute("DELETE FROM events WHERE request_id = 'old-2'")  # delivered
        counter: int = conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
        ).fetchone()[0]
    return counter


def test_a_schema_2_file_is_migrated_keeping_events_and_numbering(db_path: Path) -> None:
    """Opening a schema-2 file makes it schema 3: events and counters kept, the indexes
    and triggers there, and new events numbered above AUTOINCREMENT's old counter."""
    counter = make_version_2(db_path)
    store = SQLiteStore(db_path)
    try:
        assert SCHEMA_VERSION == 3 and store.schema_version == 3
        meta = dict(column_pairs(db_path, "SELECT key, value FROM meta"))
        assert meta == {"schema_version": 3, "compatible_from": 1}
        state = store.state("e1")
        assert (state.queued, state.failed) == (1, 1)
        assert request_ids(take(store, "e1")) == ["old-0"]
        assert [f.request_id for f in store.failed("e1")] == ["old-1"]
        indexes = column(db_path, "SELECT name FROM sqlite_master WHERE type = 'index'")
        assert {"events_by_emitter", "events_failed_by_request"} <= set(indexes)
        for emitter_id in ("e1", "e2"):
            store.append(message(9), [Target(emitter_id, 100)])
            assert take(store, emitter_id)[-1].seq > counter
        assert store.state("e2").queued == 1
    finally:
        store.close()


def column_pairs(path: Path, sql: str) -> list[tuple[Any, Any]]:
    """The rows of a two-column ``sql``, read outside the store."""
    with raw(path) as conn:
        return [(row[0], row[1]) for row in conn.execute(sql).fetchall()]


def test_the_previous_release_works_on_a_schema_3_file(
    store: SQLiteStore, db_path: Path
) -> None:
    """During a rolling deploy, processes of the previous release run their own statements
    on the migrated file next to this release's: their emits are numbered above the
    emitter's newest (never reusing the seq of one delivered), counted, fetched by both,
    delivered and given up under their leases, replayed at the tail."""
    q = PREVIOUS
    fill(store, "e1", 2)
    newest = take(store, "e1")[-1]
    assert store.finish(LEASE, newest)  # the table's newest seq is gone
    store.release("e1", LEASE)
    with raw(db_path) as old:
        now = time.time()
        # The previous release emits, and takes the lease.
        row = ("e1", "order.created", "old-emit", b"{}", None, now, 100)
        assert old.execute(q["append"], row).rowcount == 1
        lease = ("old:1", "old-token", now + 60, "e1", "x", now)
        assert old.execute(q["acquire"], lease).rowcount
        fetched = old.execute(q["fetch"], ("e1", 10)).fetchall()
        assert [r[2] for r in fetched] == ["req-0", "old-emit"]
        seq = fetched[-1][0]
        assert seq > newest.seq  # renumbered above the delivered one
        # It tries, fails and gives up the first, and delivers its own.
        first = fetched[0][0]
        assert old.execute(q["begin_try"], (1, now, first, "e1", "e1", "old-token", now)).rowcount
        assert old.execute(
            q["give_up"], (1, 500, "HTTP 500", now, first, "e1", "e1", "old-token")
        ).rowcount
        assert old.execute(q["begin_try"], (1, now, seq, "e1", "e1", "old-token", now)).rowcount
        assert old.execute(q["finish"], (seq, "e1", "e1", "old-token")).rowcount
        state = old.execute(q["state"], ("e1",)).fetchone()
        assert state[:3] == ("e1", 0, 1)
        # It lets go; then it replays the failed one (at the tail).
        assert old.execute(q["release"], (0.0, "e1", "old-token")).rowcount
        (failed_seq,) = old.execute(q["failed_seq"], ("e1", "req-0")).fetchone()
        old.execute("BEGIN IMMEDIATE")
        old.execute(q["requeue"], (failed_seq,))
        old.execute(q["delete"], (failed_seq,))
        old.execute("COMMIT")
    # This release sees it all, and numbers its next emit above everything.
    assert store.state("e1").queued == 1
    (replayed,) = take(store, "e1")
    assert replayed.request_id == "req-0" and replayed.seq > seq
    assert replayed.attempts == 0
    store.append(message(5), [Target("e1", 100)])
    assert request_ids(take(store, "e1")) == ["req-0", "req-5"]
    assert take(store, "e1")[-1].seq > replayed.seq


def test_trace_context_is_stored_and_kept_by_replay(store: SQLiteStore, db_path: Path) -> None:
    """The trace context of a message is written with its event (None: NULL) and a replay
    copies it; the engine's Message and StoredEvent carry it (issue 20)."""
    parent = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    store.append(TracedMessage("traced", parent), [Target("e1", 9)])
    store.append(TracedMessage("plain", None), [Target("e1", 9)])
    store.append(Message("order.created", "untraced", b"{}"), [Target("e1", 9)])
    sql = "SELECT trace_context FROM events ORDER BY seq"
    assert column(db_path, sql) == [parent, None, None]
    for event in take(store, "e1"):
        assert store.give_up(LEASE, event)
    assert store.replay("e1") == 3
    assert column(db_path, sql) == [parent, None, None]
