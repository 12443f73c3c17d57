"""Delivery semantics (CONTRACT.md section 5, and ``pause_on_gone`` of section 9).

What succeeds and what is retried, backoff and ``Retry-After``, whole-try timeouts against
raw-socket receivers that never answer or trickle, per-emitter order and isolation,
interruptible waits, ``410 Gone``, and how a given-up event is reported.
"""

from __future__ import annotations

import email.utils
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable, Optional

import attrs
import pytest
from faultservers import closed_port

from webhooks_emitter import DeliveryResult
from webhooks_emitter.testing import ReceivedRequest, Receiver, Response

LOGGER = "webhooks_emitter"
# Slack added to upper time bounds: loose enough for a loaded 2-core machine, far below
# what the broken behaviour each bound guards against would take.
SLACK = 2.5


# -- helpers ------------------------------------------------------------------------------


class Results:
    """An ``on_delivery`` callback that records results and lets a test wait for them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.items: list[DeliveryResult] = []

    def __call__(self, result: DeliveryResult) -> None:
        with self._cond:
            self.items.append(result)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[DeliveryResult]:
        """Wait until ``count`` results came; raise TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.items) >= count, timeout):
                raise TimeoutError(f"{len(self.items)} of {count} results came in {timeout:g} s")
            return list(self.items)


