"""The PostgreSQL store against a real server (tests/support/postgres_server.py starts one).

The store contract (tests/stores/store_contract.py), then what only PostgreSQL does: emit inside
the caller's transaction with each kind of connection, schema creation and versions, leases
across processes, notifications, a server restart, fork.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable, Optional

import psycopg
import pytest
from postgres_server import PostgresServer, Server, conninfo_to_url
from store_contract import LEASE, OTHER, DurableStoreContract, closing_factory, fill, message, take

from webhooks_emitter.stores._base import Lease, Message, StoredEvent, StoreError, Target
from webhooks_emitter.stores.postgres import (
    POLL_COUNT_LIMIT,
    SCHEMA_VERSION,
    PostgresStore,
    _load_sql,
)

SECRET = "s3cret-Pa55word"


@pytest.fixture
def make_store(pg_store_url: str) -> Iterator[Callable[..., PostgresStore]]:
    """``make_store(**options)``: another PostgresStore over the test's database, closed
    after the test."""
    yield from closing_factory(lambda **options: PostgresStore(pg_store_url, **options))


@pytest.fixture
def store(make_store: Callable[..., PostgresStore]) -> PostgresStore:
    """A fresh PostgresStore in a fresh database."""
    return make_store()


def sql(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on its own autocommit connection; its rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def run_python(code: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new Python process with ``args``; check it succeeded."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return result


class TestPostgresStore(DurableStoreContract):
    """The store contract, on PostgreSQL."""

    def test_connection_is_a_value_error(self, store: PostgresStore) -> None:  # type: ignore[override]
        """PostgreSQL takes ``connection=``, but only a database connection: anything else
        is a TypeError naming what it takes, and stores nothing."""
        with pytest.raises(TypeError, match="psycopg 3 or psycopg2 connection"):
            store.append(message(1), [Target("e1", 10)], connection=object())
        assert store.state("e1").queued == 0


# -- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"schema": "Bad-Name"}, ValueError, "schema"),
        ({"schema": "pg_mine"}, ValueError, "schema"),
        ({"schema": "x" * 64}, ValueError, "schema"),
        ({"schema": 3}, TypeError, "schema"),
        ({"lease_timeout": 0}, ValueError, "lease_timeout"),
        ({"lease_timeout": float("inf")}, ValueError, "lease_timeout"),
        ({"lease_timeout": "30"}, TypeError, "lease_timeout"),
        ({"timeout": -1.0}, ValueError, "timeout"),
        ({"timeout": True}, TypeError, "timeout"),
        ({"create": "yes"}, TypeError, "create"),
        ({"pool_size": 0}, ValueError, "pool_size"),
    ],
)
def test_bad_arguments_are_named(options: dict[str, Any], error: type, words: str) -> None:
    """Each bad argument raises TypeError or ValueError naming it, before any connection."""
    with pytest.raises(error, match=words):
        PostgresStore("postgresql://u@127.0.0.1:1/db", **options)


def test_conninfo_must_be_a_str() -> None:
    """A conninfo that is not a str is a TypeError."""
    with pytest.raises(TypeError, match="conninfo"):
        PostgresStore(b"postgresql://u@h/db")  # type: ignore[arg-type]


def test_unparsable_conninfo_does_not_echo_the_password() -> None:
    """A conninfo libpq cannot parse is a ValueError that shows no password."""
    with pytest.raises(ValueError, match="conninfo") as caught:
        PostgresStore(f"host=h password={SECRET} oops")
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "conninfo",
    [
        f"postgresql://app:{SECRET}@127.0.0.1:1/app",
        f"postgresql://app@127.0.0.1:1/app?password={SECRET}&sslmode=disable",
        f"host=127.0.0.1 port=1 user=app password={SECRET} dbname=app",
        f"host=127.0.0.1 port=1 user=app password='{SECRET}' dbname=app",
    ],
)
def test_no_password_in_repr_describe_or_errors(
    conninfo: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The password shows nowhere: repr, describe(), the StoreError of an unreachable
    server (which names host:port/db) and the logs."""
    store = PostgresStore(conninfo, timeout=1.0)
    with pytest.raises(StoreError) as caught:
        store.register("e1")
    for text in (repr(store), store.describe(), str(caught.value), caplog.text):
        assert SECRET not in text
    assert "127.0.0.1:1/app" in store.describe()
    assert "127.0.0.1:1/app" in str(caught.value)
    assert store.wait_for_change(0.05) is True  # unreachable: "maybe", never an error
    assert SECRET not in caplog.text


def test_importing_does_not_import_psycopg() -> None:
    """Importing the package and this module loads no database driver."""
    run_python(
        """
        import sys
        import webhooks_emitter, webhooks_emitter.stores, webhooks_emitter.stores.postgres
        loaded = {"psycopg", "psycopg2", "sqlalchemy"} & set(sys.modules)
        assert not loaded, loaded
        """
    )


