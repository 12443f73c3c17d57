"""The store interface: where an emitter's events and its delivery state live.

Design
------

An emitter never holds the truth about its events; a *store* does. The emitter (one per
attached endpoint, in ``_emitter.py``) keeps only a small *window*: the next few queued
events, fetched from the store while it holds that emitter's *lease*, so that its threads can
choose what to try next (the oldest due event whose ordering key is free) without a query per
choice. Everything that must outlive the process goes through the calls below, each of them
one short transaction in a durable store:

``append``
    ``emit`` writes one event for every subscribed emitter, all or nothing, and learns which
    emitters were full (``max_queue_size``). ``connection=`` writes through the caller's own
    database connection, inside its transaction (PostgreSQL only).
``acquire`` / ``renew`` / ``release``
    At most one process delivers an emitter's events at a time: the holder of its lease,
    named by a :class:`Lease` (host, pid, a random token). Leases expire ``lease_timeout``
    seconds after their last renewal, so a dead holder is replaced. ``release`` records when
    the emitter's next try is due, so idle processes know when to look again.
``fetch``
    The next queued events of an emitter, oldest first, skipping those already in the window.
``begin_try`` / ``retry_later`` / ``finish`` / ``give_up``
    The life of one try, each recorded under the lease token that made it: a call made by a
    process that lost the lease changes nothing and returns False. ``begin_try`` is recorded
    *before* the request is sent and counts toward ``max_attempts``; it also refuses when the
    emitter is paused, so one statement checks both lease and pause. Delivered events are
    deleted; given-up events stay as *failed* (dead letters) with their tries, last status
    and error.
``settle``
    Several of those in one transaction: the outcomes of tries that ended together and the
    ``begin_try`` of the next event, so a delivery costs one commit where two were the
    floor. The default calls the single methods one after another.
``state`` / ``set_paused`` / ``set_hold`` / ``set_failing_since`` / ``poll``
    Per-emitter state shared by every process: paused, the end of a Retry-After hold, the
    start of the last try (``max_rate``) and the first failure since the last 2xx
    (``disable_after``). ``poll`` answers, in one query, which emitters have queued events
    or are paused, so a process with thousands of attached emitters never asks per emitter.
``failed`` / ``replay`` / ``purge``
    Dead letters, for operators.

The memory store implements the same calls in this process's memory (a lease there is always
granted), so the emitter has one code path whatever the store.

Times stored are wall-clock Unix seconds (``time.time()``), comparable across processes;
the emitter turns them into waits on the monotonic clock.
"""

from __future__ import annotations

import abc
import datetime
import os
import secrets
import socket
from collections.abc import Collection, Sequence
from typing import Any, ClassVar, Optional, Protocol

import attrs

from ..exceptions import WebhooksEmitterError

__all__ = [
    "EmitterState",
    "FailedEvent",
    "Lease",
    "Message",
    "Store",
    "StoreError",
    "StoredEvent",
    "Target",
    "TargetLike",
]


class StoreError(WebhooksEmitterError):
    """The store could not do what was asked: disk full, database unreachable, locked...

    The message names the store (its file or server, never a password) and the cause.
    Raised in the caller's thread (``emit``, a store's constructor, an operator function);
    when ``emit`` raises it, nothing of that event was stored.
    """


class Message:
    """One emitted event, encoded once and shared by every emitter subscribed to it."""

    __slots__ = ("body", "event", "ordering_key", "request_id", "trace_context")

    def __init__(
        self,
        event: str,
        request_id: str,
        body: bytes,
        ordering_key: Optional[str] = None,
        trace_context: Optional[str] = None,
    ) -> None:
        self.event = event
        self.request_id = request_id
        self.body = body
        self.ordering_key = ordering_key
        # The caller's trace context at emit (``_observe.trace_capture``), kept with the
        # event so a try made later, maybe by another process, joins the caller's trace.
        self.trace_context = trace_context

    def __repr__(self) -> str:
        return f"<Message {self.event!r} {self.request_id!r} {len(self.body)} bytes>"


class TargetLike(Protocol):
    """What ``append`` needs of an emitter: its id and the most events it may hold."""

    @property
    def emitter_id(self) -> str: ...

    @property
    def max_queue_size(self) -> int: ...


@attrs.frozen
class Target:
    """An emitter ``append`` writes to, and the most events it may hold (any object with
    these two attributes will do: the engine passes its emitters)."""

    emitter_id: str
    max_queue_size: int


