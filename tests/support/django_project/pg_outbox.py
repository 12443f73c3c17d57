"""emit_on_commit on PostgreSQL with ``"STORE": "django:default"``, for tests/test_django.py.

Run with ``HOOKS_DB_URL`` (a fresh database), ``HOOKS_STORE=django:default`` and
``HOOKS_RECEIVER_URL``. Creates the tables, then:

1. an atomic block that creates an Order and calls emit_on_commit, then commits;
2. the same, rolled back;
3. emit_on_commit outside any transaction.

and prints one JSON object: the request ids, what another connection saw of the events
before the commit, how many on_commit callbacks Django held, the orders left, and the
store's status after a flush.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from shop.models import Order  # noqa: E402

import webhooks_emitter  # noqa: E402
from webhooks_emitter._operator import status  # noqa: E402
from webhooks_emitter.contrib.django import emit_on_commit  # noqa: E402
from webhooks_emitter.stores.postgres import PostgresStore  # noqa: E402


class Rollback(Exception):
    """Rolls the block back."""


def queued(observer: PostgresStore) -> int:
    """Events of 'shop' another connection sees queued or failed."""
    row = status(observer).get("shop", {})
    return int(row.get("queued", 0)) + int(row.get("failed", 0))


def main() -> None:
    """Run the three cases; print the JSON report."""
    call_command("migrate", run_syncdb=True, verbosity=0)
    observer = PostgresStore(os.environ["HOOKS_DB_URL"])
    report: dict[str, object] = {"store": type(webhooks_emitter.default.store).__name__}

    with transaction.atomic():
        Order.objects.create(item="book")
        report["committed"] = emit_on_commit("order.created", {"item": "book"})
        report["callbacks_held"] = len(connection.run_on_commit)
        report["seen_before_commit"] = queued(observer)

    try:
        with transaction.atomic():
            Order.objects.create(item="ink")
            report["rolled_back"] = emit_on_commit("order.created", {"item": "ink"})
            raise Rollback
    except Rollback:
        pass

    report["at_once"] = emit_on_commit("order.created", {"item": "pen"})
    report["flushed"] = webhooks_emitter.flush(30)
    report["orders"] = sorted(Order.objects.values_list("item", flat=True))
    report["left_in_store"] = queued(observer)
    observer.close()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
