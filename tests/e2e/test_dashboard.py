"""The dashboard without a browser: its pure pages (escaping, order, messages), its
framework-free core over a real SQLite store (GET changes nothing, a purge needs the id
typed again, store errors shown without a password), the CLI's token and CSRF checks
through its WSGI application, and the ``dashboard`` command's refusals."""

from __future__ import annotations

import datetime
import io
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from webhooks_emitter import Config, WebhooksEmitter
from webhooks_emitter._dashboard import CsrfGuard, Dashboard, Page, _data, _pages
from webhooks_emitter._dashboard._server import TokenApp, parse_bind
from webhooks_emitter.cli import main
from webhooks_emitter.cli._dashboard import DEFAULT_BIND
from webhooks_emitter.stores import FailedEvent, SQLiteStore, Store
from webhooks_emitter.testing import Receiver

HOSTILE = '<b id="x">&\''
NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)


def page(**changes: Any) -> Page:
    """A page context as a mount makes it."""
    values: dict[str, Any] = dict(
        base="/ops/", where="SQLite x.db", csrf_name="csrf_token", csrf_token="t0k"
    )
    values.update(changes)
    return Page(**values)


def row(emitter_id: str, age: Optional[float], failed: int = 0, **more: Any) -> _data.EmitterRow:
    """An emitters-page row."""
    return _data.EmitterRow(
        emitter_id=emitter_id,
        queued=1 if age is not None else 0,
        failed=failed,
        paused=False,
        oldest_queued_age=age,
        lease_holder=more.pop("lease_holder", None),
        **more,
    )


# -- the pages ----------------------------------------------------------------------------------


def test_every_value_from_the_store_is_escaped() -> None:
    """Emitter id, event, delivery id, error, lease holder and body, all holding markup,
    come out as text: not one of them opens a tag."""
    failed = FailedEvent(
        emitter_id=HOSTILE,
        event=HOSTILE,
        request_id=HOSTILE,
        attempts=2,
        status_code=500,
        error=HOSTILE,
        failed_at=NOW,
        body=b'{"x":"<script>alert(1)</script>"}',
    )
    queued = _data.QueuedEvent(
        event=HOSTILE,
        request_id=HOSTILE,
        attempts=0,
        emitted_at=NOW,
        status_code=None,
        error=None,
        body=b"<img src=x onerror=alert(1)>",
    )
    detail = _data.Detail(
        row=row(HOSTILE, 3.0, 1, lease_holder=HOSTILE), failed=[failed], queued=[queued]
    )
    pages = [
        _pages.emitter_page(detail, page(message=HOSTILE)),
        _pages.emitters_page([row(HOSTILE, 3.0, lease_holder=HOSTILE)], page(where=HOSTILE)),
        _pages.problem_page(HOSTILE, HOSTILE, page()),
    ]
    for html in pages:
        assert "<b " not in html and "<script>" not in html and "<img" not in html
        assert "&lt;b id=&quot;x&quot;&gt;&amp;&#x27;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0]


def test_no_page_holds_a_script_or_an_outside_resource() -> None:
    """The pages work without JavaScript and load nothing else: no script element, no
    link to a stylesheet or an image; the stylesheet is inline."""
    detail = _data.Detail(row=row("billing", None), failed=[], queued=[])
    for html in (
        _pages.emitters_page([row("billing", None)], page()),
        _pages.emitter_page(detail, page()),
    ):
        assert "<script" not in html and "<link" not in html and "<img" not in html
        assert "<style>" in html and 'name="viewport"' in html


def test_emitters_are_listed_worst_first() -> None:
    """The oldest queued event first; emitters with nothing queued last (more failed
    events first among them, then by id)."""
    rows = [
        row("idle", None),
        row("young", 1.0),
        row("busy", None, failed=4),
        row("old", 90.0),
        row("calm", None),
    ]
    ordered = sorted(rows, key=_data._order)
    assert [r.emitter_id for r in ordered] == ["old", "young", "busy", "calm", "idle"]


def test_the_emitters_page_reloads_itself_and_the_emitter_page_does_not() -> None:
    """A ``<meta http-equiv="refresh">`` of 5 s on the emitters page only (the other holds
    a form the operator may be typing in)."""
    detail = _data.Detail(row=row("billing", None), failed=[], queued=[])
    assert '<meta http-equiv="refresh" content="5">' in _pages.emitters_page([], page())
    assert "refresh" not in _pages.emitter_page(detail, page())


