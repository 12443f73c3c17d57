"""``manage.py webhooks_replay EMITTER_ID [REQUEST_ID ...]``: queue failed events again."""

# Django ships no type information (django-stubs is not required).
# mypy: disable-error-code="import-untyped, import-not-found"

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from webhooks_emitter._reports import replay_failed
from webhooks_emitter.contrib.django import conf
from webhooks_emitter.stores import StoreError


class Command(BaseCommand):  # type: ignore[misc]
    """Queue an emitter's failed events again; prints how many."""

    help = (
        "Queue the failed events of EMITTER_ID again (all, or those REQUEST_IDs), at the "
        "tail, with a fresh count of tries; prints how many."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """EMITTER_ID and REQUEST_ID..."""
        parser.add_argument("emitter_id", metavar="EMITTER_ID")
        parser.add_argument("request_ids", metavar="REQUEST_ID", nargs="*")

    def handle(self, *args: Any, **options: Any) -> None:
        """Replay; exits 2 for bad arguments or the memory store."""
        ids = options["request_ids"] or None
        try:
            with conf.operator_store("webhooks_replay") as (store, live):
                if live is not None:
                    # An emitter of this process, if any, starts on them at once.
                    count = live.replay(options["emitter_id"], ids)
                else:
                    count = replay_failed(store, options["emitter_id"], ids)
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc), returncode=2) from None
        except StoreError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(str(count))
