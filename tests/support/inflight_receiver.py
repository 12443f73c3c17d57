"""A receiver on 127.0.0.1 that measures concurrency and order, for the parallel-delivery tests.

:class:`InflightReceiver` is a :class:`webhooks_emitter.testing.Receiver` that also records,
per path, how many requests are in flight at once (now and the most ever), and every try
as a :class:`Try`: its ordering key and number (taken from the JSON body,
``{"key": "k3", "n": 7}``), when it was read and when its answer was decided. A *rule*
decides each answer: a status, headers, a delay, or a hold until something happens.

A try counts as in flight from the moment its request was read until its answer is
decided, which is just before the answer is written: the emitter cannot learn the answer
(and start another try in its place) before that, so the counts and times seen here never
show more concurrency, or less spacing, than the emitter really had.

Every wait is bounded, and :meth:`InflightReceiver.stop` releases every held request.

The emitter's side of the same tests is watched by :class:`Results` (an ``on_delivery``
that records each result and its thread) and :class:`LogWatch` (waits for a log record,
such as the one that says a failed try will be retried, before the test acts on it).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from webhooks_emitter import DeliveryResult
from webhooks_emitter.testing import ReceivedRequest, Receiver

#: Seconds a test waits for a condition before it fails (generous: the machine is shared).
WAIT = 10.0


@dataclass
class Try:
    """One request as the receiver saw it, with what it answered.

    Attributes:
        path: the request path.
        key: the ``"key"`` of the JSON body (the ordering key the test used), or None.
        n: the ``"n"`` of the JSON body (the event's number in emit order), or None.
        delivery_id: the ``X-Webhooks-Delivery`` header.
        try_number: 1 for the first request with this delivery id on this path, and so on.
        start: ``time.monotonic()`` when the request was read.
        end: ``time.monotonic()`` when its answer was decided (None while in flight).
        status: the status answered (None while in flight).
        inflight: requests in flight on this path when this one was read, itself included.
    """

    path: str
    key: Optional[str]
    n: Optional[int]
    delivery_id: Optional[str]
    try_number: int
    start: float
    end: Optional[float] = None
    status: Optional[int] = None
    inflight: int = 0


@dataclass(frozen=True)
class Answer:
    """What a rule answers to one try.

    Attributes:
        status: the HTTP status.
        headers: response headers (``{"Retry-After": "1"}``...).
        delay: seconds to wait before answering.
        until_inflight: wait until this many requests are in flight on the path (at most
            ``hold`` seconds).
        until: wait until this callable returns true (at most ``hold`` seconds); it is
            called again whenever a try starts or ends, or :meth:`InflightReceiver.notify`
            is called, with the receiver's (re-entrant) lock held.
        hold: the most seconds ``until_inflight``/``until`` may hold the answer.
    """

    status: int = 204
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    until_inflight: Optional[int] = None
    until: Optional[Callable[[], bool]] = None
    hold: float = 2.0


Rule = Callable[[Try], Union[int, Answer]]


def json_fields(body: bytes) -> tuple[Optional[str], Optional[int]]:
    """``(key, n)`` from a JSON body ``{"key": ..., "n": ...}``; None for what is missing."""
    try:
        data = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    key = data.get("key")
    n = data.get("n")
    return (key if isinstance(key, str) else None), (n if isinstance(n, int) else None)


class InflightReceiver(Receiver):
    """A :class:`Receiver` that records concurrency per path and answers by a rule.

    Args:
        rule: decides each answer from the :class:`Try` (a status or an :class:`Answer`);
            204 at once by default. It runs in the request's own server thread, so it may
            block (holds are better expressed with :class:`Answer` fields, which are bounded
            and released by :meth:`stop`).
        **options: passed to :class:`Receiver` (``secret=`` ...).
    """

    def __init__(self, rule: Optional[Rule] = None, **options: Any) -> None:
        self.rule: Rule = rule or (lambda attempt: 204)
        self._state = threading.Condition()
        self._attempts: list[Try] = []
        self._current: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        self._stopping = False
        self._by_request: dict[int, Try] = {}
        super().__init__(responder=self._respond, on_request=self._arrived, **options)

    # -- what the server threads call -----------------------------------------------------

    def _arrived(self, request: ReceivedRequest) -> None:
        key, n = json_fields(request.body)
        path = request.path
        with self._state:
            current = self._current.get(path, 0) + 1
            self._current[path] = current
            self._peak[path] = max(self._peak.get(path, 0), current)
            attempt = Try(
                path=path,
                key=key,
                n=n,
                delivery_id=request.delivery_id,
                try_number=request.try_number,
                start=request.received_at,
                inflight=current,
            )
            self._attempts.append(attempt)
            self._by_request[id(request)] = attempt
            self._state.notify_all()

    def _respond(self, request: ReceivedRequest) -> Any:
        with self._state:
            attempt = self._by_request.pop(id(request))
        status = 500  # what the record says if the rule itself fails
        try:
            answer = self.rule(attempt)
            status = answer if isinstance(answer, int) else answer.status
            if not isinstance(answer, int):
                self._hold(attempt, answer)
        finally:
            with self._state:
                attempt.end = time.monotonic()
                attempt.status = status
                self._current[attempt.path] -= 1
                self._state.notify_all()
        if isinstance(answer, int):
            return answer
        return answer.status, dict(answer.headers), b""

    def _hold(self, attempt: Try, answer: Answer) -> None:
        deadline = time.monotonic() + answer.hold
        with self._state:
            while not self._stopping:
                if answer.until_inflight is not None:
                    done = self._current.get(attempt.path, 0) >= answer.until_inflight
                else:
                    done = answer.until is None or answer.until()
                left = deadline - time.monotonic()
                if done or left <= 0:
                    break
                self._state.wait(left)
            if answer.delay > 0 and not self._stopping:
                self._state.wait_for(lambda: self._stopping, answer.delay)

    # -- what tests read ------------------------------------------------------------------

    def url_for(self, path: str) -> str:
        """The URL of ``path`` (``/a``...) on this receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def tries(self) -> list[Try]:
        """Every try so far, in arrival order (copies: later answers do not change them)."""
        with self._state:
            return [Try(**vars(t)) for t in self._attempts]

    def peak(self, path: str) -> int:
        """The most requests ever in flight at once on ``path``."""
        with self._state:
            return self._peak.get(path, 0)

    def inflight(self, path: str) -> int:
        """Requests in flight on ``path`` now."""
        with self._state:
            return self._current.get(path, 0)

    def notify(self) -> None:
        """Wake the holds, to look at their ``until`` conditions again."""
        with self._state:
            self._state.notify_all()

    def wait_until(self, condition: Callable[[list[Try]], bool], timeout: float = WAIT) -> None:
        """Wait until ``condition(tries)`` is true (``tries``: the live list; do not change it).

        Raises:
            TimeoutError: it was still false after ``timeout`` seconds.
        """
        with self._state:
            if not self._state.wait_for(lambda: condition(self._attempts), timeout):
                raise TimeoutError(f"condition not met in {timeout:g} s; tries: {self._attempts}")

    def wait_tries(
        self,
        count: int,
        *,
        where: Optional[Callable[[Try], bool]] = None,
        answered: bool = False,
        timeout: float = WAIT,
    ) -> list[Try]:
        """Wait until ``count`` tries (matching ``where``; answered ones only with
        ``answered``) were seen; return copies of them.

        Raises:
            TimeoutError: fewer came after ``timeout`` seconds.
        """

        def matching(tries: list[Try]) -> list[Try]:
            return [
                t
                for t in tries
                if (where is None or where(t)) and (not answered or t.end is not None)
            ]

        self.wait_until(lambda tries: len(matching(tries)) >= count, timeout)
        with self._state:
            return [Try(**vars(t)) for t in matching(self._attempts)]

    def wait_inflight(self, path: str, count: int, timeout: float = WAIT) -> None:
        """Wait until ``count`` requests are in flight on ``path`` at once.

        Raises:
            TimeoutError: they were not after ``timeout`` seconds.
        """
        with self._state:
            if not self._state.wait_for(lambda: self._current.get(path, 0) >= count, timeout):
                raise TimeoutError(
                    f"{self._current.get(path, 0)} of {count} in flight on {path} "
                    f"after {timeout:g} s"
                )

    def stop(self) -> None:
        """Release every held request, then stop serving."""
        with self._state:
            self._stopping = True
            self._state.notify_all()
        super().stop()


# -- reading what was recorded ---------------------------------------------------------------


def by_key(tries: list[Try]) -> dict[str, list[Try]]:
    """The keyed tries grouped by key, each group in arrival order."""
    groups: dict[str, list[Try]] = {}
    for attempt in sorted(tries, key=lambda t: t.start):
        if attempt.key is not None:
            groups.setdefault(attempt.key, []).append(attempt)
    return groups


def arrival_order(tries: list[Try]) -> list[Optional[int]]:
    """The ``n`` of ``tries`` in arrival order, a retry of the try before it counted once."""
    order: list[Optional[int]] = []
    for attempt in sorted(tries, key=lambda t: t.start):
        if not order or order[-1] != attempt.n:
            order.append(attempt.n)
    return order


def overlaps(tries: list[Try]) -> list[tuple[Try, Try]]:
    """Pairs of tries where the second started before the first was answered."""
    found = []
    ordered = sorted(tries, key=lambda t: t.start)
    for before, after in zip(ordered, ordered[1:]):
        if before.end is None or after.start < before.end:
            found.append((before, after))
    return found


# -- the emitter's side ---------------------------------------------------------------------


class Results:
    """An ``on_delivery`` callback that records each result and the thread that got it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.items: list[DeliveryResult] = []
        self.threads: list[int] = []

    def __call__(self, result: DeliveryResult) -> None:
        with self._cond:
            self.items.append(result)
            self.threads.append(threading.get_ident())
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = WAIT) -> list[DeliveryResult]:
        """Wait until ``count`` results came; return them.

        Raises:
            TimeoutError: fewer came after ``timeout`` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.items) >= count, timeout):
                raise TimeoutError(f"{len(self.items)} of {count} results in {timeout:g} s")
            return list(self.items)


