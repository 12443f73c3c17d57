"""The library's exceptions: one root, and subclasses that also subclass a builtin."""

from __future__ import annotations

__all__ = [
    "EmitterExistsError",
    "EmitterNotFoundError",
    "InvalidSignatureError",
    "WebhooksEmitterError",
]


class WebhooksEmitterError(Exception):
    """Base of every error the library raises on its own account."""


class EmitterExistsError(WebhooksEmitterError, ValueError):
    """``attach`` was given an ``emitter_id`` that is already attached (paused ones included).

    Attributes:
        emitter_id: the id that is in use.
    """

    def __init__(self, emitter_id: str) -> None:
        super().__init__(f"emitter_id {emitter_id!r} is already attached")
        self.emitter_id = emitter_id


class EmitterNotFoundError(WebhooksEmitterError, LookupError):
    """``pause``, ``restart`` or ``stats`` was given an ``emitter_id`` that is not attached.

    Attributes:
        emitter_id: the unknown id.
    """

    def __init__(self, emitter_id: str) -> None:
        super().__init__(f"emitter_id {emitter_id!r} is not attached")
        self.emitter_id = emitter_id


class InvalidSignatureError(WebhooksEmitterError, ValueError):
    """A webhook's signature did not verify.

    The message says what was wrong (a missing or malformed header, no matching signature,
    a timestamp too old or too new) and never contains a secret.
    """
