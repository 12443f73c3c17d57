"""The original library's signature vectors (``shared/vectors/seed_signatures.json``).

CI clones the repository with ``shared/`` beside it (``<parent>/main`` and
``<parent>/shared``); every ancestor of this file is tried, and the environment variable
``WEBHOOKS_EMITTER_VECTORS`` may point at the file directly. A missing or empty file is an
error, never a skip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

RELATIVE = Path("shared") / "vectors" / "seed_signatures.json"


def find() -> Path:
    """The vector file's path; FileNotFoundError listing every place tried."""
    override = os.environ.get("WEBHOOKS_EMITTER_VECTORS")
    candidates = [Path(override)] if override else []
    candidates.extend(parent / RELATIVE for parent in Path(__file__).resolve().parents)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "signature vectors not found; looked in:\n  "
        + "\n  ".join(str(c) for c in candidates)
        + "\nclone the shared/ directory beside the repository or set WEBHOOKS_EMITTER_VECTORS"
    )


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
