"""``webhooks-emitter health --store URL [--max-age SECONDS] [--json]`` (CONTRACT section 15):
the store's side of a health check for container probes, over real SQLite files, run
in-process through ``cli.main``. Exit 0 healthy, 1 not, 2 bad arguments.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from faultservers import closed_port

from webhooks_emitter import Config, WebhooksEmitter, cli

PASSWORD = "Pw9f3kqLm-health"


def call(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``cli.main(argv)``; its exit status, standard output and standard error."""
    try:
        status = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def migrated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The URL of an SQLite file with the current schema (made by ``migrate``)."""
    url = f"sqlite:///{tmp_path / 'hooks.db'}"
    assert call(["migrate", "--store", url], capsys)[0] == 0
    return url


def test_a_reachable_current_store_is_healthy(
    migrated: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0 and ``ok``; with --json, ``{"ok": true, "problems": []}``."""
    assert call(["health", "--store", migrated], capsys) == (0, "ok\n", "")
    status, out, _ = call(["health", "--store", migrated, "--json"], capsys)
    assert status == 0 and json.loads(out) == {"ok": True, "problems": []}


def test_a_store_without_the_schema_is_one_problem_and_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A path where no store was made: exit 1, one line, and no file left behind (a probe
    never creates nor migrates)."""
    path = tmp_path / "missing.db"
    status, out, _ = call(["health", "--store", f"sqlite:///{path}", "--json"], capsys)
    answer = json.loads(out)
    assert status == 1 and answer["ok"] is False and len(answer["problems"]) == 1
    assert str(path) in answer["problems"][0]
    assert not path.exists()


def test_max_age_names_each_running_emitter_with_an_old_queued_event(
    migrated: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two running emitters with an event queued by a web process (nothing delivers) and a
    paused one: exit 1, one line per running emitter naming it; a large max age: exit 0."""
    web = WebhooksEmitter(store=migrated, deliver=False)
    try:
        for emitter_id in ("billing", "crm", "paused"):
            web.attach(emitter_id, "order.paid", Config("http://127.0.0.1:9/hooks"))
        web.pause("paused")
        web.emit("order.paid", {})
        emitted = web.store.state("billing").oldest_queued_at
        assert emitted is not None
        while time.time() - emitted <= 0.05:
            time.sleep(0.01)
    finally:
        web.shutdown(0)
    status, out, _ = call(["health", "--store", migrated, "--max-age", "0.05"], capsys)
    lines = out.splitlines()
    assert status == 1 and len(lines) == 2
    assert lines[0].startswith("emitter 'billing': oldest queued event is ")
    assert lines[1].startswith("emitter 'crm': oldest queued event is ")
    assert call(["health", "--store", migrated, "--max-age", "3600"], capsys)[:2] == (0, "ok\n")


def test_an_unreachable_postgresql_store_is_a_problem_without_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A PostgreSQL URL on a port that refuses connections: exit 1, one line naming the
    server, and the password neither on standard output nor on standard error."""
    with closed_port() as port:
        status, out, err = call(
            ["health", "--store", f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/app"], capsys
        )
    assert status == 1 and len(out.splitlines()) == 1
    assert f"127.0.0.1:{port}" in out
    assert PASSWORD not in out + err


@pytest.mark.parametrize(
    "argv, says",
    [
        (["health"], "--store is required"),
        (["health", "--store", "memory:"], "needs a durable store"),
        (["health", "--store", "sqlite:///x.db", "--max-age", "-1"], "--max-age"),
        (["health", "--store", "sqlite:///x.db", "--max-age", "soon"], "--max-age"),
        (["health", "--store", "ftp://x"], "--store"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No store, a memory store, a negative or unreadable max age, a URL that names no
    store: exit 2 and one line on standard error naming what is wrong."""
    monkeypatch.delenv("WEBHOOKS_EMITTER_STORE", raising=False)
    status, out, err = call(argv, capsys)
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and says in err
