"""``tickrun runs``: the recent ``tickrun run`` invocations (what the dashboard's runs page
shows)."""

from __future__ import annotations

import click

from tickrun.cli.base import Context, cli, common, duration, formats, pass_ctx, table_width
from tickrun.output import Column

COLUMNS = [
    Column("id", align="right"),
    Column("started_at", "started"),
    Column("finished_at", "ended"),
    Column("state"),
    Column("worker", shrink=10),
    Column("claimed", align="right"),
    Column("succeeded", "ok", align="right"),
    Column("retried", align="right"),
    Column("dead", align="right"),
    Column("exit_code", "exit", align="right"),
]


@cli.command()
@click.option(
    "--since", metavar="DURATION", callback=duration, help="Only runs started this recently."
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    default=20,
    show_default=True,
    help="At most N runs.",
)
@formats
@common
@pass_ctx
def runs(ctx: Context, since: float | None, limit: int, fmt: str) -> None:
    """Recent runs, newest first: when each started and ended, its state, its worker, how many
    tasks it claimed, and how they ended.

    \b
    state: finished; running; or lost (killed, its host gone: it never recorded an end). A
    lost or running cron run's claimed and ok are counted from its attempts and the tasks it
    holds; its retried and dead are unknown (blank; JSON null).

    Example: tickrun runs --since 1h --json
    """
    from tickrun import activity, clock
    from tickrun.output import render

    rows = activity.recent_runs(ctx.engine(), clock.now(), since=since, limit=limit)
    click.echo(render(rows, activity.RUNS_FIELDS, fmt, "(no run recorded)", COLUMNS, table_width()))
