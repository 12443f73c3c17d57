"""Emit your application's events as signed, retried, ordered outgoing HTTP webhooks.

    >>> import webhooks_emitter
    >>> config = webhooks_emitter.Config("https://example.com/hooks", secret="supersecret")
    >>> webhooks_emitter.attach("billing", "order.paid", config)          # doctest: +SKIP
    >>> webhooks_emitter.emit("order.paid", {"order": 1234})               # doctest: +SKIP
    'fbc7fbe7-2e9b-4911-a50f-e0452672192c'

The module-level functions act on one default :class:`WebhooksEmitter`; make your own
instance for an independent set of emitters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Optional, Union

from . import signing, stores
from ._config import Config, DeliveryResult, EmitterStats
from ._health import Health
from ._hub import WebhooksEmitter
from ._version import __version__
from .exceptions import (
    EmitterExistsError,
    EmitterNotFoundError,
    InvalidSignatureError,
    WebhooksEmitterError,
)
from .signing import verify
from .stores import FailedEvent, Store, StoreError

__all__ = [
    "Config",
    "DeliveryResult",
    "EmitterExistsError",
    "EmitterNotFoundError",
    "EmitterStats",
    "FailedEvent",
    "Health",
    "InvalidSignatureError",
    "StoreError",
    "WebhooksEmitter",
    "WebhooksEmitterError",
    "__version__",
    "attach",
    "attach_many",
    "configure",
    "default",
    "detach",
    "emit",
    "failed",
    "flush",
    "health",
    "is_started",
    "list_emitters",
    "pause",
    "purge",
    "replay",
    "restart",
    "shutdown",
    "signing",
    "stats",
    "stores",
    "verify",
]

#: The instance the module-level functions act on.
default = WebhooksEmitter()


def configure(
    *,
    exit_timeout: Optional[float] = None,
    store: Union[Store, str, None] = None,
    deliver: Optional[bool] = None,
    idle_timeout: Optional[float] = None,
    handle_sigterm: Optional[bool] = None,
) -> None:
    """Change settings of the default instance (see :meth:`WebhooksEmitter.configure`)."""
    default.configure(
        exit_timeout=exit_timeout,
        store=store,
        deliver=deliver,
        idle_timeout=idle_timeout,
        handle_sigterm=handle_sigterm,
    )


def attach(emitter_id: str, event: str, config: Config) -> None:
    """Start an emitter for ``event`` (see :meth:`WebhooksEmitter.attach`)."""
    default.attach(emitter_id, event, config)


def attach_many(emitter_id: str, events: Iterable[str], config: Config) -> None:
    """Start an emitter for several events (see :meth:`WebhooksEmitter.attach_many`)."""
    default.attach_many(emitter_id, events, config)


def detach(emitter_id: str) -> None:
    """Stop and forget an emitter (see :meth:`WebhooksEmitter.detach`)."""
    default.detach(emitter_id)


def pause(emitter_id: str) -> None:
    """Stop an emitter's deliveries, keeping its events (see :meth:`WebhooksEmitter.pause`)."""
    default.pause(emitter_id)


def restart(emitter_id: str) -> None:
    """Resume a paused emitter (see :meth:`WebhooksEmitter.restart`)."""
    default.restart(emitter_id)


def emit(
    event: str,
    payload: Any,
    request_id: Optional[str] = None,
    *,
    ordering_key: Optional[str] = None,
    connection: Any = None,
    to: Union[str, Iterable[str], None] = None,
) -> str:
    """Queue ``payload`` for delivery; return its request id (see :meth:`WebhooksEmitter.emit`)."""
    return default.emit(
        event, payload, request_id, ordering_key=ordering_key, connection=connection, to=to
    )


def failed(emitter_id: str, limit: int = 100) -> list[FailedEvent]:
    """The events an emitter gave up, oldest first (see :meth:`WebhooksEmitter.failed`)."""
    return default.failed(emitter_id, limit)


def replay(emitter_id: str, request_ids: Optional[Iterable[str]] = None) -> int:
    """Queue failed events again; returns how many (see :meth:`WebhooksEmitter.replay`)."""
    return default.replay(emitter_id, request_ids)


def purge(emitter_id: str) -> int:
    """Delete every stored event of an emitter (see :meth:`WebhooksEmitter.purge`)."""
    return default.purge(emitter_id)


def list_emitters() -> list[str]:
    """The ids of the running emitters (see :meth:`WebhooksEmitter.list_emitters`)."""
    return default.list_emitters()


def is_started(emitter_id: str) -> bool:
    """Whether an emitter is attached and running (see :meth:`WebhooksEmitter.is_started`)."""
    return default.is_started(emitter_id)


def stats(emitter_id: str) -> EmitterStats:
    """The counters of one emitter (see :meth:`WebhooksEmitter.stats`)."""
    return default.stats(emitter_id)


def flush(timeout: Optional[float] = None) -> bool:
    """Wait until everything queued is delivered or given up (see :meth:`WebhooksEmitter.flush`)."""
    return default.flush(timeout)


def shutdown(timeout: float = 5.0) -> None:
    """Deliver what is queued for up to ``timeout`` seconds, then stop every emitter."""
    default.shutdown(timeout)


def health(max_age: Optional[float] = None, timeout: float = 2.0) -> Health:
    """Whether the default instance can deliver: its store answers within ``timeout``
    seconds, its background thread runs, and (with ``max_age``) no running emitter attached
    here has a queued event older than ``max_age`` seconds (see :meth:`WebhooksEmitter.health`).
    """
    return default.health(max_age=max_age, timeout=timeout)
