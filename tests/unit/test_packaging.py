"""The package as installed: version from metadata, typed, public names exported."""

from __future__ import annotations

import importlib.metadata
import importlib.resources

import webhooks_emitter


def test_version_comes_from_the_installed_metadata() -> None:
    """__version__ is the installed distribution's version (not a second copy in the code)."""
    assert webhooks_emitter.__version__ == importlib.metadata.version("webhooks_emitter")


def test_py_typed_is_shipped() -> None:
    """The py.typed marker is installed, so type checkers read the package's hints."""
    assert importlib.resources.files("webhooks_emitter").joinpath("py.typed").is_file()


def test_all_is_sorted_and_every_name_exists() -> None:
    """__all__ lists every public name once, sorted, and each one is importable."""
    names = webhooks_emitter.__all__
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    for name in names:
        assert hasattr(webhooks_emitter, name), name


def test_contract_names_are_public() -> None:
    """Every name CONTRACT.md sections 2, 3 and 7 give is a public attribute of the package."""
    for name in (
        "attach",
        "attach_many",
        "detach",
        "pause",
        "restart",
        "emit",
        "list_emitters",
        "is_started",
        "flush",
        "shutdown",
        "configure",
        "verify",
        "Config",
        "DeliveryResult",
        "WebhooksEmitter",
        "WebhooksEmitterError",
        "EmitterExistsError",
        "EmitterNotFoundError",
        "InvalidSignatureError",
        "signing",
    ):
        assert name in webhooks_emitter.__all__, name
    assert issubclass(webhooks_emitter.EmitterExistsError, webhooks_emitter.WebhooksEmitterError)
    assert issubclass(webhooks_emitter.InvalidSignatureError, ValueError)


def test_the_console_script_is_declared() -> None:
    """The webhooks-emitter console script points at the CLI's main()."""
    points = importlib.metadata.entry_points()
    if hasattr(points, "select"):
        scripts = points.select(group="console_scripts")
    else:  # Python 3.9: a dict of groups
        scripts = points.get("console_scripts", [])  # type: ignore[attr-defined]
    [script] = [s for s in scripts if s.name == "webhooks-emitter"]
    assert script.value == "webhooks_emitter.cli:main"
