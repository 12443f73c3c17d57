"""No database password in any error, repr or log line of the PostgreSQL store, whatever the
input (issue 17 item 3).

libpq's parse errors quote their input, and for a URL the whole URL, password included; the
store says what was wrong in libpq's words without what libpq quoted, shows a URL with
everything that may be its password masked, and never repeats a key/value string. These need
no server: the conninfo is refused before any connection.
"""

from __future__ import annotations

import logging
import traceback

import pytest

from webhooks_emitter import WebhooksEmitter
from webhooks_emitter.stores import from_url
from webhooks_emitter.stores.postgres import PostgresStore

PASSWORD = "Pw-9f3Kq7xZ"

#: conninfo strings libpq refuses, each with the password in it, and a word of what the
#: error should say was wrong.
UNPARSABLE = {
    "an unclosed IPv6 bracket": (f"postgresql://app:{PASSWORD}@[::1:5432/db", "IPv6"),
    "a stray %zz in the password": (f"postgresql://app:{PASSWORD}%zz@127.0.0.1:5432/db",
                                    "percent-encoded"),
    "a password holding a quote": (f'postgresql://app:x"{PASSWORD}%zz@127.0.0.1:5432/db',
                                   "percent-encoded"),
    "a password holding @ and /": (f"postgresql://app:{PASSWORD}@/x%zz@127.0.0.1:5432/db",
                                   "percent-encoded"),
    "a URL query without =": (f"postgresql://app:{PASSWORD}@h:5432/db?password={PASSWORD}&x",
                              "separator"),
    "a key/value string with an unclosed quote": (
        f"host=h user=app password='{PASSWORD} dbname=db", "unterminated"),
    "a key/value string with a stray word": (f"host=h password={PASSWORD} {PASSWORD}x",
                                             "missing"),
    "a key/value string with an unknown key": (f"host=h password={PASSWORD} {PASSWORD}=1",
                                               "invalid"),
}


def everything_said(exc: BaseException) -> str:
    """All an exception can show: its text, repr, the whole chain and the traceback."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen), *map(str, getattr(seen, "args", ()))]
        seen = seen.__cause__ or seen.__context__
    parts += traceback.format_exception(exc)
    return "\n".join(parts)


@pytest.mark.parametrize("case", sorted(UNPARSABLE))
def test_an_unparsable_conninfo_is_a_value_error_without_the_password(case: str) -> None:
    """Each kind of conninfo libpq cannot parse: a ValueError that says what was wrong (in
    libpq's words, without what it quoted), shows a URL with its password masked, and
    holds the password nowhere, not even in the exception it was raised from."""
    conninfo, word = UNPARSABLE[case]
    with pytest.raises(ValueError, match="conninfo") as caught:
        PostgresStore(conninfo)
    said = everything_said(caught.value)
    assert PASSWORD not in said
    assert word.lower() in str(caught.value).lower()
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    if "://" in conninfo and "not repeated here" in str(caught.value):
        # A user info with an unencoded delimiter: where it ends is unclear, so no part of
        # the URL is shown.
        assert "percent-encoded" in str(caught.value)
    elif "://" in conninfo:  # a URL is shown, its password masked, to help find the mistake
        assert ":***@" in str(caught.value)


@pytest.mark.parametrize("case", sorted(c for c in UNPARSABLE if "://" in UNPARSABLE[c][0]))
def test_the_same_through_from_url_and_an_instance(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The same URL given to stores.from_url, WebhooksEmitter(store=) and
    configure(store=): no password in the error or the logs. (from_url takes URLs only;
    what it says of a key/value string is stores/__init__.py's, not this store's.)"""
    conninfo, _ = UNPARSABLE[case]
    caplog.set_level(logging.DEBUG)
    attempts = [
        lambda: from_url(conninfo),
        lambda: WebhooksEmitter(store=conninfo),
        lambda: WebhooksEmitter().configure(store=conninfo),
    ]
    for attempt in attempts:
        with pytest.raises((ValueError, TypeError)) as caught:
            attempt()
        assert PASSWORD not in everything_said(caught.value)
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize(
    "conninfo",
    [
        f"postgresql://app:{PASSWORD}@127.0.0.1:1/db",
        f"postgresql://app@127.0.0.1:1/db?password={PASSWORD}",
        f"host=127.0.0.1 port=1 user=app password={PASSWORD} dbname=db",
        f"host=127.0.0.1 port=1 user=app password='{PASSWORD} with spaces' dbname=db",
    ],
)
def test_a_valid_conninfo_shows_no_password_in_repr_or_describe(conninfo: str) -> None:
    """A conninfo that parses: repr() and describe() show the server, not the password."""
    store = PostgresStore(conninfo)
    assert PASSWORD not in repr(store)
    assert PASSWORD not in store.describe()
    assert "127.0.0.1:1/db" in store.describe()
