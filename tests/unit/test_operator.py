"""The operator modules (``_settings``, ``_worker``, ``_reports``, gathered by ``_operator``):
settings, the worker loop, status and dead letters, shared by the command line and the Flask
and Django integrations (CONTRACT section 12)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from webhooks_emitter import Config, EmitterExistsError, WebhooksEmitter, signing
from webhooks_emitter import _operator as operator
from webhooks_emitter.stores import MemoryStore, Store, from_url
from webhooks_emitter.testing import ReceivedRequest, Receiver

URL = "http://127.0.0.1:9/hooks"
FLASK = "WEBHOOKS_EMITTER_{}"
BILLING = "WEBHOOKS_EMITTER_EMITTERS['billing']"
DJANGO = "WEBHOOKS_EMITTER[{!r}]"


def emitters(**fields: Any) -> dict[str, Any]:
    """EMITTERS with one emitter 'billing' of these fields over url and events."""
    return {"EMITTERS": {"billing": {"url": URL, "events": ["order.paid"], **fields}}}


def test_settings_defaults() -> None:
    """No settings at all: the memory store, no emitters, delivering, 5 s at exit."""
    settings = operator.settings_from_mapping({})
    assert settings.store == "memory:"
    assert settings.emitters == ()
    assert settings.deliver is True
    assert settings.exit_timeout == 5.0


def test_settings_make_configs() -> None:
    """Each emitter becomes a Config from its fields by name; events may be one name."""
    settings = operator.settings_from_mapping(
        {
            "STORE": "sqlite:////var/lib/app/hooks.db",
            "DELIVER": False,
            "EXIT_TIMEOUT": 2,
            "EMITTERS": {
                "billing": {
                    "url": URL,
                    "events": ["order.paid", "order.refunded"],
                    "secret": "s3cret",
                    "signature_scheme": "github",
                    "max_attempts": 7,
                    "additional_headers": {"X-Tenant": "acme"},
                    "on_delivery": "logging:debug",
                },
                "audit": {"url": URL, "events": "*"},
            },
        },
        key_format=FLASK,
    )
    assert settings.store == "sqlite:////var/lib/app/hooks.db"
    assert settings.deliver is False and settings.exit_timeout == 2.0
    billing, audit = settings.emitters
    assert billing.emitter_id == "billing"
    assert billing.events == ("order.paid", "order.refunded")
    assert billing.config == Config(
        URL,
        secret="s3cret",
        signature_scheme=signing.GITHUB,
        max_attempts=7,
        additional_headers={"X-Tenant": "acme"},
        on_delivery=logging.debug,
    )
    assert audit.events == ("*",) and audit.config == Config(URL)


BAD_SETTINGS = [
    (emitters(max_attempts=0), f"{BILLING}['max_attempts']: ", ValueError),
    (emitters(max_attempts="3"), f"{BILLING}['max_attempts']: ", TypeError),
    (emitters(retries=3), f"{BILLING}['retries']: unknown", ValueError),
    (emitters(url="ftp://x/"), f"{BILLING}['url']: ", ValueError),
    (emitters(events=[]), f"{BILLING}['events']: ", ValueError),
    (emitters(events=5), f"{BILLING}['events']: ", TypeError),
    (
        emitters(events=["ok", "bad\nname"]),
        f"{BILLING}['events'][1]: ",
        ValueError,
    ),
    (
        emitters(backoff_start=10, backoff_limit=1),
        f"{BILLING}['backoff_limit']: ",
        ValueError,
    ),
    (
        emitters(on_delivery="no_such_module_here:f"),
        f"{BILLING}['on_delivery']: ",
        ValueError,
    ),
    (
        emitters(secret="not base64!", signature_scheme="standard_webhooks"),
        f"{BILLING}['secret']: ",
        ValueError,
    ),
    (
        {"EMITTERS": {"billing": {"events": ["e"]}}},
        f"{BILLING}['url']: is required",
        ValueError,
    ),
    (
        {"EMITTERS": {"billing": {"url": URL}}},
        f"{BILLING}['events']: is required",
        ValueError,
    ),
    ({"EMITTERS": {"billing": URL}}, f"{BILLING}: ", TypeError),
    (
        {"EMITTERS": {"": {"url": URL, "events": ["e"]}}},
        "WEBHOOKS_EMITTER_EMITTERS['']: ",
        ValueError,
    ),
    ({"EMITTERS": [URL]}, "WEBHOOKS_EMITTER_EMITTERS: ", TypeError),
    ({"STORE": 5}, "WEBHOOKS_EMITTER_STORE: ", TypeError),
    ({"STORE": "redis://localhost"}, "WEBHOOKS_EMITTER_STORE: ", ValueError),
    ({"STORE": "memory:x"}, "WEBHOOKS_EMITTER_STORE: ", ValueError),
    ({"STORE": "sqlite://host/x.db"}, "WEBHOOKS_EMITTER_STORE: ", ValueError),
    ({"STORE": "sqlite:"}, "WEBHOOKS_EMITTER_STORE: ", ValueError),
    ({"STORE": "django:default"}, "WEBHOOKS_EMITTER_STORE: ", ValueError),
    ({"DELIVER": "yes"}, "WEBHOOKS_EMITTER_DELIVER: ", TypeError),
    ({"DELIVER": False}, "WEBHOOKS_EMITTER_DELIVER: False needs a durable store", ValueError),
    ({"EXIT_TIMEOUT": -1}, "WEBHOOKS_EMITTER_EXIT_TIMEOUT: ", ValueError),
    ({"EXIT_TIMEOUT": "5"}, "WEBHOOKS_EMITTER_EXIT_TIMEOUT: ", TypeError),
    ({"EXIT_TIMEOUT": True}, "WEBHOOKS_EMITTER_EXIT_TIMEOUT: ", TypeError),
    ({"EMITTER": {}}, "WEBHOOKS_EMITTER_EMITTER: unknown setting", ValueError),
]


@pytest.mark.parametrize(("values", "starts", "kind"), BAD_SETTINGS)
def test_bad_settings_name_their_key(values: dict[str, Any], starts: str, kind: type) -> None:
    """Each bad setting raises ValueError or TypeError whose message starts with the
    setting's full name, as the application wrote it."""
    with pytest.raises(kind) as raised:
        operator.settings_from_mapping(values, key_format=FLASK)
    assert str(raised.value).startswith(starts), str(raised.value)
    assert isinstance(raised.value, operator.SettingError)
    assert str(raised.value).startswith(raised.value.key + ": ")


