"""The command line, run as a real subprocess: demo, send, listen and verify, exit codes, errors.

Processes are synchronised by reading their output line by line (in a thread, so that every
wait has a timeout), never by sleeping. Argument errors, which never reach the network, are
also checked in-process through ``cli.main`` (a subprocess costs half a second of start-up).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional

import attrs
import pytest
from child_output import Lines

from webhooks_emitter import DeliveryResult, __version__, cli, signing
from webhooks_emitter.testing import Receiver

WAIT = 20.0  # generous: the machine may be busy; every wait ends as soon as its line comes
SECRET = "s3cret"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def child_env() -> dict[str, str]:
    """The environment for the CLI: no secret, no proxy and no unbuffered mode inherited.

    Without PYTHONUNBUFFERED, a line shows up in the pipe only if the CLI flushes it.
    """
    drop = {"WEBHOOKS_EMITTER_SECRET", "PYTHONUNBUFFERED"}
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in drop and not key.lower().endswith("_proxy")
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def run_cli(*args: str, stdin: Optional[str] = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m webhooks_emitter ARGS`` to its end and return what it did."""
    return subprocess.run(
        [sys.executable, "-m", "webhooks_emitter", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=child_env(),
        timeout=60,
        check=False,
    )


class Listener:
    """A running ``webhooks-emitter listen --port 0 ...`` and the URL it printed first."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "webhooks_emitter", "listen", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=child_env(),
        )
        assert self.process.stdout is not None
        self.lines = Lines(self.process.stdout)
        first = self.lines.next()
        found = re.match(r"listening on (http://127\.0\.0\.1:\d+/\S*) ", first)
        assert found, first
        self.url = found.group(1)

    def stop(self, signum: int) -> tuple[int, str]:
        """Send ``signum``; return the exit status and what went to standard error."""
        self.process.send_signal(signum)
        status = self.process.wait(timeout=WAIT)
        assert self.process.stderr is not None
        return status, self.process.stderr.read()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def listener() -> Iterator[Callable[..., Listener]]:
    """Start listeners with ``listener(*args)``; any still running is killed afterwards."""
    started: list[Listener] = []

    def start(*args: str) -> Listener:
        started.append(Listener(*args))
        return started[-1]

    yield start
    for each in started:
        each.kill()


def request_line(lines: Lines) -> str:
    """Skip the listener's header lines; return the next request line (the body follows)."""
    while True:
        line = lines.next()
        if " event " in line:
            return line


# -- demo -------------------------------------------------------------------------------------


def test_demo_delivers_every_event_and_sums_up() -> None:
    """``demo`` ends by itself with 0; it prints every try and outcome and a summary that adds up.

    billing gets 3 of the 5 sample events and delivers each at the first try; crm gets all 5
    and its receiver fails the first 2 tries of each: 8 delivered, 5 retried (10 retries),
    18 requests, every signature valid.
    """
    done = run_cli("demo")

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    summary = re.search(
        r"summary: delivered (\d+), retried (\d+) \((\d+) retries\), given up (\d+), "
        r"signature checks passed (\d+)/(\d+)",
        done.stdout,
    )
    assert summary, done.stdout
    assert [int(n) for n in summary.groups()] == [8, 5, 10, 0, 18, 18]
    tries = re.findall(
        r"^\+ *\d+ ms  (\w+) +\S+ +\S{8}  try (\d) answered (\d+)  \((.*)\)$",
        done.stdout,
        re.MULTILINE,
    )
    assert len(tries) == 18
    assert {verdict for *_, verdict in tries} == {"signature valid"}
    assert sorted((who, n, status) for who, n, status, _ in tries if who == "crm") == sorted(
        [("crm", "1", "500"), ("crm", "2", "500"), ("crm", "3", "204")] * 5
    )
    outcome = r"^\+ *\d+ ms  (\w+) .* DELIVERED after (\d) tr"
    outcomes = re.findall(outcome, done.stdout, re.MULTILINE)
    assert sorted(outcomes) == sorted([("billing", "1")] * 3 + [("crm", "3")] * 5)


# -- listen and send --------------------------------------------------------------------------


def test_listen_prints_each_try_of_a_signed_send_and_stops_on_sigint(
    listener: Callable[..., Listener],
) -> None:
    """``listen --fail-first 2`` answers 500 twice; ``send`` retries and is delivered in 3 tries.

    Each try appears at once (flushed) as a line with event, delivery id, try, answer and a
    ``valid`` verdict (standard_webhooks signs each try anew), then the body. SIGINT ends the
    listener with 0 and nothing on standard error.
    """
    listening = listener("--secret", WHSEC, "--scheme", "standard_webhooks", "--fail-first", "2")

    sent = run_cli(
        "send",
        listening.url,
        "--event",
        "order.paid",
        "--data",
        '{"order": 1, "name": "Zoë"}',
        "--secret",
        WHSEC,
        "--scheme",
        "standard_webhooks",
        "--backoff",
        "0.01",
    )

    assert sent.returncode == 0, sent.stderr
    delivered = re.match(
        r"delivered order\.paid \(delivery (\S+)\) in 3 tries: HTTP 204, ", sent.stdout
    )
    assert delivered, sent.stdout
    delivery_id = delivered.group(1)
    for number, status in ((1, 500), (2, 500), (3, 204)):
        line = request_line(listening.lines)
        assert f"POST /hooks  event order.paid  delivery {delivery_id}  try {number}" in line
        assert line.endswith(f"answered {status}  signature valid"), line
        assert listening.lines.next() == '{"order":1,"name":"Zoë"}'
    assert listening.stop(signal.SIGINT) == (0, "")


def test_listen_answers_401_to_a_wrong_secret_and_stops_on_sigterm(
    listener: Callable[..., Listener],
) -> None:
    """A request signed with another secret is answered 401 and printed ``invalid: why``; the
    sender is told: ``send`` gives up with ``HTTP 401`` and exit status 1. SIGTERM ends the
    listener with 0."""
    listening = listener("--secret", SECRET, "--scheme", "github")
    assert listening.lines.next() == "checking github signatures (401 to invalid ones)"

    sent = run_cli(
        "send",
        listening.url,
        "--event",
        "user.created",
        "--secret",
        "not-the-secret",
        "--scheme",
        "github",
        "--max-attempts",
        "1",
    )

    assert sent.returncode == 1, sent.stderr
    assert re.match(r"given up user\.created \(delivery \S+\) after 1 try: HTTP 401, ", sent.stdout)
    line = request_line(listening.lines)
    assert "event user.created" in line
    assert line.endswith(
        "answered 401  signature invalid: no signature in X-Hub-Signature-256 matches the secret"
    ), line
    assert listening.lines.next() == "{}"
    assert listening.stop(signal.SIGTERM) == (0, "")


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "wrong secret"])
def test_listen_accept_invalid_answers_2xx_all_the_same(
    signed: bool, listener: Callable[..., Listener]
) -> None:
    """``--accept-invalid`` keeps the old behaviour: the verdict is printed, the answer is 204
    and ``send`` reports a delivery (exit status 0)."""
    listening = listener("--secret", SECRET, "--accept-invalid")
    assert listening.lines.next() == (
        "checking webhooks_emitter signatures (invalid ones accepted)"
    )
    secret = ["--secret", "not-the-secret"] if signed else []
    sent = run_cli("send", listening.url, "--event", "user.created", "--max-attempts", "1", *secret)

    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("delivered user.created"), sent.stdout
    line = request_line(listening.lines)
    assert " answered 204  signature invalid: " in line, line
    assert listening.stop(signal.SIGTERM) == (0, "")


