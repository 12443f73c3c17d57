"""What both SQL stores share (``webhooks_emitter/stores/_sql.py``): the fork-safe pool of
connections and the loader of named queries, on real sqlite3 connections and real forks."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from webhooks_emitter.stores import _sql

ROOT = Path(__file__).resolve().parents[2]


class Made:
    """A factory of real sqlite3 connections that records what it made and closed."""

    def __init__(self) -> None:
        self.made: list[sqlite3.Connection] = []
        self.closed: list[sqlite3.Connection] = []

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        self.made.append(conn)
        return conn

    def close(self, conn: sqlite3.Connection) -> None:
        self.closed.append(conn)
        conn.close()


def test_named_queries_become_one_line_statements() -> None:
    """Sections named by ``-- name:`` become one-line statements, comment lines and the
    final semicolon dropped; text before the first section is ignored."""
    text = textwrap.dedent(
        """\
        -- A preamble that names nothing.
        CREATE TABLE ignored (x);

        -- name: first
        -- What it does.
        SELECT a,
               b
        FROM t   WHERE a = ?;

        -- name: second
        UPDATE t SET b = ?1 WHERE a = ?2;
        """
    )
    assert _sql.parse_queries(text) == {
        "first": "SELECT a, b FROM t WHERE a = ?",
        "second": "UPDATE t SET b = ?1 WHERE a = ?2",
    }


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n", "'a' is named twice"),
        ("-- name: a\n-- nothing but a comment\n", "'a' is empty"),
    ],
)
def test_a_name_given_twice_or_an_empty_query_is_refused(text: str, error: str) -> None:
    """A duplicate name or an empty section is a ValueError naming the query."""
    with pytest.raises(ValueError, match=error):
        _sql.parse_queries(text)


def test_queries_load_from_a_file_of_the_package() -> None:
    """``load_queries`` reads a package's file: the SQLite store's statements are there."""
    queries = _sql.load_queries("webhooks_emitter.stores", "sql/sqlite_queries.sql")
    assert queries["register"] == "INSERT OR IGNORE INTO emitters (id) VALUES (?)"
    assert {"append", "fetch", "begin_try", "take_over"} <= set(queries)


def test_the_warmest_connection_is_handed_out_first() -> None:
    """Idle connections are reused last-in first-out; a new one is made only when none is
    idle."""
    made = Made()
    pool = _sql.Pool(made.connect, made.close)
    first, second = pool.take(), pool.take()
    pool.give(first)
    pool.give(second)
    assert pool.take() is second
    assert pool.take() is first
    assert len(made.made) == 2 and pool.connections == made.made


def test_a_connection_given_back_unusable_is_closed() -> None:
    """``give(conn, reusable=False)`` closes it and forgets it."""
    made = Made()
    pool = _sql.Pool(made.connect, made.close)
    conn = pool.take()
    pool.give(conn, reusable=False)
    assert made.closed == [conn] and pool.connections == []
    assert pool.take() is not conn


def test_close_closes_idle_connections_at_once_and_busy_ones_when_given_back() -> None:
    """``close`` closes the idle connections; one in use then is closed when it comes back;
    the pool goes on making new ones."""
    made = Made()
    pool = _sql.Pool(made.connect, made.close)
    idle, busy = pool.take(), pool.take()
    pool.give(idle)
    pool.close()
    assert made.closed == [idle]
    busy.execute("SELECT 1")  # still usable by the thread that holds it
    pool.give(busy)
    assert made.closed == [idle, busy] and pool.connections == []
    fresh = pool.take()
    assert fresh not in (idle, busy)


def test_the_postgresql_queries_load_with_the_schema_substituted() -> None:
    """``load_queries(..., substitute)`` replaces placeholders before parsing: the
    PostgreSQL store's statements name its schema, each on one line."""
    queries = _sql.load_queries(
        "webhooks_emitter.stores", "sql/postgres_queries.sql", {"__SCHEMA__": '"s1"'}
    )
    assert '"s1".emitters' in queries["register"]
    assert "__SCHEMA__" not in "".join(queries.values())
    assert all("\n" not in statement for statement in queries.values())


