"""Where an emitter may connect: block_private_networks, allowed_networks, redirects, proxies.

Nothing here may leave loopback. Three layers make sure of it and make the checks visible:
the autouse ``network_fence`` (conftest.py) refuses and records any connect outside
loopback; the ``connects`` fixture records every connect the process makes, loopback
included, so a test can show that a refused address was never even tried; and the
``resolver`` fixture answers host names from a table (a name outside it fails to resolve,
so no DNS query is ever sent).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import pytest
from faultservers import WAIT, ForwardProxy, Results, closed_port
from network_fence import NetworkFence

from webhooks_emitter import Config, DeliveryResult, WebhooksEmitter
from webhooks_emitter._network import NetworkPolicy
from webhooks_emitter.testing import Receiver

PUBLIC = "93.184.216.34"  # a globally routable address; the fence refuses any connect to it
REFUSED = "is not globally routable (block_private_networks)"


class Connects:
    """Every address the process connected (or tried to connect) to, in order."""

    def __init__(self) -> None:
        self.addresses: list[tuple[str, int]] = []

    def to_port(self, port: int) -> list[tuple[str, int]]:
        """The connects made to ``port``."""
        return [a for a in self.addresses if a[1] == port]


@pytest.fixture
def connects(network_fence: NetworkFence, monkeypatch: pytest.MonkeyPatch) -> Connects:
    """Record every socket connect, on top of the fence (which still refuses non-loopback)."""
    record = Connects()
    fenced = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        record.addresses.append((str(address[0]), int(address[1])))
        fenced(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return record


class Resolver:
    """A stand-in for DNS: names map to a list of answers, one per lookup (the last repeats)."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.names: dict[str, list[Sequence[str]]] = {}
        self.lookups: dict[str, int] = {}

    def add(self, name: str, *answers: Sequence[str]) -> None:
        """``name`` resolves to ``answers[0]`` first, then ``answers[1]``... then the last."""
        self.names[name] = list(answers)

    def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in self.names:
            try:
                ipaddress.ip_address(name.split("%", 1)[0])
            except ValueError:
                if name != "localhost" and not name.isdigit() and not name.startswith("0x"):
                    raise socket.gaierror(
                        socket.EAI_NONAME, f"{name} is not in the test's table"
                    ) from None
            return list(self.real(host, port, *args, **kwargs))  # a literal: no DNS involved
        count = self.lookups.get(name, 0)
        self.lookups[name] = count + 1
        answers = self.names[name]
        entries: list[tuple[Any, ...]] = []
        for text in answers[min(count, len(answers) - 1)]:
            ip = ipaddress.ip_address(text)
            if ip.version == 4:
                entries.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (text, int(port))))
            else:
                entries.append(
                    (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (text, int(port), 0, 0))
                )
        return entries


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    """Answer names from a table; anything else but literals and localhost fails to resolve."""
    fake = Resolver(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake.getaddrinfo)
    return fake


@pytest.fixture(autouse=True)
def _no_dns(resolver: Resolver) -> None:
    """Every test of this file resolves through the table: no DNS query leaves the process."""


@pytest.fixture
def results() -> Results:
    """Collects the DeliveryResults of the emitter under test."""
    return Results()


def deliver(hub: WebhooksEmitter, config: Config) -> DeliveryResult:
    """Attach ``config``, emit one event and return its DeliveryResult."""
    assert isinstance(config.on_delivery, Results)
    hub.attach("guarded", "e", config)
    hub.emit("e", {"n": 1})
    result: DeliveryResult = config.on_delivery.next()
    return result


# -- refused addresses --------------------------------------------------------------------