def test_listen_without_a_secret_answers_2xx(listener: Callable[..., Listener]) -> None:
    """Without --secret nothing is checked: a signed request is answered 204, no verdict."""
    listening = listener()
    assert listening.lines.next() == "no --secret: signatures are not checked"
    sent = run_cli("send", listening.url, "--event", "e", "--secret", SECRET, "--max-attempts", "1")
    assert sent.returncode == 0, sent.stderr
    assert request_line(listening.lines).endswith("try 1  answered 204")
    assert listening.stop(signal.SIGINT) == (0, "")


# -- send -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 410])
def test_send_gives_up_after_max_attempts_and_exits_1(status: int) -> None:
    """A receiver that always fails gets exactly --max-attempts tries; ``send`` exits 1.

    410 included: ``send`` must not pause on it (it would then wait for ever).
    """
    with Receiver(responder=lambda request: status) as receiver:
        sent = run_cli(
            "send",
            receiver.url,
            "--event",
            "order.paid",
            "--max-attempts",
            "3",
            "--backoff",
            "0.001",
        )
        requests = receiver.requests

    assert sent.returncode == 1, sent.stderr
    given_up = rf"given up order\.paid \(delivery \S+\) after 3 tries: HTTP {status}, \d+ ms\n"
    assert re.fullmatch(given_up, sent.stdout), sent.stdout
    assert [r.try_number for r in requests] == [1, 2, 3]
    assert len({r.delivery_id for r in requests}) == 1
    assert sent.stderr == ""