class StoredEvent:
    """One event queued for one emitter, as the store holds it.

    ``seq`` orders events in emit order (per store); ``attempts`` counts the tries made so
    far, ``next_at`` is when the next try is due (Unix seconds; 0 for "now"), ``emitted_at``
    when the event was first emitted, ``trace_context`` the emitting caller's trace context
    (None when none was captured). The emitter changes ``attempts``, ``next_at``,
    ``status_code`` and ``error`` on its copy and hands it back to the store to record.
    """

    __slots__ = (
        "attempts",
        "body",
        "emitted_at",
        "emitter_id",
        "error",
        "event",
        "next_at",
        "ordering_key",
        "request_id",
        "seq",
        "status_code",
        "trace_context",
    )

    def __init__(
        self,
        seq: int,
        emitter_id: str,
        event: str,
        request_id: str,
        body: bytes,
        ordering_key: Optional[str] = None,
        attempts: int = 0,
        next_at: float = 0.0,
        emitted_at: float = 0.0,
        status_code: Optional[int] = None,
        error: Optional[str] = None,
        trace_context: Optional[str] = None,
    ) -> None:
        self.seq = seq
        self.emitter_id = emitter_id
        self.event = event
        self.request_id = request_id
        self.body = body
        self.ordering_key = ordering_key
        self.attempts = attempts
        self.next_at = next_at
        self.emitted_at = emitted_at
        self.status_code = status_code
        self.error = error
        self.trace_context = trace_context

    def __repr__(self) -> str:
        return (
            f"<StoredEvent #{self.seq} {self.emitter_id!r} {self.event!r} {self.request_id!r} "
            f"attempts={self.attempts}>"
        )


@attrs.frozen
class FailedEvent:
    """An event that was given up and kept as a dead letter (see ``failed()``).

    Attributes:
        emitter_id: the emitter that gave it up.
        event: the event name.
        request_id: the request id (also its delivery id).
        attempts: the tries made.
        status_code: the last answer's HTTP status, or None if none came.
        error: why the last try failed.
        failed_at: when it was given up (an aware UTC datetime).
        body: the JSON body it carried.
    """

    emitter_id: str
    event: str
    request_id: str
    attempts: int
    status_code: Optional[int]
    error: Optional[str]
    failed_at: datetime.datetime
    body: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")


@attrs.frozen
class EmitterState:
    """What a store knows of one emitter id, shared by every process over the store.

    Attributes:
        emitter_id: the id.
        queued: events queued (not failed), counted over every process.
        failed: failed events kept.
        paused: paused in the store (by ``pause``, or a 410 or ``disable_after``).
        hold_until: Unix seconds until which a Retry-After holds every new try (0: none).
        last_try_at: Unix seconds when the last try started (for ``max_rate``; 0: never).
        failing_since: Unix seconds of the first failed try since the last 2xx answer or
            ``restart`` (for ``disable_after``), or None.
        next_due: Unix seconds when the next try is due, as the last lease holder left it.
        oldest_queued_at: Unix seconds when the oldest queued event was emitted, or None.
        lease_holder: "host:pid" of the process holding the lease, or None (also when the
            lease has expired).
    """

    emitter_id: str
    queued: int = 0
    failed: int = 0
    paused: bool = False
    hold_until: float = 0.0
    last_try_at: float = 0.0
    failing_since: Optional[float] = None
    next_due: float = 0.0
    oldest_queued_at: Optional[float] = None
    lease_holder: Optional[str] = None


@attrs.frozen
class Lease:
    """Who delivers: one per ``WebhooksEmitter`` instance and process (new after a fork)."""

    holder: str
    token: str

    @classmethod
    def new(cls) -> Lease:
        """A lease naming this host and process, with a fresh random token."""
        return cls(holder=f"{socket.gethostname()}:{os.getpid()}", token=secrets.token_hex(16))


