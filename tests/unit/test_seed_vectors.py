"""The signature vectors are part of the repository: the tests read nothing outside it.

A fresh clone, with nothing beside it, must be able to run the whole suite (issue 9, item 1).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import seed_vectors

TESTS = Path(__file__).resolve().parents[1] / "support"
REPOSITORY = TESTS.parent.parent
#: A path with a ``..`` component, or one through a ``shared`` directory.
OUTSIDE = re.compile(r"(^|[/\\])\.\.[/\\]|[/\\]\.\.$|(^|[/\\])shared[/\\]")


def test_the_vectors_are_read_from_the_copy_in_the_repository() -> None:
    """``seed_vectors`` reads ``tests/support/vectors/seed_signatures.json``, which holds
    vectors."""
    path = seed_vectors.find()
    assert path == TESTS / "vectors" / "seed_signatures.json"
    assert path.resolve().is_relative_to(REPOSITORY)
    vectors = json.loads(path.read_text(encoding="utf-8"))
    assert vectors == seed_vectors.load()
    assert len(vectors) >= 6
    assert all(v["signature"].startswith("sha256:") for v in vectors)


def test_the_vectors_say_where_they_come_from() -> None:
    """Beside the data, a README names the original library and its own expression."""
    note = (TESTS / "vectors" / "README.rst").read_text(encoding="utf-8")
    assert "VoiSmart/webhooks_emitter" in note
    assert "Base.hex_encode32(case: :lower, padding: false)" in note


def test_the_loader_works_in_a_copy_with_nothing_beside_it(tmp_path: Path) -> None:
    """The loader and its data copied alone into an empty directory load the same vectors.

    This is a fresh clone's situation: no ``shared/`` directory next to the repository or
    above it, and no environment variable pointing elsewhere.
    """
    clone = tmp_path / "clone" / "tests"
    shutil.copytree(TESTS / "vectors", clone / "vectors")
    shutil.copy2(TESTS / "seed_vectors.py", clone)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOKS_EMITTER")}
    code = "import json, seed_vectors; print(json.dumps(seed_vectors.load()))"
    done = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, '.'); {code}"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == seed_vectors.load()


def _code_strings(path: Path) -> list[str]:
    """The string constants of a module, without its docstrings (prose may name anything)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_no_test_or_benchmark_names_a_path_outside_the_repository() -> None:
    """No string in the code of ``tests/`` or ``benchmarks/`` is a ``..`` or ``shared/`` path."""
    found = [
        f"{path.relative_to(REPOSITORY)}: {text!r}"
        for folder in ("tests", "benchmarks")
        for path in sorted((REPOSITORY / folder).rglob("*.py"))
        for text in _code_strings(path)
        if OUTSIDE.search(text)
    ]
    assert found == []
