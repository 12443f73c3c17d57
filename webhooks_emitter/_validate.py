"""The number checks every setting shares: ``Config``'s fields, the framework settings, the
command lines' options and the receiver decorators.

One rule each, one message each: ``<name> must be <what>, not <type>`` for a value of the
wrong type (``TypeError``), ``<name> must be a finite number >= 0, got -1`` for one out of
range (``ValueError``). A ``bool`` is never a number here, although Python says it is an
int: ``max_attempts=True`` is a mistake, not 1.
"""

from __future__ import annotations

import argparse
import difflib
import math
from collections.abc import Iterable
from typing import Callable, Optional

__all__ = ["closest", "integer", "integer_arg", "number", "number_arg", "unknown_name"]


def number(
    name: str,
    value: object,
    *,
    minimum: float = 0.0,
    strict: bool = False,
    finite: bool = True,
    what: str = "a number of seconds",
) -> float:
    """``value`` as a float, checked: ``>= minimum`` (``> minimum`` when ``strict``), never
    NaN, and not infinite unless ``finite`` is False (an infinite timeout: no deadline).

    Raises:
        TypeError: ``value`` is not an int or a float (a bool included); names ``name``.
        ValueError: it is out of range; names ``name`` and the rule.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {what}, not {type(value).__name__}")
    below = value <= minimum if strict else value < minimum
    if math.isnan(value) or below or (finite and math.isinf(value)):
        rule = ">" if strict else ">="
        kind = "a finite number" if finite else "a number"
        raise ValueError(f"{name} must be {kind} {rule} {minimum:g}, got {value!r}")
    return float(value)


def integer(name: str, value: object, *, minimum: int) -> int:
    """``value``, an int ``>= minimum``.

    Raises:
        TypeError: ``value`` is not an int (a bool included); names ``name``.
        ValueError: it is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def number_arg(
    *, minimum: float = 0.0, strict: bool = False, what: str = "a number of seconds"
) -> Callable[[str], float]:
    """An argparse ``type`` for a finite number of seconds (the option names itself)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        try:
            return number("value", value, minimum=minimum, strict=strict, what=what)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("value ")) from None

    return parse


def integer_arg(*, minimum: int, maximum: Optional[int] = None) -> Callable[[str], int]:
    """An argparse ``type`` for a whole number in ``[minimum, maximum]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(
                f"must be between {minimum} and {maximum}, got {value}"
            )
        return value

    return parse


def closest(name: object, known: Iterable[str]) -> Optional[str]:
    """The name of ``known`` that ``name`` most likely misspells (``secert`` ->
    ``secret``), or None when none is close."""
    if not isinstance(name, str):
        return None
    choices = list(known)
    found = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if not found:
        # A case slip (SECRET for secret) or a prefix left on (WEBHOOKS_EMITTER_STORE).
        lowered = {choice.lower(): choice for choice in choices}
        return lowered.get(name.lower())
    return found[0]


def unknown_name(kind: str, name: object, known: Iterable[str]) -> str:
    """``unknown <kind> 'secert' (did you mean 'secret'?)``: a message naming the closest
    known name, or listing them all when none is close."""
    choices = list(known)
    guess = closest(name, choices)
    if guess is not None:
        return f"unknown {kind} {name!r} (did you mean {guess!r}?)"
    return f"unknown {kind} {name!r} (known: {', '.join(choices)})"
