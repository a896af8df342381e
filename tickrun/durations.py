"""Durations as users write them: ``30s``, ``10m``, ``2h``, ``1d``, ``1h30m`` or plain seconds."""

from __future__ import annotations

import re

from tickrun.errors import UsageError

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises UsageError on anything else (including negatives).

    >>> parse_duration("1h30m")
    5400.0
    >>> parse_duration("45")
    45.0
    """
    raw = text.strip().lower()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        if seconds < 0 or seconds != seconds or seconds == float("inf"):
            raise UsageError(f"invalid duration {text!r}: must be a non-negative number")
        return seconds
    parts = _PART.findall(raw)
    if not raw or "".join(n + u for n, u in parts) != raw:
        raise UsageError(
            f"invalid duration {text!r}: use seconds or forms like 30s, 10m, 2h, 1d, 1h30m"
        )
    return float(sum(float(n) * _UNITS[u] for n, u in parts))


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration, for display: ``5400`` -> ``1h30m``."""
    remaining = int(round(seconds))
    if remaining == 0:
        return "0s"
    out = []
    for unit, size in _UNITS.items():
        count, remaining = divmod(remaining, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)
