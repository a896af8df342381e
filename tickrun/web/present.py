"""What the dashboard's templates are given: times as people read them, a listing's columns,
pages, and chart geometry as plain numbers. Pure: no web framework, no database.

Templates turn these into HTML with auto-escaping on; nothing here builds markup.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tickrun.activity import Bucket

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def utc(value: datetime | None) -> str:
    """An instant as the dashboard prints it: UTC, to the second, saying so."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime | None) -> str:
    """An instant for ``<time datetime=...>`` and the page's script: ISO 8601 in UTC."""
    return "" if value is None else value.astimezone(UTC).isoformat()


def span(seconds: float) -> str:
    """A length of time, coarsely: ``45 s``, ``3 min``, ``2 h 5 min``, ``4 d 3 h``.

    >>> span(42.4), span(185), span(7500), span(360000)
    ('42 s', '3 min', '2 h 5 min', '4 d 4 h')
    """
    s = int(round(abs(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(s // 3600, 24)
    return f"{d} d {h} h" if h else f"{d} d"


def relative(now: datetime, value: datetime | None) -> str:
    """``3 min ago`` or ``in 3 min`` (``just now`` within a second).

    >>> t = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    >>> relative(t, t.replace(minute=3)), relative(t.replace(minute=3), t)
    ('in 3 min', '3 min ago')
    """
    if value is None:
        return ""
    delta = (value - now).total_seconds()
    if abs(delta) < 1:
        return "just now"
    return f"in {span(delta)}" if delta > 0 else f"{span(delta)} ago"


def seconds(value: float | None) -> str:
    """A measured duration (run time, due age): sub-second precision where it matters."""
    if value is None:
        return ""
    if value < 10:
        return f"{value:.2f} s"
    return span(value)


def pretty_json(value: Any) -> str:
    """A payload or result, indented; text that is not JSON (written by something other than
    tickrun) as it is."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def columns(rows: Sequence[Mapping[str, Any]], known: Sequence[str]) -> list[str]:
    """The columns of a listing: its contract fields first, in order, then every other field
    its rows carry (so a field a later version adds, such as why a due task is held, shows
    without a template change)."""
    out = list(known)
    seen = set(out)
    for row in rows:
        for name in row:
            if name not in seen:
                seen.add(name)
                out.append(name)
    return out


@dataclass(frozen=True)
class Page:
    """One page of a listing: fetch ``size + 1`` rows from ``offset`` to learn whether there
    is a next page without counting the whole table."""

    number: int
    size: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def fetch(self) -> int:
        return self.size + 1

    def cut(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
        """The rows to show, and whether a next page exists."""
        return rows[: self.size], len(rows) > self.size


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    count: int
    label: str


@dataclass(frozen=True)
class Chart:
    """A bar chart's geometry in SVG user units; the template only places numbers."""

    width: int
    height: int
    bars: list[Bar]
    peak: int
    first: str
    last: str
    total: int


def bar_chart(
    buckets: Iterable[Bucket], field: str, *, width: int = 480, height: int = 90
) -> Chart:
    """Bars of ``field`` (``succeeded`` or ``failed``) per bucket, scaled to the tallest."""
    items = list(buckets)
    values = [int(getattr(b, field)) for b in items]
    peak = max(values, default=0)
    n = max(len(items), 1)
    slot = width / n
    bars = []
    for i, (bucket, value) in enumerate(zip(items, values, strict=True)):
        h = 0.0 if peak == 0 else round(value / peak * (height - 2), 2)
        label = f"{utc(bucket.start)} – {bucket.end.astimezone(UTC):%H:%M}: {value}"
        bars.append(
            Bar(round(i * slot + 1, 2), round(height - h, 2), round(slot - 2, 2), h, value, label)
        )
    return Chart(
        width,
        height,
        bars,
        peak,
        utc(items[0].start) if items else "",
        utc(items[-1].end) if items else "",
        sum(values),
    )
