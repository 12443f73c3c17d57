"""``emit_on_commit``: an event that exists only if the database transaction commits."""

# Django ships no type information (django-stubs is not required).
# mypy: disable-error-code="import-untyped, import-not-found"

from __future__ import annotations

import json
import logging
from typing import Any, Optional

from django.db import DEFAULT_DB_ALIAS, transaction

import webhooks_emitter

from ..._encoding import check_name, encode_payload, new_request_id
from . import conf

__all__ = ["emit_on_commit"]

logger = logging.getLogger("webhooks_emitter.contrib.django")


def emit_on_commit(
    event: str, payload: Any, request_id: Optional[str] = None, using: Optional[str] = None
) -> str:
    """Emit ``event`` on the default instance only if the current transaction of the
    database ``using`` commits; outside a transaction, at once.

    - With ``"STORE": "django:<alias>"`` and ``using`` that alias, the event is written
      through Django's own connection, inside the open transaction: a true outbox (it is
      committed or rolled back with the caller's rows).
    - Otherwise it is emitted from ``transaction.on_commit`` (``robust``: a failure is
      logged and never stops the other callbacks); after a rollback it never exists.

    The payload is encoded now: later changes to it do not reach the receiver, and a
    payload that cannot be encoded raises here.

    Args:
        event: the event name.
        payload: a mapping (see :func:`webhooks_emitter.emit`).
        request_id: the id to send as the delivery id; a new UUID4 when None.
        using: the database alias of the transaction (default: ``"default"``).

    Returns:
        The request id, decided now (also when the event is emitted at commit).

    Raises:
        TypeError, ValueError: a bad argument or payload.
        StoreError: the outbox write failed (the caller's transaction is still usable).
    """
    event = check_name(event, "event")
    request_id = new_request_id() if request_id is None else check_name(request_id, "request_id")
    alias = DEFAULT_DB_ALIAS if using is None else using
    # Encoded once, now; handed on as its JSON reading, which encodes to the same bytes.
    snapshot = json.loads(encode_payload(payload))
    connection = transaction.get_connection(alias)
    if not connection.in_atomic_block and connection.get_autocommit():
        return webhooks_emitter.emit(event, snapshot, request_id)
    instance = webhooks_emitter.default
    if conf.applied.alias == alias and instance.store is conf.applied.store:
        connection.ensure_connection()
        return instance.emit(event, snapshot, request_id, connection=connection.connection)

    def emit_now() -> None:
        try:
            webhooks_emitter.emit(event, snapshot, request_id)
        except Exception:  # noqa: BLE001 - after the commit there is no caller to tell
            logger.exception(
                "webhooks_emitter: emitting %r after the commit failed",
                event,
                extra={"emitter_id": None, "event": event, "request_id": request_id},
            )

    try:
        transaction.on_commit(emit_now, using=alias, robust=True)
    except TypeError:  # Django < 4.2 has no robust=; emit_now never raises anyway
        transaction.on_commit(emit_now, using=alias)
    return request_id
