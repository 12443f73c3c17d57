"""The SQLite store: the store contract on a real file, and what a file and processes add.

Everything runs on real files under ``tmp_path``; where processes matter (concurrent
writers, a lock holder, a killed lease holder, a fork) they are real child processes,
synchronised through their standard input and output, never by sleeping.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from store_contract import (
    LEASE,
    OTHER,
    DurableStoreContract,
    closing_factory,
    fill,
    message,
    request_ids,
    take,
    wait_until,
)
from tinyfs import mount_then, tmpfs_command

from webhooks_emitter import Config, WebhooksEmitter
from webhooks_emitter.exceptions import WebhooksEmitterError
from webhooks_emitter.stores import sqlite as sqlite_module
from webhooks_emitter.stores._base import Lease, Message, StoreError, Target
from webhooks_emitter.stores.sqlite import SCHEMA_VERSION, SQLiteStore

ROOT = Path(__file__).resolve().parents[2]
#: A hard bound on each child program: far above what it needs, so only a hang reaches it.
CHILD_TIMEOUT = 60.0


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the test's store file goes (not created)."""
    return tmp_path / "webhooks.db"


@pytest.fixture
def make_store(db_path: Path) -> Iterator[Callable[..., SQLiteStore]]:
    """Open stores over ``db_path`` (as other processes would); closed at the end."""
    yield from closing_factory(lambda **options: SQLiteStore(db_path, **options))


@pytest.fixture
def store(make_store: Callable[..., SQLiteStore]) -> SQLiteStore:
    """A fresh store on a new file."""
    return make_store()


class TestSQLiteStore(DurableStoreContract):
    """The contract every durable store keeps, on SQLite."""

    durable = True


# -- child processes ---------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """The environment of a child program: this checkout first on its path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


PRELUDE = """
import json, os, sys, time
from webhooks_emitter.stores._base import Lease, Message, StoreError, Target
from webhooks_emitter.stores.sqlite import SQLiteStore
"""