def test_send_json_prints_the_delivery_result(tmp_path: Path) -> None:
    """``--json`` prints the DeliveryResult's fields; the request carries the file's data,
    the extra header, the given request id and a signature valid for the secret."""
    data = tmp_path / "order.json"
    data.write_text('{"order": 7, "note": "naïve"}', encoding="utf-8")
    with Receiver(secret=SECRET) as receiver:
        sent = run_cli(
            "send",
            receiver.url,
            "--event",
            "order.paid",
            "--data",
            f"@{data}",
            "--secret",
            SECRET,
            "--header",
            "X-Trace: abc 1",
            "--request-id",
            "req-42",
            "--json",
        )
        [request] = receiver.requests

    assert sent.returncode == 0, sent.stderr
    result = json.loads(sent.stdout)
    assert set(result) == {field.name for field in attrs.fields(DeliveryResult)}
    assert result["elapsed"] >= 0
    assert {k: v for k, v in result.items() if k != "elapsed"} == {
        "emitter_id": "cli",
        "event": "order.paid",
        "request_id": "req-42",
        "delivered": True,
        "attempts": 1,
        "status_code": 204,
        "error": None,
    }
    assert request.json() == {"order": 7, "note": "naïve"}
    assert request.header("X-Trace") == "abc 1"
    assert request.delivery_id == "req-42" and request.event == "order.paid"
    assert request.signature_valid, request.signature_error
    assert SECRET not in sent.stdout


# -- verify -----------------------------------------------------------------------------------


def test_verify_accepts_a_valid_signature_from_stdin() -> None:
    """``verify`` prints ``valid`` and exits 0 for headers that sign the body read from stdin."""
    body = '{"order":1}'
    scheme = signing.STANDARD_WEBHOOKS
    headers = signing.sign(body.encode(), WHSEC, delivery_id="d-1", scheme=scheme)
    args = [arg for name, value in headers.items() for arg in ("--header", f"{name}: {value}")]

    checked = run_cli("verify", "--secret", WHSEC, "--scheme", scheme.name, *args, stdin=body)

    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "valid\n", "")


def test_verify_rejects_a_changed_body_from_a_file(tmp_path: Path) -> None:
    """A body that differs by one byte from the signed one prints ``invalid: why``, exit 1."""
    [(name, value)] = signing.sign(b'{"order":1}', SECRET, delivery_id="d-1").items()
    body = tmp_path / "body"
    body.write_bytes(b'{"order":2}')

    checked = run_cli(
        "verify", "--secret", SECRET, "--header", f"{name}: {value}", "--body-file", str(body)
    )

    assert checked.returncode == 1, checked.stderr
    assert checked.stdout == "invalid: no signature in X-Webhooks-Signature matches the secret\n"


# -- bad arguments ----------------------------------------------------------------------------