def test_a_bounded_pool_makes_no_more_than_size_and_times_out_when_all_are_busy() -> None:
    """With ``size``, a take while every connection is in use waits until ``deadline`` and
    then raises TimeoutError saying so; without a deadline it does not wait at all."""
    made = Made()
    pool = _sql.Pool(made.connect, made.close, size=2)
    first, second = pool.take(), pool.take()
    with pytest.raises(TimeoutError, match="all 2 connections of the store stayed busy"):
        pool.take(time.monotonic() + 0.01)
    with pytest.raises(TimeoutError, match="stayed busy"):
        pool.take()
    assert len(made.made) == 2
    pool.give(first)
    assert pool.take() is first
    pool.give(first)
    pool.give(second)


def test_a_bounded_pool_hands_a_connection_given_back_to_a_waiting_thread() -> None:
    """A thread waiting on a full pool gets the connection another gives back."""
    made = Made()
    pool = _sql.Pool(made.connect, made.close, size=1)
    held = pool.take()
    got: list[sqlite3.Connection] = []
    waiter = threading.Thread(target=lambda: got.append(pool.take(time.monotonic() + 60)))
    waiter.start()
    # The waiter is blocked until a connection comes back: it has nothing yet.
    assert not got
    pool.give(held)
    waiter.join(60)
    assert got == [held] and len(made.made) == 1


def test_a_connection_discarded_frees_its_place_in_a_bounded_pool() -> None:
    """``discard`` (a broken connection) frees its place: the next take makes a new one."""
    made = Made()
    pool = _sql.Pool(made.connect, made.close, size=1)
    broken = pool.take()
    pool.discard(broken)
    fresh = pool.take(time.monotonic() + 60)
    assert fresh is not broken and made.closed == [broken] and pool.connections == [fresh]


def test_a_failed_connect_frees_its_place_in_a_bounded_pool() -> None:
    """A connect that raises leaves nothing pooled and its place free."""
    made = Made()
    failures = [OSError("refused")]

    def connect() -> sqlite3.Connection:
        if failures:
            raise failures.pop()
        return made.connect()

    pool = _sql.Pool(connect, made.close, size=1)
    with pytest.raises(OSError, match="refused"):
        pool.take()
    assert pool.connections == []
    assert pool.take() is made.made[0]


@pytest.mark.parametrize("size", [None, 2])
def test_an_idle_connection_that_fails_the_check_is_closed_and_replaced(
    size: int | None,
) -> None:
    """``check`` is asked before an idle connection is handed out: one that fails it is
    closed and another made, bounded pool or not."""
    made = Made()
    dead: set[int] = set()
    pool = _sql.Pool(made.connect, made.close, size=size, check=lambda c: id(c) not in dead)
    conn = pool.take()
    pool.give(conn)
    dead.add(id(conn))
    fresh = pool.take()
    assert fresh is not conn and made.closed == [conn] and pool.connections == [fresh]


FORK = """
import json, os, sqlite3, sys
from webhooks_emitter.stores import _sql

path = sys.argv[1]
closed, forks = [], []
pool = _sql.Pool(
    lambda: sqlite3.connect(path, check_same_thread=False),
    lambda conn: (closed.append(id(conn)), conn.close()),
    on_fork=lambda: forks.append(os.getpid()),
    size=int(sys.argv[2]) or None,
)
parent = pool.take()
parent.execute("CREATE TABLE t (x)")
pool.give(parent)
pid = os.fork()
if pid == 0:
    code = 1
    try:
        mine = pool.take()
        assert mine is not parent, "the child used its parent's connection"
        pool.give(parent)  # given back in the child: never reused, never closed
        pool.give(mine)
        pool.close()
        pool.after_fork()  # a no-op now
        assert forks == [os.getpid()], forks
        assert closed == [id(mine)], closed  # its own only, when closed
        assert pool.take() is not parent
        code = 0
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
conn = pool.take()
conn.execute("INSERT INTO t VALUES (1)")
print(json.dumps({"status": status, "same": conn is parent, "closed": closed, "forks": forks}))
"""


@pytest.mark.parametrize("size", [0, 1], ids=["unbounded", "bounded-to-1"])
def test_a_forked_child_makes_its_own_connections_and_closes_none_inherited(
    tmp_path: Path, size: int
) -> None:
    """In a forked child the pool sets the parent's connections aside (unused, unclosed),
    calls ``on_fork`` once, and makes its own; the parent's go on working. A bounded pool
    does not count the inherited ones: a child of a full pool of one still gets its own."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    completed = subprocess.run(
        [sys.executable, "-c", FORK, str(tmp_path / "fork.db"), str(size)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {
        "status": 0,
        "same": True,
        "closed": [],
        "forks": [],
    }, completed.stderr
