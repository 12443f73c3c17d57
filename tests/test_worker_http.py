"""The worker's HTTP endpoints (``worker --http HOST:PORT``, CONTRACT section 15): ``/metrics``,
``/healthz``, ``/readyz``, 404 for anything else, and ``--http`` values, read over loopback."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultservers import closed_port

from webhooks_emitter import Config, WebhooksEmitter
from webhooks_emitter._worker_http import WorkerHTTP, parse_bind
from webhooks_emitter.exceptions import WebhooksEmitterError


def get(server: WorkerHTTP, path: str, method: str = "GET") -> tuple[int, str, str]:
    """Status, Content-Type and body of one request to ``server``."""
    host, _, port = server.url.removeprefix("http://").rpartition(":")
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
