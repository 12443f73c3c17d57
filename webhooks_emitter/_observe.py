"""The hooks through which the engine reports its tries and outcomes to observers.

Metrics, traces and structured log fields (CONTRACT section 15) hang here, and the core
imports nothing of OpenTelemetry or ``prometheus_client``: ``contrib.opentelemetry`` and
``contrib.prometheus`` add :class:`Observer` subclasses with :func:`add_observer`.

The cost when nothing is instrumented is one truth test of :data:`OBSERVERS` per try (none
per ``emit``) and one ``is None`` test of :data:`trace_capture` per ``emit``. What ``emit``
counts (events accepted, dropped) is read from each emitter's counters at collection time,
not pushed here, so instrumenting adds nothing per ``emit`` but the trace capture.

Call order for one try, all in the emitter's delivering thread:

1. ``scope = observer.try_started(emitter_id, event, attempt, url)`` before the request
   is built; ``scope.headers`` (when ``Config.propagate_trace``) are added to the request.
2. ``observer.try_ended(scope, emitter_id, event, attempt, result, status_code, duration,
   error)`` once the answer (or the failure) is known; ``duration`` is None for a try the
   library refused to send (``result == "refused"``).
3. After the try that settles the event: ``observer.outcome(emitter_id, event, outcome,
   since_emit)``, ``outcome`` being ``"delivered"`` or ``"given_up"``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, Callable, Optional

from .exceptions import WebhooksEmitterError

__all__ = [
    "ALL_EMITTERS",
    "OBSERVERS",
    "CountedTry",
    "GaugeValues",
    "Observer",
    "Tally",
    "TryScope",
    "add_observer",
    "delivering_for",
    "dropped_so_far",
    "remove_observer",
    "result_of",
    "trace_capture",
]


class TryScope:
    """One try as an observer follows it (a span, a start time...).

    ``headers``: what to add to the request when ``Config.propagate_trace`` is set
    (W3C ``traceparent`` and ``tracestate``); empty otherwise.
    """

    __slots__ = ("headers",)

    def __init__(self, headers: Optional[Mapping[str, str]] = None) -> None:
        self.headers: Mapping[str, str] = headers or {}


class Observer:
    """Base class of observers: every hook does nothing. Hooks must not raise (what they
    raise is logged by the engine and otherwise ignored) and must not block."""

    def try_started(
        self, emitter_id: str, event: Any, attempt: int, url: str
    ) -> Optional[TryScope]:
        """A try of ``event`` (a ``StoredEvent``) is about to be sent; ``attempt`` counts from 1."""
        return None

    def try_ended(
        self,
        scope: Optional[TryScope],
        emitter_id: str,
        event: Any,
        attempt: int,
        result: str,
        status_code: Optional[int],
        duration: Optional[float],
        error: Optional[str],
    ) -> None:
        """The try ended: ``result`` is one of :func:`result_of`'s values."""

    def outcome(self, emitter_id: str, event: Any, outcome: str, since_emit: float) -> None:
        """``event`` was delivered or given up (``outcome``), ``since_emit`` seconds after it
        was emitted (with a durable store, committed)."""


#: The observers of this process, in the order they were added. Replaced, never mutated,
#: so the engine reads it without a lock.
OBSERVERS: tuple[Observer, ...] = ()

#: Called by ``emit`` (when not None) to take the caller's current trace context, as a
#: string the store keeps with the event (``Message.trace_context``); None when there is none.
trace_capture: Optional[Callable[[], Optional[str]]] = None

_lock = threading.Lock()

#: The instance a delivering thread works for (``delivering_for.instance``), set by the
#: engine when the thread starts: the hooks run in that thread, so an observer scoped to one
#: instance tells its tries from another instance's tries of an emitter with the same id.
delivering_for = threading.local()

logger = logging.getLogger(__name__)


def add_observer(observer: Observer) -> None:
    """Report every instance's tries and outcomes to ``observer`` from now on."""
    global OBSERVERS
    with _lock:
        if observer not in OBSERVERS:
            OBSERVERS = (*OBSERVERS, observer)


