"""Failures that reach a person: ``alerts`` (and ``alerts retry``), ``metrics``, and what
``run`` shares with any command that runs tasks: ``--log-format``, ``--metrics-file`` and
``--ping-url`` (:func:`observability`, :class:`Observe`)."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from tickrun.cli.base import (
    Context,
    choice,
    cli,
    common,
    duration,
    formats,
    given_as,
    pass_ctx,
    table_width,
)
from tickrun.errors import UsageError
from tickrun.output import Column

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tickrun.app import App
    from tickrun.notify import Targets

events = logging.getLogger("tickrun.run")

ALERT_FIELDS = [
    "id",
    "kind",
    "target",
    "task_id",
    "task",
    "status",
    "attempts",
    "created_at",
    "next_attempt_at",
    "delivered_at",
    "last_error",
]
ALERT_COLUMNS = [
    Column("id", align="right"),
    Column("target"),
    Column("task_id", "task id", align="right"),
    Column("task", shrink=10),
    Column("status"),
    Column("attempts", "tries", align="right"),
    Column("next_attempt_at", "next"),
    Column("last_error", "error", shrink=12, shrink_last=True),
]


# -- shared by `run` (and any later command that runs tasks) ---------------------------------


@dataclass(frozen=True)
class Observe:
    """How a run reports beyond its summary line: log format, metrics file, pings."""

    log_format: str = "text"
    metrics_file: str | None = None
    ping_url: str | None = None
    log_level: str = "info"
    # How the ping URL and metrics file were given (flag or variable), for their errors.
    ping_from: str = "--ping-url"
    metrics_from: str = "--metrics-file"

    def check(self) -> None:
        """Bad values are one-line errors before anything runs or is sent."""
        from tickrun.notify import check_url

        if self.ping_url:
            check_url(self.ping_url, self.ping_from)
        if self.metrics_file:
            _check_writable(self.metrics_file, self.metrics_from)

    def start(self) -> None:
        from tickrun import logs

        # Child processes (tasks with a timeout) read their level from the environment.
        os.environ[logs.LEVEL_ENV] = self.log_level
        logs.setup(self.log_format, self.log_level)
        self.ping("/start", "")

    def ping(self, suffix: str, body: str) -> None:
        if not self.ping_url:
            return
        from tickrun.notify import ping

        warning = ping(self.ping_url, suffix, body)
        if warning:
            # Through logging, like the run's other warnings: a JSON log stays all JSON.
            events.warning(warning, extra={"event": "ping_failed", "error": warning})

    def finish(self, engine: Engine, exit_code: int, line: str) -> None:
        """After a run: the metrics file, then the success or failure ping."""
        self.write_metrics(engine)
        self.ping("" if exit_code == 0 else "/fail", line)

    def write_metrics(self, engine: Engine) -> None:
        """The metrics file, if one is asked for (a worker writes it at every heartbeat)."""
        if not self.metrics_file:
            return
        try:
            _write_metrics(engine, self.metrics_file, 3600.0)
        except Exception as exc:  # noqa: BLE001 - metrics never fail a run
            from tickrun.failures import describe

            error = describe(exc)[0]
            events.warning(
                "metrics file not written: %s",
                error,
                extra={"event": "metrics_failed", "error": error},
            )


def observability(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--log-format``, ``--log-level``, ``--metrics-file`` and ``--ping-url``, resolved into
    one ``observe``."""
    from tickrun.logs import DEFAULT_LEVEL, FORMATS, LEVEL_ENV, LEVELS

    @functools.wraps(fn)
    def wrapper(
        *args: Any,
        log_format: str,
        log_level: str,
        metrics_file: str | None,
        ping_url: str | None,
        **kwargs: Any,
    ) -> Any:
        ctx = click.get_current_context()
        observe = Observe(
            log_format,
            metrics_file or None,
            ping_url or None,
            log_level,
            ping_from=given_as(ctx, "ping_url"),
            metrics_from=given_as(ctx, "metrics_file"),
        )
        return fn(*args, observe=observe, **kwargs)

    wrapper = click.option(
        "--log-level",
        metavar="[" + "|".join(LEVELS) + "]",
        callback=choice(*LEVELS),
        default=DEFAULT_LEVEL,
        show_default=True,
        envvar=LEVEL_ENV,
        help="Least severe log lines shown, of tickrun and of handlers' ctx.logger; other "
        f"libraries log warnings and up (env {LEVEL_ENV}).",
    )(wrapper)

    wrapper = click.option(
        "--ping-url",
        metavar="URL",
        envvar="TICKRUN_PING_URL",
        help="Healthchecks-style dead-man ping: URL/start at start, URL on exit 0, URL/fail "
        "otherwise, with the summary as body (env TICKRUN_PING_URL).",
    )(wrapper)
    wrapper = click.option(
        "--metrics-file",
        metavar="FILE",
        envvar="TICKRUN_METRICS_FILE",
        help="Write `tickrun metrics` to FILE (atomically) at the end of the run, for "
        "node_exporter's textfile collector (env TICKRUN_METRICS_FILE).",
    )(wrapper)
    return click.option(
        "--log-format",
        metavar="[" + "|".join(FORMATS) + "]",
        callback=choice(*FORMATS),
        default="text",
        show_default=True,
        envvar="TICKRUN_LOG_FORMAT",
        help="Log lines on stderr: text, or one JSON object per event (env TICKRUN_LOG_FORMAT).",
    )(wrapper)


