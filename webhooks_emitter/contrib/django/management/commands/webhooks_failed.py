"""``manage.py webhooks_failed EMITTER_ID``: the events an emitter gave up."""

# Django ships no type information (django-stubs is not required).
# mypy: disable-error-code="import-untyped, import-not-found"

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from webhooks_emitter._reports import failed_json, format_failed, list_failed
from webhooks_emitter.contrib.django import conf
from webhooks_emitter.stores import StoreError


class Command(BaseCommand):  # type: ignore[misc]
    """List an emitter's failed events, oldest first."""

    help = "List the events EMITTER_ID gave up (dead letters), oldest first."

    def add_arguments(self, parser: CommandParser) -> None:
        """EMITTER_ID, --json and --limit N."""
        parser.add_argument("emitter_id", metavar="EMITTER_ID")
        parser.add_argument("--json", action="store_true", help="print a JSON list")
        parser.add_argument(
            "--limit", type=int, default=100, help="the most events to list (default 100)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Print the failed events; exits 2 for bad arguments or settings, or the memory store."""
        try:
            with conf.operator_store("webhooks_failed") as (store, _):
                events = list_failed(store, options["emitter_id"], options["limit"])
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc), returncode=2) from None
        except StoreError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps(failed_json(events), indent=2))
        else:
            self.stdout.write(format_failed(events))
