"""Receivers that fail, stall, lie or flood: what each fault does to a delivery.

The fault matrix runs one event against a raw-socket server (tests/support/faultservers.py) that
misbehaves in one way, and states the expected outcome of each case: delivered or not, the
number of tries (counted by the emitter and, where a request gets through, by the server),
the last status and the error text. Further tests cover keep-alive connections closed by
the receiver, bodies larger than the 64 KiB read cap, ``max_body_size`` and ``pause_on_gone``.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import pytest
from faultservers import (
    CLOSE,
    HANG,
    RESET,
    WAIT,
    Conn,
    FaultServer,
    Results,
    closed_port,
    serve,
)
from network_fence import NetworkFence

from webhooks_emitter import Config, WebhooksEmitter
from webhooks_emitter.testing import ReceivedRequest, Receiver

# -- scripts: one misbehaviour each ----------------------------------------------------


def reset_before_reading(conn: Conn) -> None:
    """The whole request arrives, is never read, and the connection is aborted (RST)."""
    if conn.peek_request():
        conn.reset()


def slow_headers(conn: Conn) -> None:
    """A status line, then a header trickled one byte at a time, forever."""
    if conn.read_request() is not None and conn.send(b"HTTP/1.1 200 OK\r\nX-Slow: "):
        conn.trickle_forever()


def slow_body(conn: Conn) -> None:
    """200 with a Content-Length, then the body trickled one byte at a time."""
    if conn.read_request() is not None and conn.send(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    ):
        conn.trickle_forever()


def slow_body_until_close(conn: Conn) -> None:
    """200 with a body delimited by the end of the connection, trickled and never ended."""
    if conn.read_request() is not None and conn.send(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
    ):
        conn.trickle_forever()


def garbage_status_line(conn: Conn) -> None:
    """Something that is not HTTP at all."""
    if conn.read_request() is not None:
        conn.send(b"garbage\r\n\r\n")
        conn.close()


def endless_headers(conn: Conn) -> None:
    """A status line followed by header lines without end (sent at full speed)."""
    if conn.read_request() is not None and conn.send(b"HTTP/1.1 200 OK\r\n"):
        line = b"X-Flood: " + b"f" * 100 + b"\r\n"
        while conn.send(line):
            pass


def retry_after_date(seconds: float) -> str:
    """An HTTP date ``seconds`` from now."""
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


def retry_after_case(status: int, value: Callable[[], str]) -> Case:
    """The first try gets ``status`` with ``Retry-After: value()`` (made when the receiver
    answers, so an HTTP date is always ahead), longer than backoff_limit (0.3 s): the second
    try comes after the capped wait and is delivered."""
    return Case(
        serve(
            lambda r: (
                (status, {"Retry-After": value()}, b"")
                if r.number == 1 and r.connection == 1
                else 204
            )
        ),
        True,
        2,
        None,
        status=204,
        seen_by_server=2,
        fields=RETRY_AFTER_FIELDS,
        min_gap=0.29,
        connections=KEPT_ALIVE,
    )


class _Watch(logging.Handler):
    """Sets an event when a record containing ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = threading.Event()
        self.records: list[logging.LogRecord] = []
        self.callback: Optional[Callable[[logging.LogRecord], None]] = (
            None  # run in the logging thread
        )

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.records.append(record)
            if self.callback is not None:
                self.callback(record)
            self.seen.set()


@contextlib.contextmanager
def _watching(text: str) -> Iterator[_Watch]:
    watch = _Watch(text)
    logger = logging.getLogger("webhooks_emitter")
    logger.addHandler(watch)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)


@pytest.fixture
def paused_watch() -> Iterator[_Watch]:
    """Watches the library's log for the 410 pause warning."""
    with _watching("410 Gone") as watch:
        yield watch


@pytest.fixture
def retry_watch(caplog: pytest.LogCaptureFixture) -> Iterator[_Watch]:
    """Watches the library's log for the INFO line written before a backoff wait."""
    caplog.set_level(logging.INFO, logger="webhooks_emitter")
    with _watching("retrying in") as watch:
        yield watch


