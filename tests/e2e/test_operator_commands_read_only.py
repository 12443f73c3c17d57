"""Operator commands only read or change the store (CONTRACT section 12; issue 17 item 2).

Every operator command (the CLI's ``status``, ``failed``, ``replay``, ``pause``,
``restart``, ``migrate``, ``purge``; ``flask webhooks status|failed|replay``; Django's
``webhooks_status``, ``webhooks_failed``, ``webhooks_replay``) is run as a user runs it, in
its own process, over a store holding a backlog of 2000 events for an emitter whose settings
say DELIVER. The receiver holds every request it gets open, so a command that delivered
would also wait for its exit flush (30 s). Each command must:

- send nothing (the receiver sees no request);
- take no lease (the store shows no holder) and leave the backlog as it was;
- log nothing about events (its library log lines, INFO and up, are read);
- end long before that exit flush could have (the wall time is printed with ``-s``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from webhooks_emitter import Config, WebhooksEmitter
from webhooks_emitter.testing import ReceivedRequest, Receiver

TESTS = Path(__file__).resolve().parents[1] / "support"
SCRIPTS = TESTS / "scripts"
PROJECT = TESTS / "django_project"
BACKLOG = 2000
EXIT_TIMEOUT = 30.0  # what a command that delivered would wait for at exit


class HoldingReceiver(Receiver):
    """A receiver that counts requests and holds each one open until the test ends."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.seen = 0
        self._count_lock = threading.Lock()
        super().__init__(responder=self.hold)

    def hold(self, request: ReceivedRequest) -> int:
        """Count the request, then answer only once released."""
        with self._count_lock:
            self.seen += 1
        self.release.wait(60)
        return 204


@pytest.fixture
def holding_receiver() -> Iterator[HoldingReceiver]:
    """A running HoldingReceiver, released at the end."""
    receiver = HoldingReceiver()
    with receiver:
        try:
            yield receiver
        finally:
            receiver.release.set()


def store_backlog(url: str, emitter_id: str, receiver_url: str) -> None:
    """Store BACKLOG events for ``emitter_id`` from an instance that never delivers."""
    instance = WebhooksEmitter(store=url, deliver=False)
    try:
        instance.attach(emitter_id, "*", Config(receiver_url))
        for index in range(BACKLOG):
            instance.emit("order.created", {"i": index})
    finally:
        instance.shutdown(0)


def state_of(url: str, emitter_id: str) -> dict[str, Any]:
    """What the store holds for ``emitter_id`` (read from this process, delivering nothing)."""
    instance = WebhooksEmitter(store=url, deliver=False)
    try:
        state = instance.store.state(emitter_id)
        return {"queued": state.queued, "failed": state.failed, "holder": state.lease_holder}
    finally:
        instance.shutdown(0)
        instance.store.close()


