"""Credentials never show: URL and proxy passwords, credential headers, in every text made.

Each table below pairs a way of configuring an emitter with the credential it carries; the
tests look for that credential in every text the library makes from it: the ``repr`` of
the ``Config``, exception messages and their tracebacks, log records (the library's and
urllib3's, at DEBUG), ``DeliveryResult`` and the command line's output.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any, Callable

import attrs
import pytest
from faultservers import Results, closed_port

from webhooks_emitter import Config, DeliveryResult, WebhooksEmitter, cli
from webhooks_emitter.testing import Receiver

PASSWORD = "Pw9f3kqLm"  # a URL or proxy password
TOKEN = "tok7hz2xQv"  # a header value
# A password that urllib's parser cuts in two (at "/", "?" or "#"): neither half may show.
HALVES = ("Hx4r8Wq", "Zy6t1Np")


def leaks(text: str, *secrets: str) -> list[str]:
    """The secrets (or halves of them) that ``text`` shows."""
    return [secret for secret in secrets if secret in text]


def rendered(exc: BaseException) -> str:
    """An exception as every tool shows it: message, repr, and the traceback with its chain."""
    return "\n".join(
        [str(exc), repr(exc), *traceback.format_exception(type(exc), exc, exc.__traceback__)]
    )


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``cli.main(argv)`` in-process; return its exit status, stdout and stderr."""
    try:
        status = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


# -- exceptions: a URL with a password that is refused ----------------------------------------

# (URL, the texts that must not appear)
BAD_URLS = {
    "NFKC host (urllib quotes the netloc)": (
        f"https://hook:{PASSWORD}@exa\u2100mple.com/",
        (PASSWORD,),
    ),
    "NFKC character in the password": (f"https://hook:{PASSWORD}\u2100@example.com/", (PASSWORD,)),
    "unclosed IPv6 bracket": (f"https://hook:{PASSWORD}@[::1/hooks", (PASSWORD,)),
    "port out of range": (f"https://hook:{PASSWORD}@example.com:99999/", (PASSWORD,)),
    "port not a number": (f"https://hook:{PASSWORD}@example.com:port/", (PASSWORD,)),
    "slash in the password": (f"https://hook:{HALVES[0]}/{HALVES[1]}@example.com/", HALVES),
    "question mark in the password": (f"https://hook:{HALVES[0]}?{HALVES[1]}@example.com/", HALVES),
    "hash in the password": (f"https://hook:{HALVES[0]}#{HALVES[1]}@example.com/", HALVES),
    "no host": (f"https://hook:{PASSWORD}@/hooks", (PASSWORD,)),
    "a space in the host": (f"https://hook:{PASSWORD}@exa mple.com/", (PASSWORD,)),
    "a control character": (f"https://hook:{PASSWORD}@example.com/\x7f", (PASSWORD,)),
    "not http": (f"ftp://hook:{PASSWORD}@example.com/", (PASSWORD,)),
    "the scheme forgotten": (f"hook:{PASSWORD}@example.com/hooks", (PASSWORD,)),
    "no // after the scheme": (f"https:hook:{PASSWORD}@example.com/hooks", (PASSWORD,)),
    "an empty IDNA label": (f"https://hook:{PASSWORD}@.example.com/", (PASSWORD,)),
}


@pytest.mark.parametrize("url, secrets", list(BAD_URLS.values()), ids=list(BAD_URLS))
def test_a_refused_url_never_shows_its_password(url: str, secrets: tuple[str, ...]) -> None:
    """The ValueError names url and shows it with ``***`` in place of the password: not in
    its message, its repr or its traceback (urllib's own message quotes the netloc)."""
    with pytest.raises(ValueError, match="^url ") as caught:
        Config(url)
    assert leaks(rendered(caught.value), *secrets) == []
    assert "***" in str(caught.value)