def test_messages_come_only_from_fixed_texts() -> None:
    """An outcome code gives its sentence (count and id filled in); an unknown code, as a
    link might carry, gives no message at all."""
    assert _pages.message("replayed", "3", "billing") == "replayed 3 events"
    assert _pages.message("replayed", "1", "billing") == "replayed 1 event"
    assert _pages.message("purged", "2", "audit") == "purged 2 events of audit"
    assert _pages.message("replayed", "lots", "billing") == "replayed 0 events"
    assert _pages.message("Your password expired, call 555", None, "x") is None
    assert _pages.message(None, None, None) is None


def test_forms_are_posts_with_the_csrf_field() -> None:
    """Every form of the emitter page is a POST carrying the CSRF field; the purge form
    has the text field for the id typed again."""
    failed = FailedEvent("billing", "e", "r-1", 1, 500, "HTTP 500", NOW, b"{}")
    detail = _data.Detail(row=row("billing", None, 1), failed=[failed], queued=[])
    html = _pages.emitter_page(detail, page())
    forms = re.findall(r"<form [^>]*>.*?</form>", html)
    assert len(forms) == 4  # pause, replay all, purge, replay one
    for form in forms:
        assert 'method="post"' in form
        assert '<input type="hidden" name="csrf_token" value="t0k">' in form
    purge = next(f for f in forms if 'class="purge"' in f)
    assert 'name="confirm"' in purge


# -- the core over a real store -----------------------------------------------------------------


@pytest.fixture()
def store(tmp_path: Path, receiver: Receiver) -> Iterator[SQLiteStore]:
    """An SQLite store with ``billing``: two failed events (the receiver answered 500)
    and one queued (paused)."""
    receiver.responder = lambda request: 500
    path = str(tmp_path / "hooks.db")
    instance = WebhooksEmitter(1.0, store=SQLiteStore(path))
    try:
        instance.attach("billing", "*", Config(receiver.url, max_attempts=1))
        instance.emit("e", {"n": 1}, request_id="r-1")
        instance.emit("e", {"n": 2}, request_id="r-2")
        assert instance.flush(20)
        instance.pause("billing")
        instance.emit("e", {"n": 3}, request_id="r-3")
    finally:
        instance.shutdown(1.0)
    opened = SQLiteStore(path)
    try:
        yield opened
    finally:
        opened.close()


def snapshot(store: Store) -> tuple[Any, ...]:
    """What an action could change."""
    state = store.state("billing")
    return (
        state.queued,
        state.failed,
        state.paused,
        [f.request_id for f in store.failed("billing")],
    )


def test_get_never_changes_anything(store: SQLiteStore) -> None:
    """A GET carrying every action's fields (as a crafted link would) only shows a page."""
    dashboard = Dashboard(lambda: store)
    before = snapshot(store)
    for query in (
        {"id": "billing", "action": "purge", "confirm": "billing"},
        {"id": "billing", "action": "replay"},
        {"id": "billing", "action": "restart", "done": "restarted"},
    ):
        answer = dashboard.page("emitter", query, page())
        assert answer.status == 200
        answer = dashboard.page("", query, page())
        assert answer.status == 200
    assert snapshot(store) == before


def test_the_emitter_page_lists_failed_and_queued_events(store: SQLiteStore) -> None:
    """Failed events oldest first with their tries, status and body; the queued one; the
    store's name in the header."""
    answer = Dashboard(lambda: store).page("emitter", {"id": "billing"}, page())
    html = answer.body
    assert answer.status == 200
    assert html.index("r-1") < html.index("r-2") < html.index("r-3")
    assert "{&quot;n&quot;:3}" in html  # the queued body
    assert store.describe() in html or urllib.parse.quote(store.describe()) in html


