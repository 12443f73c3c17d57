"""The registry that ``attach`` and ``emit`` act on: the ``WebhooksEmitter`` class."""

from __future__ import annotations

import atexit
import logging
import math
import multiprocessing.util
import os
import threading
import time
import weakref
from collections.abc import Collection, Iterable
from typing import Any, Callable, Optional, Union

from . import _observe, _signals, _validate
from ._config import Config, EmitterStats
from ._emitter import Emitter
from ._encoding import check_name, check_request_id, encode_payload, new_request_id
from ._housekeeping import Housekeeper
from ._logcount import RateLimitedCount
from ._transport import Transport
from .exceptions import EmitterExistsError, EmitterNotFoundError, WebhooksEmitterError
from .stores import MemoryStore, Store, from_url
from .stores._base import FailedEvent, Lease, Message, StoreError

__all__ = ["WebhooksEmitter"]

logger = logging.getLogger(__name__)

WILDCARD = "*"

# Every instance, for the fork hook (weakly: instances may be collected).
_instances: weakref.WeakSet[WebhooksEmitter] = weakref.WeakSet()
# Instances with attached emitters, for the exit hook: held strongly, so that an instance
# the program dropped still has its events delivered at exit (its threads still run).
_attached: set[WebhooksEmitter] = set()
_attached_lock = threading.Lock()


def _deadline(seconds: float) -> Optional[float]:
    """The ``time.monotonic()`` value ``seconds`` from now; None for no deadline (infinity)."""
    return None if math.isinf(seconds) else time.monotonic() + seconds


def _left(deadline: Optional[float]) -> Optional[float]:
    """Seconds left until ``deadline`` (at least 0), or None when there is none."""
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


def _traced(capture: Callable[[], Optional[str]]) -> Optional[str]:
    """The caller's trace context, as ``_observe.trace_capture`` gives it; a capture that
    fails costs the event its trace, never the event (logged)."""
    try:
        return capture()
    except Exception:  # noqa: BLE001 - an observer's failure must not fail emit
        logger.warning("webhooks_emitter: the trace context capture failed", exc_info=True)
        return None


def _to_store(value: Union[Store, str]) -> Store:
    if isinstance(value, Store):
        return value
    if isinstance(value, str):
        return from_url(value)
    raise TypeError(
        f"store must be a webhooks_emitter.stores store or a store URL, not {type(value).__name__}"
    )


