"""The core commands: init, enqueue, run, worker."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from tickrun.cli.base import Context, cli, common, duration, formats, pass_ctx, utf8
from tickrun.cli.monitoring import Observe, observability
from tickrun.errors import UsageError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tickrun.app import App
    from tickrun.runner import RunOptions, RunSummary


@cli.command()
@common
@pass_ctx
def init(ctx: Context) -> None:
    """Create the tickrun tables, or upgrade an older schema in place (idempotent).

    Example: tickrun --db postgresql+psycopg://app@db/app init
    """
    from tickrun.database import mask_url
    from tickrun.migrations import init_schema

    engine = ctx.engine(schema=False, create=True)
    before, after = init_schema(engine)
    if before is None:
        state = "created"
    elif before == after:
        state = "already current"
    else:
        state = f"upgraded from version {before}"
    click.echo(f"tickrun schema version {after} {state} in {mask_url(ctx.url)}")


@cli.command()
@click.argument("task", callback=utf8)
@click.option(
    "--payload",
    metavar="JSON",
    help="Keyword arguments, as a JSON object; - reads it from stdin.",
)
@click.option(
    "--payload-file",
    metavar="FILE",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Read the JSON object from FILE (- for stdin): for payloads too large for a command line.",
)
@click.option(
    "--key", callback=utf8, help="Idempotency key: a second enqueue with it adds nothing."
)
@click.option("--at", "at", metavar="ISO", help="Run at this time (ISO 8601; UTC if no offset).")
@click.option(
    "--in",
    "delay",
    metavar="DURATION",
    callback=duration,
    help="Run after this long, e.g. 10m, 90s, 200ms, 1w.",
)
@click.option("--queue", callback=utf8, help="Queue, instead of the task's own.")
@click.option("--priority", type=int, help="Priority, instead of the task's own (higher first).")
@click.option(
    "--group",
    callback=utf8,
    help="Key value for per-key limits (a task with a concurrency_key), instead of the payload's.",
)
@formats
@common
@pass_ctx
def enqueue(
    ctx: Context,
    task: str,
    payload: str | None,
    payload_file: str | None,
    key: str | None,
    at: str | None,
    delay: float | None,
    queue: str | None,
    priority: int | None,
    group: str | None,
    fmt: str,
) -> None:
    """Add a task; prints its id.

    The payload is a JSON object (nested at most 100 levels), given with --payload, or read
    from a file or stdin with --payload-file FILE or --payload -.

    Example: tickrun enqueue send_welcome_email --payload '{"user_id": 42}' --in 10m
    """
    from tickrun.output import render_one

    data = _payload(payload, payload_file)
    if at is not None and delay is not None:
        raise UsageError("give --at or --in, not both")
    run_at = _parse_time(at) if at is not None else None
    app = ctx.app()
    assert app is not None
    options = {
        "key": key,
        "delay": delay,
        "run_at": run_at,
        "queue": queue,
        "priority": priority,
        "group": group,
    }
    app.task_row(task, data, **options)  # bad input fails before the database is opened
    ctx.engine()
    result = app.enqueue_result(task, data, **options)
    if fmt == "table":
        click.echo(result.id)
        if result.duplicate:
            click.echo(
                f"note: key {key!r} is already taken by task {result.id}; nothing added", err=True
            )
    else:
        click.echo(render_one({"id": result.id, "duplicate": result.duplicate}, fmt))


def shared_run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The flags ``run`` and ``worker`` share: --queue, --concurrency, --worker, --fail-on,
    --grace, and (:func:`observability`) --log-format, --metrics-file, --ping-url."""
    for option in reversed(
        [
            click.option(
                "--queue",
                "queues",
                callback=utf8,
                multiple=True,
                help="Only this queue (repeatable).",
            ),
            click.option(
                "--concurrency",
                type=click.IntRange(min=1, max=256),
                default=1,
                show_default=True,
                help="Handlers run at once.",
            ),
            click.option(
                "--worker", callback=utf8, help="Name recorded on attempts [default: host:pid]."
            ),
            click.option(
                "--fail-on",
                type=click.Choice(["dead", "failure", "never"]),
                default="dead",
                show_default=True,
                help="What makes the exit code 1.",
            ),
            click.option(
                "--grace",
                metavar="DURATION",
                callback=duration,
                default="30s",
                show_default=True,
                help="On SIGTERM/SIGINT, how long in-flight tasks may finish.",
            ),
        ]
    ):
        fn = option(fn)
    return observability(fn)


@cli.command()
@click.option("--max-tasks", type=click.IntRange(min=1), help="Claim at most N tasks.")
@click.option(
    "--max-time",
    metavar="DURATION",
    callback=duration,
    help="Stop claiming after this long, e.g. 50s.",
)
@shared_run_options
@common
@pass_ctx
def run(
    ctx: Context,
    queues: tuple[str, ...],
    max_tasks: int | None,
    max_time: float | None,
    concurrency: int,
    worker: str | None,
    fail_on: str,
    grace: float,
    observe: Observe,
) -> int:
    """Enqueue due schedule occurrences, then claim and run due tasks until none is due.

    Exit code 0: no task became dead; 1: one did (see --fail-on); 3: the database failed, or
    the run could not renew its leases in time (it then stops its handlers and exits before
    the leases expire). Alerts about tasks that became dead are delivered by the run (and by
    later runs, until they get through); a failed delivery or ping never changes the exit code.

    Example: tickrun --app myapp.jobs:app run --max-time 50s --concurrency 4
    """
    from tickrun.runner import Runner

    options = _run_options(
        observe, queues, concurrency, worker, fail_on, grace, max_tasks, max_time
    )

    def start(app: App, engine: Engine) -> RunSummary:
        return Runner(app, engine, options).run(install_signals=True)

    return _run_observed(ctx, observe, start)