def _check_writable(path: str, what: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"{what} {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"{what} {path}: directory {directory} is not writable")
    if os.path.isdir(path):
        raise UsageError(f"{what} {path} is a directory")


def _write_metrics(engine: Engine, path: str | None, window: float) -> str:
    from tickrun import clock, metrics

    text = metrics.render(metrics.collect(engine, clock.now(), window=window))
    if path is not None:
        metrics.write_atomically(path, text)
    return text


def alert_problems(ctx: Context, engine: Engine, problems: list[str], summary: str) -> None:
    """``tickrun check --alert``: one alert of kind ``check`` per target, sent now (within the
    delivery budget); one not delivered waits for later runs like any other."""
    import time

    from tickrun import clock, outbox
    from tickrun.delivery import END_BUDGET, Deliverer
    from tickrun.notify import check_document

    app, targets = check_targets(ctx)
    now = clock.now()
    with engine.begin() as conn:
        outbox.write(
            conn,
            targets.names,
            [check_document(problems, summary, now.isoformat())],
            now,
            kind=outbox.CHECK_EVENT,
        )
    report = Deliverer(engine, app, targets).deliver_due(time.monotonic() + END_BUDGET)
    if report.failed:
        click.echo(f"warning: {report.failed} alert delivery failed: see tickrun alerts", err=True)


def check_targets(ctx: Context) -> tuple[App | None, Targets]:
    """The application (if any) and its alert targets; a one-line error when there are none."""
    from tickrun.notify import resolve_targets

    app = ctx.app(required=False)
    targets = resolve_targets(app.alert_settings if app else {}, hook=bool(app and app.dead_hooks))
    if not targets.names:
        raise UsageError(
            "no alert target configured: set alert_webhook or alert_command "
            "(TICKRUN_ALERT_WEBHOOK, TICKRUN_ALERT_COMMAND, [tool.tickrun]), or use @app.on_dead"
        )
    return app, targets


# -- commands ---------------------------------------------------------------------------------


@cli.group(invoke_without_command=True)
@click.option("--all", "include_delivered", is_flag=True, help="Delivered alerts too.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N alerts.")
@formats
@common
@pass_ctx
def alerts(ctx: Context, include_delivered: bool, limit: int | None, fmt: str) -> None:
    """Alerts about dead tasks not delivered yet (pending, failed, sending), oldest first.

    Each dead task gets one alert per configured target (webhook, command, @app.on_dead),
    written with the task's move to dead and delivered by runs until a delivery succeeds.

    Example: tickrun alerts --json
    """
    from tickrun import clock, outbox
    from tickrun.output import render

    if click.get_current_context().invoked_subcommand is not None:
        if include_delivered or limit is not None:
            raise UsageError("put options after the subcommand, e.g. tickrun alerts retry --all")
        return
    rows = outbox.listing(
        ctx.engine(), clock.now(), include_delivered=include_delivered, limit=limit
    )
    click.echo(
        render(rows, ALERT_FIELDS, fmt, "(no undelivered alerts)", ALERT_COLUMNS, table_width())
    )


@alerts.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "all_pending", is_flag=True, help="Every undelivered alert.")
@common
@pass_ctx
def alerts_retry(ctx: Context, ids: tuple[int, ...], all_pending: bool) -> int:
    """Send undelivered alerts again now, instead of after their backoff.

    Alerts for an @app.on_dead hook need the application (--app). Exit code 1 when a
    delivery failed (it is retried later, with backoff).

    Example: tickrun alerts retry --all   |   tickrun alerts retry 12 13
    """
    import time

    from tickrun import clock, outbox
    from tickrun.delivery import END_BUDGET, Deliverer

    if ids and all_pending:
        raise UsageError("give alert ids or --all, not both")
    if not ids and not all_pending:
        raise UsageError("give the ids of the alerts to send again, or --all")
    app, targets = check_targets(ctx)
    engine = ctx.engine()
    due = outbox.make_due(engine, ids or None, clock.now())
    report = Deliverer(engine, app, targets).deliver_due(time.monotonic() + END_BUDGET)
    waiting = len(outbox.listing(engine, clock.now()))
    click.echo(
        f"{len(due)} alert(s) due now: delivered {report.delivered}, failed {report.failed}; "
        f"{waiting} still undelivered"
    )
    return 1 if report.failed else 0


@cli.command()
@click.option(
    "--window",
    metavar="DURATION",
    callback=duration,
    default="1h",
    show_default=True,
    help="Attempts, run and wait times over this last stretch of time.",
)
@click.option(
    "--output",
    metavar="FILE",
    help="Write to FILE atomically (a temporary file, then a rename) instead of stdout.",
)
@common
@pass_ctx
def metrics(ctx: Context, window: float, output: str | None) -> None:
    """Prometheus metrics (text exposition format) from the database: tasks by status, due
    depth and age, dead tasks, alert backlog, attempts and failures, run and wait times, the
    latest run, each schedule's last success.

    Example: tickrun metrics --output /var/lib/node_exporter/textfile/tickrun.prom
    """
    if window <= 0:
        raise UsageError("--window must be longer than 0s")
    if output is not None:
        _check_writable(output, "--output")
    text = _write_metrics(ctx.engine(), output, window)
    if output is None:
        click.echo(text, nl=False)
