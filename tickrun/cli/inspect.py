"""Seeing and repairing the queue: due, failures, dlq (retry, purge), show, stats, cancel, prune,
check, doctor. Parse, call the read models (tickrun.listings, tickrun.health, tickrun.doctor) or
the repairs (tickrun.maintenance), render; no SQL here."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tickrun.cli.base import Context, cli, common, duration, formats, pass_ctx, table_width, utf8
from tickrun.errors import TickrunError, UsageError
from tickrun.output import Column

if TYPE_CHECKING:
    from tickrun.app import App
    from tickrun.doctor import DatabaseReport, LiveWorker
    from tickrun.listings import TaskDetail
    from tickrun.maintenance import Moved

SHOWN_IDS = 20
# With an application loaded, a name it does not register is an error (a typo would match
# nothing), unless stored tasks still have it.
TASK_HELP = "Only tasks of this name (one the application registers, if it is loaded)."

_F = TypeVar("_F", bound=Callable[..., Any])


def _secs(value: float | None) -> str:
    """Seconds for a table cell: sub-second precision where it matters."""
    from tickrun.durations import format_duration

    if value is None:
        return ""
    if value < 10:
        return f"{value:.2f}s"
    if value < 60:
        return f"{value:.1f}s"
    return format_duration(value)


def _ago(now: datetime, then: datetime | None) -> str:
    return "" if then is None else f"{_secs(max(0.0, (now - then).total_seconds()))} ago"


def _until(now: datetime, then: datetime | None) -> str:
    if then is None:
        return ""
    left = (then - now).total_seconds()
    return "due" if left <= 0 else f"in {_secs(left)}"


def _ids(ids: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:SHOWN_IDS])
    return shown + (f" … ({len(ids) - SHOWN_IDS} more)" if len(ids) > SHOWN_IDS else "")


def _tasks(n: int, what: str) -> str:
    return f"{n} {what} task" + ("" if n == 1 else "s")


def _status(row: Mapping[str, Any]) -> str:
    # A due "running" task is one whose run stopped renewing its lease.
    return "expired" if row["status"] == "running" else row["status"]


DUE_COLUMNS = [
    Column("id", align="right"),
    Column("task", shrink=10, shrink_last=True),
    Column("queue", shrink=7),
    Column("priority", "prio", align="right"),
    Column("status", value=_status),
    Column("run_at"),
    Column("attempts", "tries", value=lambda r: f"{r['attempts']}/{r['max_attempts']}"),
    Column("key", shrink=6),
    Column("group", shrink=12),
    Column("held"),  # the reason people look: never shortened
]

OPTIONAL = ("group", "held")

DLQ_COLUMNS = [
    Column("id", align="right"),
    Column("task", shrink=10, shrink_last=True),
    Column("queue", shrink=7),
    Column("attempts", "tries", align="right"),
    Column("failed_at"),
    Column("last_error", "error", shrink=12),
    Column("key", shrink=6),
]


@cli.command()
@click.option("--queue", callback=utf8, help="Only this queue.")
@click.option("--task", "task_name", callback=utf8, metavar="NAME", help=TASK_HELP)
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N tasks.")
@formats
@common
@pass_ctx
def due(
    ctx: Context, queue: str | None, task_name: str | None, limit: int | None, fmt: str
) -> None:
    """Tasks due now, in the order runs claim them (priority, then due time, then id).

    Due: pending or retrying with run_at in the past, or running with an expired lease
    (status "expired" in the table). "held" says why a flow-control limit keeps a task
    from being claimed now: "waiting for #ID" (an earlier task of its ordered group),
    "key busy (n/K)", "task limit (n/K)", "queue limit (n/K)", "task rate (25/s)".

    Example: tickrun due --queue emails --limit 20
    """
    from tickrun import clock, listings
    from tickrun.output import render

    engine = ctx.engine()
    ctx.check_task_name(engine, task_name)
    rows = listings.due(engine, clock.now(), queue=queue, task=task_name, limit=limit)
    # Without flow control the two columns would only narrow the others: shown when used.
    columns = [c for c in DUE_COLUMNS if c.field not in OPTIONAL or any(r[c.field] for r in rows)]
    click.echo(render(rows, listings.DUE_FIELDS, fmt, "(nothing due)", columns, table_width()))


def since_option(help_text: str) -> Callable[[_F], _F]:
    """``--since DURATION`` (default 24h): the window a listing or a statistic looks back over."""
    return click.option(
        "--since",
        metavar="DURATION",
        callback=duration,
        default="24h",
        show_default=True,
        help=help_text,
    )


@cli.command()
@since_option("How far back.")
@click.option("--task", "task_name", callback=utf8, metavar="NAME", help=TASK_HELP)
@click.option("--queue", callback=utf8, help="Only tasks of this queue.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N attempts.")
@formats
@common
@pass_ctx
def failures(
    ctx: Context,
    since: float,
    task_name: str | None,
    queue: str | None,
    limit: int | None,
    fmt: str,
) -> None:
    """Failed attempts (failed, retry, timeout, lost lease, interrupted), newest first.

    Example: tickrun failures --since 2h --task send_welcome_email
    """
    from tickrun import clock, listings
    from tickrun.output import render

    now = clock.now()
    engine = ctx.engine()
    ctx.check_task_name(engine, task_name)
    rows = listings.failures(engine, now, since=since, task=task_name, queue=queue, limit=limit)
    columns = [
        Column("id", align="right"),
        Column("task", shrink=10, shrink_last=True),
        Column("attempt", "#", align="right"),
        Column("failed_at"),
        Column("status"),
        Column("next_run_at", "next", value=lambda r: _until(now, r["next_run_at"])),
        Column("error", shrink=12),
    ]
    click.echo(render(rows, listings.FAILURE_FIELDS, fmt, "(no failures)", columns, table_width()))


@cli.group(invoke_without_command=True)
@click.option("--task", "task_name", callback=utf8, metavar="NAME", help=TASK_HELP)
@click.option("--queue", callback=utf8, help="Only tasks of this queue.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N tasks.")
@formats
@common
@pass_ctx
def dlq(
    ctx: Context, task_name: str | None, queue: str | None, limit: int | None, fmt: str
) -> None:
    """The dead-letter queue: tasks that ran out of attempts or raised Fail, newest first.

    Example: tickrun dlq --task send_welcome_email
    """
    from tickrun import listings
    from tickrun.output import render

    if click.get_current_context().invoked_subcommand is not None:
        if task_name is not None or queue is not None or limit is not None:
            # `tickrun dlq --task X purge` must not purge every task's dead rows.
            raise UsageError("put --task after the subcommand, e.g. tickrun dlq purge --task NAME")
        return
    engine = ctx.engine()
    ctx.check_task_name(engine, task_name)
    rows = listings.dead(engine, task=task_name, queue=queue, limit=limit)
    click.echo(
        render(
            rows,
            listings.DLQ_FIELDS,
            fmt,
            "(the dead-letter queue is empty)",
            DLQ_COLUMNS,
            table_width(),
        )
    )


@dlq.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "all_dead", is_flag=True, help="Every dead task (of --task, if given).")
@click.option(
    "--task",
    "task_name",
    callback=utf8,
    metavar="NAME",
    help="With --all: only tasks of this name.",
)
@click.option("--dry-run", is_flag=True, help="List what would move; change nothing.")
@common
@pass_ctx
def dlq_retry(
    ctx: Context, ids: tuple[int, ...], all_dead: bool, task_name: str | None, dry_run: bool
) -> None:
    """Move dead tasks back to pending, due now, attempts reset (their history is kept).

    Example: tickrun dlq retry 812 813   |   tickrun dlq retry --all --task send_welcome_email
    """
    from tickrun import clock, maintenance

    if ids and all_dead:
        raise UsageError("give task ids or --all, not both")
    if task_name is not None and not all_dead:
        raise UsageError("--task goes with --all: tickrun dlq retry --all --task NAME")
    if not ids and not all_dead:
        raise UsageError("give the ids of the dead tasks to retry, or --all")
    engine = ctx.engine()
    # Retried tasks of a name no handler registers would only wait: no stored-name escape.
    ctx.check_task_name(engine, task_name, stored=False)
    moved = maintenance.retry_dead(
        engine, clock.now(), ids=ids or None, task=task_name, dry_run=dry_run
    )
    _report(moved, "retry", "retried", "back to pending, due now", dry_run)


@dlq.command("purge")
@click.option(
    "--older-than",
    metavar="DURATION",
    callback=duration,
    help="Only tasks dead for longer than this, e.g. 30d.",
)
@click.option("--task", "task_name", callback=utf8, metavar="NAME", help=TASK_HELP)
@click.option("--dry-run", is_flag=True, help="List what would be deleted; change nothing.")
@common
@pass_ctx
def dlq_purge(ctx: Context, older_than: float | None, task_name: str | None, dry_run: bool) -> None:
    """Delete dead tasks and their attempt history.

    Example: tickrun dlq purge --older-than 30d
    """
    from tickrun import clock, maintenance

    engine = ctx.engine()
    ctx.check_task_name(engine, task_name)
    moved = maintenance.purge_dead(
        engine, clock.now(), older_than=older_than, task=task_name, dry_run=dry_run
    )
    _report(moved, "purge", "purged", "and their history", dry_run)


def _report(moved: Moved, verb: str, done: str, how: str, dry_run: bool) -> None:
    """Notes for ids left alone on stderr; on stdout what moved (a dry run: what would)."""
    from tickrun.output import fitted_table

    for task_id, status in moved.skipped.items():
        click.echo(f"note: task {task_id} is {status}, not dead: left alone", err=True)
    if dry_run:
        if moved.rows:
            click.echo(fitted_table(moved.rows, DLQ_COLUMNS, table_width()))
        click.echo(f"dry run: would {verb} {_tasks(len(moved.rows), 'dead')}; nothing changed")
        return
    tail = f" {how}: {_ids(moved.ids)}" if moved.rows else ""
    click.echo(f"{done} {_tasks(len(moved.rows), 'dead')}{tail}")


@cli.command()
@click.argument("task_id", metavar="ID", type=int)
@formats
@common
@pass_ctx
def show(ctx: Context, task_id: int, fmt: str) -> None:
    """One task: every field, its payload, its result, each attempt, and the last failure's
    traceback. parent_id is the task whose success enqueued this one (ctx.enqueue); children
    are the tasks this one's success enqueued.

    Example: tickrun show 812 --json
    """
    from tickrun import listings
    from tickrun.output import render_one

    detail = listings.show(ctx.engine(), task_id)
    if fmt != "table":
        obj = detail.as_json()
        if fmt == "csv":
            obj = {
                k: json.dumps(v, default=str) if k in ("payload", "history", "result") else v
                for k, v in obj.items()
            }
            obj["children"] = " ".join(str(i) for i in obj["children"])
        click.echo(render_one(obj, fmt, table_width()))
        return
    click.echo(_show_table(detail))


def _show_table(detail: TaskDetail) -> str:
    from tickrun.output import fitted_table, render_one

    hidden = ("payload", "last_traceback", "result", "children")
    fields = {k: v for k, v in detail.fields.items() if k not in hidden}
    # The follow-ups this task's success enqueued (ctx.enqueue): `tickrun show ID` on each.
    fields["children"] = _ids(detail.fields["children"]) or None
    parts = [render_one(fields, "table", table_width())]
    parts.append("payload:\n" + json.dumps(detail.fields["payload"], indent=2, sort_keys=True))
    if detail.fields["result"] is not None:
        parts.append("result:\n" + json.dumps(detail.fields["result"], indent=2, sort_keys=True))
    columns = [
        Column("attempt", "#", align="right"),
        Column("started_at", "started", value=lambda h: _long_time(h["started_at"])),
        Column("finished_at", "ended", value=lambda h: _end_time(h)),
        Column("duration_s", "took", value=_took, align="right"),
        Column("worker", shrink=6),
        Column("outcome"),
        Column("error", shrink=12),
    ]
    parts.append(
        "history:\n" + fitted_table(detail.history, columns, table_width(), "(no attempt yet)")
    )
    last = detail.last_failure
    if last is not None:
        which = f"attempt {last['attempt']}, " if last["attempt"] is not None else ""
        parts.append(
            f"last failure ({which}{last['outcome']}):\n"
            + (last["traceback"] or last["error"] or "(no error text)").rstrip()
        )
    return "\n\n".join(parts)


def _took(attempt: Mapping[str, Any]) -> str:
    # A lost attempt's end is when the loss was noticed, not when its run died: unknown.
    return "unknown" if attempt["outcome"] == "lost" else _secs(attempt["duration_s"])


def _long_time(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _end_time(attempt: Mapping[str, Any]) -> str:
    start: datetime | None = attempt["started_at"]
    end: datetime | None = attempt["finished_at"]
    if start is not None and end is not None and start.date() == end.date():
        return end.strftime("%H:%M:%S")
    return _long_time(end)


LIMIT_COLUMNS = [
    Column("scope", shrink=12, shrink_last=True),
    Column("rate"),
    Column("started_in_window", "started", align="right"),
    Column("concurrency", "limit", align="right"),
    Column("running", "running", align="right"),
    Column("full", value=lambda r: "full" if r["full"] else ""),
]


@cli.command()
@since_option("Window for run time, wait time and failure rate.")
@click.option(
    "--limits",
    "only_limits",
    is_flag=True,
    help="Only the task and queue limits and how full they are (for --json and --csv).",
)
@formats
@common
@pass_ctx
def stats(ctx: Context, since: float, only_limits: bool, fmt: str) -> None:
    """Per task: counts by status, the oldest due task, the last success, and over a window
    the median (p50) and 95th percentile (p95) run and wait times and the failure rate.

    \b
    Run time: an attempt's end - start (succeeded, failed, retry, timeout attempts).
    Wait time: from due to started (a running or succeeded task's start - its run_at).
    Failure rate: failing attempts / attempts that ended in the window.
    Percentiles interpolate linearly between closest ranks.
    Table columns: pend(ing), run(ning), retry(ing), ok = succeeded, canc(elled),
    oldest = age of the oldest due task, last ok = time since the last success.
    Then the task and queue limits the runs registered: started = starts in the rate's
    window, running = tasks running under the limit (--limits: only these).

    Example: tickrun stats --since 1h --json
    """
    from tickrun import clock, listings
    from tickrun.durations import format_duration
    from tickrun.output import fitted_table, render

    now = clock.now()
    usage = listings.limit_usage(ctx.engine(), now)
    if only_limits:
        click.echo(
            render(usage, listings.LIMIT_FIELDS, fmt, "(no limits)", LIMIT_COLUMNS, table_width())
        )
        return
    rows = listings.stats(ctx.engine(), now, since=since)
    if fmt != "table":
        fields = listings.STATS_FIELDS + listings.STATS_WINDOW_FIELDS
        click.echo(render(rows, fields, fmt))
        return
    if not rows:
        click.echo("(no tasks)")
        return
    counts = [
        Column("task", shrink=10, shrink_last=True),
        Column("pending", "pend", align="right"),
        Column("due", align="right"),
        Column("running", "run", align="right"),
        Column("retrying", "retry", align="right"),
        Column("succeeded", "ok", align="right"),
        Column("dead", align="right"),
        Column("cancelled", "canc", align="right"),
        Column("oldest_due_age_s", "oldest", value=lambda r: _secs(r["oldest_due_age_s"])),
        Column("last_success_at", "last ok", value=lambda r: _ago(now, r["last_success_at"])),
    ]
    timing = [
        Column("task", shrink=10, shrink_last=True),
        Column("window_attempts", "tries", align="right"),
        Column("failure_rate", "fail%", value=_percent, align="right"),
        Column("run_p50_s", "run p50", value=lambda r: _secs(r["run_p50_s"]), align="right"),
        Column("run_p95_s", "run p95", value=lambda r: _secs(r["run_p95_s"]), align="right"),
        Column("wait_p50_s", "wait p50", value=lambda r: _secs(r["wait_p50_s"]), align="right"),
        Column("wait_p95_s", "wait p95", value=lambda r: _secs(r["wait_p95_s"]), align="right"),
    ]
    click.echo(fitted_table(rows, counts, table_width()))
    click.echo(f"\nover the last {format_duration(since)}:")
    click.echo(fitted_table(rows, timing, table_width()))
    if usage:
        click.echo("\nlimits:")
        click.echo(fitted_table(usage, LIMIT_COLUMNS, table_width()))


def _percent(row: Mapping[str, Any]) -> str:
    rate = row["failure_rate"]
    return "" if rate is None else f"{rate * 100:.1f}%"


@cli.command()
@click.argument("ids", metavar="ID...", nargs=-1, type=int, required=True)
@common
@pass_ctx
def cancel(ctx: Context, ids: tuple[int, ...]) -> None:
    """Cancel pending or retrying tasks (others are reported and left alone).

    Example: tickrun cancel 812 813
    """
    from tickrun import clock, maintenance

    moved = maintenance.cancel(ctx.engine(), clock.now(), ids)
    for task_id, status in moved.skipped.items():
        click.echo(
            f"note: task {task_id} is {status}: only pending or retrying tasks can be cancelled",
            err=True,
        )
    tail = f": {_ids(moved.ids)}" if moved.rows else ""
    click.echo(f"cancelled {len(moved.rows)} task{'' if len(moved.rows) == 1 else 's'}{tail}")


@cli.command()
@click.option(
    "--older-than",
    metavar="DURATION",
    callback=duration,
    required=True,
    help="Delete tasks finished longer ago than this, e.g. 7d.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; change nothing.")
@common
@pass_ctx
def prune(ctx: Context, older_than: float, dry_run: bool) -> None:
    """Delete finished (succeeded, cancelled) tasks and their attempt history; prints the count.

    Pending, running, retrying and dead tasks are never touched (see tickrun dlq purge).
    The lock rows of per-key limits created before then are deleted too (claims recreate
    them).

    Example: tickrun prune --older-than 7d
    """
    from datetime import timedelta

    from tickrun import clock, maintenance

    now = clock.now()
    n = maintenance.prune(ctx.engine(), now, older_than=older_than, dry_run=dry_run)
    cutoff = (now - timedelta(seconds=older_than)).strftime("%Y-%m-%d %H:%M:%S")
    verb = "dry run: would prune" if dry_run else "pruned"
    click.echo(f"{verb} {_tasks(n, 'finished')} (finished before {cutoff} UTC)")


def _stale_bounds(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, float]:
    from tickrun.durations import parse_duration

    bounds = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{value!r}: use SCHEDULE=DURATION, e.g. nightly=25h")
        utf8(_ctx, _param, name)
        try:
            bounds[name] = parse_duration(text)
        except UsageError as exc:
            raise click.BadParameter(str(exc)) from None
    return bounds


@cli.command()
@click.option(
    "--max-dead",
    type=click.IntRange(min=0),
    metavar="N",
    default=0,
    show_default=True,
    help="A problem when more than N tasks are dead.",
)
@click.option(
    "--max-due-age",
    metavar="DURATION",
    callback=duration,
    help="A problem when a task has been due for longer.",
)
@click.option(
    "--max-silence",
    metavar="DURATION",
    callback=duration,
    help="A problem when no run started within this long.",
)
@click.option(
    "--stale",
    "stale",
    multiple=True,
    metavar="SCHEDULE=DURATION",
    callback=_stale_bounds,
    help="A problem when the schedule's last success is older (or it never succeeded). Repeatable.",
)
@click.option(
    "--alert",
    is_flag=True,
    help="Also send the problems to the alert targets (webhook, command, @app.on_dead).",
)
@common
@pass_ctx
def check(
    ctx: Context,
    max_dead: int | None,
    max_due_age: float | None,
    max_silence: float | None,
    stale: dict[str, float],
    alert: bool,
) -> None:
    """Health check for monitoring: one line per problem and exit code 1, else a line of OK
    and exit code 0. With --alert, the problems also go to the alert targets, as one alert.

    With an application configured, due tasks that none of its handlers claims are a problem.

    Example: tickrun check --max-dead 0 --max-due-age 10m --max-silence 5m --stale nightly=25h
    """
    from tickrun import clock, health

    if alert:
        from tickrun.cli.monitoring import check_targets

        check_targets(ctx)  # a bad or missing target is an error before anything is checked
    engine = ctx.engine()
    app = ctx.app(required=False)
    found = health.check(
        engine,
        clock.now(),
        max_dead=max_dead,
        max_due_age=max_due_age,
        max_silence=max_silence,
        handled=None if app is None else set(app.tasks),
        app_ref=(app.import_ref or "the application") if app is not None else "",
        stale=stale,
    )
    for problem in found.problems:
        click.echo(problem)
    if found.problems and alert:
        from tickrun.cli.monitoring import alert_problems

        alert_problems(ctx, engine, found.problems, found.summary)
    if found.problems:
        click.get_current_context().exit(1)
    click.echo(f"OK: {found.summary}")


@cli.command()
@common
@pass_ctx
def doctor(ctx: Context) -> None:
    """What this invocation resolves: database (password masked) and application, where each
    came from, versions, the schema, and SQLite's journal mode, busy timeout and file system.

    It works before `tickrun init` (it reports the missing schema).

    Example: TICKRUN_APP=myapp.jobs:app tickrun doctor
    """
    lines, error = _doctor(ctx)
    click.echo("\n".join(f"{k + ':':<14}{v}" if k else v for k, v in lines))
    if error is not None:
        raise error


def _doctor(ctx: Context) -> tuple[list[tuple[str, str]], TickrunError | None]:
    """The lines of ``tickrun doctor`` (label, text), and the error to exit with, if any.

    The application and the database are the ones ``ctx`` resolves for every other command.
    """
    import platform

    import sqlalchemy

    from tickrun import __version__
    from tickrun.database import mask_url
    from tickrun.doctor import examine

    lines: list[tuple[str, str]] = [
        ("tickrun", __version__),
        ("python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("sqlalchemy", sqlalchemy.__version__),
    ]
    app = None
    error: TickrunError | None = None
    try:
        ref = ctx.app_setting()
        if ref is None:
            lines.append(("application", "none (--app MODULE:ATTR, TICKRUN_APP or pyproject)"))
        else:
            lines.append(("application", f"{ref.value} (from {ref.source})"))
            app = ctx.app()
        setting = ctx.database_setting()
    except TickrunError as exc:
        lines.append(("", f"  error: {exc}"))
        error = exc
        setting = None
    if app is not None:
        lines.extend(_app_lines(app))
    if setting is None:
        return lines, error
    lines.append(("database", f"{mask_url(setting.value)} (from {setting.source})"))
    report = examine(setting.value)
    lines.extend(_database_lines(report))
    return lines, report.error


def _app_lines(app: App) -> list[tuple[str, str]]:
    specs = sorted(app.tasks.values(), key=lambda s: s.name)
    lines = [("tasks", f"{len(specs)}" + ("" if specs else " (none registered)"))]
    for spec in specs:
        timeout = "none" if spec.timeout is None else _secs(spec.timeout)
        lines.append(
            (
                "",
                f"  {spec.name}: queue {spec.queue}, priority {spec.priority}, "
                f"max_attempts {spec.max_attempts}, timeout {timeout}, "
                f"lease {_secs(spec.lease)}",
            )
        )
    if app.schedules:
        lines.append(("schedules", ", ".join(sorted(app.schedules))))
    return lines


def _database_lines(report: DatabaseReport) -> list[tuple[str, str]]:
    from tickrun.schema import SCHEMA_VERSION

    lines: list[tuple[str, str]] = []
    if report.missing_file:
        lines.append(("schema", f"missing: {report.path} does not exist; run `tickrun init`"))
    elif report.error is not None:
        lines.append(("", f"  error: {report.error}"))
    else:
        facts = report.facts or {}
        lines.append(("server", facts["server"]))
        if "journal_mode" in facts:
            lines.append(("journal mode", str(facts["journal_mode"])))
            lines.append(("busy timeout", f"{facts['busy_timeout_ms']} ms"))
        lines.append(("schema", _schema_state(report.version, SCHEMA_VERSION)))
        if report.counts is not None:
            shown = ", ".join(f"{n} {s}" for s, n in report.counts.items() if n) or "none"
            lines.append(("tasks in db", shown))
        if report.workers is not None:
            lines.append(("workers", _workers_line(report.workers)))
    if report.path is not None:
        fs = report.fs_type
        lines.append(("file system", fs or "unknown"))
        if report.network_fs:
            lines.append(
                (
                    "",
                    f"warning: {report.path} is on a network file system ({fs}): SQLite's "
                    "locking is unreliable there and concurrent runs can corrupt the file; keep "
                    "it on a local disk, or use PostgreSQL or MariaDB",
                )
            )
    return lines


def _workers_line(workers: list[LiveWorker]) -> str:
    if not workers:
        return "none live (no `tickrun worker` heartbeat in the last minute)"
    from tickrun.clock import now as clock_now

    now = clock_now()
    shown = [
        f"{w.worker} (up {_ago(now, w.started_at)[:-4]}, beat {_ago(now, w.heartbeat_at)}, "
        f"{w.claimed} claimed)"
        for w in workers
    ]
    return f"{len(workers)} live: " + ", ".join(shown)


def _schema_state(version: int | None, current: int) -> str:
    if version is None:
        return "missing: run `tickrun init`"
    if version < current:
        return f"version {version}, older than this tickrun's {current}: run `tickrun init`"
    if version > current:
        return f"version {version}, newer than this tickrun understands ({current}): upgrade"
    return f"version {version} (current)"
