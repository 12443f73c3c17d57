"""``settings.WEBHOOKS_EMITTER``: read, checked, and applied to the default instance."""

# Django ships no type information (django-stubs is not required).
# mypy: disable-error-code="import-untyped, import-not-found"

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Optional

from ..._hub import WebhooksEmitter
from ..._redaction import hide_passwords, scrub_exception
from ..._settings import Settings, attach_all, check_settings, settings_from_mapping
from ...exceptions import (
    SettingError,
    SettingTypeError,
    SettingValueError,
)
from ...stores import Store, StoreError

__all__ = [
    "KEY_FORMAT",
    "OPERATOR_COMMANDS",
    "SETTING",
    "apply",
    "operator_store",
    "running_an_operator_command",
    "conninfo_for",
    "django_alias",
    "load",
    "make_store",
    "problems",
]

logger = logging.getLogger("webhooks_emitter.contrib.django")

#: The name of the settings dict.
SETTING = "WEBHOOKS_EMITTER"
#: How a key is named in messages: WEBHOOKS_EMITTER['EMITTERS']['billing']['url'].
KEY_FORMAT = SETTING + "[{!r}]"
#: The scheme of a store on a database of settings.DATABASES: "django:<alias>".
SCHEME = "django"
#: The management commands that only read or change the store (CONTRACT section 12).
OPERATOR_COMMANDS = frozenset({"webhooks_status", "webhooks_failed", "webhooks_replay"})

# libpq's connection keywords: those of Django's connection parameters that the store's own
# connections take (Django adds others: a cursor factory, adapters, prepare_threshold).
_LIBPQ_KEYWORDS = frozenset(
    """host hostaddr port dbname user password passfile require_auth channel_binding
    connect_timeout client_encoding options application_name fallback_application_name
    keepalives keepalives_idle keepalives_interval keepalives_count tcp_user_timeout
    replication gssencmode sslmode sslnegotiation requiressl sslcompression sslcert sslkey
    sslkeylogfile sslpassword sslcertmode sslrootcert sslcrl sslcrldir sslsni requirepeer
    ssl_min_protocol_version ssl_max_protocol_version min_protocol_version
    max_protocol_version krbsrvname gsslib gssdelegation service target_session_attrs
    load_balance_hosts""".split()
)


class _Applied:
    """What ``apply`` did, for ``emit_on_commit``: the store it made for "django:<alias>"."""

    lock = threading.Lock()
    done = False
    alias: Optional[str] = None
    store: Optional[Store] = None
    database: Optional[str] = None  # the database NAME the store was made for
    warned = False
    error: Optional[str] = None  # why the settings could not be applied


applied = _Applied()


def raw() -> Any:
    """``settings.WEBHOOKS_EMITTER`` as written (``{}`` when absent)."""
    from django.conf import settings

    return getattr(settings, SETTING, {})


def django_alias(store: object) -> Optional[str]:
    """The alias of a ``"django:<alias>"`` store setting, or None for any other value."""
    if isinstance(store, str):
        scheme, sep, alias = store.partition(":")
        if sep and scheme.lower() == SCHEME:
            return alias
    return None


def problems() -> list[SettingError]:
    """Everything wrong with ``settings.WEBHOOKS_EMITTER`` (the system checks show them)."""
    values = raw()
    if not isinstance(values, Mapping):
        return [
            SettingTypeError(
                SETTING,
                "must be a dict with STORE, EMITTERS, DELIVER and EXIT_TIMEOUT keys, "
                f"not {type(values).__name__}",
            )
        ]
    errors = check_settings(values, key_format=KEY_FORMAT, store_schemes=(SCHEME,))
    alias = django_alias(values.get("STORE"))
    if alias:
        try:
            conninfo_for(alias)
        except (TypeError, ValueError) as exc:
            errors.append(SettingValueError(KEY_FORMAT.format("STORE"), str(exc)))
    return errors


