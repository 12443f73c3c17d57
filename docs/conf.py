"""Sphinx configuration of the webhooks_emitter documentation.

Build it with ``python -m sphinx -W --keep-going -n docs docs/_build/html`` (``-n``: every
cross-reference must resolve). The build reads nothing from the network: intersphinx is not
used, and references to other projects' classes in signatures are listed in
``nitpick_ignore_regex`` below instead.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, os.path.dirname(HERE))  # the library of this checkout, not an installed one

# The Django integration's lazily imported names need configured settings to be documented.
import django  # noqa: E402
from django.conf import settings as django_settings  # noqa: E402

if not django_settings.configured:
    django_settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()

import optional_module  # noqa: E402
from sphinx.ext import napoleon  # noqa: E402

import webhooks_emitter  # noqa: E402

project = "webhooks_emitter"
author = "webhooks_emitter developers"
copyright = "webhooks_emitter developers; Apache License 2.0"  # noqa: A001
release = webhooks_emitter.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "cli_reference",
    "examples",
    "public_names",
    "config_table",
    "optional_module",
]

exclude_patterns = ["_build"]

# Modules that are not in every checkout yet (the observability integrations): their page
# documents them when they exist (.. optional-automodule::), and references to them are
# left unchecked when they do not.
OPTIONAL_MODULES = ("webhooks_emitter.contrib.opentelemetry", "webhooks_emitter.contrib.prometheus")
_absent_modules = [name for name in OPTIONAL_MODULES if not optional_module.module_exists(name)]
templates_path: list[str] = []
html_static_path: list[str] = []
html_theme = "furo"
html_title = f"webhooks_emitter {release}"
default_role = "any"
primary_domain = "py"
# Literal blocks (::) are shell sessions, config files and output; Python is marked as such.
highlight_language = "none"

# Reference pages document names where they are exported (webhooks_emitter.Config, not
# webhooks_emitter._config.Config).
add_module_names = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = False
autodoc_inherit_docstrings = True
# Type aliases stay named in signatures instead of being spelled out.
autodoc_type_aliases = {
    "SecretType": "webhooks_emitter.signing.SecretType",
    "Headers": "webhooks_emitter.signing.Headers",
    "SecretSource": "webhooks_emitter.contrib.SecretSource",
}

nitpicky = True
# Names exported by two public modules (webhooks_emitter.StoreError is
# webhooks_emitter.stores.StoreError) are documented under both, so a short name in a
# docstring finds two entries for one class: that is not a broken link.
suppress_warnings = ["ref.python"]
# Classes of the standard library and of other projects that appear in signatures, by their
# full names: the build has no network, so no intersphinx inventory resolves them. Only
# qualified names are listed, so that a broken reference to one of the library's own names
# is never hidden.
_STDLIB = "argparse|collections\\.abc|datetime|ipaddress|logging|os|pathlib|threading|typing"
_OTHER_PROJECTS = (
    "attr|attrs|click|django|flask|opentelemetry|prometheus_client|psycopg|psycopg2|requests"
    "|sqlalchemy|urllib3|werkzeug"
)
nitpick_ignore_regex = [
    (r"py:.*", rf"({_STDLIB})\..*"),
    (r"py:.*", rf"({_OTHER_PROJECTS})\..*"),
    # Private names in the library's own signatures: a protocol and type variables.
    (
        r"py:class",
        r"webhooks_emitter\.signing\._HeaderItems"
        r"|webhooks_emitter\.contrib\.(flask|django\.views)\.F"
        # The engine's side of the instance (its context for emitters) names its emitter.
        r"|webhooks_emitter\._emitter\.Emitter",
    ),
    # The exporters' signatures name the libraries' classes as their modules import them.
    (r"py:class", r"metrics\.MeterProvider|trace\.TracerProvider|CollectorRegistry"),
]
nitpick_ignore_regex.extend(
    (r"py:.*", re.escape(name) + r"(\..*)?") for name in _absent_modules
)

# Google-style docstrings ("Args:", "Returns:", "Raises:"), read by napoleon's parser, but not
# for data, attributes and properties: their docstrings are prose such as "The URL to attach
# emitters to: ...", which napoleon would read as "type: description".
_NAPOLEON = napoleon.Config(napoleon_numpy_docstring=False, napoleon_use_rtype=False)


def _google_docstring(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what in ("data", "attribute", "property"):
        return
    lines[:] = napoleon.GoogleDocstring(lines, _NAPOLEON, app, what, name, obj, options).lines()


def setup(app: Any) -> None:
    """Connect the docstring reader."""
    app.connect("autodoc-process-docstring", _google_docstring)
