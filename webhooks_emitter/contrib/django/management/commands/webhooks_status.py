"""``manage.py webhooks_status``: what the store holds, per emitter id."""

# Django ships no type information (django-stubs is not required).
# mypy: disable-error-code="import-untyped, import-not-found"

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from webhooks_emitter._reports import format_status, status
from webhooks_emitter.contrib.django import conf
from webhooks_emitter.stores import StoreError


class Command(BaseCommand):  # type: ignore[misc]
    """Per emitter id: queued, failed, paused, oldest queued event's age, lease holder."""

    help = (
        "Show, per emitter id of the store of settings.WEBHOOKS_EMITTER: queued and failed "
        "events, paused, the age of the oldest queued event and the lease holder. Only "
        "reads the store."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """--json."""
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        """Print the status; exits 2 for bad settings or the memory store."""
        try:
            with conf.operator_store("webhooks_status") as (store, _):
                report = status(store)
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc), returncode=2) from None
        except StoreError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            self.stdout.write(format_status(report))
