"""``manage.py webhooks_worker``: deliver the events web processes stored."""

# Django ships no type information (django-stubs is not required).
# mypy: disable-error-code="import-untyped, import-not-found"

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from webhooks_emitter._hub import WebhooksEmitter
from webhooks_emitter._settings import attach_all, load_callable
from webhooks_emitter._validate import number
from webhooks_emitter._worker import HTTP_HELP, parse_http, run_worker, serve_http
from webhooks_emitter.contrib.django import conf
from webhooks_emitter.exceptions import WebhooksEmitterError
from webhooks_emitter.stores import StoreError


class Command(BaseCommand):  # type: ignore[misc]
    """Deliver until SIGTERM or SIGINT, then shut down within the exit timeout."""

    help = (
        "Deliver the events stored by this project's processes (settings.WEBHOOKS_EMITTER "
        "with a durable STORE) until SIGTERM or SIGINT, whatever DELIVER says (that "
        "setting is for the web processes), then shut down within the exit timeout."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """--setup MODULE:FUNCTION, --exit-timeout SECONDS and --http HOST:PORT."""
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
        parser.add_argument("--http", metavar="HOST:PORT", help=HTTP_HELP)

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the worker; exits 0 after a signal, 2 for bad arguments or settings."""
        try:
            settings = conf.load()
            instance = conf.durable_default("webhooks_worker")
            setup = options.get("setup")
            function = load_callable(setup) if setup else None
            exit_timeout = options.get("exit_timeout")
            if exit_timeout is None:
                exit_timeout = settings.exit_timeout
            else:
                exit_timeout = number("--exit-timeout", exit_timeout)
            http = options.get("http")
            bind = parse_http(http) if http is not None else None
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc), returncode=2) from None
        except StoreError as exc:
            raise CommandError(str(exc)) from None
        server = None
        default = instance
        try:
            if not instance.delivers:
                instance = WebhooksEmitter(
                    exit_timeout, store=conf.make_store(settings), deliver=True
                )
            if bind is not None:
                # Before the emitters are attached: a worker that cannot serve its probes
                # delivers nothing (exit 2, one line saying why).
                try:
                    server = serve_http(instance, bind)
                except WebhooksEmitterError as exc:
                    raise CommandError(str(exc), returncode=2) from None
            if instance is not default:
                attach_all(instance, settings.emitters)
            if function is not None:
                function(instance)
        except StoreError as exc:
            if server is not None:
                server.close()
            raise CommandError(str(exc)) from None

        def ready() -> None:
            self.stdout.write(
                f"webhooks worker: delivering for {len(instance.list_emitters())} emitter(s) "
                f"over {instance.store.describe()}; stop with SIGTERM or Ctrl-C"
            )
            if server is not None:
                self.stdout.write(
                    f"webhooks worker: serving /metrics, /healthz and /readyz at {server.url}"
                )
            self.stdout.flush()

        code = run_worker(instance, exit_timeout, ready=ready, http=server)
        self.stdout.write("webhooks worker: stopped")
        if code:
            raise SystemExit(code)
