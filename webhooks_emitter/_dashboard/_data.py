"""What the dashboard shows and does, read from and done to a store, apart from any HTML.

This is the dashboard's only way into the operator functions (``webhooks_emitter._reports``)
and the stores, so the CLI, Django and Flask mounts share one code path with the
``status``, ``failed``, ``replay``, ``pause``, ``restart`` and ``purge`` commands.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import attrs

from .._hub import WebhooksEmitter
from .._reports import list_failed, replay_failed, status
from .._settings import require_durable
from ..exceptions import EmitterNotFoundError
from ..stores import EmitterState, FailedEvent, Store
from ..stores._base import StoredEvent

__all__ = [
    "Detail",
    "EmitterRow",
    "Outcome",
    "QueuedEvent",
    "detail",
    "overview",
    "pause",
    "purge",
    "replay",
    "require_durable",
    "restart",
]

#: Failed and queued events shown on an emitter's page (the oldest ones).
SHOWN_EVENTS = 50


@attrs.frozen
class EmitterRow:
    """One emitter id the store knows, as the emitters page shows it.

    ``delivered`` and ``given_up`` are this process's counters, None when this process
    does not deliver that emitter (the CLI's dashboard, a ``deliver=False`` web process).
    """

    emitter_id: str
    queued: int
    failed: int
    paused: bool
    oldest_queued_age: Optional[float]
    lease_holder: Optional[str]
    delivered: Optional[int] = None
    given_up: Optional[int] = None


@attrs.frozen
class QueuedEvent:
    """One queued event of an emitter (what the store holds; its body is shown as text)."""

    event: str
    request_id: str
    attempts: int
    emitted_at: Optional[datetime.datetime]
    status_code: Optional[int]
    error: Optional[str]
    body: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")


@attrs.frozen
class Detail:
    """An emitter's page: its row, its oldest failed events and its oldest queued events
    (``queued`` is None when the store cannot list them)."""

    row: EmitterRow
    failed: Sequence[FailedEvent]
    queued: Optional[Sequence[QueuedEvent]]


@attrs.frozen
class Outcome:
    """What an action did, as a message code and a count (see ``_pages.message``)."""

    code: str
    count: int = 0


def _order(row: EmitterRow) -> tuple[bool, float, int, str]:
    # Worst first: the oldest queued event first, emitters with nothing queued last; among
    # equals, more failed events first, then by id so that the table does not jump about.
    age = row.oldest_queued_age
    return (age is None, -(age or 0.0), -row.failed, row.emitter_id)


def _counters(instance: Optional[WebhooksEmitter]) -> dict[str, tuple[int, int]]:
    """(delivered, given up) of the running emitters this process delivers (the public API
    cannot tell a paused emitter attached here from one attached elsewhere: those show none)."""
    if instance is None or not instance.delivers:
        return {}
    found = {}
    for emitter_id in instance.list_emitters():
        try:
            stats = instance.stats(emitter_id)
        except EmitterNotFoundError:  # detached meanwhile: no counters to show
            continue
        found[emitter_id] = (stats.delivered, stats.given_up)
    return found


def _row(
    emitter_id: str, values: Mapping[str, Any], counters: Mapping[str, tuple[int, int]]
) -> EmitterRow:
    delivered, given_up = counters.get(emitter_id, (None, None))
    return EmitterRow(
        emitter_id=emitter_id,
        queued=int(values["queued"]),
        failed=int(values["failed"]),
        paused=bool(values["paused"]),
        oldest_queued_age=values["oldest_queued_age"],
        lease_holder=values["lease_holder"],
        delivered=delivered,
        given_up=given_up,
    )


def overview(store: Store, instance: Optional[WebhooksEmitter] = None) -> list[EmitterRow]:
    """Every emitter id ``store`` knows, worst first (oldest queued event first; those
    with nothing queued last), with ``instance``'s counters where it delivers them.

    Raises:
        StoreError: the store could not be read.
    """
    counters = _counters(instance)
    rows = [_row(eid, values, counters) for eid, values in status(store).items()]
    return sorted(rows, key=_order)


def detail(
    store: Store, emitter_id: str, instance: Optional[WebhooksEmitter] = None
) -> Optional[Detail]:
    """The page of ``emitter_id``, or None when the store does not know it.

    Raises:
        TypeError, ValueError: ``emitter_id`` is not a valid id.
        StoreError: the store could not be read.
    """
    failed = list_failed(store, emitter_id, SHOWN_EVENTS)
    if not store.known(emitter_id):
        return None
    state = store.state(emitter_id)
    values = _values(state)
    row = _row(emitter_id, values, _counters(instance))
    return Detail(row=row, failed=failed, queued=queued_events(store, emitter_id, SHOWN_EVENTS))


def _values(state: EmitterState) -> dict[str, Any]:
    """One emitter's :class:`~webhooks_emitter.stores.EmitterState` as ``status`` gives it
    (the age computed the same way)."""
    age = None
    if state.queued and state.oldest_queued_at is not None:
        age = round(max(time.time() - state.oldest_queued_at, 0.0), 3)
    return {
        "queued": state.queued,
        "failed": state.failed,
        "paused": state.paused,
        "oldest_queued_age": age,
        "lease_holder": state.lease_holder,
    }


# -- the oldest queued events --------------------------------------------------------------------


def _when(seconds: Optional[float]) -> Optional[datetime.datetime]:
    if not seconds:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def _from_stored(event: StoredEvent) -> QueuedEvent:
    """The :class:`QueuedEvent` shown for a stored one."""
    return QueuedEvent(
        event=event.event,
        request_id=event.request_id,
        attempts=event.attempts,
        emitted_at=_when(event.emitted_at),
        status_code=event.status_code,
        error=event.error,
        body=bytes(event.body),
    )


def queued_events(store: Store, emitter_id: str, limit: int) -> Optional[list[QueuedEvent]]:
    """The oldest ``limit`` queued events of ``emitter_id`` (``Store.queued_events``: read
    only, under no lease), or None when this kind of store cannot list them.

    Raises:
        StoreError: the store could not be read.
    """
    try:
        events = store.queued_events(emitter_id, limit)
    except NotImplementedError:
        return None
    return [_from_stored(event) for event in events]


# -- actions --------------------------------------------------------------------------------------


def _through(store: Store, instance: Optional[WebhooksEmitter]) -> Optional[WebhooksEmitter]:
    """``instance`` when it works on ``store``: its own emitters are then paused, restarted
    and woken at once (a memory store has no other process to notice)."""
    return instance if instance is not None and instance.store is store else None


def _paused(store: Store, emitter_id: str, instance: Optional[WebhooksEmitter]) -> Optional[bool]:
    """Whether ``emitter_id`` is paused; None when neither the store nor ``instance`` knows it."""
    if instance is not None:
        try:
            return instance.stats(emitter_id).paused
        except EmitterNotFoundError:
            return None
    if not store.known(emitter_id):
        return None
    return store.state(emitter_id).paused


def pause(store: Store, emitter_id: str, instance: Optional[WebhooksEmitter] = None) -> Outcome:
    """Pause ``emitter_id`` in every process over ``store`` (``unknown`` if the store does
    not know it; ``already_paused`` if it was). Through ``instance`` when it is on ``store``."""
    instance = _through(store, instance)
    was = _paused(store, emitter_id, instance)
    if was is None:
        return Outcome("unknown")
    if instance is not None:
        instance.pause(emitter_id)
    else:
        store.set_paused(emitter_id, True)
    return Outcome("already_paused" if was else "paused")


def restart(store: Store, emitter_id: str, instance: Optional[WebhooksEmitter] = None) -> Outcome:
    """Restart ``emitter_id`` in every process over ``store`` (``not_paused`` if it was
    running: nothing is done). Through ``instance`` when it is on ``store``."""
    instance = _through(store, instance)
    was = _paused(store, emitter_id, instance)
    if was is None:
        return Outcome("unknown")
    if not was:
        return Outcome("not_paused")
    if instance is not None:
        instance.restart(emitter_id)
    else:
        store.set_paused(emitter_id, False)
    return Outcome("restarted")


def replay(
    store: Store,
    emitter_id: str,
    request_id: Optional[str] = None,
    instance: Optional[WebhooksEmitter] = None,
) -> Outcome:
    """Queue the failed events of ``emitter_id`` again: all, or the one ``request_id``
    (through ``instance`` when it is on ``store``, which wakes its emitter at once)."""
    ids = None if request_id is None else [request_id]
    instance = _through(store, instance)
    if instance is not None:
        return Outcome("replayed", instance.replay(emitter_id, ids))
    return Outcome("replayed", replay_failed(store, emitter_id, ids))


def purge(store: Store, emitter_id: str, typed: Optional[str]) -> Outcome:
    """Delete every event of ``emitter_id`` when ``typed`` is exactly that id; otherwise
    delete nothing (``purge_refused``)."""
    if typed != emitter_id:
        return Outcome("purge_refused")
    return Outcome("purged", store.purge(emitter_id))
