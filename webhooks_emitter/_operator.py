"""What operators run, in one import: the settings (:mod:`._settings`), the worker loop
(:mod:`._worker`) and the reports (:mod:`._reports`).

The command line, the ``flask webhooks`` commands and Django's management commands are thin
wrappers over these functions, so the three behave alike. Each job has its own module; this
one only gathers their names for code (and tests) that used them from here.
"""

from __future__ import annotations

from ._reports import (
    failed_json,
    format_failed,
    format_status,
    list_failed,
    pause_emitter,
    replay_failed,
    restart_emitter,
    status,
)
from ._settings import (
    DEFAULTS,
    EmitterSettings,
    Settings,
    attach_all,
    check_settings,
    load_callable,
    require_durable,
    settings_from_mapping,
)
from ._worker import parse_http, run_worker, serve_http
from .exceptions import SettingError, SettingTypeError, SettingValueError

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
    "parse_http",
    "pause_emitter",
    "replay_failed",
    "require_durable",
    "restart_emitter",
    "run_worker",
    "serve_http",
    "settings_from_mapping",
    "status",
]
