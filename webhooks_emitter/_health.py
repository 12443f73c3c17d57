"""Whether an instance can deliver: ``health()`` and :class:`Health` (CONTRACT section 15)."""

from __future__ import annotations

import math
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Optional

import attrs

from .exceptions import WebhooksEmitterError

if TYPE_CHECKING:
    from .stores._base import EmitterState

# The instance checked is a ``WebhooksEmitter``, typed ``Any`` here: ``_hub`` imports this
# module (for ``health()``), so importing it back, even for typing, would make a cycle.
WebhooksEmitter = Any

__all__ = ["HOUSEKEEPING_LIMIT", "Health", "check", "stale_emitters"]

#: Seconds without a round of the background thread after which the instance is unhealthy.
HOUSEKEEPING_LIMIT = 10.0


def _as_list(problems: object) -> list[str]:
    """A copy of ``problems`` (so the caller's list cannot change an answer), each made one
    line (a driver's error may span several: a probe's output is one line per problem)."""
    if isinstance(problems, (str, bytes)) or not hasattr(problems, "__iter__"):
        raise TypeError(f"problems must be a list of str, not {type(problems).__name__}")
    return [" ".join(str(problem).split()) for problem in problems]


@attrs.frozen
class Health:
    """The answer of ``health()``.

    Attributes:
        ok: True when nothing is wrong.
        problems: one line per problem (empty when ``ok``), naming the emitter id where
            there is one; never a secret.
    """

    ok: bool
    problems: list[str] = attrs.field(factory=list, converter=_as_list)

    @classmethod
    def of(cls, problems: list[str]) -> Health:
        """Healthy exactly when ``problems`` is empty."""
        return cls(ok=not problems, problems=problems)


def _seconds_argument(name: str, value: object, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if math.isnan(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def _duration(seconds: float) -> str:
    """``75 s``, ``2.5 s``, ``0.05 s``: as many digits as a reader needs."""
    if seconds >= 10:
        return f"{seconds:.0f} s"
    return f"{seconds:.1f} s" if seconds >= 1 else f"{seconds:.2g} s"


def stale_emitters(
    states: list[EmitterState], max_age: float, now: float, only: Optional[set[str]] = None
) -> list[str]:
    """A problem line for each running emitter (of ``only``, when given) whose oldest
    queued event is older than ``max_age`` seconds at ``now`` (Unix seconds)."""
    problems = []
    for state in states:
        if only is not None and state.emitter_id not in only:
            continue
        if state.paused or not state.queued or state.oldest_queued_at is None:
            continue
        age = now - state.oldest_queued_at
        if age > max_age:
            problems.append(
                f"emitter {state.emitter_id!r}: oldest queued event is {_duration(age)} old "
                f"(max age {_duration(max_age)})"
            )
    return problems


class _Probe:
    """One store query run on a daemon thread, so that the caller waits at most its timeout.

    A store that hangs keeps its probe: later checks wait on the same query instead of
    starting one more thread per call."""

    def __init__(self, query: Callable[[], list[EmitterState]]) -> None:
        self.done = threading.Event()
        self.states: list[EmitterState] = []
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(
            target=self._run, args=(query,), name="webhooks-emitter:health", daemon=True
        )
        self.thread.start()

    def _run(self, query: Callable[[], list[EmitterState]]) -> None:
        try:
            self.states = query()
        except BaseException as exc:  # reported by the caller of check()
            self.error = exc
        finally:
            self.done.set()


_probes: weakref.WeakKeyDictionary[Any, _Probe] = weakref.WeakKeyDictionary()
_probes_lock = threading.Lock()


def _ask_store(
    instance: WebhooksEmitter, timeout: float
) -> tuple[Optional[list[EmitterState]], Optional[str]]:
    """The store's states, or the problem line saying why there are none."""
    store = instance.store
    with _probes_lock:
        probe = _probes.get(store)
        if probe is None or probe.done.is_set():
            probe = _Probe(store.states)
            _probes[store] = probe
    if not probe.done.wait(timeout):
        return None, f"store {store.describe()}: no answer within {_duration(timeout)}"
    if probe.error is not None:
        exc = probe.error
        if isinstance(exc, WebhooksEmitterError):  # names the store, never its password
            return None, f"store unreachable: {exc}"
        return None, f"store {store.describe()}: unreachable ({type(exc).__name__})"
    return probe.states, None


def _housekeeping(instance: WebhooksEmitter) -> list[str]:
    """The background thread's problems (the engine says when it last ran)."""
    alive = getattr(instance, "housekeeping_alive", None)
    age_of = getattr(instance, "housekeeping_age", None)
    if alive is None or age_of is None:
        return []  # an engine without a background thread to watch
    if not alive():
        return ["background thread is dead"]
    age: Optional[float] = age_of()
    if age is not None and age > HOUSEKEEPING_LIMIT:  # None: no such thread is needed now
        return [f"background thread has not run for {_duration(age)}"]
    return []


def check(
    instance: WebhooksEmitter, max_age: Optional[float] = None, timeout: float = 2.0
) -> Health:
    """Whether ``instance`` can deliver (``WebhooksEmitter.health`` calls this).

    Not ok when its store does not answer within ``timeout`` seconds, when its background
    thread is dead or has not run for :data:`HOUSEKEEPING_LIMIT` seconds, or, with
    ``max_age``, when a running emitter attached to it has a queued event older than
    ``max_age`` seconds (one problem line per emitter, naming it).

    Raises:
        TypeError, ValueError: ``max_age`` is not None nor a number >= 0, or ``timeout`` is
            not a number > 0.
    """
    if max_age is not None:
        max_age = _seconds_argument("max_age", max_age, positive=False)
    timeout = _seconds_argument("timeout", timeout, positive=True)
    problems: list[str] = []
    states, problem = _ask_store(instance, timeout)
    if problem is not None:
        problems.append(problem)
    problems += _housekeeping(instance)
    if max_age is not None and states is not None:
        attached = set(instance._emitters)
        problems += stale_emitters(states, max_age, time.time(), only=attached)
    return Health.of(problems)