class WebhooksEmitter:
    """A set of attached emitters and the events emitted to them.

    The module-level functions (``webhooks_emitter.attach`` and so on) act on one default
    instance; make your own for an independent set. Every method is thread-safe.

    Args:
        exit_timeout: seconds the exit hook spends delivering what is still queued when
            the interpreter ends (see :meth:`configure`).
        store: where events wait: a store of :mod:`webhooks_emitter.stores` or its URL
            (``memory:``, ``sqlite:///path.db``, ``postgresql://...``); memory by default.
        deliver: False makes a process that only stores events, for a worker process to
            deliver (a durable store is then required).
        idle_timeout: seconds an emitter with nothing to do keeps its thread.

    Raises:
        TypeError, ValueError: an argument is not of the documented form.
        StoreError: the store could not be opened.
    """

    def __init__(
        self,
        exit_timeout: float = 5.0,
        *,
        store: Union[Store, str, None] = None,
        deliver: bool = True,
        idle_timeout: float = 30.0,
    ) -> None:
        self._exit_timeout = _validate.number("exit_timeout", exit_timeout, finite=False)
        self._idle_timeout = _validate.number(
            "idle_timeout", idle_timeout, strict=True, finite=False
        )
        if not isinstance(deliver, bool):
            raise TypeError(f"deliver must be a bool, not {type(deliver).__name__}")
        self._store: Store = MemoryStore() if store is None else _to_store(store)
        if not deliver and not self._store.durable:
            raise ValueError("deliver=False needs a durable store (SQLite or PostgreSQL)")
        self._deliver = deliver
        self._lock = threading.Lock()
        self._emitters: dict[str, Emitter] = {}
        # Detached emitters whose threads may still run (a try on the wire), by id: an
        # attach of the same id follows it. Weak: a thread keeps its emitter alive.
        self._ending: weakref.WeakValueDictionary[str, Emitter] = weakref.WeakValueDictionary()
        # emit() reads these without the lock: the emitters by event name and the "*"
        # ones, each a dict changed in place under the lock. emit() copies the values it
        # needs in one C-level call (list(d.values())), which no other thread interrupts.
        self._routes: dict[str, dict[str, Emitter]] = {}
        self._wildcard: dict[str, Emitter] = {}
        self._closing = False
        self._refused = RateLimitedCount()
        self._lease = Lease.new()
        self._housekeeper = Housekeeper(self)
        self._transport_factory: Callable[[Config], Any] = Transport
        self._transport_generation = 0
        _instances.add(self)

    def __repr__(self) -> str:
        return (
            f"<WebhooksEmitter store={self._store.describe()!r} "
            f"emitters={list(self._emitters)[:10]!r}>"
        )

    def configure(
        self,
        *,
        exit_timeout: Optional[float] = None,
        store: Union[Store, str, None] = None,
        deliver: Optional[bool] = None,
        idle_timeout: Optional[float] = None,
        handle_sigterm: Optional[bool] = None,
    ) -> None:
        """Change settings of this instance.

        Args:
            exit_timeout: seconds the exit hook may spend delivering what is queued.
            store: a store, or its URL; only while no emitter is attached.
            deliver: False makes this process only store events (a durable store is
                needed), for worker processes to deliver; only while no emitter is attached.
            idle_timeout: seconds an emitter with nothing to do keeps its thread (> 0).
            handle_sigterm: True installs a SIGTERM handler that raises ``SystemExit(143)``
                in the main thread, so the exit hook runs (only where SIGTERM still has
                Python's default action; call it from the main thread).

        Raises:
            WebhooksEmitterError: ``store`` was given while emitters are attached.
        """
        if exit_timeout is not None:
            self._exit_timeout = _validate.number("exit_timeout", exit_timeout, finite=False)
        if idle_timeout is not None:
            self._idle_timeout = _validate.number(
            "idle_timeout", idle_timeout, strict=True, finite=False
        )
        if deliver is not None and not isinstance(deliver, bool):
            raise TypeError(f"deliver must be a bool, not {type(deliver).__name__}")
        if store is not None or deliver is not None:
            new = self._store if store is None else _to_store(store)
            delivers = self._deliver if deliver is None else deliver
            with self._lock:
                if self._emitters and (new is not self._store or delivers != self._deliver):
                    what = "store" if new is not self._store else "deliver setting"
                    raise WebhooksEmitterError(
                        f"cannot change the {what} of an instance with emitters attached: "
                        "detach them (or shutdown()) first"
                    )
                if not delivers and not new.durable:
                    raise ValueError("deliver=False needs a durable store (SQLite or PostgreSQL)")
                self._store = new
                self._deliver = delivers
        if handle_sigterm is not None:
            if not isinstance(handle_sigterm, bool):
                raise TypeError(
                    f"handle_sigterm must be a bool, not {type(handle_sigterm).__name__}"
                )
            if handle_sigterm:
                _signals.exit_on_sigterm()

    @property
    def exit_timeout(self) -> float:
        """Seconds the exit hook may spend delivering what is queued."""
        return self._exit_timeout

    @property
    def idle_timeout(self) -> float:
        """Seconds an emitter with nothing to do keeps its thread."""
        return self._idle_timeout

    @property
    def store(self) -> Store:
        """Where this instance's events wait."""
        return self._store

    @property
    def delivers(self) -> bool:
        """False for an instance made with ``deliver=False`` (it only stores events)."""
        return self._deliver

    @property
    def lease(self) -> Lease:
        """The lease this instance's emitters hold (per process)."""
        return self._lease

    # -- for emitters -------------------------------------------------------------------------

    @property
    def transport_generation(self) -> int:
        return self._transport_generation

    def make_transport(self, config: Config) -> Any:
        """A new transport (HTTP session) for one delivering thread."""
        hook = _capture_hook
        if hook is not None and not self._store.durable:
            return hook(config)
        return self._transport_factory(config)

    def set_transport_factory(self, factory: Optional[Callable[[Config], Any]]) -> None:
        """Make deliveries through ``factory(config)`` (None: the network); used by
        :func:`webhooks_emitter.testing.capture`. Threads switch before their next try."""
        self._transport_factory = Transport if factory is None else factory
        self._transport_generation += 1

    def settle_capture(self, timeout: float, reason: str) -> int:
        """The end of a capture: deliver what this instance holds now, its waits cut short,
        for up to ``timeout`` seconds (into the capture, still in effect), then drop what
        is still held, paused emitters' events included (logged, counted as dropped).
        Returns how many events were dropped. Memory store only."""
        deadline = _deadline(timeout)
        with self._lock:
            emitters = list(self._emitters.values())
        while True:
            # Again and again: a try under way (begun before the capture) may end in a new
            # backoff after the waits were cut.
            for emitter in emitters:
                emitter.due_now()
            left = _left(deadline)
            if self.flush(0.05 if left is None else min(left, 0.05)):
                break
            if left is not None and left <= 0.05:
                break
        return sum(emitter.drop_held(reason) for emitter in emitters)

    def schedule(self, emitter: Any, at: float) -> None:
        """Wake ``emitter`` at monotonic time ``at``."""
        self._housekeeper.schedule(emitter, at)

    def lease_acquired(self, emitter: Any) -> None:
        """``emitter`` took its lease: the housekeeping thread renews it from now on."""
        if self._store.durable:
            self._housekeeper.leased(emitter, True)

    def leases_held(self) -> int:
        """How many emitters of this instance hold their lease now."""
        return self._housekeeper.leases_held()

    def lease_released(self, emitter: Any) -> None:
        """``emitter`` let go of its lease: no more renewals."""
        if self._store.durable:
            self._housekeeper.leased(emitter, False)

    def attached(self, emitter_id: str) -> Optional[Emitter]:
        """The emitter attached here as ``emitter_id``, or None (no lock: one dict read)."""
        return self._emitters.get(emitter_id)

    def has_emitters(self) -> bool:
        """Whether any emitter is attached here."""
        return bool(self._emitters)

    # -- attaching ------------------------------------------------------------------------

    def attach(self, emitter_id: str, event: str, config: Config) -> None:
        """Attach an emitter that delivers ``event`` with ``config``.

        No thread starts until it has something to deliver (an emitted event, or one found
        in a durable store).

        Args:
            emitter_id: a name for the emitter, unique within this instance.
            event: the event name to deliver, or ``"*"`` for every event.
            config: where and how to deliver.

        Raises:
            EmitterExistsError: ``emitter_id`` is attached already (paused ones included).
            TypeError, ValueError: an argument is not of the documented form.
            StoreError: a durable store could not record the emitter.
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
        if emitter_id in self._emitters:
            raise EmitterExistsError(emitter_id)
        store = self._store
        state = None
        try:
            store.register(emitter_id)
            if store.durable:
                state = store.state(emitter_id)
        except StoreError as exc:
            # Attached all the same (a web process must not lose its emitters because the
            # database was down at its start): emit raises while the store is unreachable,
            # and the emitter's thread registers it when it first takes the lease.
            logger.warning(
                "webhook emitter %r attached, but its store cannot be reached yet: %s",
                emitter_id,
                exc,
                extra={"emitter_id": emitter_id, "event": None, "request_id": None},
            )
        emitter = Emitter(self, emitter_id, frozenset(events), config)
        if state is not None and state.paused:
            emitter.set_paused(True)
        predecessor = self._ending.get(emitter_id)
        if predecessor is not None:
            emitter.follow(predecessor)
        with self._lock:
            if emitter_id in self._emitters:
                raise EmitterExistsError(emitter_id)
            self._emitters[emitter_id] = emitter
            if WILDCARD in emitter.events:
                self._wildcard[emitter_id] = emitter
            else:
                for name in emitter.events:
                    route = self._routes.get(name)
                    if route is None:
                        self._routes[name] = {emitter_id: emitter}
                    else:
                        route[emitter_id] = emitter
        if store.durable and self._deliver:
            self._housekeeper.ensure()
            if state is not None and state.queued and not state.paused:
                emitter.kick()  # what the store already holds for it (a lease held
                # elsewhere makes its thread end at once; the poll looks again later)
        with _attached_lock:
            _attached.add(self)
        logger.info(
            "webhook emitter %r attached to %s",
            emitter_id,
            ", ".join(sorted(events)),
            extra={"emitter_id": emitter_id, "event": None, "request_id": None},
        )

    def _unroute_locked(self, emitter: Emitter) -> None:
        emitter_id = emitter.emitter_id
        self._wildcard.pop(emitter_id, None)
        for name in emitter.events:
            route = self._routes.get(name)
            if route is not None:
                route.pop(emitter_id, None)
                if not route:
                    del self._routes[name]

    def detach(self, emitter_id: str) -> None:
        """Stop the emitter and forget it.

        With the memory store what it still had queued is dropped and logged with its
        count; a durable store keeps it for the next attach. An unknown ``emitter_id`` is
        a no-op.
        """
        if not isinstance(emitter_id, str):
            raise TypeError(f"emitter_id must be a str, not {type(emitter_id).__name__}")
        with self._lock:
            emitter = self._emitters.pop(emitter_id, None)
            if emitter is None:
                return
            self._unroute_locked(emitter)
        emitter.close("detached")
        if emitter.workers:
            self._ending[emitter_id] = emitter  # a re-attach of the id waits for its end
        self._forget_if_empty()

    def _get(self, emitter_id: str) -> Emitter:
        try:
            return self._emitters[emitter_id]
        except (KeyError, TypeError):
            raise EmitterNotFoundError(emitter_id) from None

    def _known(self, emitter_id: str) -> Optional[Emitter]:
        """The attached emitter, or None for an id only a durable store knows."""
        emitter = self._emitters.get(emitter_id) if isinstance(emitter_id, str) else None
        if emitter is not None:
            return emitter
        if not isinstance(emitter_id, str):
            raise TypeError(f"emitter_id must be a str, not {type(emitter_id).__name__}")
        if self._store.durable and self._store.known(emitter_id):
            return None
        raise EmitterNotFoundError(emitter_id)

    def pause(self, emitter_id: str) -> None:
        """Stop delivering (in every process, with a durable store); events stay queued.

        Raises:
            EmitterNotFoundError: ``emitter_id`` is not attached (nor known to the store).
            StoreError: the store could not record it.
        """
        emitter = self._known(emitter_id)
        if emitter is None:
            self._store.set_paused(emitter_id, True)
        else:
            emitter.pause()

    def restart(self, emitter_id: str) -> None:
        """Resume a paused emitter: it delivers what was queued, in order. No-op if running.

        Raises:
            EmitterNotFoundError: ``emitter_id`` is not attached (nor known to the store).
            StoreError: the store could not record it.
        """
        emitter = self._known(emitter_id)
        if emitter is None:
            if self._store.state(emitter_id).paused:
                self._store.set_paused(emitter_id, False)
        else:
            emitter.restart()

    def list_emitters(self) -> list[str]:
        """The ids of the running emitters attached here (paused ones are not listed)."""
        with self._lock:
            emitters = list(self._emitters.values())
        if self._store.durable and emitters:
            paused = {row.emitter_id for row in self._store.poll() if row.paused}
            return [e.emitter_id for e in emitters if e.emitter_id not in paused]
        return [e.emitter_id for e in emitters if not e.paused]

    def is_started(self, emitter_id: str) -> bool:
        """True if ``emitter_id`` is running; False if paused or unknown."""
        emitter = self._emitters.get(emitter_id) if isinstance(emitter_id, str) else None
        if self._store.durable and isinstance(emitter_id, str):
            if emitter is None and not self._store.known(emitter_id):
                return False
            return not self._store.state(emitter_id).paused
        return emitter is not None and not emitter.paused

    def stats(self, emitter_id: str) -> EmitterStats:
        """The counters of one emitter (see :class:`EmitterStats`).

        Raises:
            EmitterNotFoundError: ``emitter_id`` is not attached (nor known to the store).
        """
        emitter = self._known(emitter_id)
        if emitter is not None:
            return emitter.stats()
        state = self._store.state(emitter_id)
        return EmitterStats(
            queued=state.queued,
            delivered=0,
            given_up=0,
            dropped=0,
            retries=0,
            paused=state.paused,
            failed=state.failed,
        )

    # -- health ----------------------------------------------------------------------------

    def health(self, max_age: Optional[float] = None, timeout: float = 2.0) -> Any:
        """Whether this instance is healthy (CONTRACT 15): its store answers within
        ``timeout`` seconds, its background thread runs, and, with ``max_age``, no running
        emitter attached here has a queued event older than ``max_age`` seconds.

        Returns:
            A ``Health`` (frozen): ``ok`` and ``problems`` (one-line strings).
        """
        from ._health import check  # the observability module, imported when first asked

        return check(self, max_age=max_age, timeout=timeout)

    def housekeeping_age(self) -> Optional[float]:
        """Seconds since this instance's background (housekeeping) thread last went round
        its loop, or None when no such thread is needed now (nothing to time or poll)."""
        return self._housekeeper.age()

    def housekeeping_alive(self) -> bool:
        """False when the background thread is needed but has died."""
        return self._housekeeper.alive()

    def emitter_ids(self, include_paused: bool = True) -> list[tuple[str, bool]]:
        """The emitters attached here, as ``(emitter_id, running)`` pairs sorted by id;
        ``running`` is False for one this process sees paused. ``include_paused=False``
        leaves those out. Reads no store."""
        with self._lock:
            emitters = list(self._emitters.values())
        pairs = sorted((e.emitter_id, not e.paused) for e in emitters)
        return pairs if include_paused else [p for p in pairs if p[1]]

    # -- dead letters -------------------------------------------------------------------------

    def failed(self, emitter_id: str, limit: int = 100) -> list[FailedEvent]:
        """The events ``emitter_id`` gave up, oldest first (in emit order), up to ``limit``."""
        emitter_id = check_name(emitter_id, "emitter_id")
        return self._store.failed(emitter_id, _validate.integer("limit", limit, minimum=1))

    def replay(self, emitter_id: str, request_ids: Optional[Iterable[str]] = None) -> int:
        """Queue failed events again (all, or those request ids), at the tail, in their
        original emit order, with a fresh count of tries; returns how many."""
        emitter_id = check_name(emitter_id, "emitter_id")
        ids: Optional[Collection[str]] = None
        if request_ids is not None:
            if isinstance(request_ids, (str, bytes)) or not isinstance(request_ids, Iterable):
                raise TypeError(
                    "request_ids must be an iterable of request ids, not "
                    f"{type(request_ids).__name__}"
                )
            ids = [check_name(i, "request_ids") for i in request_ids]
        count = self._store.replay(emitter_id, ids)
        emitter = self._emitters.get(emitter_id)
        if count and emitter is not None:
            emitter.wake()
        return count

    def purge(self, emitter_id: str) -> int:
        """Delete every event stored for ``emitter_id``, queued and failed; returns how many."""
        emitter_id = check_name(emitter_id, "emitter_id")
        return self._store.purge(emitter_id)

    # -- emitting -------------------------------------------------------------------------

    def emit(
        self,
        event: str,
        payload: Any,
        request_id: Optional[str] = None,
        *,
        ordering_key: Optional[str] = None,
        connection: Any = None,
        to: Union[str, Iterable[str], None] = None,
    ) -> str:
        """Queue ``payload`` for every emitter subscribed to ``event`` (and every ``"*"`` one).

        The payload is encoded to JSON here, once; no network I/O happens in the caller.
        With a durable store it returns once the event is committed to the store.

        Args:
            event: the event name (a non-empty str without CR or LF, or an Enum member).
            payload: a mapping; values JSON cannot hold are made safe (see the README).
            request_id: the id sent as the delivery id; a new UUID4 when None.
            ordering_key: events of one emitter with the same key never overlap and
                arrive in emit order, even with ``max_in_flight`` above 1.
            connection: a database connection whose open transaction the event joins
                (PostgreSQL store only): delivered only if that transaction commits.
            to: an emitter id or ids: the event goes only to those of them subscribed.

        Returns:
            The request id.

        Raises:
            TypeError, ValueError: a bad argument, or a payload larger than the
                ``max_body_size`` of an emitter it goes to.
            StoreError: a durable store could not take the event (nothing was stored).
        """
        if connection is not None and not self._store.transactional:
            raise ValueError(
                "connection= needs a PostgresStore; this instance's store is "
                f"{self._store.describe()}"
            )
        event = check_name(event, "event")
        request_id = (
            new_request_id() if request_id is None else check_request_id(request_id)
        )
        if ordering_key is not None:
            ordering_key = check_name(ordering_key, "ordering_key")
        body = encode_payload(payload)
        if to is None:
            route = self._routes.get(event)
            if route:
                targets = list(route.values())
                if self._wildcard:
                    targets += self._wildcard.values()
            else:
                targets = list(self._wildcard.values())
        else:
            targets = self._addressed(event, to)
        if not targets:
            return request_id
        limit = None
        for emitter in targets:
            size = emitter.config.max_body_size
            if size is not None and (limit is None or size < limit):
                limit = size
        if limit is not None and len(body) > limit:
            raise ValueError(
                f"payload encodes to {len(body)} bytes, more than max_body_size ({limit}) "
                f"of an emitter subscribed to {event!r}"
            )
        if self._closing:
            self._refuse(event, request_id, len(targets))
            return request_id
        capture = _observe.trace_capture
        message = Message(
            event, request_id, body, ordering_key, None if capture is None else _traced(capture)
        )
        accepted = self._store.append(message, targets, connection)
        local = connection is None
        for emitter, stored in zip(targets, accepted):
            if not stored:
                emitter.refused(message)
            elif local:
                emitter.wake()
        if not local:
            # Delivered after the caller's commit: the store's notification (or poll)
            # wakes the deliverer; an emitter of this process looks again soon too.
            self._housekeeper.ensure()
        return request_id

    def _addressed(self, event: str, to: Union[str, Iterable[str]]) -> list[Emitter]:
        if isinstance(to, str):
            names: Iterable[str] = (to,)
        elif isinstance(to, Iterable) and not isinstance(to, bytes):
            names = to
        else:
            raise TypeError(f"to must be an emitter id or ids, not {type(to).__name__}")
        targets = []
        seen = set()
        emitters = self._emitters
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"to must hold emitter ids (str), not {type(name).__name__}")
            emitter = emitters.get(name)
            if (
                emitter is not None
                and name not in seen
                and (event in emitter.events or WILDCARD in emitter.events)
            ):
                seen.add(name)
                targets.append(emitter)
        return targets

    def _refuse(self, event: str, request_id: str, count: int) -> None:
        with self._lock:
            self._refused.add(count)
            logged = self._refused.take(force=False)
        if logged:
            self._log_refused(logged, event, request_id)

    def _log_refused(self, count: int, event: Optional[str], request_id: Optional[str]) -> None:
        logger.warning(
            "webhook emitter dropped %d event(s): emitted while shutting down",
            count,
            extra={"emitter_id": None, "event": event, "request_id": request_id},
        )

    # -- lifecycle ------------------------------------------------------------------------

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until the events stored before the call are delivered or given up.

        Args:
            timeout: the most seconds to wait; None waits as long as it takes.

        Returns:
            True if everything queued for the running emitters attached here was delivered
            or given up (``on_delivery`` returned, the log line written), whichever process
            delivered it; False if ``timeout`` passed first. Paused emitters are not waited
            for; an instance made with ``deliver=False`` returns True at once.
        """
        deadline = (
            None
            if timeout is None
            else _deadline(_validate.number("timeout", timeout, finite=False))
        )
        if not self._deliver:
            return True
        with self._lock:
            emitters = dict(self._emitters)
        store = self._store
        marks = store.high_water(list(emitters)) if emitters else {}
        poll = store.poll_interval if store.durable else None
        for emitter_id, emitter in emitters.items():
            mark = marks.get(emitter_id)
            while True:
                if emitter.paused or emitter.closed:
                    break
                if not emitter.busy() and (
                    mark is None or store.queued_upto(emitter_id, mark) == 0
                ):
                    break
                remaining = _left(deadline)
                if remaining is not None and remaining <= 0:
                    return False
                # Woken when the marked event is done here; the timeout covers the rest
                # (tries in parallel ending out of order, another process delivering).
                wait = min(x for x in (remaining, poll, 0.1) if x is not None)
                emitter.wait_flushed(mark, wait)
        return True

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop accepting events, deliver what is queued for up to ``timeout`` seconds, stop.

        With the memory store what is left (including everything held by paused emitters)
        is dropped and logged with its count; a durable store keeps it for the next attach.
        The instance is then empty and may be attached to again. Safe to call twice.
        """
        self._shutdown(timeout, "shut down")

    def _shutdown(self, timeout: float, reason: str) -> None:
        deadline = _deadline(_validate.number("timeout", timeout, finite=False))
        with self._lock:
            if self._closing:
                return
            self._closing = True
        try:
            try:
                self.flush(_left(deadline))
            except StoreError as exc:
                logger.warning("webhooks_emitter: %s; stopping without waiting for it", exc)
            with self._lock:
                emitters = list(self._emitters.values())
                self._emitters.clear()
                self._routes = {}
                self._wildcard = {}
            for emitter in emitters:
                emitter.close(reason)
                if emitter.workers:
                    self._ending[emitter.emitter_id] = emitter
            # Detached ones with a try still under way are waited for (and abandoned) too.
            emitters += [e for e in list(self._ending.values()) if e not in emitters]
            for emitter in emitters:
                emitter.join(deadline)
            for emitter in emitters:
                emitter.abandon()  # tries still under way: logged now, the exit may not wait
            self._housekeeper.stop()
            self._forget_if_empty()
        finally:
            with self._lock:
                self._closing = False
                refused = self._refused.take(force=True)
            if refused:
                self._log_refused(refused, None, None)

    def _forget_if_empty(self) -> None:
        """Leave the exit hook's set once no emitter is attached."""
        with self._lock, _attached_lock:
            if not self._emitters:
                _attached.discard(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._ending = weakref.WeakValueDictionary()
        self._closing = False
        self._lease = Lease.new()
        self._housekeeper = Housekeeper(self)
        self._store.after_fork()
        for emitter in self._emitters.values():
            paused = emitter.paused
            emitter.after_fork()
            try:
                self._store.register(emitter.emitter_id)
                if paused and not self._store.durable:
                    self._store.set_paused(emitter.emitter_id, True)
            except StoreError as exc:
                logger.warning("webhooks_emitter: after fork, the store failed: %s", exc)


# testing.capture() with no instance: every instance on the memory store, those made later
# included, makes its transports here while it is set (None: each its own factory).
_capture_hook: Optional[Callable[[Config], Any]] = None


def set_capture_hook(factory: Optional[Callable[[Config], Any]]) -> list[WebhooksEmitter]:
    """Make every memory-store instance deliver through ``factory`` (None: as before).

    Returns the memory-store instances of the process at that moment (weakly held
    elsewhere; the caller settles them when the capture ends). Their threads switch
    before their next try."""
    global _capture_hook
    _capture_hook = factory
    instances = memory_instances()
    for instance in instances:
        instance._transport_generation += 1
    return instances


def memory_instances() -> list[WebhooksEmitter]:
    """Every live instance of the process on the memory store."""
    return [i for i in list(_instances) if not i.store.durable]


def _exit_hook() -> None:
    """At interpreter exit, deliver what is queued, each instance up to its exit_timeout."""
    start = time.monotonic()
    with _attached_lock:
        instances = list(_attached)
    for instance in instances:
        try:
            instance._shutdown(
                max(start + instance.exit_timeout - time.monotonic(), 0.0),
                "exit deadline reached",
            )
        except Exception:  # noqa: BLE001 - never fail the interpreter's exit
            logger.exception("webhooks_emitter exit hook failed")


atexit.register(_exit_hook)


def _after_fork_in_child() -> None:
    global _attached_lock
    _attached_lock = threading.Lock()  # another thread may have held it at the fork
    for instance in list(_instances):
        instance._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _MultiprocessingHook:
    """A multiprocessing child (fork start method) ends with ``os._exit`` after running
    multiprocessing's own finalizers, never atexit; it also clears the finalizers it
    inherited. Its after-fork callbacks run after that clearing: register the exit hook
    there, so the child's events are delivered too, within exit_timeout."""

    @staticmethod
    def in_child(_: object) -> None:
        multiprocessing.util.Finalize(None, _exit_hook, exitpriority=100)


_mp_hook = _MultiprocessingHook()
multiprocessing.util.register_after_fork(_mp_hook, _MultiprocessingHook.in_child)
