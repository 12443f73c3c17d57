"""The registry that ``attach`` and ``emit`` act on: the ``WebhooksEmitter`` class."""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any, Optional

from ._config import Config, EmitterStats
from ._emitter import Emitter
from ._encoding import check_name, encode_payload, new_request_id
from ._queue import Message
from .exceptions import EmitterExistsError, EmitterNotFoundError

__all__ = ["WebhooksEmitter"]

logger = logging.getLogger(__name__)

WILDCARD = "*"

# Every instance, for the fork hook (weakly: instances may be collected).
_instances: weakref.WeakSet[WebhooksEmitter] = weakref.WeakSet()
# Instances with attached emitters, for the exit hook: held strongly, so that an instance
# the program dropped still has its events delivered at exit (its threads still run).
_attached: set[WebhooksEmitter] = set()
_attached_lock = threading.Lock()


def _seconds(name: str, value: object) -> float:
    """``value`` as seconds >= 0 (infinity allowed), or TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def _deadline(seconds: float) -> Optional[float]:
    """The ``time.monotonic()`` value ``seconds`` from now; None for no deadline (infinity)."""
    return None if math.isinf(seconds) else time.monotonic() + seconds


def _left(deadline: Optional[float]) -> Optional[float]:
    """Seconds left until ``deadline`` (at least 0), or None when there is none."""
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


class _Route:
    """The emitters one event goes to, and the smallest ``max_body_size`` among them."""

    __slots__ = ("emitters", "limit")

    def __init__(self, emitters: tuple[Emitter, ...]) -> None:
        self.emitters = emitters
        limits = [e.config.max_body_size for e in emitters if e.config.max_body_size is not None]
        self.limit: Optional[int] = min(limits) if limits else None


class WebhooksEmitter:
    """A set of attached emitters and the events emitted to them.

    The module-level functions (``webhooks_emitter.attach`` and so on) act on one default
    instance; make your own for an independent set. Every method is thread-safe.

    Args:
        exit_timeout: seconds the exit hook spends delivering what is still queued when
            the interpreter ends (see :meth:`configure`).
    """

    def __init__(self, exit_timeout: float = 5.0) -> None:
        self._exit_timeout = _seconds("exit_timeout", exit_timeout)
        self._lock = threading.Lock()
        self._emitters: dict[str, Emitter] = {}
        # emit() reads this without the lock: the routes by event and the route of events
        # nobody subscribed to by name (the "*" emitters), replaced whole, never changed.
        self._table: tuple[dict[str, _Route], _Route] = ({}, _Route(()))
        self._closing = False
        self._refused = 0
        _instances.add(self)

    def __repr__(self) -> str:
        return f"<WebhooksEmitter emitters={list(self._emitters)!r}>"

    def configure(self, *, exit_timeout: Optional[float] = None) -> None:
        """Change settings of this instance.

        Args:
            exit_timeout: seconds the exit hook may spend delivering what is queued.
        """
        if exit_timeout is not None:
            self._exit_timeout = _seconds("exit_timeout", exit_timeout)

    @property
    def exit_timeout(self) -> float:
        """Seconds the exit hook may spend delivering what is queued."""
        return self._exit_timeout

    # -- attaching ------------------------------------------------------------------------

    def attach(self, emitter_id: str, event: str, config: Config) -> None:
        """Start an emitter (a daemon thread and its queue) that delivers ``event`` with ``config``.

        Args:
            emitter_id: a name for the emitter, unique within this instance.
            event: the event name to deliver, or ``"*"`` for every event.
            config: where and how to deliver.

        Raises:
            EmitterExistsError: ``emitter_id`` is attached already (paused ones included).
            TypeError, ValueError: an argument is not of the documented form.
        """
        self._attach(emitter_id, [check_name(event, "event")], config)

    def attach_many(self, emitter_id: str, events: Iterable[str], config: Config) -> None:
        """Like :meth:`attach`, for a non-empty iterable of event names."""
        if isinstance(events, (str, bytes)) or not isinstance(events, Iterable):
            raise TypeError(
                f"events must be an iterable of event names, not {type(events).__name__}"
            )
        names = [check_name(event, "events") for event in events]
        if not names:
            raise ValueError("events must not be empty")
        self._attach(emitter_id, names, config)

    def _attach(self, emitter_id: str, events: list[str], config: Config) -> None:
        emitter_id = check_name(emitter_id, "emitter_id")
        if not isinstance(config, Config):
            raise TypeError(
                f"config must be a webhooks_emitter.Config, not {type(config).__name__}"
            )
        with self._lock:
            if emitter_id in self._emitters:
                raise EmitterExistsError(emitter_id)
            # Made and started before it is registered: if that fails, nothing is attached.
            emitter = Emitter(emitter_id, frozenset(events), config)
            emitter.start()
            self._emitters[emitter_id] = emitter
            self._reroute()
        with _attached_lock:
            _attached.add(self)
        logger.info(
            "webhook emitter %r attached to %s",
            emitter_id,
            ", ".join(sorted(events)),
            extra={"emitter_id": emitter_id, "event": None, "request_id": None},
        )

    def _reroute(self) -> None:
        """Rebuild the routing snapshot that emit() reads (with the lock held)."""
        wildcard = tuple(e for e in self._emitters.values() if WILDCARD in e.events)
        by_event: dict[str, list[Emitter]] = {}
        for emitter in self._emitters.values():
            for event in emitter.events:
                if event != WILDCARD:
                    by_event.setdefault(event, []).append(emitter)
        routes = {
            event: _Route(tuple(emitters) + tuple(e for e in wildcard if e not in emitters))
            for event, emitters in by_event.items()
        }
        self._table = (routes, _Route(wildcard))

    def detach(self, emitter_id: str) -> None:
        """Stop the emitter and forget it; what it still had queued is dropped and logged.

        An unknown ``emitter_id`` is a no-op.
        """
        if not isinstance(emitter_id, str):
            raise TypeError(f"emitter_id must be a str, not {type(emitter_id).__name__}")
        with self._lock:
            emitter = self._emitters.pop(emitter_id, None)
            if emitter is None:
                return
            self._reroute()
        emitter.close()
        self._forget_if_empty()

    def _get(self, emitter_id: str) -> Emitter:
        try:
            return self._emitters[emitter_id]
        except (KeyError, TypeError):
            raise EmitterNotFoundError(emitter_id) from None

    def pause(self, emitter_id: str) -> None:
        """Stop delivering; queued events, and those emitted while paused, stay queued.

        Raises:
            EmitterNotFoundError: ``emitter_id`` is not attached.
        """
        self._get(emitter_id).pause()

    def restart(self, emitter_id: str) -> None:
        """Resume a paused emitter: it delivers what was queued, in order. No-op if running.

        Raises:
            EmitterNotFoundError: ``emitter_id`` is not attached.
        """
        self._get(emitter_id).restart()

    def list_emitters(self) -> list[str]:
        """The ids of the running emitters (paused ones are not listed)."""
        with self._lock:
            return [i for i, e in self._emitters.items() if not e.paused]

    def is_started(self, emitter_id: str) -> bool:
        """True if ``emitter_id`` is attached and running; False if paused or unknown."""
        emitter = self._emitters.get(emitter_id) if isinstance(emitter_id, str) else None
        return emitter is not None and not emitter.paused

    def stats(self, emitter_id: str) -> EmitterStats:
        """The counters of one emitter: queued, delivered, given up, dropped, retries.

        Raises:
            EmitterNotFoundError: ``emitter_id`` is not attached.
        """
        return self._get(emitter_id).stats()

    # -- emitting -------------------------------------------------------------------------

    def emit(self, event: str, payload: Any, request_id: Optional[str] = None) -> str:
        """Queue ``payload`` for every emitter subscribed to ``event`` (and every ``"*"`` one).

        The payload is encoded to JSON here, once; no network I/O happens in the caller.

        Args:
            event: the event name (a non-empty str without CR or LF, or an Enum member).
            payload: a mapping; values JSON cannot hold are made safe (see the README).
            request_id: the id sent as the delivery id; a new UUID4 when None.

        Returns:
            The request id.

        Raises:
            TypeError, ValueError: a bad event name, request id or payload, or a payload
                larger than the ``max_body_size`` of an emitter subscribed to ``event``.
        """
        event = check_name(event, "event")
        request_id = (
            new_request_id() if request_id is None else check_name(request_id, "request_id")
        )
        body = encode_payload(payload)
        routes, wildcard = self._table
        route = routes.get(event, wildcard)
        if not route.emitters:
            return request_id
        if route.limit is not None and len(body) > route.limit:
            raise ValueError(
                f"payload encodes to {len(body)} bytes, more than max_body_size ({route.limit}) "
                f"of an emitter subscribed to {event!r}"
            )
        if self._closing:
            self._refuse(event, request_id, len(route.emitters))
            return request_id
        message = Message(event, request_id, body)
        for emitter in route.emitters:
            emitter.submit(message)
        return request_id

    def _refuse(self, event: str, request_id: str, count: int) -> None:
        with self._lock:
            self._refused += count
        logger.warning(
            "webhook event dropped: emitted while shutting down",
            extra={"emitter_id": None, "event": event, "request_id": request_id},
        )

    # -- lifecycle ------------------------------------------------------------------------

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every running emitter has delivered or given up all it holds.

        Args:
            timeout: the most seconds to wait; None waits as long as it takes.

        Returns:
            True if everything queued was delivered or given up (``on_delivery`` returned,
            the log line written), False if ``timeout`` passed first. Paused emitters are
            not waited for.
        """
        deadline = None if timeout is None else _deadline(_seconds("timeout", timeout))
        done = True
        with self._lock:
            emitters = list(self._emitters.values())
        for emitter in emitters:
            done = emitter.flush(deadline) and done
        return done

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop accepting events, deliver what is queued for up to ``timeout`` seconds, stop.

        What is left (including everything held by paused emitters) is dropped and logged
        with its count. The instance is then empty and may be attached to again. Safe to
        call twice.
        """
        deadline = _deadline(_seconds("timeout", timeout))
        with self._lock:
            if self._closing:
                return
            self._closing = True
        try:
            self.flush(_left(deadline))
            with self._lock:
                emitters = list(self._emitters.values())
                self._emitters.clear()
                self._reroute()
            for emitter in emitters:
                emitter.close()
            for emitter in emitters:
                emitter.join(_left(deadline))
            for emitter in emitters:
                emitter.abandon()  # a try still under way: logged now, the exit may not wait
            self._forget_if_empty()
        finally:
            with self._lock:
                self._closing = False

    def _forget_if_empty(self) -> None:
        """Leave the exit hook's set once no emitter is attached."""
        with self._lock, _attached_lock:
            if not self._emitters:
                _attached.discard(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._closing = False
        for emitter in self._emitters.values():
            emitter.after_fork()


@atexit.register
def _exit_hook() -> None:
    """At interpreter exit, deliver what is queued, each instance up to its exit_timeout."""
    start = time.monotonic()
    with _attached_lock:
        instances = list(_attached)
    for instance in instances:
        try:
            instance.shutdown(max(start + instance.exit_timeout - time.monotonic(), 0.0))
        except Exception:  # noqa: BLE001 - never fail the interpreter's exit
            logger.exception("webhooks_emitter exit hook failed")


def _after_fork_in_child() -> None:
    global _attached_lock
    _attached_lock = threading.Lock()  # another thread may have held it at the fork
    for instance in list(_instances):
        instance._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
