"""Settings of the test project, chosen by the environment.

``HOOKS_DB_URL``
    a ``postgresql://`` URL for the default database (SQLite in memory otherwise).
``HOOKS_RECEIVER_URL``
    where the emitter ``shop`` delivers (default: a port nothing listens on; the tests
    capture, or attach their own emitters).
``HOOKS_STORE``, ``HOOKS_DELIVER`` (``0``: False)
    ``WEBHOOKS_EMITTER["STORE"]`` and ``["DELIVER"]``.
``WEBHOOKS_EMITTER_JSON``
    the whole ``WEBHOOKS_EMITTER`` setting as JSON, replacing the above (for the checks).
``HOOKS_LOG`` (``1``)
    every log record of the library, INFO and up, on standard error as
    ``LOG <logger> <level> <message>``.
"""

from __future__ import annotations

import json
import os
from typing import Any

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
ROOT_URLCONF = "project.urls"
STATIC_URL = "/static/"  # LiveServerTestCase serves static files under it

INSTALLED_APPS = [
    "webhooks_emitter.contrib.django",
    "shop",
]

MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]


def _database() -> dict[str, Any]:
    url = os.environ.get("HOOKS_DB_URL")
    if not url:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
    from psycopg.conninfo import conninfo_to_dict

    params = {key: str(value) for key, value in conninfo_to_dict(url).items()}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.pop("dbname", ""),
        "USER": params.pop("user", ""),
        "PASSWORD": params.pop("password", ""),
        "HOST": params.pop("host", ""),
        "PORT": params.pop("port", ""),
        "OPTIONS": params,
    }


DATABASES = {"default": _database()}

if "WEBHOOKS_EMITTER_JSON" in os.environ:
    WEBHOOKS_EMITTER = json.loads(os.environ["WEBHOOKS_EMITTER_JSON"])
else:
    WEBHOOKS_EMITTER = {
        "EMITTERS": {
            "shop": {
                "url": os.environ.get("HOOKS_RECEIVER_URL", "http://127.0.0.1:9/hooks"),
                "events": ["*"],
                "secret": "supersecret",
                "backoff_start": 0.001,
                "max_attempts": 2,
            },
        },
        "EXIT_TIMEOUT": 10,
    }
    if "HOOKS_STORE" in os.environ:
        WEBHOOKS_EMITTER["STORE"] = os.environ["HOOKS_STORE"]
    if "HOOKS_DELIVER" in os.environ:
        WEBHOOKS_EMITTER["DELIVER"] = os.environ["HOOKS_DELIVER"] != "0"

if os.environ.get("HOOKS_LOG") == "1":
    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "LOG %(name)s %(levelname)s %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "loggers": {"webhooks_emitter": {"handlers": ["stderr"], "level": "INFO"}},
    }