# (URL with {port} for the receiver's port, the address the refusal names)
BLOCKED = {
    "loopback": ("http://127.0.0.1:{port}/hooks", "127.0.0.1"),
    "localhost": ("http://localhost:{port}/hooks", "127.0.0.1"),
    "IPv6 loopback": ("http://[::1]:{port}/hooks", "::1"),
    "cloud metadata": ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    "RFC 1918 10/8": ("http://10.0.0.1/hooks", "10.0.0.1"),
    "RFC 1918 172.16/12": ("http://172.16.0.1/hooks", "172.16.0.1"),
    "RFC 1918 192.168/16": ("http://192.168.1.1/hooks", "192.168.1.1"),
    "CGNAT": ("http://100.64.0.1/hooks", "100.64.0.1"),
    "unspecified": ("http://0.0.0.0:{port}/hooks", "0.0.0.0"),
    "multicast": ("http://224.0.0.1/hooks", "224.0.0.1"),
    "reserved": ("http://240.0.0.1/hooks", "240.0.0.1"),
    "IPv4-mapped loopback": ("http://[::ffff:127.0.0.1]:{port}/hooks", "::ffff:127.0.0.1"),
    "IPv4-mapped private": ("http://[::ffff:10.0.0.1]/hooks", "::ffff:10.0.0.1"),
    "IPv6 unspecified": ("http://[::]:{port}/hooks", "::"),
    "IPv6 ULA": ("http://[fd00::1]/hooks", "fd00::1"),
    "IPv6 link-local": ("http://[fe80::1]/hooks", "fe80::1"),
    "NAT64 of the metadata address": ("http://[64:ff9b::a9fe:a9fe]/hooks", "64:ff9b::a9fe:a9fe"),
    "6to4 of a private address": ("http://[2002:a00:1::1]/hooks", "2002:a00:1::1"),
    "loopback as a decimal number": ("http://2130706433:{port}/hooks", "127.0.0.1"),
    "loopback over https": ("https://127.0.0.1:{port}/hooks", "127.0.0.1"),
    # Addresses some Python versions call global (see the table of test_address_table):
    "IPv6 site-local": ("http://[fec0::1]/hooks", "fec0::1"),
    "local-use NAT64": ("http://[64:ff9b:1::a00:1]/hooks", "64:ff9b:1::a00:1"),
    "IPv4 dummy address": ("http://192.0.0.8/hooks", "192.0.0.8"),
    "IPv6 documentation": ("http://[2001:db8::1]/hooks", "2001:db8::1"),
    "6to4 of a documentation address": ("http://[2002:c000:204::1]/hooks", "2002:c000:204::1"),
}


@pytest.mark.parametrize("url, address", list(BLOCKED.values()), ids=list(BLOCKED))
def test_private_address_is_refused_before_connecting(
    url: str,
    address: str,
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    receiver: Receiver,
    results: Results,
    connects: Connects,
    network_fence: NetworkFence,
) -> None:
    """A URL that leads to a non-global address fails at once: 1 try of 5, the reason given.

    No connect is made at all (not to loopback, not past the fence), so the receiver
    listening on that port sees nothing.
    """
    config = fast(
        url.format(port=receiver.port),
        block_private_networks=True,
        max_attempts=5,
        on_delivery=results,
    )
    result = deliver(hub, config)
    assert (result.delivered, result.attempts, result.status_code) == (False, 1, None)
    # (as Python spells the address: ::ffff:7f00:1 before 3.13, ::ffff:127.0.0.1 after)
    assert result.error == f"refused: address {ipaddress.ip_address(address)} {REFUSED}"
    assert connects.addresses == []
    assert network_fence.attempts == []
    assert hub.flush(WAIT)
    assert receiver.requests == []