def run_child(code: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (after PRELUDE) in a new interpreter with ``args`` as ``sys.argv[1:]``."""
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        env=child_env(),
        **kwargs,
    )


def start_child(code: str, *args: str) -> subprocess.Popen[str]:
    """Start ``code`` (after PRELUDE) with pipes for a line-by-line conversation."""
    return subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )


def read_line(child: subprocess.Popen[str]) -> str:
    """The child's next line of output; fails with its error output if it ended instead."""
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        child.wait(timeout=CHILD_TIMEOUT)
        assert child.stderr is not None
        pytest.fail(f"child exited {child.returncode}: {child.stderr.read()}")
    return line.strip()


def finish(child: subprocess.Popen[str]) -> str:
    """Wait for the child; fail unless it exits 0; answer the rest of its output."""
    out, err = child.communicate(timeout=CHILD_TIMEOUT)
    assert child.returncode == 0, f"child exited {child.returncode}: {err}"
    return out


def described(completed: subprocess.CompletedProcess[str]) -> str:
    """A child program's outcome, for assertion messages."""
    return f"exit {completed.returncode}\nstdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"


def raw(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection to ``path``, outside the store."""
    return sqlite3.connect(path, isolation_level=None)


# -- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "name"),
    [
        ({"path": 3}, TypeError, "path"),
        ({"path": b"/tmp/x.db"}, TypeError, "path"),
        ({"path": ""}, ValueError, "path"),
        ({"path": ":memory:"}, ValueError, "path"),
        ({"synchronous": "off"}, ValueError, "synchronous"),
        ({"synchronous": 1}, TypeError, "synchronous"),
        ({"lease_timeout": 0}, ValueError, "lease_timeout"),
        ({"lease_timeout": -1.0}, ValueError, "lease_timeout"),
        ({"lease_timeout": math.inf}, ValueError, "lease_timeout"),
        ({"lease_timeout": math.nan}, ValueError, "lease_timeout"),
        ({"lease_timeout": "30"}, TypeError, "lease_timeout"),
        ({"lease_timeout": True}, TypeError, "lease_timeout"),
        ({"timeout": 0.0}, ValueError, "timeout"),
        ({"timeout": math.inf}, ValueError, "timeout"),
        ({"timeout": None}, TypeError, "timeout"),
        ({"create": "yes"}, TypeError, "create"),
    ],
)
def test_bad_arguments(db_path: Path, options: dict[str, Any], error: type, name: str) -> None:
    """A bad argument raises TypeError or ValueError naming it, and creates no file."""
    path = options.pop("path", db_path)
    with pytest.raises(error, match=name):
        SQLiteStore(path, **options)
    assert not db_path.exists()


def test_options_repr_and_describe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative path is taken from the current directory; repr shows path and options."""
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore("rel.db", synchronous="FULL", lease_timeout=7, timeout=2.5)
    try:
        path = str(tmp_path / "rel.db")
        assert store.describe() == path
        assert repr(store) == (
            f"SQLiteStore({path!r}, synchronous='full', lease_timeout=7.0, timeout=2.5, "
            "create=True)"
        )
        assert (store.lease_timeout, store.timeout, store.synchronous) == (7.0, 2.5, "full")
        assert store.durable and store.poll_interval == 0.1
    finally:
        store.close()


@pytest.mark.parametrize(("synchronous", "level"), [("normal", 1), ("full", 2)])
def test_wal_and_synchronous(db_path: Path, synchronous: str, level: int) -> None:
    """The file is in WAL mode; each of the store's connections has the synchronous level."""
    store = SQLiteStore(db_path, synchronous=synchronous)
    try:
        fill(store, "e1", 1)
        with raw(db_path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        (pair,) = store._file.pool._idle  # white box: the store's one connection
        assert pair[0].execute("PRAGMA synchronous").fetchone() == (level,)
    finally:
        store.close()


def test_file_mode_is_0600(db_path: Path) -> None:
    """The file, the -wal and -shm files SQLite makes beside it and the -leases file of the
    lease holders' locks are 0600, whatever the umask."""
    old = os.umask(0)
    try:
        store = SQLiteStore(db_path)
        fill(store, "e1", 1)
        assert store.acquire("e1", Lease.new())
    finally:
        os.umask(old)
    try:
        for suffix in ("", "-wal", "-shm", "-leases"):
            mode = stat.S_IMODE(os.stat(f"{db_path}{suffix}").st_mode)
            assert mode == 0o600, f"{db_path}{suffix}: {oct(mode)}"
    finally:
        store.close()


def test_the_lock_file_takes_the_store_files_permissions(db_path: Path) -> None:
    """A store file opened to its group (0660, say for a worker of another user) gets a
    -leases file of the same permissions, whatever the umask, so that every process that
    may use the store may take leases."""
    SQLiteStore(db_path).close()
    os.chmod(db_path, 0o660)
    old = os.umask(0o077)
    try:
        store = SQLiteStore(db_path)
        try:
            assert store.acquire("e1", Lease.new())
        finally:
            store.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(f"{db_path}-leases").st_mode) == 0o660


def test_store_error_is_a_library_error() -> None:
    """StoreError derives from the library's root error."""
    assert issubclass(StoreError, WebhooksEmitterError)


# -- schema ------------------------------------------------------------------------------------


def meta(path: Path) -> dict[str, int]:
    """The file's meta table, read outside the store."""
    with raw(path) as conn:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def index_names(path: Path) -> set[str]:
    """The indexes the file has, read outside the store."""
    with raw(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    return {row[0] for row in rows if not row[0].startswith("sqlite_")}


def make_version_1(path: Path) -> None:
    """A file as schema version 1 left it, made by hand, with one failed event in it."""
    with raw(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        for statement in sqlite_module.schema_statements(1):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO meta VALUES ('schema_version', 1), ('compatible_from', ?)",
            (sqlite_module.COMPATIBLE_FROM[1],),
        )
        conn.execute("INSERT INTO emitters (id) VALUES ('e1')")
        conn.execute(
            "INSERT INTO events (emitter_id, event, request_id, body, state, attempts,"
            " emitted_at, status_code, error, failed_at)"
            " VALUES ('e1', 'order.created', 'old-1', x'7B7D', 'failed', 3, 1.0, 500,"
            " 'HTTP 500', 2.0)"
        )


def test_new_file_gets_the_current_schema(store: SQLiteStore, db_path: Path) -> None:
    """A new file is made at the current version; ``migrate`` is idempotent and says it."""
    assert meta(db_path)["schema_version"] == SCHEMA_VERSION
    assert store.schema_version == SCHEMA_VERSION
    assert store.migrate() == SCHEMA_VERSION
    assert store.migrate() == SCHEMA_VERSION


def test_older_schema_is_upgraded(db_path: Path) -> None:
    """An older file is upgraded when opened, keeping its events."""
    make_version_1(db_path)
    assert "events_failed_by_request" not in index_names(db_path)
    store = SQLiteStore(db_path)
    try:
        assert store.schema_version == SCHEMA_VERSION
        assert meta(db_path)["schema_version"] == SCHEMA_VERSION
        assert "events_failed_by_request" in index_names(db_path)
        (dead,) = store.failed("e1")
        assert (dead.request_id, dead.attempts, dead.status_code) == ("old-1", 3, 500)
        assert store.replay("e1", ["old-1"]) == 1
        assert store.state("e1").queued == 1
    finally:
        store.close()


def test_create_false_never_runs_ddl_on_an_older_schema(db_path: Path) -> None:
    """``create=False`` on an older file: a StoreError telling to migrate, the file as it was."""
    make_version_1(db_path)
    with pytest.raises(StoreError, match="webhooks-emitter migrate --store") as caught:
        SQLiteStore(db_path, create=False)
    assert str(db_path) in str(caught.value)
    assert meta(db_path)["schema_version"] == 1
    assert "events_failed_by_request" not in index_names(db_path)
    SQLiteStore(db_path).close()  # migrates
    store = SQLiteStore(db_path, create=False)
    try:
        assert store.failed("e1")[0].request_id == "old-1"
    finally:
        store.close()


def test_create_false_on_an_empty_file(db_path: Path) -> None:
    """``create=False`` on an empty file: StoreError mentioning migrate; the file stays empty."""
    db_path.write_bytes(b"")
    with pytest.raises(StoreError, match="migrate"):
        SQLiteStore(db_path, create=False)
    assert db_path.stat().st_size == 0


def test_create_false_on_a_missing_file(db_path: Path) -> None:
    """``create=False`` on a missing file: StoreError mentioning migrate; no file made."""
    with pytest.raises(StoreError, match="migrate"):
        SQLiteStore(db_path, create=False)
    assert not db_path.exists()


def test_migrate_works_with_create_false(db_path: Path) -> None:
    """``migrate()`` is the explicit DDL, whatever ``create`` says."""
    SQLiteStore(db_path).close()
    store = SQLiteStore(db_path, create=False)
    try:
        assert store.migrate() == SCHEMA_VERSION
    finally:
        store.close()


def test_newer_schema_is_refused(store: SQLiteStore, db_path: Path) -> None:
    """A schema newer than this library understands: StoreError naming both versions."""
    store.close()
    newer = SCHEMA_VERSION + 1
    with raw(db_path) as conn:
        conn.execute("UPDATE meta SET value = ?", (newer,))
    with pytest.raises(StoreError) as caught:
        SQLiteStore(db_path)
    text = str(caught.value)
    assert str(db_path) in text
    assert (
        f"schema version {newer} is newer than this library understands ({SCHEMA_VERSION})" in text
    )
    assert "upgrade webhooks_emitter" in text
    assert meta(db_path)["schema_version"] == newer


def test_newer_compatible_schema_is_used(store: SQLiteStore, db_path: Path) -> None:
    """A newer schema that says this version's code can still use it (a rolling deploy)."""
    fill(store, "e1", 1)
    store.close()
    with raw(db_path) as conn:
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION + 1,)
        )
    newer = SQLiteStore(db_path)
    try:
        assert newer.schema_version == SCHEMA_VERSION + 1
        fill(newer, "e1", 1, first=1)
        assert newer.state("e1").queued == 2
    finally:
        newer.close()


def test_a_file_of_other_tables_is_refused(db_path: Path) -> None:
    """A database that holds other tables is not taken over."""
    with raw(db_path) as conn:
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY)")
    with pytest.raises(StoreError, match="other tables"):
        SQLiteStore(db_path)