@cli.command("worker")
@click.option(
    "--poll",
    metavar="DURATION",
    callback=duration,
    default="1s",
    show_default=True,
    help="Longest idle wait before looking at the database (PostgreSQL is woken by NOTIFY "
    "at once, SQLite by a change of its file; MariaDB polls).",
)
@click.option(
    "--max-tasks-per-child",
    type=click.IntRange(min=1),
    metavar="N",
    help="Exit (code 0) after claiming N tasks, for the service manager to start a fresh "
    "process (bounds the memory of leaky handlers).",
)
@shared_run_options
@common
@pass_ctx
def worker_command(
    ctx: Context,
    queues: tuple[str, ...],
    poll: float,
    max_tasks_per_child: int | None,
    concurrency: int,
    worker: str | None,
    fail_on: str,
    grace: float,
    observe: Observe,
) -> int:
    """Claim and run tasks continuously, woken by the database; fire schedules as `run` does.

    A `run` that does not stop when idle: same leases, limits, alerts and schedule keys.
    SIGTERM/SIGINT stop it as they stop `run` (--grace). A lost database is logged once
    per outage and once when it is back; the worker tries again at once, then after 0.5s,
    1s, 2s, ... (at most 30s apart, starting over at every outage), and never exits for it
    (a stop while it is away: exit 3). It heartbeats into `tickrun runs`, so
    `check --max-silence` and `doctor` see it. The --metrics-file is written every 15s and
    at exit. Exit codes as for `run`; 3 also when the database cannot be reached at start.

    Example: tickrun --app myapp.jobs:app worker --concurrency 4
    """
    from tickrun.worker import Worker, WorkerOptions

    if poll is None or poll <= 0:
        raise UsageError("--poll must be longer than 0s")

    options = _run_options(
        observe, queues, concurrency, worker, fail_on, grace, max_tasks_per_child, None
    )

    def start(app: App, engine: Engine) -> RunSummary:
        beat = observe.write_metrics if observe.metrics_file else None
        return Worker(app, engine, options, WorkerOptions(poll=poll, on_beat=beat)).run(
            install_signals=True
        )

    return _run_observed(ctx, observe, start)


def _run_options(
    observe: Observe,
    queues: tuple[str, ...],
    concurrency: int,
    worker: str | None,
    fail_on: str,
    grace: float,
    max_tasks: int | None,
    max_time: float | None,
) -> RunOptions:
    """The options of a run or worker started from the CLI, from the flags they share."""
    from tickrun.runner import RunOptions

    return RunOptions(
        queues=queues,
        max_tasks=max_tasks,
        max_time=max_time,
        concurrency=concurrency,
        worker=worker,
        fail_on=fail_on,
        grace=grace,
        exit_on_lease_loss=True,  # a CLI process exits before leases it cannot renew expire
        log_format=observe.log_format,
    )


def _run_observed(
    ctx: Context, observe: Observe, start: Callable[[App, Engine], RunSummary]
) -> int:
    """A run or worker with its log format, pings and metrics file; prints its summary."""
    from tickrun.errors import TickrunError

    observe.check()
    observe.start()
    try:
        app = ctx.app()
        assert app is not None
        engine = ctx.engine()
        summary = start(app, engine)
    except TickrunError as exc:
        observe.ping("/fail", f"error: {' '.join(str(exc).split())}")
        raise
    click.echo(summary.line())
    observe.finish(engine, summary.exit_code, summary.line())
    return summary.exit_code


def _payload(text: str | None, path: str | None) -> dict[str, Any]:
    """The --payload object, from the flag, a file or stdin; one-line errors for the rest."""
    from tickrun.errors import PayloadError
    from tickrun.flow import is_text
    from tickrun.specs import decode_payload

    if text is not None and path is not None:
        raise UsageError("give --payload or --payload-file, not both")
    if text == "-":
        path = "-"
    if path is None:
        if text is None:
            return {}
        source = "--payload"
    else:
        source = "stdin" if path == "-" else path
        text = _read_payload(path, source)
    if not is_text(text):
        raise PayloadError(f"payload from {source} is not valid UTF-8")
    return decode_payload(text)


def _read_payload(path: str, source: str) -> str:
    """The text of a payload file (``-``: stdin), strictly UTF-8."""
    import sys

    from tickrun.errors import PayloadError

    data: bytes
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as fh:
                data = fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read payload from {source}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"payload from {source} is not valid UTF-8 ({exc.reason})") from None


def _parse_time(text: str) -> datetime:
    from tickrun.clock import as_utc

    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        raise UsageError(
            f"invalid date {text!r}: use ISO 8601, e.g. 2026-11-23T09:00:00+01:00"
        ) from None
