"""A small Flask app for tests/test_flask.py, served by gunicorn or run by the ``flask`` CLI.

Settings come from the environment: ``HOOKS_RECEIVER_URL`` (where the one emitter,
``receiver``, delivers every event, signed with ``supersecret``), ``HOOKS_STORE`` (default
``memory:``) and ``HOOKS_DELIVER`` (``0`` for a web process that only stores events);
``HOOKS_EXIT_TIMEOUT`` (default 20) and ``HOOKS_LOG`` (``1``: every log record of the library,
INFO and up, on standard error as ``LOG <logger> <level> <message>``).

``POST /orders`` with a JSON object emits it as ``order.created``, ``count`` times (default 1);
the answer is ``{"request_ids": [...], "pid": ...}``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from flask import Flask, request

from webhooks_emitter.contrib.flask import Webhooks

webhooks = Webhooks()


def create_app() -> Flask:
    """The app factory (``flask_app:create_app()``)."""
    if os.environ.get("HOOKS_LOG") == "1":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("LOG %(name)s %(levelname)s %(message)s"))
        logger = logging.getLogger("webhooks_emitter")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    app = Flask(__name__)
    app.config.update(
        WEBHOOKS_EMITTER_STORE=os.environ.get("HOOKS_STORE", "memory:"),
        WEBHOOKS_EMITTER_DELIVER=os.environ.get("HOOKS_DELIVER", "1") == "1",
        WEBHOOKS_EMITTER_EXIT_TIMEOUT=float(os.environ.get("HOOKS_EXIT_TIMEOUT", "20")),
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
