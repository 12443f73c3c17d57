"""One try of one event (its request, signed) and the retry policy that decides what follows.

The retry *loop* lives in the emitter and the store, not here: between two tries of an event
its state (tries so far, when the next one is due) is written to the store, so that a retry
can outlive the process and other events can go on meanwhile (ordering keys). The retry
*policy* is tenacity's: ``stop_after_attempt`` says when to give up, and the waits are
tenacity wait strategies (exponential with jitter, or a fixed schedule), evaluated on a
``tenacity.RetryCallState`` that stands for the event's tries so far.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from typing import Optional, Union

import requests
import tenacity
from requests.structures import CaseInsensitiveDict
from urllib3.util import SKIP_HEADER

from ._config import Config
from ._transport import Transport, TryOutcome
from ._version import __version__
from .stores._base import StoredEvent

__all__ = ["Deliverer", "RetryPolicy"]

logger = logging.getLogger(__name__)


def _header_value(text: str) -> Union[str, bytes]:
    # http.client sends str headers as latin-1; other text goes as its UTF-8 bytes, as the
    # original (which writes binaries) does. Event names, request ids (check_name) and
    # additional header values (Config) are refused at once when UTF-8 cannot hold them.
    return text if text.isascii() else text.encode("utf-8")


class _ScheduleWait(tenacity.wait.wait_base):
    """The wait after the n-th failed try is the n-th entry (the last repeats), plus up to
    10 % jitter: ``Config.retry_schedule``."""

    def __init__(self, schedule: tuple[float, ...]) -> None:
        self.schedule = schedule

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        index = min(retry_state.attempt_number, len(self.schedule)) - 1
        base = self.schedule[max(index, 0)]
        return base + random.uniform(0, base * 0.1)


class _CappedWait(tenacity.wait.wait_base):
    """A wait strategy whose answer never exceeds ``limit``."""

    def __init__(self, inner: tenacity.wait.wait_base, limit: float) -> None:
        self.inner = inner
        self.limit = limit

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        return min(self.inner(retry_state), self.limit)


class RetryPolicy:
    """When to try an event again, from ``Config``: tenacity's stop and wait strategies.

    Args:
        config: the emitter's configuration.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.max_attempts = config.max_attempts
        self._stop = tenacity.stop_after_attempt(config.max_attempts)
        schedule = config.retry_schedule
        if schedule:
            self._wait: tenacity.wait.wait_base = _ScheduleWait(tuple(schedule))
            self.limit = max(schedule)
        else:
            start = config.backoff_start
            # Exponential from backoff_start, plus up to backoff_start of jitter, capped.
            self._wait = _CappedWait(
                tenacity.wait_exponential(multiplier=start, exp_base=2, max=config.backoff_limit)
                + tenacity.wait_random(0, start),
                config.backoff_limit,
            )
            self.limit = config.backoff_limit

    def retryable(self, outcome: TryOutcome) -> bool:
        """Whether a failed try may be tried again at all (not a refusal, not a 410 pause)."""
        if outcome.ok or outcome.final:
            return False
        return not (outcome.status_code == 410 and self.config.pause_on_gone)

    def next_wait(self, attempts: int, outcome: TryOutcome) -> Optional[float]:
        """Seconds to wait before the next try after ``attempts`` tries, the last one
        ``outcome``; None when the event is given up."""
        if not self.retryable(outcome):
            return None
        state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = attempts
        if self._stop(state):
            return None
        if outcome.retry_after is not None:
            return min(outcome.retry_after, self.limit)
        return float(self._wait(state))


class Deliverer:
    """Builds the request for an event and makes one try of it through a transport.

    Args:
        emitter_id: for log records.
        config: the emitter's configuration.
    """

    def __init__(self, emitter_id: str, config: Config) -> None:
        self.emitter_id = emitter_id
        self.config = config
        self._secrets = config.secrets
        self._scheme = config.signature_scheme
        self._event_header = f"X-{config.header_identifier}-Event"
        self._delivery_header = f"X-{config.header_identifier}-Delivery"
        # Resolved once: a case-insensitive merge (an additional "user-agent" replaces ours),
        # then a plain dict that each request copies. The names added per request cannot
        # clash with these: Config refuses additional headers named Content-Length,
        # X-<identifier>-* or any header the signature scheme sets.
        # The URL is prepared (parsed, IDNA-encoded, its user info made a Basic
        # Authorization header, as requests does) once for the emitter, not per request.
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

    def prepare(
        self, event: StoredEvent, extra: Optional[Mapping[str, str]] = None
    ) -> requests.PreparedRequest:
        """The request of one try of ``event``: same body and delivery id on every try;
        timestamped schemes are signed anew each time. ``extra``: more headers (a trace's
        ``traceparent``), added before the signature's."""
        request = requests.PreparedRequest()
        request.method = "POST"
        request.url = self._url
        headers: dict[str, Union[str, bytes]] = dict(self._base_headers)
        headers[self._event_header] = _header_value(event.event)
        headers[self._delivery_header] = _header_value(event.request_id)
        headers["Content-Length"] = str(len(event.body))
        if extra:
            for name, value in extra.items():
                headers[name] = _header_value(value)
        if self._secrets:
            timestamp = int(time.time()) if self._scheme.timestamped else 0
            headers.update(
                self._scheme.sign(
                    event.body,
                    self._secrets,
                    delivery_id=event.request_id,
                    timestamp=timestamp,
                    header_identifier=self.config.header_identifier,
                )
            )
        # A plain dict: requests' adapter and urllib3 only iterate it and look up
        # "Content-Length" as written here; a CaseInsensitiveDict cost more than the rest.
        request.headers = headers  # type: ignore[assignment]
        request.body = event.body
        request.hooks = {"response": []}
        return request

    def send(
        self,
        transport: Transport,
        event: StoredEvent,
        extra: Optional[Mapping[str, str]] = None,
    ) -> TryOutcome:
        """Make one try of ``event``; never raises for network or HTTP failures."""
        return transport.send(self.prepare(event, extra))
