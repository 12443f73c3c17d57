"""webhooks_emitter.contrib.flask: the extension, its commands and the receiver decorator,
with Flask's test client, the ``flask`` command and a real gunicorn (CONTRACT section 12)."""

from __future__ import annotations

import http.client
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
from typing import Any

import pytest
from flask import Flask, current_app, request

from webhooks_emitter import WebhooksEmitter, signing
from webhooks_emitter.contrib.flask import Webhooks, get_instance, verify_webhook
from webhooks_emitter.testing import ReceivedRequest, Receiver, capture

SCRIPTS = Path(__file__).resolve().parents[1] / "support" / "scripts"
UNUSED_URL = "http://127.0.0.1:9/hooks"  # never reached: the tests capture or fail first


def make_app(webhooks: Webhooks, **config: Any) -> Flask:
    """An app with these WEBHOOKS_EMITTER_* settings (and others) and a view that emits."""
    app = Flask("test_flask_app")
    app.config.update(config)
    webhooks.init_app(app)

    @app.post("/orders")
    def create_order() -> dict[str, Any]:
        return {"request_id": webhooks.emit("order.created", request.get_json())}

    return app


@pytest.fixture
def apps() -> Iterator[list[Flask]]:
    """Apps made by a test; their instances are shut down after it."""
    made: list[Flask] = []
    yield made
    for app in made:
        instance = app.extensions.get("webhooks_emitter")
        if instance is not None:
            instance.shutdown(2)


def emitter(url: str, **fields: Any) -> dict[str, Any]:
    """One emitter's settings: every event, millisecond backoffs, signed."""
    return {"url": url, "events": ["*"], "secret": "supersecret", "backoff_start": 0.001, **fields}


def test_emit_from_a_view_reaches_the_receiver(apps: list[Flask]) -> None:
    """A view calling Webhooks.emit on the current app delivers a signed webhook."""
    webhooks = Webhooks()
    with Receiver(secret="supersecret") as receiver:
        app = make_app(
            webhooks, WEBHOOKS_EMITTER_EMITTERS={"billing": emitter(receiver.url)}
        )
        apps.append(app)
        answer = app.test_client().post("/orders", json={"order": 7})
        assert answer.status_code == 200
        [hook] = receiver.wait_for(1)
    assert hook.delivery_id == answer.get_json()["request_id"]
    assert hook.event == "order.created" and hook.json() == {"order": 7}
    assert hook.signature_valid


def test_app_factory_gives_each_app_its_own_instance(apps: list[Flask]) -> None:
    """One Webhooks object serves several apps (application factories): each app gets its
    own WebhooksEmitter in app.extensions, and the extension object keeps nothing of any."""
    webhooks = Webhooks()
    with Receiver() as first, Receiver() as second:
        one = make_app(webhooks, WEBHOOKS_EMITTER_EMITTERS={"a": emitter(first.url)})
        two = make_app(webhooks, WEBHOOKS_EMITTER_EMITTERS={"a": emitter(second.url)})
        apps.extend([one, two])
        assert vars(webhooks) == {}
        assert isinstance(one.extensions["webhooks_emitter"], WebhooksEmitter)
        assert one.extensions["webhooks_emitter"] is not two.extensions["webhooks_emitter"]
        assert get_instance(one) is one.extensions["webhooks_emitter"]
        two.test_client().post("/orders", json={"app": 2})
        one.test_client().post("/orders", json={"app": 1})
        assert [r.json() for r in first.wait_for(1)] == [{"app": 1}]
        assert [r.json() for r in second.wait_for(1)] == [{"app": 2}]
        with one.app_context():
            assert webhooks.instance is one.extensions["webhooks_emitter"]


def test_settings_defaults(apps: list[Flask]) -> None:
    """Without settings: the memory store, no emitters, delivering, 5 s at exit."""
    app = make_app(Webhooks())
    apps.append(app)
    instance = get_instance(app)
    assert not instance.store.durable
    assert instance.list_emitters() == []
    assert instance.delivers and instance.exit_timeout == 5.0