# The IANA IPv4 and IPv6 Special-Purpose Address Registries, one address of each range that
# matters (and of its edges), and the answer block_private_networks must give whatever
# Python's ipaddress says: its is_global and is_private changed between 3.9 and 3.13. Python
# 3.11.7, for one, calls fec0::1, 192.0.0.8, 64:ff9b:1::1, 3fff::1, 5f00::1, 6to4 and NAT64
# forms of private addresses global, and 2001:1::1, 2001:3::1 or 2001:20::1 not global.
# (address, refused, what it is)
ADDRESS_TABLE = [
    # IPv4, not globally reachable
    ("0.1.2.3", True, "'this network' 0.0.0.0/8"),
    ("10.0.0.1", True, "private 10/8"),
    ("100.64.0.1", True, "shared CGNAT 100.64/10"),
    ("100.127.255.254", True, "shared CGNAT, its end"),
    ("127.0.0.1", True, "loopback"),
    ("169.254.169.254", True, "link-local, cloud metadata"),
    ("172.16.0.1", True, "private 172.16/12"),
    ("172.31.255.255", True, "private 172.16/12, its end"),
    ("192.0.0.8", True, "IPv4 dummy address"),
    ("192.0.0.170", True, "NAT64/DNS64 discovery"),
    ("192.0.0.1", True, "DS-Lite 192.0.0.0/29"),
    ("192.0.2.1", True, "TEST-NET-1"),
    ("192.88.99.1", True, "6to4 relay anycast, deprecated"),
    ("192.168.1.1", True, "private 192.168/16"),
    ("198.18.0.1", True, "benchmarking 198.18/15"),
    ("198.19.255.1", True, "benchmarking, its end"),
    ("198.51.100.1", True, "TEST-NET-2"),
    ("203.0.113.1", True, "TEST-NET-3"),
    ("224.0.0.1", True, "multicast"),
    ("240.0.0.1", True, "reserved 240/4"),
    ("255.255.255.255", True, "limited broadcast"),
    # IPv4, globally reachable
    ("93.184.216.34", False, "a public address"),
    ("8.8.8.8", False, "a public address"),
    ("192.0.0.9", False, "PCP anycast"),
    ("192.0.0.10", False, "TURN anycast"),
    ("192.31.196.1", False, "AS112-v4"),
    ("192.52.193.1", False, "AMT"),
    ("192.175.48.1", False, "AS112 direct delegation"),
    ("100.63.255.255", False, "just below CGNAT"),
    ("100.128.0.0", False, "just above CGNAT"),
    ("172.32.0.1", False, "just above 172.16/12"),
    ("198.20.0.1", False, "just above benchmarking"),
    # IPv6, not globally reachable
    ("::", True, "unspecified"),
    ("::1", True, "loopback"),
    ("::a00:1", True, "IPv4-compatible, deprecated"),
    ("::ffff:10.0.0.1", True, "IPv4-mapped private"),
    ("::ffff:127.0.0.1", True, "IPv4-mapped loopback"),
    ("::ffff:100.64.0.1", True, "IPv4-mapped CGNAT"),
    ("64:ff9b::a00:1", True, "NAT64 of a private address"),
    ("64:ff9b::a9fe:a9fe", True, "NAT64 of the metadata address"),
    ("64:ff9b:1::1", True, "local-use NAT64 64:ff9b:1::/48"),
    ("100::1", True, "discard-only 100::/64"),
    ("100:0:0:1::1", True, "dummy prefix 100:0:0:1::/64"),
    ("2001::1", True, "Teredo"),
    ("2001:2::1", True, "benchmarking 2001:2::/48"),
    ("2001:10::1", True, "ORCHID, deprecated"),
    ("2001:db8::1", True, "documentation 2001:db8::/32"),
    ("2002:a00:1::1", True, "6to4 of 10.0.0.1"),
    ("2002:c0a8:101::1", True, "6to4 of 192.168.1.1"),
    ("2002:7f00:1::1", True, "6to4 of loopback"),
    ("3fff::1", True, "documentation 3fff::/20"),
    ("5f00::1", True, "segment routing SIDs 5f00::/16"),
    ("4000::1", True, "reserved, outside 2000::/3"),
    ("fc00::1", True, "unique local fc00::/7"),
    ("fd00::1", True, "unique local"),
    ("fe80::1", True, "link-local"),
    ("fec0::1", True, "site-local fec0::/10, deprecated"),
    ("feff:ffff::1", True, "site-local, its end"),
    ("ff02::1", True, "multicast"),
    # IPv6, globally reachable
    ("2606:2800:220:1:248:1893:25c8:1946", False, "a public address"),
    ("::ffff:93.184.216.34", False, "IPv4-mapped public"),
    ("64:ff9b::5db8:d822", False, "NAT64 of a public address"),
    ("2002:5db8:d822::1", False, "6to4 of a public address"),
    ("2001:1::1", False, "PCP anycast"),
    ("2001:1::2", False, "TURN anycast"),
    ("2001:1::3", False, "DNS-SD SRP anycast"),
    ("2001:3::1", False, "AMT 2001:3::/32"),
    ("2001:4:112::1", False, "AS112-v6"),
    ("2001:20::1", False, "ORCHIDv2"),
    ("2001:30::1", False, "drone remote ID"),
    ("2001:200::1", False, "just above 2001::/23"),
    ("2620:4f:8000::1", False, "AS112 direct delegation"),
]