CREATE_AT_ONCE = """
path = sys.argv[1]
print("ready", flush=True)
sys.stdin.readline()
store = SQLiteStore(path)
print(json.dumps([store.schema_version, store.migrate()]), flush=True)
"""


def test_many_processes_create_the_schema_at_once(db_path: Path) -> None:
    """Processes that open a new file at the same moment all get the schema, once."""
    children = [start_child(CREATE_AT_ONCE, str(db_path)) for _ in range(4)]
    for child in children:
        assert read_line(child) == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        assert json.loads(finish(child)) == [SCHEMA_VERSION, SCHEMA_VERSION]
    assert meta(db_path)["schema_version"] == SCHEMA_VERSION


# -- bad files ---------------------------------------------------------------------------------


def test_a_file_that_is_not_sqlite(db_path: Path) -> None:
    """Not an SQLite file: StoreError naming the file and why."""
    db_path.write_bytes(b"this is a text file, not a database\n" * 200)
    with pytest.raises(StoreError, match="not an SQLite database") as caught:
        SQLiteStore(db_path)
    assert str(db_path) in str(caught.value)


def test_a_corrupt_file(store: SQLiteStore, db_path: Path) -> None:
    """A file whose first page (the table list) is overwritten: StoreError naming the file."""
    fill(store, "e1", 3)
    store.close()
    with raw(db_path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(db_path, "r+b") as file:
        file.seek(100)
        file.write(b"\xff" * 3000)
    with pytest.raises(StoreError) as caught:
        SQLiteStore(db_path)
    assert str(db_path) in str(caught.value)
    assert "corrupt" in str(caught.value)


def test_a_missing_directory(tmp_path: Path) -> None:
    """A file in a directory that does not exist: StoreError naming the file."""
    path = tmp_path / "no" / "such" / "dir" / "webhooks.db"
    with pytest.raises(StoreError) as caught:
        SQLiteStore(path)
    assert str(path) in str(caught.value)
    assert "No such file or directory" in str(caught.value)


def test_a_path_under_a_file(tmp_path: Path) -> None:
    """A path whose directory is a regular file: StoreError naming the file."""
    (tmp_path / "plain").write_text("x")
    path = tmp_path / "plain" / "webhooks.db"
    with pytest.raises(StoreError, match="Not a directory") as caught:
        SQLiteStore(path)
    assert str(path) in str(caught.value)


UNWRITABLE = """
directory, uid = sys.argv[1], int(sys.argv[2])
if uid >= 0:  # root is not stopped by permissions: become nobody (the interpreter is loaded)
    os.setgid(uid)
    os.setuid(uid)
outcomes = {}
for name in ("new.db", "existing.db"):
    try:
        SQLiteStore(os.path.join(directory, name))
        outcomes[name] = "opened"
    except StoreError as exc:
        outcomes[name] = str(exc)
print(json.dumps(outcomes))
"""


@pytest.fixture
def unwritable_directory() -> Iterator[tuple[Path, Optional[int]]]:
    """A directory the test's child program cannot write, and the uid to run it as.

    When the tests run as root, permissions do not stop root: the child then becomes
    ``nobody`` (uid 65534), in a directory outside the private pytest tree that root owns.
    """
    directory = Path(tempfile.mkdtemp(prefix="webhooks-unwritable-"))
    user = None
    try:
        existing = directory / "existing.db"
        SQLiteStore(existing).close()  # a valid store with no -wal/-shm left beside it
        assert not Path(f"{existing}-wal").exists()
        if os.geteuid() == 0:
            user = 65534
            os.chown(existing, user, -1)  # the child may write the file, not the directory
        directory.chmod(0o555)
        yield directory, user
    finally:
        directory.chmod(0o755)
        shutil.rmtree(directory)


def test_an_unwritable_directory(unwritable_directory: tuple[Path, Optional[int]]) -> None:
    """No right to create the file, or its -wal and -shm files: StoreError naming the file."""
    directory, user = unwritable_directory
    completed = run_child(UNWRITABLE, str(directory), str(-1 if user is None else user))
    assert completed.returncode == 0, described(completed)
    outcomes = json.loads(completed.stdout)
    new, existing = outcomes["new.db"], outcomes["existing.db"]
    assert str(directory / "new.db") in new and "Permission denied" in new
    assert str(directory / "existing.db") in existing
    assert "directory" in existing and "writable" in existing, existing


# -- locks, a full disk ------------------------------------------------------------------------


HOLD_LOCK = """
import sqlite3
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
conn.execute("INSERT INTO emitters (id) VALUES ('written-by-the-lock-holder')")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
print("released", flush=True)
"""


def test_a_lock_held_past_the_timeout(
    make_store: Callable[..., SQLiteStore], db_path: Path
) -> None:
    """Another process holds the write lock: append raises StoreError after about ``timeout``,
    stores nothing, and works again once the lock is let go."""
    store = make_store(timeout=0.3)
    fill(store, "e1", 1)
    holder = start_child(HOLD_LOCK, str(db_path))
    try:
        assert read_line(holder) == "locked"
        started = time.monotonic()
        with pytest.raises(StoreError) as caught:
            store.append(message(1), [Target("e1", 100), Target("e2", 100)])
        elapsed = time.monotonic() - started
        text = str(caught.value)
        assert str(db_path) in text and "locked" in text and "0.3 s" in text
        assert 0.25 <= elapsed < 3.0, elapsed
        assert store.state("e1").queued == 1  # readers are not blocked in WAL mode
    finally:
        assert holder.stdin is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
    assert read_line(holder) == "released"
    finish(holder)
    assert (store.state("e1").queued, store.state("e2").queued) == (1, 0)
    assert request_ids(take(store, "e1")) == ["req-0"]
    assert store.append(message(2), [Target("e1", 100)]) == [True]


def test_a_lock_held_when_opening(make_store: Callable[..., SQLiteStore], db_path: Path) -> None:
    """The constructor, too, gives up after ``timeout`` with a StoreError naming the file."""
    make_store()
    holder = start_child(HOLD_LOCK, str(db_path))
    try:
        assert read_line(holder) == "locked"
        with pytest.raises(StoreError, match="locked") as caught:
            SQLiteStore(db_path, timeout=0.2)
        assert str(db_path) in str(caught.value)
    finally:
        assert holder.stdin is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
    finish(holder)


def test_a_write_lock_held_by_another_thread(make_store: Callable[..., SQLiteStore]) -> None:
    """Writers of one process queue on the store's own lock, bounded by ``timeout`` too."""
    store = make_store(timeout=0.2)
    fill(store, "e1", 1)
    assert store._file.writing.acquire()  # white box: a thread in the middle of a long write
    try:
        with pytest.raises(StoreError, match="another thread of this process") as caught:
            store.append(message(1), [Target("e1", 100)])
        assert "0.2 s" in str(caught.value)
    finally:
        store._file.writing.release()
    assert store.state("e1").queued == 1


def test_a_long_wait_for_the_write_lock_keeps_the_timeout(
    make_store: Callable[..., SQLiteStore], db_path: Path
) -> None:
    """A writer that waited for another thread goes on with what is left of its timeout
    for another connection's lock (waited for in steps of at most a millisecond, not by
    SQLite's busy handler): it fails about ``timeout`` after the call, not later."""
    store = make_store(timeout=1.0)
    fill(store, "e1", 1)
    for pair in store._file.pool._idle:  # white box: SQLite's own handler never sleeps for it
        assert pair[0].execute("PRAGMA busy_timeout").fetchone() == (0,)
    outcome: list[BaseException] = []

    def write() -> None:
        try:
            store.append(message(1), [Target("e1", 100)])
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome.append(exc)

    with raw(db_path) as other:
        other.execute("BEGIN IMMEDIATE")  # another connection holds SQLite's write lock
        assert store._file.writing.acquire()
        started = time.monotonic()
        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.3)  # not a synchronisation: makes the in-process wait count
        store._file.writing.release()
        writer.join(timeout=CHILD_TIMEOUT)
        elapsed = time.monotonic() - started
        other.execute("ROLLBACK")
    (error,) = outcome
    assert isinstance(error, StoreError) and "locked" in str(error)
    assert 1.0 <= elapsed < 1.0 + 0.5  # the 0.3 s in the process counted in the timeout
    assert store.append(message(2), [Target("e1", 100)]) == [True]


