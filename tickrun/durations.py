"""Durations as users write them, everywhere tickrun takes one (flags, settings, the Python
API): ``200ms``, ``30s``, ``10m``, ``2h``, ``1d``, ``1w``, combinations such as ``1h30m``, or
plain seconds."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any

from tickrun.errors import UsageError

# Longest unit name first in the pattern: "ms" must not read as minutes then an "s".
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|[wdhms])")
_SHOWN = ("d", "h", "m", "s")  # format_duration's units: a week reads better as 7d
FORMS = "200ms, 30s, 10m, 2h, 1d, 1w, 1h30m"
# What the Python API takes wherever it asks for a duration (see as_seconds).
Duration = float | str | timedelta


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises UsageError on anything else (including negatives).

    >>> parse_duration("1h30m")
    5400.0
    >>> parse_duration("45")
    45.0
    >>> parse_duration("250ms")
    0.25
    """
    raw = text.strip().lower()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        if seconds < 0 or not math.isfinite(seconds):
            raise UsageError(f"invalid duration {text!r}: must be a non-negative number")
        return seconds
    parts = _PART.findall(raw)
    if not raw or "".join(n + u for n, u in parts) != raw:
        raise UsageError(f"invalid duration {text!r}: use seconds or forms like {FORMS}")
    return float(sum(float(n) * _UNITS[u] for n, u in parts))


def as_seconds(value: Any, what: str) -> float:
    """A duration given to the Python API: a number of seconds, a ``timedelta`` or a string
    :func:`parse_duration` reads; UsageError naming ``what`` for anything else.

    Only the form is checked here (a number may be negative or infinite): each caller has
    its own bounds.
    """
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except UsageError:
            pass
    raise UsageError(
        f"{what} must be a number of seconds or a duration like {FORMS}, not {value!r}"
    )


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration, for display: ``5400`` -> ``1h30m``."""
    remaining = int(round(seconds))
    if remaining == 0:
        return "0s"
    out = []
    for unit in _SHOWN:
        count, remaining = divmod(remaining, int(_UNITS[unit]))
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)