def test_bad_json_exits_2_with_one_line_and_no_traceback() -> None:
    """A bad --data fails before any request: exit 2, one line on stderr, nothing on stdout."""
    done = run_cli("send", "http://127.0.0.1:9/hooks", "--event", "e", "--data", "{oops")

    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("webhooks-emitter send: error: --data is not valid JSON: ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_console_script_reports_a_bad_url() -> None:
    """The installed ``webhooks-emitter`` script runs the CLI: a bad URL exits 2 with one line."""
    script = shutil.which("webhooks-emitter", path=os.path.dirname(sys.executable))
    assert script, "the console script is not installed next to the interpreter"

    done = subprocess.run(
        [script, "send", "ftp://example.com/", "--event", "e"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
        check=False,
    )

    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "webhooks-emitter send: error: URL must be an http or https URL, got 'ftp://example.com/'\n"
    )


def call(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``cli.main(argv)`` in-process; return its exit status, stdout and stderr."""
    try:
        status = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors and --help
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


URL = "http://127.0.0.1:9/hooks"
SEND = ["send", URL, "--event", "e"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["send", "not a url", "--event", "e"], "URL must not contain whitespace"),
        ([*SEND, "--data", "[1, 2]"], "--data must be a JSON object, got an array"),
        ([*SEND, "--data", '{"x": NaN}'], "NaN is not allowed"),
        ([*SEND, "--data", "[" * 100_000], "--data is not valid JSON: maximum recursion"),
        ([*SEND, "--data", "@/nonexistent/x.json"], "cannot read --data file"),
        ([*SEND, "--header", "no colon"], "expected 'Name: value'"),
        ([*SEND, "--header", "X-Webhooks-Event: x"], "--header may not replace"),
        ([*SEND, "--max-attempts", "0"], "--max-attempts must be >= 1"),
        ([*SEND, "--timeout", "0"], "--timeout must be a finite number > 0"),
        ([*SEND, "--backoff", "2", "--backoff-limit", "1"], "--backoff-limit (1"),
        ([*SEND, "--scheme", "md5"], "invalid choice: 'md5'"),
        (["send", URL, "--event", ""], "--event must not be empty"),
        (["send", URL], "required: --event"),
        (["listen", "--port", "70000"], "must be a port number"),
        (["listen", "--fail-first", "-1"], "must be >= 0"),
        (
            ["verify", "--header", "X-Webhooks-Signature: x", "--body-file", "/dev/null"],
            "a secret is needed",
        ),
        (
            ["verify", "--secret", SECRET, "--header", "X: y", "--body-file", "/nonexistent"],
            "cannot read --body-file",
        ),
        (
            [
                "verify",
                "--secret",
                "pass word!",
                "--scheme",
                "standard_webhooks",
                "--header",
                "X: y",
            ],
            "--secret for STANDARD_WEBHOOKS",
        ),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every bad argument is one ``webhooks-emitter ...: error: ...`` line and exit status 2;
    a secret given on the command line is never repeated in the message."""
    status, out, err = call(argv, capsys)

    assert (status, out) == (2, ""), err
    assert err.startswith("webhooks-emitter") and ": error: " in err, err
    assert err.count("\n") == 1, err
    assert message in err, err
    assert "pass word!" not in err


@pytest.mark.parametrize("command", ["demo", "send", "listen", "verify"])
def test_each_command_has_help_with_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``<command> --help`` exits 0 and shows its usage, its options and an example."""
    status, out, _ = call([command, "--help"], capsys)

    assert status == 0
    assert out.startswith(f"usage: webhooks-emitter {command}")
    _, example = out.split("Example", 1)
    assert re.search(rf"webhooks-emitter {command}\b", example), example
    expected = {
        "demo": "--verbose",
        "send": "--max-attempts",
        "listen": "--fail-first",
        "verify": "--body-file",
    }[command]
    assert expected in out


def test_verify_reads_the_secret_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --secret, ``verify`` checks with $WEBHOOKS_EMITTER_SECRET (kept out of ``ps``)."""
    body = tmp_path / "body"
    body.write_bytes(b'{"order":1}')
    [(name, value)] = signing.sign(body.read_bytes(), SECRET, delivery_id="d").items()
    monkeypatch.setenv("WEBHOOKS_EMITTER_SECRET", SECRET)

    status, out, err = call(
        ["verify", "--header", f"{name}: {value}", "--body-file", str(body)], capsys
    )

    assert (status, out, err) == (0, "valid\n", "")


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    """``--version`` prints the installed package's version."""
    status, out, _ = call(["--version"], capsys)

    assert (status, out) == (0, f"webhooks-emitter {__version__}\n")