# -- the matrix ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One fault and what must come of it."""

    script: Optional[Callable[[Conn], None]]  # None: nothing listens (connection refused)
    delivered: bool
    tries: int
    error: Optional[str]
    status: Optional[int] = None
    seen_by_server: Optional[int] = None  # requests the server read; None: not checked
    fields: dict[str, Any] = field(default_factory=dict)  # Config fields beyond the defaults
    min_gap: float = 0.0  # the least seconds between the first two tries at the server
    max_gap: float = float("inf")  # the most seconds between them (a loose bound)
    # Connections the server accepted: one per try after a broken one; an answered try
    # leaves its connection open for the next (KEPT_ALIVE).
    connections: Optional[int] = None  # None: as many as tries


# Defaults for every case: 3 tries, millisecond backoffs (from the fast fixture) and a
# 5 s budget per try; the cases about stalling receivers give each try 0.5 s (SLOW).
TRIES = 3
TIMEOUT = 0.5
SLOW = {"request_timeout": TIMEOUT, "max_attempts": 2}
TIMED_OUT = f"timed out after {TIMEOUT:g} s"
KEPT_ALIVE = 1
# A Retry-After wait is capped at backoff_limit; with a 0.3 s cap the wait is 0.3 s, far above
# the 1-2 ms the exponential backoff of these configs would give, so the gap shows which won.
RETRY_AFTER_FIELDS = {"backoff_limit": 0.3}

MATRIX = {
    # Nothing listens: every try fails at connect, all tries are made.
    "connection refused": Case(None, False, TRIES, "connection refused"),
    # The request reaches the server's buffer, which aborts the connection unread.
    "reset before the request is read": Case(
        reset_before_reading, False, TRIES, "connection reset by the receiver", seen_by_server=0
    ),
    # The server reads each try's request, then aborts: it saw every try (at least once).
    "reset after the request, no answer": Case(
        serve(lambda r: RESET),
        False,
        TRIES,
        "connection reset by the receiver",
        seen_by_server=TRIES,
    ),
    "orderly close after the request, no answer": Case(
        serve(lambda r: CLOSE),
        False,
        TRIES,
        "the receiver closed the connection without answering",
        seen_by_server=TRIES,
    ),
    # request_timeout bounds the whole try, however steadily the bytes come. A head cut
    # short gives no status; a body still trickling at the deadline fails the try even
    # after a 200 (CONTRACT 3: the answer is read within request_timeout), status kept.
    "slow headers": Case(slow_headers, False, 2, TIMED_OUT, fields=SLOW),
    "slow body after 200": Case(slow_body, False, 2, TIMED_OUT, status=200, fields=SLOW),
    "slow body read to close": Case(
        slow_body_until_close, False, 2, TIMED_OUT, status=200, fields=SLOW
    ),
    "accepts and never answers": Case(
        serve(lambda r: HANG), False, 2, TIMED_OUT, seen_by_server=2, fields=SLOW
    ),
    # Redirects are answers like any other non-2xx: not followed, the try fails.
    "301 redirect": Case(
        serve(lambda r: (301, {"Location": "http://169.254.169.254/"}, b"")),
        False,
        TRIES,
        "HTTP 301",
        status=301,
        seen_by_server=TRIES,
        connections=KEPT_ALIVE,
    ),
    "307 redirect": Case(
        serve(lambda r: (307, {"Location": "http://127.0.0.1:9/"}, b"")),
        False,
        TRIES,
        "HTTP 307",
        status=307,
        seen_by_server=TRIES,
        connections=KEPT_ALIVE,
    ),
    "408": Case(
        serve(lambda r: 408),
        False,
        TRIES,
        "HTTP 408",
        status=408,
        seen_by_server=TRIES,
        connections=KEPT_ALIVE,
    ),
    "500": Case(
        serve(lambda r: 500),
        False,
        TRIES,
        "HTTP 500",
        status=500,
        seen_by_server=TRIES,
        connections=KEPT_ALIVE,
    ),
    "503 without Retry-After": Case(
        serve(lambda r: 503),
        False,
        TRIES,
        "HTTP 503",
        status=503,
        seen_by_server=TRIES,
        connections=KEPT_ALIVE,
    ),
    # 429/503 with Retry-After: the next try waits that long (capped at backoff_limit).
    "429 Retry-After seconds": retry_after_case(429, lambda: "5"),
    "429 Retry-After HTTP date": retry_after_case(429, lambda: retry_after_date(30)),
    "503 Retry-After seconds": retry_after_case(503, lambda: "5"),
    # A Retry-After shorter than the backoff wins too: 0 s instead of 5 s.
    "503 Retry-After 0 under a 5 s backoff": Case(
        serve(lambda r: (503, {"Retry-After": "0"}, b"") if r.number == 1 else 204),
        True,
        2,
        None,
        status=204,
        seen_by_server=2,
        fields={"backoff_start": 5.0, "backoff_limit": 5.0},
        max_gap=4.0,
        connections=KEPT_ALIVE,
    ),
    # Without pause_on_gone a 410 is one more failing status (see test_gone_pauses_* below).
    "410 without pause_on_gone": Case(
        serve(lambda r: 410),
        False,
        TRIES,
        "HTTP 410",
        status=410,
        seen_by_server=TRIES,
        connections=KEPT_ALIVE,
        fields={"pause_on_gone": False},
    ),
    "garbage status line": Case(
        garbage_status_line,
        False,
        TRIES,
        "invalid HTTP answer: BadStatusLine: garbage",
        seen_by_server=TRIES,
    ),
    "endless headers": Case(
        endless_headers,
        False,
        TRIES,
        "invalid HTTP answer: HTTPException: got more than 100 headers",
        seen_by_server=TRIES,
    ),
}