def test_without_psycopg_construction_says_what_to_install() -> None:
    """Without psycopg 3, making a PostgresStore raises ImportError naming the extra."""
    result = run_python(
        """
        import sys
        sys.modules["psycopg"] = None  # as if it were not installed
        from webhooks_emitter.stores.postgres import PostgresStore
        try:
            PostgresStore("postgresql://u@127.0.0.1/db")
        except ImportError as exc:
            print(exc)
        """
    )
    assert "pip install 'webhooks_emitter[postgres]'" in result.stdout


# -- schema ----------------------------------------------------------------------------------


EXPECTED_COLUMNS = {
    "schema_version": {"singleton", "version", "compatible_from", "upgraded_at"},
    "events": {
        "seq", "emitter_id", "event", "request_id", "body", "ordering_key", "attempts",
        "next_at", "emitted_at", "status_code", "error", "failed_at", "trace_context",
    },
    "emitters": {
        "emitter_id", "paused", "hold_until", "last_try_at", "failing_since", "next_due",
        "lease_holder", "lease_token", "lease_expires",
    },
}


def test_tables_hold_only_the_expected_columns(store: PostgresStore, pg_store_url: str) -> None:
    """The schema has three tables with known columns: nowhere to put a URL or a secret."""
    store.open()
    rows = sql(
        pg_store_url,
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'webhooks_emitter'",
    )
    found: dict[str, set[str]] = {}
    for table, column in rows:
        found.setdefault(table, set()).add(column)
    assert found == EXPECTED_COLUMNS


def test_queue_table_has_its_autovacuum_settings(store: PostgresStore, pg_store_url: str) -> None:
    """The events table vacuums after a fixed count of dead rows and leaves room for HOT."""
    store.open()
    (options,) = sql(
        pg_store_url,
        "SELECT reloptions FROM pg_class WHERE oid = 'webhooks_emitter.events'::regclass",
    )[0]
    assert "autovacuum_vacuum_scale_factor=0.0" in options
    assert "fillfactor=80" in options


def test_schema_in_a_chosen_schema(make_store: Callable[..., PostgresStore],
                                   pg_store_url: str) -> None:
    """Two schemas in one database are two independent stores."""
    one, two = make_store(schema="hooks_one"), make_store(schema="hooks_two")
    fill(one, "e1", 2)
    assert two.state("e1").queued == 0
    assert one.state("e1").queued == 2
    schemas = {row[0] for row in sql(pg_store_url, "SELECT nspname FROM pg_namespace")}
    assert {"hooks_one", "hooks_two"} <= schemas


def test_schema_created_by_racing_processes(pg_store_url: str) -> None:
    """Five processes opening a fresh database at the same moment all succeed, and the
    schema is made once."""
    code = """
        import sys
        from webhooks_emitter.stores.postgres import PostgresStore
        store = PostgresStore(sys.argv[1])
        print("ready", flush=True)
        sys.stdin.readline()  # the go signal, so that all open at once
        store.open()
        store.register("from-" + sys.argv[2])
        print("opened", flush=True)
    """
    children = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), pg_store_url, str(n)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for n in range(5)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            assert out == "opened\n"
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    assert sql(pg_store_url, "SELECT version FROM webhooks_emitter.schema_version") == [
        (SCHEMA_VERSION,)
    ]
    registered = sql(pg_store_url, "SELECT count(*) FROM webhooks_emitter.emitters")
    assert registered == [(5,)]


def test_newer_schema_is_refused(make_store: Callable[..., PostgresStore],
                                 pg_store_url: str) -> None:
    """A schema a newer library made, that this one cannot use, is a StoreError saying to
    upgrade; one that declares itself compatible is used."""
    make_store().open()
    sql(pg_store_url, "UPDATE webhooks_emitter.schema_version SET version = 99, "
        "compatible_from = 99")
    with pytest.raises(StoreError, match="newer.*upgrade webhooks_emitter"):
        make_store().open()
    with pytest.raises(StoreError, match="newer"):
        make_store().migrate()
    sql(pg_store_url, "UPDATE webhooks_emitter.schema_version SET version = 99, "
        f"compatible_from = {SCHEMA_VERSION}")
    assert make_store(create=False).migrate() == 99  # nothing to do, and it says so
    compatible = make_store(create=False)
    compatible.register("e1")
    assert compatible.known("e1")


def test_create_false_never_runs_ddl(make_store: Callable[..., PostgresStore],
                                     pg_store_url: str) -> None:
    """create=False on an empty database: StoreError telling to run migrate, and nothing
    created; after migrate() it works."""
    with pytest.raises(StoreError, match="webhooks-emitter migrate --store"):
        make_store(create=False).register("e1")
    assert sql(pg_store_url, "SELECT 1 FROM pg_namespace WHERE nspname = 'webhooks_emitter'") == []
    assert make_store(create=False).migrate() == SCHEMA_VERSION
    assert make_store(create=False).migrate() == SCHEMA_VERSION
    store = make_store(create=False)
    store.register("e1")
    assert store.known("e1")


