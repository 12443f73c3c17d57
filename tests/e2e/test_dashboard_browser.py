"""The operators' dashboard driven in Debian's Chromium (Selenium), for each of its three
mounts: ``webhooks-emitter dashboard`` (a child process), Django (a child process serving
tests/support/dashboard_django) and a Flask blueprint (served from this process).

Each mount shows an SQLite store holding failed and queued events that an instance in this
process (its delivering one) made against a loopback receiver. The tests read the tables,
replay one failed event and see the receiver get it, pause and restart, try a purge without
the confirmation (nothing deleted) and with it, are refused without the token, as a
non-staff user or when ``auth()`` is false, see a ``<script>`` payload shown as text, and
take a screenshot of each page into ``tmp_path``. One browser serves the whole module.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from child_output import Lines

from webhooks_emitter import Config, WebhooksEmitter
from webhooks_emitter.stores import SQLiteStore
from webhooks_emitter.testing import ReceivedRequest, Receiver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get install chromium chromium-driver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
SCRIPT = "<script>document.title='owned'</script>"
WAIT = 20.0  # each wait ends as soon as its condition holds; generous for a busy machine
DJANGO_SITE = Path(__file__).resolve().parents[1] / "support" / "dashboard_django"
PASSWORD = "pw-for-tests"


# -- the browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for the module, Debian's binary and driver (never a download)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: {INSTALL}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # With the driver's path given Selenium skips its Manager; offline and without its usage
    # statistics in case it did not (no packet may leave the machine).
    env = pytest.MonkeyPatch()
    env.setenv("SE_OFFLINE", "true")
    env.setenv("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tmp_path_factory.mktemp("chromium-profile")
    options.add_argument(f"--user-data-dir={profile}")
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            driver.set_page_load_timeout(WAIT)
            driver.set_window_size(1280, 900)
            yield driver
        finally:
            driver.quit()
    finally:
        env.undo()


def until(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    """Wait for ``condition(driver)`` to be truthy; its value. A condition that meets the
    page as it reloads (the emitters page reloads itself every 5 s: a stale element, a
    script cut short) is tried again."""
    from selenium.common.exceptions import JavascriptException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(
        driver,
        WAIT,
        poll_frequency=0.05,
        ignored_exceptions=(StaleElementReferenceException, JavascriptException),
    )
    return wait.until(condition, message=what)


def click_link(driver: Any, text: str) -> None:
    """Click the link showing ``text`` (again if the page reloaded under the click)."""
    from selenium.webdriver.common.by import By

    until(driver, lambda d: d.find_element(By.LINK_TEXT, text).click() or True, f"no {text} link")


def message(driver: Any) -> str:
    """The one-line message of the page (waits for it)."""
    from selenium.webdriver.common.by import By

    return str(until(driver, lambda d: _text(d, By.ID, "message"), "no message on the page"))


def _text(driver: Any, by: str, value: str) -> str:
    found = driver.find_elements(by, value)
    return str(found[0].text) if found else ""


def post_form(driver: Any, form_class: str, *, row: Any = None, confirm: str = "") -> str:
    """Submit the form of that class (in ``row``, or the actions bar); the message shown."""
    from selenium.webdriver.common.by import By

    scope = row if row is not None else driver.find_element(By.CSS_SELECTOR, ".actions")
    form = scope.find_element(By.CSS_SELECTOR, f"form.{form_class}")
    if confirm:
        form.find_element(By.NAME, "confirm").send_keys(confirm)
    old = driver.find_element(By.TAG_NAME, "html")
    form.find_element(By.TAG_NAME, "button").click()
    until(driver, lambda d: _stale(old), "the form's answer never loaded")
    return message(driver)


def _stale(element: Any) -> bool:
    """Whether the page ``element`` was on has gone (a command that meets the page as it
    is being replaced may fail otherwise: that is "not yet")."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.tag_name  # noqa: B018 - raises once the page it was on is gone
    except StaleElementReferenceException:
        return True
    except WebDriverException:
        return False
    return False