def test_a_full_database(store: SQLiteStore, db_path: Path) -> None:
    """SQLITE_FULL, for one target or in the middle of a message's transaction: StoreError
    naming the file, nothing of that message stored, and the store goes on once there is
    room."""
    fill(store, "e1", 2)
    (pair,) = store._file.pool._idle  # white box: cap the store's one connection
    pages = pair[0].execute("PRAGMA page_count").fetchone()[0]
    pair[0].execute(f"PRAGMA max_page_count = {pages + 2}")
    big = Message("order.created", "too-big", b"x" * 20_000)
    with pytest.raises(StoreError, match="disk is full"):
        store.append(big, [Target("e2", 100)])  # one target: one statement
    targets = [Target("e1", 100), Target("e2", 100), Target("e3", 100)]
    with pytest.raises(StoreError, match="disk is full") as caught:
        store.append(big, targets)  # several: one transaction, failing half-way
    assert str(db_path) in str(caught.value)
    assert [store.state(e).queued for e in ("e1", "e2", "e3")] == [2, 0, 0]
    assert request_ids(take(store, "e1")) == ["req-0", "req-1"]
    assert store.fetch("e2", LEASE, 10) == []
    pair[0].execute("PRAGMA max_page_count = 1073741823")
    assert store.append(big, targets) == [True, True, True]


