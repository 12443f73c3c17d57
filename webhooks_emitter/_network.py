"""Where a try may connect: the address policy of ``block_private_networks`` and the name
lookups whose wait a try's deadline bounds.

:class:`NetworkPolicy` decides on the very address a connection uses (a name that resolves
to a refused address is refused, even after a first public answer); the address ranges it
refuses are written out from IANA's special-purpose registries. The shared resolver looks
names up in helper threads, so that a slow DNS server cannot hold a try past its deadline.
"""

from __future__ import annotations

import collections
import ipaddress
import os
import socket
import threading
import time
from typing import Any, Optional, Union

import attrs

from ._config import Network

__all__ = ["LONGEST_WAIT", "Address", "AddressRefused", "NetworkPolicy", "is_global"]

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def _networks(*cidrs: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# What block_private_networks refuses, written out here rather than taken from ipaddress's
# is_global/is_private: their answers differ between Python 3.9 and 3.13 (fec0::/10,
# 64:ff9b:1::/48, 192.0.0.0/24, 2001::/23 and IPv4-mapped forms among others). The source
# is IANA's IPv4 and IPv6 Special-Purpose Address Registries: every entry whose "Globally
# Reachable" is False or N/A, then the more specific entries that are True.

#: IPv4 ranges that are not globally reachable.
_NOT_GLOBAL_V4 = _networks(
    "0.0.0.0/8",  # "this network" (RFC 791)
    "10.0.0.0/8",  # private use (RFC 1918)
    "100.64.0.0/10",  # shared address space, carrier-grade NAT (RFC 6598)
    "127.0.0.0/8",  # loopback (RFC 1122)
    "169.254.0.0/16",  # link local, the cloud metadata address included (RFC 3927)
    "172.16.0.0/12",  # private use (RFC 1918)
    "192.0.0.0/24",  # IETF protocol assignments: DS-Lite, dummy, NAT64 discovery (RFC 6890)
    "192.0.2.0/24",  # documentation, TEST-NET-1 (RFC 5737)
    "192.88.99.0/24",  # 6to4 relay anycast, deprecated (RFC 7526)
    "192.168.0.0/16",  # private use (RFC 1918)
    "198.18.0.0/15",  # benchmarking (RFC 2544)
    "198.51.100.0/24",  # documentation, TEST-NET-2 (RFC 5737)
    "203.0.113.0/24",  # documentation, TEST-NET-3 (RFC 5737)
    "224.0.0.0/4",  # multicast (RFC 5771; not in the registry, never a unicast receiver)
    "240.0.0.0/4",  # reserved (RFC 1112), with the limited broadcast 255.255.255.255
)
#: IPv4 addresses inside those ranges that are globally reachable all the same.
_GLOBAL_V4 = _networks(
    "192.0.0.9/32",  # Port Control Protocol anycast (RFC 7723)
    "192.0.0.10/32",  # TURN anycast (RFC 8155)
)
#: IPv6 global unicast: IANA's IPv6 Address Space registry reserves everything else.
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
#: IPv6 ranges that are not globally reachable (those outside 2000::/3 are listed for the
#: reader; the rule above refuses them already).
_NOT_GLOBAL_V6 = _networks(
    "::/128",  # unspecified (RFC 4291)
    "::1/128",  # loopback (RFC 4291)
    "::/96",  # IPv4-compatible, deprecated (RFC 4291)
    "64:ff9b:1::/48",  # local-use IPv4/IPv6 translation (RFC 8215)
    "100::/64",  # discard-only (RFC 6666)
    "100:0:0:1::/64",  # dummy IPv6 prefix (RFC 9780)
    "2001::/23",  # IETF protocol assignments, Teredo 2001::/32 included (RFC 2928, 4380)
    "2001:db8::/32",  # documentation (RFC 3849)
    "3fff::/20",  # documentation (RFC 9637)
    "5f00::/16",  # segment routing SIDs (RFC 9602)
    "fc00::/7",  # unique local (RFC 4193)
    "fe80::/10",  # link-local unicast (RFC 4291)
    "fec0::/10",  # site-local unicast, deprecated (RFC 3879); Python calls it global
    "ff00::/8",  # multicast (RFC 4291)
)
#: IPv6 ranges inside those that are globally reachable all the same.
_GLOBAL_V6 = _networks(
    "2001:1::1/128",  # Port Control Protocol anycast (RFC 7723)
    "2001:1::2/128",  # TURN anycast (RFC 8155)
    "2001:1::3/128",  # DNS-SD service registration protocol anycast (RFC 9665)
    "2001:3::/32",  # AMT (RFC 7450)
    "2001:4:112::/48",  # AS112-v6 (RFC 7535)
    "2001:20::/28",  # ORCHIDv2 (RFC 7343)
    "2001:30::/28",  # drone remote ID protocol entity tags (RFC 9374)
)
#: IPv6 forms whose traffic goes to the IPv4 address inside: IPv4-mapped (::ffff:0:0/96),
#: the well-known NAT64 prefix (RFC 6052) and 6to4 (RFC 3056). Judged by that address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> Optional[ipaddress.IPv4Address]:
    """The IPv4 address an IPv4-mapped, NAT64 or 6to4 address leads to, else None."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def is_global(ip: Address) -> bool:
    """Whether ``ip`` is globally reachable, by the tables above (never by ``ip.is_global``)."""
    if isinstance(ip, ipaddress.IPv4Address):
        if any(ip in net for net in _GLOBAL_V4):
            return True
        return not any(ip in net for net in _NOT_GLOBAL_V4)
    inner = _embedded_ipv4(ip)
    if inner is not None:
        return is_global(inner)
    if ip not in _GLOBAL_UNICAST_V6:
        return False
    if any(ip in net for net in _GLOBAL_V6):
        return True
    return not any(ip in net for net in _NOT_GLOBAL_V6)

#: The longest any wait or socket timeout may be: sockets, locks and conditions refuse
#: timeouts past about 2**63 ns with OverflowError; 1e9 s (31 years) is as good as forever.
LONGEST_WAIT = 1e9



class AddressRefused(Exception):
    """A connection was refused by the emitter's network policy (never retried)."""


@attrs.frozen
class NetworkPolicy:
    """Which addresses an emitter may connect to."""

    block_private: bool = False
    allowed: tuple[Network, ...] = ()

    def refusal(self, ip: Address) -> Optional[str]:
        """Why ``ip`` may not be connected to, or None when it may."""
        if not self.block_private:
            return None
        inner = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
        if any(ip in net or (inner is not None and inner in net) for net in self.allowed):
            return None
        if not is_global(ip):
            return f"address {ip} is not globally routable (block_private_networks)"
        return None

    def resolve(
        self, host: str, port: int, timeout: Optional[float] = None
    ) -> list[tuple[Any, ...]]:
        """Resolve ``host`` and return the allowed ``getaddrinfo`` entries, or refuse.

        Args:
            host: a name or an IP literal (in brackets or not).
            port: the port the entries carry.
            timeout: the most seconds to wait for the resolver (None: as long as it takes).

        Raises:
            AddressRefused: every address ``host`` resolved to is refused.
            socket.gaierror: ``host`` did not resolve.
            TimeoutError: the resolver gave no answer within ``timeout``.
        """
        entries = _resolver.resolve(host.strip("[]"), port, timeout)
        allowed, reasons = [], []
        for entry in entries:
            ip = ipaddress.ip_address(str(entry[4][0]).split("%", 1)[0])
            reason = self.refusal(ip)
            if reason is None:
                allowed.append(entry)
            else:
                reasons.append(reason)
        if not allowed:
            raise AddressRefused(reasons[0] if reasons else f"{host} resolved to no address")
        return allowed


def _is_literal(host: str) -> bool:
    """Whether ``getaddrinfo`` reads ``host`` itself, without asking any resolver."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return True
    except ValueError:
        pass
    if not host or not host.isascii() or ":" in host:
        return False
    try:
        socket.inet_aton(host)  # the other IPv4 forms: 2130706433, 127.1, 0x7f.0.0.1
        return True
    except OSError:
        return False


class _Lookup:
    """One ``getaddrinfo`` call handed to a resolver thread, and its answer."""

    __slots__ = ("host", "port", "done", "entries", "error", "abandoned")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.done = threading.Event()
        self.entries: list[tuple[Any, ...]] = []
        self.error: Optional[Exception] = None
        self.abandoned = False  # the try stopped waiting: nobody wants the answer any more

    def run(self) -> None:
        if self.abandoned:
            return
        try:
            self.entries = list(socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM))
        except Exception as exc:  # noqa: BLE001 - handed to the waiting try as it is
            self.error = exc


class _Resolver:
    """Resolves names in helper threads, so that a try's deadline also bounds the lookup.

    ``getaddrinfo`` cannot be interrupted, and the system resolver's own timeouts know
    nothing of ``request_timeout``: the lookup runs in a daemon thread, and the try waits
    for its answer no longer than the time it has left. A lookup given up on finishes in
    its thread and its answer is dropped. The threads are shared by every emitter and
    reused: one is started only when none is idle (so a name that never answers holds up
    no other emitter's lookups, up to ``THREADS`` of them at once), and it ends after
    ``IDLE`` seconds without work. IP literals are read in the caller's thread.
    """

    #: The most helper threads at once; beyond that, lookups wait their turn (within
    #: their own deadline).
    THREADS = 32
    #: Seconds an idle helper thread waits for another lookup before it ends.
    IDLE = 60.0

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._pending: collections.deque[_Lookup] = collections.deque()
        self._idle = 0
        self._threads = 0

    def resolve(self, host: str, port: int, timeout: Optional[float]) -> list[tuple[Any, ...]]:
        """``getaddrinfo(host, port, 0, SOCK_STREAM)``, waiting at most ``timeout`` seconds.

        Raises:
            socket.gaierror: ``host`` did not resolve.
            TimeoutError: no answer came within ``timeout``.
        """
        if _is_literal(host):
            return list(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        lookup = _Lookup(host, port)
        cond = self._cond
        with cond:
            if self._idle > len(self._pending):  # an idle thread will take it
                self._pending.append(lookup)
                cond.notify()
            elif self._threads < self.THREADS:
                self._threads += 1
                threading.Thread(
                    target=self._run,
                    args=(cond, lookup),
                    name="webhooks-emitter-resolver",
                    daemon=True,
                ).start()
            else:
                self._pending.append(lookup)
        wait = None if timeout is None else min(max(timeout, 0.0), LONGEST_WAIT)
        if not lookup.done.wait(wait):
            lookup.abandoned = True
            raise TimeoutError(f"resolving {host} timed out")
        if lookup.error is not None:
            raise lookup.error
        return lookup.entries

    def _run(self, cond: threading.Condition, lookup: _Lookup) -> None:
        while True:
            lookup.run()
            with cond:
                if cond is not self._cond:  # a forked child's copy: the state is not ours
                    lookup.done.set()
                    return
                # Idle before the answer is handed over, so that the caller's next lookup
                # finds this thread free.
                self._idle += 1
                lookup.done.set()
                deadline = time.monotonic() + self.IDLE
                while not self._pending:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self._idle -= 1
                        self._threads -= 1
                        return
                    cond.wait(left)
                lookup = self._pending.popleft()
                self._idle -= 1


_resolver = _Resolver()
os.register_at_fork(after_in_child=_resolver._reset)