@pytest.mark.parametrize(
    "address, refused",
    [row[:2] for row in ADDRESS_TABLE],
    ids=[f"{address} {what}" for address, _, what in ADDRESS_TABLE],
)
def test_address_table(address: str, refused: bool) -> None:
    """Each address of the table is refused (or not) as the IANA registries say, whatever
    this Python's ``ipaddress`` thinks of it; allowed_networks exempts a refused one."""
    policy = NetworkPolicy(block_private=True)
    ip = ipaddress.ip_address(address)
    reason = policy.refusal(ip)
    assert (reason is not None) is refused, reason
    if refused:
        assert reason == f"address {ip} {REFUSED}"
        exempt = NetworkPolicy(block_private=True, allowed=(ipaddress.ip_network(ip),))
        assert exempt.refusal(ip) is None
    assert NetworkPolicy(block_private=False).refusal(ip) is None


@pytest.mark.parametrize(
    "address", ["2001:1::1", "192.0.0.9", "[::ffff:93.184.216.34]", "2002:5db8:d822::1"]
)
def test_globally_reachable_special_addresses_are_tried(
    address: str,
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    results: Results,
    network_fence: NetworkFence,
) -> None:
    """Addresses of the registries' globally reachable entries pass the guard: the connect is
    made (and refused in-process by the fence, so nothing leaves the machine)."""
    host = address if address.startswith("[") or ":" not in address else f"[{address}]"
    url = f"http://{host}:8080/hooks"
    config = fast(url, block_private_networks=True, max_attempts=1, on_delivery=results)
    result = deliver(hub, config)
    assert (result.delivered, result.error) == (False, "connection refused")
    [(connected, port, *_)] = network_fence.attempts
    assert ipaddress.ip_address(connected) == ipaddress.ip_address(host.strip("[]"))
    assert port == 8080


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/hooks", "http://localhost:{port}/hooks"])
def test_the_same_urls_are_delivered_without_the_guard(
    url: str,
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    receiver: Receiver,
    results: Results,
) -> None:
    """Control for the test above: without block_private_networks these URLs are delivered."""
    result = deliver(hub, fast(url.format(port=receiver.port), on_delivery=results))
    assert (result.delivered, result.attempts) == (True, 1)
    assert len(receiver.requests) == 1


def test_a_refused_try_is_not_retried(
    hub: WebhooksEmitter, fast: Callable[..., Config], results: Results
) -> None:
    """Refusal is final: with 5 tries allowed and a 5 s backoff, the result comes after 1 try."""
    config = fast(
        "http://10.0.0.1/hooks",
        block_private_networks=True,
        max_attempts=5,
        backoff_start=5.0,
        backoff_limit=5.0,
        on_delivery=results,
    )
    result = deliver(hub, config)
    assert result.attempts == 1
    assert result.elapsed < 4  # a retry would have waited 5 s first
    assert hub.stats("guarded").retries == 0


def test_a_name_resolving_to_a_private_address_is_refused(
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    results: Results,
    resolver: Resolver,
    connects: Connects,
) -> None:
    """The check is made on resolved addresses: a harmless-looking name for 10.0.0.1 is refused."""
    resolver.add("hooks.internal.example", ["10.0.0.1"])
    config = fast(
        "http://hooks.internal.example/hooks", block_private_networks=True, on_delivery=results
    )
    result = deliver(hub, config)
    assert (result.attempts, result.error) == (1, f"refused: address 10.0.0.1 {REFUSED}")
    assert connects.addresses == []


def test_a_resolver_answer_that_changes_never_reaches_the_private_address(
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    receiver: Receiver,
    results: Results,
    resolver: Resolver,
    connects: Connects,
    network_fence: NetworkFence,
) -> None:
    """DNS rebinding: a public answer first, then 127.0.0.1 (where a receiver listens).

    The first try connects to the public address it checked (the fence refuses it: a
    connection error, so it is retried); the second lookup answers 127.0.0.1, which is
    refused before any connect. The connection is always made to the address that was
    checked, with one lookup per try: 127.0.0.1 is never connected to.
    """
    resolver.add("rebind.example", [PUBLIC], ["127.0.0.1"])
    url = f"http://rebind.example:{receiver.port}/hooks"
    result = deliver(
        hub, fast(url, block_private_networks=True, max_attempts=5, on_delivery=results)
    )
    assert (result.delivered, result.attempts) == (False, 2)
    assert result.error == f"refused: address 127.0.0.1 {REFUSED}"
    assert connects.addresses == [(PUBLIC, receiver.port)]
    assert network_fence.attempts == [(PUBLIC, receiver.port)]
    assert resolver.lookups["rebind.example"] == 2
    assert hub.flush(WAIT)
    assert receiver.requests == []


