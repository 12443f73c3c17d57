"""``.. example::``: a Python code block that the tests run, and how they find it.

An example is shown exactly like ``.. code-block:: python``. At the end of a build, every
example of every page is written to ``examples.json`` in the output folder, with the page it
is on and its options, for ``tests/e2e/test_docs.py`` to run each one in a fresh interpreter.

There, the URL prefix :data:`ENDPOINT` in the code is replaced by the address of a loopback
``webhooks_emitter.testing.Receiver``, so an example reads like real code and still sends
only to 127.0.0.1 (the runner also refuses any connection that is not to loopback).

Options:
    ``:requests: N`` how many requests the receiver must have got when the example ends
        (default 0).
    ``:secret: S`` the receiver checks every request's signature with this secret.
    ``:scheme: NAME`` ... with this signing scheme (default ``webhooks_emitter``).
    ``:shows: TEXT`` the example's standard output must contain this text.
    ``:endpoint: URL`` the prefix to replace, when the example names another one (a
        tutorial's ``http://127.0.0.1:8080`` of ``webhooks-emitter listen``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util.docutils import SphinxDirective

#: Examples write their receiver's URL with this prefix; the test runner replaces it.
ENDPOINT = "https://hooks.example.com"
#: The file that lists every example, in the builder's output folder.
INDEX = "examples.json"


class Example(SphinxDirective):
    """The directive; see the module docstring."""

    has_content = True
    option_spec = {
        "requests": directives.nonnegative_int,
        "secret": directives.unchanged_required,
        "scheme": directives.unchanged_required,
        "shows": directives.unchanged_required,
        "caption": directives.unchanged_required,
        "endpoint": directives.unchanged_required,
    }

    def run(self) -> list[nodes.Node]:
        code = "\n".join(self.content)
        block = nodes.literal_block(code, code)
        block["language"] = "python"
        self.set_source_info(block)
        examples = _examples(self.env).setdefault(self.env.docname, [])
        examples.append(
            {
                "docname": self.env.docname,
                "line": self.lineno,
                "code": code,
                "requests": self.options.get("requests", 0),
                "secret": self.options.get("secret"),
                "scheme": self.options.get("scheme", "webhooks_emitter"),
                "shows": self.options.get("shows"),
                "endpoint": self.options.get("endpoint", ENDPOINT),
            }
        )
        if "caption" in self.options:
            caption = nodes.caption(self.options["caption"], self.options["caption"])
            container = nodes.container("", caption, block, literal_block=True)
            return [container]
        return [block]


def _examples(env: BuildEnvironment) -> dict[str, list[dict[str, Any]]]:
    if not hasattr(env, "webhooks_examples"):
        env.webhooks_examples = {}  # type: ignore[attr-defined]
    return env.webhooks_examples  # type: ignore[attr-defined,no-any-return]


def _purge(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    _examples(env).pop(docname, None)


def _merge(app: Sphinx, env: BuildEnvironment, docnames: Any, other: BuildEnvironment) -> None:
    for docname in docnames:
        if docname in _examples(other):
            _examples(env)[docname] = _examples(other)[docname]


def _write(app: Sphinx, exception: Any) -> None:
    if exception is not None:
        return
    examples = [item for _, items in sorted(_examples(app.env).items()) for item in items]
    with open(os.path.join(app.outdir, INDEX), "w", encoding="utf-8") as out:
        json.dump({"endpoint": ENDPOINT, "examples": examples}, out, indent=1)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directive and the events that keep the list of examples."""
    app.add_directive("example", Example)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    app.connect("build-finished", _write)
    return {"version": "1", "env_version": 1, "parallel_read_safe": True}
