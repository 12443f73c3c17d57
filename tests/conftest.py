"""Shared fixtures: a receiver on 127.0.0.1, a fresh emitter instance, and a network fence."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import attrs
import pytest

from webhooks_emitter import Config, WebhooksEmitter
from webhooks_emitter.testing import Receiver

# Servers, child scripts and helpers live in tests/support (tests/unit, tests/stores and
# tests/e2e hold the tests): make its modules importable by name from every folder, before
# pytest_plugins below loads one of them.
SUPPORT = Path(__file__).resolve().parent / "support"
if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))

from network_fence import NetworkFence  # noqa: E402 - found through SUPPORT above

# A private PostgreSQL server for the tests that need one (started on first use).
pytest_plugins = ["postgres_server"]

PROXY_VARIABLES = (
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
)


@pytest.fixture(autouse=True)
def network_fence(monkeypatch: pytest.MonkeyPatch) -> NetworkFence:
    """Replace socket connect (and name lookup) in-process so nothing but loopback is ever
    reached, and clear the machine's proxy variables."""
    fence = NetworkFence()
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        fence.check(address)
        original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        fence.check(address)
        return original_connect_ex(self, address)

    original_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None:
            fence.check_name(host)
        return original_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    # Proxy variables from the machine would send deliveries, also those of child programs
    # (which run without this fence), to a proxy elsewhere: tests set their own.
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,::1")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost,::1")
    return fence


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver on 127.0.0.1 answering 204, with no secret."""
    with Receiver() as running:
        yield running


@pytest.fixture
def hub() -> Iterator[WebhooksEmitter]:
    """A fresh, independent WebhooksEmitter, shut down after the test."""
    instance = WebhooksEmitter(exit_timeout=1.0)
    yield instance
    instance.shutdown(timeout=2.0)


@pytest.fixture
def fast() -> Callable[..., Config]:
    """Make a Config with millisecond backoffs and a short timeout: ``fast(url, **fields)``."""

    def make(url: str, **fields: Any) -> Config:
        base = Config(url, backoff_start=0.001, backoff_limit=0.01, request_timeout=2.0)
        return attrs.evolve(base, **fields)

    return make
