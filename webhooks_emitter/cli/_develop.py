"""``demo``, ``send``, ``listen`` and ``verify``: try webhooks from the shell, no store needed.

``demo`` is written as an example to read: it uses only the public API.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, NoReturn, Optional, Union

import attrs

import webhooks_emitter

from .. import signing
from .._config import Config, DeliveryResult
from .._hub import WebhooksEmitter
from .._signals import on_stop_signals
from .._validate import integer_arg
from ..exceptions import InvalidSignatureError
from ..testing import ReceivedRequest, Receiver, Response, fail_first
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    FORMATTER,
    PROG,
    SECRET_ENV,
    Console,
    Stop,
    UsageError,
    configure_logging,
    shown,
    tries,
    usage_message,
)

__all__ = ["DEMO_EVENTS", "DEMO_SECRET", "add_commands"]


# -- argument types and shared options ------------------------------------------------------


def _header_arg(text: str) -> tuple[str, str]:
    """Parse ``'Name: value'`` (an argparse ``type``)."""
    name, colon, value = text.partition(":")
    name = name.strip()
    if not colon or not name or any(c.isspace() for c in name):
        # The text is not repeated: "Authorization Bearer ..." without its colon is a secret.
        raise argparse.ArgumentTypeError(
            "expected 'Name: value' (a header name without spaces, a colon, then the value)"
        )
    return name, value.strip()


_non_negative_int = integer_arg(minimum=0)


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number (0 to 65535), got {value}")
    return value


def _secret(args: argparse.Namespace, scheme: signing.Scheme) -> Optional[signing.SecretType]:
    """The ``--secret`` values (or ``$WEBHOOKS_EMITTER_SECRET``), checked for ``scheme``."""
    secrets: list[str] = args.secret or (
        [os.environ[SECRET_ENV]] if os.environ.get(SECRET_ENV) else []
    )
    if not secrets:
        return None
    secret: signing.SecretType = secrets[0] if len(secrets) == 1 else secrets
    try:
        scheme.check_secret(secret)
    except (TypeError, ValueError) as exc:
        raise UsageError(usage_message(exc)) from None
    return secret


def _add_signing_options(parser: argparse.ArgumentParser, *, secret_help: str) -> None:
    parser.add_argument(
        "--secret",
        action="append",
        metavar="S",
        help=f"{secret_help}; repeat it while rotating keys, newest first "
        f"(default: ${SECRET_ENV}, which keeps it out of the process list)",
    )
    parser.add_argument(
        "--scheme",
        type=str.lower,
        choices=sorted(signing.SCHEMES),
        default=signing.WEBHOOKS_EMITTER.name,
        help="the signing scheme (default: %(default)s)",
    )
    parser.add_argument(
        "--header-identifier",
        default="Webhooks",
        metavar="ID",
        help="the <ID> in the X-<ID>-Event, -Delivery and -Signature header names "
        "(default: %(default)s)",
    )


# -- demo -------------------------------------------------------------------------------------

#: What the demo emits, in order. Decimal and datetime values show the JSON-safe encoding.
DEMO_EVENTS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "order.created",
        {"order": 1001, "customer": "c-42", "total": Decimal("59.90"), "currency": "EUR"},
    ),
    ("order.paid", {"order": 1001, "amount": Decimal("59.90"), "method": "card"}),
    ("customer.updated", {"customer": "c-42", "email": "ada@example.com"}),
    ("order.shipped", {"order": 1001, "carrier": "DHL", "tracking": "JD014600003SE"}),
    ("order.refunded", {"order": 1001, "amount": Decimal("59.90"), "reason": "damaged"}),
)
DEMO_SECRET = "demo-secret"


def _demo(args: argparse.Namespace) -> int:
    """Two emitters, two receivers on 127.0.0.1, signed deliveries and retries, then a summary.

    This function is written as an example to read: it uses only the public API.
    """
    configure_logging(args.verbose)
    out = Console()
    started = time.monotonic()

    def clock() -> str:
        return f"+{(time.monotonic() - started) * 1000:5.0f} ms"

    def receiving(
        emitter_id: str, responder: Callable[[ReceivedRequest], Response]
    ) -> Callable[[ReceivedRequest], Response]:
        """Wrap a receiver's responder so that each try is printed as it is answered."""

        def respond(request: ReceivedRequest) -> Response:
            answer = responder(request)
            status = answer if isinstance(answer, int) else answer[0]
            verdict = (
                "signature valid"
                if request.signature_valid
                else f"signature INVALID: {request.signature_error}"
            )
            delivery = shown(request.delivery_id)[:8]  # short ids keep the lines readable
            out.say(
                f"{clock()}  {emitter_id:<8} {shown(request.event):<17} {delivery}"
                f"  try {request.try_number} answered {status}  ({verdict})"
            )
            return answer

        return respond

    results: list[DeliveryResult] = []

    def report(result: DeliveryResult) -> None:
        """``Config.on_delivery``: called in the emitter's thread with each event's outcome."""
        results.append(result)
        if result.delivered:
            outcome = f"DELIVERED after {tries(result.attempts)} (HTTP {result.status_code})"
        else:
            outcome = f"GIVEN UP after {tries(result.attempts)}: {result.error}"
        out.say(
            f"{clock()}  {result.emitter_id:<8} {result.event:<17} {result.request_id[:8]}"
            f"  {outcome} in {result.elapsed * 1000:.0f} ms"
        )

    # Two endpoints on 127.0.0.1 (free ports) that check every signature with the shared
    # secret: a healthy one, and a flaky one that answers 500 to the first 2 tries of
    # each delivery (testing.fail_first), so its emitter has to retry.
    healthy = Receiver(secret=DEMO_SECRET, responder=receiving("billing", lambda request: 204))
    flaky = Receiver(secret=DEMO_SECRET, responder=receiving("crm", fail_first(2)))

    with healthy, flaky:
        # One Config, and a variant of it for the second endpoint. The backoffs are in
        # milliseconds so that the demo takes a couple of seconds; the defaults (1 s,
        # doubling up to 60 s) suit real receivers.
        config = Config(
            healthy.url,
            secret=DEMO_SECRET,
            max_attempts=3,
            backoff_start=0.05,
            backoff_limit=0.2,
            on_delivery=report,
        )
        billing_events = ["order.created", "order.paid", "order.refunded"]
        out.say(
            "webhooks_emitter demo: every request signed, every signature checked at the receiver",
            f"  billing  gets {', '.join(billing_events)} -> {healthy.url} (answers 204)",
            f"  crm      gets every event ('*') -> {flaky.url} (answers 500 to the first 2 tries)",
            "",
        )
        try:
            webhooks_emitter.attach_many("billing", billing_events, config)
            webhooks_emitter.attach("crm", "*", attrs.evolve(config, url=flaky.url))

            # emit() returns at once: each emitter's own thread delivers, in order.
            for event, payload in DEMO_EVENTS:
                payload = {**payload, "at": datetime.datetime.now(datetime.timezone.utc)}
                webhooks_emitter.emit(event, payload)

            # Wait until every event is delivered or given up (and reported).
            finished = webhooks_emitter.flush(timeout=10)
            stats = [webhooks_emitter.stats(emitter_id) for emitter_id in ("billing", "crm")]
        finally:
            webhooks_emitter.shutdown(timeout=0)

        requests = healthy.requests + flaky.requests
        passed = sum(request.signature_valid for request in requests)
        delivered = sum(s.delivered for s in stats)
        given_up = sum(s.given_up for s in stats)
        retried = sum(result.attempts > 1 for result in results)
        retries = sum(s.retries for s in stats)
        out.say(
            "",
            f"summary: delivered {delivered}, retried {retried} ({retries} retries), "
            f"given up {given_up}, signature checks passed {passed}/{len(requests)}, "
            f"in {time.monotonic() - started:.1f} s",
        )
    if not finished:
        print(f"{PROG} demo: error: deliveries were still pending after 10 s", file=sys.stderr)
    ok = finished and given_up == 0 and passed == len(requests)
    return EXIT_OK if ok else EXIT_FAILED


