"""The library's exceptions: one root, and subclasses that also subclass a builtin."""

from __future__ import annotations

__all__ = [
    "EmitterExistsError",
    "EmitterNotFoundError",
    "InvalidSignatureError",
    "SettingError",
    "SettingTypeError",
    "SettingValueError",
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


class SettingError(WebhooksEmitterError):
    """A framework setting (Flask's ``app.config``, Django's ``settings.WEBHOOKS_EMITTER``)
    is not of the documented form.

    The message starts with the setting's full name as the user wrote it
    (``WEBHOOKS_EMITTER_EMITTERS['billing']['max_attempts']: ...``) and never shows a
    secret or a password.

    Attributes:
        key: that name.
        reason: what was wrong with it.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class SettingValueError(SettingError, ValueError):
    """A setting has the right type but a wrong value."""


class SettingTypeError(SettingError, TypeError):
    """A setting has the wrong type."""