def test_settings_are_applied(apps: list[Flask], tmp_path: Path) -> None:
    """STORE, DELIVER, EXIT_TIMEOUT and every Config field of an emitter are applied."""
    app = make_app(
        Webhooks(),
        WEBHOOKS_EMITTER_STORE=f"sqlite:///{tmp_path / 'hooks.db'}",
        WEBHOOKS_EMITTER_DELIVER=False,
        WEBHOOKS_EMITTER_EXIT_TIMEOUT=1.5,
        WEBHOOKS_EMITTER_EMITTERS={
            "billing": {"url": "http://127.0.0.1:9/x", "events": "order.paid", "max_attempts": 9}
        },
    )
    apps.append(app)
    instance = get_instance(app)
    assert instance.store.durable and not instance.delivers
    assert instance.exit_timeout == 1.5
    assert instance.list_emitters() == ["billing"]


@pytest.mark.parametrize(
    ("config", "starts", "kind"),
    [
        (
            {"WEBHOOKS_EMITTER_EMITTERS": {"billing": emitter(UNUSED_URL, max_attempts=0)}},
            "WEBHOOKS_EMITTER_EMITTERS['billing']['max_attempts']: ",
            ValueError,
        ),
        (
            {"WEBHOOKS_EMITTER_EMITTERS": {"billing": {"url": UNUSED_URL}}},
            "WEBHOOKS_EMITTER_EMITTERS['billing']['events']: ",
            ValueError,
        ),
        ({"WEBHOOKS_EMITTER_STORE": "mysql://x"}, "WEBHOOKS_EMITTER_STORE: ", ValueError),
        ({"WEBHOOKS_EMITTER_DELIVER": "no"}, "WEBHOOKS_EMITTER_DELIVER: ", TypeError),
        ({"WEBHOOKS_EMITTER_DELIVER": False}, "WEBHOOKS_EMITTER_DELIVER: ", ValueError),
        ({"WEBHOOKS_EMITTER_EXIT_TIMEOUT": -1}, "WEBHOOKS_EMITTER_EXIT_TIMEOUT: ", ValueError),
        ({"WEBHOOKS_EMITTER_EMITERS": {}}, "WEBHOOKS_EMITTER_EMITERS: unknown", ValueError),
        (
            {"WEBHOOKS_EMITTER_EMITTERS": {"billing": {"url": UNUSED_URL, "event": ["*"]}}},
            "WEBHOOKS_EMITTER_EMITTERS['billing']['event']: unknown key 'event' (did you "
            "mean 'events'?)",
            ValueError,
        ),
        (
            {"WEBHOOKS_EMITTER_EMITTERS": {"billing": emitter(UNUSED_URL, secert="x")}},
            "WEBHOOKS_EMITTER_EMITTERS['billing']['secert']: unknown key 'secert' (did you "
            "mean 'secret'?)",
            ValueError,
        ),
        (
            {"WEBHOOKS_EMITTER_STORE": "postgresql://app:Pw9zz@[::1:5432/db"},
            "WEBHOOKS_EMITTER_STORE: ",
            ValueError,
        ),
    ],
)
def test_bad_settings_fail_init_app(config: dict[str, Any], starts: str, kind: type) -> None:
    """A bad setting raises ValueError or TypeError at init_app, naming the key; the app is
    left without an instance."""
    app = Flask("bad_settings")
    app.config.update(config)
    with pytest.raises(kind) as raised:
        Webhooks(app)
    assert str(raised.value).startswith(starts), str(raised.value)
    assert "Pw9zz" not in str(raised.value)
    assert "webhooks_emitter" not in app.extensions


