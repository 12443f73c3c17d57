"""The Django app: ``AppConfig.ready`` applies ``settings.WEBHOOKS_EMITTER``."""

# Django ships no type information (django-stubs is not required).
# mypy: disable-error-code="import-untyped, import-not-found"

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class WebhooksEmitterConfig(AppConfig):  # type: ignore[misc]
    """Add ``"webhooks_emitter.contrib.django"`` to ``INSTALLED_APPS``.

    At start-up it applies ``settings.WEBHOOKS_EMITTER`` to the default instance, so that
    ``webhooks_emitter.emit`` and :func:`~webhooks_emitter.contrib.django.emit_on_commit`
    work in views; bad settings are reported by ``manage.py check`` (never raised here).
    The operator commands (``webhooks_status``, ``webhooks_failed``, ``webhooks_replay``)
    leave the default instance alone and only read or change the store.
    """

    name = "webhooks_emitter.contrib.django"
    label = "webhooks_emitter"
    verbose_name = "Webhooks emitter"

    def ready(self) -> None:
        """Register the system checks and apply the settings."""
        from django.db.backends.signals import connection_created

        import webhooks_emitter

        from . import checks, conf

        checks.register()
        if not conf.running_an_operator_command():
            # webhooks_status & co. open the store themselves: applying the settings here
            # would deliver (and flush at exit) in a process that must only read the store.
            conf.apply(webhooks_emitter.default)
        connection_created.connect(_connection_created, dispatch_uid="webhooks_emitter")


def _connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    from . import conf

    conf.check_database(connection.alias, connection.settings_dict.get("NAME"))
