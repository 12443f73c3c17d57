"""``.. optional-automodule:: name``: ``automodule`` for a module that a checkout may lack.

Some pages document modules that arrive in the repository at different times (the
observability integrations). When the module exists, this is exactly
``.. automodule:: name`` with the same options; when it does not, the page says so in one
sentence instead of failing the build. ``conf.py`` leaves references to absent modules
unchecked.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

#: The options passed on to ``automodule``.
OPTIONS = ("members", "undoc-members", "exclude-members", "special-members", "no-index")


def module_exists(name: str) -> bool:
    """Whether ``name`` can be found without importing it (its parents are imported)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


class OptionalAutomodule(SphinxDirective):
    """The directive; see the module docstring."""

    required_arguments = 1
    option_spec = {name: lambda value: value or "" for name in OPTIONS}

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        if not module_exists(name):
            text = f"The module {name} is not part of this version."
            return [nodes.paragraph(text, text)]
        lines = [f".. automodule:: {name}"]
        lines += [f"   :{option}: {value}".rstrip() for option, value in self.options.items()]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=self.get_source_info()[0]), 0, container)
        return list(container.children)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directive."""
    app.add_directive("optional-automodule", OptionalAutomodule)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