class LogWatch(logging.Handler):
    """Records the library's log records and lets a test wait for a matching one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._cond = threading.Condition()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        with self._cond:
            self.records.append(record)
            self._cond.notify_all()

    def wait_for(
        self, predicate: Callable[[logging.LogRecord], bool], timeout: float = 10.0
    ) -> logging.LogRecord:
        """The first record matching ``predicate``, waiting up to ``timeout`` seconds for it."""
        with self._cond:
            found: list[logging.LogRecord] = []

            def match() -> bool:
                found[:] = [r for r in self.records if predicate(r)]
                return bool(found)

            if not self._cond.wait_for(match, timeout):
                raise TimeoutError(f"no matching log record in {timeout:g} s")
            return found[0]

    def matching(self, predicate: Callable[[logging.LogRecord], bool]) -> list[logging.LogRecord]:
        """The records so far that match ``predicate``."""
        with self._cond:
            return [r for r in self.records if predicate(r)]


@pytest.fixture
def logs() -> Iterator[LogWatch]:
    """Capture every record of the ``webhooks_emitter`` loggers, DEBUG and up."""
    logger = logging.getLogger(LOGGER)
    watch = LogWatch()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(watch)
    yield watch
    logger.removeHandler(watch)
    logger.setLevel(level)


def retrying(record: logging.LogRecord) -> bool:
    """A record saying a failed try will be retried after a wait."""
    return record.levelno == logging.INFO and "retrying" in record.getMessage()


def gaps(requests: list[ReceivedRequest]) -> list[float]:
    """Seconds between consecutive requests as the receiver recorded them."""
    return [b.received_at - a.received_at for a, b in zip(requests, requests[1:])]


def dropped_count(records: list[logging.LogRecord]) -> int:
    """How many events ``records`` say were dropped.

    A record that counts events ("2 queued event(s) dropped, 1 event(s) in flight") adds
    its counts; a record about one event (it carries a request id) adds one.
    """
    total = 0
    for record in records:
        counts = re.findall(r"\b(\d+)\s+(?:\w+\s+)?event", record.getMessage())
        if counts:
            total += sum(int(count) for count in counts)
        elif getattr(record, "request_id", None):
            total += 1
    return total


def emitter_thread(emitter_id: str) -> threading.Thread:
    """The daemon thread of emitter ``emitter_id`` (named after it)."""
    [thread] = [t for t in threading.enumerate() if t.name.endswith(f":{emitter_id}")]
    return thread


class RawServer:
    """A TCP server on 127.0.0.1 that hands each connection to ``behaviour``, for odd receivers.

    ``behaviour(server, conn)`` runs in its own thread; it should return when
    ``server.stopping`` is set. Each request read with :meth:`read_request` is counted.
    """

    def __init__(self, behaviour: Callable[[RawServer, socket.socket], None]) -> None:
        self.behaviour = behaviour
        self.stopping = threading.Event()
        self._cond = threading.Condition()
        self.requests: list[tuple[float, bytes]] = []
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # the accept loop checks stopping this often
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/hooks"

    def __enter__(self) -> RawServer:
        thread = threading.Thread(target=self._accept, name="raw-server", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        with self._cond:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        for thread in list(self._threads):
            thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._cond:
                self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.behaviour(self, conn)
        except OSError:
            pass  # the client went away, or the test ended

    def read_request(self, conn: socket.socket) -> Optional[bytes]:
        """Read one HTTP request (headers and Content-Length body); None at end of stream."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        length = int(match.group(1)) if match else 0
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            body += chunk
        with self._cond:
            self.requests.append((time.monotonic(), head + b"\r\n\r\n" + body))
            self._cond.notify_all()
        return body

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` requests were read."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= count, timeout):
                raise TimeoutError(f"{len(self.requests)} of {count} requests in {timeout:g} s")


def never_answer(server: RawServer, conn: socket.socket) -> None:
    """Read each request and never answer it (the connection stays open)."""
    if server.read_request(conn) is not None:
        server.stopping.wait()


Behaviour = Callable[[RawServer, socket.socket], None]


def trickle(head: bytes, body: bytes, interval: float = 0.02) -> Behaviour:
    """Answer each request by sending ``head`` at once, then ``body`` one byte per ``interval``."""

    def behaviour(server: RawServer, conn: socket.socket) -> None:
        while server.read_request(conn) is not None:
            conn.sendall(head)
            for byte in body:
                if server.stopping.wait(interval):
                    return
                conn.sendall(bytes([byte]))

    return behaviour


def scripted(first: Response, then: Response = 204) -> Callable[[ReceivedRequest], Response]:
    """A responder that answers ``first`` to the first try of each delivery, then ``then``."""

    def respond(request: ReceivedRequest) -> Response:
        return first if request.try_number == 1 else then

    return respond


# -- what succeeds, what fails ------------------------------------------------------------


@pytest.fixture(scope="module")
def redirect_target() -> Iterator[Receiver]:
    """The receiver 3xx answers point to; no test may ever reach it."""
    with Receiver() as target:
        yield target


@pytest.fixture(scope="module")
def by_status(redirect_target: Receiver) -> Iterator[Receiver]:
    """One receiver for the status tests: it answers the ``status`` of the payload.

    2xx answers carry a small JSON body (but 204), 3xx answers a Location to
    ``redirect_target``. Shared by the module (tests tell their requests apart by delivery
    id), so that each parametrized case costs no server start.
    """

    def respond(request: ReceivedRequest) -> Response:
        status: int = request.json()["status"]
        if 300 <= status < 400:
            return (status, {"Location": redirect_target.url + "/moved"}, b"")
        if 200 <= status < 300 and status != 204:
            return (status, {"Content-Type": "application/json"}, b'{"ok":true}')
        return status

    with Receiver(responder=respond) as receiver:
        yield receiver


def tries_of(receiver: Receiver, request_id: str) -> list[int]:
    """The try numbers of delivery ``request_id`` that ``receiver`` saw, in order."""
    return [r.try_number for r in receiver.requests if r.delivery_id == request_id]


@pytest.mark.parametrize("status", [200, 201, 202, 203, 204, 206, 226, 299])
def test_any_2xx_succeeds_at_the_first_try(hub, fast, by_status, status):
    """Every 2xx status (with or without a body) is a delivery: one try, delivered=True."""
    results = Results()
    hub.attach("ok", "ev", fast(by_status.url, on_delivery=results))
    request_id = hub.emit("ev", {"status": status})
    [result] = results.wait_for(1)
    assert hub.flush(5)
    assert tries_of(by_status, request_id) == [1]
    assert result.delivered is True
    assert result.attempts == 1
    assert result.status_code == status
    assert result.error is None
    assert result.request_id == request_id and result.emitter_id == "ok" and result.event == "ev"
    assert result.elapsed >= 0


@pytest.mark.parametrize("status", [300, 301, 302, 303, 304, 307, 308])
def test_3xx_fails_and_the_redirect_is_not_followed(hub, fast, by_status, redirect_target, status):
    """A 3xx answer is a failed try, retried; its Location is never requested."""
    results = Results()
    hub.attach("redirected", "ev", fast(by_status.url, max_attempts=2, on_delivery=results))
    request_id = hub.emit("ev", {"status": status})
    [result] = results.wait_for(1)
    assert hub.flush(5)
    assert tries_of(by_status, request_id) == [1, 2]
    assert redirect_target.requests == []
    assert result.delivered is False
    assert result.attempts == 2
    assert result.status_code == status


@pytest.mark.parametrize(
    "status", [400, 401, 403, 404, 405, 408, 409, 413, 422, 429, 500, 501, 502, 503, 504]
)
def test_4xx_and_5xx_are_retried_up_to_max_attempts(hub, fast, by_status, status):
    """A 4xx or 5xx answer is retried: exactly max_attempts tries reach the receiver."""
    results = Results()
    hub.attach("failing", "ev", fast(by_status.url, max_attempts=4, on_delivery=results))
    request_id = hub.emit("ev", {"status": status})
    [result] = results.wait_for(1)
    assert hub.flush(5)
    assert tries_of(by_status, request_id) == [1, 2, 3, 4]
    assert result.delivered is False
    assert result.attempts == 4
    assert result.status_code == status
    assert result.error is not None and str(status) in result.error


def test_max_attempts_one_means_a_single_try(hub, fast):
    """max_attempts=1 makes exactly one try, then gives up."""
    results = Results()
    with Receiver(responder=lambda request: 500) as receiver:
        hub.attach("once", "ev", fast(receiver.url, max_attempts=1, on_delivery=results))
        hub.emit("ev", {})
        [result] = results.wait_for(1)
        assert hub.flush(5)
        assert len(receiver.requests) == 1
    assert (result.delivered, result.attempts, result.status_code) == (False, 1, 500)


def test_default_max_attempts_is_three_tries(hub, fast):
    """Without max_attempts, a failing delivery is tried 3 times in all."""
    results = Results()
    with Receiver(responder=lambda request: 502) as receiver:
        config = fast(receiver.url, on_delivery=results)
        assert config.max_attempts == 3
        hub.attach("default", "ev", config)
        hub.emit("ev", {})
        [result] = results.wait_for(1)
        assert hub.flush(5)
        assert len(receiver.requests) == 3
    assert result.attempts == 3


def test_success_after_failures_reports_the_tries(hub, fast):
    """A delivery that succeeds at its third try reports delivered=True and attempts=3."""
    results = Results()
    answers = {1: 500, 2: 503}
    with Receiver(responder=lambda request: answers.get(request.try_number, 200)) as receiver:
        hub.attach("recovering", "ev", fast(receiver.url, max_attempts=5, on_delivery=results))
        hub.emit("ev", {})
        [result] = results.wait_for(1)
        assert len(receiver.requests) == 3
    assert (result.delivered, result.attempts, result.status_code, result.error) == (
        True,
        3,
        200,
        None,
    )


def test_connection_refused_fails_and_is_retried(hub, fast, network_fence):
    """A port nobody listens on: each try fails with a connection error, max_attempts times."""
    with closed_port() as port:  # bound, never listening: refuses, never reused
        results = Results()
        hub.attach(
            "refused",
            "ev",
            fast(f"http://127.0.0.1:{port}/hooks", max_attempts=3, on_delivery=results),
        )
        hub.emit("ev", {})
        [result] = results.wait_for(1)
        assert result.delivered is False
        assert result.attempts == 3
        assert result.status_code is None
        assert result.error is not None and "refused" in result.error
        assert network_fence.attempts == []


# -- backoff and Retry-After --------------------------------------------------------------


def test_backoff_starts_at_backoff_start_grows_and_stays_under_the_limit(hub, fast):
    """Gaps between tries are at least backoff_start, reach backoff_limit and never go past it.

    With backoff_start=0.01 and backoff_limit=0.08 an exponential backoff reaches the cap
    well before the seventh wait; the receiver measures the gaps (each gap is at least the
    wait, plus the time of one request).
    """
    start, limit = 0.01, 0.08
    results = Results()
    with Receiver(responder=lambda request: 500) as receiver:
        config = fast(receiver.url, backoff_start=start, backoff_limit=limit, max_attempts=8)
        config = attrs.evolve(config, on_delivery=results)
        hub.attach("backoff", "ev", config)
        hub.emit("ev", {})
        [result] = results.wait_for(1)
        measured = gaps(receiver.requests)
    assert len(measured) == 7
    tolerance = 0.003  # clock granularity between the two threads' readings
    assert measured[0] >= start - tolerance, measured
    assert all(gap >= start - tolerance for gap in measured), measured
    assert measured[-1] >= limit - tolerance, measured
    assert all(gap <= limit + SLACK for gap in measured), measured
    assert result.elapsed >= sum(measured) - tolerance


def test_backoff_is_capped_at_backoff_limit(hub, fast):
    """Nine waits capped at 0.04 s add up to well under a second; uncapped from 0.02 s they
    would double up to 5 s and add up to about 10 s. The sum is what an uncapped backoff
    cannot hide behind the per-gap slack."""
    start, limit = 0.02, 0.04
    results = Results()
    with Receiver(responder=lambda request: 500) as receiver:
        config = fast(receiver.url, backoff_start=start, backoff_limit=limit, max_attempts=10)
        hub.attach("capped", "ev", attrs.evolve(config, on_delivery=results))
        hub.emit("ev", {})
        [result] = results.wait_for(1, timeout=60)
        measured = gaps(receiver.requests)
    assert len(measured) == 9
    assert sum(measured) <= 9 * limit + SLACK, measured
    assert result.attempts == 10 and not result.delivered


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize(
    "retry_after",
    ["0", "Wed, 21 Oct 2015 07:28:00 GMT"],
    ids=["zero-seconds", "date-in-the-past"],
)
def test_retry_after_replaces_the_backoff(hub, fast, status, retry_after):
    """A 429/503 with Retry-After 0 (or a past date) is retried at once, not after 30 s backoff."""
    results = Results()
    first = (status, {"Retry-After": retry_after}, b"")
    with Receiver(responder=scripted(first)) as receiver:
        config = fast(receiver.url, backoff_start=30.0, backoff_limit=60.0, on_delivery=results)
        hub.attach("retry-after", "ev", config)
        hub.emit("ev", {})
        [result] = results.wait_for(1, timeout=10)
        assert [r.try_number for r in receiver.requests] == [1, 2]
    assert result.delivered and result.attempts == 2


def test_retry_after_seconds_are_waited(hub, fast):
    """A 503 with Retry-After: 1 waits about one second, though the backoff is a millisecond."""
    results = Results()
    with Receiver(responder=scripted((503, {"Retry-After": "1"}, b""))) as receiver:
        config = fast(receiver.url, backoff_start=0.001, backoff_limit=10.0, on_delivery=results)
        hub.attach("retry-after", "ev", config)
        hub.emit("ev", {})
        results.wait_for(1)
        [gap] = gaps(receiver.requests)
    assert 0.99 <= gap <= 1.0 + SLACK


def test_retry_after_http_date_is_waited(hub, fast):
    """A 429 with Retry-After as an HTTP date two seconds ahead waits until about that date."""
    results = Results()

    def respond(request: ReceivedRequest) -> Response:
        if request.try_number == 1:
            when = email.utils.formatdate(time.time() + 2, usegmt=True)
            return (429, {"Retry-After": when}, b"")
        return 204

    with Receiver(responder=respond) as receiver:
        config = fast(receiver.url, backoff_start=0.001, backoff_limit=10.0, on_delivery=results)
        hub.attach("retry-after", "ev", config)
        hub.emit("ev", {})
        results.wait_for(1)
        [gap] = gaps(receiver.requests)
    # The date has whole seconds: "now + 2" truncated is at least one second ahead.
    assert 0.9 <= gap <= 2.0 + SLACK


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("form", ["seconds", "date"])
def test_retry_after_is_capped_at_backoff_limit(hub, fast, status, form):
    """Retry-After of an hour (seconds or date) waits only backoff_limit (0.2 s)."""
    limit = 0.2
    value = "3600" if form == "seconds" else email.utils.formatdate(time.time() + 3600, usegmt=True)
    results = Results()
    with Receiver(responder=scripted((status, {"Retry-After": value}, b""))) as receiver:
        config = fast(receiver.url, backoff_start=0.001, backoff_limit=limit, on_delivery=results)
        hub.attach("capped", "ev", config)
        hub.emit("ev", {})
        [result] = results.wait_for(1, timeout=10)
        [gap] = gaps(receiver.requests)
    assert result.delivered and result.attempts == 2
    # At least the cap (so Retry-After was read, not the 1 ms backoff), far below an hour.
    assert limit - 0.003 <= gap <= limit + SLACK


def test_retry_after_on_other_statuses_is_ignored(hub, fast):
    """A 500 with Retry-After: 3600 is retried after the normal (millisecond) backoff."""
    results = Results()
    with Receiver(responder=scripted((500, {"Retry-After": "3600"}, b""))) as receiver:
        config = fast(receiver.url, backoff_start=0.001, backoff_limit=60.0, on_delivery=results)
        hub.attach("ignored", "ev", config)
        hub.emit("ev", {})
        [result] = results.wait_for(1, timeout=10)
    assert result.delivered and result.attempts == 2


# -- timeouts -----------------------------------------------------------------------------


def test_receiver_that_never_answers_times_out_each_try(hub, fast):
    """A receiver that reads the request and never answers fails each try after request_timeout."""
    timeout = 0.3
    results = Results()
    with RawServer(never_answer) as server:
        config = fast(server.url, request_timeout=timeout, max_attempts=2, on_delivery=results)
        hub.attach("silent", "ev", config)
        hub.emit("ev", {})
        [result] = results.wait_for(1, timeout=2 * timeout + 2 * SLACK)
        assert len(server.requests) == 2
    assert result.delivered is False
    assert result.attempts == 2
    assert result.status_code is None
    assert result.error is not None and "timed out" in result.error
    assert 2 * timeout - 0.01 <= result.elapsed <= 2 * timeout + 2 * SLACK


def test_a_late_watchdog_still_reports_the_whole_try_timeout(hub, fast, monkeypatch):
    """On a loaded machine the socket's own timeout can fire before the watchdog thread runs;
    the try's error is the same "timed out after N s" either way. The watchdog is made late
    here (its expiry waits 0.4 s first), standing in for a thread scheduled late."""
    from webhooks_emitter import _transport

    expire = _transport._Try.expire

    def late_expire(self: Any) -> None:
        time.sleep(0.4)  # a late thread, not a wait for a condition
        expire(self)

    monkeypatch.setattr(_transport._Try, "expire", late_expire)
    results = Results()
    with RawServer(never_answer) as server:
        hub.attach(
            "late", "ev", fast(server.url, request_timeout=0.3, max_attempts=1, on_delivery=results)
        )
        hub.emit("ev", {})
        [result] = results.wait_for(1)
    assert (result.delivered, result.error) == (False, "timed out after 0.3 s")


@pytest.mark.parametrize(
    "head, body",
    [
        (b"", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: " + b"p" * 500 + b"\r\n\r\n"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n", b"b" * 500),
    ],
    ids=["trickled-headers", "trickled-body"],
)
def test_trickling_receiver_fails_the_try_at_request_timeout(hub, fast, head, body):
    """A receiver sending a byte every 20 ms (10 s in all) fails the try after request_timeout.

    No single read waits longer than the timeout, so only a bound on the whole try ends
    it; a 200 status already read does not make the try a success.
    """
    timeout = 0.3
    results = Results()
    with RawServer(trickle(head, body)) as server:
        config = fast(server.url, request_timeout=timeout, max_attempts=2, on_delivery=results)
        hub.attach("trickled", "ev", config)
        hub.emit("ev", {})
        # Far less than the 10 s a trickled answer takes.
        [result] = results.wait_for(1, timeout=2 * timeout + 2 * SLACK)
        assert len(server.requests) == 2
    assert result.delivered is False
    assert result.attempts == 2
    assert result.error is not None and "timed out" in result.error
    assert result.elapsed <= 2 * timeout + 2 * SLACK


# -- order and isolation ------------------------------------------------------------------


def test_one_emitter_delivers_in_emit_order_waiting_behind_retries(hub, fast):
    """Events behind a retried one wait for it: the receiver sees them in emit order.

    Event 0 fails twice and event 3 once; the full sequence of (event, try) is fixed.
    """
    failures = {0: 2, 3: 1}

    def respond(request: ReceivedRequest) -> Response:
        return 500 if request.try_number <= failures.get(request.json()["seq"], 0) else 204

    with Receiver(responder=respond) as receiver:
        hub.attach("fifo", "ev", fast(receiver.url, max_attempts=5))
        for seq in range(6):
            hub.emit("ev", {"seq": seq})
        requests = receiver.wait_for(9)
        assert hub.flush(5)
        assert len(receiver.requests) == 9
    assert [(r.json()["seq"], r.try_number) for r in requests] == [
        (0, 1),
        (0, 2),
        (0, 3),
        (1, 1),
        (2, 1),
        (3, 1),
        (3, 2),
        (4, 1),
        (5, 1),
    ]


def test_many_events_keep_their_order(hub, fast, receiver):
    """Two hundred events emitted quickly arrive one after the other in emit order."""
    hub.attach("fifo", "ev", fast(receiver.url))
    ids = [hub.emit("ev", {"seq": seq}) for seq in range(200)]
    requests = receiver.wait_for(200)
    assert [r.delivery_id for r in requests] == ids


def test_emitter_stuck_in_a_try_does_not_delay_another(hub, fast, receiver):
    """While one emitter's try hangs on a silent receiver, another emitter delivers every event."""
    stuck = Results()
    with RawServer(never_answer) as server:
        hub.attach("stuck", "ev", fast(server.url, request_timeout=30.0, on_delivery=stuck))
        hub.attach("healthy", "ev", fast(receiver.url))
        ids = [hub.emit("ev", {"seq": seq}) for seq in range(5)]
        server.wait_for(1)
        requests = receiver.wait_for(5)
        assert [r.delivery_id for r in requests] == ids
        # The stuck emitter is still on its first try of the first event.
        assert len(server.requests) == 1
        assert stuck.items == []
    hub.detach("stuck")


def test_emitter_in_a_long_backoff_does_not_delay_another(hub, fast, receiver):
    """While one emitter waits a 30 s backoff, another emitter delivers every event."""
    with Receiver(responder=lambda request: 500) as failing:
        config = fast(failing.url, backoff_start=30.0, backoff_limit=30.0)
        hub.attach("backing-off", "ev", config)
        hub.attach("healthy", "ev", fast(receiver.url))
        ids = [hub.emit("ev", {"seq": seq}) for seq in range(5)]
        failing.wait_for(1)
        requests = receiver.wait_for(5)
        assert [r.delivery_id for r in requests] == ids
        assert len(failing.requests) == 1
        hub.detach("backing-off")


# -- pause, detach, shutdown during a wait -------------------------------------------------


def test_pause_cuts_a_long_backoff_and_restart_retries_at_once(hub, fast, logs):
    """pause during a 30 s backoff takes effect at once; restart tries again at once.

    The count of tries goes on: the retry is try 2 of the same delivery id, and the
    result reports attempts=2.
    """
    results = Results()
    with Receiver(responder=scripted(500)) as receiver:
        config = fast(receiver.url, backoff_start=30.0, backoff_limit=30.0, on_delivery=results)
        hub.attach("pausable", "ev", config)
        request_id = hub.emit("ev", {})
        logs.wait_for(retrying)  # the emitter is entering its 30 s wait
        hub.pause("pausable")
        assert not hub.is_started("pausable")
        assert hub.flush(1)  # a paused emitter is not waited for
        restarted = time.monotonic()
        hub.restart("pausable")
        assert hub.is_started("pausable")
        [result] = results.wait_for(1, timeout=10)
        requests = receiver.requests
    assert [(r.delivery_id, r.try_number) for r in requests] == [(request_id, 1), (request_id, 2)]
    assert requests[1].received_at - restarted <= SLACK
    assert result.delivered is True
    assert result.attempts == 2


def test_pause_keeps_the_event_and_those_behind_it(hub, fast, logs):
    """Events queued behind one paused in its backoff are delivered after restart, in order."""
    results = Results()

    def respond(request: ReceivedRequest) -> Response:
        return 500 if request.json()["seq"] == 0 and request.try_number == 1 else 204

    with Receiver(responder=respond) as receiver:
        config = fast(receiver.url, backoff_start=30.0, backoff_limit=30.0, on_delivery=results)
        hub.attach("pausable", "ev", config)
        first = hub.emit("ev", {"seq": 0})
        logs.wait_for(retrying)
        hub.pause("pausable")
        later = [hub.emit("ev", {"seq": seq}) for seq in (1, 2)]
        assert hub.stats("pausable").queued == 3
        hub.restart("pausable")
        results.wait_for(3, timeout=10)
        assert hub.flush(5)
        requests = receiver.requests
    assert [(r.delivery_id, r.try_number) for r in requests] == [
        (first, 1),
        (first, 2),
        (later[0], 1),
        (later[1], 1),
    ]
    assert [(r.request_id, r.attempts) for r in results.items] == [
        (first, 2),
        (later[0], 1),
        (later[1], 1),
    ]


def test_detach_during_a_long_backoff_ends_quickly(hub, fast, logs):
    """detach while waiting a 30 s backoff stops the emitter's thread within a fraction of it.

    The event being retried and the two queued behind it are dropped and logged.
    """
    with Receiver(responder=lambda request: 500) as receiver:
        config = fast(receiver.url, backoff_start=30.0, backoff_limit=30.0)
        hub.attach("detachable", "ev", config)
        hub.emit("ev", {"seq": 0})
        logs.wait_for(retrying)
        hub.emit("ev", {"seq": 1})
        hub.emit("ev", {"seq": 2})
        thread = emitter_thread("detachable")
        started = time.monotonic()
        hub.detach("detachable")
        thread.join(SLACK + 2)
        ended = time.monotonic() - started
        assert not thread.is_alive()
        assert len(receiver.requests) == 1
    assert ended <= SLACK + 2
    assert not hub.is_started("detachable")
    warnings = logs.matching(
        lambda r: r.levelno >= logging.WARNING and getattr(r, "emitter_id", None) == "detachable"
    )
    # What was dropped is logged with its count: the two queued and the one being retried.
    assert dropped_count(warnings) == 3, [r.getMessage() for r in warnings]


def test_shutdown_during_a_long_backoff_ends_quickly(fast, logs):
    """shutdown(timeout=0.2) while an emitter waits a 30 s backoff returns within seconds."""
    from webhooks_emitter import WebhooksEmitter

    instance = WebhooksEmitter()
    with Receiver(responder=lambda request: 500) as receiver:
        instance.attach("closing", "ev", fast(receiver.url, backoff_start=30.0, backoff_limit=30.0))
        instance.emit("ev", {})
        logs.wait_for(retrying)
        thread = emitter_thread("closing")
        started = time.monotonic()
        instance.shutdown(timeout=0.2)
        thread.join(SLACK + 2)
        assert not thread.is_alive()
        assert time.monotonic() - started <= 0.2 + SLACK + 2
        assert len(receiver.requests) == 1
    assert instance.list_emitters() == []


# -- 410 Gone -----------------------------------------------------------------------------


def test_410_pauses_the_emitter_and_keeps_its_events(hub, fast, logs):
    """A 410 with pause_on_gone pauses the emitter (WARNING), keeps its events; restart resumes."""
    gone = threading.Event()
    gone.set()
    results = Results()

    def respond(request: ReceivedRequest) -> Response:
        return 410 if gone.is_set() else 204

    with Receiver(responder=respond) as receiver:
        hub.attach("gone", "ev", fast(receiver.url, max_attempts=3, on_delivery=results))
        first = hub.emit("ev", {"seq": 0})
        second = hub.emit("ev", {"seq": 1})
        warning = logs.wait_for(lambda r: r.levelno == logging.WARNING and "410" in r.getMessage())
        assert getattr(warning, "emitter_id", None) == "gone"
        assert getattr(warning, "request_id", None) == first
        assert not hub.is_started("gone")
        assert "gone" not in hub.list_emitters()
        stats = hub.stats("gone")
        assert stats.paused and stats.queued == 2
        assert len(receiver.requests) == 1  # paused at once, not retried
        assert results.items == []
        gone.clear()
        hub.restart("gone")
        results.wait_for(2)
        requests = receiver.requests
    assert [(r.delivery_id, r.try_number) for r in requests] == [
        (first, 1),
        (first, 2),
        (second, 1),
    ]
    assert [(r.request_id, r.delivered, r.attempts) for r in results.items] == [
        (first, True, 2),
        (second, True, 1),
    ]


def test_410_without_pause_on_gone_is_an_ordinary_failure(hub, fast, logs):
    """With pause_on_gone=False a 410 is retried like any failure and the emitter keeps running."""
    results = Results()
    with Receiver(responder=lambda request: 410) as receiver:
        config = fast(receiver.url, pause_on_gone=False, max_attempts=3, on_delivery=results)
        hub.attach("gone", "ev", config)
        hub.emit("ev", {})
        [result] = results.wait_for(1)
        assert len(receiver.requests) == 3
    assert (result.delivered, result.attempts, result.status_code) == (False, 3, 410)
    assert hub.is_started("gone")
    assert not logs.matching(lambda r: r.levelno == logging.WARNING and "410" in r.getMessage())


# -- giving up ----------------------------------------------------------------------------


def given_up_record(logs: LogWatch, request_id: str) -> logging.LogRecord:
    """The ERROR record about ``request_id`` (waited for: it is written before on_delivery)."""
    return logs.wait_for(
        lambda r: r.levelno == logging.ERROR and getattr(r, "request_id", None) == request_id
    )


def test_giving_up_calls_on_delivery_and_logs_an_error(hub, fast, logs):
    """After its last try an event is reported: on_delivery(delivered=False) and one ERROR line.

    The record carries emitter_id, event and request_id as extra fields, and its message
    names the emitter, event, request id, the tries and the last status.
    """
    results = Results()
    with Receiver(responder=lambda request: 500) as receiver:
        hub.attach("doomed", "order.paid", fast(receiver.url, max_attempts=3, on_delivery=results))
        request_id = hub.emit("order.paid", {"order": 1})
        [result] = results.wait_for(1)
        assert len(receiver.requests) == 3
    assert result == DeliveryResult(
        emitter_id="doomed",
        event="order.paid",
        request_id=request_id,
        delivered=False,
        attempts=3,
        status_code=500,
        error=result.error,
        elapsed=result.elapsed,
    )
    assert result.error is not None and "500" in result.error
    record = given_up_record(logs, request_id)
    assert (record.emitter_id, record.event, record.request_id) == (  # type: ignore[attr-defined]
        "doomed",
        "order.paid",
        request_id,
    )
    message = record.getMessage()
    for part in ("doomed", "order.paid", request_id, "500"):
        assert part in message, message
    assert re.search(r"\b3\b", message), message
    errors = logs.matching(lambda r: r.levelno >= logging.ERROR)
    assert len(errors) == 1


def test_giving_up_after_connection_errors_logs_the_error(hub, fast, logs):
    """When no answer ever came, the ERROR line gives the last error instead of a status."""
    with closed_port() as port:  # bound, never listening: refuses, never reused
        results = Results()
        config = fast(f"http://127.0.0.1:{port}/x", max_attempts=2, on_delivery=results)
        hub.attach("down", "ev", config)
        request_id = hub.emit("ev", {})
        [result] = results.wait_for(1)
        record = given_up_record(logs, request_id)
        message = record.getMessage()
        assert "refused" in message and re.search(r"\b2\b", message), message
        assert record.emitter_id == "down" and record.event == "ev"  # type: ignore[attr-defined]
        assert result.status_code is None and result.attempts == 2