@pytest.mark.parametrize("url, secrets", list(BAD_URLS.values()), ids=list(BAD_URLS))
def test_the_command_line_never_shows_a_refused_urls_password(
    url: str, secrets: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """``send URL`` with such a URL: exit status 2 and one line naming URL, without the
    password."""
    status, out, err = run_cli(["send", url, "--event", "e"], capsys)
    assert (status, out) == (2, "")
    assert err.startswith("webhooks-emitter send: error: URL "), err
    assert leaks(out + err, *secrets) == []


def test_a_valid_url_keeps_its_password_for_use() -> None:
    """Control: the password is only hidden from view; the Config keeps the URL as given."""
    url = f"https://hook:{PASSWORD}@example.com/hooks"
    config = Config(url)
    assert config.url == url
    assert leaks(repr(config), PASSWORD) == []
    assert "https://hook:***@example.com/hooks" in repr(config)


# -- repr: passwords and credential headers ---------------------------------------------------

CREDENTIAL_HEADERS = [
    "Authorization",
    "Proxy-Authorization",
    "Cookie",
    "X-Api-Key",
    "Api-Key",
    "X-Auth-Token",
    "Private-Token",
    "X-Amz-Security-Token",
    "X-Client-Secret",
    "X-Vault-Token",
    "X-Hub-Signature",
    "X-Password",
    "Session-Id",
    "x-api-key",  # names are matched case-insensitively
]

# (Config fields, the secrets that must not show, texts that must show)
REPRS: dict[str, tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]] = {
    "url password": (
        {"url": f"https://hook:{PASSWORD}@example.com/"},
        (PASSWORD,),
        ("https://hook:***@example.com/",),
    ),
    "https proxy password": (
        {"proxies": {"https": f"http://proxyuser:{PASSWORD}@proxy.example:3128"}},
        (PASSWORD,),
        ("http://proxyuser:***@proxy.example:3128",),
    ),
    "several proxies": (
        {
            "proxies": {
                "http": f"http://a:{HALVES[0]}@proxy.example:3128",
                "https": f"socks5h://b:{HALVES[1]}@proxy.example:1080",
                "no_proxy": "localhost",
            }
        },
        HALVES,
        ("a:***@proxy.example", "b:***@proxy.example", "localhost"),
    ),
    **{
        f"header {name}": (
            {"additional_headers": {name: f"Bearer {TOKEN}", "X-Trace": "trace-1"}},
            (TOKEN,),
            (f"('{name}', '***')", "('X-Trace', 'trace-1')"),
        )
        for name in CREDENTIAL_HEADERS
    },
    "everything at once": (
        {
            "url": f"https://hook:{HALVES[0]}@example.com/",
            "secret": PASSWORD,
            "proxies": {"https": f"http://p:{HALVES[1]}@proxy.example:3128"},
            "additional_headers": [("Authorization", TOKEN), ("Cookie", f"sid={TOKEN}")],
        },
        (PASSWORD, TOKEN, *HALVES),
        ("secret='***'",),
    ),
}


@pytest.mark.parametrize("fields, secrets, shown", list(REPRS.values()), ids=list(REPRS))
def test_repr_hides_every_credential(
    fields: dict[str, Any], secrets: tuple[str, ...], shown: tuple[str, ...]
) -> None:
    """repr() and str() of the Config, and of a variant of it, show ``***`` for each
    credential and everything else as it is."""
    fields = dict(fields)
    config = Config(fields.pop("url", "https://example.com/hooks"), **fields)
    for text in (repr(config), str(config), repr(attrs.evolve(config, max_attempts=1))):
        assert leaks(text, *secrets) == []
        for part in shown:
            assert part in text


@pytest.mark.parametrize("name", ["X-Trace", "Accept-Language", "X-Request-Source"])
def test_other_headers_are_shown(name: str) -> None:
    """Control: a header that is not a credential keeps its value in the repr."""
    config = Config("https://example.com/hooks", additional_headers={name: "shown-value"})
    assert f"('{name}', 'shown-value')" in repr(config)


# -- exceptions: bad header and proxy values holding a credential -----------------------------

BAD_FIELDS: dict[str, tuple[dict[str, Any], str]] = {
    "a triple instead of a pair": (
        {"additional_headers": [("Authorization", f"Bearer {TOKEN}", "x")]},
        TOKEN,
    ),
    "a bytes value": ({"additional_headers": {"Authorization": f"Bearer {TOKEN}".encode()}}, TOKEN),
    "a value with CR LF": ({"additional_headers": {"Authorization": f"Bearer {TOKEN}\r\n"}}, TOKEN),
    "a value UTF-8 cannot hold": (
        {"additional_headers": {"Authorization": f"Bearer {TOKEN}\udcff"}},
        TOKEN,
    ),
    "a whole header line as the name": (
        {"additional_headers": {f"Authorization: Bearer {TOKEN}": ""}},
        TOKEN,
    ),
    "name and value without the colon": (
        {"additional_headers": {f"Authorization Bearer {TOKEN}": ""}},
        TOKEN,
    ),
    "a reserved header": ({"additional_headers": {"X-Webhooks-Event": TOKEN}}, TOKEN),
    "a proxy mapping with a bad key": (
        {"proxies": {1: f"http://p:{PASSWORD}@proxy.example:3128"}},
        PASSWORD,
    ),
    "a proxy mapping with a bad value": (
        {"proxies": {"https": f"http://p:{PASSWORD}@proxy.example:3128", "http": 3128}},
        PASSWORD,
    ),
}


