"""The original library's signature vectors, from ``tests/support/vectors/seed_signatures.json``.

The file is a copy kept in the repository (``tests/support/vectors/README.rst`` says where it comes
from), so the tests need nothing beside the checkout. A missing or empty file is an error,
never a skip.
"""

from __future__ import annotations

import json
from pathlib import Path

PATH = Path(__file__).resolve().parent / "vectors" / "seed_signatures.json"


def find() -> Path:
    """The vector file's path (inside the repository); FileNotFoundError when it is missing."""
    if not PATH.is_file():
        raise FileNotFoundError(f"signature vectors not found at {PATH}")
    return PATH


def load() -> list[dict[str, str]]:
    """The vectors: a list of {"secret", "body", "signature"}."""
    path = find()
    vectors = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(vectors, list) or not vectors:
        raise ValueError(f"{path} holds no vectors")
    for vector in vectors:
        if not set(vector) >= {"secret", "body", "signature"}:
            raise ValueError(f"{path}: a vector lacks secret, body or signature: {vector!r}")
    return vectors
