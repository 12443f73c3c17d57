"""The operator commands (worker, status, failed, replay, pause, restart, migrate, purge) run as
real programs over SQLite files and a PostgreSQL server, against a running worker.

A worker is ``python -m webhooks_emitter worker --setup tests/support/scripts/cli_setup.py:setup``,
pointed at a ``testing.Receiver`` of the test by an environment variable; the test emits
through its own ``deliver=False`` instance over the same store, and the worker delivers.
Everything is synchronised on conditions: the worker's output lines (read in a thread),
``Receiver.wait_for``, and ``status --json`` polled until it shows what is expected or a
deadline passes. Argument errors, which never reach a store, are checked in-process
through ``cli.main``.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest
from child_output import Lines
from faultservers import closed_port

from webhooks_emitter import Config, WebhooksEmitter, cli
from webhooks_emitter.stores import postgres as postgres_store
from webhooks_emitter.stores import sqlite as sqlite_store
from webhooks_emitter.testing import ReceivedRequest, Receiver, Response

# The PostgreSQL server of tests/support/postgres_server.py: started by the suite, a failure (never
# a skip) when there is none.

WAIT = 20.0  # generous: the machine may be busy; every wait ends as soon as its condition holds
ROOT = Path(__file__).resolve().parents[2]
SETUP = "tests/support/scripts/cli_setup.py:setup"  # relative to ROOT, the workers' directory
PASSWORD = "Pw9f3kqLm"
OPERATOR_COMMANDS = ("worker", "status", "failed", "replay", "pause", "restart", "migrate", "purge")


def _load_cli_setup() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "cli_setup", Path(__file__).resolve().parents[1] / "support" / "scripts" / "cli_setup.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cli_setup = _load_cli_setup()


# -- running the program ----------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """The environment for the CLI: no store, secret, proxy or unbuffered mode inherited."""
    drop = {"WEBHOOKS_EMITTER_SECRET", "WEBHOOKS_EMITTER_STORE", "PYTHONUNBUFFERED"}
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in drop and not key.lower().endswith("_proxy") and not key.startswith("CLI_")
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra)
    return env


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m webhooks_emitter ARGS`` to its end (``env``: more variables)."""
    return subprocess.run(
        [sys.executable, "-m", "webhooks_emitter", *args],
        input="",
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=child_env(**env),
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def ok(*args: str) -> str:
    """Run the CLI, insist on exit status 0 and nothing on standard error; its output."""
    done = run_cli(*args)
    assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
    assert done.stderr == "", (args, done.stderr)
    return done.stdout


def one_line_error(done: subprocess.CompletedProcess[str], status: int, command: str) -> str:
    """Check that ``done`` failed with ``status`` and one error line; return that line."""
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"webhooks-emitter {command}"), done.stderr
    return done.stderr


def status_of(store: str) -> dict[str, Any]:
    """``status --store STORE --json``, parsed."""
    report: dict[str, Any] = json.loads(ok("status", "--store", store, "--json"))
    return report


