"""Backoff: the delay before the next attempt, as a pure function of the attempt number.

A task's ``backoff`` may be a duration (seconds, or a string like ``"30s"``), a list of
durations (the last repeats), a callable ``attempt -> seconds`` or :func:`exponential`.
``attempt`` is the number of the attempt that just failed (1 for the first).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import timedelta

from tickrun.durations import as_seconds
from tickrun.errors import UsageError

BackoffFn = Callable[[int], float]
BackoffSpec = float | int | str | timedelta | Sequence[float | str | timedelta] | BackoffFn


def exponential(
    base: float = 30, factor: float = 4, cap: float = 3600, jitter: float = 0.2
) -> BackoffFn:
    """``min(cap, base * factor ** (attempt - 1))``, scaled by a random factor in ±``jitter``.

    The defaults give about 30 s, 2 min, 8 min, 32 min, then an hour, each within ±20 %.
    """
    if base < 0 or factor < 1 or cap < 0 or not 0 <= jitter < 1:
        raise ValueError("exponential() needs base >= 0, factor >= 1, cap >= 0, 0 <= jitter < 1")

    def delay(attempt: int) -> float:
        try:
            raw = min(cap, base * factor ** max(0, attempt - 1))
        except OverflowError:  # a float factor overflows long before attempts run out
            raw = cap
        return raw * random.uniform(1 - jitter, 1 + jitter)

    delay.__qualname__ = f"exponential(base={base}, factor={factor}, cap={cap}, jitter={jitter})"
    return delay


def as_backoff(spec: BackoffSpec) -> BackoffFn:
    """Normalise every accepted ``backoff`` form to a callable; raises ValueError on others."""
    if callable(spec):
        return spec
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        if not spec:
            raise ValueError(f"invalid backoff {spec!r}: {_FORMS}")
        steps = [_delay(s, spec) for s in spec]
        return lambda attempt: steps[min(max(attempt, 1), len(steps)) - 1]
    seconds = _delay(spec, spec)
    return lambda attempt: seconds


_FORMS = "use a duration (seconds, or e.g. '30s'), a list of them, a callable or exponential()"


def _delay(value: object, spec: object) -> float:
    try:
        seconds = as_seconds(value, "backoff")
    except UsageError:
        raise ValueError(f"invalid backoff {spec!r}: {_FORMS}") from None
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"invalid backoff {spec!r}: delays must be >= 0 and finite")
    return seconds
