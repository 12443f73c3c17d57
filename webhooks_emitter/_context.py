"""What an emitter and the housekeeping thread need of the instance they belong to.

``_hub.WebhooksEmitter`` provides both protocols; ``_emitter`` and ``_housekeeping``
import only this module, so the package's imports run one way (``_hub`` -> ``_emitter``,
``_housekeeping`` -> ``_context``) and a test can stand an emitter on another context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Protocol

if TYPE_CHECKING:
    from ._config import Config
    from .stores._base import Lease, Store

__all__ = ["EmitterContext", "EmitterHandle", "HousekeepingContext"]


class EmitterHandle(Protocol):
    """An attached emitter, as the instance's housekeeping thread drives it."""

    @property
    def emitter_id(self) -> str:
        """The emitter's id."""

    @property
    def paused(self) -> bool:
        """Whether this process sees it paused."""

    @property
    def workers(self) -> int:
        """How many delivering threads it has."""

    def kick(self, refresh: bool = False) -> None:
        """A timer fired or a poll found work."""

    def wake_at(self, at: float) -> None:
        """Kick it at monotonic time ``at``."""

    def set_paused(self, paused: bool) -> None:
        """The store says it is paused (or not)."""

    def try_takeover(self) -> None:
        """Its lease is held by a process that looks dead: try to take it."""

    def lease_renewed(self, until: float) -> None:
        """Its lease was renewed: trust it until monotonic ``until``."""

    def lease_lost(self) -> None:
        """Its lease could not be renewed."""


Emitter = EmitterHandle


class EmitterContext(Protocol):
    """The instance, as one of its emitters sees it."""

    @property
    def store(self) -> Store:
        """Where the events wait."""

    @property
    def lease(self) -> Lease:
        """The lease this instance's emitters hold."""

    @property
    def delivers(self) -> bool:
        """False for a ``deliver=False`` instance: no delivering thread starts."""

    @property
    def idle_timeout(self) -> float:
        """Seconds an emitter with nothing to do keeps its thread."""

    @property
    def transport_generation(self) -> int:
        """Changes when the transport factory does (threads make a new transport)."""

    def make_transport(self, config: Config) -> Any:
        """A new transport (HTTP session) for one delivering thread."""

    def schedule(self, emitter: Emitter, at: float) -> None:
        """Kick ``emitter`` at monotonic time ``at``."""

    def lease_acquired(self, emitter: Emitter) -> None:
        """``emitter`` took its lease: renew it from now on."""

    def lease_released(self, emitter: Emitter) -> None:
        """``emitter`` let go of its lease: stop renewing it."""

    def leases_held(self) -> int:
        """How many emitters of the instance hold their lease now."""


class HousekeepingContext(Protocol):
    """The instance, as its housekeeping thread sees it."""

    @property
    def store(self) -> Store:
        """Where the events wait."""

    @property
    def lease(self) -> Lease:
        """The lease this instance's emitters hold."""

    @property
    def delivers(self) -> bool:
        """False for a ``deliver=False`` instance."""

    def attached(self, emitter_id: str) -> Optional[EmitterHandle]:
        """The emitter attached under ``emitter_id``, or None."""

    def has_emitters(self) -> bool:
        """Whether any emitter is attached."""
