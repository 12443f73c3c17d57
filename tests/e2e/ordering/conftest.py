"""Fixtures of the tests of parallel delivery, ordering keys, rate and schedule (CONTRACT
section 13): each store the engine runs over, an in-flight-counting receiver (this folder's
``receiver``, in place of the plain one of ``tests/conftest.py``), the library's log
records, and an instance over the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from inflight_receiver import InflightReceiver, LogWatch

from webhooks_emitter import WebhooksEmitter


@pytest.fixture(params=["memory:", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store the engine runs over: memory, and a fresh SQLite file."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/s.db"
    return str(request.param)


@pytest.fixture
def receiver() -> Iterator[InflightReceiver]:
    """An in-flight-counting receiver on 127.0.0.1 answering 204 (tests set ``rule``)."""
    with InflightReceiver() as running:
        yield running  # type: ignore[misc]


@pytest.fixture
def log() -> Iterator[LogWatch]:
    """The library's log records, INFO and above, to wait on."""
    with LogWatch() as watch:
        yield watch


@pytest.fixture
def hooks(store_url: str, receiver: InflightReceiver) -> Iterator[WebhooksEmitter]:
    """A WebhooksEmitter over ``store_url``, shut down before the receiver stops."""
    instance = WebhooksEmitter(exit_timeout=1.0, store=store_url)
    yield instance
    instance.shutdown(timeout=2.0)
