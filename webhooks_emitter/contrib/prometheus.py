"""A ``prometheus_client`` collector of the library's metrics (CONTRACT section 15).

Install the extra (``pip install 'webhooks_emitter[prometheus]'``), then::

    from webhooks_emitter.contrib import prometheus
    prometheus.register()                 # every instance, on prometheus_client.REGISTRY
    prometheus_client.start_http_server(9100, addr="127.0.0.1")

Counters and histograms are what this process did since :func:`register`; the gauges
``queued``, ``failed``, ``oldest_queued_age_seconds`` and ``paused`` are the store's view
(one query for every emitter of an instance per scrape, reused for a second). Nothing in the
core imports this module: ``emit`` pays nothing for it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Optional

try:
    from prometheus_client import CollectorRegistry, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import REGISTRY, Collector
except ImportError as exc:  # the extra is not installed
    raise ImportError(
        "webhooks_emitter.contrib.prometheus needs prometheus_client: "
        "pip install 'webhooks_emitter[prometheus]'"
    ) from exc

from .. import _hub, _observe

if TYPE_CHECKING:
    from .._hub import WebhooksEmitter

__all__ = ["TRY_BUCKETS", "DELIVERY_BUCKETS", "WebhooksCollector", "register"]

#: Bucket bounds (seconds) of ``webhooks_emitter_try_duration_seconds``: OpenTelemetry's
#: advice for ``http.client.request.duration``, so both exporters agree.
TRY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
#: Bucket bounds (seconds) of ``webhooks_emitter_delivery_duration_seconds``: retries with
#: backoff stretch a delivery from milliseconds to a day.
DELIVERY_BUCKETS = (
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
)  # fmt: skip


def _every_instance() -> list[WebhooksEmitter]:
    """Every live instance; a copy of the hub's WeakSet, taken again should an instance be
    made by another thread while it is copied."""
    for _ in range(10):
        try:
            return list(_hub._instances)
        except RuntimeError:  # "set changed size during iteration"
            continue
    return []


class _Histograms(_observe.Tally):
    """The tally of one collector, plus the two histograms it observes in the hooks."""

    def __init__(self, instance: Optional[WebhooksEmitter], per_emitter: bool) -> None:
        super().__init__(instance, _every_instance, per_emitter)
        # Unregistered: the collector hands their samples out with its own.
        self.try_duration = Histogram(
            "webhooks_emitter_try_duration_seconds",
            "Seconds one try took, from sending the request to the end of the answer.",
            ["emitter", "code"],
            registry=None,
            buckets=TRY_BUCKETS,
        )
        self.delivery_duration = Histogram(
            "webhooks_emitter_delivery_duration_seconds",
            "Seconds from emit (a durable store: the commit) to delivered or given up.",
            ["emitter", "outcome"],
            registry=None,
            buckets=DELIVERY_BUCKETS,
        )

    def ended(
        self,
        scope: Optional[_observe.TryScope],
        label: str,
        result: str,
        status_code: Optional[int],
        duration: Optional[float],
    ) -> None:
        if duration is not None:  # None: the library refused to send it
            code = "" if status_code is None else str(status_code)  # "": no answer
            self.try_duration.labels(label, code).observe(duration)

    def settled(self, label: str, outcome: str, since_emit: float) -> None:
        self.delivery_duration.labels(label, outcome).observe(since_emit)


class WebhooksCollector(Collector):
    """The collector :func:`register` adds: reads the tally at each scrape.

    :meth:`unregister` takes it off its registry and stops its hooks.
    """

    def __init__(self, instance: Optional[WebhooksEmitter], per_emitter: bool) -> None:
        self._tally = _Histograms(instance, per_emitter)
        self._registry: Optional[CollectorRegistry] = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        what = "every instance" if self._tally.instance is None else repr(self._tally.instance)
        return f"<WebhooksCollector of {what} per_emitter={self._tally.per_emitter}>"

    def describe(self) -> Iterable[Metric]:
        """The families this collector yields, without samples (no store query at register)."""
        return list(self._families(empty=True))

    def collect(self) -> Iterable[Metric]:
        """Every family, read now."""
        return list(self._families(empty=False))

    def _families(self, *, empty: bool) -> Iterator[Metric]:
        tally = self._tally
        deliveries = CounterMetricFamily(
            "webhooks_emitter_deliveries",
            "Events that ended, by outcome: delivered, given up, or dropped by this process.",
            labels=["emitter", "outcome"],
        )
        tries = CounterMetricFamily(
            "webhooks_emitter_tries",
            "Tries by result: 2xx..5xx, timeout, connection_error, refused.",
            labels=["emitter", "result"],
        )
        in_flight = GaugeMetricFamily(
            "webhooks_emitter_in_flight",
            "This process's tries on the wire now.",
            labels=["emitter"],
        )
        queued = GaugeMetricFamily(
            "webhooks_emitter_queued", "Events queued (the store's view).", labels=["emitter"]
        )
        failed = GaugeMetricFamily(
            "webhooks_emitter_failed",
            "Given-up events kept as dead letters (the store's view).",
            labels=["emitter"],
        )
        oldest = GaugeMetricFamily(
            "webhooks_emitter_oldest_queued_age_seconds",
            "Age of the oldest queued event, 0 when none (the store's view).",
            labels=["emitter"],
        )
        paused = GaugeMetricFamily(
            "webhooks_emitter_paused",
            '1 when paused, 0 when running (with emitter="*": the paused emitters).',
            labels=["emitter"],
        )
        if not empty:
            for (label, outcome), count in sorted(tally.deliveries().items()):
                deliveries.add_metric([label, outcome], count)
            for (label, result), count in sorted(tally.try_counts().items()):
                tries.add_metric([label, result], count)
            for label, count in sorted(tally.in_flight_now().items()):
                in_flight.add_metric([label], count)
            for label, values in sorted(tally.gauges().items()):
                queued.add_metric([label], values.queued)
                failed.add_metric([label], values.failed)
                oldest.add_metric([label], values.oldest_queued_age)
                paused.add_metric([label], values.paused)
        yield deliveries
        yield tries
        if empty:
            yield from tally.try_duration.describe()
            yield from tally.delivery_duration.describe()
        else:
            yield from tally.try_duration.collect()
            yield from tally.delivery_duration.collect()
        yield in_flight
        yield queued
        yield failed
        yield oldest
        yield paused

    def _attach(self, registry: CollectorRegistry) -> None:
        registry.register(self)  # raises ValueError when the names are there already
        self._registry = registry
        _observe.add_observer(self._tally)

    def unregister(self) -> None:
        """Take the collector off its registry and stop counting; safe to call twice."""
        with self._lock:
            registry, self._registry = self._registry, None
        _observe.remove_observer(self._tally)
        if registry is not None:
            registry.unregister(self)


def register(
    instance: Optional[WebhooksEmitter] = None,
    *,
    registry: Optional[CollectorRegistry] = None,
    per_emitter: bool = True,
) -> WebhooksCollector:
    """Add a collector of the library's metrics to ``registry``, read at scrape time.

    Args:
        instance: the ``WebhooksEmitter`` to report, or None for every instance of the
            process (those made later included; the module-level functions' default
            instance too).
        registry: where to register (default: ``prometheus_client.REGISTRY``).
        per_emitter: False reports every series under ``emitter="*"`` (for thousands of
            emitters): counts add up, ``oldest_queued_age_seconds`` is the largest and
            ``paused`` counts the paused emitters.

    Returns:
        The collector; its ``unregister()`` undoes this call.

    Raises:
        TypeError: an argument is not of the documented type.
        ValueError: ``registry`` already has these metrics (register once per registry).
    """
    if instance is not None and not isinstance(instance, _hub.WebhooksEmitter):
        raise TypeError(
            f"instance must be a WebhooksEmitter or None, not {type(instance).__name__}"
        )
    if registry is not None and not isinstance(registry, CollectorRegistry):
        raise TypeError(
            f"registry must be a prometheus_client CollectorRegistry, not {type(registry).__name__}"
        )
    if not isinstance(per_emitter, bool):
        raise TypeError(f"per_emitter must be a bool, not {type(per_emitter).__name__}")
    collector = WebhooksCollector(instance, per_emitter)
    collector._attach(REGISTRY if registry is None else registry)
    return collector