class Store(abc.ABC):
    """Where events wait for delivery, and their delivery state. See the module docstring.

    Every method is thread-safe and may be called from any thread of the process that made
    the store (and, after ``after_fork``, of a forked child). Methods raise
    :class:`StoreError` when the store cannot answer within its ``timeout``.
    """

    #: Whether events outlive the process (SQLite, PostgreSQL) or not (memory).
    durable: ClassVar[bool] = False
    #: Whether ``append`` takes a caller's database connection (``emit(connection=)``).
    transactional: ClassVar[bool] = False
    #: Seconds a lease lasts without renewal.
    lease_timeout: float = 30.0
    #: Seconds between two polls of the store for work another process stored (durable).
    poll_interval: float = 0.25

    # -- life ---------------------------------------------------------------------------

    def open(self) -> None:  # noqa: B027 - optional hook
        """Make the store usable (schema created or checked); may be called again."""

    def migrate(self) -> int:
        """Create or upgrade the store's schema (``webhooks-emitter migrate``); returns the
        schema version now in the store (0 for a store without a schema)."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Close the store's connections; it reopens them if used again."""

    def after_fork(self) -> None:  # noqa: B027 - optional hook
        """In a forked child: drop (never close) every connection inherited from the parent."""

    def describe(self) -> str:
        """A short name for logs and errors: the file, or the server without a password."""
        return type(self).__name__

    def wait_for_change(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a sign that another process stored something.

        Returns True when the store may have changed (then the caller polls), False on
        timeout. It never raises: a store it cannot read makes it wait and say "maybe", and
        the poll that follows reports the error. The default says "maybe" at once.
        """
        return True

    def wake(self) -> None:  # noqa: B027 - optional hook
        """Cut a ``wait_for_change`` short (used at shutdown)."""

    # -- emitting -------------------------------------------------------------------------

    @abc.abstractmethod
    def append(
        self, message: Message, targets: Sequence[TargetLike], connection: Any = None
    ) -> list[bool]:
        """Queue ``message`` for every target, in one transaction.

        Returns, per target, whether it was stored (False: that emitter already holds
        ``max_queue_size`` queued events). ``connection`` is a caller's database connection
        to write through, inside its transaction (``ValueError`` for stores without one).
        """

    # -- emitters --------------------------------------------------------------------------

    @abc.abstractmethod
    def register(self, emitter_id: str) -> None:
        """Make ``emitter_id`` known to the store (at ``attach``); idempotent."""

    @abc.abstractmethod
    def forget(self, emitter_id: str) -> int:
        """``emitter_id`` was detached from this process.

        Returns how many events it still has queued; a memory store drops them (a loss the
        caller logs) and resets its state, a durable one keeps them, and the shared pause,
        hold and failing state, for the next attach.
        """

    @abc.abstractmethod
    def known(self, emitter_id: str) -> bool:
        """Whether the store knows ``emitter_id`` (attached once, or has events)."""

    @abc.abstractmethod
    def state(self, emitter_id: str) -> EmitterState:
        """The shared state of ``emitter_id`` (defaults when unknown)."""

    @abc.abstractmethod
    def states(self) -> list[EmitterState]:
        """The state of every emitter id the store knows, sorted by id (``status``)."""

    @abc.abstractmethod
    def poll(self) -> list[EmitterState]:
        """In one query: the emitters that have queued events or are paused.

        The ``queued`` counts may be lower bounds (a store may stop counting at a cap to
        keep the query cheap); the engine only asks whether they are above 0, and
        :meth:`state` counts exactly."""

    @abc.abstractmethod
    def set_paused(self, emitter_id: str, paused: bool) -> None:
        """Pause or restart ``emitter_id`` in every process.

        Restarting also ends a Retry-After hold, makes waiting events due at once and
        clears ``failing_since``.
        """

    @abc.abstractmethod
    def set_hold(self, emitter_id: str, lease: Lease, until: float) -> None:
        """Hold every new try of ``emitter_id`` until ``until`` (a Retry-After answer).

        A durable store changes nothing unless ``lease`` holds the emitter."""

    @abc.abstractmethod
    def set_failing_since(self, emitter_id: str, lease: Lease, since: Optional[float]) -> None:
        """Record when the emitter's tries began to fail (None after a 2xx answer).

        A durable store changes nothing unless ``lease`` holds the emitter."""

    # -- leases ----------------------------------------------------------------------------

    @abc.abstractmethod
    def acquire(self, emitter_id: str, lease: Lease) -> bool:
        """Take the lease of ``emitter_id`` if it is free, expired or already ``lease``'s."""

    @abc.abstractmethod
    def renew(self, lease: Lease, emitter_ids: Collection[str]) -> set[str]:
        """Extend the leases ``lease`` holds among ``emitter_ids``; returns those still held.

        A lease that expired but that nobody took since may be renewed; one that was
        released (or taken by another process) is not: a late renewal never takes back a
        lease that was let go."""

    @abc.abstractmethod
    def release(self, emitter_id: str, lease: Lease, next_due: float = 0.0) -> None:
        """Let go of the lease (if ``lease`` holds it), noting when the next try is due."""

    # -- events, under a lease -------------------------------------------------------------

    @abc.abstractmethod
    def fetch(
        self, emitter_id: str, lease: Lease, limit: int, skip: Collection[int] = ()
    ) -> list[StoredEvent]:
        """Up to ``limit`` queued events of ``emitter_id``, oldest first, not in ``skip``.

        The caller passes the events it holds already as ``skip``; every store, the
        memory store included, answers again a queued event the caller fetched before and
        no longer holds (its window was trimmed)."""

    @abc.abstractmethod
    def begin_try(self, lease: Lease, event: StoredEvent, now: float) -> bool:
        """Record that a try of ``event`` starts now (``event.attempts`` already counts it).

        Returns False, recording nothing, when ``lease`` no longer holds the emitter, the
        emitter is paused, or the event is no longer queued (purged): the try must not be
        sent.
        """

    @abc.abstractmethod
    def retry_later(self, lease: Lease, event: StoredEvent) -> bool:
        """Record a failed try: ``event.next_at``, ``status_code`` and ``error``."""

    @abc.abstractmethod
    def finish(self, lease: Lease, event: StoredEvent) -> bool:
        """The event was delivered: delete it."""

    @abc.abstractmethod
    def give_up(self, lease: Lease, event: StoredEvent) -> bool:
        """The event was given up: keep it as failed, with its tries, status and error."""

    def settle(
        self,
        lease: Lease,
        outcomes: Sequence[tuple[str, StoredEvent]],
        begin: Optional[StoredEvent] = None,
        now: float = 0.0,
    ) -> tuple[list[bool], Optional[bool]]:
        """Record several outcomes, and maybe the start of the next try, in one transaction.

        ``outcomes`` are ``(kind, event)`` pairs, ``kind`` one of ``"retry_later"``,
        ``"finish"`` and ``"give_up"``, each meaning what the method of that name means
        (and answering as it would). ``begin``, when given, is an event whose try starts at
        ``now``, exactly as ``begin_try(lease, begin, now)``: it is recorded after the
        outcomes, so a pause or a lost lease refuses it without undoing them.

        Returns each outcome's answer, in order, and ``begin``'s (None when there was no
        ``begin``). A durable store commits all of it at once: the try of ``begin`` is
        recorded before it is sent, and an outcome here is durable before that try is sent.

        This default calls the single methods one after another (one transaction each); a
        store overrides it to make it one.

        Raises:
            ValueError: an unknown ``kind``.
        """
        calls = {"retry_later": self.retry_later, "finish": self.finish, "give_up": self.give_up}
        for kind, _ in outcomes:
            if kind not in calls:  # checked first: a bad call records nothing
                raise ValueError(
                    f"settle: kind must be retry_later, finish or give_up, got {kind!r}"
                )
        answers = [calls[kind](lease, event) for kind, event in outcomes]
        started = None if begin is None else self.begin_try(lease, begin, now)
        return answers, started

    def queued_events(self, emitter_id: str, limit: int = 20) -> list[StoredEvent]:
        """Up to ``limit`` queued events of ``emitter_id``, oldest first (emit order), for
        an operator to look at: read-only, no lease needed, nothing changed (a fetched
        event stays queued and its holder's window untouched). The events are copies:
        changing one changes nothing in the store.

        A store that cannot list its queue without a lease keeps this default, which
        raises NotImplementedError (the dashboard then shows no queued events).

        Raises:
            TypeError, ValueError: ``limit`` is not an int >= 0.
            NotImplementedError: this store cannot list queued events.
            StoreError: the store could not be read.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list its queued events")

    # -- flush ------------------------------------------------------------------------------

    @abc.abstractmethod
    def high_water(self, emitter_ids: Collection[str]) -> dict[str, int]:
        """For each of ``emitter_ids`` with queued events, the ``seq`` of its newest one."""

    @abc.abstractmethod
    def queued_upto(self, emitter_id: str, seq: int) -> int:
        """How many queued events of ``emitter_id`` have a ``seq`` up to ``seq``."""

    # -- dead letters ------------------------------------------------------------------------

    @abc.abstractmethod
    def failed(self, emitter_id: str, limit: int = 100) -> list[FailedEvent]:
        """The failed events of ``emitter_id``, oldest first (emit order), up to ``limit``."""

    @abc.abstractmethod
    def replay(self, emitter_id: str, request_ids: Optional[Collection[str]] = None) -> int:
        """Queue failed events again (all, or those request ids) at the tail, in emit order,
        with no tries counted; returns how many."""

    @abc.abstractmethod
    def purge(self, emitter_id: str) -> int:
        """Delete every event of ``emitter_id``, queued and failed; returns how many."""
