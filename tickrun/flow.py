"""Flow control as values: rate limits, concurrency limits, and the keys that group tasks.

Pure: parsing and checking only. The claim (tickrun.store) enforces these inside its
transaction; this module says what they mean.

- A **rate** ``N/period`` allows at most N starts in any window of ``period`` seconds: a
  sliding window over the claim times of the limited tasks, so N+1 consecutive starts always
  span more than ``period``.
- A **concurrency** limit K allows at most K running tasks whose lease has not expired.
- A **group** is the key value that per-key limits and ordering apply to: the text
  ``field=value`` of the payload field named by ``concurrency_key``, or the ``group=`` given at
  enqueue. Groups are shared by every task that produces the same text.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

from tickrun.durations import parse_duration
from tickrun.errors import ConfigError, PayloadError, UsageError

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\S+)\s*$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
ON_DEAD = ("block", "release")
GROUP_WIDTH = 255  # the group_key column
SCOPE_WIDTH = 300  # the scope column: a prefix and a task, queue or group name
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Rate:
    """At most ``count`` starts in any window of ``period`` seconds."""

    count: int
    period: float

    def __str__(self) -> str:
        for unit, size in _UNIT.items():
            if self.period == size:
                return f"{self.count}/{unit}"
        return f"{self.count}/{self.period:g}s"


@dataclass(frozen=True)
class Limit:
    """The limits of one scope (``task:NAME`` or ``queue:NAME``), as a run enforces them."""

    scope: str
    rate: Rate | None = None
    concurrency: int | None = None


def parse_rate(text: Any, what: str) -> Rate:
    """``"25/s"``, ``"100/m"``, ``"1000/h"``, ``"5/d"`` or ``"10/30s"``; ConfigError otherwise.

    >>> parse_rate("100/m", "task x")
    Rate(count=100, period=60.0)
    """
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(f"{what}: rate must look like 25/s, 100/m or 1000/h, not {text!r}")
    count, per = int(match.group(1)), match.group(2).lower()
    try:
        period = _UNIT[per] if per in _UNIT else parse_duration(per)
    except UsageError:
        raise ConfigError(f"{what}: rate period {per!r} is not s, m, h, d or a duration") from None
    if not 1 <= count <= _INT32_MAX or period <= 0:
        raise ConfigError(f"{what}: rate must allow at least 1 start per period > 0, not {text!r}")
    return Rate(count, period)


def check_limit(value: Any, what: str) -> int | None:
    """A concurrency limit: None (unlimited) or a whole number >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _INT32_MAX:
        raise ConfigError(f"{what}: concurrency must be a whole number >= 1, not {value!r}")
    return value


def task_scope(name: str) -> str:
    return f"task:{name}"


def queue_scope(name: str) -> str:
    return f"queue:{name}"


def group_scope(group: str) -> str:
    return f"group:{group}"


def group_of(field: str, payload: dict[str, Any], default: Any, given: Any) -> str:
    """The group a task joins: ``given`` (enqueue's ``group=``) when set, else
    ``field=value`` of the payload (or of the parameter's default, ``inspect.Parameter.empty``
    when it has none); PayloadError when the value is not a string or an integer."""
    if given is not None:
        if not isinstance(given, str) or not 0 < len(given) <= GROUP_WIDTH:
            raise UsageError(f"group must be a string of 1 to {GROUP_WIDTH} characters")
        if not is_text(given):
            raise UsageError(f"group {given!r} is not valid Unicode text")
        return given
    value = payload.get(field, default)
    if isinstance(value, bool) or not isinstance(value, str | int):
        shown = "missing" if value is inspect.Parameter.empty else repr(value)
        raise PayloadError(f"concurrency key {field!r} must be a string or an integer, not {shown}")
    group = f"{field}={value}"
    if len(group) > GROUP_WIDTH:
        raise PayloadError(f"concurrency key {group[:40]!r}... is longer than {GROUP_WIDTH}")
    if not is_text(group):
        raise PayloadError(f"concurrency key {group!r} is not valid Unicode text")
    return group


def is_text(value: str) -> bool:
    """Whether ``value`` can be stored: no lone surrogate, such as the ones Python makes of
    bytes that are not UTF-8 in a command's arguments (the drivers fail on them mid-insert)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