class LogWatch(logging.Handler):
    """Records the library's log records (INFO and above) and lets a test wait for one.

    Use as a context manager: it sets the ``webhooks_emitter`` logger to INFO while active
    (the library logs a retry at INFO) and puts the level back afterwards.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._cond = threading.Condition()
        self.records: list[logging.LogRecord] = []
        self._logger = logging.getLogger("webhooks_emitter")
        self._level = self._logger.level

    def emit(self, record: logging.LogRecord) -> None:
        with self._cond:
            self.records.append(record)
            self._cond.notify_all()

    def __enter__(self) -> LogWatch:
        self._logger.addHandler(self)
        self._logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)

    def messages(self, level: int = logging.INFO) -> list[str]:
        """The messages of the records at ``level`` or above, in order."""
        with self._cond:
            return [r.getMessage() for r in self.records if r.levelno >= level]

    def wait_for(
        self, text: str, count: int = 1, *, level: int = logging.INFO, timeout: float = WAIT
    ) -> list[str]:
        """Wait until ``count`` messages at ``level`` or above contain ``text``; return them.

        Raises:
            TimeoutError: fewer came after ``timeout`` seconds.
        """

        def found() -> list[str]:
            messages = [r.getMessage() for r in self.records if r.levelno >= level]
            return [m for m in messages if text in m]

        with self._cond:
            if not self._cond.wait_for(lambda: len(found()) >= count, timeout):
                raise TimeoutError(
                    f"{len(found())} of {count} log lines with {text!r} in {timeout:g} s: "
                    f"{[r.getMessage() for r in self.records]}"
                )
            return found()
