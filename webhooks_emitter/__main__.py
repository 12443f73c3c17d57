"""``python -m webhooks_emitter``: the same command line as ``webhooks-emitter``."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
