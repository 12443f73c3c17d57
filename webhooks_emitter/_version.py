"""The installed package's version, read from its metadata once."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("webhooks_emitter")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
