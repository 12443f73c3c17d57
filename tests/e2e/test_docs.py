"""The documentation site (docs/) and the README: built, linked, complete, and their code run.

The site is built once per test run, by ``sphinx-build -W --keep-going -n`` (warnings are
errors, every cross-reference must resolve) into a temporary folder, and the tests below
read what it produced: the build's own warnings, ``objects.inv`` (what the reference
documents), the HTML pages (their links) and ``examples.json`` (the code examples, written
by ``docs/_ext/examples.py``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import fcntl
import html.parser
import importlib
import json
import os
import pathlib
import re
import subprocess
import sys
import types
import urllib.parse
from collections.abc import Iterator
from typing import Any

import attrs
import docutils.core
import docutils.utils
import pytest
from sphinx.util.inventory import InventoryFile

from webhooks_emitter import cli, signing
from webhooks_emitter.testing import Receiver

HERE = pathlib.Path(__file__).resolve().parent
# The repository root: the nearest folder above this file with setup.cfg (the tests may be
# regrouped into subfolders of tests/).
ROOT = next(folder for folder in HERE.parents if (folder / "setup.cfg").exists())
#: Runs one example with the network fenced to loopback; it stays beside this file.
RUNNER = HERE / "doc_example.py"
DOCS = ROOT / "docs"
README = ROOT / "README.rst"

#: The modules whose every public name (``__all__``) the reference must document.
PUBLIC_MODULES = (
    "webhooks_emitter",
    "webhooks_emitter.stores",
    "webhooks_emitter.signing",
    "webhooks_emitter.testing",
    "webhooks_emitter.contrib",
    "webhooks_emitter.contrib.flask",
    "webhooks_emitter.contrib.django",
)

#: A build that finds fewer examples than this lost some (a directive renamed, a page gone).
FEWEST_EXAMPLES = 8


@attrs.frozen
class Build:
    """What one ``sphinx-build`` run left: its exit status, its warnings, its output folder."""

    returncode: int
    warnings: str
    html: pathlib.Path


def _shared_folder(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    # Under xdist every worker has its own basetemp inside one folder of this run: build
    # there once, for all of them. Without xdist, basetemp is this run's own folder.
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return base / "docs"


def _build(out: pathlib.Path) -> Build:
    html_dir = out / "html"
    command = [
        sys.executable,
        "-m",
        "sphinx",
        "-b",
        "html",
        "-W",
        "--keep-going",
        "-n",
        "-q",
        "-j",
        "1",
        "-d",
        str(out / "doctrees"),
        str(DOCS),
        str(html_dir),
    ]
    # A separate interpreter: the docs configure Django's settings, which must not leak into
    # the tests of this process.
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, timeout=300, check=False
    )
    return Build(done.returncode, (done.stderr + done.stdout).strip(), html_dir)


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """The site, built once for the run (the first xdist worker builds, the others wait)."""
    out = _shared_folder(tmp_path_factory)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result_file = out / "result.json"
        if result_file.exists():
            saved = json.loads(result_file.read_text())
            return Build(saved["returncode"], saved["warnings"], pathlib.Path(saved["html"]))
        result = _build(out)
        saved = {"returncode": result.returncode, "warnings": result.warnings}
        result_file.write_text(json.dumps({**saved, "html": str(result.html)}))
        return result


@pytest.fixture(scope="session")
def inventory(build: Build) -> dict[str, dict[str, Any]]:
    """``objects.inv`` of the build: ``{role: {name: entry}}``."""
    assert build.returncode == 0, build.warnings
    with open(build.html / "objects.inv", "rb") as stream:
        loaded = InventoryFile.load(stream, "", os.path.join)
    return {role: dict(entries) for role, entries in loaded.items()}


def test_docs_build_with_no_warning(build: Build) -> None:
    """sphinx-build -W --keep-going -n (nitpicky) succeeds and prints no warning at all."""
    assert build.returncode == 0 and not build.warnings, (
        f"the documentation build failed (status {build.returncode}):\n{build.warnings}"
    )


def _documented(inventory: dict[str, dict[str, Any]], full_name: str) -> bool:
    return any(
        full_name in entries for role, entries in inventory.items() if role.startswith("py:")
    )


def test_every_public_name_is_in_the_reference(inventory: dict[str, dict[str, Any]]) -> None:
    """Each name of each public module's __all__ is an entry of the built reference."""
    missing = []
    checked = 0
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        assert _documented(inventory, module_name) and inventory["py:module"].get(module_name)
        for name in module.__all__:
            checked += 1
            obj = getattr(module, name)
            if isinstance(obj, types.ModuleType):
                found = obj.__name__ in inventory["py:module"]
            else:
                found = _documented(inventory, f"{module_name}.{name}")
            if not found:
                missing.append(f"{module_name}.{name}")
    assert checked > 50
    assert not missing, f"public names missing from the reference: {missing}"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def test_cli_reference_has_every_subcommand_and_option(
    inventory: dict[str, dict[str, Any]],
) -> None:
    """Every subcommand of build_parser(), and each of its options, is in the CLI reference."""
    options = inventory["std:cmdoption"]
    missing = []
    commands = _subcommands(cli.build_parser())
    assert {"demo", "send", "listen", "verify", "worker", "status"} <= set(commands)
    for name, parser in commands.items():
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            metavar = action.metavar if isinstance(action.metavar, str) else action.dest
            for option in action.option_strings or [metavar]:
                key = f"{cli.PROG}-{name}.{option}"
                if key not in options:
                    missing.append(key)
    assert not missing, f"missing from the CLI reference: {missing}"


