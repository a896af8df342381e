"""``tickrun schedules``: each schedule, its next and last fire time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from tickrun.cli.base import Context, cli, common, formats, pass_ctx, table_width
from tickrun.output import Column, short_time

# fmt: off
FIELDS = [
    "name", "task", "cron", "tz", "next_run_at", "last_enqueued_at", "missed", "skipped", "overdue",
]
# fmt: on
PREVIEW_FIELDS = ["name", "tz", "local_time", "utc_time"]


def _next(row: Mapping[str, Any]) -> str:
    shown = short_time(row["next_run_at"])
    return f"{shown} overdue" if row["overdue"] else shown


COLUMNS = [
    Column("name", shrink=10, shrink_last=True),
    Column("task", shrink=8),
    Column("cron", shrink=9),
    Column("tz", shrink=8),
    Column("next_run_at", "next (UTC)", value=_next),
    Column("last_enqueued_at", "last (UTC)"),
    Column("missed", align="right"),
    Column("skipped", "skip", align="right"),
]
PREVIEW_COLUMNS = [
    Column("name", shrink=12, shrink_last=True),
    Column("tz", shrink=12),
    Column("local_time", "local time"),
    Column("utc_time", "UTC"),
]


@cli.command()
@click.option(
    "--preview",
    type=click.IntRange(min=1, max=1000),
    metavar="N",
    help="List the next N fire times of each schedule, in its zone and in UTC.",
)
@formats
@common
@pass_ctx
def schedules(ctx: Context, preview: int | None, fmt: str) -> None:
    """Each schedule: cron, zone, next and last fire time, missed and skipped occurrences.

    "next" is the first occurrence no run has handled yet. It is "overdue" (JSON: overdue
    true) once its time has passed: the next `tickrun run` (or a worker) enqueues it, or by
    the schedule's catchup a later one.

    Example: tickrun --app myapp.jobs:app schedules --preview 5
    """
    from tickrun import clock
    from tickrun.output import render
    from tickrun.scheduler import preview_rows, schedule_rows

    app = ctx.app()
    assert app is not None
    now = clock.now()
    if preview:
        rows = preview_rows(app, now, preview)
        click.echo(render(rows, PREVIEW_FIELDS, fmt, columns=PREVIEW_COLUMNS, width=table_width()))
        return
    engine = ctx.engine()
    rows = schedule_rows(app, engine, now)
    click.echo(render(rows, FIELDS, fmt, "(no schedules)", COLUMNS, table_width()))