@pytest.mark.parametrize("fields, secret", list(BAD_FIELDS.values()), ids=list(BAD_FIELDS))
def test_a_refused_header_or_proxy_never_shows_its_credential(
    fields: dict[str, Any], secret: str
) -> None:
    """The TypeError or ValueError names the field but never quotes the value."""
    with pytest.raises((TypeError, ValueError)) as caught:
        Config("https://example.com/hooks", **fields)
    assert str(caught.value).startswith(next(iter(fields)))
    assert leaks(rendered(caught.value), secret) == []


@pytest.mark.parametrize(
    "header", [f"Authorization Bearer {TOKEN}", f"Authorization Bearer {TOKEN}: x"]
)
def test_the_command_line_never_repeats_a_bad_header(
    header: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--header`` without its colon (or with spaces in the name) is refused unquoted."""
    status, out, err = run_cli(
        ["send", "http://127.0.0.1:9/", "--event", "e", "--header", header], capsys
    )
    assert (status, out) == (2, "")
    assert "expected 'Name: value'" in err
    assert leaks(err, TOKEN) == []


# -- logs, results and output of real deliveries ----------------------------------------------


def texts_of(records: list[logging.LogRecord]) -> str:
    """Every text a handler could make of ``records``: messages, extra fields, tracebacks."""
    handler = logging.Handler()
    handler.setFormatter(logging.Formatter())
    parts = []
    for record in records:
        parts.append(handler.format(record))
        parts.append(repr(record.__dict__))
    return "\n".join(parts)


def deliver(hub: WebhooksEmitter, config: Config) -> DeliveryResult:
    """Attach ``config`` (whose on_delivery is a Results), emit one event, return its result."""
    assert isinstance(config.on_delivery, Results)
    hub.attach("redacted", "e", config)
    hub.emit("e", {"n": 1})
    result: DeliveryResult = config.on_delivery.next()
    return result


def test_a_failing_delivery_logs_no_credential(
    hub: WebhooksEmitter, fast: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    """A URL password and an Authorization header, a receiver answering 500: the logs (every
    logger at DEBUG, urllib3's included) and the DeliveryResult show neither."""
    caplog.set_level(logging.DEBUG)
    results = Results()
    with Receiver(responder=lambda request: 500) as receiver:
        url = receiver.url.replace("http://", f"http://hook:{PASSWORD}@")
        config = fast(
            url,
            additional_headers={"Authorization": f"Bearer {TOKEN}"},
            max_attempts=2,
            on_delivery=results,
        )
        result = deliver(hub, config)
        [first, _] = receiver.wait_for(2)
    assert (result.delivered, result.error) == (False, "HTTP 500")
    assert first.header("Authorization") == f"Bearer {TOKEN}"  # sent, only never shown
    assert leaks(texts_of(caplog.records) + repr(result), PASSWORD, TOKEN) == []
    assert caplog.records  # the give-up was logged


def test_an_unreachable_proxy_with_a_password_is_reported_without_it(
    hub: WebhooksEmitter, fast: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    """A proxy URL with a password that refuses connections: 'proxy error: connection refused',
    and the password in no log record."""
    caplog.set_level(logging.DEBUG)
    results = Results()
    with closed_port() as port:
        config = fast(
            "http://127.0.0.1:9/hooks",
            proxies={"http": f"http://proxyuser:{PASSWORD}@127.0.0.1:{port}"},
            max_attempts=1,
            on_delivery=results,
        )
        result = deliver(hub, config)
    assert result.error == "proxy error: connection refused"
    assert leaks(texts_of(caplog.records) + repr(result), PASSWORD) == []


def test_the_command_line_shows_no_credential_even_verbose(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``send -vv`` with a URL password and an Authorization header to a receiver answering
    401: the output and the library's debug lines show neither; exit status 1."""
    with Receiver(responder=lambda request: 401) as receiver:
        url = receiver.url.replace("http://", f"http://hook:{PASSWORD}@")
        argv = ["send", url, "--event", "e", "--max-attempts", "1", "-vv"]
        status, out, err = run_cli(
            [*argv, "--header", f"Authorization: Bearer {TOKEN}"], capsys
        )
        assert len(receiver.requests) == 1
    assert status == 1
    assert "HTTP 401" in out
    assert leaks(out + err, PASSWORD, TOKEN) == []
