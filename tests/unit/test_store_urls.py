"""Store URLs as users write them (CONTRACT section 10; issue 17 items 3 and 7).

``sqlite:`` URLs are read as SQLAlchemy reads them, ``django:<alias>`` outside Django's
settings says where it belongs, and no error made from a store URL shows its password,
whatever the input and whichever way it was given: ``stores.from_url``,
``WebhooksEmitter(store=)``, ``configure(store=)``, the framework settings and the command
line's ``--store``.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any, Callable

import pytest
from flask import Flask

from webhooks_emitter import WebhooksEmitter, cli, stores
from webhooks_emitter._settings import settings_from_mapping
from webhooks_emitter.contrib.flask import Webhooks
from webhooks_emitter.stores.postgres import PostgresStore

PASSWORD = "Pw7qXk2Lz"

# (what the URL does wrong, the URL): each would make libpq (or urllib) quote it whole.
MALFORMED = {
    "unclosed IPv6 bracket": f"postgresql://app:{PASSWORD}@[::1:5432/db",
    "stray %zz in the password": f"postgresql://app:{PASSWORD}%zz@db.internal/app",
    "libpq key/value string": f"host=db.internal dbname=app user=app password={PASSWORD}",
    "libpq string with a colon": f"host=db.internal password={PASSWORD}:x dbname=app",
    "quoted libpq password": f"host=db.internal password='{PASSWORD} x' dbname=app",
    "port out of range": f"postgresql://app:{PASSWORD}@db.internal:99999/app",
    "no // after the scheme": f"postgresql:app:{PASSWORD}@db.internal/app",
    "unknown scheme": f"mysql://app:{PASSWORD}@db.internal/app",
    "a space in it": f"postgresql://app:{PASSWORD}@db.internal/app name",
    # Python ends the user info at the first '/', '?' or '#' and at the last '@'; libpq
    # reads on: what one hides as the password, the other shows as host, port or database.
    "a / in the password": f"postgresql://app:Pa/{PASSWORD}@127.0.0.1:1/db",
    "a / after digits in the password": f"postgresql://app:12345/{PASSWORD}@127.0.0.1:1/db",
    "a ? in the password": f"postgresql://app:Pa?{PASSWORD}@127.0.0.1:1/db",
    "an unencoded @ in the password": f"postgresql://app:x@{PASSWORD}@127.0.0.1:1/db",
}

#: The URLs that only the user info's delimiters make unreadable.
DELIMITERS = [url for name, url in MALFORMED.items() if "in the password" in name
              and "%zz" not in name]


def rendered(exc: BaseException) -> str:
    """An exception as every tool shows it: message, repr, and the traceback with its chain."""
    return "\n".join(
        [str(exc), repr(exc), *traceback.format_exception(type(exc), exc, exc.__traceback__)]
    )


def refusal(make: Callable[[], Any]) -> BaseException:
    """The exception ``make()`` raises (it must raise a TypeError or ValueError)."""
    with pytest.raises((TypeError, ValueError)) as caught:
        make()
    return caught.value


def through_from_url(url: str) -> Any:
    """stores.from_url."""
    return stores.from_url(url)


def through_the_constructor(url: str) -> Any:
    """WebhooksEmitter(store=url)."""
    return WebhooksEmitter(store=url)


def through_configure(url: str) -> Any:
    """instance.configure(store=url)."""
    return WebhooksEmitter().configure(store=url)


def through_flask(url: str) -> Any:
    """Webhooks().init_app(app) with WEBHOOKS_EMITTER_STORE = url."""
    app = Flask("store_url_app")
    app.config["WEBHOOKS_EMITTER_STORE"] = url
    return Webhooks().init_app(app)


def through_settings(url: str) -> Any:
    """The settings check Django's system checks run (settings.WEBHOOKS_EMITTER['STORE'])."""
    return settings_from_mapping(
        {"STORE": url}, key_format="WEBHOOKS_EMITTER[{!r}]", store_schemes=("django",)
    )


PATHS = [through_from_url, through_the_constructor, through_configure, through_flask,
         through_settings]


@pytest.mark.parametrize("url", MALFORMED.values(), ids=list(MALFORMED))
@pytest.mark.parametrize("path", PATHS, ids=lambda path: path.__name__)
def test_a_malformed_store_url_is_refused_without_its_password(
    path: Callable[[str], Any], url: str
) -> None:
    """Every way of giving a store URL refuses a malformed one with a ValueError whose
    message, repr and traceback (its chain included) never show the password."""
    exc = refusal(lambda: path(url))
    assert PASSWORD not in rendered(exc)