def test_an_emitters_fields_are_checked_together_as_config_checks_them() -> None:
    """A backoff_limit below the default backoff_start is valid beside a smaller
    backoff_start: the fields are checked together, exactly as Config checks them."""
    settings = operator.settings_from_mapping(
        emitters(backoff_start=0.01, backoff_limit=0.05), key_format=FLASK
    )
    [billing] = settings.emitters
    assert billing.config == Config(URL, backoff_start=0.01, backoff_limit=0.05)
    with pytest.raises(ValueError) as raised:
        operator.settings_from_mapping(emitters(backoff_limit=0.05), key_format=FLASK)
    assert str(raised.value).startswith(f"{BILLING}['backoff_limit']: ")


@pytest.mark.parametrize(
    ("values", "key", "meant"),
    [
        ({"EMITTERS": {"billing": {"url": URL, "event": ["e"]}}}, f"{BILLING}['event']", "events"),
        (emitters(secert="s3cret"), f"{BILLING}['secert']", "secret"),
        (emitters(max_attempt=2), f"{BILLING}['max_attempt']", "max_attempts"),
        ({"EMITERS": {}}, "WEBHOOKS_EMITTER_EMITERS", "WEBHOOKS_EMITTER_EMITTERS"),
    ],
)
def test_an_unknown_key_is_named_with_the_closest_known_one(
    values: dict[str, Any], key: str, meant: str
) -> None:
    """An unknown key (``event`` for ``events``, ``secert``) is a ValueError naming the key
    as written and the closest known one."""
    errors = operator.check_settings(values, key_format=FLASK)
    assert [error.key for error in errors][:1] == [key], errors
    assert f"did you mean {meant!r}?" in str(errors[0])
    assert "s3cret" not in str(errors[0])