# -- send -------------------------------------------------------------------------------------


_JSON_TYPES = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _load_data(text: str) -> dict[str, Any]:
    """The ``--data`` payload: JSON, ``@file`` or ``@-`` (standard input); a JSON object."""
    source = "--data"
    raw: Union[str, bytes] = text
    if text.startswith("@"):
        path = text[1:]
        source = f"--data file {path!r}" if path != "-" else "--data from standard input"
        try:
            if path == "-":
                raw = sys.stdin.buffer.read()
            else:
                with open(path, "rb") as file:
                    raw = file.read()
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None

    def reject(constant: str) -> NoReturn:
        raise ValueError(f"{constant} is not allowed in strict JSON")

    try:
        payload = json.loads(raw, parse_constant=reject)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting
        raise UsageError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise UsageError(f"{source} must be a JSON object, got {_JSON_TYPES[type(payload)]}")
    return payload


def _send(args: argparse.Namespace) -> int:
    """Deliver one event through a private WebhooksEmitter and report its DeliveryResult."""
    payload = _load_data(args.data)
    scheme = signing.SCHEMES[args.scheme]
    secret = _secret(args, scheme)
    outcome: list[DeliveryResult] = []
    done = threading.Event()

    def on_delivery(result: DeliveryResult) -> None:
        outcome.append(result)
        done.set()

    backoff_limit = (
        args.backoff_limit if args.backoff_limit is not None else max(60.0, args.backoff)
    )
    try:
        config = Config(
            args.url,
            secret=secret,
            signature_scheme=scheme,
            header_identifier=args.header_identifier,
            max_attempts=args.max_attempts,
            request_timeout=args.timeout,
            backoff_start=args.backoff,
            backoff_limit=backoff_limit,
            additional_headers=args.header or (),
            insecure=args.insecure,
            # One delivery wants an outcome: a 410 fails the try like any other answer
            # instead of pausing the emitter (which would leave this command waiting).
            pause_on_gone=False,
            on_delivery=on_delivery,
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(usage_message(exc)) from None

    configure_logging(args.verbose)
    hub = WebhooksEmitter(exit_timeout=0)
    try:
        try:
            hub.attach("cli", args.event, config)
            hub.emit(args.event, payload, args.request_id)
        except (TypeError, ValueError) as exc:
            raise UsageError(usage_message(exc)) from None
        # Every try is bounded by --timeout, so this ends; the short waits keep Ctrl-C
        # responsive on every platform.
        while not done.wait(0.2):
            pass
    finally:
        hub.shutdown(timeout=0)

    [result] = outcome
    out = Console()
    if args.json:
        out.say(json.dumps(attrs.asdict(result)))
    else:
        what = f"{result.event} (delivery {result.request_id})"
        took = f"{result.elapsed * 1000:.0f} ms"
        made = tries(result.attempts)
        if result.delivered:
            out.say(f"delivered {what} in {made}: HTTP {result.status_code}, {took}")
        else:
            out.say(f"given up {what} after {made}: {result.error}, {took}")
    return EXIT_OK if result.delivered else EXIT_FAILED


# -- listen -----------------------------------------------------------------------------------


def _raise_stop(signum: int) -> None:
    raise Stop(signal.Signals(signum).name)


def _listen(args: argparse.Namespace) -> int:
    """A development receiver: print each request as it comes, until SIGINT or SIGTERM."""
    scheme = signing.SCHEMES[args.scheme]
    secret = _secret(args, scheme)
    out = Console()

    def respond(request: ReceivedRequest) -> Response:
        status = 500 if request.try_number <= args.fail_first else 204
        if secret is None:
            verdict = ""
        elif request.signature_valid:
            verdict = "  signature valid"
        else:
            verdict = f"  signature invalid: {shown(request.signature_error)}"
            if not args.accept_invalid:
                status = 401  # as a receiver must: the sender sees its request refused
        body = request.body.decode("utf-8", "replace") if request.body else "(empty body)"
        now = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
        out.say(
            f"{now}  {shown(request.method)} {shown(request.path)}  event {shown(request.event)}"
            f"  delivery {shown(request.delivery_id)}  try {request.try_number}"
            f"  answered {status}{verdict}",
            shown(body, body=True),
        )
        return status

    try:
        receiver = Receiver(
            args.host,
            args.port,
            secret=secret,
            scheme=scheme,
            header_identifier=args.header_identifier,
            responder=respond,
        )
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None
    try:
        with on_stop_signals(_raise_stop, repeat="ignore"):
            try:
                receiver.start()
                if secret is None:
                    checking = "no --secret: signatures are not checked"
                elif args.accept_invalid:
                    checking = f"checking {scheme.name} signatures (invalid ones accepted)"
                else:
                    checking = f"checking {scheme.name} signatures (401 to invalid ones)"
                out.say(f"listening on {receiver.url} (any path; Ctrl-C to stop)", checking)
                if args.fail_first:
                    tries = "try" if args.fail_first == 1 else f"{args.fail_first} tries"
                    out.say(f"answering 500 to the first {tries} of each delivery")
                # Short sleeps: a signal caught by another thread, or a broken pipe, is
                # noticed within half a second even where it cannot interrupt the sleep.
                while not out.broken:
                    time.sleep(0.5)
            except Stop:
                pass
    finally:
        receiver.stop()
    return EXIT_FAILED if out.broken else EXIT_OK


# -- verify -----------------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> int:
    """Check one request's signature: print ``valid`` or ``invalid: why``."""
    scheme = signing.SCHEMES[args.scheme]
    secret = _secret(args, scheme)
    if secret is None:
        raise UsageError(f"a secret is needed: give --secret or set ${SECRET_ENV}")
    headers = dict(args.header)
    try:
        if args.body_file is not None:
            with open(args.body_file, "rb") as file:
                body = file.read()
        else:
            if sys.stdin.isatty():
                print("reading the body from standard input (end it with Ctrl-D)", file=sys.stderr)
            body = sys.stdin.buffer.read()
    except OSError as exc:
        raise UsageError(
            f"cannot read --body-file {args.body_file!r}: {exc.strerror or exc}"
        ) from None
    out = Console()
    try:
        webhooks_emitter.verify(
            body,
            headers,
            secret,
            scheme=scheme,
            header_identifier=args.header_identifier,
            tolerance=args.tolerance,
        )
    except InvalidSignatureError as exc:
        out.say(f"invalid: {exc}")
        return EXIT_FAILED
    except (TypeError, ValueError) as exc:
        raise UsageError(usage_message(exc)) from None
    out.say("valid")
    return EXIT_OK




# -- the parsers ------------------------------------------------------------------------------


def add_commands(commands: Any, verbose: argparse.ArgumentParser) -> None:
    """Add ``demo``, ``send``, ``listen`` and ``verify`` to ``commands`` (the subparsers
    action of the main parser); ``verbose`` is the parent parser of ``-v``."""
    demo = commands.add_parser(
        "demo",
        parents=[verbose],
        formatter_class=FORMATTER,
        help="watch signed deliveries and retries between emitters and receivers on 127.0.0.1",
        description=(
            "Start two receivers on 127.0.0.1 that verify every signature, attach two emitters\n"
            "(billing: healthy; crm: its receiver answers 500 to the first 2 tries of each\n"
            "delivery), emit a few sample events and print each try and each outcome as it\n"
            "happens, then a summary. Ends by itself in a couple of seconds."
        ),
        epilog=(
            f"Example:\n  {PROG} demo\n\n"
            "Exit status 0 when every event was delivered with a valid signature."
        ),
    )
    demo.set_defaults(run=_demo)

    send = commands.add_parser(
        "send",
        parents=[verbose],
        formatter_class=FORMATTER,
        help="deliver one event to a URL (signed, with retries) and print the outcome",
        description=(
            "Deliver one event to URL through the library's engine (the same request, signing,\n"
            "retries and timeouts as an attached emitter) and print what became of it."
        ),
        epilog=(
            "Examples:\n"
            f"  {PROG} send http://127.0.0.1:8080/hooks --event order.paid \\\n"
            "      --data '{\"order\": 1}'\n"
            f"  {PROG} send https://hooks.example.com/in --event order.paid \\\n"
            "      --data @order.json --secret s3cret --scheme github \\\n"
            "      --header 'Authorization: Bearer t0ken' --json\n\n"
            "Exit status: 0 delivered, 1 given up after the last try, 2 bad arguments."
        ),
    )
    send.add_argument("url", metavar="URL", help="the http or https endpoint to POST to")
    send.add_argument(
        "--event", required=True, metavar="NAME", help="the event name (X-<ID>-Event)"
    )
    send.add_argument(
        "--data",
        default="{}",
        metavar="JSON",
        help="the payload: a JSON object, @FILE to read it from a file, @- from standard input "
        "(default: {})",
    )
    _add_signing_options(send, secret_help="sign the request with this secret")
    send.add_argument(
        "--header",
        action="append",
        type=_header_arg,
        metavar="'NAME: VALUE'",
        help="an additional request header; repeatable",
    )
    send.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        metavar="N",
        help="tries in all (default: %(default)s)",
    )
    send.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="the most one try may take, answer included (default: %(default)s)",
    )
    send.add_argument(
        "--backoff",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="the wait before the first retry, doubling after each (default: %(default)s)",
    )
    send.add_argument(
        "--backoff-limit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the longest wait between two tries (default: 60, or --backoff if larger)",
    )
    send.add_argument(
        "--request-id", metavar="ID", help="the delivery id to send (default: a new UUID)"
    )
    send.add_argument("--insecure", action="store_true", help="skip TLS certificate verification")
    send.add_argument(
        "--json", action="store_true", help="print the DeliveryResult as one JSON object"
    )
    send.set_defaults(run=_send)

    listen = commands.add_parser(
        "listen",
        formatter_class=FORMATTER,
        help="a development receiver that prints every webhook it gets",
        description=(
            "Receive webhooks on any path and print, for each request, a line with its event,\n"
            "delivery id, try number, answer and signature verdict, then its body. With --secret\n"
            "a request whose signature does not verify is answered 401 (--accept-invalid: 2xx\n"
            "all the same). The first line printed is the URL listened on. Ctrl-C or SIGTERM\n"
            "stops it (exit status 0)."
        ),
        epilog=(
            "Example (--fail-first 2 answers 500 twice per delivery, to watch the retries):\n"
            f"  {PROG} listen --port 8080 --secret s3cret --fail-first 2\n"
            f"  {PROG} send http://127.0.0.1:8080/hooks --secret s3cret --event order.paid \\\n"
            "      --backoff 0.2     # in another terminal"
        ),
    )
    listen.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default: %(default)s)"
    )
    listen.add_argument(
        "--port",
        type=_port,
        default=8080,
        help="the port, 0 for any free one (default: %(default)s)",
    )
    _add_signing_options(listen, secret_help="verify each request's signature with this secret")
    listen.add_argument(
        "--accept-invalid",
        action="store_true",
        help="with --secret, answer a request whose signature does not verify as any other "
        "(2xx) instead of 401; the verdict is still printed",
    )
    listen.add_argument(
        "--fail-first",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="answer 500 to the first N tries of each delivery (default: %(default)s)",
    )
    listen.set_defaults(run=_listen)

    verify = commands.add_parser(
        "verify",
        formatter_class=FORMATTER,
        help="check one webhook's signature",
        description=(
            "Check that the headers sign the body (read from --body-file or standard input, byte\n"
            "for byte) with the secret. Prints 'valid', or 'invalid: ' and why."
        ),
        epilog=(
            "Example (printf, not echo: a trailing newline would change the body):\n"
            f"  printf '%s' '{{\"order\":1}}' | {PROG} verify --secret s3cret \\\n"
            "      --header 'X-Webhooks-Signature: sha256:3b0n...'\n\n"
            "Exit status: 0 valid, 1 invalid, 2 bad arguments."
        ),
    )
    _add_signing_options(verify, secret_help="the secret to check with (required)")
    verify.add_argument(
        "--header",
        action="append",
        type=_header_arg,
        required=True,
        metavar="'NAME: VALUE'",
        help="a request header; repeat for each (the signature headers at least)",
    )
    verify.add_argument(
        "--body-file", metavar="FILE", help="the raw body (default: standard input)"
    )
    verify.add_argument(
        "--tolerance",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="for standard_webhooks, the most the timestamp may be from now (default: %(default)s)",
    )
    verify.set_defaults(run=_verify)
