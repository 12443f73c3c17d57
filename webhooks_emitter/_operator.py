"""What operators run: settings checked into emitters, the worker loop, status and dead letters.

The command line (``webhooks-emitter worker|status|failed|replay``), the ``flask webhooks``
commands and Django's management commands are thin wrappers over these functions, so the
three behave alike:

    >>> settings = settings_from_mapping(
    ...     {"STORE": "sqlite:///var/lib/app/hooks.db",
    ...      "EMITTERS": {"billing": {"url": "https://billing.example/hooks",
    ...                               "events": ["order.paid"], "secret": "s3cret"}}},
    ...     key_format="WEBHOOKS_EMITTER_{}",
    ... )                                                                # doctest: +SKIP
    >>> instance = settings.make_instance(deliver=True)                  # doctest: +SKIP
    >>> run_worker(instance, settings.exit_timeout)                      # doctest: +SKIP
    0
"""

from __future__ import annotations

import datetime
import importlib
import logging
import math
import os
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Callable, Optional, Union

import attrs

from ._config import Config
from ._encoding import check_name
from ._hub import WebhooksEmitter
from .exceptions import WebhooksEmitterError
from .stores import FailedEvent, Store, from_url, redact

__all__ = [
    "DEFAULTS",
    "EmitterSettings",
    "SettingError",
    "SettingTypeError",
    "SettingValueError",
    "Settings",
    "attach_all",
    "check_settings",
    "failed_json",
    "format_failed",
    "format_status",
    "list_failed",
    "load_callable",
    "replay_failed",
    "require_durable",
    "run_worker",
    "settings_from_mapping",
    "status",
]

logger = logging.getLogger("webhooks_emitter.operator")

#: Every setting and its default; the frameworks name them with their own prefix.
DEFAULTS: Mapping[str, Any] = {
    "STORE": "memory:",
    "EMITTERS": {},
    "DELIVER": True,
    "EXIT_TIMEOUT": 5.0,
}

_STORE_SCHEMES = ("memory", "sqlite", "postgresql", "postgres")