def table(driver: Any, table_id: str) -> list[list[str]]:
    """The text of each body row's cells (read in one go: the emitters page reloads itself)."""
    script = (
        "return [Array.from(document.querySelectorAll(arguments[0])).map("
        "r => Array.from(r.children).map(c => c.textContent.trim()))]"
    )
    found = until(
        driver, lambda d: d.execute_script(script, f"#{table_id} tbody tr"), f"no {table_id}"
    )
    rows: list[list[str]] = found[0]
    return rows


def check_screenshot(driver: Any, path: Path) -> None:
    """Save a screenshot to ``path`` and check it is a PNG of some size that is not blank."""
    assert driver.save_screenshot(str(path)), f"no screenshot saved to {path}"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert len(data) > 5000, f"{path} is only {len(data)} bytes"
    chunks, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        kind = data[at + 4 : at + 8]
        if kind == b"IDAT":
            chunks.append(data[at + 8 : at + 8 + length])
        at += 12 + length
    pixels = zlib.decompress(b"".join(chunks))
    # A blank page is one colour: its scanlines hold a handful of distinct byte values.
    assert len(set(pixels)) > 32, f"{path} looks blank ({len(set(pixels))} distinct bytes)"


def status_of(url: str, cookie: str = "") -> tuple[int, str]:
    """The status and Location of a GET of ``url`` (redirects not followed)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=WAIT)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        answer = conn.getresponse()
        answer.read()
        return answer.status, answer.getheader("Location") or ""
    finally:
        conn.close()


# -- the store's events ---------------------------------------------------------------------------


def emitters_config(url: str) -> Config:
    """Gives up at the first failed try, so that failed events are made at once."""
    return Config(url, max_attempts=1, backoff_start=0.001, backoff_limit=0.001)


class Scene:
    """A receiver, the store, and the events the dashboard shows: ``billing`` with three
    failed events (one payload holding ``<script>``), ``audit`` paused with two queued."""

    def __init__(self, receiver: Receiver, store_path: Path) -> None:
        self.receiver = receiver
        self.path = store_path
        self.url = f"sqlite:///{store_path}"
        self.store = SQLiteStore(str(store_path))
        self.failed_ids: list[str] = []
        self.healthy_since = 0.0

    def populate(self, instance: WebhooksEmitter, *, attach: bool) -> None:
        """Make the events with ``instance`` (attaching the emitters when ``attach``)."""
        self.receiver.responder = lambda request: 500
        if attach:
            config = emitters_config(self.receiver.url)
            instance.attach("billing", "order.paid", config)
            instance.attach("audit", "user.created", config)
        self.failed_ids = [
            instance.emit("order.paid", {"order": 1, "note": SCRIPT}),
            instance.emit("order.paid", {"order": 2}),
            instance.emit("order.paid", {"order": 3}),
        ]
        assert instance.flush(WAIT), "the failing tries did not end"
        instance.pause("audit")
        instance.emit("user.created", {"user": 1})
        instance.emit("user.created", {"user": 2})
        assert self.store.state("billing").failed == 3
        assert self.store.state("audit").queued == 2
        self.healthy_since = time.monotonic()
        self.receiver.responder = lambda request: 204

    def delivered(self, count: int) -> list[ReceivedRequest]:
        """Wait for ``count`` deliveries answered 2xx (those after ``populate``)."""
        return self.receiver.wait_for(
            count, WAIT, where=lambda r: r.received_at >= self.healthy_since
        )


@pytest.fixture()
def scene(tmp_path: Path) -> Iterator[Scene]:
    """A started receiver and an SQLite store in ``tmp_path``."""
    with Receiver() as receiver:
        made = Scene(receiver, tmp_path / "hooks.db")
        try:
            yield made
        finally:
            made.store.close()


@pytest.fixture()
def deliverer(scene: Scene) -> Iterator[WebhooksEmitter]:
    """The delivering instance of this process, its emitters attached and events made."""
    instance = WebhooksEmitter(2.0, store=SQLiteStore(str(scene.path)))
    try:
        scene.populate(instance, attach=True)
        yield instance
    finally:
        instance.shutdown(2.0)


# -- the scenario every mount goes through --------------------------------------------------------


def exercise(driver: Any, base: str, scene: Scene, shots: Path, name: str) -> None:
    """Read the emitters table, open ``billing``, see the ``<script>`` payload as text,
    replay one failed event (delivered), refuse a purge without the confirmation, pause and
    restart, replay the rest, and purge ``audit`` with its id typed again. On a failure the
    page's HTML and a screenshot are left in ``shots`` to look at."""
    try:
        _exercise(driver, base, scene, shots, name)
    except BaseException:
        with contextlib.suppress(Exception):
            (shots / f"{name}-failure.html").write_text(driver.page_source)
            driver.save_screenshot(str(shots / f"{name}-failure.png"))
        raise