def test_fast_backoff_settings_are_valid_together(apps: list[Flask]) -> None:
    """{"backoff_start": 0.01, "backoff_limit": 0.05} is a valid emitter: its fields are
    checked together, as Config checks them, not each against the defaults."""
    app = make_app(
        Webhooks(),
        WEBHOOKS_EMITTER_EMITTERS={
            "billing": {"url": UNUSED_URL, "events": ["*"], "backoff_start": 0.01,
                        "backoff_limit": 0.05}
        },
    )
    apps.append(app)
    assert get_instance(app).list_emitters() == ["billing"]


def test_init_app_twice_is_refused(apps: list[Flask]) -> None:
    """Setting up one app twice is a mistake: RuntimeError, the first instance kept."""
    webhooks = Webhooks()
    app = make_app(webhooks)
    apps.append(app)
    first = get_instance(app)
    with pytest.raises(RuntimeError, match="already set up"):
        webhooks.init_app(app)
    assert get_instance(app) is first


def test_emit_needs_an_app_that_was_set_up() -> None:
    """Webhooks.emit outside an app context, or in an app not set up, raises RuntimeError."""
    webhooks = Webhooks()
    with pytest.raises(RuntimeError):
        webhooks.emit("e", {})
    with Flask("not_set_up").app_context():
        with pytest.raises(RuntimeError, match="not set up"):
            webhooks.emit("e", {})


def test_capture_an_apps_instance(apps: list[Flask]) -> None:
    """Users test their views with capture() on the app's instance: nothing is sent."""
    webhooks = Webhooks()
    app = make_app(
        webhooks, WEBHOOKS_EMITTER_EMITTERS={"billing": emitter("https://billing.example/in")}
    )
    apps.append(app)
    with capture(get_instance(app)) as hooks:
        app.test_client().post("/orders", json={"order": 1})
        with app.app_context():
            assert webhooks.flush(5)
    [hook] = hooks.requests
    assert hook.json() == {"order": 1} and hook.header("Host") == "billing.example"


# -- verify_webhook -------------------------------------------------------------------------


def receiver_app(**options: Any) -> tuple[Flask, list[bytes]]:
    """An app whose /hooks view is guarded by verify_webhook(**options); the bodies it saw."""
    app = Flask("receiver_app")
    app.config["HOOKS_SECRET"] = "supersecret"
    seen: list[bytes] = []

    @app.post("/hooks")
    @verify_webhook(**options)
    def hooks() -> tuple[str, int]:
        seen.append(request.get_data())
        return "", 204

    return app, seen


def signed(
    body: bytes, scheme: signing.Scheme = signing.WEBHOOKS_EMITTER, **kw: Any
) -> dict[str, str]:
    """Headers signing ``body`` with 'supersecret' (or kw's secret)."""
    secret = kw.pop("secret", "supersecret")
    headers = scheme.sign(body, secret, delivery_id="d-1", timestamp=kw.pop("timestamp", 0))
    return {"X-Webhooks-Event": "e", "X-Webhooks-Delivery": "d-1", **headers}


def test_verify_webhook_lets_a_signed_request_through() -> None:
    """A request signed with the secret reaches the view, with its body intact."""
    app, seen = receiver_app(secret="supersecret")
    body = b'{"order":1}'
    answer = app.test_client().post("/hooks", data=body, headers=signed(body))
    assert answer.status_code == 204
    assert seen == [body]


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"order":2}', signed(b'{"order":1}')),  # body changed after signing
        (b'{"order":1}', signed(b'{"order":1}', secret="another")),
        (b'{"order":1}', {"X-Webhooks-Event": "e"}),  # not signed at all
        (b'{"order":1}', {"X-Webhooks-Signature": "sha256:garbage"}),
    ],
    ids=["tampered", "wrong-secret", "unsigned", "malformed"],
)
def test_verify_webhook_answers_401_without_calling_the_view(
    body: bytes, headers: dict[str, str]
) -> None:
    """A request whose signature does not hold gets 401 and the view never runs."""
    app, seen = receiver_app(secret="supersecret")
    answer = app.test_client().post("/hooks", data=body, headers=headers)
    assert answer.status_code == 401
    assert b"invalid webhook signature" in answer.data
    assert seen == []


