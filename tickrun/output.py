"""Rows -> table, JSON or CSV. Knows nothing of click or the database."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

FORMATS = ("table", "json", "csv")
CELL_WIDTH = 60


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    text = " ".join(str(value).split())
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"


def render(
    rows: Sequence[Mapping[str, Any]], fields: Sequence[str], fmt: str, empty: str = "(none)"
) -> str:
    """A listing in ``fmt``: tables shorten long cells, JSON and CSV keep the full text."""
    if fmt == "json":
        return json.dumps([{f: _plain(r.get(f)) for f in fields} for r in rows], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(fields)
        for r in rows:
            writer.writerow(["" if r.get(f) is None else _plain(r.get(f)) for f in fields])
        return buf.getvalue().rstrip("\n")
    if not rows:
        return empty
    from tabulate import tabulate

    return tabulate(
        [[_cell(r.get(f)) for f in fields] for r in rows],
        headers=list(fields),
        disable_numparse=True,
    )


def render_one(obj: Mapping[str, Any], fmt: str) -> str:
    """One object (``enqueue``, ``show``): JSON as an object, otherwise field / value lines."""
    if fmt == "json":
        return json.dumps({k: _plain(v) for k, v in obj.items()}, indent=2)
    if fmt == "csv":
        return render([obj], list(obj), "csv")
    from tabulate import tabulate

    return tabulate([[k, _cell(v)] for k, v in obj.items()], tablefmt="plain")