def test_create_false_on_an_old_schema_says_migrate(make_store: Callable[..., PostgresStore],
                                                    pg_store_url: str) -> None:
    """A schema older than this library, with create=False: StoreError naming migrate."""
    make_store().open()
    sql(pg_store_url, "UPDATE webhooks_emitter.schema_version SET version = 0")
    with pytest.raises(StoreError, match="version 0.*migrate"):
        make_store(create=False).open()


def test_poll_counts_up_to_its_limit(store: PostgresStore, pg_store_url: str) -> None:
    """``poll`` stops counting at POLL_COUNT_LIMIT (it finds who has work); ``state`` counts
    every queued event."""
    store.register("e1")
    sql(pg_store_url, "INSERT INTO webhooks_emitter.events (emitter_id, event, request_id, "
        "body, emitted_at) SELECT 'e1', 'e', 'r' || g, '{}', 0 "
        "FROM generate_series(1, %s) AS g", (POLL_COUNT_LIMIT + 5,))
    (polled,) = store.poll()
    assert polled.queued == POLL_COUNT_LIMIT
    assert store.state("e1").queued == POLL_COUNT_LIMIT + 5


# -- transactional emit ------------------------------------------------------------------------


def _psycopg3(url: str) -> tuple[Any, Callable[[], None], Callable[[], None], Callable[[], None]]:
    conn = psycopg.connect(url)
    return conn, conn.commit, conn.rollback, conn.close


def _psycopg2(url: str) -> tuple[Any, Callable[[], None], Callable[[], None], Callable[[], None]]:
    psycopg2 = importlib.import_module("psycopg2")  # untyped: imported by name
    conn = psycopg2.connect(url)
    return conn, conn.commit, conn.rollback, conn.close


def _sa_engine(url: str, driver: str) -> Any:
    import sqlalchemy

    return sqlalchemy.create_engine(
        conninfo_to_url(url).replace("postgresql://", f"postgresql+{driver}://", 1),
        poolclass=sqlalchemy.pool.NullPool,
    )


def _sa_connection(driver: str) -> Callable[[str], Any]:
    def make(url: str) -> tuple[Any, Callable[[], None], Callable[[], None], Callable[[], None]]:
        engine = _sa_engine(url, driver)
        conn = engine.connect()

        def close() -> None:
            conn.close()
            engine.dispose()

        return conn, conn.commit, conn.rollback, close

    return make


def _sa_session(url: str) -> tuple[Any, Callable[[], None], Callable[[], None], Callable[[], None]]:
    from sqlalchemy.orm import Session

    engine = _sa_engine(url, "psycopg")
    session = Session(engine)

    def close() -> None:
        session.close()
        engine.dispose()

    return session, session.commit, session.rollback, close


CONNECTION_KINDS = {
    "psycopg": _psycopg3,
    "psycopg2": _psycopg2,
    "sqlalchemy-connection-psycopg2": _sa_connection("psycopg2"),
    "sqlalchemy-connection-psycopg": _sa_connection("psycopg"),
    "sqlalchemy-session": _sa_session,
}


class Caller:
    """A caller's connection (``conn``) and how to commit or roll back its transaction."""

    def __init__(self, conn: Any, commit: Callable[[], None], rollback: Callable[[], None]):
        self.conn, self.commit, self.rollback = conn, commit, rollback


@pytest.fixture(params=sorted(CONNECTION_KINDS))
def caller(request: pytest.FixtureRequest, pg_store_url: str) -> Iterator[Caller]:
    """A caller's connection of each supported kind, with its commit and rollback."""
    conn, commit, rollback, close = CONNECTION_KINDS[request.param](pg_store_url)
    try:
        yield Caller(conn, commit, rollback)
    finally:
        close()


def _execute(conn: Any, query: str) -> list[tuple[Any, ...]]:
    """Run ``query`` on any kind of caller connection; its rows."""
    if type(conn).__module__.startswith("sqlalchemy"):
        import sqlalchemy

        result = conn.execute(sqlalchemy.text(query))
        return [tuple(row) for row in result] if result.returns_rows else []
    cursor = conn.cursor()
    cursor.execute(query)
    return [tuple(row) for row in cursor.fetchall()] if cursor.description else []


def test_emit_in_a_transaction_is_seen_only_after_commit(
    store: PostgresStore, make_store: Callable[..., PostgresStore], caller: Caller
) -> None:
    """Written through the caller's connection: nothing fetchable before its commit, all of
    it after; the caller's own writes commit with it."""
    store.open()
    worker = make_store()
    _execute(caller.conn, "CREATE TABLE IF NOT EXISTS orders (id int)")
    _execute(caller.conn, "INSERT INTO orders VALUES (1)")
    assert store.append(message(1), [Target("e1", 10)], connection=caller.conn) == [True]
    assert store.append(message(2), [Target("e1", 10)], connection=caller.conn) == [True]
    assert take(worker, "e1") == []
    assert worker.state("e1").queued == 0
    caller.commit()
    assert [event.request_id for event in take(worker, "e1")] == ["req-1", "req-2"]
    assert sql(worker._conninfo, "SELECT id FROM orders") == [(1,)]


