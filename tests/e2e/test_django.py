"""webhooks_emitter.contrib.django in a real Django project (tests/support/django_project).

Django's settings are process-global, so every Django run happens in a subprocess: the
project's own tests under Django's test runner (``manage.py test``, one subprocess per
test), ``manage.py check`` with bad settings, the management commands against a running
worker, and emit_on_commit as a true outbox on PostgreSQL (``django:default``).
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from webhooks_emitter.testing import ReceivedRequest, Receiver

PROJECT = Path(__file__).resolve().parents[1] / "support" / "django_project"
SETTINGS_ENV = ("HOOKS_DB_URL", "HOOKS_RECEIVER_URL", "HOOKS_STORE", "HOOKS_DELIVER")


def project_env(**env: str) -> dict[str, str]:
    """This environment for the project, with ``env`` and nothing else of its settings."""
    base = {
        k: v for k, v in os.environ.items() if k not in SETTINGS_ENV + ("WEBHOOKS_EMITTER_JSON",)
    }
    return {**base, "DJANGO_SETTINGS_MODULE": "project.settings", "PYTHONUNBUFFERED": "1", **env}


def manage(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py args`` in the project; its completed process."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=project_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    """Both streams, for failure messages."""
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def project_tests() -> list[str]:
    """The test ids of tests/support/django_project/shop/tests.py (``shop.tests.Class.test_x``)."""
    tree = ast.parse((PROJECT / "shop" / "tests.py").read_text())
    found = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                    found.append(f"shop.tests.{node.name}.{item.name}")
    return found


@pytest.mark.parametrize("label", project_tests())
def test_under_djangos_test_runner(label: str) -> None:
    """Each test of the project's shop/tests.py passes under ``manage.py test`` (SQLite,
    CSRF middleware on): settings applied at start-up, emit in views, emit_on_commit's
    commit, rollback and savepoint cases, webhook_view, a live server receiving real
    deliveries, and the commands' refusal of the memory store."""
    result = manage("test", label, "--noinput", "-v", "2")
    assert result.returncode == 0, output(result)
    assert "Ran 1 test" in result.stderr, output(result)


def test_project_tests_are_found() -> None:
    """The list above is not empty (a renamed file would silently run nothing)."""
    assert len(project_tests()) >= 15


# -- settings and system checks ------------------------------------------------------------


BAD = {
    "STORE": "redis://localhost",
    "EXIT_TIMEOUT": "soon",
    "EMITTERS": {
        "shop": {"url": "http://127.0.0.1:9/hooks", "events": ["*"], "max_attempts": 0},
        "audit": {"events": ["*"]},
    },
}


def test_check_passes_with_good_settings() -> None:
    """`manage.py check` is silent about good settings."""
    result = manage("check")
    assert result.returncode == 0, output(result)
    assert "no issues" in result.stdout


def test_check_reports_every_bad_setting_by_its_key() -> None:
    """`manage.py check` fails (non-zero) with one webhooks_emitter.E001 error per bad key,
    each naming the key as written in settings.WEBHOOKS_EMITTER."""
    result = manage("check", WEBHOOKS_EMITTER_JSON=json.dumps(BAD))
    assert result.returncode != 0, output(result)
    for key in (
        "WEBHOOKS_EMITTER['STORE']",
        "WEBHOOKS_EMITTER['EXIT_TIMEOUT']",
        "WEBHOOKS_EMITTER['EMITTERS']['shop']['max_attempts']",
        "WEBHOOKS_EMITTER['EMITTERS']['audit']['url']",
    ):
        assert key in result.stderr, output(result)
    assert result.stderr.count("webhooks_emitter.E001") == 4, output(result)