@pytest.fixture
def results() -> Results:
    """Collects the DeliveryResults of the emitter under test."""
    return Results()


@pytest.mark.parametrize("case", list(MATRIX.values()), ids=list(MATRIX))
def test_fault_matrix(
    case: Case,
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    results: Results,
    network_fence: NetworkFence,
) -> None:
    """Each fault ends in the outcome written in MATRIX: delivered or not, tries, status, error."""
    fields = {"max_attempts": TRIES, "request_timeout": 5.0, **case.fields}
    with _server(case.script) as (url, server):
        hub.attach("faulty", "order.paid", fast(url, on_delivery=results, **fields))
        request_id = hub.emit("order.paid", {"order": 1})
        result = results.next()
        assert (result.delivered, result.attempts, result.error) == (
            case.delivered,
            case.tries,
            case.error,
        )
        assert result.status_code == case.status
        assert result.request_id == request_id
        # Each try is bounded: no case may take much longer than its tries' budgets.
        assert result.elapsed < case.tries * fields["request_timeout"] + 5
        if server is not None and case.seen_by_server is not None:
            seen = server.requests
            assert len(seen) == case.seen_by_server
            assert {r.delivery_id for r in seen} <= {request_id}
            if len(seen) > 1:
                gap = seen[1].received_at - seen[0].received_at
                assert case.min_gap <= gap <= case.max_gap
        assert network_fence.attempts == []  # e.g. no redirect was followed off loopback
        if server is not None:
            assert server.connections == (
                case.tries if case.connections is None else case.connections
            )


@contextlib.contextmanager
def _server(
    script: Optional[Callable[[Conn], None]],
) -> Iterator[tuple[str, Optional[FaultServer]]]:
    """Run ``script`` on a FaultServer; with None, give a port that refuses connections."""
    if script is None:
        with closed_port() as port:
            yield f"http://127.0.0.1:{port}/hooks", None
    else:
        with FaultServer(script) as server:
            yield server.url, server


def _emitter_threads(emitter_id: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"webhooks-emitter:{emitter_id}"]


def test_retry_after_wait_is_cut_by_detach(
    hub: WebhooksEmitter, fast: Callable[..., Config], retry_watch: _Watch
) -> None:
    """A receiver asking for an hour's wait cannot hold the emitter: detach ends it at once
    (its thread may have ended already: a wait longer than idle_timeout holds no thread)."""
    answers = serve(lambda r: (503, {"Retry-After": "3600"}, b""))
    with FaultServer(answers) as server:
        hub.attach("patient", "e", fast(server.url, backoff_limit=3600.0))
        hub.emit("e", {"n": 1})
        assert retry_watch.seen.wait(WAIT)
        assert "retrying in 3600.000 s" in retry_watch.records[0].getMessage()
        threads = _emitter_threads("patient")
        hub.detach("patient")
        for thread in threads:
            thread.join(WAIT)
            assert not thread.is_alive()
        assert _emitter_threads("patient") == []
        assert len(server.requests) == 1


