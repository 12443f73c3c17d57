"""TLS against a real HTTPS receiver on 127.0.0.1, with certificates made by trustme.

The receiver is a threaded ``http.server`` whose connections are wrapped in TLS in their own
thread, so it can count every handshake, the failed ones included (a try the client
aborts because it does not trust the certificate still reaches the receiver's handshake).
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import attrs
import pytest
import trustme
from faultservers import WAIT, Conn, FaultServer, Results

from webhooks_emitter import Config, DeliveryResult, WebhooksEmitter


class TLSReceiver(http.server.ThreadingHTTPServer):
    """An HTTPS receiver on 127.0.0.1 that answers 204 and counts handshakes.

    Attributes:
        handshakes: one entry per connection: None for a handshake that succeeded, else why
            it failed, as the server saw it.
        bodies: the request bodies received.
        peer_subjects: the client certificate's subjectAltName per request (None without one).
    """

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.handshakes: list[Optional[str]] = []
        self.bodies: list[bytes] = []
        self.peer_subjects: list[Any] = []
        self.refusal = ""  # the error a client without a certificate gets (mTLS receivers)
        self.cond = threading.Condition()
        super().__init__(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>/hooks``."""
        return f"https://127.0.0.1:{self.server_address[1]}/hooks"

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Make the TLS handshake in the connection's thread, then serve it.

        After a failed handshake the connection is kept until the client closes it, so the
        client reads the server's alert (closing at once, with the client's request unread,
        would send a TCP reset that may overtake the alert).
        """
        tls = self.context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            self._note(getattr(exc, "reason", None) or type(exc).__name__)
            raw = socket.socket(fileno=tls.detach())
            raw.settimeout(WAIT)
            with contextlib.suppress(OSError):
                while raw.recv(65536):
                    pass
            raw.close()
            return
        self._note(None)
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()

    def _note(self, outcome: Optional[str]) -> None:
        with self.cond:
            self.handshakes.append(outcome)
            self.cond.notify_all()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Errors of a connection are the test's subject, not noise on stderr."""

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                peer = self.connection.getpeercert()  # type: ignore[attr-defined]
                with server.cond:
                    server.bodies.append(body)
                    server.peer_subjects.append(peer.get("subjectAltName") if peer else None)
                    server.cond.notify_all()
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def wait_handshakes(self, count: int) -> list[Optional[str]]:
        """Wait until ``count`` handshakes were attempted; return their outcomes."""
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.handshakes) >= count, WAIT)
            return list(self.handshakes)

    def __enter__(self) -> TLSReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
        self._thread.join(WAIT)
        self.server_close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """The CA that signs the receiver's certificate."""
    return trustme.CA()


@pytest.fixture(scope="module")
def client_ca() -> trustme.CA:
    """The CA that signs client certificates (trusted by the receiver that requires one)."""
    return trustme.CA()


@pytest.fixture
def ca_bundle(ca: trustme.CA, tmp_path: Path) -> str:
    """The receiver's CA as a PEM file."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(
    ca: trustme.CA,
    client_ca: Optional[trustme.CA] = None,
    version: Optional[ssl.TLSVersion] = None,
) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1.

    It requires a client certificate signed by ``client_ca`` when given, and speaks only
    ``version`` when given.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)
    if version is not None:
        context.minimum_version = context.maximum_version = version
    return context


@pytest.fixture
def tls_receiver(ca: trustme.CA) -> Iterator[TLSReceiver]:
    """An HTTPS receiver with a certificate from ``ca`` (unknown to the system)."""
    with TLSReceiver(server_context(ca)) as receiver:
        yield receiver


# What the client reads when it has no certificate to show: in TLS 1.2 the server refuses
# during the handshake; in TLS 1.3 the client's part of the handshake is over by then and
# the refusal (an alert) comes as the answer to its request.
REFUSALS = {
    ssl.TLSVersion.TLSv1_2: "TLS error: SSLV3_ALERT_HANDSHAKE_FAILURE",
    ssl.TLSVersion.TLSv1_3: "TLS error: TLSV13_ALERT_CERTIFICATE_REQUIRED",
}


@pytest.fixture(params=list(REFUSALS), ids=["TLS 1.2", "TLS 1.3"])
def mtls_receiver(
    request: pytest.FixtureRequest, ca: trustme.CA, client_ca: trustme.CA
) -> Iterator[TLSReceiver]:
    """An HTTPS receiver that requires a client certificate signed by ``client_ca``."""
    with TLSReceiver(server_context(ca, client_ca, request.param)) as receiver:
        receiver.refusal = REFUSALS[request.param]
        yield receiver


def deliver(hub: WebhooksEmitter, config: Config) -> DeliveryResult:
    """Attach ``config``, emit one event and return its DeliveryResult."""
    results = Results()
    hub.attach("tls", "e", attrs.evolve(config, on_delivery=results))
    hub.emit("e", {"secure": True})
    result: DeliveryResult = results.next()
    return result


def test_unknown_ca_fails_each_try_with_a_tls_error(
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    tls_receiver: TLSReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A certificate from a CA the client does not trust fails every try (TLS errors are retried).

    The receiver saw one aborted handshake per try and no request.
    """
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    result = deliver(hub, fast(tls_receiver.url, max_attempts=3))
    assert (result.delivered, result.attempts, result.status_code) == (False, 3, None)
    assert (
        result.error
        == "TLS error: CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate"
    )
    handshakes = tls_receiver.wait_handshakes(3)
    assert len(handshakes) == 3 and None not in handshakes
    assert tls_receiver.bodies == []