def remove_observer(observer: Observer) -> None:
    """Stop reporting to ``observer`` (no-op if it was not added)."""
    global OBSERVERS
    with _lock:
        OBSERVERS = tuple(o for o in OBSERVERS if o is not observer)


def result_of(
    ok: bool, status_code: Optional[int], error: Optional[str], final: bool, timed_out: bool
) -> str:
    """The ``result`` label of a try (CONTRACT section 15): ``2xx`` ... ``5xx`` when an answer
    came, else ``timeout``, ``refused`` (the library would not send it) or
    ``connection_error`` (refused or reset connections, DNS and TLS failures included)."""
    if status_code is not None:
        return f"{min(max(status_code // 100, 1), 5)}xx"
    if final:
        return "refused"
    if timed_out:
        return "timeout"
    return "connection_error"


# -- what both metric exporters share ----------------------------------------------------------
#
# The exporters (``contrib.opentelemetry``, ``contrib.prometheus``) differ only in how they
# hand numbers out; what the numbers are is decided here, without importing either library.
# A :class:`Tally` is the observer one ``instrument``/``register`` call adds: it counts tries
# and outcomes as the hooks report them and reads the rest at collection time.

#: Emitter label of every series when ``per_emitter=False``.
ALL_EMITTERS = "*"
#: Seconds a store's answer (the gauges) is reused before the store is asked again.
STATES_TTL = 1.0


def dropped_so_far(emitter: Any) -> int:
    """The events an attached emitter (``_emitter.Emitter``) dropped so far in this
    process, from its own counter: no store query, so ``emit`` and a collection pay nothing
    for it. The engine keeps that counter on the emitter's reporter (``report.counters()``:
    delivered, given up, dropped, retries), or, in older engines, as ``_dropped``."""
    report = getattr(emitter, "report", None)
    if report is not None:
        return int(report.counters()[2])
    return int(emitter._dropped)


class GaugeValues:
    """The store's view of one series: queued and failed events, the age of the oldest
    queued event (0 when none) and the paused emitters (1 or 0; a count under ``"*"``)."""

    __slots__ = ("failed", "oldest_queued_age", "paused", "queued")

    def __init__(self) -> None:
        self.queued = 0
        self.failed = 0
        self.oldest_queued_age = 0.0
        self.paused = 0

    def __repr__(self) -> str:
        return (
            f"<GaugeValues queued={self.queued} failed={self.failed} "
            f"oldest_queued_age={self.oldest_queued_age:.3f} paused={self.paused}>"
        )


