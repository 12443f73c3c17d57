"""Django integration: add ``"webhooks_emitter.contrib.django"`` to ``INSTALLED_APPS``.
``pip install 'webhooks_emitter[django]'``::

    # settings.py
    WEBHOOKS_EMITTER = {
        "STORE": "django:default",         # or "memory:" (default), "sqlite:///...", ...
        "EMITTERS": {
            "billing": {"url": "https://billing.example/hooks", "events": ["order.paid"],
                        "secret": env("BILLING_SECRET")},
        },
        "DELIVER": False,                  # web processes store; manage.py webhooks_worker delivers
        "EXIT_TIMEOUT": 5,
    }

    # views.py
    from webhooks_emitter.contrib.django import emit_on_commit, webhook_view

    @transaction.atomic
    def pay(request, order_id):
        order = Order.objects.select_for_update().get(pk=order_id)
        order.paid = True
        order.save()
        emit_on_commit("order.paid", {"order": order.pk})    # sent only if this commits
        return HttpResponse(status=204)

    @webhook_view(settings.PARTNER_SECRET)
    def partner_hooks(request):
        ...

Management commands: ``webhooks_worker`` (delivers, whatever ``DELIVER`` says; ``--http
HOST:PORT`` serves /metrics, /healthz and /readyz), and ``webhooks_status``,
``webhooks_failed``, ``webhooks_replay``, which only read or change the store (the settings
are not applied in their process: nothing is delivered). Bad settings, a malformed
``STORE`` included, are reported by ``manage.py check`` (errors ``webhooks_emitter.E001``
naming the key, never a password); ``django.setup()`` does not raise for them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["emit_on_commit", "webhook_view"]


def __getattr__(name: str) -> Any:
    # Imported on first use: Django imports this package while it loads its apps, before
    # django.db and django.http should be touched.
    if name == "emit_on_commit":
        from .outbox import emit_on_commit

        return emit_on_commit
    if name == "webhook_view":
        from .views import webhook_view

        return webhook_view
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
