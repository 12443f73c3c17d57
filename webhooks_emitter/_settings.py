"""The framework settings (``STORE``, ``EMITTERS``, ``DELIVER``, ``EXIT_TIMEOUT``), read and
checked into emitters: what Flask's ``app.config`` and Django's ``settings.WEBHOOKS_EMITTER``
share.

    >>> settings = settings_from_mapping(
    ...     {"STORE": "sqlite:////var/lib/app/hooks.db",
    ...      "EMITTERS": {"billing": {"url": "https://billing.example/hooks",
    ...                               "events": ["order.paid"], "secret": "s3cret"}}},
    ...     key_format="WEBHOOKS_EMITTER_{}",
    ... )                                                                # doctest: +SKIP
    >>> instance = settings.make_instance(deliver=True)                  # doctest: +SKIP

An emitter's fields are checked together, exactly as :class:`Config` checks them (a
``backoff_limit`` below the default ``backoff_start`` is fine beside a smaller
``backoff_start``), and an unknown key is named with the closest known one.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Callable, Optional, Union

import attrs

from ._config import Config
from ._encoding import check_name
from ._hub import WebhooksEmitter
from ._validate import number, unknown_name
from .exceptions import SettingError, SettingTypeError, SettingValueError
from .stores import Store, check_url, from_url, redact

__all__ = [
    "DEFAULTS",
    "EmitterSettings",
    "Settings",
    "attach_all",
    "check_settings",
    "load_callable",
    "require_durable",
    "settings_from_mapping",
]

#: Every setting and its default; the frameworks name them with their own prefix.
DEFAULTS: Mapping[str, Any] = {
    "STORE": "memory:",
    "EMITTERS": {},
    "DELIVER": True,
    "EXIT_TIMEOUT": 5.0,
}


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
        store_key: the store setting's name as the application writes it, for messages.
    """

    # Shown without its password: a settings object may end up in a log line or a traceback.
    store: Union[str, Store] = attrs.field(
        repr=lambda store: repr(redact(store) if isinstance(store, str) else store)
    )
    emitters: tuple[EmitterSettings, ...]
    deliver: bool
    exit_timeout: float
    store_key: str = "STORE"

    @property
    def durable(self) -> bool:
        """Whether the store keeps events beyond this process (any store but memory)."""
        if isinstance(self.store, Store):
            return self.store.durable
        return self.store.partition(":")[0].strip().lower() != "memory"

    def open_store(self, *, create: bool = True) -> Store:
        """A store for these settings: a new one made from the URL, or the store object.

        Args:
            create: False opens an existing store only (no file or schema is made), for
                the operator commands.

        Raises:
            SettingValueError: the URL names no store this library has (the message
                starts with the setting's name and never shows a password).
            StoreError: the store could not be opened.
        """
        if not isinstance(self.store, str):
            return self.store
        try:
            # create= only where False: the memory store takes no options.
            return from_url(self.store, **({} if create else {"create": False}))
        except (TypeError, ValueError) as exc:
            raise SettingValueError(self.store_key, str(exc)) from None

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
            message = unknown_name("setting", key(name), [key(k) for k in DEFAULTS])
            errors.append(SettingValueError(key(name), message))
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
                "False needs a durable store (sqlite:///path.db or postgresql://...) in "
                f"{key('STORE')}; with memory: nothing would ever deliver the events",
            )
        )

    exit_timeout = merged["EXIT_TIMEOUT"]
    try:
        exit_timeout = number("value", exit_timeout, finite=False)
    except (TypeError, ValueError) as exc:
        errors.append(_wrap(key("EXIT_TIMEOUT"), exc, strip="value "))

    emitters = _check_emitters(merged["EMITTERS"], key("EMITTERS"), errors)
    if errors:
        return None, errors
    return (
        Settings(
            store=store,
            emitters=tuple(emitters),
            deliver=deliver,
            exit_timeout=float(exit_timeout),
            store_key=key("STORE"),
        ),
        [],
    )


def _check_store_url(url: str, extra: Collection[str]) -> tuple[str, Optional[str]]:
    """The URL's scheme, and what is wrong with the URL (None when nothing is); the
    problem never shows a password."""
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if sep and scheme in extra:
        if not rest:
            return scheme, f"{url!r} names nothing after {scheme}:"
        return scheme, None
    try:
        return check_url(url)[0], None
    except (TypeError, ValueError) as exc:
        return scheme, str(exc)


_CONFIG_FIELDS = tuple(field.name for field in attrs.fields(Config) if field.name != "url")
_EMITTER_KEYS = ("url", "events", *_CONFIG_FIELDS)


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
    for name in fields:
        if name not in _EMITTER_KEYS:
            errors.append(
                SettingValueError(
                    f"{here}[{name!r}]",
                    unknown_name("key", name, _EMITTER_KEYS)
                    + "; an emitter takes url, events and Config's fields",
                )
            )
    for name in ("url", "events"):
        if name not in fields:
            errors.append(SettingValueError(f"{here}[{name!r}]", "is required"))
    events: list[str] = []
    if "events" in fields:
        events = _check_events(fields["events"], f"{here}['events']", errors)
    options: dict[str, Any] = {}
    for name, option in fields.items():
        if name not in _CONFIG_FIELDS:
            continue
        if name == "on_delivery" and isinstance(option, str):
            try:
                option = load_callable(option, "on_delivery")
            except (TypeError, ValueError) as exc:
                errors.append(_wrap(f"{here}['on_delivery']", exc))
                continue
        options[name] = option
    if len(errors) > found:
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
    """``Config(url, **options)``, checked as ``Config`` checks it: every field together.

    A problem is put on the key its message names first (``backoff_limit (0.05) must be
    >= backoff_start (1)`` on ``backoff_limit``). That field is then left out and the rest
    tried again, so that several bad fields are each reported; a later problem that
    names a field left out is not reported (it may only be the default's doing).
    """
    left = dict(options)
    dropped: set[str] = set()
    while True:
        try:
            config = Config(url, **left)
        except (TypeError, ValueError) as exc:
            message = str(exc)
            named = sorted(
                (message.find(name), name)
                for name in ("url", *left)
                if _mentions(message, name)
            )
            if dropped and any(_mentions(message, name) for name in dropped):
                return None
            if not named or named[0][1] == "url":
                errors.append(_wrap(f"{here}['url']" if named else here, exc))
                return None
            field = named[0][1]
            errors.append(_wrap(f"{here}[{field!r}]", exc))
            del left[field]
            dropped.add(field)
            continue
        return None if dropped else config


def _mentions(message: str, name: str) -> bool:
    """Whether ``message`` names the field ``name`` as a word (``max_attempts``, not the
    ``attempts`` inside it)."""
    start = message.find(name)
    while start >= 0:
        end = start + len(name)
        before = message[start - 1] if start else " "
        after = message[end] if end < len(message) else " "
        if not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_"):
            return True
        start = message.find(name, end)
    return False


def _wrap(key: str, exc: BaseException, *, strip: str = "") -> SettingError:
    message = str(exc)
    if strip and message.startswith(strip):
        message = message[len(strip) :]
    if isinstance(exc, TypeError):
        return SettingTypeError(key, message)
    return SettingValueError(key, message)


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