def test_only_the_allowed_addresses_of_a_name_are_tried(
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    receiver: Receiver,
    results: Results,
    resolver: Resolver,
    connects: Connects,
) -> None:
    """A name with a private and a public address: the private one is skipped, the public tried."""
    resolver.add("mixed.example", ["127.0.0.1", PUBLIC])
    url = f"http://mixed.example:{receiver.port}/hooks"
    result = deliver(
        hub, fast(url, block_private_networks=True, max_attempts=2, on_delivery=results)
    )
    assert (result.delivered, result.attempts, result.error) == (False, 2, "connection refused")
    assert connects.addresses == [(PUBLIC, receiver.port)] * 2
    assert hub.flush(WAIT)
    assert receiver.requests == []


def test_without_the_guard_the_first_address_of_a_name_is_used(
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    receiver: Receiver,
    results: Results,
    resolver: Resolver,
) -> None:
    """Control for the test above: unguarded, the same name is delivered to 127.0.0.1."""
    resolver.add("mixed.example", ["127.0.0.1", PUBLIC])
    result = deliver(hub, fast(f"http://mixed.example:{receiver.port}/hooks", on_delivery=results))
    assert (result.delivered, result.attempts) == (True, 1)
    assert len(receiver.requests) == 1


def test_an_allowed_network_goes_through(
    hub: WebhooksEmitter, fast: Callable[..., Config], receiver: Receiver, results: Results
) -> None:
    """allowed_networks=["127.0.0.0/8"] exempts loopback: a real receiver gets the event."""
    config = fast(
        receiver.url,
        block_private_networks=True,
        allowed_networks=["127.0.0.0/8"],
        on_delivery=results,
    )
    result = deliver(hub, config)
    assert (result.delivered, result.attempts) == (True, 1)
    [request] = receiver.wait_for(1)
    assert request.json() == {"n": 1}


def test_an_allowed_network_exempts_only_its_range(
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    receiver: Receiver,
    results: Results,
    connects: Connects,
) -> None:
    """allowed_networks=["10.0.0.0/8"] does not open loopback."""
    config = fast(
        receiver.url,
        block_private_networks=True,
        allowed_networks=["10.0.0.0/8"],
        on_delivery=results,
    )
    result = deliver(hub, config)
    assert (result.attempts, result.error) == (1, f"refused: address 127.0.0.1 {REFUSED}")
    assert connects.addresses == []


def test_redirects_are_never_followed(
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    results: Results,
    connects: Connects,
    network_fence: NetworkFence,
) -> None:
    """A 302 to the metadata address fails the try; nothing connects to where it points."""
    answer = (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b"")
    with Receiver(responder=lambda request: answer) as receiver:
        result = deliver(hub, fast(receiver.url, max_attempts=2, on_delivery=results))
        assert (result.delivered, result.attempts, result.status_code, result.error) == (
            False,
            2,
            302,
            "HTTP 302",
        )
        assert {address for address, _ in connects.addresses} == {"127.0.0.1"}
        assert network_fence.attempts == []
        assert len(receiver.requests) == 2


# -- proxies --------------------------------------------------------------------------------

@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variables unless the test sets them: the conftest fence already removes the
    proxy ones; its loopback NO_PROXY (and a CGI REQUEST_METHOD, which makes requests ignore
    HTTP_PROXY) go too."""
    for name in ("no_proxy", "NO_PROXY", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    """A forward proxy on 127.0.0.1 that relays to loopback only."""
    with ForwardProxy() as running:
        yield running


def test_explicit_proxies_are_used(
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    receiver: Receiver,
    proxy: ForwardProxy,
    results: Results,
    clean_env: pytest.MonkeyPatch,
) -> None:
    """Config(proxies={"http": ...}): the request goes to the proxy, which relays it."""
    result = deliver(hub, fast(receiver.url, proxies={"http": proxy.url}, on_delivery=results))
    assert (result.delivered, result.attempts) == (True, 1)
    assert proxy.wait_for(1) == [("POST", receiver.url)]
    [request] = receiver.wait_for(1)
    assert request.json() == {"n": 1}


def test_environment_proxy_applies_when_proxies_is_none(
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    receiver: Receiver,
    proxy: ForwardProxy,
    results: Results,
    clean_env: pytest.MonkeyPatch,
) -> None:
    """With proxies=None, HTTP_PROXY (set before attach) routes the delivery through the proxy."""
    clean_env.setenv("HTTP_PROXY", proxy.url)
    result = deliver(hub, fast(receiver.url, on_delivery=results))
    assert (result.delivered, result.attempts) == (True, 1)
    assert proxy.wait_for(1) == [("POST", receiver.url)]
    assert len(receiver.wait_for(1)) == 1


def test_no_proxy_is_respected(
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    receiver: Receiver,
    proxy: ForwardProxy,
    results: Results,
    clean_env: pytest.MonkeyPatch,
    connects: Connects,
) -> None:
    """HTTP_PROXY with NO_PROXY naming the receiver's host: the delivery goes direct."""
    clean_env.setenv("HTTP_PROXY", proxy.url)
    clean_env.setenv("NO_PROXY", "127.0.0.1")
    result = deliver(hub, fast(receiver.url, on_delivery=results))
    assert (result.delivered, result.attempts) == (True, 1)
    assert proxy.seen == []
    assert connects.addresses == [("127.0.0.1", receiver.port)]