def test_a_purge_needs_the_emitter_id_typed_again(store: SQLiteStore) -> None:
    """Nothing, another id, another case or extra spaces delete nothing; the exact id
    deletes every queued and failed event."""
    dashboard = Dashboard(lambda: store)
    before = snapshot(store)
    for typed in (None, "", "BILLING", " billing", "billing ", "audit"):
        form = {"action": "purge"} if typed is None else {"action": "purge", "confirm": typed}
        answer = dashboard.act("emitter", {"id": "billing"}, form, page())
        assert answer.status == 303
        assert "done=purge_refused" in (answer.location or "")
        assert snapshot(store) == before
    answer = dashboard.act(
        "emitter", {"id": "billing"}, {"action": "purge", "confirm": "billing"}, page()
    )
    assert answer.location == "/ops/emitter?id=billing&done=purged&n=3"
    assert snapshot(store)[:2] == (0, 0)


def test_actions_redirect_with_their_outcome(store: SQLiteStore) -> None:
    """Replay one, restart, pause and replay all answer 303 to the emitter's page with the
    outcome, and do it in the store."""
    dashboard = Dashboard(lambda: store)

    def act(**form: str) -> str:
        answer = dashboard.act("emitter", {"id": "billing"}, form, page())
        assert answer.status == 303, answer
        return answer.location or ""

    assert act(action="replay", request_id="r-2").endswith("done=replayed&n=1")
    assert [f.request_id for f in store.failed("billing")] == ["r-1"]
    assert act(action="restart").endswith("done=restarted")
    assert not store.state("billing").paused
    assert act(action="restart").endswith("done=not_paused")
    assert act(action="pause").endswith("done=paused")
    assert store.state("billing").paused
    assert act(action="replay").endswith("done=replayed&n=1")
    assert store.state("billing").failed == 0


def test_bad_posts_are_refused(store: SQLiteStore) -> None:
    """An unknown action, a post to the emitters page or an unknown emitter changes
    nothing: 400, or the ``unknown`` outcome."""
    dashboard = Dashboard(lambda: store)
    before = snapshot(store)
    assert dashboard.act("emitter", {"id": "billing"}, {"action": "drop"}, page()).status == 400
    assert dashboard.act("", {}, {"action": "pause"}, page()).status == 400
    answer = dashboard.act("emitter", {"id": "nobody"}, {"action": "pause"}, page())
    assert "done=unknown" in (answer.location or "")
    assert dashboard.page("emitter", {"id": "nobody"}, page()).status == 404
    assert snapshot(store) == before


def test_a_store_error_is_a_503_without_the_password() -> None:
    """A store that cannot be reached gives a page that says so, never its password."""
    from webhooks_emitter.stores.postgres import PostgresStore

    unreachable = PostgresStore("postgresql://ops:hunter2secret@127.0.0.1:1/app", timeout=1.0)
    try:
        answer = Dashboard(lambda: unreachable).page("", {}, page())
        assert answer.status == 503
        assert "hunter2secret" not in answer.body
        acted = Dashboard(lambda: unreachable).act(
            "emitter", {"id": "billing"}, {"action": "pause"}, page()
        )
        assert acted.status == 503 and "hunter2secret" not in acted.body
    finally:
        unreachable.close()


def test_counters_show_for_the_emitters_this_process_delivers(
    tmp_path: Path, receiver: Receiver
) -> None:
    """With a delivering instance, its delivered and given-up counts show; ids it does not
    deliver show none."""
    instance = WebhooksEmitter(1.0, store=SQLiteStore(str(tmp_path / "c.db")))
    try:
        instance.attach("mine", "*", Config(receiver.url))
        instance.emit("e", {})
        assert instance.flush(20)
        instance.store.register("elsewhere")
        rows = {r.emitter_id: r for r in _data.overview(instance.store, instance)}
        assert (rows["mine"].delivered, rows["mine"].given_up) == (1, 0)
        assert rows["elsewhere"].delivered is None
        html = _pages.emitters_page(list(rows.values()), page())
        assert "Delivered here" in html
    finally:
        instance.shutdown(1.0)


# -- the CLI's server -----------------------------------------------------------------------------