def test_pause_and_restart_as_the_wait_begins_retry_at_once(
    hub: WebhooksEmitter, fast: Callable[..., Config], retry_watch: _Watch
) -> None:
    """pause() then restart() just as a backoff wait begins: the next try is made at once.

    Contract (section 5): after restart, an event whose wait was cut short is tried again at
    once. Both calls are made from the log line written just before the wait starts, so the
    order of events is fixed: a pause that restart() "forgets" before the emitter's thread
    saw it would leave the event waiting the whole Retry-After (an hour here).
    """
    answers = serve(lambda r: (503, {"Retry-After": "3600"}, b"") if r.number == 1 else 204)
    results = Results()

    def pause_and_restart(record: logging.LogRecord) -> None:
        hub.pause("patient")
        hub.restart("patient")

    with FaultServer(answers) as server:
        retry_watch.callback = pause_and_restart
        hub.attach("patient", "e", fast(server.url, backoff_limit=3600.0, on_delivery=results))
        hub.emit("e", {"n": 1})
        result = results.next()
        assert (result.delivered, result.attempts) == (True, 2)
        assert len(server.requests) == 2


# -- keep-alive connections the receiver closes ------------------------------------------


def test_keep_alive_closed_by_receiver_after_answer(
    hub: WebhooksEmitter, fast: Callable[..., Config]
) -> None:
    """A receiver that answers, then closes the connection (no Connection: close header).

    Expected: the next delivery succeeds in one try on a new connection. The closed
    connection is noticed before it is reused (urllib3 checks a pooled connection for a
    close), and should the close cross the request, the transport sends again once on a new
    connection within the same try (next test).
    """
    closed = threading.Event()

    def script(conn: Conn) -> None:
        if conn.read_request() is not None:
            conn.answer(204)
            conn.close()
            closed.set()

    results = Results()
    with FaultServer(script) as server:
        hub.attach(
            "ka", "e", fast(server.url, on_delivery=results, backoff_start=5.0, backoff_limit=5.0)
        )
        hub.emit("e", {"n": 1})
        assert results.next().delivered
        assert closed.wait(WAIT)
        hub.emit("e", {"n": 2})
        second = results.next()
        assert (second.delivered, second.attempts, second.error) == (True, 1, None)
        assert second.elapsed < 5  # no retry, whose backoff would be 5 s
        assert server.connections == 2
        assert [r.connection for r in server.requests] == [1, 2]


def test_keep_alive_close_crossing_the_request(
    hub: WebhooksEmitter, fast: Callable[..., Config]
) -> None:
    """A receiver that drops a kept-alive connection just as the next request arrives on it.

    This is the race of a receiver's idle timeout: the request is sent on a connection the
    receiver aborts (unread). Expected: delivered in one try, because nothing was answered
    and the transport sends once more on a new connection (counted as the same try).
    """

    def script(conn: Conn) -> None:
        if conn.index == 1:
            if conn.read_request() is not None and conn.answer(204) and conn.peek_request():
                conn.reset()  # the second request sits unread in the buffer
            return
        serve(lambda r: 204)(conn)

    results = Results()
    with FaultServer(script) as server:
        hub.attach(
            "ka", "e", fast(server.url, on_delivery=results, backoff_start=5.0, backoff_limit=5.0)
        )
        first_id = hub.emit("e", {"n": 1})
        assert results.next().delivered
        second_id = hub.emit("e", {"n": 2})
        second = results.next()
        assert (second.delivered, second.attempts, second.error) == (True, 1, None)
        assert server.connections == 2
        assert [(r.connection, r.delivery_id) for r in server.requests] == [
            (1, first_id),
            (2, second_id),
        ]


def test_a_fresh_connection_reset_is_not_resent(
    hub: WebhooksEmitter, fast: Callable[..., Config]
) -> None:
    """The one extra send is only for a reused connection: a reset on a new one fails the try."""
    results = Results()
    with FaultServer(reset_before_reading) as server:
        hub.attach("fresh", "e", fast(server.url, on_delivery=results, max_attempts=1))
        hub.emit("e", {"n": 1})
        result = results.next()
        assert (result.delivered, result.attempts, result.error) == (
            False,
            1,
            "connection reset by the receiver",
        )
        assert server.connections == 1


