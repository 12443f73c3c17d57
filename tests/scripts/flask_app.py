"""A small Flask app for tests/test_flask.py, served by gunicorn or run by the ``flask`` CLI.

Settings come from the environment: ``HOOKS_RECEIVER_URL`` (where the one emitter,
``receiver``, delivers every event, signed with ``supersecret``), ``HOOKS_STORE`` (default
``memory:``) and ``HOOKS_DELIVER`` (``0`` for a web process that only stores events).

``POST /orders`` with a JSON object emits it as ``order.created``, ``count`` times (default 1);
the answer is ``{"request_ids": [...], "pid": ...}``.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, request

from webhooks_emitter.contrib.flask import Webhooks

webhooks = Webhooks()


def create_app() -> Flask:
    """The app factory (``flask_app:create_app()``)."""
    app = Flask(__name__)
    app.config.update(
        WEBHOOKS_EMITTER_STORE=os.environ.get("HOOKS_STORE", "memory:"),
        WEBHOOKS_EMITTER_DELIVER=os.environ.get("HOOKS_DELIVER", "1") == "1",
        WEBHOOKS_EMITTER_EXIT_TIMEOUT=20,
        WEBHOOKS_EMITTER_EMITTERS={
            "receiver": {
                "url": os.environ["HOOKS_RECEIVER_URL"],
                "events": ["*"],
                "secret": "supersecret",
                "backoff_start": 0.001,
                "request_timeout": 20,
            }
        },
    )
    webhooks.init_app(app)

    @app.post("/orders")
    def create_order() -> dict[str, Any]:
        order = request.get_json()
        count = int(order.pop("count", 1))
        ids = [webhooks.emit("order.created", {**order, "i": i}) for i in range(count)]
        return {"request_ids": ids, "pid": os.getpid()}

    return app