def test_setup_never_raises_for_bad_settings() -> None:
    """With bad settings django.setup() still works (commands without checks run); no
    emitter is attached and an error is logged that points at `manage.py check`."""
    code = "import webhooks_emitter; print(webhooks_emitter.list_emitters())"
    result = manage("shell", "-v", "0", "-c", code, WEBHOOKS_EMITTER_JSON=json.dumps(BAD))
    assert result.returncode == 0, output(result)
    assert result.stdout.strip() == "[]"
    assert "manage.py check" in result.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (["not", "a", "dict"], "WEBHOOKS_EMITTER: must be a dict"),
        ({"STORE": "django:default"}, "needs a PostgreSQL database"),
        ({"STORE": "django:reports"}, "names no database of settings.DATABASES"),
        ({"DELIVER": False}, "WEBHOOKS_EMITTER['DELIVER']: False needs a durable store"),
        ({"EMITTERS": {"x": {"url": "http://h/", "events": ["*"], "retry": 1}}}, "['retry']"),
    ],
)
def test_check_errors(setting: Any, message: str) -> None:
    """Other bad settings, each a check error with a message naming what is wrong: a
    django: store on SQLite or on an unknown alias, DELIVER False on memory, an unknown
    emitter field."""
    result = manage("check", WEBHOOKS_EMITTER_JSON=json.dumps(setting))
    assert result.returncode != 0, output(result)
    assert message in result.stderr, output(result)
    assert "webhooks_emitter.E001" in result.stderr


def test_check_accepts_fast_backoff_settings() -> None:
    """An emitter with {"backoff_start": 0.01, "backoff_limit": 0.05} passes the checks
    (its fields are checked together), and an unknown key is named with the closest one."""
    shop = {"url": "http://127.0.0.1:9/hooks", "events": ["*"], "backoff_start": 0.01,
            "backoff_limit": 0.05}
    result = manage("check", WEBHOOKS_EMITTER_JSON=json.dumps({"EMITTERS": {"shop": shop}}))
    assert result.returncode == 0, output(result)
    typo = {"url": "http://127.0.0.1:9/hooks", "event": ["*"]}
    result = manage("check", WEBHOOKS_EMITTER_JSON=json.dumps({"EMITTERS": {"shop": typo}}))
    assert result.returncode != 0, output(result)
    assert "['shop']['event']: unknown key 'event' (did you mean 'events'?)" in result.stderr


PASSWORD = "Pw5rTq8Zx"
MALFORMED_STORES = {
    "unclosed IPv6 bracket": f"postgresql://app:{PASSWORD}@[::1:5432/db",
    "stray %zz": f"postgresql://app:{PASSWORD}%zz@127.0.0.1/db",
    "libpq key/value": f"host=127.0.0.1 dbname=db user=app password={PASSWORD}",
}


@pytest.mark.parametrize("store", MALFORMED_STORES.values(), ids=list(MALFORMED_STORES))
def test_a_malformed_store_is_a_check_error_and_django_still_starts(store: str) -> None:
    """A malformed WEBHOOKS_EMITTER["STORE"] never makes django.setup() raise: `manage.py
    check` runs and reports it as webhooks_emitter.E001 naming the key, other commands
    start; no output shows the database password."""
    setting = json.dumps({"STORE": store})
    result = manage("check", WEBHOOKS_EMITTER_JSON=setting)
    assert result.returncode != 0, output(result)
    assert "WEBHOOKS_EMITTER['STORE']" in result.stderr, output(result)
    assert "webhooks_emitter.E001" in result.stderr and "Traceback" not in result.stderr
    assert PASSWORD not in result.stdout + result.stderr, output(result)
    code = "import webhooks_emitter; print('up', webhooks_emitter.list_emitters())"
    result = manage("shell", "-v", "0", "-c", code, WEBHOOKS_EMITTER_JSON=setting)
    assert result.returncode == 0, output(result)
    assert result.stdout.strip() == "up []"
    assert PASSWORD not in result.stdout + result.stderr, output(result)
    result = manage("webhooks_status", WEBHOOKS_EMITTER_JSON=setting)  # Django checks first
    assert result.returncode != 0 and "WEBHOOKS_EMITTER['STORE']" in result.stderr, output(result)
    assert PASSWORD not in result.stdout + result.stderr, output(result)


# -- the management commands against a running worker ---------------------------------------


