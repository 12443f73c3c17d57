"""Command references generated from the commands themselves, never copied by hand.

``.. cli-reference:: module:function``
    calls the function (it takes no argument and returns an :class:`argparse.ArgumentParser`)
    and writes, for the program and for each subcommand, its usage line, its description,
    each argument as an ``.. option::`` (so pages can link to
    ``:option:`webhooks-emitter send --secret```) and its epilog (examples). ``:prog:`` sets
    the program name of the headings (default: the parser's ``prog``).
``.. click-reference:: module:group``
    the same for a click group (the ``flask webhooks`` commands); ``:prog:`` as above.
``.. django-commands:: app.package [command ...]``
    the same for Django management commands (all those of the app when none is named), from
    the parser each command builds (Django's own options, common to every command, are left
    out).

An option added to a command appears in its reference at the next build.
"""

from __future__ import annotations

import argparse
import importlib
import os
import textwrap
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

# Usage lines are wrapped by argparse at $COLUMNS; fix the width so builds do not depend on
# the terminal they run in.
_WIDTH = "100"


def _load(spec: str) -> argparse.ArgumentParser:
    module_name, _, function_name = spec.partition(":")
    if not function_name:
        raise ValueError(f"cli-reference takes module:function, got {spec!r}")
    function = getattr(importlib.import_module(module_name), function_name)
    parser = function()
    if not isinstance(parser, argparse.ArgumentParser):
        raise TypeError(f"{spec} returned {type(parser).__name__}, not an ArgumentParser")
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """``(name, one-line help, parser)`` of each subcommand, in the order they were added."""
    found = []
    for action in parser._actions:  # argparse has no public API for this
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:  # an alias of a subcommand already listed
                    continue
                seen.add(id(sub))
                found.append((name, helps.get(name, ""), sub))
    return found


def _usage(parser: argparse.ArgumentParser) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = _WIDTH
    try:
        usage = parser.format_usage()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return usage.strip()


def _option_names(action: argparse.Action) -> str:
    if action.option_strings:
        metavar = ""
        if action.nargs != 0:
            metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
            metavar = " " + metavar
        return ", ".join(name + metavar for name in action.option_strings)
    metavar = action.metavar if isinstance(action.metavar, str) else action.dest
    return metavar


def _escape(text: str) -> str:
    """Help text as inline reStructuredText: no markup is read into it."""
    for char in "\\*`|_":
        text = text.replace(char, "\\" + char)
    return text


def _help(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    text = action.help or ""
    if "%" in text:
        params: dict[str, Any] = dict(vars(action), prog=parser.prog)
        for name, value in list(params.items()):
            if hasattr(value, "__name__"):
                params[name] = value.__name__
        if params.get("choices") is not None:
            params["choices"] = ", ".join(str(c) for c in params["choices"])
        text = text % params
    return " ".join(text.split())


def _help_text(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    """An action's help as reStructuredText; "(an argument)" for a positional without help."""
    text = _escape(_help(action, parser))
    if not text:
        text = "(an argument)" if not action.option_strings else "(no description)"
    return text


def _literal(lines: list[str], text: str) -> None:
    lines.append("::")
    lines.append("")
    lines.extend("    " + line if line.strip() else "" for line in text.splitlines())
    lines.append("")


def _describe(lines: list[str], parser: argparse.ArgumentParser, program: str) -> None:
    """Append the reStructuredText of one parser's usage, description, options and epilog."""
    _literal(lines, _usage(parser))
    if parser.description:
        description = textwrap.dedent(parser.description).strip("\n")
        if any(line.startswith(" ") for line in description.splitlines()):
            _literal(lines, description)  # laid out by hand (RawDescriptionHelpFormatter)
        else:
            lines.extend(_escape(line) for line in description.splitlines())
            lines.append("")
    lines.append(f".. program:: {program}")
    lines.append("")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        lines.append(f".. option:: {_option_names(action)}")
        lines.append("")
        lines.append("    " + _help_text(action, parser))
        lines.append("")
    if parser.epilog:
        _literal(lines, textwrap.dedent(parser.epilog))


class CliReference(SphinxDirective):
    """The directive; see the module docstring."""

    required_arguments = 1
    option_spec = {"prog": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        parser = _load(self.arguments[0])
        prog = self.options.get("prog") or parser.prog
        lines: list[str] = []
        _describe(lines, parser, prog)
        for name, help_text, sub in _subcommands(parser):
            title = f"``{prog} {name}``"
            lines.extend([title, "-" * len(title), ""])
            if help_text:
                lines.extend([_escape(help_text[0].upper() + help_text[1:]) + ".", ""])
            _describe(lines, sub, f"{prog} {name}")
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(lines, source=self.arguments[0]), container)
        return list(container.children)


def _click_option(lines: list[str], param: Any, context: Any) -> None:
    record = param.get_help_record(context)  # None for arguments, which have no help
    names, text = record if record else (param.human_readable_name, "")
    if not text:
        text = "(an argument" + (", any number of them)" if param.nargs == -1 else ")")
    lines += [f".. option:: {names}", "", "    " + _escape(" ".join(text.split())), ""]


class ClickReference(SphinxDirective):
    """``.. click-reference::``; see the module docstring."""

    required_arguments = 1
    option_spec = {"prog": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        import click

        module_name, _, attribute = self.arguments[0].partition(":")
        group = getattr(importlib.import_module(module_name), attribute)
        prog = self.options.get("prog") or group.name
        lines: list[str] = []
        for name, command in group.commands.items():
            context = click.Context(command, info_name=f"{prog} {name}")
            title = f"``{prog} {name}``"
            lines += [title, "~" * len(title), ""]
            _literal(lines, command.get_usage(context))
            if command.help:
                lines += [_escape(" ".join(command.help.split())), ""]
            lines += [f".. program:: {prog} {name}", ""]
            for param in command.get_params(context):
                _click_option(lines, param, context)
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(lines, source=self.arguments[0]), container)
        return list(container.children)


#: Options every Django management command has; documented by Django, not here.
DJANGO_COMMON = {
    "help",
    "version",
    "verbosity",
    "settings",
    "pythonpath",
    "traceback",
    "no_color",
    "force_color",
    "skip_checks",
}


class DjangoCommands(SphinxDirective):
    """``.. django-commands::``; see the module docstring."""

    required_arguments = 1
    optional_arguments = 50

    def run(self) -> list[nodes.Node]:
        from django.core.management import find_commands, load_command_class

        app_name, names = self.arguments[0], self.arguments[1:]
        if not names:
            package = importlib.import_module(app_name)
            folder = os.path.join(os.path.dirname(package.__file__ or ""), "management")
            names = sorted(find_commands(folder))
        lines: list[str] = []
        for name in names:
            command = load_command_class(app_name, name)
            parser = command.create_parser("manage.py", name)
            title = f"``manage.py {name}``"
            lines += [title, "~" * len(title), ""]
            own = [a for a in parser._actions if a.dest not in DJANGO_COMMON]
            _literal(lines, _usage(parser))
            if command.help:
                lines += [_escape(" ".join(str(command.help).split())), ""]
            lines += [f".. program:: manage.py {name}", ""]
            for action in own:
                lines.append(f".. option:: {_option_names(action)}")
                lines.append("")
                lines.append("    " + _help_text(action, parser))
                lines.append("")
            lines += ["Also Django's options common to every command (``--settings``, ...).", ""]
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(lines, source=app_name), container)
        return list(container.children)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directives."""
    app.add_directive("cli-reference", CliReference)
    app.add_directive("click-reference", ClickReference)
    app.add_directive("django-commands", DjangoCommands)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