@pytest.mark.parametrize("url", DELIMITERS)
def test_the_store_itself_refuses_a_password_with_unencoded_delimiters(url: str) -> None:
    """``PostgresStore(url)`` refuses a URL whose user info holds an unencoded '/', '?',
    '#' or '@' before connecting, saying to percent-encode them, without the password."""
    exc = refusal(lambda: PostgresStore(url, timeout=0.5))
    assert "percent-encoded" in str(exc)
    assert PASSWORD not in rendered(exc)


def test_a_missing_sqlite_files_hint_names_it_with_four_slashes(tmp_path: Path) -> None:
    """The "run migrate" hint of a store opened with create=False names the absolute file
    as ``sqlite:////...``, which the migrate command reads back as that same file."""
    path = tmp_path / "absent.db"
    with pytest.raises(stores.StoreError) as caught:
        stores.SQLiteStore(str(path), create=False).open()
    hint = str(caught.value)
    url = hint.split("--store ", 1)[1].split("`", 1)[0]
    assert url == f"sqlite:///{path}" and url.startswith("sqlite:////"), hint
    assert stores.check_url(url) == ("sqlite", str(path))


@pytest.mark.parametrize("url", MALFORMED.values(), ids=list(MALFORMED))
def test_the_settings_name_the_store_key(url: str) -> None:
    """In Flask the refusal names WEBHOOKS_EMITTER_STORE, in Django's settings
    WEBHOOKS_EMITTER['STORE'] (issue 17 item 4)."""
    assert str(refusal(lambda: through_flask(url))).startswith("WEBHOOKS_EMITTER_STORE: ")
    assert str(refusal(lambda: through_settings(url))).startswith("WEBHOOKS_EMITTER['STORE']: ")


@pytest.mark.parametrize("url", MALFORMED.values(), ids=list(MALFORMED))
def test_the_command_line_never_shows_a_malformed_store_urls_password(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status --store URL` with a malformed URL is exit status 2, one line on standard
    error, and no password on either stream."""
    assert cli.main(["status", "--store", url]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "error" in err
    assert PASSWORD not in out + err


def test_a_password_in_the_query_is_hidden_where_the_store_is_shown() -> None:
    """stores.redact hides ``password=`` in a URL's query as well as in its user info."""
    shown = stores.redact(f"postgresql://app@db/app?sslmode=require&password={PASSWORD}")
    assert PASSWORD not in shown and "sslmode=require" in shown
    assert PASSWORD not in stores.redact(f"postgresql://app:{PASSWORD}@db/app")


# -- sqlite: URLs, read as SQLAlchemy reads them -----------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory for the test."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("sqlite:///relative.db", "relative.db"),
        ("sqlite:///sub/dir.db", "sub/dir.db"),
        ("sqlite:relative/path.db", "relative/path.db"),
    ],
)
def test_relative_sqlite_urls_are_relative_to_the_working_directory(
    workdir: Path, url: str, where: str
) -> None:
    """``sqlite:///relative.db`` (three slashes) and ``sqlite:relative/path.db`` make the
    file under the working directory, never at the filesystem root."""
    (workdir / where).parent.mkdir(parents=True, exist_ok=True)
    store = stores.from_url(url)
    try:
        store.open()
        assert (workdir / where).is_file()
    finally:
        store.close()


def test_four_slashes_make_an_absolute_sqlite_path(workdir: Path, tmp_path: Path) -> None:
    """``sqlite:////absolute/path.db`` (four slashes) is that absolute path."""
    target = tmp_path / "elsewhere" / "abs.db"
    target.parent.mkdir()
    os.chdir(workdir)
    store = stores.from_url(f"sqlite:///{target}")  # "/" + an absolute path: four slashes
    try:
        store.open()
        assert target.is_file()
    finally:
        store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///", "names no file"),
        ("sqlite://", "names no file"),
        ("sqlite://host/x.db", "has no host"),
    ],
)
def test_sqlite_urls_that_name_no_file_are_refused(url: str, message: str) -> None:
    """An SQLite URL without a file, or with a host, is a ValueError saying so."""
    with pytest.raises(ValueError, match=message):
        stores.from_url(url)


@pytest.mark.parametrize("path", [through_from_url, through_the_constructor, through_flask])
def test_a_django_store_outside_django_says_where_it_belongs(
    path: Callable[[str], Any],
) -> None:
    """``django:default`` given anywhere but Django's settings is a ValueError that says it
    belongs in settings.WEBHOOKS_EMITTER."""
    exc = refusal(lambda: path("django:default"))
    assert isinstance(exc, ValueError)
    assert "settings.WEBHOOKS_EMITTER" in str(exc)
