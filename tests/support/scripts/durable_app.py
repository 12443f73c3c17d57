"""A tiny Flask app that emits one webhook per POST, every gunicorn worker over one SQLite file.

Run by tests/test_durable_sqlite.py as ``gunicorn --workers 2 durable_app:app`` with, in the
environment, ``DURABLE_DB`` (the shared store file), ``DURABLE_URL`` (the receiver) and
``DURABLE_EXIT_TIMEOUT`` (seconds the exit hook of each worker may deliver for).

``POST /orders`` with a JSON object emits ``order.created`` with it and answers
``{"request_id": ..., "pid": ...}`` once the event is committed to the file. Each worker
imports this module itself (no ``--preload``), so each makes its own store connections.
"""

from __future__ import annotations

import os

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

import webhooks_emitter
from webhooks_emitter.stores import SQLiteStore

webhooks_emitter.configure(
    store=SQLiteStore(os.environ["DURABLE_DB"], lease_timeout=1.0),
    exit_timeout=float(os.environ.get("DURABLE_EXIT_TIMEOUT", "5")),
)
webhooks_emitter.attach(
    "app",
    "order.created",
    webhooks_emitter.Config(
        os.environ["DURABLE_URL"], backoff_start=0.001, backoff_limit=0.01, request_timeout=2.0
    ),
)

app = Flask(__name__)


@app.post("/orders")
def create_order() -> ResponseReturnValue:
    """Emit the posted order; answer its request id and this worker's pid."""
    request_id = webhooks_emitter.emit("order.created", request.get_json(force=True))
    return jsonify(request_id=request_id, pid=os.getpid())