def _exercise(driver: Any, base: str, scene: Scene, shots: Path, name: str) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    driver.get(base)
    until(driver, lambda d: d.find_elements(By.ID, "emitters"), "no emitters table")
    rows = table(driver, "emitters")
    assert [r[0] for r in rows] == ["audit", "billing"], rows  # queued first, worst first
    audit, billing = rows
    assert audit[1:4] == ["2", "0", "paused"], audit
    assert billing[1:4] == ["0", "3", "running"], billing
    check_screenshot(driver, shots / f"{name}-emitters.png")

    click_link(driver, "billing")
    until(driver, lambda d: _text(d, By.ID, "emitter-id") == "billing", "no billing page")
    failed = table(driver, "failed")
    assert [r[0] for r in failed] == scene.failed_ids, failed
    assert [r[1:4] for r in failed] == [["order.paid", "1", "500"]] * 3, failed
    assert SCRIPT in failed[0][6], failed[0]  # shown as text...
    assert driver.find_elements(By.TAG_NAME, "script") == []  # ...never as an element
    assert driver.title != "owned"
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - raises when there is none
    check_screenshot(driver, shots / f"{name}-emitter.png")

    first = driver.find_element(
        By.CSS_SELECTOR, f'#failed tr[data-request-id="{scene.failed_ids[0]}"]'
    )
    assert post_form(driver, "replay", row=first) == "replayed 1 event"
    (got,) = scene.delivered(1)
    assert got.delivery_id == scene.failed_ids[0]
    assert SCRIPT in got.body.decode()
    assert [r[0] for r in table(driver, "failed")] == scene.failed_ids[1:]

    text = post_form(driver, "purge", confirm="not-billing")
    assert text.startswith("nothing was purged"), text
    assert scene.store.state("billing").failed == 2

    assert post_form(driver, "pause").startswith("paused billing"), "no pause message"
    assert scene.store.state("billing").paused
    assert post_form(driver, "restart").startswith("restarted billing"), "no restart message"
    assert not scene.store.state("billing").paused

    assert post_form(driver, "replay") == "replayed 2 events"
    assert {r.delivery_id for r in scene.delivered(3)} == set(scene.failed_ids)

    driver.get(base)
    click_link(driver, "audit")
    until(driver, lambda d: _text(d, By.ID, "emitter-id") == "audit", "no audit page")
    assert [r[1] for r in table(driver, "queued")] == ["user.created", "user.created"]
    assert post_form(driver, "purge", confirm="audit") == "purged 2 events of audit"
    assert scene.store.state("audit").queued == 0


# -- the three mounts -----------------------------------------------------------------------------


