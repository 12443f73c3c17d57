"""System checks of ``settings.WEBHOOKS_EMITTER`` (``manage.py check``)."""

# Django ships no type information (django-stubs is not required).
# mypy: disable-error-code="import-untyped, import-not-found"

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from django.core import checks

from . import conf

__all__ = ["check_settings", "register"]

HINT = (
    'Expected: WEBHOOKS_EMITTER = {"STORE": "memory:" | "sqlite:///path.db" | '
    '"postgresql://..." | "django:<alias>", "EMITTERS": {"<id>": {"url": ..., "events": [...], '
    '<Config field>: ...}}, "DELIVER": True, "EXIT_TIMEOUT": 5}'
)


def check_settings(app_configs: Optional[Sequence[Any]] = None, **kwargs: Any) -> list[Any]:
    """One Error (``webhooks_emitter.E001``) per problem in ``settings.WEBHOOKS_EMITTER``,
    its message starting with the key (``WEBHOOKS_EMITTER['EMITTERS']['billing']['url']``)."""
    return [
        checks.Error(str(problem), hint=HINT, id="webhooks_emitter.E001")
        for problem in conf.problems()
    ]


def register() -> None:
    """Register :func:`check_settings` with Django (idempotent)."""
    checks.register(check_settings)