# -- responses larger than the read cap ---------------------------------------------------

CHUNK = b"z" * 65536


def flood(head: bytes) -> Callable[[Conn], None]:
    """A script answering each request with ``head`` and then body bytes without end."""

    def script(conn: Conn) -> None:
        while conn.read_request() is not None:
            if not conn.send(head):
                return
            while conn.send(CHUNK):
                pass
            return

    return script


def flood_chunked(conn: Conn) -> None:
    """200 with a chunked body whose chunks never end."""
    if conn.read_request() is not None and conn.send(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    ):
        while conn.send(b"10000\r\n" + CHUNK + b"\r\n"):
            pass


FLOODS = {
    "content-length of a terabyte": (
        flood(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n"),
        True,
    ),
    "body until close": (flood(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"), True),
    "chunked without end": (flood_chunked, True),
    "500 with a huge body": (
        flood(b"HTTP/1.1 500 Oops\r\nContent-Length: 1000000000000\r\n\r\n"),
        False,
    ),
}


@pytest.fixture
def traced() -> Iterator[None]:
    """Trace Python allocations for the test."""
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("script, ok", list(FLOODS.values()), ids=list(FLOODS))
def test_huge_answer_is_read_to_64_kib_at_most(
    script: Callable[[Conn], None],
    ok: bool,
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    traced: None,
) -> None:
    """An unending answer body is cut after 64 KiB: each try ends at once and memory stays flat.

    A 2xx is delivered in one try; a 500 is retried (each try on a new connection, since a
    connection with an unread body is never reused). The emitter then delivers the next
    events, and the peak of Python memory stays far below what the receiver sent.
    """
    results = Results()
    with FaultServer(script) as server:
        hub.attach(
            "flooded",
            "e",
            fast(server.url, on_delivery=results, max_attempts=2, request_timeout=5.0),
        )
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        for n in range(3):
            hub.emit("e", {"n": n})
        outcomes = [results.next() for _ in range(3)]
        peak = tracemalloc.get_traced_memory()[1] - baseline
        if ok:
            assert [(r.delivered, r.attempts, r.status_code) for r in outcomes] == [
                (True, 1, 200)
            ] * 3
        else:
            assert [(r.delivered, r.attempts, r.error) for r in outcomes] == [
                (False, 2, "HTTP 500")
            ] * 3
        assert all(r.elapsed < 4 for r in outcomes)  # cut at the cap, not at request_timeout
        assert server.connections == sum(r.attempts for r in outcomes)
        assert peak < 2 * 1024 * 1024, f"peak Python memory grew by {peak} bytes"


# -- max_body_size ------------------------------------------------------------------------


def payload_of(size: int) -> dict[str, str]:
    """A payload whose JSON encoding is exactly ``size`` bytes."""
    overhead = len(b'{"p":""}')
    return {"p": "x" * (size - overhead)}


def test_payload_over_max_body_size_is_refused_in_emit(
    hub: WebhooksEmitter, fast: Callable[..., Config], receiver: Receiver
) -> None:
    """emit raises ValueError for a payload one byte over the limit; nothing is queued or sent."""
    hub.attach("small", "e", fast(receiver.url, max_body_size=100))
    with pytest.raises(ValueError, match="max_body_size"):
        hub.emit("e", payload_of(101))
    hub.emit("e", payload_of(100), request_id="at-the-limit")
    [request] = receiver.wait_for(1)
    assert hub.flush(WAIT)
    assert request.delivery_id == "at-the-limit"
    assert len(request.body) == 100
    assert hub.stats("small").delivered == 1


def test_smallest_limit_among_subscribed_emitters_applies(
    hub: WebhooksEmitter, fast: Callable[..., Config], receiver: Receiver
) -> None:
    """The limit is the smallest among the emitters subscribed to the event (wildcard included).

    An over-limit payload reaches no emitter at all, not even those whose own limit is larger;
    an emitter subscribed to another event does not count.
    """
    hub.attach("big", "e", fast(receiver.url, max_body_size=1000))
    hub.attach("small", "e", fast(receiver.url, max_body_size=200))
    hub.attach("elsewhere", "other", fast(receiver.url, max_body_size=10))
    with pytest.raises(ValueError, match="200"):
        hub.emit("e", payload_of(500))
    hub.emit("e", payload_of(150), request_id="fits")
    requests = receiver.wait_for(2)
    assert hub.flush(WAIT)
    assert [r.delivery_id for r in requests] == ["fits", "fits"]
    hub.attach("everything", "*", fast(receiver.url, max_body_size=120))
    with pytest.raises(ValueError, match="120"):
        hub.emit("e", payload_of(150))
    assert hub.flush(WAIT)
    assert len(receiver.requests) == 2
    assert all(hub.stats(e).queued == 0 for e in ("big", "small", "everything"))


def test_no_max_body_size_means_no_limit(
    hub: WebhooksEmitter, fast: Callable[..., Config], receiver: Receiver
) -> None:
    """With max_body_size=None a payload above the 1 MiB default is queued and delivered."""
    hub.attach("unbounded", "e", fast(receiver.url, max_body_size=None))
    hub.emit("e", payload_of(2 * 1024 * 1024))
    [request] = receiver.wait_for(1)
    assert len(request.body) == 2 * 1024 * 1024
    assert hub.flush(WAIT)


def test_default_max_body_size_is_one_mebibyte(
    hub: WebhooksEmitter, fast: Callable[..., Config], receiver: Receiver
) -> None:
    """The default limit is 1048576 bytes: exactly that is accepted, one byte more is not."""
    hub.attach("default", "e", fast(receiver.url))
    with pytest.raises(ValueError, match="1048576"):
        hub.emit("e", payload_of(1048577))
    hub.emit("e", payload_of(1048576))
    [request] = receiver.wait_for(1)
    assert len(request.body) == 1048576
    assert hub.flush(WAIT)


# -- pause_on_gone ------------------------------------------------------------------------


def test_gone_pauses_the_emitter_and_keeps_the_events(
    hub: WebhooksEmitter, fast: Callable[..., Config], paused_watch: _Watch
) -> None:
    """410 Gone pauses the emitter with a WARNING; the event and those behind it stay queued.

    Nothing is reported as given up; after restart the event is tried again (its count of
    tries goes on) and the queued ones follow, in order.
    """
    results = Results()
    first = threading.Lock()  # held once taken: only the very first request is answered 410

    def gone_once(request: ReceivedRequest) -> int:
        return 410 if first.acquire(blocking=False) else 204

    with Receiver(responder=gone_once) as receiver:
        hub.attach("gone", "e", fast(receiver.url, on_delivery=results, max_attempts=5))
        ids = [hub.emit("e", {"n": n}) for n in range(3)]
        assert hub.flush(
            WAIT
        )  # returns once the emitter is paused (paused ones are not waited for)
        assert paused_watch.seen.wait(WAIT)  # the warning follows the pause it reports
        assert paused_watch.records[0].levelno == logging.WARNING
        assert paused_watch.records[0].emitter_id == "gone"  # type: ignore[attr-defined]
        assert not hub.is_started("gone")
        assert "gone" not in hub.list_emitters()
        assert hub.stats("gone").queued == 3
        assert results.empty()
        assert [r.try_number for r in receiver.requests] == [1]
        hub.restart("gone")
        outcomes = [results.next() for _ in range(3)]
        assert [(r.request_id, r.delivered, r.attempts) for r in outcomes] == [
            (ids[0], True, 2),
            (ids[1], True, 1),
            (ids[2], True, 1),
        ]
        assert [r.delivery_id for r in receiver.requests] == [ids[0], ids[0], ids[1], ids[2]]


def test_gone_without_pause_on_gone_is_given_up(
    hub: WebhooksEmitter, fast: Callable[..., Config], paused_watch: _Watch
) -> None:
    """With pause_on_gone=False a 410 is retried and given up like any failing status."""
    results = Results()
    with Receiver(responder=lambda request: 410) as receiver:
        hub.attach("gone", "e", fast(receiver.url, on_delivery=results, pause_on_gone=False))
        hub.emit("e", {"n": 1})
        result = results.next()
        assert (result.delivered, result.attempts, result.status_code, result.error) == (
            False,
            3,
            410,
            "HTTP 410",
        )
        assert hub.is_started("gone")
        assert not paused_watch.seen.is_set()