TINY_DISK = """
path = sys.argv[1]
store = SQLiteStore(path)
body = b"x" * 8000
targets = [Target("a", 10**6), Target("b", 10**6)]
stored = 0
try:
    while True:
        assert store.append(Message("e", f"r{stored}", body), targets) == [True, True]
        stored += 1
except StoreError as exc:
    error = str(exc)
states = [store.state(e).queued for e in ("a", "b")]
fetched = [len(store.fetch(e, Lease.new(), 10**6)) for e in ("a", "b")]
print(json.dumps({"stored": stored, "error": error, "states": states, "fetched": fetched}))
"""


def test_a_full_disk(tmp_path: Path) -> None:
    """On a real 512 KB file system: filling it gives StoreError, and what was stored is
    whole (the child runs in a private mount namespace, where it may mount a tmpfs)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    command = tmpfs_command(mount)
    script = PRELUDE + textwrap.dedent(TINY_DISK)
    completed = subprocess.run(
        [
            *command,
            mount_then('exec "$2" -c "$3" "$1/webhooks.db"'),
            "sh",
            str(mount),
            sys.executable,
            script,
        ],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        env=child_env(),
    )
    assert completed.returncode == 0, described(completed)
    outcome = json.loads(completed.stdout)
    assert outcome["stored"] > 5
    assert "disk is full" in outcome["error"] and "webhooks.db" in outcome["error"]
    assert outcome["states"] == [outcome["stored"]] * 2
    assert outcome["fetched"] == [outcome["stored"]] * 2


# -- processes ---------------------------------------------------------------------------------


APPENDER = """
path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = SQLiteStore(path)
print("ready", flush=True)
sys.stdin.readline()
accepted = {"shared": 0, "bounded": 0}
for n in range(count):
    message = Message("e", f"{name}-{n:04d}", b"{}")
    shared, own, bounded = store.append(
        message, [Target("shared", 10**6), Target(name, 10**6), Target("bounded", 250)]
    )
    assert shared and own
    accepted["bounded"] += bounded
