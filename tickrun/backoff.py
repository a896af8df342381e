"""Backoff: the delay before the next attempt, as a pure function of the attempt number.

A task's ``backoff`` may be a number of seconds, a list of seconds (the last repeats), a
callable ``attempt -> seconds`` or :func:`exponential`. ``attempt`` is the number of the
attempt that just failed (1 for the first).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

BackoffFn = Callable[[int], float]
BackoffSpec = float | int | Sequence[float] | BackoffFn


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
    if isinstance(spec, bool):
        raise ValueError(f"invalid backoff {spec!r}")
    if isinstance(spec, int | float):
        if spec < 0:
            raise ValueError(f"invalid backoff {spec!r}: must be >= 0")
        seconds = float(spec)
        return lambda attempt: seconds
    if isinstance(spec, Sequence) and not isinstance(spec, str) and spec:
        steps = [float(s) for s in spec]
        if any(s < 0 for s in steps):
            raise ValueError(f"invalid backoff {spec!r}: delays must be >= 0")
        return lambda attempt: steps[min(max(attempt, 1), len(steps)) - 1]
    raise ValueError(
        f"invalid backoff {spec!r}: use seconds, a list of seconds, a callable or exponential()"
    )
