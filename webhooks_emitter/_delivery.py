"""One delivery: the request built once, tried under a tenacity retry policy, an outcome back."""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Optional, Union

import requests
import tenacity
from requests.structures import CaseInsensitiveDict
from urllib3.util import SKIP_HEADER

from ._config import Config
from ._queue import Message
from ._transport import Transport, TryOutcome
from ._version import __version__

__all__ = ["Deliverer", "Delivery", "Interrupted"]

logger = logging.getLogger(__name__)


class Interrupted(Exception):
    """The delivery was cut short by pause, detach or shutdown; its state is kept."""


def _header_value(text: str) -> Union[str, bytes]:
    # http.client sends str headers as latin-1; other text goes as its UTF-8 bytes, as the
    # original (which writes binaries) does. Event names, request ids (check_name) and
    # additional header values (Config) are refused at once when UTF-8 cannot hold them.
    return text if text.isascii() else text.encode("utf-8")


class Delivery:
    """The state of one message at one emitter: its request, tries and last outcome."""

    __slots__ = ("message", "outcome", "request", "started", "tries")

    def __init__(self, message: Message) -> None:
        self.message = message
        self.tries = 0
        self.started: Optional[float] = None
        self.outcome: Optional[TryOutcome] = None
        self.request: Optional[requests.PreparedRequest] = None


class Deliverer:
    """Delivers messages for one emitter, one at a time, with retries.

    Args:
        emitter_id: for log records.
        config: the emitter's configuration.
        transport: sends one try.
        interrupt: when set, a backoff wait ends at once and no further try starts.
    """

    def __init__(
        self, emitter_id: str, config: Config, transport: Transport, interrupt: threading.Event
    ) -> None:
        self.emitter_id = emitter_id
        self.config = config
        self.transport = transport
        self._interrupt = interrupt
        self._secrets = config.secrets
        self._scheme = config.signature_scheme
        self._event_header = f"X-{config.header_identifier}-Event"
        self._delivery_header = f"X-{config.header_identifier}-Delivery"
        # Resolved once: a case-insensitive merge (an additional "user-agent" replaces ours),
        # then a plain dict that each delivery copies. The names added per delivery cannot
        # clash with these: Config refuses additional headers named Content-Length,
        # X-<identifier>-* or any header the signature scheme sets.
        # The URL is prepared (parsed, IDNA-encoded, its user info made a Basic
        # Authorization header, as requests does) once for the emitter, not per delivery.
        prepared = requests.Request("POST", config.url).prepare()
        self._url = prepared.url
        merged: CaseInsensitiveDict[str] = CaseInsensitiveDict(
            {
                "User-Agent": f"WebHooks-Emitter/{__version__}",
                "Content-Type": "application/json",
                # http.client would add "Accept-Encoding: identity"; the wire format has none.
                "Accept-Encoding": SKIP_HEADER,
                **{k: v for k, v in prepared.headers.items() if k.lower() == "authorization"},
                **dict(config.additional_headers),
            }
        )
        self._base_headers = {name: _header_value(value) for name, value in merged.items()}
        self._retrying = tenacity.Retrying(
            stop=self._stop,
            wait=self._wait,
            retry=tenacity.retry_if_result(self._should_retry),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )

    def _prepare(self, message: Message) -> requests.PreparedRequest:
        request = requests.PreparedRequest()
        request.method = "POST"
        request.url = self._url
        headers: dict[str, Union[str, bytes]] = dict(self._base_headers)
        headers[self._event_header] = _header_value(message.event)
        headers[self._delivery_header] = _header_value(message.request_id)
        headers["Content-Length"] = str(len(message.body))
        if self._secrets and not self._scheme.timestamped:
            headers.update(self._sign(message, 0))
        # A plain dict: requests' adapter and urllib3 only iterate it and look up
        # "Content-Length" as written here; a CaseInsensitiveDict cost more than the rest.
        request.headers = headers  # type: ignore[assignment]
        request.body = message.body
        request.hooks = {"response": []}
        return request

    def _sign(self, message: Message, timestamp: int) -> dict[str, str]:
        return self._scheme.sign(
            message.body,
            self._secrets,
            delivery_id=message.request_id,
            timestamp=timestamp,
            header_identifier=self.config.header_identifier,
        )

    def run(self, delivery: Delivery) -> TryOutcome:
        """Try ``delivery`` until it succeeds, its tries run out or trying cannot help.

        Raises:
            Interrupted: the interrupt event was set; ``delivery`` keeps its count of tries
                and is tried again at once by the next ``run``.
        """
        if delivery.request is None:
            delivery.request = self._prepare(delivery.message)
            delivery.started = time.monotonic()
        # The first try is made here; tenacity is entered only when it must be retried,
        # and is handed that outcome as its own first attempt, so the whole retry policy
        # (stop, wait, log, sleep, last outcome) stays in tenacity and runs as before.
        # Most deliveries succeed at once and skip tenacity's per-call bookkeeping.
        first = self._try(delivery)
        if not self._should_retry(first):
            return first
        replay = [first]

        def attempt(delivery: Delivery) -> TryOutcome:
            return replay.pop() if replay else self._try(delivery)

        outcome: TryOutcome = self._retrying(attempt, delivery)
        return outcome

    def _try(self, delivery: Delivery) -> TryOutcome:
        if self._interrupt.is_set():
            raise Interrupted
        request = delivery.request
        assert request is not None
        if self._secrets and self._scheme.timestamped:
            # Timestamped schemes sign each try anew, so a retry is not stale.
            request.headers.update(self._sign(delivery.message, int(time.time())))
        delivery.tries += 1
        delivery.outcome = outcome = self.transport.send(request)
        return outcome

    def _should_retry(self, outcome: TryOutcome) -> bool:
        if outcome.ok or outcome.final:
            return False
        return not (outcome.status_code == 410 and self.config.pause_on_gone)

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        delivery: Delivery = state.args[0]
        return delivery.tries >= self.config.max_attempts

    def _wait(self, state: tenacity.RetryCallState) -> float:
        delivery: Delivery = state.args[0]
        limit = self.config.backoff_limit
        outcome = delivery.outcome
        if outcome is not None and outcome.retry_after is not None:
            return min(outcome.retry_after, limit)
        start = self.config.backoff_start
        # Exponential from backoff_start, plus up to backoff_start of jitter, capped.
        exponential = start * 2.0 ** min(delivery.tries - 1, 64)
        return min(exponential + random.uniform(0, start), limit)

    def _sleep(self, seconds: float) -> None:
        # Event.wait refuses a timeout above threading.TIMEOUT_MAX (about 292 years), and a
        # valid backoff_limit or Retry-After can be larger: such a wait is made in parts.
        deadline = time.monotonic() + seconds
        while True:
            if self._interrupt.wait(min(seconds, threading.TIMEOUT_MAX)):
                raise Interrupted
            seconds = deadline - time.monotonic()
            if seconds <= 0:
                return

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        delivery: Delivery = state.args[0]
        outcome = delivery.outcome
        assert outcome is not None and state.next_action is not None
        logger.info(
            "webhook try %d of %d failed (%s), retrying in %.3f s",
            delivery.tries,
            self.config.max_attempts,
            outcome.error,
            state.next_action.sleep,
            extra={
                "emitter_id": self.emitter_id,
                "event": delivery.message.event,
                "request_id": delivery.message.request_id,
            },
        )