class SettingError(WebhooksEmitterError):
    """A setting is not of the documented form.

    The message starts with the setting's full name as the user wrote it
    (``WEBHOOKS_EMITTER_EMITTERS['billing']['max_attempts']: ...``).

    Attributes:
        key: that name.
        reason: what was wrong with it.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class SettingValueError(SettingError, ValueError):
    """A setting has the right type but a wrong value."""


class SettingTypeError(SettingError, TypeError):
    """A setting has the wrong type."""


@attrs.frozen
class EmitterSettings:
    """One emitter of the ``EMITTERS`` setting.

    Attributes:
        emitter_id: its id.
        events: the event names it is subscribed to (``"*"`` for every event).
        config: where and how it delivers.
    """

    emitter_id: str
    events: tuple[str, ...]
    config: Config


@attrs.frozen
class Settings:
    """The settings of one application, checked.

    Attributes:
        store: the store's URL (as given), or a store object.
        emitters: the emitters to attach, in the order given.
        deliver: False for processes that only store events for a worker.
        exit_timeout: seconds the exit hook (and a worker's shutdown) may spend delivering.
    """

    store: Union[str, Store]
    emitters: tuple[EmitterSettings, ...]
    deliver: bool
    exit_timeout: float

    def open_store(self) -> Store:
        """A store for these settings: a new one made from the URL, or the store object.

        Raises:
            ValueError: the URL names no store this library has.
            StoreError: the store could not be opened.
        """
        return from_url(self.store) if isinstance(self.store, str) else self.store

    def make_instance(self, *, deliver: Optional[bool] = None) -> WebhooksEmitter:
        """A new :class:`WebhooksEmitter` over :meth:`open_store`, with every emitter attached.

        Args:
            deliver: overrides the ``DELIVER`` setting (the worker commands pass True).

        Raises:
            ValueError: ``deliver`` is False and the store is not durable.
            StoreError: the store could not be opened or could not record an emitter.
        """
        instance = WebhooksEmitter(
            self.exit_timeout,
            store=self.open_store(),
            deliver=self.deliver if deliver is None else deliver,
        )
        attach_all(instance, self.emitters)
        return instance


def settings_from_mapping(
    values: Mapping[str, Any],
    *,
    key_format: str = "{}",
    store_schemes: Collection[str] = (),
) -> Settings:
    """Check ``values`` (keys ``STORE``, ``EMITTERS``, ``DELIVER``, ``EXIT_TIMEOUT``; each
    optional, see :data:`DEFAULTS`) and turn them into :class:`Settings`.

    ``EMITTERS`` maps each emitter id to a mapping with ``url``, ``events`` (a list of event
    names, ``"*"`` for every event; one name alone is taken as a list of it) and any other
    :class:`~webhooks_emitter.Config` field by name (``on_delivery`` may also be given as
    ``"module:function"``).

    Args:
        values: the settings, keyed by their short names.
        key_format: how the application names a setting, for messages: ``"{}"`` gives
            ``EMITTERS``, ``"WEBHOOKS_EMITTER_{}"`` (Flask) ``WEBHOOKS_EMITTER_EMITTERS``,
            ``"WEBHOOKS_EMITTER[{!r}]"`` (Django) ``WEBHOOKS_EMITTER['EMITTERS']``.
        store_schemes: more URL schemes to accept in ``STORE`` (the caller opens those
            itself, e.g. Django's ``django:<alias>``).

    Returns:
        The settings.

    Raises:
        SettingTypeError, SettingValueError: the first setting found bad (a ``TypeError``
            or ``ValueError`` whose message starts with the setting's full name).
    """
    settings, errors = _check(values, key_format, store_schemes)
    if errors:
        raise errors[0]
    assert settings is not None
    return settings


def check_settings(
    values: Mapping[str, Any],
    *,
    key_format: str = "{}",
    store_schemes: Collection[str] = (),
) -> list[SettingError]:
    """Every problem :func:`settings_from_mapping` would find, instead of the first one
    (for Django's system checks). An empty list means the settings are good."""
    return _check(values, key_format, store_schemes)[1]


def _check(
    values: Mapping[str, Any], key_format: str, store_schemes: Collection[str]
) -> tuple[Optional[Settings], list[SettingError]]:
    if not isinstance(values, Mapping):
        raise TypeError(f"values must be a mapping of setting names, not {type(values).__name__}")
    errors: list[SettingError] = []

    def key(name: str) -> str:
        return key_format.format(name)

    for name in values:
        if name not in DEFAULTS:
            known = ", ".join(key(k) for k in DEFAULTS)
            errors.append(SettingValueError(key(name), f"unknown setting (known: {known})"))
    merged = {**DEFAULTS, **{k: v for k, v in values.items() if k in DEFAULTS}}

    store = merged["STORE"]
    durable: Optional[bool] = None
    if isinstance(store, Store):
        durable = store.durable
    elif isinstance(store, str):
        scheme, problem = _check_store_url(store, store_schemes)
        if problem is not None:
            errors.append(SettingValueError(key("STORE"), problem))
        else:
            durable = scheme != "memory"
    else:
        errors.append(
            SettingTypeError(
                key("STORE"),
                f"must be a store URL (str) or a store, not {type(store).__name__}",
            )
        )

    deliver = merged["DELIVER"]
    if not isinstance(deliver, bool):
        errors.append(
            SettingTypeError(key("DELIVER"), f"must be True or False, not {deliver!r}")
        )
    elif not deliver and durable is False:
        errors.append(
            SettingValueError(
                key("DELIVER"),
                "False needs a durable store (sqlite:///... or postgresql://...) in "
                f"{key('STORE')}; with memory: nothing would ever deliver the events",
            )
        )

    exit_timeout = merged["EXIT_TIMEOUT"]
    if isinstance(exit_timeout, bool) or not isinstance(exit_timeout, (int, float)):
        errors.append(
            SettingTypeError(
                key("EXIT_TIMEOUT"),
                f"must be a number of seconds, not {type(exit_timeout).__name__}",
            )
        )
    elif math.isnan(exit_timeout) or exit_timeout < 0:
        errors.append(
            SettingValueError(key("EXIT_TIMEOUT"), f"must be >= 0 seconds, got {exit_timeout!r}")
        )

    emitters = _check_emitters(merged["EMITTERS"], key("EMITTERS"), errors)
    if errors:
        return None, errors
    return (
        Settings(
            store=store,
            emitters=tuple(emitters),
            deliver=deliver,
            exit_timeout=float(exit_timeout),
        ),
        [],
    )


def _check_store_url(url: str, extra: Collection[str]) -> tuple[str, Optional[str]]:
    """The URL's scheme, and what is wrong with the URL (None when nothing is)."""
    schemes = (*_STORE_SCHEMES, *extra)
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    expected = ", ".join(f"{s}:..." for s in schemes)
    if not sep or scheme not in schemes:
        return scheme, f"{redact(url)!r} is not a store URL (one of: {expected})"
    if scheme == "memory" and rest not in ("", "//"):
        return scheme, f"{url!r}: memory: takes nothing after the colon"
    if scheme == "sqlite":
        path = rest[2:].partition("/")[2] if rest.startswith("//") else rest
        if rest.startswith("//") and rest[2:].partition("/")[0]:
            return scheme, f"{url!r}: an SQLite URL has no host (sqlite:///absolute/path)"
        if not urllib.parse.unquote(path).strip("/"):
            return scheme, f"{url!r} names no file"
    if scheme in extra and not rest:
        return scheme, f"{url!r} names nothing after {scheme}:"
    return scheme, None


_CONFIG_FIELDS = tuple(field.name for field in attrs.fields(Config) if field.name != "url")


def _check_emitters(value: Any, base: str, errors: list[SettingError]) -> list[EmitterSettings]:
    if not isinstance(value, Mapping):
        errors.append(
            SettingTypeError(
                base,
                "must be a mapping of emitter id to its settings (url, events, ...), "
                f"not {type(value).__name__}",
            )
        )
        return []
    result = []
    for emitter_id, fields in value.items():
        here = f"{base}[{emitter_id!r}]"
        try:
            emitter_id = check_name(emitter_id, "an emitter id")
        except (TypeError, ValueError) as exc:
            errors.append(_wrap(here, exc))
            continue
        if not isinstance(fields, Mapping):
            errors.append(
                SettingTypeError(
                    here, f"must be a mapping with url, events, ..., not {type(fields).__name__}"
                )
            )
            continue
        emitter = _check_emitter(emitter_id, fields, here, errors)
        if emitter is not None:
            result.append(emitter)
    return result


def _check_emitter(
    emitter_id: str, fields: Mapping[Any, Any], here: str, errors: list[SettingError]
) -> Optional[EmitterSettings]:
    found = len(errors)
    for name in ("url", "events"):
        if name not in fields:
            errors.append(SettingValueError(f"{here}[{name!r}]", "is required"))
    events: list[str] = []
    if "events" in fields:
        events = _check_events(fields["events"], f"{here}['events']", errors)
    options: dict[str, Any] = {}
    for name, option in fields.items():
        if name in ("url", "events"):
            continue
        if name not in _CONFIG_FIELDS:
            errors.append(
                SettingValueError(
                    f"{here}[{name!r}]",
                    "unknown setting; an emitter takes url, events and these Config fields: "
                    + ", ".join(_CONFIG_FIELDS),
                )
            )
            continue
        if name == "on_delivery" and isinstance(option, str):
            try:
                option = load_callable(option, "on_delivery")
            except (TypeError, ValueError) as exc:
                errors.append(_wrap(f"{here}['on_delivery']", exc))
                continue
        options[name] = option
    if len(errors) > found or "url" not in fields:
        return None
    config = _make_config(fields["url"], options, here, errors)
    if config is None:
        return None
    return EmitterSettings(emitter_id, tuple(events), config)


def _check_events(value: Any, here: str, errors: list[SettingError]) -> list[str]:
    names: list[str] = []
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Iterable):
        errors.append(
            SettingTypeError(
                here, f'must be a list of event names ("*" for all), not {type(value).__name__}'
            )
        )
        return names
    for index, name in enumerate(value):
        try:
            names.append(check_name(name, "an event name"))
        except (TypeError, ValueError) as exc:
            errors.append(_wrap(f"{here}[{index}]", exc))
    if not names and not any(e.key.startswith(here) for e in errors):
        errors.append(SettingValueError(here, 'must name at least one event ("*" for all)'))
    return names


def _make_config(
    url: Any, options: dict[str, Any], here: str, errors: list[SettingError]
) -> Optional[Config]:
    """``Config(url, **options)``, or None with the fault attributed to the field that made
    it: each field is tried alone first, then all together."""
    try:
        Config(url)
    except (TypeError, ValueError) as exc:
        errors.append(_wrap(f"{here}['url']", exc))
        return None
    bad = False
    for name, option in options.items():
        try:
            Config(url, **{name: option})
        except (TypeError, ValueError) as exc:
            errors.append(_wrap(f"{here}[{name!r}]", exc))
            bad = True
    if bad:
        return None
    try:
        return Config(url, **options)
    except (TypeError, ValueError) as exc:
        # Fields that are fine alone but not together (backoff_limit < backoff_start, a
        # secret the chosen scheme cannot use): name the first one the message mentions.
        message = str(exc)
        named = sorted((message.find(name), name) for name in options if name in message)
        at = f"{here}[{named[0][1]!r}]" if named else here
        errors.append(_wrap(at, exc))
        return None


def _wrap(key: str, exc: BaseException) -> SettingError:
    if isinstance(exc, TypeError):
        return SettingTypeError(key, str(exc))
    return SettingValueError(key, str(exc))


def attach_all(instance: WebhooksEmitter, emitters: Iterable[EmitterSettings]) -> list[str]:
    """Attach every emitter of ``emitters`` to ``instance``; all of them or none.

    Returns:
        The ids attached, in order.

    Raises:
        EmitterExistsError: an id is attached already (those attached by this call are
            detached again).
        StoreError: a durable store could not record an emitter (likewise).
    """
    done: list[str] = []
    try:
        for emitter in emitters:
            instance.attach_many(emitter.emitter_id, emitter.events, emitter.config)
            done.append(emitter.emitter_id)
    except BaseException:
        for emitter_id in done:
            instance.detach(emitter_id)
        raise
    return done


def _module_of_file(path: str) -> str:
    """The module name of the Python file ``path``, with the folder it is imported from
    put first on ``sys.path`` (a file inside packages is imported as part of them)."""
    path = os.path.realpath(path)
    base, ext = os.path.splitext(path)
    if ext == ".py":
        path = base
    if os.path.basename(path) == "__init__":
        path = os.path.dirname(path)
    names = []
    while True:
        path, name = os.path.split(path)
        names.append(name)
        if not os.path.exists(os.path.join(path, "__init__.py")):
            break
    if sys.path[0] != path:
        sys.path.insert(0, path)
    return ".".join(reversed(names))


def load_callable(spec: str, argument: str = "--setup") -> Callable[..., Any]:
    """The function ``spec`` names: ``"package.module:function"`` (the part after the colon
    may be dotted) or ``"path/to/file.py:function"``. The current directory is put on
    ``sys.path`` first, as gunicorn does, so that the application's own modules import.

    Raises:
        TypeError: ``spec`` is not a str, or what it names is not callable.
        ValueError: ``spec`` is not of that form, the file or module cannot be found or
            imported (whatever its code raised; chained as the cause), or it has no such
            name; the message names ``argument``.
    """
    if not isinstance(spec, str):
        raise TypeError(f"{argument} must be 'module:function', not {type(spec).__name__}")
    target, colon, attribute = spec.rpartition(":")
    if not colon or not target or not all(p.isidentifier() for p in attribute.split(".")):
        raise ValueError(
            f"{argument} must be 'module:function' or 'path/to/file.py:function', got {spec!r}"
        )
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    if target.endswith(".py") or "/" in target or os.sep in target:
        if not os.path.isfile(target):
            raise ValueError(f"{argument} {spec!r}: no file {target!r}")
        module_name = _module_of_file(target)
    else:
        module_name = target
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - the module's own code may raise anything
        raise ValueError(
            f"{argument} {spec!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ValueError(f"{argument} {spec!r}: {module_name} has no {attribute!r}") from None
    if not callable(found):
        raise TypeError(
            f"{argument} {spec!r}: {attribute} is not callable (it is {type(found).__name__})"
        )
    return found  # type: ignore[no-any-return]


def require_durable(store: Store, what: str) -> None:
    """Raise ValueError unless ``store`` is durable: operator commands act on events that
    other processes stored, which a memory store cannot show them."""
    if not store.durable:
        raise ValueError(
            f"{what} needs a durable store (sqlite:///path.db or postgresql://...); "
            "memory: holds only one process's events"
        )


def run_worker(
    instance: WebhooksEmitter,
    exit_timeout: float,
    *,
    stop: Optional[threading.Event] = None,
    ready: Optional[Callable[[], None]] = None,
) -> int:
    """Deliver with ``instance`` until SIGTERM or SIGINT (or ``stop`` is set), then shut
    it down within ``exit_timeout`` seconds, letting go of its leases.

    Call it from the main thread: it installs handlers for SIGTERM and SIGINT while it
    runs (a second signal during the shutdown gets the previous handler: Ctrl-C twice
    interrupts it) and restores them before returning. From another thread, pass ``stop``.

    Args:
        instance: a delivering instance with its emitters attached.
        exit_timeout: the most seconds the final shutdown may spend delivering.
        stop: an event that ends the loop as a signal would.
        ready: called once the handlers are in place (a signal from then on stops cleanly).

    Returns:
        0, the worker's exit status.

    Raises:
        ValueError: ``instance`` was made with ``deliver=False``.
        WebhooksEmitterError: called outside the main thread without ``stop``.
    """
    if not instance.delivers:
        raise ValueError("run_worker needs an instance that delivers (made with deliver=True)")
    main = threading.current_thread() is threading.main_thread()
    if stop is None:
        if not main:
            raise WebhooksEmitterError("run_worker must run in the main thread, or get stop=")
        stop = threading.Event()
    stopping = stop
    received: list[int] = []
    previous: dict[signal.Signals, Any] = {}

    def handle(signum: int, frame: Any) -> None:
        received.append(signum)
        for number, handler in previous.items():
            signal.signal(number, handler)
        stopping.set()

    if main:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handle)
    try:
        logger.info(
            "webhooks_emitter worker started: %d emitter(s) over %s",
            len(instance.list_emitters()),
            instance.store.describe(),
        )
        if ready is not None:
            ready()
        # Woken at once by set(); the timeout only bounds a wait a signal might not cut.
        while not stopping.wait(1.0):
            pass
    finally:
        for number, handler in previous.items():
            if signal.getsignal(number) is handle:
                signal.signal(number, handler)
    why = signal.Signals(received[0]).name if received else "stop requested"
    logger.info(
        "webhooks_emitter worker stopping (%s): delivering for up to %g s", why, exit_timeout
    )
    instance.shutdown(exit_timeout)
    return 0


def status(store: Store) -> dict[str, dict[str, Any]]:
    """Per emitter id the store knows: what the ``status --json`` commands print.

    Returns:
        ``{emitter_id: {"queued": int, "failed": int, "paused": bool,
        "oldest_queued_age": seconds (float) or None, "lease_holder": "host:pid" or None}}``,
        sorted by emitter id.

    Raises:
        StoreError: the store could not be read.
    """
    now = time.time()
    result: dict[str, dict[str, Any]] = {}
    for state in sorted(store.states(), key=lambda s: s.emitter_id):
        age = None
        if state.queued and state.oldest_queued_at is not None:
            age = round(max(now - state.oldest_queued_at, 0.0), 3)
        result[state.emitter_id] = {
            "queued": state.queued,
            "failed": state.failed,
            "paused": state.paused,
            "oldest_queued_age": age,
            "lease_holder": state.lease_holder,
        }
    return result


def format_status(report: Mapping[str, Mapping[str, Any]]) -> str:
    """:func:`status`'s result as a table for people (no trailing newline)."""
    if not report:
        return "no emitters in the store"
    header = ("EMITTER", "QUEUED", "FAILED", "PAUSED", "OLDEST", "LEASE")
    rows = [header]
    for emitter_id, row in report.items():
        age = row["oldest_queued_age"]
        rows.append(
            (
                emitter_id,
                str(row["queued"]),
                str(row["failed"]),
                "yes" if row["paused"] else "no",
                "-" if age is None else f"{age:.1f}s",
                row["lease_holder"] or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths)).rstrip() for r in rows
    )


def list_failed(store: Store, emitter_id: str, limit: int = 100) -> list[FailedEvent]:
    """The failed events of ``emitter_id`` in ``store``, oldest first, up to ``limit``.

    Raises:
        TypeError, ValueError: a bad ``emitter_id`` or ``limit``.
        StoreError: the store could not be read.
    """
    emitter_id = check_name(emitter_id, "emitter_id")
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, not {type(limit).__name__}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit!r}")
    return store.failed(emitter_id, limit)


def replay_failed(
    store: Store, emitter_id: str, request_ids: Optional[Iterable[str]] = None
) -> int:
    """Queue the failed events of ``emitter_id`` again (all, or those request ids), for
    whichever process delivers that emitter; returns how many.

    Raises:
        TypeError, ValueError: a bad ``emitter_id`` or request id.
        StoreError: the store could not do it.
    """
    emitter_id = check_name(emitter_id, "emitter_id")
    ids = None
    if request_ids is not None:
        if isinstance(request_ids, (str, bytes)):
            raise TypeError("request_ids must be an iterable of request ids, not a single str")
        ids = [check_name(i, "request_id") for i in request_ids]
    return store.replay(emitter_id, ids)


def failed_json(events: Iterable[FailedEvent]) -> list[dict[str, Any]]:
    """``events`` as the ``failed --json`` commands print them: ``FailedEvent``'s fields,
    ``failed_at`` in ISO 8601 and ``body`` as text."""
    return [
        {
            "emitter_id": event.emitter_id,
            "event": event.event,
            "request_id": event.request_id,
            "attempts": event.attempts,
            "status_code": event.status_code,
            "error": event.error,
            "failed_at": _iso(event.failed_at),
            "body": event.body.decode("utf-8", "replace"),
        }
        for event in events
    ]


def format_failed(events: Iterable[FailedEvent]) -> str:
    """Failed events as lines for people (no trailing newline)."""
    lines = []
    for event in events:
        outcome = f"HTTP {event.status_code}" if event.status_code is not None else "no answer"
        if event.error and event.error != outcome:
            outcome += f" ({event.error})"
        tries = "1 try" if event.attempts == 1 else f"{event.attempts} tries"
        when = _iso(event.failed_at)
        lines.append(f"{when}  {event.request_id}  {event.event}  {tries}  {outcome}")
    return "\n".join(lines) if lines else "no failed events"


def _iso(when: datetime.datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.isoformat()
