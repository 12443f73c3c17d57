"""``manage.py webhooks_worker``: deliver the events web processes stored."""

# Django ships no type information (django-stubs is not required).
# mypy: disable-error-code="import-untyped, import-not-found"

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from webhooks_emitter import _operator
from webhooks_emitter._hub import WebhooksEmitter
from webhooks_emitter.contrib.django import conf
from webhooks_emitter.stores import StoreError


class Command(BaseCommand):  # type: ignore[misc]
    """Deliver until SIGTERM or SIGINT, then shut down within the exit timeout."""

    help = (
        "Deliver the events stored by this project's processes (settings.WEBHOOKS_EMITTER "
        "with a durable STORE) until SIGTERM or SIGINT, whatever DELIVER says (that "
        "setting is for the web processes), then shut down within the exit timeout."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """--setup MODULE:FUNCTION and --exit-timeout SECONDS."""
        parser.add_argument(
            "--setup",
            metavar="MODULE:FUNCTION",
            help="a function called with the worker's instance, to attach more emitters",
        )
        parser.add_argument(
            "--exit-timeout",
            type=float,
            metavar="SECONDS",
            help="seconds the shutdown may spend delivering (default: EXIT_TIMEOUT)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the worker; exits 0 after a signal, 2 for bad arguments or settings."""
        try:
            settings = conf.load()
            instance = conf.durable_default("webhooks_worker")
            setup = options.get("setup")
            function = _operator.load_callable(setup) if setup else None
            exit_timeout = options.get("exit_timeout")
            if exit_timeout is None:
                exit_timeout = settings.exit_timeout
            elif not exit_timeout >= 0:
                raise ValueError(f"--exit-timeout must be >= 0, got {exit_timeout}")
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc), returncode=2) from None
        except StoreError as exc:
            raise CommandError(str(exc)) from None
        try:
            if not instance.delivers:
                instance = WebhooksEmitter(
                    exit_timeout, store=conf.make_store(settings), deliver=True
                )
                _operator.attach_all(instance, settings.emitters)
            if function is not None:
                function(instance)
        except StoreError as exc:
            raise CommandError(str(exc)) from None

        def ready() -> None:
            self.stdout.write(
                f"webhooks worker: delivering for {len(instance.list_emitters())} emitter(s) "
                f"over {instance.store.describe()}; stop with SIGTERM or Ctrl-C"
            )
            self.stdout.flush()

        code = _operator.run_worker(instance, exit_timeout, ready=ready)
        self.stdout.write("webhooks worker: stopped")
        if code:
            raise SystemExit(code)