def conninfo_for(alias: str) -> str:
    """A libpq connection string for the database of ``settings.DATABASES[alias]``,
    made from the connection parameters Django itself uses (no connection is opened).

    Raises:
        ValueError: no such alias, or its database is not PostgreSQL (or misconfigured),
            or psycopg 3 (which the store needs) is not installed.
    """
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connections

    if alias not in settings.DATABASES:
        known = ", ".join(sorted(settings.DATABASES)) or "none"
        raise ValueError(
            f"'{SCHEME}:{alias}' names no database of settings.DATABASES (aliases: {known})"
        )
    wrapper = connections[alias]
    if wrapper.vendor != "postgresql":
        raise ValueError(
            f"'{SCHEME}:{alias}' needs a PostgreSQL database; the {alias!r} database is "
            f"{wrapper.vendor} (use sqlite:///path.db or memory: instead)"
        )
    if importlib.util.find_spec("psycopg") is None:
        raise ValueError(
            f"'{SCHEME}:{alias}' needs psycopg 3 for the store's own connections "
            "(pip install 'webhooks_emitter[postgres]')"
        )
    try:
        params = wrapper.get_connection_params()
    except ImproperlyConfigured as exc:
        raise ValueError(f"'{SCHEME}:{alias}': {exc}") from None
    parts = []
    for key, value in params.items():
        if key in _LIBPQ_KEYWORDS and isinstance(value, (str, int)) and value != "":
            text = str(value).replace("\\", "\\\\").replace("'", "\\'")
            parts.append(f"{key}='{text}'")
    return " ".join(parts)


def load() -> Settings:
    """``settings.WEBHOOKS_EMITTER``, checked.

    Raises:
        SettingTypeError, SettingValueError: the first problem :func:`problems` finds.
    """
    errors = problems()
    if errors:
        raise errors[0]
    return settings_from_mapping(raw(), key_format=KEY_FORMAT, store_schemes=(SCHEME,))


def make_store(settings: Settings, *, create: bool = True) -> Store:
    """A new store for ``settings``: a PostgresStore on a Django database for
    ``"django:<alias>"``, otherwise what the URL names (``create=False``: an existing
    store only). No error raised here shows the database's password."""
    alias = django_alias(settings.store)
    if alias is None:
        return settings.open_store(create=create)
    from ...stores.postgres import PostgresStore

    conninfo = conninfo_for(alias)
    try:
        return PostgresStore(conninfo, create=create)
    except Exception as exc:  # noqa: BLE001 - re-raised as it is, only its text cleaned
        raise scrub_exception(exc, conninfo) from exc.__cause__


def running_an_operator_command() -> bool:
    """Whether this process runs ``manage.py webhooks_status|failed|replay`` (Django sets
    its apps up before the command runs; the command's name is ``sys.argv[1]``)."""
    return len(sys.argv) > 1 and sys.argv[1] in OPERATOR_COMMANDS


@contextlib.contextmanager
def operator_store(what: str) -> Iterator[tuple[Store, Optional[WebhooksEmitter]]]:
    """The settings' store for an operator command, and the default instance when it is
    live with that store (settings applied in this process, e.g. ``call_command`` in a
    test: its emitters may be woken).

    Otherwise the store is opened for the command alone, creating nothing, and closed
    after it: nothing here delivers, takes a lease or waits for an exit flush.

    Raises:
        SettingError: the settings are bad (the first problem, naming its key).
        ValueError: the store is the memory store.
        StoreError: the store could not be opened.
    """
    import webhooks_emitter

    errors = problems()
    if errors:
        raise errors[0]
    settings = load()
    if not settings.durable:
        raise ValueError(
            f"{what} needs a durable store (sqlite:///path.db, postgresql://... or "
            f"django:<alias>) in settings.{SETTING}['STORE']; memory: holds only one "
            "process's events"
        )
    instance = webhooks_emitter.default
    if applied.done and instance.store.durable:
        yield instance.store, instance
        return
    try:
        store = make_store(settings, create=False)
        store.open()
    except (TypeError, ValueError) as exc:
        raise SettingValueError(KEY_FORMAT.format("STORE"), str(exc)) from None
    except ImportError as exc:
        raise StoreError(str(exc)) from None
    try:
        yield store, None
    finally:
        store.close()


