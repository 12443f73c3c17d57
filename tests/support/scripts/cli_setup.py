"""A ``--setup`` target for the worker tests (``webhooks-emitter worker --setup
tests/support/scripts/cli_setup.py:setup``): attaches one emitter, configured by environment
variables so that each test points it at its own receiver.

``CLI_SETUP_URL`` (required)
    the receiver's URL.
``CLI_SETUP_EMITTER`` (default ``orders``)
    the emitter id; it is subscribed to every event (``"*"``).
``CLI_SETUP_MAX_ATTEMPTS`` (default 3), ``CLI_SETUP_REQUEST_TIMEOUT`` (default 5)
    as the ``Config`` fields. Backoffs are a few milliseconds.

The secret is :data:`SECRET`, for the receiver to check signatures with.
"""

from __future__ import annotations

import os

from webhooks_emitter import Config, WebhooksEmitter

SECRET = "cli-setup-secret"


def config() -> Config:
    """The emitter's ``Config``, from the environment (the test process uses it too)."""
    return Config(
        os.environ["CLI_SETUP_URL"],
        secret=SECRET,
        max_attempts=int(os.environ.get("CLI_SETUP_MAX_ATTEMPTS", "3")),
        request_timeout=float(os.environ.get("CLI_SETUP_REQUEST_TIMEOUT", "5")),
        backoff_start=0.005,
        backoff_limit=0.02,
    )


def setup(instance: WebhooksEmitter) -> None:
    """Attach the emitter ``$CLI_SETUP_EMITTER`` to ``instance`` for every event."""
    instance.attach(os.environ.get("CLI_SETUP_EMITTER", "orders"), "*", config())