def wait_status(store: str, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll ``status --json`` until ``condition`` holds for it (each poll is a process run,
    which paces the loop); AssertionError with the last report after ``WAIT`` seconds."""
    deadline = time.monotonic() + WAIT
    while True:
        report = status_of(store)
        if condition(report):
            return report
        if time.monotonic() > deadline:
            raise AssertionError(f"status never showed what was expected: {report}")


class Worker:
    """A running ``webhooks-emitter worker``, once it has printed its first line."""

    def __init__(
        self,
        store: str,
        receiver_url: str,
        *,
        exit_timeout: float = 5.0,
        **settings: str,
    ) -> None:
        env = child_env(CLI_SETUP_URL=receiver_url, **settings)
        self.exit_timeout = exit_timeout
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "webhooks_emitter",
                "worker",
                "--store",
                store,
                "--setup",
                SETUP,
                "--exit-timeout",
                str(exit_timeout),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env,
            cwd=ROOT,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self.out = Lines(self.process.stdout)
        self.err = Lines(self.process.stderr)
        try:
            first = self.out.next()
        except AssertionError:
            self.kill()
            raise AssertionError(f"the worker did not start: {self.err.rest()}") from None
        found = re.match(
            r"worker: delivering for 1 emitter\(s\) \(orders\) over .+ as (\S+);",
            first,
        )
        assert found, first
        self.holder = found.group(1)
        assert self.holder.endswith(f":{self.process.pid}"), first

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, float, list[str]]:
        """Send ``signum``; the exit status, the seconds it took to exit, its last lines."""
        started = time.monotonic()
        self.process.send_signal(signum)
        status = self.process.wait(timeout=WAIT)
        took = time.monotonic() - started
        return status, took, self.out.rest()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT)


@pytest.fixture
def workers() -> Iterator[Callable[..., Worker]]:
    """Start workers with ``workers(store, receiver_url, **settings)``; any still running is
    killed afterwards."""
    started: list[Worker] = []

    def start(store: str, receiver_url: str, **settings: Any) -> Worker:
        started.append(Worker(store, receiver_url, **settings))
        return started[-1]

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture
def producer() -> Iterator[Callable[[str, str], WebhooksEmitter]]:
    """``producer(store, receiver_url)``: a ``deliver=False`` instance over ``store`` with the
    worker's emitter (``orders``, every event) attached, as a web process would have it."""
    made: list[WebhooksEmitter] = []

    def make(store: str, receiver_url: str) -> WebhooksEmitter:
        instance = WebhooksEmitter(store=store, deliver=False)
        instance.attach("orders", "*", Config(receiver_url, secret=cli_setup.SECRET))
        made.append(instance)
        return instance

    yield make
    for instance in made:
        instance.shutdown(0)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The URL of an SQLite file of this test (not created yet)."""
    return f"sqlite:///{tmp_path / 'hooks.db'}"


def call(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``cli.main(argv)`` in-process; return its exit status, stdout and stderr."""
    try:
        status = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors and --help
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def received_in_order(receiver: Receiver, count: int) -> list[ReceivedRequest]:
    """Wait for ``count`` requests; check each signature and return them."""
    requests = receiver.wait_for(count, timeout=WAIT)
    assert all(r.signature_valid for r in requests), [r.signature_error for r in requests]
    return requests


# -- arguments ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", OPERATOR_COMMANDS)
def test_each_operator_command_has_help_with_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``<command> --help`` exits 0 and shows its usage, --store, its exit statuses and an
    example of itself."""
    status, out, _ = call([command, "--help"], capsys)

    assert status == 0
    assert out.startswith(f"usage: webhooks-emitter {command}")
    assert "--store URL" in out and "WEBHOOKS_EMITTER_STORE" in out
    assert "Exit status" in out
    _, example = out.split("Example", 1)
    assert re.search(rf"webhooks-emitter {command}\b", example), example


def test_the_main_help_lists_the_operator_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` names every command, the old ones and the operator ones."""
    status, out, _ = call(["--help"], capsys)

    assert status == 0
    for command in ("demo", "send", "listen", "verify", *OPERATOR_COMMANDS):
        assert re.search(rf"^\s+{command}\s", out, re.MULTILINE), command


ARGS_OF = {
    "worker": ["--setup", "x:y"],
    "status": [],
    "failed": ["orders"],
    "replay": ["orders"],
    "pause": ["orders"],
    "restart": ["orders"],
    "migrate": [],
    "purge": ["orders", "--yes"],
}


@pytest.mark.parametrize("command", OPERATOR_COMMANDS)
@pytest.mark.parametrize("url", ["memory:", "MEMORY:", "memory://"])
def test_a_memory_store_is_a_bad_argument(
    command: str, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Operator commands act on what other processes stored: ``memory:`` is exit status 2."""
    status, out, err = call([command, "--store", url, *ARGS_OF[command]], capsys)

    assert (status, out) == (2, ""), err
    assert err.startswith(f"webhooks-emitter {command}: error: --store"), err
    assert "durable store" in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["status"], "--store is required"),
        (["status", "--store", "redis://127.0.0.1/0"], "unknown scheme 'redis'"),
        (["status", "--store", "sqlite:"], "names no file"),
        (["failed", "--store", "sqlite:x.db", "bad\nid"], "EMITTER_ID must not contain CR or LF"),
        (["failed", "--store", "sqlite:x.db", "orders", "--limit", "0"], "must be >= 1"),
        (["replay", "--store", "sqlite:x.db", "orders", " id"], "REQUEST_ID must not start"),
        (["worker", "--store", "sqlite:x.db"], "required: --setup"),
        (["worker", "--store", "sqlite:x.db", "--setup", "m:f", "--exit-timeout", "-1"], ">= 0"),
        (["pause", "--store", "sqlite:x.db"], "required: EMITTER_ID"),
        (["purge", "--store", "sqlite:x.db", "orders"], "add --yes"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_status_2(
    argv: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every bad argument is one ``webhooks-emitter ...: error: ...`` line and exit status 2,
    found before any store is opened (none is created)."""
    monkeypatch.delenv("WEBHOOKS_EMITTER_STORE", raising=False)
    monkeypatch.chdir(tmp_path)

    status, out, err = call(argv, capsys)

    assert (status, out) == (2, ""), err
    assert err.startswith("webhooks-emitter") and ": error: " in err, err
    assert err.count("\n") == 1, err
    assert message in err, err
    assert list(tmp_path.iterdir()) == []


def test_the_store_url_may_come_from_the_environment(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --store, ``$WEBHOOKS_EMITTER_STORE`` is used (keeping a password out of ``ps``)."""
    monkeypatch.setenv("WEBHOOKS_EMITTER_STORE", sqlite_url)

    assert call(["migrate"], capsys) == (0, f"{sqlite_store.SCHEMA_VERSION}\n", "")
    assert call(["status", "--json"], capsys) == (0, "{}\n", "")


# -- store errors and passwords -------------------------------------------------------------


def test_commands_other_than_migrate_never_create_a_store(tmp_path: Path) -> None:
    """``status`` on a file that does not exist fails (exit 1, one line saying to run
    ``migrate``) and creates nothing: a mistyped path never shows as an empty store."""
    missing = tmp_path / "typo.db"

    done = run_cli("status", "--store", f"sqlite:///{missing}")

    line = one_line_error(done, 1, "status")
    assert "does not exist" in line and "migrate" in line, line
    assert list(tmp_path.iterdir()) == []


def test_migrate_prints_the_version_and_is_idempotent(tmp_path: Path, sqlite_url: str) -> None:
    """``migrate`` creates the file (mode 0600) and its schema and prints the version; run
    again it changes nothing and prints the same; the new store has no emitters."""
    assert ok("migrate", "--store", sqlite_url) == f"{sqlite_store.SCHEMA_VERSION}\n"
    assert (tmp_path / "hooks.db").stat().st_mode & 0o777 == 0o600
    assert ok("migrate", "--store", sqlite_url) == f"{sqlite_store.SCHEMA_VERSION}\n"
    assert status_of(sqlite_url) == {}
    assert ok("status", "--store", sqlite_url) == "no emitters in the store\n"


@pytest.mark.parametrize("command", OPERATOR_COMMANDS)
def test_a_store_error_is_one_line_without_the_password(command: str) -> None:
    """An unreachable PostgreSQL server is exit status 1 and one line naming the server,
    with no traceback and never the URL's password."""
    with closed_port() as port:
        url = f"postgresql://hooks:{PASSWORD}@127.0.0.1:{port}/app?connect_timeout=2"
        args = ARGS_OF[command]
        if command == "worker":
            args = ["--setup", SETUP]
        done = run_cli(command, "--store", url, *args, CLI_SETUP_URL="http://127.0.0.1:9/")

    line = one_line_error(done, 1, command)
    assert f"127.0.0.1:{port}" in line, line
    assert PASSWORD not in line, line


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--store", f"sqlite://hooks:{PASSWORD}@db.internal/hooks.db"],
        ["status", "--store", f"postgres://hooks:{PASSWORD}@[::1/app"],
        ["status", f"postgresql://hooks:{PASSWORD}@127.0.0.1/app"],  # not as --store
    ],
)
def test_a_refused_store_url_never_shows_its_password(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A store URL refused as an argument is exit status 2, without its password."""
    status, out, err = call(argv, capsys)

    assert (status, out) == (2, ""), err
    assert PASSWORD not in err and "***" in err, err


def test_pause_and_restart_of_an_unknown_id_fail(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``pause``/``restart`` of an id the store does not know: exit status 1 and a message;
    ``failed``/``replay``/``purge`` find nothing (exit 0) and say on standard error that the
    store does not know the id."""
    assert call(["migrate", "--store", sqlite_url], capsys)[0] == 0

    for command in ("pause", "restart"):
        status, out, err = call([command, "--store", sqlite_url, "nope"], capsys)
        assert (status, out) == (1, ""), err
        assert "knows no emitter 'nope'" in err and err.count("\n") == 1, err

    for argv, shown in (
        (["failed", "nope", "--json"], "[]\n"),
        (["replay", "nope"], "0\n"),
        (["purge", "nope", "--yes"], "0\n"),
    ):
        status, out, err = call([argv[0], "--store", sqlite_url, *argv[1:]], capsys)
        assert (status, out) == (0, shown), err
        assert "knows no emitter 'nope'" in err, err


# -- --setup ------------------------------------------------------------------------------------

SETUP_MODULE = '''
import os
from webhooks_emitter import Config

not_callable = 42

def two_arguments(instance, other):
    pass

def raises(instance):
    raise RuntimeError("no settings for the emitters")

def good(instance):
    instance.attach("orders", "*", Config(os.environ["CLI_SETUP_URL"]))

if os.environ.get("BREAK_ON_IMPORT"):
    raise KeyError("broken at import")
'''


@pytest.mark.parametrize(
    "spec, env, message",
    [
        ("nowhere_to_be_found:setup", {}, "cannot import 'nowhere_to_be_found'"),
        ("mysetup:good", {"BREAK_ON_IMPORT": "1"}, "KeyError: 'broken at import'"),
        ("mysetup:missing", {}, "mysetup has no 'missing'"),
        ("mysetup:not_callable", {}, "not_callable is not callable"),
        ("mysetup:two_arguments", {}, "cannot be called with one argument"),
        ("mysetup:raises", {}, "RuntimeError: no settings for the emitters"),
        ("mysetup", {}, "must be 'module:function'"),
        ("missing.py:setup", {}, "no file 'missing.py'"),
    ],
)
def test_a_setup_that_cannot_be_imported_or_called_is_exit_status_2(
    spec: str, env: dict[str, str], message: str, tmp_path: Path, sqlite_url: str
) -> None:
    """A ``--setup`` that does not import, names nothing callable with the instance, or
    raises: exit status 2, one line saying what and where, no traceback (the store is left
    as it was: no lease held)."""
    (tmp_path / "mysetup.py").write_text(SETUP_MODULE)
    done = subprocess.run(
        [sys.executable, "-m", "webhooks_emitter", "worker", "--store", sqlite_url,
         "--setup", spec],
        capture_output=True,
        text=True,
        env=child_env(CLI_SETUP_URL="http://127.0.0.1:9/hooks", **env),
        cwd=tmp_path,
        timeout=60,
        check=False,
    )

    line = one_line_error(done, 2, "worker")
    assert f"--setup {spec!r}" in line or "--setup must be" in line, line
    assert message in line, line


def test_the_worker_imports_setup_modules_from_the_current_directory(
    tmp_path: Path, sqlite_url: str
) -> None:
    """The installed ``webhooks-emitter`` script (whose ``sys.path`` starts at its own
    folder, not the current one) imports ``--setup`` modules from the current directory,
    as gunicorn does; SIGINT stops it with exit status 0."""
    script = Path(sys.executable).with_name("webhooks-emitter")
    assert script.exists(), f"{script}: the package is not installed in this environment"
    (tmp_path / "mysetup.py").write_text(SETUP_MODULE)
    process = subprocess.Popen(
        [str(script), "worker", "--store", sqlite_url, "--setup", "mysetup:good"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(CLI_SETUP_URL="http://127.0.0.1:9/hooks"),
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        first = Lines(process.stdout).next()
        assert first.startswith("worker: delivering for 1 emitter(s) (orders) over "), first
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=WAIT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT)


# -- against a running worker ---------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_worker_delivers_until_a_signal_then_lets_go_of_its_lease(
    signum: int,
    sqlite_url: str,
    workers: Callable[..., Worker],
    producer: Callable[[str, str], WebhooksEmitter],
) -> None:
    """Events emitted by a ``deliver=False`` process are delivered by the worker, signed and
    in order; ``status`` names the worker as the lease holder; SIGTERM or SIGINT ends it
    with exit status 0 within its exit timeout, and the lease is let go (``null``)."""
    with Receiver(secret=cli_setup.SECRET) as receiver:
        worker = workers(sqlite_url, receiver.url)
        web = producer(sqlite_url, receiver.url)
        ids = [web.emit("order.paid", {"order": n}) for n in range(5)]

        requests = received_in_order(receiver, 5)
        assert [r.delivery_id for r in requests] == ids
        assert [r.json()["order"] for r in requests] == list(range(5))
        report = wait_status(
            sqlite_url, lambda r: r["orders"]["lease_holder"] == worker.holder
        )
        assert report["orders"] == {
            "queued": 0,
            "failed": 0,
            "paused": False,
            "oldest_queued_age": None,
            "lease_holder": worker.holder,
        }
        table = ok("status", "--store", sqlite_url).splitlines()
        assert table[0].split() == ["EMITTER", "QUEUED", "FAILED", "PAUSED", "OLDEST", "LEASE"]
        assert table[1].split() == ["orders", "0", "0", "no", "-", worker.holder]

        status, took, last = worker.stop(signum)

    assert status == 0, worker.err.rest()
    assert took < worker.exit_timeout, took
    assert last == ["worker: stopped; leases released"]
    assert status_of(sqlite_url)["orders"]["lease_holder"] is None


def test_the_worker_exits_within_its_exit_timeout_with_a_try_under_way(
    sqlite_url: str,
    workers: Callable[..., Worker],
    producer: Callable[[str, str], WebhooksEmitter],
) -> None:
    """A receiver that never answers does not hold the worker past ``--exit-timeout``: it
    exits 0 in time and lets go of the lease of the try under way at its end (CONTRACT
    section 10, takeover), so no holder is shown; the event stays queued for the next
    worker."""
    answer = threading.Event()

    def hang(request: ReceivedRequest) -> Response:
        answer.wait(WAIT)
        return 204

    with Receiver(responder=hang) as receiver:
        try:
            worker = workers(
                sqlite_url, receiver.url, exit_timeout=1.0, CLI_SETUP_REQUEST_TIMEOUT="60"
            )
            producer(sqlite_url, receiver.url).emit("order.paid", {"order": 1})
            receiver.wait_for(1, timeout=WAIT)

            status, took, last = worker.stop(signal.SIGTERM)
        finally:
            answer.set()

    assert status == 0, worker.err.rest()
    assert took < worker.exit_timeout + 3.0, took
    assert last == ["worker: stopped; leases released"]
    after = status_of(sqlite_url)["orders"]
    assert after["queued"] == 1 and after["lease_holder"] is None, after


def test_pause_stops_the_worker_within_a_second_and_restart_resumes_it(
    sqlite_url: str,
    workers: Callable[..., Worker],
    producer: Callable[[str, str], WebhooksEmitter],
) -> None:
    """``pause`` acts in the worker through the store: ``status`` shows it paused and the
    worker sends nothing more (an event emitted then waits, queued, past a second);
    ``restart`` resumes it and the event is delivered."""
    with Receiver(secret=cli_setup.SECRET) as receiver:
        workers(sqlite_url, receiver.url)
        web = producer(sqlite_url, receiver.url)
        web.emit("order.paid", {"order": 1})
        received_in_order(receiver, 1)

        assert ok("pause", "--store", sqlite_url, "orders").startswith("paused orders: ")
        assert ok("pause", "--store", sqlite_url, "orders").startswith(
            "paused orders (it was paused already): "
        )
        assert status_of(sqlite_url)["orders"]["paused"] is True
        late = web.emit("order.paid", {"order": 2})
        with pytest.raises(TimeoutError):
            receiver.wait_for(2, timeout=1.5)
        report = status_of(sqlite_url)["orders"]
        assert (report["paused"], report["queued"]) == (True, 1)
        assert report["oldest_queued_age"] >= 1.0

        assert ok("restart", "--store", sqlite_url, "orders").startswith("restarted orders: ")
        requests = received_in_order(receiver, 2)
        assert requests[1].delivery_id == late
        report = wait_status(sqlite_url, lambda r: r["orders"]["queued"] == 0)
        assert report["orders"]["paused"] is False
        assert ok("restart", "--store", sqlite_url, "orders") == (
            "orders was not paused: nothing to do\n"
        )


def test_failed_replay_and_purge_round_trip(
    sqlite_url: str,
    workers: Callable[..., Worker],
    producer: Callable[[str, str], WebhooksEmitter],
) -> None:
    """Events given up after a 500 (``max_attempts=1``) are listed by ``failed`` (JSON with
    FailedEvent's fields, in emit order), queued again by ``replay`` (some ids, then all)
    and delivered by the worker once the receiver answers 2xx; ``purge`` needs ``--yes``
    and then deletes them."""
    answers = [500]

    def respond(request: ReceivedRequest) -> Response:
        return answers[-1]

    with Receiver(secret=cli_setup.SECRET, responder=respond) as receiver:
        workers(sqlite_url, receiver.url, CLI_SETUP_MAX_ATTEMPTS="1")
        web = producer(sqlite_url, receiver.url)
        payloads = [{"order": n, "note": "d\u00e9j\u00e0"} for n in range(3)]
        ids = [web.emit("order.paid", payload) for payload in payloads]
        received_in_order(receiver, 3)
        wait_status(sqlite_url, lambda r: (r["orders"]["failed"], r["orders"]["queued"]) == (3, 0))

        listed = json.loads(ok("failed", "--store", sqlite_url, "orders", "--json"))
        assert [event["request_id"] for event in listed] == ids
        for event, payload in zip(listed, payloads):
            assert set(event) == {
                "emitter_id", "event", "request_id", "attempts", "status_code", "error",
                "failed_at", "body",
            }
            assert (event["emitter_id"], event["event"]) == ("orders", "order.paid")
            assert (event["attempts"], event["status_code"]) == (1, 500)
            assert json.loads(event["body"]) == payload
            failed_at = datetime.datetime.fromisoformat(event["failed_at"])
            assert failed_at.utcoffset() == datetime.timedelta(0)
            age = datetime.datetime.now(datetime.timezone.utc) - failed_at
            assert datetime.timedelta(0) <= age < datetime.timedelta(seconds=WAIT * 3)
        one = json.loads(ok("failed", "--store", sqlite_url, "orders", "--json", "--limit", "1"))
        assert one == listed[:1]
        lines = ok("failed", "--store", sqlite_url, "orders").splitlines()
        assert [line.split()[1] for line in lines] == ids
        assert all(re.search(r"  1 tr(y|ies)  HTTP 500\b", line) for line in lines), lines

        answers.append(204)
        assert ok("replay", "--store", sqlite_url, "orders", ids[1]) == "1\n"
        delivered = receiver.wait_for(
            1, timeout=WAIT, where=lambda r: r.delivery_id == ids[1] and r.try_number > 1
        )
        assert delivered[0].json() == payloads[1]
        wait_status(sqlite_url, lambda r: (r["orders"]["failed"], r["orders"]["queued"]) == (2, 0))
        assert ok("replay", "--store", sqlite_url, "orders") == "2\n"
        again = receiver.wait_for(6, timeout=WAIT)
        assert [r.delivery_id for r in again[4:]] == [ids[0], ids[2]]  # emit order kept
        wait_status(sqlite_url, lambda r: (r["orders"]["failed"], r["orders"]["queued"]) == (0, 0))
        assert ok("failed", "--store", sqlite_url, "orders", "--json") == "[]\n"

        answers.append(500)
        web.emit("order.paid", {"order": 9})
        wait_status(sqlite_url, lambda r: r["orders"]["failed"] == 1)
        refused = run_cli("purge", "--store", sqlite_url, "orders")
        assert "--yes" in one_line_error(refused, 2, "purge")
        assert status_of(sqlite_url)["orders"]["failed"] == 1
        assert ok("purge", "--store", sqlite_url, "orders", "--yes") == "1\n"
        report = status_of(sqlite_url)["orders"]
        assert (report["failed"], report["queued"]) == (0, 0)


# -- PostgreSQL ---------------------------------------------------------------------------------


def test_migrate_status_and_worker_over_postgresql(
    pg_store_url: str,
    workers: Callable[..., Worker],
    producer: Callable[[str, str], WebhooksEmitter],
) -> None:
    """Over a real PostgreSQL server: ``status`` of a database without the tables fails and
    says to run ``migrate`` (creating nothing); ``migrate`` prints the version (twice);
    ``status`` of the new store is empty; a worker delivers what a ``deliver=False``
    process emits, holds the lease while it runs, and lets go of it at SIGTERM (exit 0)."""
    line = one_line_error(run_cli("status", "--store", pg_store_url), 1, "status")
    assert "has no tables" in line and "migrate" in line, line
    version = f"{postgres_store.SCHEMA_VERSION}\n"
    assert ok("migrate", "--store", pg_store_url) == version
    assert ok("migrate", "--store", pg_store_url) == version
    assert status_of(pg_store_url) == {}

    with Receiver(secret=cli_setup.SECRET) as receiver:
        worker = workers(pg_store_url, receiver.url)
        web = producer(pg_store_url, receiver.url)
        ids = [web.emit("order.paid", {"order": n}) for n in range(3)]

        assert [r.delivery_id for r in received_in_order(receiver, 3)] == ids
        wait_status(pg_store_url, lambda r: r["orders"]["lease_holder"] == worker.holder)
        status, took, last = worker.stop(signal.SIGTERM)

    assert status == 0, worker.err.rest()
    assert took < worker.exit_timeout, took
    assert last == ["worker: stopped; leases released"]
    report = status_of(pg_store_url)["orders"]
    assert (report["queued"], report["failed"], report["lease_holder"]) == (0, 0, None)