class CountedTry(TryScope):
    """The scope of a try a :class:`Tally` counts: the label it is counted under."""

    __slots__ = ("label",)

    def __init__(self, label: str, headers: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(headers)
        self.label = label


class Tally(Observer):
    """Counts one exporter reports: tries by result, outcomes, tries in flight, events
    dropped, and the store's gauges.

    Args:
        instance: the ``WebhooksEmitter`` watched, or None for every instance of the process
            (those made later included).
        every_instance: returns every live instance (the hub's registry), used when
            ``instance`` is None; passed in so that this module never imports the hub.
        per_emitter: False reports every series under ``emitter="*"``.

    Thread-safe: the hooks run in delivering threads, collection in the exporter's.
    """

    def __init__(
        self,
        instance: Any,
        every_instance: Callable[[], list[Any]],
        per_emitter: bool = True,
    ) -> None:
        self.instance = instance
        self._every_instance = every_instance
        self.per_emitter = per_emitter
        self._lock = threading.Lock()
        self.tries: dict[tuple[str, str], int] = {}  # (emitter, result) -> count
        self.outcomes: dict[tuple[str, str], int] = {}  # (emitter, outcome) -> count
        self.in_flight: dict[str, int] = {}
        # Emitters whose ``dropped`` counter was read, held until read once more after
        # they left their instance (a detach drops a memory store's events at the end).
        self._seen: dict[int, Any] = {}
        self._last_dropped: dict[int, int] = {}
        self.dropped: dict[str, int] = {}
        self._states_at = float("-inf")
        self._gauges: dict[str, GaugeValues] = {}
        self._states_lock = threading.Lock()  # one store query at a time
        with self._lock:
            # What was dropped before instrumenting is not this exporter's to count.
            for _, emitter in self._emitters():
                self._seen[id(emitter)] = emitter
                self._last_dropped[id(emitter)] = dropped_so_far(emitter)

    # -- which emitters -------------------------------------------------------------------

    def instances(self) -> list[Any]:
        """The instances watched now."""
        if self.instance is not None:
            return [self.instance]
        return self._every_instance()

    def _emitters(self) -> list[tuple[Any, Any]]:
        """(instance, emitter) for every emitter attached to a watched instance."""
        return [
            (instance, emitter)
            for instance in self.instances()
            for emitter in list(instance._emitters.values())
        ]

    def covers(self, emitter_id: str) -> bool:
        """Whether a hook about ``emitter_id`` concerns a watched instance: the instance the
        calling delivering thread works for (``delivering_for``); from any other thread, an
        id attached to the watched instance is taken as its."""
        if self.instance is None:
            return True
        working_for = getattr(delivering_for, "instance", None)
        if working_for is not None:
            return working_for is self.instance
        return emitter_id in self.instance._emitters

    def label(self, emitter_id: str) -> str:
        """The ``emitter`` label (or attribute) of ``emitter_id``'s series."""
        return emitter_id if self.per_emitter else ALL_EMITTERS

    # -- hooks ----------------------------------------------------------------------------
    #
    # A try is counted under the label it started with, carried by its scope: an emitter
    # detached while its try was on the wire still gets its in-flight count back.

    def try_started(
        self, emitter_id: str, event: Any, attempt: int, url: str
    ) -> Optional[TryScope]:
        if not self.covers(emitter_id):
            return None
        label = self.label(emitter_id)
        with self._lock:
            self.in_flight[label] = self.in_flight.get(label, 0) + 1
        return self.started(label, emitter_id, event, attempt, url)

    def try_ended(
        self,
        scope: Optional[TryScope],
        emitter_id: str,
        event: Any,
        attempt: int,
        result: str,
        status_code: Optional[int],
        duration: Optional[float],
        error: Optional[str],
    ) -> None:
        if isinstance(scope, CountedTry):
            label = scope.label
            with self._lock:
                if self.in_flight.get(label, 0) > 0:
                    self.in_flight[label] -= 1
        elif self.covers(emitter_id):  # started before this observer was added
            label = self.label(emitter_id)
        else:
            return
        with self._lock:
            key = (label, result)
            self.tries[key] = self.tries.get(key, 0) + 1
        self.ended(scope, label, result, status_code, duration)

    def outcome(self, emitter_id: str, event: Any, outcome: str, since_emit: float) -> None:
        if not self.covers(emitter_id):
            return
        label = self.label(emitter_id)
        with self._lock:
            key = (label, outcome)
            self.outcomes[key] = self.outcomes.get(key, 0) + 1
        self.settled(label, outcome, since_emit)

    # -- what an exporter adds (histograms, spans) ---------------------------------------------

    def started(
        self, label: str, emitter_id: str, event: Any, attempt: int, url: str
    ) -> CountedTry:
        """The scope of a try that starts (a span's, for traces)."""
        return CountedTry(label)

    def ended(
        self,
        scope: Optional[TryScope],
        label: str,
        result: str,
        status_code: Optional[int],
        duration: Optional[float],
    ) -> None:
        """A try counted under ``label`` ended (``scope`` None: it started before)."""

    def settled(self, label: str, outcome: str, since_emit: float) -> None:
        """An event counted under ``label`` was delivered or given up."""

    # -- read at collection time ----------------------------------------------------------

    def labels(self) -> list[str]:
        """The ``emitter`` labels of the emitters attached now (so that a series shows 0
        before anything happened)."""
        if not self.per_emitter:
            return [ALL_EMITTERS]
        return sorted({emitter.emitter_id for _, emitter in self._emitters()})

    def try_counts(self) -> dict[tuple[str, str], int]:
        """(emitter, result) -> tries ended so, as the hooks reported them."""
        with self._lock:
            return dict(self.tries)

    def deliveries(self) -> dict[tuple[str, str], int]:
        """(emitter, outcome) -> deliveries ended so: ``delivered`` and ``given_up`` as the
        hooks reported them, ``dropped`` read from the emitters' own counters (so that
        ``emit`` pays nothing for it)."""
        self._read_dropped()
        with self._lock:
            counts = dict(self.outcomes)
            for label, count in self.dropped.items():
                counts[(label, "dropped")] = count
        for label in self.labels():
            for outcome in ("delivered", "given_up", "dropped"):
                counts.setdefault((label, outcome), 0)
        return counts

    def _read_dropped(self) -> None:
        current = {id(emitter): emitter for _, emitter in self._emitters()}
        with self._lock:
            self._seen.update(current)
            for key, emitter in list(self._seen.items()):
                value = dropped_so_far(emitter)
                last = self._last_dropped.get(key, 0)
                if value < last:  # a forked child starts its counters again
                    last = 0
                if value > last:
                    label = self.label(emitter.emitter_id)
                    self.dropped[label] = self.dropped.get(label, 0) + value - last
                self._last_dropped[key] = value
                if key not in current:  # detached: this was its last word
                    del self._seen[key]
                    del self._last_dropped[key]

    def in_flight_now(self) -> dict[str, int]:
        """emitter -> tries on the wire now (0 for an attached emitter with none)."""
        with self._lock:
            counts = dict(self.in_flight)
        for label in self.labels():
            counts.setdefault(label, 0)
        return counts

    def gauges(self, now: Optional[Callable[[], float]] = None) -> dict[str, GaugeValues]:
        """emitter -> the store's view, for the emitters attached to the watched instances.

        One ``store.states()`` query per instance for all its emitters, at most once per
        :data:`STATES_TTL` seconds (the last answer otherwise). A store that fails is
        logged, and its emitters left out of this answer."""
        with self._states_lock:
            if time.monotonic() - self._states_at < STATES_TTL:
                return self._gauges
            wall = (now or time.time)()
            gauges: dict[str, GaugeValues] = {}
            for instance in self.instances():
                attached = set(instance._emitters)
                if not attached:
                    continue
                try:
                    states = instance.store.states()
                except Exception as exc:  # a store error must not break the exporter
                    _log_store_error(instance, exc)
                    continue
                for state in states:
                    if state.emitter_id not in attached:
                        continue
                    values = gauges.setdefault(self.label(state.emitter_id), GaugeValues())
                    values.queued += state.queued
                    values.failed += state.failed
                    values.paused += 1 if state.paused else 0
                    if state.queued and state.oldest_queued_at is not None:
                        age = max(wall - state.oldest_queued_at, 0.0)
                        values.oldest_queued_age = max(values.oldest_queued_age, age)
            if not self.per_emitter:
                gauges.setdefault(ALL_EMITTERS, GaugeValues())
            self._gauges = gauges
            self._states_at = time.monotonic()
            return gauges


_store_warned: dict[int, float] = {}


def _log_store_error(instance: Any, exc: BaseException) -> None:
    """Log that a store did not answer a collection, at most once a minute per instance."""
    now = time.monotonic()
    if now - _store_warned.get(id(instance), float("-inf")) < 60.0:
        return
    _store_warned[id(instance)] = now
    # StoreError messages name the store without its password; others say only their type.
    cause = str(exc) if isinstance(exc, WebhooksEmitterError) else type(exc).__name__
    logger.warning("webhooks_emitter metrics: the store did not answer (%s)", cause)