def test_ca_bundle_makes_the_receiver_trusted(
    hub: WebhooksEmitter, fast: Callable[..., Config], tls_receiver: TLSReceiver, ca_bundle: str
) -> None:
    """With ca_bundle naming the receiver's CA, the delivery succeeds in one try."""
    result = deliver(hub, fast(tls_receiver.url, ca_bundle=ca_bundle))
    assert (result.delivered, result.attempts, result.status_code) == (True, 1, 204)
    assert tls_receiver.bodies == [b'{"secure":true}']


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_insecure_skips_verification(
    hub: WebhooksEmitter, fast: Callable[..., Config], tls_receiver: TLSReceiver
) -> None:
    """insecure=True delivers to a receiver whose CA is unknown."""
    result = deliver(hub, fast(tls_receiver.url, insecure=True))
    assert (result.delivered, result.attempts) == (True, 1)
    assert tls_receiver.bodies == [b'{"secure":true}']


def test_a_certificate_for_another_name_fails(
    hub: WebhooksEmitter, fast: Callable[..., Config], ca: trustme.CA, ca_bundle: str
) -> None:
    """A trusted certificate that does not name 127.0.0.1 is refused (hostname checking is on)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("hooks.example").configure_cert(context)
    with TLSReceiver(context) as receiver:
        result = deliver(hub, fast(receiver.url, ca_bundle=ca_bundle, max_attempts=1))
        assert (result.delivered, result.attempts) == (False, 1)
        assert result.error == (
            "TLS error: CERTIFICATE_VERIFY_FAILED: "
            "IP address mismatch, certificate is not valid for '127.0.0.1'."
        )
        assert receiver.bodies == []


def client_files(client_ca: trustme.CA, tmp_path: Path) -> tuple[str, tuple[str, str]]:
    """A client certificate as one PEM (key and chain) and as a (cert, key) pair of files."""
    leaf = client_ca.issue_cert("client.example")
    single = tmp_path / "client.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(single))
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    for blob in leaf.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    leaf.private_key_pem.write_to_path(str(key))
    return str(single), (str(cert), str(key))


@pytest.mark.parametrize("form", ["single PEM", "(cert, key) pair"])
def test_client_certificate_is_presented(
    form: str,
    hub: WebhooksEmitter,
    fast: Callable[..., Config],
    mtls_receiver: TLSReceiver,
    ca_bundle: str,
    client_ca: trustme.CA,
    tmp_path: Path,
) -> None:
    """A receiver that requires a client certificate accepts client_cert in either form."""
    single, pair = client_files(client_ca, tmp_path)
    client_cert = single if form == "single PEM" else pair
    result = deliver(hub, fast(mtls_receiver.url, ca_bundle=ca_bundle, client_cert=client_cert))
    assert (result.delivered, result.attempts, result.status_code) == (True, 1, 204)
    assert mtls_receiver.peer_subjects == [(("DNS", "client.example"),)]


def test_missing_client_certificate_is_refused(
    hub: WebhooksEmitter, fast: Callable[..., Config], mtls_receiver: TLSReceiver, ca_bundle: str
) -> None:
    """Without client_cert the receiver refuses the handshake: a TLS error on every try."""
    result = deliver(hub, fast(mtls_receiver.url, ca_bundle=ca_bundle, max_attempts=2))
    assert (result.delivered, result.attempts, result.status_code) == (False, 2, None)
    assert result.error == mtls_receiver.refusal
    handshakes = mtls_receiver.wait_handshakes(2)
    assert None not in handshakes
    assert mtls_receiver.bodies == []


def test_trickled_tls_handshake_is_bounded_by_request_timeout(
    hub: WebhooksEmitter, fast: Callable[..., Config], ca_bundle: str
) -> None:
    """A server that answers the ClientHello with a TLS record trickled a byte at a time.

    Each byte comes well within the socket timeout, yet the try ends at request_timeout:
    the handshake is bounded as a whole, like the rest of the try.
    """

    def trickle_handshake(conn: Conn) -> None:
        if conn.wait_readable() and conn.send(b"\x16\x03\x03\x40\x00"):  # a 16 KiB record...
            conn.trickle_forever(b"\x02")  # ...that never ends

    with FaultServer(trickle_handshake) as server:
        url = f"https://127.0.0.1:{server.port}/hooks"
        result = deliver(hub, fast(url, ca_bundle=ca_bundle, request_timeout=0.5, max_attempts=2))
        assert (result.delivered, result.attempts, result.status_code) == (False, 2, None)
        assert result.error == "timed out after 0.5 s"
        assert result.elapsed < 5
        assert server.connections == 2


def test_tls_try_is_bounded_by_request_timeout(
    hub: WebhooksEmitter, fast: Callable[..., Config], ca_bundle: str
) -> None:
    """A server that accepts TCP but never answers the TLS handshake fails the try in time."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        url = f"https://127.0.0.1:{listener.getsockname()[1]}/hooks"
        result = deliver(hub, fast(url, ca_bundle=ca_bundle, request_timeout=0.5, max_attempts=2))
        assert (result.delivered, result.attempts) == (False, 2)
        assert result.error == "timed out after 0.5 s"
        assert result.elapsed < 5
    finally:
        listener.close()
