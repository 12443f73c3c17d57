"""``request_timeout`` bounds a try as a whole: every address a name has, and the name lookup.

The receivers are raw-socket servers on 127.0.0.1 (tests/support/faultservers.py). Names
are answered by replacing ``socket.getaddrinfo`` in-process (the resolver the library calls), and a
public address is refused in-process by the network fence of conftest.py: nothing leaves
loopback. Tests drive either the transport alone (one try, to see exactly what it did) or a
whole emitter through the public API.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest
import requests
from faultservers import WAIT, Conn, FaultServer, ForwardProxy, Results
from network_fence import NetworkFence

from webhooks_emitter import Config, DeliveryResult, WebhooksEmitter
from webhooks_emitter._transport import Transport, TryOutcome

PUBLIC = "93.184.216.34"  # globally routable; the fence refuses any connect to it
TIMEOUT = 0.5  # request_timeout of the tries here
#: How much later than request_timeout a try may end on a busy machine (a defect would
#: hold it for the whole trickle or lookup: 8 s and more).
SLACK = 2.5
#: The trickled answer: a status line, then a header one byte every 50 ms (about 8 s).
SLOW_ANSWER = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"s" * 160 + b"\r\nContent-Length: 0\r\n\r\n"


def trickle_answer(conn: Conn) -> None:
    """Read the request, then answer 200, a byte every 50 ms: no single read ever times out."""
    if conn.read_request() is not None:
        conn.trickle(SLOW_ANSWER, interval=0.05)


def answer_204(conn: Conn) -> None:
    """Answer every request on the connection with 204."""
    while conn.read_request() is not None:
        if not conn.send(b"HTTP/1.1 204 No Content\r\n\r\n"):
            return


@pytest.fixture
def trickler() -> Iterator[FaultServer]:
    """A receiver on 127.0.0.1 that takes about 8 s to send a 200."""
    with FaultServer(trickle_answer) as server:
        yield server


@pytest.fixture
def healthy() -> Iterator[FaultServer]:
    """A receiver on 127.0.0.1 that answers 204 at once."""
    with FaultServer(answer_204) as server:
        yield server


def entry(address: str, port: int) -> tuple[Any, ...]:
    """A ``getaddrinfo`` entry for ``address``."""
    if ipaddress.ip_address(address).version == 4:
        return (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
    return (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))


class Names:
    """``socket.getaddrinfo`` for a table of names, over the fence's (literals, localhost).

    A name may be made slow: its lookup then waits for ``release`` (or 8 s), as a resolver
    that answers late would.
    """

    def __init__(self, fenced: Callable[..., Any]) -> None:
        self.fenced = fenced
        self.table: dict[str, list[str]] = {}
        self.slow: set[str] = set()
        self.release = threading.Event()
        self.calls: list[tuple[str, threading.Thread]] = []  # (host, the calling thread)

    def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.calls.append((name, threading.current_thread()))
        if name in self.slow:
            self.release.wait(8.0)  # a late resolver: stands in for a DNS timeout
        if name in self.table:
            return [entry(address, int(port)) for address in self.table[name]]
        return self.fenced(host, port, *args, **kwargs)


@pytest.fixture
def names(network_fence: NetworkFence, monkeypatch: pytest.MonkeyPatch) -> Iterator[Names]:
    """Answer names from a table (and slow ones late); released at the end of the test."""
    table = Names(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", table.getaddrinfo)
    yield table
    table.release.set()


class Connects:
    """The descriptor number and address of every socket connect, in order."""

    def __init__(self) -> None:
        self.made: list[tuple[int, str]] = []


@pytest.fixture
def connects(network_fence: NetworkFence, monkeypatch: pytest.MonkeyPatch) -> Connects:
    """Record each connect's descriptor number, on top of the fence (which refuses non-loopback)."""
    record = Connects()
    fenced = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        record.made.append((self.fileno(), str(address[0])))
        fenced(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return record


def one_try(url: str, **fields: Any) -> tuple[TryOutcome, float]:
    """Make one try of a small POST to ``url`` with a fresh transport; (outcome, seconds)."""
    transport = Transport(Config(url, request_timeout=TIMEOUT, **fields))
    request = requests.Request(
        "POST", url, data=b"{}", headers={"Content-Type": "application/json"}
    ).prepare()
    started = time.monotonic()
    try:
        outcome = transport.send(request)
    finally:
        transport.close()
    return outcome, time.monotonic() - started


def deliver(hub: WebhooksEmitter, config: Config) -> DeliveryResult:
    """Attach ``config`` (whose on_delivery is a Results), emit one event, return its result."""
    assert isinstance(config.on_delivery, Results)
    hub.attach("deadline", "e", config)
    hub.emit("e", {"n": 1})
    result: DeliveryResult = config.on_delivery.next(WAIT)
    return result


# -- several addresses: the deadline follows the connection ----------------------------------


def test_the_deadline_ends_the_connection_to_a_later_address(
    names: Names, connects: Connects, trickler: FaultServer, network_fence: NetworkFence
) -> None:
    """A name with a public address first (refused) and then a trickling receiver.

    The second socket reuses the first one's descriptor number; the deadline must still end
    the connection it belongs to: the try fails at request_timeout, not after the trickle.
    """
    names.table["two.example"] = [PUBLIC, "127.0.0.1"]
    outcome, elapsed = one_try(f"http://two.example:{trickler.port}/hooks")

    assert [address for _, address in connects.made] == [PUBLIC, "127.0.0.1"]
    first, second = (fd for fd, _ in connects.made)
    assert first == second, "the second socket did not reuse the descriptor: no test"
    assert network_fence.attempts == [(PUBLIC, trickler.port)]
    assert (outcome.ok, outcome.error) == (False, f"timed out after {TIMEOUT:g} s")
    assert elapsed < TIMEOUT + SLACK


def test_an_emitter_gives_up_a_trickling_later_address_at_request_timeout(
    names: Names,
    trickler: FaultServer,
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
) -> None:
    """The same through the public API: one try, 'timed out after 0.5 s', in about 0.5 s."""
    names.table["two.example"] = [PUBLIC, "127.0.0.1"]
    results = Results()
    config = fast(
        f"http://two.example:{trickler.port}/hooks",
        request_timeout=TIMEOUT,
        max_attempts=1,
        on_delivery=results,
    )
    result = deliver(hub, config)
    assert (result.delivered, result.attempts) == (False, 1)
    assert result.error == f"timed out after {TIMEOUT:g} s"
    assert result.elapsed < TIMEOUT + SLACK


def test_a_later_address_that_answers_is_delivered(
    names: Names, connects: Connects, healthy: FaultServer
) -> None:
    """Control: the first address refused, the second answers 204 at once: delivered."""
    names.table["two.example"] = [PUBLIC, "127.0.0.1"]
    outcome, _ = one_try(f"http://two.example:{healthy.port}/hooks")
    assert (outcome.ok, outcome.status_code) == (True, 204)
    assert [address for _, address in connects.made] == [PUBLIC, "127.0.0.1"]


# -- name resolution is bounded too ----------------------------------------------------------


def test_a_slow_resolver_fails_the_try_at_request_timeout(
    names: Names, healthy: FaultServer
) -> None:
    """A lookup that would answer in 8 s ends the 0.5 s try at 0.5 s, as a timeout."""
    names.table["slow.example"] = ["127.0.0.1"]
    names.slow.add("slow.example")
    outcome, elapsed = one_try(f"http://slow.example:{healthy.port}/hooks")
    assert (outcome.ok, outcome.status_code) == (False, None)
    assert outcome.error == f"timed out after {TIMEOUT:g} s"
    assert elapsed < TIMEOUT + SLACK
    assert healthy.connections == 0


def test_an_emitter_with_a_slow_resolver_gives_up_at_request_timeout(
    names: Names,
    healthy: FaultServer,
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
) -> None:
    """Through the public API: two tries of 0.5 s each, never the resolver's 8 s."""
    names.table["slow.example"] = ["127.0.0.1"]
    names.slow.add("slow.example")
    results = Results()
    config = fast(
        f"http://slow.example:{healthy.port}/hooks",
        request_timeout=TIMEOUT,
        max_attempts=2,
        on_delivery=results,
    )
    result = deliver(hub, config)
    assert (result.delivered, result.attempts) == (False, 2)
    assert result.error == f"timed out after {TIMEOUT:g} s"
    assert result.elapsed < 2 * TIMEOUT + SLACK


def test_a_slow_lookup_through_a_proxy_is_bounded_too(
    names: Names, healthy: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With block_private_networks and a proxy, the receiver's name is resolved locally
    first, to check it: that lookup ends at the deadline as well, and the proxy hears nothing."""
    names.table["slow.example"] = [PUBLIC]
    names.slow.add("slow.example")
    with ForwardProxy() as proxy:
        outcome, elapsed = one_try(
            "http://slow.example/hooks",
            proxies={"http": proxy.url},
            block_private_networks=True,
        )
        assert proxy.seen == []
    assert (outcome.ok, outcome.error) == (False, f"timed out after {TIMEOUT:g} s")
    assert elapsed < TIMEOUT + SLACK


def test_a_stuck_lookup_holds_up_no_other_lookup(names: Names, healthy: FaultServer) -> None:
    """While one name's lookup is still stuck in the resolver, another name resolves at once."""
    names.table["slow.example"] = ["127.0.0.1"]
    names.table["quick.example"] = ["127.0.0.1"]
    names.slow.add("slow.example")
    slow, _ = one_try(f"http://slow.example:{healthy.port}/hooks")
    quick, _ = one_try(f"http://quick.example:{healthy.port}/hooks")
    assert (slow.ok, slow.error) == (False, f"timed out after {TIMEOUT:g} s")
    assert (quick.ok, quick.status_code) == (True, 204)


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "[::1]", "2130706433"], ids=["IPv4", "IPv6", "IPv4 as a number"]
)
def test_an_ip_literal_is_read_without_a_helper_thread(
    host: str, names: Names, healthy: FaultServer
) -> None:
    """No resolver is involved in an IP literal: getaddrinfo runs in the trying thread."""
    outcome, _ = one_try(f"http://{host}:{healthy.port}/hooks", proxies={})
    calls = [thread for name, thread in names.calls if name == host.strip("[]")]
    assert calls and set(calls) == {threading.current_thread()}
    if host != "[::1]":  # the fault server listens on IPv4 only
        assert outcome.ok, outcome.error


def test_names_are_resolved_by_reused_helper_threads(names: Names, healthy: FaultServer) -> None:
    """A name is looked up in a helper thread; 20 tries in a row start at most one more."""
    names.table["hooks.example"] = ["127.0.0.1"]

    def resolvers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "webhooks-emitter-resolver"}

    before = resolvers()
    for _ in range(20):
        outcome, _ = one_try(f"http://hooks.example:{healthy.port}/hooks")
        assert outcome.ok, outcome.error
    threads = [thread for name, thread in names.calls if name == "hooks.example"]
    assert len(threads) == 20
    assert threading.current_thread() not in threads
    assert len(resolvers() - before) <= 1
