"""The observability extras stay optional (CONTRACT section 15): the core never imports
OpenTelemetry nor ``prometheus_client``, checked in fresh interpreters."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CORE_ONLY = """
import sys
import webhooks_emitter
from webhooks_emitter import Config, WebhooksEmitter, _health, _observe, _worker_http
from webhooks_emitter.cli import main

hub = WebhooksEmitter()
hub.attach("billing", "order.paid", Config("http://127.0.0.1:9/hooks"))
hub.pause("billing")
hub.emit("order.paid", {})
assert _health.check(hub).ok
hub.shutdown(0)
loaded = sorted(
    name for name in sys.modules
    if name.split(".")[0] in ("opentelemetry", "prometheus_client")
)
print(loaded)
"""


def test_the_core_imports_neither_opentelemetry_nor_prometheus_client() -> None:
    """Importing the package, its command line, the health check and the worker's HTTP
    module, then emitting, loads no module of either library."""
    child = subprocess.run(
        [sys.executable, "-c", CORE_ONLY],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout == "[]\n"


@pytest.mark.parametrize(
    "module, missing, extra",
    [
        ("webhooks_emitter.contrib.opentelemetry", "opentelemetry", "otel"),
        ("webhooks_emitter.contrib.prometheus", "prometheus_client", "prometheus"),
    ],
)
def test_an_exporter_without_its_library_fails_to_import_saying_what_to_install(
    module: str, missing: str, extra: str
) -> None:
    """Without the extra installed, importing its exporter raises ImportError naming the
    library and the extra to install; the core still imports."""
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        "import webhooks_emitter\n"
        "try:\n"
        f"    import {module}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={**os.environ}
    )
    assert child.returncode == 0, child.stderr
    assert missing in child.stdout
    assert f"pip install 'webhooks_emitter[{extra}]'" in child.stdout