def run(args: list[str], cwd: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``args`` with ``env`` added; the completed process and its wall time."""
    started = time.monotonic()
    result = subprocess.run(
        args,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, time.monotonic() - started


def library_log_lines(stderr: str) -> list[str]:
    """The library's log lines a test script printed (``LOG webhooks_emitter...``)."""
    return [line for line in stderr.splitlines() if line.startswith("LOG webhooks_emitter")]


def check_read_only(
    result: subprocess.CompletedProcess[str],
    elapsed: float,
    receiver: HoldingReceiver,
    url: str,
    emitter_id: str,
    log_lines: list[str],
) -> None:
    """The assertions every operator command must pass (see the module docstring)."""
    detail = f"exit {result.returncode} in {elapsed:.2f} s\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, detail
    assert receiver.seen == 0, detail
    assert log_lines == [], detail
    assert elapsed < EXIT_TIMEOUT / 2, detail
    assert state_of(url, emitter_id) == {"queued": BACKLOG, "failed": 0, "holder": None}, detail
    shown = [arg for arg in result.args[1:] if "://" not in arg and not arg.startswith("/")]
    print(f"{' '.join(shown)}: {elapsed:.2f} s wall time")


# -- the command line -----------------------------------------------------------------------


CLI_COMMANDS = [
    ["status", "--json"],
    ["failed", "orders", "--json"],
    ["replay", "orders"],
    ["pause", "orders"],
    ["restart", "orders"],
    ["migrate"],
    ["purge", "nobody-here", "--yes"],
]


def test_cli_operator_commands_deliver_nothing_over_a_backlog(
    holding_receiver: HoldingReceiver, tmp_path: Path
) -> None:
    """Each of the CLI's operator commands, with -v (its library log lines on standard
    error), over an SQLite store holding 2000 queued events: no request, no lease, no log
    line, the backlog untouched."""
    url = f"sqlite:///{tmp_path / 'hooks.db'}"
    store_backlog(url, "orders", holding_receiver.url)
    for command in CLI_COMMANDS:
        result, elapsed = run(
            [sys.executable, "-m", "webhooks_emitter", command[0], "--store", url, "-v",
             *command[1:]],
            tmp_path,
        )
        lines = [line for line in result.stderr.splitlines() if " webhooks_emitter" in line]
        check_read_only(result, elapsed, holding_receiver, url, "orders", lines)
        if command[0] == "status":
            assert json.loads(result.stdout)["orders"]["queued"] == BACKLOG


# -- flask webhooks ... ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["status", "--json"], ["failed", "receiver", "--json"], ["replay", "receiver"]]
)
def test_flask_operator_commands_deliver_nothing_over_a_backlog(
    holding_receiver: HoldingReceiver, tmp_path: Path, command: list[str]
) -> None:
    """`flask webhooks status|failed|replay` on an app whose settings deliver (DELIVER
    True, exit timeout 30 s), over an SQLite backlog of 2000 events: the app's instance
    delivers nothing, takes no lease and logs nothing; the command ends at once."""
    url = f"sqlite:///{tmp_path / 'hooks.db'}"
    store_backlog(url, "receiver", holding_receiver.url)
    result, elapsed = run(
        [sys.executable, "-m", "flask", "--app", "flask_app:create_app", "webhooks", *command],
        SCRIPTS,
        HOOKS_RECEIVER_URL=holding_receiver.url,
        HOOKS_STORE=url,
        HOOKS_DELIVER="1",
        HOOKS_EXIT_TIMEOUT=str(EXIT_TIMEOUT),
        HOOKS_LOG="1",
    )
    check_read_only(
        result, elapsed, holding_receiver, url, "receiver", library_log_lines(result.stderr)
    )
    if command[0] == "status":
        report = json.loads(result.stdout)
        assert report["receiver"]["queued"] == BACKLOG
        assert report["receiver"]["lease_holder"] is None


# -- Django's management commands -----------------------------------------------------------


def django_env(receiver_url: str, **env: str) -> dict[str, str]:
    """The test project's settings: one emitter 'shop' that delivers, library logs shown."""
    return {
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "HOOKS_RECEIVER_URL": receiver_url,
        "HOOKS_DELIVER": "1",
        "HOOKS_LOG": "1",
        **env,
    }


DJANGO_COMMANDS = [
    ["webhooks_status", "--json"],
    ["webhooks_failed", "shop", "--json"],
    ["webhooks_replay", "shop"],
]


def run_django_commands(receiver: HoldingReceiver, url: str, env: dict[str, str]) -> None:
    """Each management command over ``url`` (which holds the backlog), checked."""
    for command in DJANGO_COMMANDS:
        result, elapsed = run([sys.executable, "manage.py", *command], PROJECT, **env)
        check_read_only(result, elapsed, receiver, url, "shop", library_log_lines(result.stderr))
        if command[0] == "webhooks_status":
            assert json.loads(result.stdout)["shop"]["queued"] == BACKLOG


def test_django_operator_commands_deliver_nothing_over_a_backlog_in_sqlite(
    holding_receiver: HoldingReceiver, tmp_path: Path
) -> None:
    """webhooks_status, webhooks_failed and webhooks_replay with settings that deliver,
    over an SQLite backlog of 2000 events: nothing sent, no lease, no log line."""
    url = f"sqlite:///{tmp_path / 'hooks.db'}"
    store_backlog(url, "shop", holding_receiver.url)
    env = django_env(holding_receiver.url, HOOKS_STORE=url)
    run_django_commands(holding_receiver, url, env)


def test_django_operator_commands_deliver_nothing_over_a_backlog_in_postgresql(
    holding_receiver: HoldingReceiver, pg_store_url: str
) -> None:
    """The same with "STORE": "django:default" on PostgreSQL (the store on Django's own
    database), as a Django project runs them."""
    store_backlog(pg_store_url, "shop", holding_receiver.url)
    env = django_env(holding_receiver.url, HOOKS_DB_URL=pg_store_url, HOOKS_STORE="django:default")
    run_django_commands(holding_receiver, pg_store_url, env)
