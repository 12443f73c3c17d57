"""What the operator commands print: status per emitter, failed events, replay counts.

Each function reads or changes the store only: none delivers, takes a lease, starts a
thread or waits for an exit flush (CONTRACT section 12), so ``status`` with a backlog of
thousands ends after the store's round trips.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable, Mapping
from typing import Any, Optional

from ._encoding import check_name
from ._validate import integer
from .exceptions import EmitterNotFoundError
from .stores import EmitterState, FailedEvent, Store

__all__ = [
    "failed_json",
    "format_failed",
    "format_status",
    "list_failed",
    "pause_emitter",
    "replay_failed",
    "restart_emitter",
    "status",
]


def status(store: Store) -> dict[str, dict[str, Any]]:
    """Per emitter id the store knows: what the ``status --json`` commands print.

    Returns:
        ``{emitter_id: {"queued": int, "failed": int, "paused": bool,
        "oldest_queued_age": seconds (float) or None, "lease_holder": "host:pid" or None}}``,
        sorted by emitter id.

    Raises:
        StoreError: the store could not be read.
    """
    now = time.time()
    result: dict[str, dict[str, Any]] = {}
    for state in sorted(store.states(), key=lambda s: s.emitter_id):
        age = None
        if state.queued and state.oldest_queued_at is not None:
            age = round(max(now - state.oldest_queued_at, 0.0), 3)
        result[state.emitter_id] = {
            "queued": state.queued,
            "failed": state.failed,
            "paused": state.paused,
            "oldest_queued_age": age,
            "lease_holder": state.lease_holder,
        }
    return result


def format_status(report: Mapping[str, Mapping[str, Any]]) -> str:
    """:func:`status`'s result as a table for people (no trailing newline)."""
    if not report:
        return "no emitters in the store"
    header = ("EMITTER", "QUEUED", "FAILED", "PAUSED", "OLDEST", "LEASE")
    rows = [header]
    for emitter_id, row in report.items():
        age = row["oldest_queued_age"]
        rows.append(
            (
                emitter_id,
                str(row["queued"]),
                str(row["failed"]),
                "yes" if row["paused"] else "no",
                "-" if age is None else f"{age:.1f}s",
                row["lease_holder"] or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths)).rstrip() for r in rows
    )


def list_failed(store: Store, emitter_id: str, limit: int = 100) -> list[FailedEvent]:
    """The failed events of ``emitter_id`` in ``store``, oldest first, up to ``limit``.

    Raises:
        TypeError, ValueError: a bad ``emitter_id`` or ``limit``.
        StoreError: the store could not be read.
    """
    emitter_id = check_name(emitter_id, "emitter_id")
    return store.failed(emitter_id, integer("limit", limit, minimum=1))


def replay_failed(
    store: Store, emitter_id: str, request_ids: Optional[Iterable[str]] = None
) -> int:
    """Queue the failed events of ``emitter_id`` again (all, or those request ids), for
    whichever process delivers that emitter; returns how many.

    Raises:
        TypeError, ValueError: a bad ``emitter_id`` or request id.
        StoreError: the store could not do it.
    """
    emitter_id = check_name(emitter_id, "emitter_id")
    ids = None
    if request_ids is not None:
        if isinstance(request_ids, (str, bytes)):
            raise TypeError("request_ids must be an iterable of request ids, not a single str")
        ids = [check_name(i, "request_id") for i in request_ids]
    return store.replay(emitter_id, ids)


def failed_json(events: Iterable[FailedEvent]) -> list[dict[str, Any]]:
    """``events`` as the ``failed --json`` commands print them: ``FailedEvent``'s fields,
    ``failed_at`` in ISO 8601 and ``body`` as text."""
    return [
        {
            "emitter_id": event.emitter_id,
            "event": event.event,
            "request_id": event.request_id,
            "attempts": event.attempts,
            "status_code": event.status_code,
            "error": event.error,
            "failed_at": _iso(event.failed_at),
            "body": event.body.decode("utf-8", "replace"),
        }
        for event in events
    ]


def format_failed(events: Iterable[FailedEvent]) -> str:
    """Failed events as lines for people (no trailing newline)."""
    lines = []
    for event in events:
        outcome = f"HTTP {event.status_code}" if event.status_code is not None else "no answer"
        if event.error and event.error != outcome:
            outcome += f" ({event.error})"
        tries = "1 try" if event.attempts == 1 else f"{event.attempts} tries"
        when = _iso(event.failed_at)
        lines.append(f"{when}  {event.request_id}  {event.event}  {tries}  {outcome}")
    return "\n".join(lines) if lines else "no failed events"


def _iso(when: datetime.datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.isoformat()


def pause_emitter(store: Store, emitter_id: str) -> bool:
    """Pause ``emitter_id`` for every process over ``store``; returns whether it was
    paused already.

    Raises:
        EmitterNotFoundError: the store does not know ``emitter_id``.
        StoreError: the store could not do it.
    """
    was_paused: bool = _state_of(store, emitter_id).paused
    store.set_paused(emitter_id, True)
    return was_paused


def restart_emitter(store: Store, emitter_id: str) -> bool:
    """Restart a paused ``emitter_id`` for every process over ``store`` (the process that
    holds its lease delivers what is queued); returns whether it was paused.

    Raises:
        EmitterNotFoundError: the store does not know ``emitter_id``.
        StoreError: the store could not do it.
    """
    was_paused: bool = _state_of(store, emitter_id).paused
    if was_paused:
        store.set_paused(emitter_id, False)
    return was_paused


def _state_of(store: Store, emitter_id: str) -> EmitterState:
    emitter_id = check_name(emitter_id, "emitter_id")
    if not store.known(emitter_id):
        raise EmitterNotFoundError(emitter_id)
    return store.state(emitter_id)