def test_the_command_serves_the_pages_to_a_browser_holding_its_token(
    browser: Any, scene: Scene, deliverer: WebhooksEmitter, tmp_path: Path
) -> None:
    """``webhooks-emitter dashboard`` prints a URL with a token; the browser opens it (the
    token then rides in a cookie), goes through the whole scenario, and is refused (403)
    once the cookie is gone, as is a wrong token; SIGTERM ends the server with status 0.
    The emitters page fits a phone's width."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "webhooks_emitter",
            "dashboard",
            "--store",
            scene.url,
            "--bind",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = Lines(child.stdout).next()  # type: ignore[arg-type]
        url = line.split(" open ", 1)[1].split(" ", 1)[0]
        assert "?token=" in url, line
        parts = urllib.parse.urlsplit(url)
        base = f"http://{parts.hostname}:{parts.port}/"
        assert parts.hostname == "127.0.0.1"
        assert status_of(base) == (403, "")
        assert status_of(base + "?token=wrong") == (403, "")

        browser.delete_all_cookies()
        browser.get(url)
        exercise(browser, base, scene, tmp_path, "cli")
        assert "token=" not in browser.current_url  # kept in the cookie, out of the history

        browser.set_window_size(390, 844)
        try:
            browser.get(base)
            (overflow,) = until(
                browser,
                lambda d: d.execute_script(
                    "return [document.documentElement.scrollWidth - window.innerWidth]"
                ),
                "no page width",
            )
            assert overflow <= 0, f"the page is {overflow}px wider than a phone"
            check_screenshot(browser, tmp_path / "cli-phone.png")
        finally:
            browser.set_window_size(1280, 900)

        browser.delete_all_cookies()
        browser.get(base)
        assert "403 Forbidden" in browser.find_element("tag name", "body").text
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            code = child.wait(WAIT)
        finally:
            if child.poll() is None:
                child.kill()
    assert code == 0, child.stderr.read() if child.stderr else ""


@pytest.fixture()
def django_site(scene: Scene, deliverer: WebhooksEmitter, tmp_path: Path) -> Iterator[str]:
    """tests/support/dashboard_django served by a child process over the scene's store; its URL."""
    env = {
        **os.environ,
        "DASHBOARD_DB": str(tmp_path / "site.db"),
        "DASHBOARD_STORE": scene.url,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    child = subprocess.Popen(
        [sys.executable, str(DJANGO_SITE / "serve.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines = Lines(child.stdout)  # type: ignore[arg-type]
        try:
            line = lines.next()
        except AssertionError:
            child.kill()
            raise AssertionError(child.stderr.read() if child.stderr else "no output") from None
        yield f"http://127.0.0.1:{int(line.rsplit(' ', 1)[1])}"
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(WAIT)
        finally:
            if child.poll() is None:
                child.kill()


def log_in(driver: Any, site: str, user: str, next_url: str) -> None:
    """Log in through the admin's login page, asking for ``next_url``."""
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(f"{site}/admin/login/?next={urllib.parse.quote(next_url)}")
    driver.find_element(By.ID, "id_username").send_keys(user)
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    until(driver, lambda d: _stale(old), "the login form's answer never loaded")


def test_django_serves_the_pages_to_staff_users_with_csrf(
    browser: Any, scene: Scene, django_site: str, tmp_path: Path
) -> None:
    """Mounted with ``include("webhooks_emitter.contrib.django.urls")``: anonymous users
    and a logged-in non-staff user are sent to the admin login; a staff user goes through
    the whole scenario, every form carrying Django's CSRF token (a POST without it is 403)."""
    base = f"{django_site}/webhooks/"
    status, location = status_of(base)
    assert status == 302 and location.startswith("/admin/login/"), (status, location)

    log_in(browser, django_site, "clerk", "/webhooks/")
    browser.get(base)
    assert urllib.parse.urlsplit(browser.current_url).path == "/admin/login/"

    log_in(browser, django_site, "staff", "/webhooks/")
    assert browser.current_url == base
    session = browser.get_cookie("sessionid")["value"]
    conn = http.client.HTTPConnection("127.0.0.1", urllib.parse.urlsplit(base).port, timeout=WAIT)
    try:
        conn.request(
            "POST",
            "/webhooks/emitter?id=billing",
            body="action=pause",
            headers={
                "Cookie": f"sessionid={session}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        assert conn.getresponse().status == 403  # no CSRF token
    finally:
        conn.close()
    assert not scene.store.state("billing").paused
    exercise(browser, base, scene, tmp_path, "django")


def test_flask_serves_the_pages_when_auth_allows_with_csrf(
    browser: Any, scene: Scene, tmp_path: Path
) -> None:
    """``Webhooks.dashboard_blueprint(auth=...)`` under a prefix, over the app's own
    delivering instance (its counters shown): the whole scenario, then 403 once ``auth()``
    answers False; a POST without the CSRF token is 403 too."""
    from flask import Flask
    from werkzeug.serving import make_server

    from webhooks_emitter.contrib.flask import Webhooks, get_instance

    app = Flask("dashboard_test")
    fields = {"url": scene.receiver.url, "max_attempts": 1}  # no retry: no backoff to wait
    app.config.update(
        SECRET_KEY="flask-dashboard-tests",
        WEBHOOKS_EMITTER_STORE=scene.url,
        WEBHOOKS_EMITTER_EXIT_TIMEOUT=2,
        WEBHOOKS_EMITTER_EMITTERS={
            "billing": {**fields, "events": ["order.paid"]},
            "audit": {**fields, "events": ["user.created"]},
        },
    )
    webhooks = Webhooks(app)
    allowed = threading.Event()
    allowed.set()
    app.register_blueprint(
        webhooks.dashboard_blueprint(auth=allowed.is_set), url_prefix="/ops/webhooks"
    )
    instance = get_instance(app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        scene.populate(instance, attach=False)
        base = f"http://127.0.0.1:{server.server_port}/ops/webhooks/"
        browser.delete_all_cookies()
        exercise(browser, base, scene, tmp_path, "flask")

        browser.get(base)
        head = until(
            browser,
            lambda d: d.execute_script(
                "return Array.from(document.querySelectorAll('#emitters thead th'))"
                ".map(c => c.textContent)"
            ),
            "no emitters table",
        )
        assert "Given up here" in head, head
        rows = {row[0]: row for row in table(browser, "emitters")}
        assert rows["billing"][6:8] == ["3", "3"], rows  # delivered, given up here

        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=WAIT)
        try:
            conn.request(
                "POST",
                "/ops/webhooks/emitter?id=billing",
                body="action=pause",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert conn.getresponse().status == 403  # no CSRF cookie nor token
        finally:
            conn.close()
        assert not scene.store.state("billing").paused

        allowed.clear()
        assert status_of(base)[0] == 403
        browser.get(base)
        assert "403 Forbidden" in browser.find_element("tag name", "body").text
    finally:
        server.shutdown()
        thread.join(WAIT)
        instance.shutdown(2.0)


def test_flask_dashboard_needs_an_auth_callable() -> None:
    """There is no default that lets everyone in: ``auth`` must be a callable."""
    from webhooks_emitter.contrib.flask import Webhooks

    with pytest.raises(TypeError, match="auth must be a callable"):
        Webhooks().dashboard_blueprint(auth=True)  # type: ignore[arg-type]


def test_the_screenshot_check_refuses_a_blank_image() -> None:
    """check_screenshot fails on a PNG of one colour (so the check on each page can fail)."""
    import struct

    width, height = 64, 64
    raw = b"".join(b"\x00" + b"\xff" * (width * 3) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data).to_bytes(4, "big")
        return len(data).to_bytes(4, "big") + kind + data + crc

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )

    class Blank:
        def save_screenshot(self, path: str) -> bool:
            Path(path).write_bytes(png + b"\0" * 6000)
            return True

    with tempfile.TemporaryDirectory() as folder:
        with pytest.raises(AssertionError, match="looks blank"):
            check_screenshot(Blank(), Path(folder) / "blank.png")