print(json.dumps(accepted), flush=True)
"""


def test_processes_appending_at_once(store: SQLiteStore, db_path: Path) -> None:
    """Two processes appending to one emitter at once: each one's order kept, every event
    counted once, and max_queue_size held across both."""
    count = 300
    children = [start_child(APPENDER, str(db_path), name, str(count)) for name in ("p1", "p2")]
    for child in children:
        assert read_line(child) == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    bounded = sum(json.loads(finish(child))["bounded"] for child in children)
    assert bounded == 250
    assert store.state("shared").queued == 2 * count
    assert store.state("bounded").queued == 250
    ids = request_ids(take(store, "shared", limit=10_000))
    assert len(ids) == 2 * count
    for name in ("p1", "p2"):
        assert store.state(name).queued == count
        assert [i for i in ids if i.startswith(name)] == [f"{name}-{n:04d}" for n in range(count)]


ACK_THEN_DIE = """
store = SQLiteStore(sys.argv[1])
store.append(Message("e", "acknowledged", b"{}"), [Target("e1", 10)])
print("stored", flush=True)
sys.stdin.readline()
"""


def test_an_acknowledged_append_survives_kill_9(store: SQLiteStore, db_path: Path) -> None:
    """Once append returned, the event is stored: a kill -9 right after loses nothing."""
    child = start_child(ACK_THEN_DIE, str(db_path))
    assert read_line(child) == "stored"
    child.kill()
    child.communicate(timeout=CHILD_TIMEOUT)
    assert child.returncode == -signal.SIGKILL
    assert request_ids(take(store, "e1")) == ["acknowledged"]


HOLD_LEASE = """
import signal
store = SQLiteStore(sys.argv[1], lease_timeout=float(sys.argv[2]))
lease = Lease.new()
assert store.acquire("e1", lease)
print(lease.holder, flush=True)
how = sys.stdin.readline().strip()
if how == "exit":
    sys.exit(0)  # a normal end, the lease still held (no release)
if how == "term":
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)  # ended by the signal before this returns
"""

#: The most seconds from a holder's end to another process's acquire succeeding (CONTRACT
#: section 10, "Takeover"), far below the lease_timeout the holders use.
TAKEOVER = 2.0
LONG_LEASE = 60.0


def hold_lease(db_path: Path) -> tuple[subprocess.Popen[str], str]:
    """A child that takes e1's lease (lease_timeout 60 s) and holds it until told."""
    child = start_child(HOLD_LEASE, str(db_path), str(LONG_LEASE))
    holder = read_line(child)
    assert holder.endswith(f":{child.pid}")
    return child, holder


def end_child(child: subprocess.Popen[str], how: str) -> None:
    """End a HOLD_LEASE child: kill -9, SIGTERM (default handler), or a normal exit."""
    assert child.stdin is not None
    if how == "kill-9":
        child.kill()
    else:
        child.stdin.write(how + "\n")
        child.stdin.flush()
    child.communicate(timeout=CHILD_TIMEOUT)
    expected = {"kill-9": -signal.SIGKILL, "term": -signal.SIGTERM, "exit": 0}[how]
    assert child.returncode == expected


@pytest.mark.parametrize("how", ["kill-9", "term", "exit"])
def test_the_lease_of_an_ended_process_is_taken_over_at_once(
    make_store: Callable[..., SQLiteStore], db_path: Path, how: str
) -> None:
    """A holder that ends without letting go (kill -9, SIGTERM, a normal exit) keeps its
    lease only while it lives: the state shows no holder at once, and another process
    takes the lease within 2 s, not after its 60 s lease_timeout."""
    mine = make_store(lease_timeout=LONG_LEASE)
    fill(mine, "e1", 1)
    child, holder = hold_lease(db_path)
    assert mine.state("e1").lease_holder == holder
    assert [s.lease_holder for s in mine.states()] == [holder]
    assert not mine.acquire("e1", OTHER)  # alive: refused
    end_child(child, how)
    ended = time.monotonic()
    assert mine.state("e1").lease_holder is None
    assert [s.lease_holder for s in mine.states()] == [None]
    wait_until(lambda: mine.acquire("e1", OTHER))
    assert time.monotonic() - ended < TAKEOVER
    assert mine.state("e1").lease_holder == OTHER.holder
    assert not mine.acquire("e1", LEASE)  # OTHER lives (this process): one winner
    assert request_ids(mine.fetch("e1", OTHER, 10)) == ["req-0"]


def test_a_holder_that_lives_keeps_its_lease_until_it_expires(
    make_store: Callable[..., SQLiteStore], db_path: Path
) -> None:
    """A live holder that stopped renewing (a frozen process) loses its lease only when
    lease_timeout passes: its lock proves it alive, not that it works."""
    mine = make_store(lease_timeout=0.5)
    child = start_child(HOLD_LEASE, str(db_path), "0.5")
    holder = read_line(child)
    try:
        assert mine.state("e1").lease_holder == holder
        assert not mine.acquire("e1", OTHER)
        wait_until(lambda: mine.state("e1").lease_holder is None)  # expired
        assert mine.acquire("e1", OTHER)
    finally:
        end_child(child, "kill-9")