class Call:
    """One request to a WSGI application, in this thread."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(
        self, method: str, target: str, *, cookie: str = "", form: Optional[dict[str, str]] = None
    ) -> tuple[int, dict[str, list[str]], str]:
        path, _, query = target.partition("?")
        body = urllib.parse.urlencode(form or {}).encode()
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SCRIPT_NAME": "",
            "HTTP_COOKIE": cookie,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
        got: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            got["status"] = int(status.split()[0])
            got["headers"] = {}
            for name, value in headers:
                got["headers"].setdefault(name.lower(), []).append(value)

        text = b"".join(self.app(environ, start_response)).decode()
        return got["status"], got["headers"], text


def test_the_token_opens_the_pages_and_stays_in_a_cookie(store: SQLiteStore) -> None:
    """No token or a wrong one: 403. The right one: a cookie (HttpOnly, SameSite=Strict)
    and a redirect to the page without it; the cookie then opens every page."""
    call = Call(TokenApp(Dashboard(lambda: store), "s3cr3t-token", "dash_1"))
    assert call("GET", "/")[0] == 403
    assert call("GET", "/emitter?id=billing")[0] == 403
    assert call("GET", "/?token=wrong")[0] == 403
    assert call("GET", "/", cookie="dash_1=wrong")[0] == 403
    status, headers, _ = call("GET", "/emitter?id=billing&token=s3cr3t-token")
    assert status == 303
    assert headers["location"] == ["/emitter?id=billing"]
    (cookie,) = headers["set-cookie"]
    assert cookie.startswith("dash_1=s3cr3t-token;")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, headers, html = call("GET", "/emitter?id=billing", cookie="dash_1=s3cr3t-token")
    assert status == 200 and "r-1" in html and "s3cr3t-token" not in html
    assert "frame-ancestors 'none'" in headers["content-security-policy"][0]


def test_a_post_needs_the_pages_csrf_token(store: SQLiteStore) -> None:
    """A POST with the cookie but without the form's CSRF field (or with another) is 403
    and changes nothing; with the field from the page it is done."""
    call = Call(TokenApp(Dashboard(lambda: store), "s3cr3t-token", "dash_1"))
    cookie = "dash_1=s3cr3t-token"
    before = snapshot(store)
    for form in ({"action": "replay"}, {"action": "replay", "csrf_token": "0" * 64}):
        assert call("POST", "/emitter?id=billing", cookie=cookie, form=form)[0] == 403
    assert call("POST", "/emitter?id=billing", form={"action": "replay"})[0] == 403
    assert snapshot(store) == before
    html = call("GET", "/emitter?id=billing", cookie=cookie)[2]
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert token is not None
    status, headers, _ = call(
        "POST",
        "/emitter?id=billing",
        cookie=cookie,
        form={"action": "replay", "csrf_token": token.group(1)},
    )
    assert status == 303
    assert headers["location"] == ["/emitter?id=billing&done=replayed&n=2"]
    assert store.state("billing").failed == 0


def test_csrf_tokens_belong_to_one_session() -> None:
    """A session's token checks; another session's, a forged or a missing one does not;
    a malformed cookie gets a new session."""
    guard = CsrfGuard(b"key")
    one, new = CsrfGuard.session(None)
    two, _ = CsrfGuard.session(None)
    assert new and one != two
    assert CsrfGuard.session(one) == (one, False)
    assert CsrfGuard.session("short")[1]
    assert guard.check(one, guard.token(one))
    assert not guard.check(one, guard.token(two))
    assert not guard.check(one, None)
    assert not guard.check(None, guard.token(one))
    assert not CsrfGuard(b"other").check(one, guard.token(one))
    with pytest.raises(ValueError, match="key"):
        CsrfGuard(b"")


# -- the command ----------------------------------------------------------------------------------


def test_bind_defaults_to_this_host_only() -> None:
    """127.0.0.1 unless told; HOST:PORT, [v6]:PORT or a bare port; anything else names
    --bind."""
    assert DEFAULT_BIND == "127.0.0.1:8470"
    assert parse_bind(DEFAULT_BIND) == ("127.0.0.1", 8470)
    assert parse_bind("8000") == ("127.0.0.1", 8000)
    assert parse_bind("[::1]:0") == ("::1", 0)
    assert parse_bind("0.0.0.0:80") == ("0.0.0.0", 80)
    for bad in ("", "host:", "host:http", "1.2.3.4:70000"):
        with pytest.raises(ValueError, match="--bind"):
            parse_bind(bad)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["dashboard"], "--store is required"),
        (["dashboard", "--store", "memory:"], "needs a durable store"),
        (["dashboard", "--store", "mysql://x"], "--store"),
        (["dashboard", "--store", "sqlite:///x.db", "--bind", "nowhere"], "--bind"),
    ],
)
def test_the_command_refuses_bad_arguments(
    argv: list[str],
    said: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No store, ``memory:``, a URL of no store, or a bad --bind: exit 2, one line naming it."""
    monkeypatch.delenv("WEBHOOKS_EMITTER_STORE", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1, err


def test_the_command_never_creates_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store file that is not there is exit 1 (a mistyped path is not shown as an empty
    store), and no file is made."""
    missing = tmp_path / "typo.db"
    assert main(["dashboard", "--store", f"sqlite:///{missing}", "--bind", "127.0.0.1:0"]) == 1
    assert "error" in capsys.readouterr().err
    assert not missing.exists()


# -- the queued events, read without a lease ----------------------------------------------------


def queue_two(instance: WebhooksEmitter) -> None:
    """Attach ``billing`` paused (to a port nothing listens on) and queue r-1 and r-2."""
    instance.attach("billing", "*", Config("http://127.0.0.1:9/hooks"))
    instance.pause("billing")
    instance.emit("e", {"n": 1}, request_id="r-1")
    instance.emit("e", {"n": 2}, request_id="r-2")


def test_queued_events_are_read_from_postgresql(pg_store_url: str) -> None:
    """PostgreSQL: the oldest queued events, oldest first, up to the limit, without a
    lease (a failed event is not among them)."""
    from webhooks_emitter.stores.postgres import PostgresStore

    store = PostgresStore(pg_store_url)
    instance = WebhooksEmitter(1.0, store=store, deliver=False)
    try:
        queue_two(instance)
        events = _data.queued_events(store, "billing", 10)
        assert events is not None
        assert [(e.request_id, e.body, e.attempts) for e in events] == [
            ("r-1", b'{"n":1}', 0),
            ("r-2", b'{"n":2}', 0),
        ]
        assert all(e.emitted_at is not None for e in events)
        assert [e.request_id for e in _data.queued_events(store, "billing", 1) or []] == ["r-1"]
        assert _data.queued_events(store, "nobody", 10) == []
        assert store.state("billing").lease_holder is None  # read, never leased
    finally:
        instance.shutdown(0)
        store.close()


def test_queued_events_are_read_from_the_memory_store() -> None:
    """The memory store (a Flask app's default): the same list, from the process's queue."""
    instance = WebhooksEmitter(1.0)
    try:
        queue_two(instance)
        events = _data.queued_events(instance.store, "billing", 10)
        assert [e.request_id for e in events or []] == ["r-1", "r-2"]
    finally:
        instance.shutdown(0)


def test_queued_events_are_read_from_sqlite(store: SQLiteStore) -> None:
    """SQLite: the queued event, not the two failed ones."""
    events = _data.queued_events(store, "billing", 10)
    assert [e.request_id for e in events or []] == ["r-3"]


def test_a_store_that_cannot_list_its_queue_shows_no_queued_events() -> None:
    """A store keeping ``Store.queued_events``'s default (NotImplementedError) gets None:
    the page says it cannot list them, rather than failing."""
    from webhooks_emitter.stores import MemoryStore

    class NoListing(MemoryStore):
        queued_events = Store.queued_events

    store = NoListing()
    store.register("billing")
    assert _data.queued_events(store, "billing", 10) is None


def test_the_dashboard_reads_queued_events_through_the_store_interface_only() -> None:
    """``_dashboard/_data.py`` reaches no store internal (``_run``, ``_lanes``, SQL of its
    own): the read-only ``Store.queued_events`` is its only way to the queue."""
    source = Path(_data.__file__).read_text(encoding="utf-8")
    for internal in ("._run", "_lanes", "SELECT ", '"_run"', '"_lanes"'):
        assert internal not in source, internal


def test_the_command_prints_one_line_and_ends_on_ctrl_c(store: SQLiteStore) -> None:
    """One line with the URL (127.0.0.1, a token), nothing else; SIGINT (Ctrl-C) ends it
    with exit status 0 and nothing on standard error."""
    import signal
    import subprocess
    import sys

    from child_output import Lines

    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "webhooks_emitter",
            "dashboard",
            "--bind",
            "127.0.0.1:0",
            "--store",
            f"sqlite:///{store.path}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = Lines(child.stdout)  # type: ignore[arg-type]
        line = lines.next()
        assert re.search(r"open http://127\.0\.0\.1:\d+/\?token=[\w-]{40,} ", line), line
        child.send_signal(signal.SIGINT)
        assert child.wait(20) == 0
        assert lines.rest() == []
        assert child.stderr is not None and child.stderr.read() == ""
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_the_command_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    """``dashboard --help`` shows its usage, --store and --bind with their defaults, its
    exit statuses and an example; the main help lists it."""
    with pytest.raises(SystemExit) as exited:
        main(["dashboard", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: webhooks-emitter dashboard")
    assert "--store URL" in out and "WEBHOOKS_EMITTER_STORE" in out
    assert "--bind HOST:PORT" in out and "127.0.0.1:8470" in out
    assert "Exit status" in out
    assert re.search(r"webhooks-emitter dashboard --store", out.split("Example", 1)[1])
    with pytest.raises(SystemExit):
        main(["--help"])
    assert re.search(r"^\s+dashboard\s", capsys.readouterr().out, re.MULTILINE)


@pytest.mark.parametrize("url", ["memory:", "MEMORY:", "memory://"])
def test_a_memory_store_is_a_bad_argument(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The pages show what other processes stored: ``memory:`` is exit status 2, one line."""
    assert main(["dashboard", "--store", url]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("webhooks-emitter dashboard: error: --store"), captured.err
    assert "durable store" in captured.err and captured.err.count("\n") == 1


def test_any_emitter_id_survives_the_links_and_forms(tmp_path: Path) -> None:
    """An id holding ``/``, ``&``, ``#``, ``?``, a space and non-ASCII: the emitters page's
    link and the forms' targets lead back to that very id, through the WSGI app."""
    odd = "eu/billing & co #1?é"
    store = SQLiteStore(str(tmp_path / "odd.db"))
    try:
        store.register(odd)
        call = Call(TokenApp(Dashboard(lambda: store), "t" * 43, "dash"))
        cookie = "dash=" + "t" * 43
        html = call("GET", "/", cookie=cookie)[2]
        link = re.search(r'<a href="(/emitter\?[^"]+)">', html)
        assert link is not None
        target = link.group(1).replace("&amp;", "&")
        status, _, page_html = call("GET", target, cookie=cookie)
        assert status == 200 and "eu/billing &amp; co #1?é" in page_html
        action = re.search(r'<form method="post" action="([^"]+)" class="pause">', page_html)
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page_html)
        assert action is not None and token is not None
        status, headers, _ = call(
            "POST",
            action.group(1).replace("&amp;", "&"),
            cookie=cookie,
            form={"action": "pause", "csrf_token": token.group(1)},
        )
        assert status == 303 and store.state(odd).paused
        query = urllib.parse.parse_qs(headers["location"][0].partition("?")[2])
        assert query["id"] == [odd]
    finally:
        store.close()


def test_actions_go_through_the_mounts_instance_on_a_memory_store(receiver: Receiver) -> None:
    """A Flask app on the default memory store: pause holds its events, restart and
    replay wake its emitter at once (no other process would notice), an unknown id is
    ``unknown``."""
    instance = WebhooksEmitter(1.0)
    dashboard = Dashboard(lambda: instance.store, lambda: instance)
    try:
        receiver.responder = lambda request: 500
        instance.attach("billing", "*", Config(receiver.url, max_attempts=1))
        instance.emit("e", {"n": 1}, request_id="r-1")
        assert instance.flush(20)
        receiver.responder = lambda request: 204

        def act(**form: str) -> str:
            answer = dashboard.act("emitter", {"id": form.pop("id", "billing")}, form, page())
            assert answer.status == 303, answer
            return answer.location or ""

        assert act(action="pause").endswith("done=paused")
        assert act(action="pause").endswith("done=already_paused")
        assert not instance.is_started("billing")
        assert act(action="replay").endswith("done=replayed&n=1")
        assert act(action="restart").endswith("done=restarted")
        (again,) = receiver.wait_for(2, 20)[1:]
        assert again.delivery_id == "r-1"
        assert act(action="restart").endswith("done=not_paused")
        assert act(id="nobody", action="pause").endswith("done=unknown")
        assert act(id="nobody", action="restart").endswith("done=unknown")
        assert instance.flush(20) and instance.stats("billing").failed == 0
    finally:
        instance.shutdown(1.0)
