"""``.. config-fields:: module.Class``: an attrs class's fields, their defaults and meaning.

Names and defaults come from ``attrs.fields`` of the class, meanings from the ``Args:``
section of its docstring, so the table follows the code: a field added to ``Config`` shows
up at the next build, and a field without a line in ``Args:`` is a build warning.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

import attrs
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)


def _args_section(doc: str) -> dict[str, str]:
    """``{name: text}`` from a Google-style ``Args:`` section."""
    found: dict[str, str] = {}
    lines = inspect.cleandoc(doc).splitlines()
    try:
        start = lines.index("Args:") + 1
    except ValueError:
        return found
    current = None
    for line in lines[start:]:
        if line and not line.startswith(" "):
            break  # the section ended
        match = re.match(r"    (\w+): (.*)", line)
        if match:
            current = match.group(1)
            found[current] = match.group(2)
        elif current and line.strip():
            found[current] += " " + line.strip()
    return found


def _default(field: Any) -> str:
    if field.default is attrs.NOTHING:
        return "(required)"
    value = field.default
    if isinstance(value, attrs.Factory):  # type: ignore[arg-type]
        return "(made per instance)"
    name = getattr(value, "name", None)
    if name and type(value).__module__.endswith("signing"):
        return f"``signing.{name.upper()}``"
    if value is None and field.name == "max_attempts":
        return "``3`` (see below)"
    return f"``{value!r}``"


class ConfigFields(SphinxDirective):
    """The directive; see the module docstring."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        module_name, _, class_name = self.arguments[0].rpartition(".")
        cls = getattr(importlib.import_module(module_name), class_name)
        meanings = _args_section(cls.__doc__ or "")
        lines: list[str] = []
        for field in attrs.fields(cls):
            meaning = meanings.get(field.name)
            if meaning is None:
                logger.warning(
                    "%s.%s has no line in the Args: section of its docstring",
                    class_name,
                    field.name,
                    location=self.get_location(),
                )
                meaning = "(undocumented)"
            # A definition list rather than a table: the meanings are sentences, and a
            # three-column table is too wide for the page.
            lines += [f"``{field.name}`` = {_default(field)}", f"    {meaning}", ""]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=self.arguments[0]), 0, container)
        return list(container.children)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directive."""
    app.add_directive("config-fields", ConfigFields)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