def test_several_bad_fields_of_one_emitter_are_each_reported() -> None:
    """Two fields bad on their own are both reported (Django's checks list them all)."""
    errors = operator.check_settings(emitters(max_attempts=0, request_timeout=-1), key_format=FLASK)
    assert sorted(error.key for error in errors) == [
        f"{BILLING}['max_attempts']",
        f"{BILLING}['request_timeout']",
    ]


def test_a_field_is_not_blamed_for_a_default_it_was_left_beside() -> None:
    """A bad backoff_start is reported; the backoff_limit given with it is not, although
    it would be below the default backoff_start that the check falls back on."""
    errors = operator.check_settings(
        emitters(backoff_start="soon", backoff_limit=0.05), key_format=FLASK
    )
    assert [error.key for error in errors] == [f"{BILLING}['backoff_start']"]


def test_the_repr_of_settings_shows_no_password() -> None:
    """Settings made from a store URL with a password show it as *** in their repr."""
    settings = operator.settings_from_mapping({"STORE": "postgresql://app:Pw3xQz@db/app"})
    assert "Pw3xQz" not in repr(settings)
    assert "postgresql://app:***@db/app" in repr(settings)


def test_bad_secret_never_in_the_message() -> None:
    """A setting error about a secret names the key, never the secret."""
    with pytest.raises(ValueError) as raised:
        operator.settings_from_mapping(
            emitters(secret="hunter2-not-base64!", signature_scheme="standard_webhooks")
        )
    assert "hunter2" not in str(raised.value)


def test_check_settings_reports_every_problem() -> None:
    """check_settings lists every bad key (Django's checks show them all), in Django's
    naming when asked."""
    errors = operator.check_settings(
        {
            "STORE": 5,
            "EXIT_TIMEOUT": -2,
            "EMITTERS": {"a": {"url": URL, "events": ["e"], "max_attempts": 0}, "b": {}},
        },
        key_format=DJANGO,
    )
    assert sorted(e.key for e in errors) == [
        "WEBHOOKS_EMITTER['EMITTERS']['a']['max_attempts']",
        "WEBHOOKS_EMITTER['EMITTERS']['b']['events']",
        "WEBHOOKS_EMITTER['EMITTERS']['b']['url']",
        "WEBHOOKS_EMITTER['EXIT_TIMEOUT']",
        "WEBHOOKS_EMITTER['STORE']",
    ]
    assert operator.check_settings(emitters()) == []


def test_extra_store_schemes() -> None:
    """A framework may accept its own store scheme (Django's django:<alias>), which is then
    taken as durable (DELIVER False is allowed with it)."""
    settings = operator.settings_from_mapping(
        {"STORE": "django:default", "DELIVER": False}, store_schemes=("django",)
    )
    assert settings.store == "django:default" and settings.deliver is False
    with pytest.raises(ValueError, match="names nothing"):
        operator.settings_from_mapping({"STORE": "django:"}, store_schemes=("django",))


def test_a_store_object_is_taken_as_it_is() -> None:
    """STORE may be a store object: make_instance uses it."""
    store = MemoryStore()
    settings = operator.settings_from_mapping({"STORE": store, **emitters()})
    instance = settings.make_instance()
    try:
        assert instance.store is store
        assert instance.list_emitters() == ["billing"]
    finally:
        instance.shutdown(1)


def test_attach_all_is_all_or_nothing(hub: WebhooksEmitter) -> None:
    """attach_all attaches every emitter, or, when one fails, detaches those it attached."""
    settings = operator.settings_from_mapping(
        {"EMITTERS": {"a": {"url": URL, "events": ["e"]}, "b": {"url": URL, "events": ["*"]}}}
    )
    assert operator.attach_all(hub, settings.emitters) == ["a", "b"]
    assert sorted(hub.list_emitters()) == ["a", "b"]
    hub.detach("a")
    with pytest.raises(EmitterExistsError):
        operator.attach_all(hub, settings.emitters)
    assert hub.list_emitters() == ["b"]