def _django_commands() -> dict[str, argparse.ArgumentParser]:
    """The options each management command of the Django app adds (Django's own left out)."""
    import webhooks_emitter.contrib.django as app

    folder = pathlib.Path(app.__file__).parent / "management" / "commands"
    found = {}
    for path in sorted(folder.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        module = importlib.import_module(f"{app.__name__}.management.commands.{path.stem}")
        parser = argparse.ArgumentParser(add_help=False)
        module.Command().add_arguments(parser)
        found[path.stem] = parser
    return found


def test_flask_and_django_command_references_have_every_option(
    inventory: dict[str, dict[str, Any]],
) -> None:
    """Every ``flask webhooks`` command and every management command, with each of its
    options, is in the settings reference (generated from the commands themselves)."""
    from webhooks_emitter.contrib import flask as flask_contrib

    options = inventory["std:cmdoption"]
    expected = []
    for name, command in flask_contrib.cli.commands.items():
        for param in command.params:
            expected += [f"flask-webhooks-{name}.{opt}" for opt in param.opts if opt[0] == "-"]
    django = _django_commands()
    assert {"webhooks_worker", "webhooks_status", "webhooks_failed", "webhooks_replay"} <= set(
        django
    )
    for name, parser in django.items():
        for action in parser._actions:
            expected += [f"manage.py-{name}.{opt}" for opt in action.option_strings]
            if not action.option_strings:
                metavar = action.metavar if isinstance(action.metavar, str) else action.dest
                expected.append(f"manage.py-{name}.{metavar}")
    assert len(expected) > 8
    missing = [key for key in expected if key not in options]
    assert not missing, f"missing from the settings reference: {missing}"


class _Links(html.parser.HTMLParser):
    """The hrefs and the ids of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attributes: list[tuple[str, str | None]]) -> None:
        for name, value in attributes:
            if name == "id" and value:
                self.ids.add(value)
            elif name == "href" and value and tag == "a":
                self.hrefs.append(value)


def test_internal_links_lead_to_a_page_and_an_anchor(build: Build) -> None:
    """Every relative link of every built page names a page that exists, and an id in it."""
    assert build.returncode == 0, build.warnings
    pages: dict[pathlib.Path, _Links] = {}
    for path in build.html.rglob("*.html"):
        parsed = _Links()
        parsed.feed(path.read_text(encoding="utf-8"))
        pages[path.resolve()] = parsed
    assert len(pages) > 20
    broken = []
    for path, parsed in pages.items():
        for href in parsed.hrefs:
            parts = urllib.parse.urlsplit(href)
            if parts.scheme or parts.netloc or href.startswith("mailto:"):
                continue  # another site: not checked (the build has no network)
            target = path
            if parts.path:
                target = (path.parent / urllib.parse.unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{path.relative_to(build.html)}: {href} (no such file)")
            elif parts.fragment and target.suffix == ".html":
                if target not in pages:
                    continue  # a page of the theme's own (search, genindex) is parsed above
                if urllib.parse.unquote(parts.fragment) not in pages[target].ids:
                    broken.append(f"{path.relative_to(build.html)}: {href} (no such anchor)")
    assert not broken, "broken internal links:\n" + "\n".join(broken)


@contextlib.contextmanager
def _receiver(example: dict[str, Any]) -> Iterator[Receiver]:
    secret = example["secret"]
    scheme = signing.SCHEMES[example["scheme"]] if secret else signing.WEBHOOKS_EMITTER
    with Receiver(secret=secret, scheme=scheme) as running:
        yield running


def _run_example(example: dict[str, Any], folder: pathlib.Path) -> str:
    """Run one example; return what went wrong ("" when it did what its options say)."""
    where = f"{example['docname']}.rst, line {example['line']}"
    with _receiver(example) as receiver:
        base = receiver.url.rsplit("/", 1)[0]  # http://127.0.0.1:<port>
        code = example["code"].replace(example["endpoint"], base)
        script = folder / "example.py"
        script.write_text(code, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        done = subprocess.run(
            [sys.executable, str(RUNNER), str(script)],
            capture_output=True,
            text=True,
            cwd=folder,
            env=env,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            return f"{where}: exit status {done.returncode}\n{done.stdout}{done.stderr}"
        if example["shows"] and example["shows"] not in done.stdout:
            return f"{where}: its output lacks {example['shows']!r}:\n{done.stdout}"
        expected = example["requests"]
        if expected:
            try:
                receiver.wait_for(expected, timeout=10)
            except Exception as exc:  # noqa: BLE001 - reported with the example's place
                return f"{where}: the receiver got {len(receiver.requests)} of {expected}: {exc}"
        got = receiver.requests
        if len(got) != expected:
            return f"{where}: the receiver got {len(got)} requests, the example says {expected}"
        bad = [r.signature_error for r in got if example["secret"] and r.signature_error]
        if bad:
            return f"{where}: signatures did not verify: {bad}"
    return ""


def test_code_examples_run_against_a_loopback_receiver(
    build: Build, tmp_path: pathlib.Path
) -> None:
    """Each ``.. example::`` of the docs runs in a fresh interpreter, sending only to a loopback
    receiver, exits 0, and the receiver gets exactly the requests the example says."""
    assert build.returncode == 0, build.warnings
    index = json.loads((build.html / "examples.json").read_text(encoding="utf-8"))
    examples = index["examples"]
    assert len(examples) >= FEWEST_EXAMPLES, f"only {len(examples)} examples found"
    folders = []
    for number in range(len(examples)):
        folders.append(tmp_path / f"example-{number}")
        folders[-1].mkdir()
    # Each example mostly waits (an interpreter starting, a flush): a few at once, each with
    # its own receiver and folder.
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        problems = list(pool.map(_run_example, examples, folders))
    failures = [problem for problem in problems if problem]
    assert not failures, "\n\n".join(failures)


def _readme_test_command() -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"Run the tests::\n\n    (.+)\n", text)
    assert found, "README.rst has no 'Run the tests::' block"
    return found.group(1).strip()


def test_readme_is_short_valid_and_its_test_command_is_what_ci_runs() -> None:
    """README.rst has at most 200 lines, is valid reStructuredText (PyPI renders it), and
    .ci/run runs exactly the test command it shows."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    strict = {"halt_level": docutils.utils.Reporter.WARNING_LEVEL, "report_level": 5}
    docutils.core.publish_doctree(text, settings_overrides=strict)
    command = _readme_test_command()
    assert command == (
        "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'"
        " && .venv/bin/python -m pytest"
    )
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command in ci
