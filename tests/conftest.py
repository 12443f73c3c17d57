"""Shared fixtures: a receiver on 127.0.0.1, a fresh emitter instance, and a network fence."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from typing import Any, Callable

import attrs
import pytest

from webhooks_emitter import Config, WebhooksEmitter
from webhooks_emitter.testing import Receiver


class NetworkFence:
    """Records every connect to an address outside loopback and refuses it.

    Installed for every test, so a broken guard shows up as a recorded attempt (and a
    refused connection), never as a packet leaving the machine.
    """

    def __init__(self) -> None:
        self.attempts: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    @staticmethod
    def is_loopback(address: Any) -> bool:
        if not isinstance(address, tuple):
            return True  # AF_UNIX paths
        try:
            return ipaddress.ip_address(str(address[0]).split("%", 1)[0]).is_loopback
        except ValueError:
            return False  # a name: refuse, the library connects to addresses only

    def check(self, address: Any) -> None:
        if not self.is_loopback(address):
            with self._lock:
                self.attempts.append(address)
            raise ConnectionRefusedError(111, f"refused by the test fence: {address!r}")


@pytest.fixture(autouse=True)
def network_fence(monkeypatch: pytest.MonkeyPatch) -> NetworkFence:
    """Replace socket connect in-process so nothing but loopback is ever reached."""
    fence = NetworkFence()
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        fence.check(address)
        original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        fence.check(address)
        return original_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
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