def test_load_callable() -> None:
    """load_callable imports module:function and names the argument in its errors."""
    assert operator.load_callable("logging:debug") is logging.debug
    assert operator.load_callable("os:path.join") is os.path.join
    for spec, match in [
        ("logging.debug", "must be 'module:function'"),
        ("no_such_module_x:f", "cannot import"),
        ("os:no_such_name", "has no"),
    ]:
        with pytest.raises(ValueError, match=match) as raised:
            operator.load_callable(spec)
        assert "--setup" in str(raised.value)
    with pytest.raises(TypeError, match="not callable"):
        operator.load_callable("os:sep", "on_delivery")


def test_require_durable() -> None:
    """Operator commands refuse the memory store: it holds only one process's events."""
    with pytest.raises(ValueError, match="status needs a durable store"):
        operator.require_durable(MemoryStore(), "status")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The URL of an SQLite store file in a fresh directory."""
    return f"sqlite:///{tmp_path / 'hooks.db'}"


def test_status_and_dead_letters(sqlite_url: str, fast: Callable[..., Config]) -> None:
    """status() shows per emitter id what is queued and failed, whether it is paused, the
    age of its oldest queued event and the lease holder; failed_json and replay_failed act
    on another process's dead letters."""
    gate = threading.Event()
    given_up = threading.Semaphore(0)

    def answer(request: ReceivedRequest) -> int:
        if request.json().get("slow"):
            gate.wait(10)
        return 500 if request.json().get("fail") else 204

    with Receiver(responder=answer) as receiver:
        instance = WebhooksEmitter(store=sqlite_url)
        try:
            instance.attach(
                "fails",
                "e",
                fast(receiver.url, max_attempts=2, on_delivery=lambda r: given_up.release()),
            )
            instance.attach("paused", "e", fast(receiver.url))
            instance.attach("busy", "slow", fast(receiver.url))
            instance.pause("paused")
            first = instance.emit("e", {"fail": True, "n": 1}, to="fails")
            instance.emit("e", {"fail": True, "n": 2}, to="fails")
            instance.emit("e", {"n": 3}, to="paused")
            instance.emit("slow", {"slow": True})
            receiver.wait_for(1, where=lambda r: r.json().get("slow"))
            assert given_up.acquire(timeout=10) and given_up.acquire(timeout=10)

            store = from_url(sqlite_url)
            try:
                report = operator.status(store)
                failed = operator.list_failed(store, "fails")
            finally:
                store.close()
            assert set(report) == {"busy", "fails", "paused"}
            assert report["paused"]["paused"] is True and report["paused"]["queued"] == 1
            assert report["paused"]["oldest_queued_age"] >= 0
            assert report["fails"]["failed"] == 2 and report["fails"]["queued"] == 0
            assert report["fails"]["oldest_queued_age"] is None
            assert report["busy"]["queued"] == 1
            assert report["busy"]["lease_holder"] == instance.lease.holder
            text = operator.format_status(report)
            assert "paused" in text and "fails" in text and instance.lease.holder in text
            json.dumps(report)

            rows = operator.failed_json(failed)
            assert [row["request_id"] for row in rows] == [first, failed[1].request_id]
            assert set(rows[0]) == {
                "emitter_id", "event", "request_id", "attempts", "status_code", "error",
                "failed_at", "body",
            }
            assert rows[0]["attempts"] == 2 and rows[0]["status_code"] == 500
            assert json.loads(rows[0]["body"]) == {"fail": True, "n": 1}
            assert rows[0]["failed_at"].endswith("+00:00")
            assert first in operator.format_failed(failed)

            receiver.responder = lambda request: 204
            gate.set()
            store = from_url(sqlite_url)
            try:
                assert operator.replay_failed(store, "fails", [first]) == 1
            finally:
                store.close()
            delivered = receiver.wait_for(
                1, where=lambda r: r.delivery_id == first and r.try_number == 3
            )
            assert delivered[0].json() == {"fail": True, "n": 1}
        finally:
            gate.set()
            instance.shutdown(2)