def test_verify_webhook_secret_from_the_config() -> None:
    """The secret may be a callable, read at each request (e.g. from app.config)."""
    app, seen = receiver_app(secret=lambda: current_app.config["HOOKS_SECRET"])
    body = b"{}"
    assert app.test_client().post("/hooks", data=body, headers=signed(body)).status_code == 204
    app.config["HOOKS_SECRET"] = "rotated"
    assert app.test_client().post("/hooks", data=body, headers=signed(body)).status_code == 401
    assert seen == [body]


def test_verify_webhook_standard_webhooks_tolerance() -> None:
    """With a timestamped scheme, a timestamp further than ``tolerance`` is refused."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    app, seen = receiver_app(secret=secret, scheme="standard_webhooks", tolerance=60)
    body = b'{"a":1}'
    client = app.test_client()
    now = int(time.time())
    fresh = signed(body, signing.STANDARD_WEBHOOKS, secret=secret, timestamp=now)
    stale = signed(body, signing.STANDARD_WEBHOOKS, secret=secret, timestamp=now - 600)
    assert client.post("/hooks", data=body, headers=fresh).status_code == 204
    assert client.post("/hooks", data=body, headers=stale).status_code == 401
    assert seen == [body]


def test_verify_webhook_async_view() -> None:
    """An async view is guarded the same way."""
    app = Flask("async_receiver")
    calls: list[bytes] = []

    @app.post("/hooks")
    @verify_webhook("supersecret")
    async def hooks() -> tuple[str, int]:
        calls.append(request.get_data())
        return "", 204

    client = app.test_client()
    assert client.post("/hooks", data=b"{}", headers=signed(b"{}")).status_code == 204
    assert client.post("/hooks", data=b"{}", headers={}).status_code == 401
    assert calls == [b"{}"]


def test_verify_webhook_checks_its_arguments() -> None:
    """A bad secret or scheme is found when the view is decorated, not at a request."""
    with pytest.raises(ValueError):
        verify_webhook("")
    with pytest.raises(ValueError, match="unknown"):
        verify_webhook("s", scheme="md5")
    with pytest.raises(ValueError):
        verify_webhook("not-base64!", scheme=signing.STANDARD_WEBHOOKS)


def test_end_to_end_receiver_and_emitter(apps: list[Flask]) -> None:
    """A webhook emitted by the library passes verify_webhook in a real server: the
    receiving Flask app runs under werkzeug on 127.0.0.1."""
    from werkzeug.serving import make_server

    app, seen = receiver_app(secret="supersecret")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hooks"
        results: list[Any] = []
        sender = make_app(
            Webhooks(),
            WEBHOOKS_EMITTER_EMITTERS={
                "good": emitter(url, on_delivery=results.append),
                "bad": emitter(url, secret="wrong", max_attempts=1, on_delivery=results.append),
            },
        )
        apps.append(sender)
        sender.test_client().post("/orders", json={"order": 9})
        assert get_instance(sender).flush(10)
    finally:
        server.shutdown()
        thread.join(10)
    assert sorted((r.emitter_id, r.status_code) for r in results) == [("bad", 401), ("good", 204)]
    assert [json.loads(b) for b in seen] == [{"order": 9}]


# -- flask webhooks ... ----------------------------------------------------------------------


def cli_app(store: str, receiver_url: str = "http://127.0.0.1:9/x", **fields: Any) -> Flask:
    """An app over ``store`` with one emitter 'billing', for the commands."""
    app = Flask("cli_app")
    app.config.update(
        WEBHOOKS_EMITTER_STORE=store,
        WEBHOOKS_EMITTER_EMITTERS={"billing": emitter(receiver_url, **fields)},
    )
    Webhooks(app)
    return app


def test_commands_need_a_durable_store(apps: list[Flask]) -> None:
    """status, failed, replay and worker on the memory store are bad usage: exit 2."""
    app = cli_app("memory:")
    apps.append(app)
    runner = app.test_cli_runner()
    for args in (["status"], ["failed", "billing"], ["replay", "billing"], ["worker"]):
        result = runner.invoke(args=["webhooks", *args])
        assert result.exit_code == 2, (args, result.output)
        assert "durable store" in result.output


def test_status_failed_and_replay_commands(apps: list[Flask], tmp_path: Path) -> None:
    """flask webhooks status/failed/replay read and act on the app's store: JSON that
    scripts can parse, failed events listed, replayed ones delivered."""
    answers = {"status": 500}
    with Receiver(responder=lambda request: answers["status"]) as receiver:
        app = cli_app(f"sqlite:///{tmp_path / 'hooks.db'}", receiver.url, max_attempts=1)
        apps.append(app)
        instance = get_instance(app)
        runner = app.test_cli_runner()
        first = instance.emit("order.paid", {"n": 1})
        second = instance.emit("order.paid", {"n": 2})
        assert instance.flush(10)

        result = runner.invoke(args=["webhooks", "status", "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["billing"]["failed"] == 2 and report["billing"]["queued"] == 0
        assert set(report["billing"]) == {
            "queued", "failed", "paused", "oldest_queued_age", "lease_holder"
        }
        table = runner.invoke(args=["webhooks", "status"])
        assert table.exit_code == 0 and "billing" in table.output

        result = runner.invoke(args=["webhooks", "failed", "billing", "--json"])
        assert result.exit_code == 0, result.output
        rows = json.loads(result.output)
        assert [row["request_id"] for row in rows] == [first, second]
        assert rows[0]["status_code"] == 500 and json.loads(rows[0]["body"]) == {"n": 1}
        listed = runner.invoke(args=["webhooks", "failed", "billing"])
        assert first in listed.output

        answers["status"] = 204
        result = runner.invoke(args=["webhooks", "replay", "billing", second])
        assert (result.exit_code, result.output.strip()) == (0, "1")
        assert instance.flush(10)
        assert receiver.wait_for(1, where=lambda r: r.delivery_id == second and r.try_number == 2)
        result = runner.invoke(args=["webhooks", "replay", "billing"])
        assert (result.exit_code, result.output.strip()) == (0, "1")


def start_process(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """A child in tests/scripts with ``env`` added to this environment."""
    return subprocess.Popen(
        args,
        cwd=SCRIPTS,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_process(process: subprocess.Popen[str]) -> None:
    """Make sure a child is gone."""
    if process.poll() is None:
        process.kill()
    process.communicate()


def test_worker_command_delivers_what_web_processes_stored(
    apps: list[Flask], tmp_path: Path
) -> None:
    """`flask webhooks worker` delivers what a DELIVER=False app stored (whatever DELIVER
    says in the worker's own settings), stops on SIGTERM and exits 0."""
    store = f"sqlite:///{tmp_path / 'hooks.db'}"
    with Receiver(secret="supersecret") as receiver:
        env = {"HOOKS_RECEIVER_URL": receiver.url, "HOOKS_STORE": store, "HOOKS_DELIVER": "0"}
        worker = start_process(
            [sys.executable, "-m", "flask", "--app", "flask_app:create_app", "webhooks", "worker"],
            env,
        )
        try:
            assert worker.stdout is not None
            line = worker.stdout.readline()
            assert "webhooks worker: delivering for 1 emitter(s)" in line, worker.stderr
            web = Flask("web")
            web.config.update(
                WEBHOOKS_EMITTER_STORE=store,
                WEBHOOKS_EMITTER_DELIVER=False,
                WEBHOOKS_EMITTER_EMITTERS={"receiver": emitter(receiver.url)},
            )
            Webhooks(web)
            apps.append(web)
            request_id = get_instance(web).emit("order.created", {"from": "web"})
            [hook] = receiver.wait_for(1)
            assert hook.delivery_id == request_id and hook.signature_valid
            worker.send_signal(signal.SIGTERM)
            out, err = worker.communicate(timeout=30)
        finally:
            stop_process(worker)
    assert worker.returncode == 0, err
    assert "webhooks worker: stopped" in out


# -- gunicorn ------------------------------------------------------------------------------


class Gunicorn:
    """gunicorn serving tests/support/scripts/flask_app.py on 127.0.0.1 (a port it picks)."""

    def __init__(self, receiver_url: str, workers: int = 2) -> None:
        self.process = start_process(
            [
                sys.executable, "-m", "gunicorn",
                "--bind", "127.0.0.1:0",
                "--workers", str(workers),
                "--graceful-timeout", "30",
                "--log-level", "info",
                "flask_app:create_app()",
            ],
            {"HOOKS_RECEIVER_URL": receiver_url},
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        listening = self.wait_for_line(r"Listening at: http://127\.0\.0\.1:(\d+)")
        self.port = int(listening.group(1))
        for _ in range(workers):
            self.wait_for_line(r"Booting worker with pid", count=workers)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.lines.append("")  # the end
            self._cond.notify_all()

    def wait_for_line(self, pattern: str, count: int = 1, timeout: float = 30) -> re.Match[str]:
        """The ``count``-th line matching ``pattern`` (waits for it)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in map(re.compile(pattern).search, self.lines) if m]
                if len(found) >= count:
                    return found[count - 1]
                if self.lines and self.lines[-1] == "":
                    pytest.fail(f"gunicorn ended before {pattern!r}:\n{''.join(self.lines)}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"no {pattern!r} from gunicorn:\n{''.join(self.lines)}")
                self._cond.wait(remaining)

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST JSON to the app; its JSON answer."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            body = json.dumps(payload)
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            assert response.status == 200, response.read()
            answer: dict[str, Any] = json.loads(response.read())
            return answer
        finally:
            connection.close()

    def stop(self) -> None:
        """Make sure gunicorn is gone."""
        stop_process(self.process)
        self._reader.join(10)


def test_gunicorn_workers_emit_and_flush_on_sigterm() -> None:
    """Under gunicorn (2 workers, each with its own instance) a POST's webhook reaches the
    receiver; on SIGTERM gunicorn's graceful stop ends each worker with sys.exit, so the
    exit hook delivers what a worker still had queued behind a slow delivery, and gunicorn
    exits 0."""
    gate = threading.Event()

    def answer(request: ReceivedRequest) -> int:
        if request.json().get("slow"):
            gate.wait(30)
        return 204

    with Receiver(secret="supersecret", responder=answer) as receiver:
        server = Gunicorn(receiver.url)
        try:
            for number in range(4):
                reply = server.post("/orders", {"n": number})
                [request_id] = reply["request_ids"]
                [hook] = receiver.wait_for(1, where=lambda r, i=request_id: r.delivery_id == i)
                assert hook.json() == {"n": number, "i": 0} and hook.signature_valid

            reply = server.post("/orders", {"slow": True, "count": 3})
            queued = reply["request_ids"]
            receiver.wait_for(1, where=lambda r: r.delivery_id == queued[0])
            server.process.send_signal(signal.SIGTERM)
            server.wait_for_line(r"Handling signal: term")
            gate.set()
            server.process.wait(60)
        finally:
            gate.set()
            server.stop()
        assert server.process.returncode == 0, "".join(server.lines)
        arrived = {r.delivery_id for r in receiver.requests}
        assert set(queued) <= arrived, "".join(server.lines)


def test_importing_the_core_imports_no_framework() -> None:
    """`import webhooks_emitter` (and its stores and testing module) never imports Flask,
    Django or psycopg: the integrations are optional extras."""
    code = (
        "import sys, webhooks_emitter, webhooks_emitter.stores, webhooks_emitter.testing\n"
        "import webhooks_emitter.contrib\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('flask', 'django', 'psycopg', 'psycopg2', 'sqlalchemy', 'werkzeug', 'click'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""

