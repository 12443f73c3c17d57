"""The worker's HTTP endpoints (``worker --http HOST:PORT``, CONTRACT section 15): ``/metrics``,
``/healthz``, ``/readyz``, 404 for anything else, and ``--http`` values, read over loopback."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Union

import pytest
from child_output import Lines
from faultservers import closed_port

from webhooks_emitter import Config, WebhooksEmitter
from webhooks_emitter._worker_http import WorkerHTTP, parse_bind
from webhooks_emitter.exceptions import WebhooksEmitterError
from webhooks_emitter.testing import Receiver


def get(server: Union[WorkerHTTP, str], path: str, method: str = "GET") -> tuple[int, str, str]:
    """Status, Content-Type and body of one request to ``server`` (or its URL)."""
    url = server if isinstance(server, str) else server.url
    host, _, port = url.removeprefix("http://").rpartition(":")
    connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=10)
    try:
        connection.request(method, path)
        answer = connection.getresponse()
        return answer.status, answer.getheader("Content-Type") or "", answer.read().decode()
    finally:
        connection.close()


@pytest.fixture
def served(hub: WebhooksEmitter) -> Iterator[WorkerHTTP]:
    """The test's hub served on 127.0.0.1, a port the system chose."""
    server = WorkerHTTP(hub, "127.0.0.1", 0).start()
    yield server
    server.close()


