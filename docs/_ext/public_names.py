"""Resolve references to where a name is exported, not where it is defined.

The library defines its classes in private modules (``webhooks_emitter._config.Config``) and
exports them from public ones (``webhooks_emitter.Config``); the reference documents the
public names. Type hints in signatures, and short names in docstrings, name the private
place or no module at all. This extension maps them to the documented public name:

- ``webhooks_emitter.<...>._private.Name`` to the public module that exports that object;
- a short or partly qualified name (``Name``, ``Class.method``) to the one documented
  object whose full name ends with it, when there is exactly one.

Anything else stays unresolved, and the nitpicky build reports it.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Optional

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

#: The modules whose ``__all__`` are the public names, in order of preference.
PUBLIC_MODULES = [
    "webhooks_emitter",
    "webhooks_emitter.stores",
    "webhooks_emitter.signing",
    "webhooks_emitter.testing",
    "webhooks_emitter.contrib",
    "webhooks_emitter.contrib.flask",
    "webhooks_emitter.contrib.django",
]


def _where_defined(obj: Any) -> Optional[str]:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        return f"{module}.{qualname}"
    return None


def public_map() -> dict[str, str]:
    """``{defined name: public name}`` for every exported class, function and exception."""
    found: dict[str, str] = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            defined = _where_defined(obj)
            if defined and defined not in found:
                found[defined] = f"{module_name}.{name}"
    return found


def _resolve(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.TextElement
) -> Optional[nodes.Element]:
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    domain = env.get_domain("py")
    mapped = app.config._public_map.get(target)
    if mapped is None:
        # A short or partly qualified name: the one documented object whose full name ends
        # with it ("WebhooksEmitter.emit" is webhooks_emitter.WebhooksEmitter.emit).
        candidates = [
            name
            for name, entry in domain.objects.items()  # type: ignore[attr-defined]
            if (name == target or name.endswith("." + target)) and not entry.aliased
        ]
        if len(candidates) == 1:
            mapped = candidates[0]
    if mapped is None or mapped == target:
        return None
    node = node.deepcopy()
    node["reftarget"] = mapped
    node["refspecific"] = False
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], mapped, node, contnode
    )


def _init(app: Sphinx) -> None:
    app.config._public_map = public_map()


class AutoAll(SphinxDirective):
    """``.. autoall:: module``: every name of ``module.__all__``, grouped by kind.

    Functions first, then classes, exceptions and other names, each group in ``__all__``
    order, each documented by the matching autodoc directive; a name added to ``__all__``
    appears at the next build. ``:skip:`` names (comma-separated) are left to the page;
    ``:exclude-members:`` is passed to every class.
    """

    required_arguments = 1
    option_spec = {"skip": directives.unchanged, "exclude-members": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        module_name = self.arguments[0]
        module = importlib.import_module(module_name)
        skip = {name.strip() for name in self.options.get("skip", "").split(",") if name.strip()}
        groups: dict[str, list[str]] = {"Functions": [], "Classes": [], "Exceptions": []}
        groups["Other names"] = []
        for name in module.__all__:
            obj = getattr(module, name)
            if name in skip or inspect.ismodule(obj):
                continue
            if inspect.isclass(obj) and issubclass(obj, BaseException):
                groups["Exceptions"].append(f".. autoexception:: {module_name}.{name}")
            elif inspect.isclass(obj):
                exclude = self.options.get("exclude-members")
                entry = f".. autoclass:: {module_name}.{name}\n   :members:"
                if exclude:
                    entry += f"\n   :exclude-members: {exclude}"
                groups["Classes"].append(entry)
            elif callable(obj):
                groups["Functions"].append(f".. autofunction:: {module_name}.{name}")
            else:
                groups["Other names"].append(f".. autodata:: {module_name}.{name}")
        lines: list[str] = []
        for title, entries in groups.items():
            if entries:
                lines += [title, "-" * len(title), ""]
                for entry in entries:
                    lines += [*entry.splitlines(), ""]
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(lines, source=module_name), container)
        return list(container.children)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the resolver and the ``autoall`` directive."""
    app.add_directive("autoall", AutoAll)
    app.connect("builder-inited", _init)
    app.connect("missing-reference", _resolve)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