FORKED_HOLDER = """
def say(**fields):
    # One write per line: the parent's and the child's lines never mix.
    os.write(1, (json.dumps(fields) + "\\n").encode())

store = SQLiteStore(sys.argv[1], lease_timeout=60.0)
lease = Lease.new()
assert store.acquire("e1", lease)
pid = os.fork()
if pid == 0:
    # The child inherits the descriptor of the lock file but none of the parent's locks.
    say(child=os.getpid())
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # so that the test's pipes close when the parent dies
        os.dup2(null, fd)
    time.sleep(60)
    os._exit(0)
say(parent=os.getpid(), holder=lease.holder)
sys.stdin.readline()
"""


def test_a_forked_child_does_not_keep_its_parents_lease_alive(
    make_store: Callable[..., SQLiteStore], db_path: Path
) -> None:
    """A holder that forked, then was killed: its child (alive, with the inherited
    descriptor of the lock file) does not keep the lease alive; it is taken over at once."""
    mine = make_store()
    parent = start_child(FORKED_HOLDER, str(db_path))
    lines = [json.loads(read_line(parent)) for _ in range(2)]
    fields = {key: value for line in lines for key, value in line.items()}
    try:
        assert mine.state("e1").lease_holder == fields["holder"]
        parent.kill()
        parent.communicate(timeout=CHILD_TIMEOUT)
        ended = time.monotonic()
        os.kill(fields["child"], 0)  # the forked child still lives
        wait_until(lambda: mine.acquire("e1", OTHER))
        assert time.monotonic() - ended < TAKEOVER
    finally:
        try:
            os.kill(fields["child"], signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover - it ended on its own
            pass


def test_a_lease_of_an_older_release_waits_for_its_expiry(
    store: SQLiteStore, db_path: Path
) -> None:
    """A lease written by code of schema 2, which keeps no lock (a rolling deploy): nothing
    proves its holder gone, so it is honoured until it expires."""
    store.register("e1")
    with raw(db_path) as conn:
        conn.execute(
            "UPDATE emitters SET lease_holder = 'old:1', lease_token = 'old-token',"
            " lease_expires = ? WHERE id = 'e1'",
            (time.time() + 60,),
        )
    assert store.state("e1").lease_holder == "old:1"
    assert not store.acquire("e1", OTHER)
    with raw(db_path) as conn:
        conn.execute("UPDATE emitters SET lease_expires = 0 WHERE id = 'e1'")
    assert store.acquire("e1", OTHER)


def test_a_lock_file_that_cannot_be_made_refuses_the_lease(
    store: SQLiteStore, db_path: Path
) -> None:
    """When the lock beside the store cannot be taken, acquire raises a StoreError naming
    that file (taking the lease without it would let others think this process dead)."""
    leases = Path(f"{db_path}-leases")
    leases.mkdir()  # a directory where the lock file should be
    with pytest.raises(StoreError, match="cannot lock") as caught:
        store.acquire("e1", Lease.new())
    assert str(leases) in str(caught.value)


FORK = """
import ctypes
from webhooks_emitter.stores import _sql

how = sys.argv[2]
store = SQLiteStore(sys.argv[1])
store.append(Message("e", "parent-before", b"{}"), [Target("e1", 100)])
parents = [pair[0] for pair in store._file.pool.connections]
assert parents
pid = ctypes.CDLL(None).fork() if how == "libc" else os.fork()
if pid == 0:
    code = 1
    try:
        if how == "after_fork":
            store.after_fork()
        store.append(Message("e", "child", b"{}"), [Target("e1", 100)])
        mine = [pair[0] for pair in store._file.pool.connections]
        inherited = [pair[0] for pair in _sql._INHERITED if isinstance(pair, tuple)]
        assert mine and not any(conn in parents for conn in mine), "child used a parent's"
        assert all(any(conn is p for p in inherited) for conn in parents), "not kept"
        for conn in parents:
            conn.in_transaction  # raises if the child had closed it
        code = 0
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
store.append(Message("e", "parent-after", b"{}"), [Target("e1", 100)])
assert all(pair[0] in parents for pair in store._file.pool.connections)
events = store.fetch("e1", Lease.new(), 10)
print(json.dumps({"status": status, "ids": [e.request_id for e in events],
                  "queued": store.state("e1").queued}))
"""


@pytest.mark.parametrize("how", ["os.fork", "libc", "after_fork"])
def test_a_forked_child_opens_its_own_connections(db_path: Path, how: str) -> None:
    """After a fork (os.fork, a C-level fork that runs no Python hook, or with after_fork
    called) the child opens new connections, keeps the parent's unused and open, and the
    parent's go on working."""
    completed = run_child(FORK, str(db_path), how)
    assert completed.returncode == 0, described(completed)
    outcome = json.loads(completed.stdout)
    assert outcome == {
        "status": 0,
        "ids": ["parent-before", "child", "parent-after"],
        "queued": 3,
    }, described(completed)
    with raw(db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# -- connections and change notices ------------------------------------------------------------


def test_threads_share_a_small_pool(store: SQLiteStore) -> None:
    """Threads that come and go reuse connections instead of each leaving one open."""
    for n in range(20):
        worker = threading.Thread(target=fill, args=(store, "e1", 1, n))
        worker.start()
        worker.join()
    assert len(store._file.pool.connections) == 1
    assert store.state("e1").queued == 20


def test_close_then_use_again(store: SQLiteStore) -> None:
    """``close`` closes the connections; the next call opens new ones."""
    fill(store, "e1", 1)
    before = [pair[0] for pair in store._file.pool.connections]
    store.close()
    assert store._file.pool.connections == []
    with pytest.raises(sqlite3.ProgrammingError):
        before[0].execute("SELECT 1")
    fill(store, "e1", 1, first=1)
    assert store.state("e1").queued == 2


def test_checkpoints_are_made_by_delivering_calls(store: SQLiteStore, db_path: Path) -> None:
    """Emits leave the WAL to be copied back by calls that record deliveries: the file
    grows only once such a call follows a few hundred writes."""
    for n in range(250):
        store.append(Message("e", f"r{n}", b"x" * 1000), [Target("e1", 1000)])
    before = db_path.stat().st_size
    assert before < 100_000  # everything so far is in the WAL
    store.release("e1", LEASE)  # any write that is not an emit
    assert db_path.stat().st_size > before + 250_000
    assert store.state("e1").queued == 250


def test_wait_for_change_sees_other_processes_writes(
    store: SQLiteStore, make_store: Callable[..., SQLiteStore]
) -> None:
    """``wait_for_change`` answers True once another connection committed, else False."""
    other = make_store()
    store.wait_for_change(0)  # the first call only takes the baseline
    assert store.wait_for_change(0.05) is False
    fill(other, "e1", 1)
    assert store.wait_for_change(10) is True
    assert store.wait_for_change(0.05) is False
    fill(store, "e1", 1, first=1)  # this process's own writes count too
    assert store.wait_for_change(10) is True


def test_wait_for_change_never_raises(store: SQLiteStore, db_path: Path) -> None:
    """A file that can no longer be read: the wait runs its course and answers True, so the
    caller polls and meets the error there."""
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    assert store.wait_for_change(0.05) is True
    with pytest.raises(StoreError, match="webhooks.db"):
        store.poll()


def test_wake_cuts_a_wait_short(store: SQLiteStore) -> None:
    """``wake`` ends a long ``wait_for_change`` at once."""
    store.wait_for_change(0)
    answers: list[bool] = []
    waiter = threading.Thread(target=lambda: answers.append(store.wait_for_change(60)))
    started = time.monotonic()
    waiter.start()
    store.wake()
    waiter.join(timeout=30)
    assert answers == [True]
    assert time.monotonic() - started < 30


def test_poll_is_one_query_over_many_emitters(store: SQLiteStore) -> None:
    """Thousands of idle emitters: ``poll`` answers only the busy ones."""
    for n in range(2000):
        store.register(f"customer-{n:04d}")
    fill(store, "customer-0042", 1)
    store.set_paused("customer-1999", True)
    assert [state.emitter_id for state in store.poll()] == ["customer-0042", "customer-1999"]


def test_lease_holder_is_none_once_expired(make_store: Callable[..., SQLiteStore]) -> None:
    """The state names the holder while the lease lasts, and nobody once it expired."""
    store = make_store(lease_timeout=0.2)
    lease = Lease.new()
    assert store.acquire("e1", lease)
    assert store.state("e1").lease_holder == lease.holder
    wait_until(lambda: store.state("e1").lease_holder is None)
    assert [s.lease_holder for s in store.states()] == [None]
    assert store.acquire("e1", LEASE)
    assert store.state("e1").lease_holder == LEASE.holder


def test_no_secret_or_url_reaches_the_file(db_path: Path) -> None:
    """Events emitted through an instance over the store leave the secret and the
    endpoint out of the file: only event names, delivery ids, bodies and state."""
    secret = "a-secret-that-must-never-be-stored"
    url = "http://127.0.0.1:9/an-endpoint-that-is-not-stored"
    store = SQLiteStore(db_path)
    hub = WebhooksEmitter(store=store)
    try:
        hub.attach("e1", "order.created", Config(url, secret=secret))
        hub.pause("e1")  # nothing is sent: the events stay in the store
        ids = [hub.emit("order.created", {"n": n}) for n in range(3)]
        assert store.state("e1").queued == 3
    finally:
        hub.shutdown(timeout=5)
        store.close()
    stored = b"".join(
        Path(f"{db_path}{suffix}").read_bytes()
        for suffix in ("", "-wal")
        if Path(f"{db_path}{suffix}").exists()
    )
    assert ids[0].encode() in stored
    assert secret.encode() not in stored
    assert b"an-endpoint-that-is-not-stored" not in stored