@pytest.mark.parametrize(
    "value, expected",
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:9100", ("::1", 9100)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_a_bind_value_is_host_and_port(value: str, expected: tuple[str, int]) -> None:
    """HOST:PORT, with an IPv6 address in brackets."""
    assert parse_bind(value) == expected


@pytest.mark.parametrize(
    "value",
    ["9100", ":9100", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:65536", "::1:9100", "[nope]:1"],
)
def test_a_bad_bind_value_is_a_value_error_naming_http(value: str) -> None:
    """No host, no port, a port out of range, an unbracketed IPv6 address: ``--http`` is
    named, and so is what was given."""
    with pytest.raises(ValueError, match="--http"):
        parse_bind(value)


def test_metrics_are_this_instances_in_prometheus_text_format(
    hub: WebhooksEmitter, served: WorkerHTTP
) -> None:
    """``/metrics`` answers 200 in the text format, with the queued events of the paused
    emitter attached to the instance."""
    hub.attach("billing", "order.paid", Config("http://127.0.0.1:9/hooks"))
    hub.pause("billing")
    hub.emit("order.paid", {})
    status, content_type, body = get(served, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert 'webhooks_emitter_queued{emitter="billing"} 1.0' in body
    assert 'webhooks_emitter_paused{emitter="billing"} 1.0' in body
    assert "# TYPE webhooks_emitter_deliveries_total counter" in body


def test_metrics_of_two_workers_in_one_process_are_their_own(hub: WebhooksEmitter) -> None:
    """Each server reads its own instance on its own registry."""
    other = WebhooksEmitter()
    first = WorkerHTTP(hub, "127.0.0.1", 0).start()
    second = WorkerHTTP(other, "127.0.0.1", 0).start()
    try:
        hub.attach("mine", "a", Config("http://127.0.0.1:9/hooks"))
        other.attach("theirs", "a", Config("http://127.0.0.1:9/hooks"))
        assert 'emitter="mine"' in get(first, "/metrics")[2]
        assert 'emitter="theirs"' not in get(first, "/metrics")[2]
        assert 'emitter="theirs"' in get(second, "/metrics")[2]
    finally:
        first.close()
        second.close()
        other.shutdown(0)


def test_healthz_is_200_while_delivering_and_503_once_stopping(served: WorkerHTTP) -> None:
    """``stopping()`` turns ``/healthz`` to 503 while the server still answers."""
    assert get(served, "/healthz")[0] == 200
    served.stopping()
    assert get(served, "/healthz")[0] == 503
    assert get(served, "/metrics")[0] == 200


def test_readyz_is_200_when_healthy(served: WorkerHTTP) -> None:
    """A memory store answers at once: ready."""
    status, _, body = get(served, "/readyz")
    assert (status, body) == (200, "ok\n")


def test_readyz_is_503_with_the_problems_when_the_store_is_unreachable() -> None:
    """A PostgreSQL store on a port that refuses connections: 503, the problem as text,
    never the password."""
    with closed_port() as port:
        hub = WebhooksEmitter(store=f"postgresql://app:s3cret-pw@127.0.0.1:{port}/app")
        server = WorkerHTTP(hub, "127.0.0.1", 0).start()
        try:
            status, _, body = get(server, "/readyz")
        finally:
            server.close()
            hub.shutdown(0)
    assert status == 503
    assert body.startswith("store unreachable: ") and "s3cret-pw" not in body


@pytest.mark.parametrize("path", ["/", "/metrics/x", "/healthz.json", "/admin"])
def test_anything_else_is_404(served: WorkerHTTP, path: str) -> None:
    """Only the three paths are served."""
    assert get(served, path)[0] == 404


def test_a_post_is_not_served(served: WorkerHTTP) -> None:
    """Other methods are refused too (the standard library answers 501)."""
    assert get(served, "/metrics", method="POST")[0] == 501


def test_url_names_the_real_port_and_close_stops_listening(hub: WebhooksEmitter) -> None:
    """Port 0 asks the system for one: ``url`` names it; after ``close`` it refuses
    connections, and a second ``close`` is harmless."""
    server = WorkerHTTP(hub, "127.0.0.1", 0).start()
    url = server.url
    port = int(url.rpartition(":")[2])
    assert url == f"http://127.0.0.1:{port}" and port > 0
    server.close()
    server.close()
    with pytest.raises(ConnectionRefusedError):
        get(server, "/healthz")


def test_a_port_in_use_is_a_one_line_error(hub: WebhooksEmitter, served: WorkerHTTP) -> None:
    """A second server on a port that is taken raises WebhooksEmitterError saying where."""
    port = int(served.url.rpartition(":")[2])
    with pytest.raises(WebhooksEmitterError, match=f"--http 127.0.0.1:{port}: cannot listen there"):
        WorkerHTTP(hub, "127.0.0.1", port).start()


WITHOUT_PROMETHEUS = """
import sys
sys.modules["prometheus_client"] = None  # as if it were not installed
from webhooks_emitter import WebhooksEmitter
from webhooks_emitter._worker_http import WorkerHTTP
from webhooks_emitter.exceptions import WebhooksEmitterError
try:
    WorkerHTTP(WebhooksEmitter(), "127.0.0.1", 0).start()
except WebhooksEmitterError as exc:
    print(exc)
"""


def test_without_prometheus_client_start_refuses_saying_so(tmp_path: Path) -> None:
    """In a process where prometheus_client cannot be imported, ``start`` raises one line
    that says what to install."""
    child = subprocess.run(
        [sys.executable, "-c", WITHOUT_PROMETHEUS],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
        cwd=tmp_path,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout == (
        "--http needs prometheus_client for /metrics: pip install 'webhooks_emitter[prometheus]'\n"
    )


ROOT = Path(__file__).resolve().parents[2]


def test_the_cli_worker_serves_its_deliveries_and_stops_serving_at_sigterm(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Engine, defects (``worker --http``). A worker over an SQLite file with ``--http
    127.0.0.1:0`` names its address; an event emitted by a web process is delivered and
    shows in ``/metrics``; ``/healthz`` and ``/readyz`` answer 200; after SIGTERM the worker
    exits 0 and the port refuses connections."""
    url = f"sqlite:///{tmp_path / 'hooks.db'}"
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "WEBHOOKS_EMITTER_STORE" and not key.lower().endswith("_proxy")
    }
    env.update(CLI_SETUP_URL=receiver.url, CLI_SETUP_EMITTER="orders")
    worker = subprocess.Popen(
        [
            sys.executable, "-m", "webhooks_emitter", "worker", "--store", url,
            "--setup", "tests/support/scripts/cli_setup.py:setup", "--http", "127.0.0.1:0",
        ],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        out = Lines(worker.stdout)  # type: ignore[arg-type]
        line = out.next()
        while "serving /metrics" not in line:
            line = out.next()
        server = line.rpartition(" at ")[2]
        assert server.startswith("http://127.0.0.1:")
        web = WebhooksEmitter(store=url, deliver=False)
        try:
            web.attach("orders", "*", Config(receiver.url))
            web.emit("order.paid", {"order": 1})
        finally:
            web.shutdown(0)
        receiver.wait_for(1)
        deadline = time.monotonic() + 20
        while True:
            body = get(server, "/metrics")[2]
            if (
                'webhooks_emitter_deliveries_total{emitter="orders",outcome="delivered"} 1.0'
                in body
            ):
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.01)
        assert get(server, "/healthz")[0] == 200
        assert get(server, "/readyz")[0] == 200
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        with pytest.raises(ConnectionRefusedError):
            get(server, "/healthz")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
