"""The network fence every test runs inside (installed by ``tests/conftest.py``): it records
and refuses any connect to an address outside loopback, and any name that would need DNS."""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Any


class NetworkFence:
    """Records every connect to an address outside loopback and refuses it.

    Installed for every test, so a broken guard shows up as a recorded attempt (and a
    refused connection), never as a packet leaving the machine.
    """

    def __init__(self) -> None:
        self.attempts: list[tuple[Any, ...]] = []
        self.names: list[str] = []  # names something tried to resolve (refused)
        self._lock = threading.Lock()

    @staticmethod
    def is_loopback(address: Any) -> bool:
        if not isinstance(address, tuple):
            return True  # AF_UNIX paths
        try:
            return ipaddress.ip_address(str(address[0]).split("%", 1)[0]).is_loopback
        except ValueError:
            return False  # a name: refuse, the library connects to addresses only

    def check_name(self, host: Any) -> None:
        """Refuse (and record) a lookup that would need DNS: only literals and localhost pass."""
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name == "localhost" or name.isdigit():
            return  # the hosts file, or a number getaddrinfo reads itself
        try:
            ipaddress.ip_address(name.split("%", 1)[0])
        except ValueError:
            with self._lock:
                self.names.append(name)
            raise socket.gaierror(
                socket.EAI_NONAME, f"refused by the test fence: {name!r}"
            ) from None

    def check(self, address: Any) -> None:
        if not self.is_loopback(address):
            with self._lock:
                self.attempts.append(address)
            raise ConnectionRefusedError(111, f"refused by the test fence: {address!r}")