def set_deliver(instance: WebhooksEmitter, deliver: bool) -> None:
    """Make ``instance`` deliver or only store (before anything is attached)."""
    instance.configure(deliver=deliver)


def apply(instance: WebhooksEmitter) -> bool:
    """Apply ``settings.WEBHOOKS_EMITTER`` to ``instance`` (the default one, at
    ``AppConfig.ready``): store, DELIVER and EXIT_TIMEOUT where given, then attach every
    emitter. Bad settings are left to the system checks, and a store that cannot be
    reached is logged: neither stops Django from starting. Returns whether it applied.
    """
    with applied.lock:
        if applied.done:
            return True
        errors = problems()
        if errors:
            logger.error(
                "webhooks_emitter: settings.%s is not valid (manage.py check lists every "
                "problem); no emitter attached. First: %s",
                SETTING,
                errors[0],
            )
            return False
        values = raw()
        settings = load()
        try:
            store = make_store(settings) if "STORE" in values else None
            instance.configure(
                exit_timeout=settings.exit_timeout if "EXIT_TIMEOUT" in values else None,
                store=store,
            )
            if "DELIVER" in values:
                set_deliver(instance, settings.deliver)
            attach_all(instance, settings.emitters)
        except Exception as exc:  # noqa: BLE001 - django.setup() must never raise for it
            # Whatever the driver says, its text may quote the connection string.
            applied.error = hide_passwords(str(exc), _store_source(settings))
            logger.error(
                "webhooks_emitter: could not apply settings.%s: %s; no emitter attached",
                SETTING,
                applied.error,
            )
            return False
        applied.done = True
        applied.alias = django_alias(settings.store)
        if applied.alias is not None:
            from django.conf import settings as django_settings

            applied.store = instance.store
            applied.database = django_settings.DATABASES[applied.alias].get("NAME")
        return True


def _store_source(settings: Settings) -> Optional[str]:
    """The text the store was made from (a URL or a libpq string), for hiding its password."""
    alias = django_alias(settings.store)
    if alias is not None:
        try:
            return conninfo_for(alias)
        except (TypeError, ValueError):
            return None
    return settings.store if isinstance(settings.store, str) else None


def check_database(alias: str, name: Optional[str]) -> None:
    """Warn (once) when Django's connection for the store's alias opens another database
    than the one the store was made for: under Django's test runner, the test database.
    The store keeps delivering from the first one, and writes through Django's connection
    (emit_on_commit) would find no tables there."""
    if alias != applied.alias or applied.warned or name == applied.database:
        return
    applied.warned = True
    logger.warning(
        "webhooks_emitter: the store 'django:%s' was made for the database %r, but Django "
        "now connects to %r (the test runner's test database?). Use \"STORE\": \"memory:\" "
        "and webhooks_emitter.testing.capture() in test settings.",
        alias,
        applied.database,
        name,
    )


def durable_default(what: str) -> WebhooksEmitter:
    """The default instance, for an operator command that needs a durable store.

    Raises:
        ValueError: its store is the memory store.
        StoreError: the settings' store could not be opened at start-up.
    """
    import webhooks_emitter

    instance = webhooks_emitter.default
    if applied.error is not None:
        raise StoreError(f"settings.{SETTING} could not be applied: {applied.error}")
    if not instance.store.durable:
        raise ValueError(
            f"{what} needs a durable store (sqlite:///path.db, postgresql://... or "
            f"django:<alias>) in settings.{SETTING}['STORE']; memory: holds only one "
            "process's events"
        )
    return instance