def test_explicit_empty_proxies_disable_the_environment(
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    receiver: Receiver,
    proxy: ForwardProxy,
    results: Results,
    clean_env: pytest.MonkeyPatch,
    connects: Connects,
) -> None:
    """proxies={} is taken as it is: no proxy, even with HTTP_PROXY in the environment."""
    clean_env.setenv("HTTP_PROXY", proxy.url)
    result = deliver(hub, fast(receiver.url, proxies={}, on_delivery=results))
    assert (result.delivered, result.attempts) == (True, 1)
    assert proxy.seen == []
    assert connects.addresses == [("127.0.0.1", receiver.port)]


def test_an_unreachable_proxy_is_a_proxy_error(
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    results: Results,
    clean_env: pytest.MonkeyPatch,
) -> None:
    """A proxy that refuses connections fails each try with a proxy error (and is retried)."""
    with closed_port() as port:
        config = fast(
            "http://127.0.0.1:9/hooks",
            proxies={"http": f"http://127.0.0.1:{port}"},
            on_delivery=results,
        )
        result = deliver(hub, config)
    assert (result.delivered, result.attempts) == (False, 3)
    assert result.error == "proxy error: connection refused"


def test_guard_checks_the_target_not_the_proxy(
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    receiver: Receiver,
    results: Results,
    resolver: Resolver,
    clean_env: pytest.MonkeyPatch,
) -> None:
    """block_private_networks with a proxy on loopback: the proxy is the operator's and is used.

    The receiver's name is resolved here and checked (it resolves to a public address),
    then the request goes to the proxy, which relays it (here to a local receiver).
    """
    resolver.add("hooks.example", [PUBLIC])
    with ForwardProxy(routes={"hooks.example": ("127.0.0.1", receiver.port)}) as proxy:
        config = fast(
            "http://hooks.example/hooks",
            proxies={"http": proxy.url},
            block_private_networks=True,
            on_delivery=results,
        )
        result = deliver(hub, config)
        assert (result.delivered, result.attempts) == (True, 1)
        assert proxy.wait_for(1) == [("POST", "http://hooks.example/hooks")]
    assert resolver.lookups["hooks.example"] == 1
    assert len(receiver.wait_for(1)) == 1


@pytest.mark.parametrize(
    "url, answer, address",
    [
        ("http://10.0.0.1/hooks", None, "10.0.0.1"),
        ("http://169.254.169.254/latest/meta-data/", None, "169.254.169.254"),
        ("http://internal.example/hooks", ["192.168.0.10"], "192.168.0.10"),
    ],
    ids=["private literal", "metadata literal", "name for a private address"],
)
def test_guard_refuses_a_private_target_behind_a_proxy(
    url: str,
    answer: Any,
    address: str,
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    proxy: ForwardProxy,
    results: Results,
    resolver: Resolver,
    clean_env: pytest.MonkeyPatch,
) -> None:
    """Through a proxy, a target that is (or resolves to) a private address is refused: 1 try,
    and the proxy never hears of it."""
    if answer is not None:
        resolver.add("internal.example", answer)
    config = fast(
        url,
        proxies={"http": proxy.url},
        block_private_networks=True,
        max_attempts=5,
        on_delivery=results,
    )
    result = deliver(hub, config)
    assert (result.delivered, result.attempts) == (False, 1)
    assert result.error == f"refused: address {address} {REFUSED}"
    assert proxy.seen == []
