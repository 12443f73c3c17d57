"""Run one documentation example (a Python file) with the network fenced to loopback.

Usage: ``python tests/doc_example.py EXAMPLE.py``. Used by ``tests/test_docs.py``: the
example runs as ``__main__`` in this fresh interpreter, after every connect to an address
outside loopback, and every name lookup that would need DNS, has been made to fail, so an
example can never reach another machine, whatever it is written to do.
"""

from __future__ import annotations

import ipaddress
import runpy
import socket
import sys
from typing import Any


def _loopback(address: Any) -> bool:
    if not isinstance(address, tuple):
        return True  # an AF_UNIX path
    try:
        return ipaddress.ip_address(str(address[0]).split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a name: the library connects to addresses it resolved


def _fence() -> None:
    connect, connect_ex, getaddrinfo = (
        socket.socket.connect,
        socket.socket.connect_ex,
        socket.getaddrinfo,
    )

    def check(address: Any) -> None:
        if not _loopback(address):
            raise ConnectionRefusedError(111, f"documentation example: {address!r} is not loopback")

    def fenced_connect(self: socket.socket, address: Any) -> None:
        check(address)
        connect(self, address)

    def fenced_connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return connect_ex(self, address)

    def fenced_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name != "localhost" and not str(name).isdigit():
            try:
                ipaddress.ip_address(str(name).split("%", 1)[0])
            except ValueError:
                raise socket.gaierror(
                    socket.EAI_NONAME, f"documentation example: no DNS for {name!r}"
                ) from None
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = fenced_connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = fenced_connect_ex  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = fenced_getaddrinfo


if __name__ == "__main__":
    _fence()
    path = sys.argv[1]
    sys.argv = [path]
    runpy.run_path(path, run_name="__main__")