def test_status_of_an_empty_store() -> None:
    """A store with nothing in it: an empty report, and a table that says so."""
    assert operator.status(MemoryStore()) == {}
    assert operator.format_status({}) == "no emitters in the store"
    assert operator.format_failed([]) == "no failed events"


def test_run_worker_until_stop(
    sqlite_url: str, receiver: Receiver, fast: Callable[..., Config]
) -> None:
    """run_worker delivers what web processes (deliver=False) stored until stop is set,
    then shuts its instance down and returns 0."""
    settings = operator.settings_from_mapping(
        {"STORE": sqlite_url, "EMITTERS": {"w": {"url": receiver.url, "events": ["*"],
                                                 "backoff_start": 0.001}}}
    )
    web = settings.make_instance(deliver=False)
    worker = settings.make_instance(deliver=True)
    stop = threading.Event()
    ready = threading.Event()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(
            operator.run_worker(worker, 2.0, stop=stop, ready=ready.set)
        )
    )
    thread.start()
    try:
        assert ready.wait(10)
        request_id = web.emit("anything", {"a": 1})
        [hook] = receiver.wait_for(1)
        assert hook.delivery_id == request_id
    finally:
        stop.set()
        thread.join(10)
        web.shutdown(1)
    assert result == [0]
    assert worker.list_emitters() == []


def test_run_worker_refusals(hub: WebhooksEmitter, sqlite_url: str) -> None:
    """run_worker needs a delivering instance, and stop= outside the main thread."""
    web = WebhooksEmitter(store=sqlite_url, deliver=False)
    with pytest.raises(ValueError, match="deliver"):
        operator.run_worker(web, 1.0)
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            operator.run_worker(hub, 1.0)
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(10)
    assert len(errors) == 1 and "main thread" in str(errors[0])


WORKER_CHILD = textwrap.dedent(
    """
    import sys
    from webhooks_emitter import _operator as operator

    settings = operator.settings_from_mapping({
        "STORE": sys.argv[1],
        "EMITTERS": {"w": {"url": sys.argv[2], "events": ["*"], "backoff_start": 0.001}},
    })
    instance = settings.make_instance()
    for number in range(5):
        instance.emit("tick", {"n": number})

    def ready():
        print("ready", flush=True)

    status = operator.run_worker(instance, 10.0, ready=ready)
    print("stopped", status, flush=True)
    sys.exit(status)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_worker_stops_on_a_signal(sqlite_url: str, signum: int) -> None:
    """In a worker process SIGTERM or SIGINT ends the loop; the shutdown delivers what
    was still queued (here held up by a slow receiver) and the process exits 0."""
    gate = threading.Event()
    with Receiver(responder=lambda request: (gate.wait(10), 204)[1]) as receiver:
        child = subprocess.Popen(
            [sys.executable, "-c", WORKER_CHILD, sqlite_url, receiver.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            receiver.wait_for(1)
            child.send_signal(signum)
            gate.set()
            out, err = child.communicate(timeout=30)
        finally:
            gate.set()
            if child.poll() is None:
                child.kill()
                child.communicate()
        assert child.returncode == 0, err
        assert out.strip() == "stopped 0"
        assert sorted(r.json()["n"] for r in receiver.requests if r.try_number == 1) == list(
            range(5)
        )


def test_status_store_is_any_store() -> None:
    """status() takes any Store: the memory store of this process too."""
    store: Store = MemoryStore()
    store.register("x")
    assert operator.status(store) == {
        "x": {
            "queued": 0,
            "failed": 0,
            "paused": False,
            "oldest_queued_age": None,
            "lease_holder": None,
        }
    }