def test_emit_in_a_rolled_back_transaction_never_existed(
    store: PostgresStore, make_store: Callable[..., PostgresStore], caller: Caller
) -> None:
    """After the caller's rollback the events were never stored, and no process sees them."""
    store.open()
    worker = make_store()
    targets = [Target("e1", 10), Target("e2", 10)]
    assert store.append(message(1), targets, connection=caller.conn) == [True, True]
    caller.rollback()
    assert worker.poll() == []
    assert take(worker, "e1") == [] and take(worker, "e2", lease=OTHER) == []


def test_store_error_leaves_the_callers_transaction_usable(
    store: PostgresStore, make_store: Callable[..., PostgresStore], caller: Caller,
    pg_store_url: str,
) -> None:
    """A write that fails in the database (the events table locked past the caller's
    lock_timeout) raises StoreError and rolls back to its savepoint: the caller's
    transaction goes on, and what it did before and after commits."""
    store.open()
    _execute(caller.conn, "CREATE TABLE IF NOT EXISTS orders (id int)")
    _execute(caller.conn, "INSERT INTO orders VALUES (7)")
    _execute(caller.conn, "SET LOCAL lock_timeout = '100ms'")
    with psycopg.connect(pg_store_url) as locker:
        locker.execute("LOCK TABLE webhooks_emitter.events IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(StoreError, match="through the connection.*lock"):
            store.append(message(0), [Target("e1", 10)], connection=caller.conn)
        locker.rollback()
    assert _execute(caller.conn, "SELECT 41 + 1") == [(42,)]
    assert store.append(message(1), [Target("e1", 10)], connection=caller.conn) == [True]
    caller.commit()
    assert [event.request_id for event in take(make_store(), "e1")] == ["req-1"]
    assert sql(pg_store_url, "SELECT id FROM orders") == [(7,)]


def test_autocommit_connection_outside_a_transaction_commits_at_once(
    store: PostgresStore, pg_store_url: str
) -> None:
    """A connection in autocommit mode and outside a transaction: the event is committed
    at once, like any statement there (psycopg 3 and psycopg2)."""
    psycopg2 = importlib.import_module("psycopg2")  # untyped: imported by name

    store.open()
    with psycopg.connect(pg_store_url, autocommit=True) as conn:
        assert store.append(message(1), [Target("e1", 10)], connection=conn) == [True]
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    conn2 = psycopg2.connect(pg_store_url)
    try:
        conn2.autocommit = True
        assert store.append(message(2), [Target("e1", 10)], connection=conn2) == [True]
    finally:
        conn2.close()
    assert store.state("e1").queued == 2


def test_emit_respects_max_queue_size_in_a_transaction(
    store: PostgresStore, pg_store_url: str
) -> None:
    """The room check counts the caller's own uncommitted events too."""
    store.open()
    with psycopg.connect(pg_store_url) as conn:
        accepted = [
            store.append(message(n), [Target("e1", 2)], connection=conn)[0] for n in range(3)
        ]
        conn.commit()
    assert accepted == [True, True, False]


@pytest.mark.parametrize("through", ["own transaction", "caller's connection"])
def test_a_burst_never_fills_an_emitter_past_max_queue_size(
    store: PostgresStore, pg_store_url: str, through: str
) -> None:
    """Forty emits in a row to an emitter of max_queue_size 10 (most of them skip the room
    check while the queue is known to be below half full): exactly the first ten are
    stored, the others refused."""
    store.open()
    with psycopg.connect(pg_store_url) as conn:
        connection = conn if through == "caller's connection" else None
        accepted = [store.append(message(n), [Target("e1", 10)], connection=connection)[0]
                    for n in range(40)]
        conn.commit()
    assert accepted == [True] * 10 + [False] * 30
    assert store.state("e1").queued == 10


def test_awkward_values_arrive_unchanged_through_a_callers_connection(
    caller: Caller, store: PostgresStore
) -> None:
    """Names, ids and keys with quotes, backslashes, percent signs and non-ASCII text, and
    a body holding every byte value, written through each kind of caller's connection
    (whose values the store writes as literals): fetched back exactly."""
    store.open()
    awkward = "o'rder\\.ca%(n)s%s \u00e9\u6f22 \"q\" ; DROP TABLE x; --"
    body = bytes(range(256))
    sent = Message(awkward, "req-" + awkward, body, "key-" + awkward)
    assert store.append(sent, [Target("e1", 10)], connection=caller.conn) == [True]
    assert store.append(Message("plain", "req-2", b"", None), [Target("e1", 10)],
                        connection=caller.conn) == [True]
    caller.commit()
    first, second = take(store, "e1")
    assert (first.event, first.request_id, first.body, first.ordering_key) == (
        awkward, "req-" + awkward, body, "key-" + awkward)
    assert (second.event, second.body, second.ordering_key) == ("plain", b"", None)


def test_a_dropped_prepared_statement_is_prepared_again(
    caller: Caller, store: PostgresStore
) -> None:
    """The caller's session loses the store's prepared statements (a pooler's DISCARD
    ALL, DEALLOCATE ALL): the next emit prepares them again, in the same transaction,
    which stays usable; and a second store that finds them prepared by the first (after
    an emit that failed, say) uses them."""
    # max_queue_size 2: every emit runs the room check, so all three use one statement.
    store.open()
    assert store.append(message(0), [Target("a", 2)], connection=caller.conn) == [True]
    caller.commit()
    _execute(caller.conn, "DEALLOCATE ALL")
    assert store.append(message(1), [Target("b", 2)], connection=caller.conn) == [True]
    other = PostgresStore(store._conninfo)
    try:
        assert other.append(message(2), [Target("c", 2)], connection=caller.conn) == [True]
    finally:
        other.close()
    assert _execute(caller.conn, "SELECT 41 + 1") == [(42,)]
    caller.commit()
    assert [store.state(e).queued for e in "abc"] == [1, 1, 1]


def test_overlapping_transactions_do_not_wait(store: PostgresStore, pg_store_url: str) -> None:
    """Two open transactions emit to the same emitter without waiting for each other (a
    lock wait would trip the 2 s statement_timeout); the one that commits first is fetched
    first even though its seq is higher, and the other is found later below the window."""
    store.open()
    first = psycopg.connect(pg_store_url, options="-c statement_timeout=2000")
    second = psycopg.connect(pg_store_url, options="-c statement_timeout=2000")
    try:
        started = time.monotonic()
        assert store.append(message(1), [Target("e1", 1)], connection=first) == [True]
        assert store.append(message(2), [Target("e1", 1)], connection=second) == [True]
        assert time.monotonic() - started < 1.0
        second.commit()
        (early,) = take(store, "e1")
        assert early.request_id == "req-2"
        first.commit()
        (late,) = store.fetch("e1", LEASE, 10, skip={early.seq})
        assert late.request_id == "req-1" and late.seq < early.seq
    finally:
        first.close()
        second.close()


def test_connection_to_a_non_postgres_sqlalchemy_engine_is_refused(store: PostgresStore) -> None:
    """A SQLAlchemy connection to another database kind is a ValueError."""
    import sqlalchemy

    engine = sqlalchemy.create_engine("sqlite://")
    with engine.connect() as conn:
        with pytest.raises(ValueError, match="sqlite"):
            store.append(message(1), [Target("e1", 10)], connection=conn)


# -- timeouts and connections ------------------------------------------------------------------


def test_a_locked_table_is_a_store_error_within_timeout(
    make_store: Callable[..., PostgresStore], pg_store_url: str
) -> None:
    """A lock held elsewhere makes a call fail with StoreError after about ``timeout``."""
    store = make_store(timeout=0.5)
    store.open()
    with psycopg.connect(pg_store_url) as locker:
        locker.execute("LOCK TABLE webhooks_emitter.events IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(StoreError, match="lock timeout|canceling statement"):
            store.append(message(1), [Target("e1", 10)])
        assert time.monotonic() - started < 3.0
        locker.rollback()
    assert store.append(message(1), [Target("e1", 10)]) == [True]


def test_an_ended_session_is_replaced(store: PostgresStore, pg_store_url: str) -> None:
    """A pooled connection whose session the server ended is noticed and replaced."""
    store.register("e1")
    ended = [pid for pid, _ in sql(
        pg_store_url,
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'webhooks_emitter' AND datname = current_database()",
    )]
    assert ended
    # pg_terminate_backend only signals: wait until the sessions are gone (as after a
    # restart), or the next call may race the exit, which append() must not retry.
    deadline = time.monotonic() + 10
    while sql(pg_store_url, "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", (ended,)):
        assert time.monotonic() < deadline
    assert store.append(message(1), [Target("e1", 10)]) == [True]
    assert store.state("e1").queued == 1


def test_threads_beyond_the_pool_wait_their_turn(make_store: Callable[..., PostgresStore]) -> None:
    """More threads than connections: all calls succeed, the pool never opens more."""
    store = make_store(pool_size=2)
    store.open()
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                store.append(message(n * 100 + i), [Target("e1", 10_000)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.state("e1").queued == 160


# -- notifications ------------------------------------------------------------------------------


def test_wait_for_change_wakes_on_another_connections_commit(
    store: PostgresStore, pg_store_url: str
) -> None:
    """An event committed through another connection wakes the listener within 0.5 s of
    the commit; before the commit it does not."""
    assert store.wait_for_change(0) is True  # listening now; earlier changes unheard
    assert store.wait_for_change(5.0) is True  # the rechecks that follow a (re)connect
    assert store.wait_for_change(5.0) is True
    assert store.wait_for_change(0) is False
    with psycopg.connect(pg_store_url) as conn:
        store.append(message(1), [Target("e1", 10)], connection=conn)
        assert store.wait_for_change(0.2) is False  # not committed: nothing to hear
        conn.commit()
        committed = time.monotonic()
    assert store.wait_for_change(5.0) is True
    assert time.monotonic() - committed < 0.5


def test_wait_for_change_hears_other_stores_and_pauses(
    store: PostgresStore, make_store: Callable[..., PostgresStore]
) -> None:
    """Appends, pauses and replays of another process each wake the listener."""
    other = make_store()
    store.wait_for_change(0)
    other.append(message(1), [Target("e1", 10)])
    assert store.wait_for_change(5.0) is True
    other.set_paused("e1", True)
    assert store.wait_for_change(5.0) is True
    assert store.wait_for_change(0) is False


def test_wake_cuts_a_wait_short(store: PostgresStore) -> None:
    """``wake()`` from another thread ends a long wait at once."""
    store.wait_for_change(0)
    answers: list[bool] = []
    waiter = threading.Thread(target=lambda: answers.append(store.wait_for_change(30.0)))
    started = time.monotonic()
    waiter.start()
    store.wake()
    waiter.join(10.0)
    assert answers == [True]
    assert time.monotonic() - started < 5.0


# -- many processes ----------------------------------------------------------------------------


def test_lease_of_a_frozen_holder_is_taken_over_once_it_expires(
    make_store: Callable[..., PostgresStore], pg_store_url: str
) -> None:
    """A process holding a lease is frozen (SIGSTOP): its session lives on, so the store
    cannot tell it is stuck; another process takes the lease once it expires
    (lease_timeout 1 s), not before, and finds the events it left."""
    store = make_store(lease_timeout=1.0)
    fill(store, "e1", 2)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sys
            from webhooks_emitter.stores._base import Lease
            from webhooks_emitter.stores.postgres import PostgresStore
            store = PostgresStore(sys.argv[1], lease_timeout=1.0)
            assert store.acquire("e1", Lease.new())
            print("held", flush=True)
            sys.stdin.read()
        """), pg_store_url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        mine = Lease.new()
        os.kill(holder.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        assert not store.acquire("e1", mine)
        assert (store.state("e1").lease_holder or "").endswith(f":{holder.pid}")
        while not store.acquire("e1", mine):
            assert time.monotonic() - frozen < 5.0, "lease never expired"
            threading.Event().wait(0.02)
        assert [event.request_id for event in store.fetch("e1", mine, 10)] == ["req-0", "req-1"]
    finally:
        holder.kill()
        holder.wait()


def test_server_restart_loses_nothing(
    make_store: Callable[..., PostgresStore], postgres_server: Server
) -> None:
    """The server stops and starts again mid-stream: the store's connections reconnect,
    appends go on, nothing committed is lost or doubled, and the listener hears again."""
    store = make_store(timeout=5.0)
    listener = make_store()
    fill(store, "e1", 50)
    assert listener.wait_for_change(0) is True
    postgres_server.restart()
    fill(store, "e1", 50, first=50)
    # The listening connection was cut: the next wait reconnects and says "maybe".
    deadline = time.monotonic() + 10
    while not listener.wait_for_change(0.2):
        assert time.monotonic() < deadline
    listener.wait_for_change(0)  # drain the notifications of the 50 appends, if heard
    store.append(message(100), [Target("e1", 1000)])
    assert listener.wait_for_change(5.0) is True
    ids = [event.request_id for event in take(store, "e1", limit=1000)]
    assert ids == [f"req-{n}" for n in range(101)]


# -- fork ------------------------------------------------------------------------------------


@pytest.mark.parametrize("explicit", [True, False], ids=["after_fork", "pid-check"])
def test_forked_child_leaves_the_parents_session_alone(pg_store_url: str, explicit: bool) -> None:
    """A forked child opens its own connections (with or without ``after_fork()``), never
    closes the inherited ones even when it collects them and exits: the parent's session
    (same backend pid) keeps working, listener included."""
    result = run_python(
        """
        import gc, json, os, sys
        from webhooks_emitter.stores._base import Message, Target
        from webhooks_emitter.stores.postgres import PostgresStore

        def backend(store):
            return store._run("pid", lambda c: c.execute("SELECT pg_backend_pid()").fetchone()[0])

        store = PostgresStore(sys.argv[1], pool_size=1)
        store.register("e1")
        store.wait_for_change(0)
        before = backend(store)
        child = os.fork()
        if child == 0:
            if sys.argv[2] == "1":
                store.after_fork()
            store.append(Message("e", "from-child", b"{}"), [Target("e1", 10)])
            mine = backend(store)
            store.close()
            del store
            gc.collect()
            sys.exit(0 if mine != before else 3)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        after = backend(store)
        store.append(Message("e", "from-parent", b"{}"), [Target("e1", 10)])
        print(json.dumps({"before": before, "after": after,
                          "queued": store.state("e1").queued,
                          "heard": store.wait_for_change(5.0)}))
        """,
        pg_store_url,
        "1" if explicit else "0",
    )
    answer = json.loads(result.stdout)
    assert answer["before"] == answer["after"]
    assert answer["queued"] == 2
    assert answer["heard"] is True


def test_restart_helper_keeps_the_port(postgres_server: Server) -> None:
    """The restart helper brings the same server back on the same port."""
    if not isinstance(postgres_server, PostgresServer):
        postgres_server.restart()
        return
    port = postgres_server.port
    postgres_server.restart()
    assert postgres_server.port == port
    assert sql(postgres_server.conninfo, "SELECT 1") == [(1,)]


# -- end to end through the engine ----------------------------------------------------------


def test_end_to_end_delivery_leaves_no_secret_in_any_table(
    store: PostgresStore, pg_store_url: str, fast: Callable[..., Any]
) -> None:
    """Deliveries and dead letters through WebhooksEmitter over PostgreSQL: the receiver
    gets signed events in order, given-up ones stay as failed, and no column of any table
    of the schema holds the secret (the store never sees it)."""
    from webhooks_emitter import WebhooksEmitter
    from webhooks_emitter.testing import Receiver

    hub = WebhooksEmitter(store=store, exit_timeout=1.0)
    try:
        with Receiver(secret=SECRET) as good, Receiver(responder=lambda request: 500) as bad:
            hub.attach("good", "order.paid", fast(good.url, secret=SECRET))
            hub.attach("bad", "order.paid", fast(bad.url, secret=SECRET, max_attempts=2))
            for n in range(5):
                hub.emit("order.paid", {"n": n})
            assert hub.flush(30)
            hooks = good.wait_for(5)
            assert [hook.json()["n"] for hook in hooks] == [0, 1, 2, 3, 4]
            assert all(hook.signature_error is None for hook in hooks)
            assert [json.loads(event.body)["n"] for event in hub.failed("bad")] == list(range(5))
    finally:
        hub.shutdown(timeout=2.0)
    assert store.state("good").queued == 0
    columns = sql(
        pg_store_url,
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'webhooks_emitter'",
    )
    assert len(columns) == sum(len(names) for names in EXPECTED_COLUMNS.values())

    def rows_holding(table: str, column: str, data_type: str, needle: str) -> int:
        # bytea is searched byte for byte (its text form is hex); the rest as text.
        match = (
            f'position(convert_to(%s, \'UTF8\') IN "{column}")'
            if data_type == "bytea"
            else f'strpos("{column}"::text, %s)'
        )
        query = f'SELECT count(*) FROM webhooks_emitter."{table}" WHERE {match} > 0'
        return int(sql(pg_store_url, query, (needle,))[0][0])

    types = {(table, column): data_type for table, column, data_type in columns}
    # The search finds what is there (so that finding no secret means something).
    assert rows_holding("events", "body", types[("events", "body")], '"n":') == 5
    assert rows_holding("events", "event", types[("events", "event")], "order.paid") == 5
    for (table, column), data_type in types.items():
        assert rows_holding(table, column, data_type, SECRET) == 0, f"{table}.{column}"


def test_commit_in_a_web_process_is_delivered_by_a_worker_within_half_a_second(
    make_store: Callable[..., PostgresStore], pg_store_url: str, fast: Callable[..., Any]
) -> None:
    """A deliver=False instance emits in a transaction; a delivering instance over the same
    database (woken by NOTIFY) sends it less than 0.5 s after the commit, and a rolled-back
    emit never arrives."""
    from webhooks_emitter import WebhooksEmitter
    from webhooks_emitter.testing import Receiver

    web = WebhooksEmitter(store=make_store(), deliver=False)
    worker = WebhooksEmitter(store=make_store(), exit_timeout=1.0)
    try:
        with Receiver() as receiver:
            config = fast(receiver.url)
            web.attach("e1", "order.paid", config)
            worker.attach("e1", "order.paid", config)
            with psycopg.connect(pg_store_url) as conn:
                web.emit("order.paid", {"n": 0}, connection=conn)
                conn.rollback()
                web.emit("order.paid", {"n": 1}, connection=conn)
                conn.commit()
                committed = time.monotonic()
            (hook,) = receiver.wait_for(1)
            assert hook.json() == {"n": 1}
            assert hook.received_at - committed < 0.5
            assert worker.flush(10)
            assert len(receiver.requests) == 1
    finally:
        web.shutdown(timeout=2.0)
        worker.shutdown(timeout=2.0)


def test_close_does_not_wait_for_a_waiting_thread(store: PostgresStore) -> None:
    """``close()`` wakes a thread blocked in wait_for_change instead of waiting for its
    timeout, and the store works again afterwards."""
    store.wait_for_change(0)
    waiter = threading.Thread(target=store.wait_for_change, args=(30.0,))
    waiter.start()
    started = time.monotonic()
    store.close()
    waiter.join(10.0)
    assert not waiter.is_alive()
    assert time.monotonic() - started < 5.0
    store.register("e1")
    assert store.known("e1")


def test_connections_above_descriptor_1023_are_kept(store: PostgresStore) -> None:
    """In a process with more than 1,024 open files (select() cannot watch those), the
    pool keeps reusing its connection and the listener still hears changes."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    if soft < wanted + 100:
        assert hard == resource.RLIM_INFINITY or hard >= wanted + 100, "raise `ulimit -Hn`"
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted + 100, hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(wanted)]
    try:
        backend = store._run("pid", lambda c: c.execute("SELECT pg_backend_pid()").fetchone())
        assert store._run("fd", lambda c: c.fileno()) > 1023
        for n in range(3):
            store.register(f"e{n}")
        again = store._run("pid", lambda c: c.execute("SELECT pg_backend_pid()").fetchone())
        assert again == backend  # not dropped and reopened at every call
        assert store.wait_for_change(0) is True
        store.append(message(1), [Target("e1", 10)])
        assert store.wait_for_change(5.0) is True
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- schema 2: the trace context, and a rolling deploy from version 1 -------------------------


class TracedMessage(Message):
    """A message with a trace context, as the engine's Message carries one."""

    __slots__ = ("trace_context",)

    def __init__(self, n: int, trace_context: Optional[str]) -> None:
        super().__init__("order.created", f"req-{n}", b'{"n":%d}' % n)
        self.trace_context = trace_context


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_trace_context_is_kept_with_the_event(
    store: PostgresStore, pg_store_url: str
) -> None:
    """A message's trace context is stored with its event (own transaction and a caller's
    connection alike), None when it has none, and fetched back where StoredEvent has the
    field."""
    store.append(TracedMessage(0, TRACEPARENT), [Target("e1", 10)])
    store.append(TracedMessage(1, None), [Target("e1", 10)])
    with psycopg.connect(pg_store_url) as conn:
        store.append(TracedMessage(2, TRACEPARENT), [Target("e1", 10)], connection=conn)
    store.append(message(3), [Target("e1", 10)])  # a Message without the attribute
    assert sql(pg_store_url, "SELECT request_id, trace_context FROM webhooks_emitter.events "
               "ORDER BY seq") == [("req-0", TRACEPARENT), ("req-1", None),
                                   ("req-2", TRACEPARENT), ("req-3", None)]
    fetched = take(store, "e1")
    assert [e.request_id for e in fetched] == ["req-0", "req-1", "req-2", "req-3"]
    if "trace_context" in StoredEvent.__slots__:  # the engine's StoredEvent (issue 20)
        assert [e.trace_context for e in fetched] == [TRACEPARENT, None, TRACEPARENT, None]


def make_version_1(url: str) -> None:
    """The tables as the previous release made them (schema version 1)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA webhooks_emitter")
        conn.execute(_load_sql("postgres_schema_1.sql", "webhooks_emitter"))
        conn.execute("INSERT INTO webhooks_emitter.schema_version (version, compatible_from) "
                     "VALUES (1, 1)")


#: What the previous release runs to emit and to fetch (its queries, unchanged).
OLD_APPEND = ("SELECT webhooks_emitter.append_event(ARRAY['e1'], ARRAY[10::bigint], "
              "'order.created', %s, '{}'::bytea, NULL, 0, 'webhooks_emitter.changed')")
OLD_FETCH = ("SELECT seq, event, request_id, body, ordering_key, attempts, next_at, "
             "emitted_at, status_code, error FROM webhooks_emitter.events "
             "WHERE emitter_id = 'e1' AND failed_at IS NULL ORDER BY emitter_id, seq")


def test_version_1_is_upgraded_in_place_and_the_previous_release_keeps_working(
    make_store: Callable[..., PostgresStore], pg_store_url: str
) -> None:
    """Tables of schema version 1 holding an event: this release upgrades them to version
    2 (compatible from 1) keeping the event, and the previous release's emit and fetch
    still work on the upgraded tables (a rolling deploy); both releases' events are
    fetched by this one."""
    make_version_1(pg_store_url)
    sql(pg_store_url, OLD_APPEND, ("old-0",))
    store = make_store()
    store.open()
    assert sql(pg_store_url, "SELECT version, compatible_from FROM "
               "webhooks_emitter.schema_version") == [(SCHEMA_VERSION, 1)]
    assert SCHEMA_VERSION == 2
    sql(pg_store_url, OLD_APPEND, ("old-1",))
    store.append(TracedMessage(2, TRACEPARENT), [Target("e1", 10)])
    assert [row[2] for row in sql(pg_store_url, OLD_FETCH)] == ["old-0", "old-1", "req-2"]
    assert [e.request_id for e in take(store, "e1")] == ["old-0", "old-1", "req-2"]
