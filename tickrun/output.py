"""Rows -> table, JSON or CSV. Knows nothing of click or the database."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

FORMATS = ("table", "json", "csv")
CELL_WIDTH = 60
TABLE_WIDTH = 80


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _cell(value: Any, width: int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    text = " ".join(str(value).split())
    if width is None or len(text) <= CELL_WIDTH:
        return text
    return text[: CELL_WIDTH - 1] + "…"


def render(
    rows: Sequence[Mapping[str, Any]],
    fields: Sequence[str],
    fmt: str,
    empty: str = "(none)",
    columns: Sequence[Column] | None = None,
    width: int | None = TABLE_WIDTH,
) -> str:
    """A listing in ``fmt``: JSON and CSV keep the full text; a table is fitted to ``width``
    columns (None: nothing is shortened, as for output that is not a terminal).

    With ``columns``, the table shows those instead of ``fields``.
    """
    if fmt == "json":
        return json.dumps([{f: _plain(r.get(f)) for f in fields} for r in rows], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(fields)
        for r in rows:
            writer.writerow(["" if r.get(f) is None else _plain(r.get(f)) for f in fields])
        return buf.getvalue().rstrip("\n")
    if columns is not None:
        return fitted_table(rows, columns, width=width, empty=empty)
    if not rows:
        return empty
    from tabulate import tabulate

    return tabulate(
        [[_cell(r.get(f), width) for f in fields] for r in rows],
        headers=list(fields),
        disable_numparse=True,
    )


def render_one(obj: Mapping[str, Any], fmt: str, width: int | None = TABLE_WIDTH) -> str:
    """One object (``enqueue``, ``show``): JSON as an object, otherwise field / value lines
    (long values shortened unless ``width`` is None)."""
    if fmt == "json":
        return json.dumps({k: _plain(v) for k, v in obj.items()}, indent=2)
    if fmt == "csv":
        return render([obj], list(obj), "csv")
    from tabulate import tabulate

    return tabulate([[k, _cell(v, width)] for k, v in obj.items()], tablefmt="plain")


@dataclass(frozen=True)
class Column:
    """How one field shows in a fitted table (JSON and CSV ignore this and keep every field).

    ``value`` turns a row into the cell (default: the row's ``field``); a column with a
    ``shrink`` width gives up space, down to that width, when the table is wider than the
    terminal, its cells shortened with an ellipsis. A ``shrink_last`` column (a name people
    copy, say) gives up space only once the others are at their minimum.
    """

    field: str
    header: str | None = None
    value: Callable[[Mapping[str, Any]], Any] | None = None
    align: str = "left"
    shrink: int | None = None
    shrink_last: bool = False

    def cell(self, row: Mapping[str, Any]) -> str:
        value = self.value(row) if self.value is not None else row.get(self.field)
        if value is None:
            return ""
        if isinstance(value, datetime):
            return short_time(value)
        return " ".join(str(value).split())


def short_time(value: datetime) -> str:
    """A timestamp in a table cell: UTC to the minute (JSON keeps the full instant)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def fitted_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    width: int | None = TABLE_WIDTH,
    empty: str = "(none)",
) -> str:
    """A tabulate table no wider than ``width``: the widest shrinkable column gives way first
    (None: as wide as its cells)."""
    if not rows:
        return empty
    from tabulate import tabulate

    headers = [c.header or c.field for c in columns]
    cells = [[c.cell(r) for c in columns] for r in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    limits = [
        max(c.shrink, len(h)) if c.shrink is not None else w
        for c, h, w in zip(columns, headers, widths, strict=True)
    ]
    excess = 0 if width is None else sum(widths) + 2 * (len(columns) - 1) - width
    while excess > 0:
        room = [i for i, w in enumerate(widths) if w > limits[i]]
        if not room:
            break
        widest = max(room, key=lambda i: (not columns[i].shrink_last, widths[i]))
        widths[widest] -= 1
        excess -= 1
    cells = [[_shorten(text, widths[i]) for i, text in enumerate(row)] for row in cells]
    # Header and rule as the first rows of a "plain" table: tabulate would pad every header
    # by two spaces, which 80 columns cannot afford.
    rule = ["-" * w for w in widths]
    return tabulate(
        [headers, rule, *cells],
        tablefmt="plain",
        disable_numparse=True,
        colalign=[c.align for c in columns],
    )


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
