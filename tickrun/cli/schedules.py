"""``tickrun schedules``: each schedule, its next and last fire time."""

from __future__ import annotations

import click

from tickrun.cli.base import Context, cli, common, formats, pass_ctx

FIELDS = ["name", "task", "cron", "tz", "next_run_at", "last_enqueued_at", "missed", "skipped"]
PREVIEW_FIELDS = ["name", "tz", "local_time", "utc_time"]


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

    Example: tickrun --app myapp.jobs:app schedules --preview 5
    """
    from tickrun import clock
    from tickrun.output import render
    from tickrun.scheduler import preview_rows, schedule_rows

    app = ctx.app()
    assert app is not None
    now = clock.now()
    if preview:
        click.echo(render(preview_rows(app, now, preview), PREVIEW_FIELDS, fmt))
        return
    engine = ctx.engine()
    click.echo(render(schedule_rows(app, engine, now), FIELDS, fmt, empty="(no schedules)"))