class Worker:
    """``manage.py webhooks_worker`` running in the project, its output read as it comes."""

    def __init__(self, **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "webhooks_worker", "--exit-timeout", "10"],
            cwd=PROJECT,
            env=project_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (self.process.stdout, self.process.stderr)
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, text: str, count: int = 1, timeout: float = 60) -> None:
        """Wait until ``count`` lines contain ``text``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(text in line for line in self.lines) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    pytest.fail(f"the worker never said {text!r}:\n{''.join(self.lines)}")
                self._cond.wait(min(remaining, 0.5))

    def stop(self) -> int:
        """SIGTERM; its exit status."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        for reader in self._readers:
            reader.join(10)
        return self.process.returncode

    def kill(self) -> None:
        """Make sure it is gone."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class FailingReceiver(Receiver):
    """A receiver answering 500 to bodies with "fail": true while ``failing`` is set."""

    def __init__(self) -> None:
        super().__init__(secret="supersecret", responder=self.answer)
        self.failing = threading.Event()
        self.failing.set()

    def answer(self, request: ReceivedRequest) -> int:
        """500 for "fail" bodies while failing, else 204."""
        return 500 if self.failing.is_set() and request.json().get("fail") else 204


@pytest.fixture
def failing_receiver() -> Iterator[FailingReceiver]:
    """A running FailingReceiver."""
    with FailingReceiver() as receiver:
        yield receiver


def emit_from_web(env: dict[str, str], *payloads: dict[str, Any]) -> list[str]:
    """Emit each payload from a web-like process (DELIVER False); the request ids."""
    code = (
        "import json, os, webhooks_emitter\n"
        "assert not webhooks_emitter.default.delivers\n"
        "for payload in json.loads(os.environ['HOOKS_PAYLOADS']):\n"
        "    print(webhooks_emitter.emit('order.created', payload))\n"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", code],
        cwd=PROJECT,
        env=project_env(**{**env, "HOOKS_DELIVER": "0", "HOOKS_PAYLOADS": json.dumps(payloads)}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, output(result)
    return result.stdout.split()


def test_worker_status_failed_and_replay_commands(
    failing_receiver: FailingReceiver, tmp_path: Path
) -> None:
    """With an SQLite store: webhooks_worker delivers what a DELIVER=False process stored
    (its own settings say DELIVER False too); webhooks_status --json and webhooks_failed
    --json report to scripts; webhooks_replay, run beside the worker, queues a failed event
    again and the running worker delivers it; SIGTERM stops the worker with status 0."""
    env = {
        "HOOKS_STORE": f"sqlite:///{tmp_path / 'hooks.db'}",
        "HOOKS_RECEIVER_URL": failing_receiver.url,
        "HOOKS_DELIVER": "0",
    }
    worker = Worker(**env)
    try:
        worker.wait_for("webhooks worker: delivering for 1 emitter(s)")
        failed_id, ok_id = emit_from_web(env, {"fail": True}, {"n": 2})
        [hook] = failing_receiver.wait_for(1, where=lambda r: r.delivery_id == ok_id)
        assert hook.signature_valid and hook.json() == {"n": 2}
        worker.wait_for("given up")

        result = manage("webhooks_status", "--json", **env)
        assert result.returncode == 0, output(result)
        report = json.loads(result.stdout)
        assert set(report) == {"shop"}
        row = report["shop"]
        assert (row["queued"], row["failed"], row["paused"]) == (0, 1, False)
        assert row["oldest_queued_age"] is None
        assert row["lease_holder"] is None or f":{worker.process.pid}" in row["lease_holder"]
        table = manage("webhooks_status", **env)
        assert table.returncode == 0 and "shop" in table.stdout, output(table)

        result = manage("webhooks_failed", "shop", "--json", **env)
        assert result.returncode == 0, output(result)
        [failed] = json.loads(result.stdout)
        assert failed["request_id"] == failed_id and failed["status_code"] == 500
        assert failed["attempts"] == 2 and json.loads(failed["body"]) == {"fail": True}

        failing_receiver.failing.clear()
        result = manage("webhooks_replay", "shop", failed_id, **env)
        assert (result.returncode, result.stdout.strip()) == (0, "1"), output(result)
        failing_receiver.wait_for(
            1, timeout=30, where=lambda r: r.delivery_id == failed_id and r.try_number == 3
        )
        result = manage("webhooks_replay", "shop", "no-such-id", **env)
        assert (result.returncode, result.stdout.strip()) == (0, "0"), output(result)
        assert worker.stop() == 0, "".join(worker.lines)
        worker.wait_for("webhooks worker: stopped")
    finally:
        worker.kill()
    result = manage("webhooks_status", "--json", **env)
    assert json.loads(result.stdout)["shop"]["failed"] == 0, output(result)


def test_command_arguments(tmp_path: Path) -> None:
    """Bad arguments are exit status 2 with a message (a memory store, a bad --setup); a
    store that cannot be opened is exit status 1, saying why (webhooks_status opens it
    itself, without creating it; the worker's start-up could not apply the settings)."""
    result = manage("webhooks_status")
    assert result.returncode == 2 and "durable store" in result.stderr, output(result)
    store = f"sqlite:///{tmp_path / 'hooks.db'}"
    result = manage("webhooks_worker", "--setup", "no_such_module_x:f", HOOKS_STORE=store)
    assert result.returncode == 2 and "--setup" in result.stderr, output(result)
    missing = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    result = manage("webhooks_status", HOOKS_STORE=missing)
    assert result.returncode == 1, output(result)
    assert "dir.db" in result.stderr and "Traceback" not in result.stderr, output(result)
    result = manage("webhooks_worker", HOOKS_STORE=missing)
    assert result.returncode == 1, output(result)
    assert "could not be applied" in result.stderr and "dir.db" in result.stderr


# -- PostgreSQL: django:default ------------------------------------------------------------


def test_outbox_on_postgresql(pg_store_url: str) -> None:
    """With "STORE": "django:default" on PostgreSQL, emit_on_commit writes the event
    through Django's own connection in the open transaction (no on_commit callback; no
    other connection sees it before the commit); a committed event is delivered, a rolled
    back one never exists, and one outside a transaction goes at once."""
    with Receiver(secret="supersecret") as receiver:
        result = subprocess.run(
            [sys.executable, "pg_outbox.py"],
            cwd=PROJECT,
            env=project_env(
                HOOKS_DB_URL=pg_store_url,
                HOOKS_STORE="django:default",
                HOOKS_RECEIVER_URL=receiver.url,
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, output(result)
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["store"] == "PostgresStore"
        assert report["callbacks_held"] == 0
        assert report["seen_before_commit"] == 0
        assert report["flushed"] is True
        assert report["orders"] == ["book"]
        assert report["left_in_store"] == 0
        ids = {r.delivery_id for r in receiver.wait_for(2)}
    assert ids == {report["committed"], report["at_once"]}
    assert report["rolled_back"] not in ids
    assert all(r.signature_valid for r in receiver.requests)


def test_check_and_status_on_postgresql(pg_store_url: str) -> None:
    """`manage.py check` accepts django:default on PostgreSQL, and webhooks_status reads
    the store on that database."""
    env = {"HOOKS_DB_URL": pg_store_url, "HOOKS_STORE": "django:default"}
    result = manage("check", **env)
    assert result.returncode == 0, output(result)
    result = manage("webhooks_status", "--json", **env)
    assert result.returncode == 0, output(result)
    assert json.loads(result.stdout)["shop"]["queued"] == 0



def test_django_store_under_the_test_runner_warns(pg_store_url: str) -> None:
    """Under Django's test runner the "django:default" store keeps the database it was
    made for while Django switches to the test database: a warning says so and points at
    memory: with capture(); the test database is still created and dropped cleanly."""
    result = manage(
        "test",
        "shop.tests.WebhookViewTests.test_other_methods_are_405",
        "--noinput",
        HOOKS_DB_URL=pg_store_url,
        HOOKS_STORE="django:default",
    )
    assert result.returncode == 0, output(result)
    assert "the test runner's test database?" in result.stderr, output(result)
    assert "capture()" in result.stderr
