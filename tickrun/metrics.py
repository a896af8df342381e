"""``tickrun metrics``: the database's state in the Prometheus text exposition format.

Everything is read from the database, so any host (or the run itself, with
``--metrics-file``) writes the same numbers, and node_exporter's textfile collector scrapes
them. Counts of attempts, and the run and wait time summaries, cover a window (``--window``,
one hour by default, itself exported as ``tickrun_window_seconds``): they are gauges, not
counters, because attempt history is pruned and a counter must never go down.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select

from tickrun import outbox
from tickrun.lifecycle import FAILING, RUNNING, STATUSES, SUCCEEDED, Outcome
from tickrun.listings import percentile
from tickrun.schema import attempts, runs, schedules, tasks

QUANTILES = (0.5, 0.9, 0.99)
# Attempts whose handler ran to an end: their duration is the handler's run time.
TIMED = (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.RETRY, Outcome.TIMEOUT)

_T, _A = tasks, attempts


@dataclass
class Family:
    """One metric: its HELP and TYPE lines and its samples (suffix, labels, value)."""

    name: str
    type: str  # gauge | summary
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        self.samples.append((suffix, labels, value))


def collect(engine: Engine, now: datetime, *, window: float = 3600.0) -> list[Family]:
    """Every metric, read in one connection."""
    start = now - timedelta(seconds=window)
    by_status = Family("tickrun_tasks", "gauge", "Tasks in the table, by task name and status.")
    due = Family("tickrun_due_tasks", "gauge", "Tasks due now (waiting or with an expired lease).")
    oldest = Family(
        "tickrun_oldest_due_age_seconds", "gauge", "How long the oldest due task has been due."
    )
    dead = Family("tickrun_dead_tasks", "gauge", "Tasks in the dead-letter queue.")
    backlog = Family(
        "tickrun_alerts_pending", "gauge", "Alerts not delivered yet, by target (the backlog)."
    )
    window_g = Family(
        "tickrun_window_seconds", "gauge", "The window the tickrun_window_* metrics cover."
    )
    tried = Family(
        "tickrun_window_attempts",
        "gauge",
        "Attempts that finished in the window, by task name and outcome.",
    )
    failures = Family(
        "tickrun_window_failures",
        "gauge",
        "Failed attempts (any outcome but succeeded) that finished in the window.",
    )
    run_time = Family(
        "tickrun_attempt_duration_seconds",
        "summary",
        "Handler run time of attempts that finished in the window.",
    )
    wait_time = Family(
        "tickrun_wait_seconds",
        "summary",
        "From due to started, for tasks whose latest attempt started in the window.",
    )
    run_start = Family(
        "tickrun_last_run_start_timestamp_seconds", "gauge", "When the latest run started."
    )
    run_end = Family(
        "tickrun_last_run_end_timestamp_seconds", "gauge", "When the latest finished run ended."
    )
    run_code = Family(
        "tickrun_last_run_exit_code", "gauge", "Exit code of the latest finished run."
    )
    last_success = Family(
        "tickrun_schedule_last_success_timestamp_seconds",
        "gauge",
        "When a task of the schedule last succeeded.",
    )
    window_g.add(window)
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    durations: dict[str, list[float]] = defaultdict(list)
    waits: dict[str, list[float]] = defaultdict(list)
    outcomes: dict[tuple[str, str], int] = defaultdict(int)
    with engine.connect() as conn:
        for name, status, n in conn.execute(
            select(_T.c.name, _T.c.status, func.count()).group_by(_T.c.name, _T.c.status)
        ):
            counts[name][status] = n
        for name, n, first in conn.execute(
            select(_T.c.name, func.count(), func.min(_T.c.claimable_at))
            .where(_T.c.claimable_at <= now)
            .group_by(_T.c.name)
        ):
            due.add(n, task=name)
            oldest.add(max(0.0, (now - first).total_seconds()), task=name)
        for name, outcome, started, finished in conn.execute(
            select(_T.c.name, _A.c.outcome, _A.c.started_at, _A.c.finished_at)
            .select_from(_A.join(_T, _T.c.id == _A.c.task_id))
            .where(_A.c.finished_at >= start)
        ):
            outcomes[(name, outcome)] += 1
            if outcome in TIMED and started is not None:
                durations[name].append(max(0.0, (finished - started).total_seconds()))
        for name, run_at, started in conn.execute(
            select(_T.c.name, _T.c.run_at, _T.c.started_at).where(
                _T.c.status.in_((RUNNING, SUCCEEDED)), _T.c.started_at >= start
            )
        ):
            waits[name].append(max(0.0, (started - run_at).total_seconds()))
        for target, n in sorted(outbox.backlog(conn).items()):
            backlog.add(n, target=target)
        latest_start = conn.execute(select(func.max(runs.c.started_at))).scalar()
        finished_run = conn.execute(
            select(runs.c.finished_at, runs.c.exit_code)
            .where(runs.c.finished_at.isnot(None))
            .order_by(runs.c.finished_at.desc(), runs.c.id.desc())
            .limit(1)
        ).first()
        for name, at in conn.execute(
            select(schedules.c.name, schedules.c.last_success_at)
            .where(schedules.c.last_success_at.isnot(None))
            .order_by(schedules.c.name)
        ):
            last_success.add(at.timestamp(), schedule=name)
    for name in sorted(counts):
        for status in STATUSES:
            by_status.add(counts[name].get(status, 0), task=name, status=str(status))
    dead.add(sum(c.get("dead", 0) for c in counts.values()))
    for (name, outcome), n in sorted(outcomes.items()):
        tried.add(n, task=name, outcome=outcome)
        if outcome in FAILING:
            failures.add(n, task=name, outcome=outcome)
    _summaries(run_time, durations)
    _summaries(wait_time, waits)
    if latest_start is not None:
        run_start.add(latest_start.timestamp())
    if finished_run is not None:
        run_end.add(finished_run.finished_at.timestamp())
        run_code.add(finished_run.exit_code if finished_run.exit_code is not None else math.nan)
    return [
        by_status,
        due,
        oldest,
        dead,
        backlog,
        window_g,
        tried,
        failures,
        run_time,
        wait_time,
        run_start,
        run_end,
        run_code,
        last_success,
    ]


def _summaries(family: Family, values: Mapping[str, list[float]]) -> None:
    for name in sorted(values):
        seen = values[name]
        for q in QUANTILES:
            family.add(percentile(seen, q) or 0.0, task=name, quantile=f"{q:g}")
        family.add(sum(seen), "_sum", task=name)
        family.add(len(seen), "_count", task=name)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def render(families: Iterable[Family]) -> str:
    """The text exposition format (version 0.0.4): HELP, TYPE, then the samples."""
    lines = []
    for f in families:
        lines.append(f"# HELP {f.name} {f.help}")
        lines.append(f"# TYPE {f.name} {f.type}")
        for suffix, labels, value in f.samples:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(
                f"{f.name}{suffix}{{{text}}} {_value(value)}"
                if text
                else f"{f.name}{suffix} {_value(value)}"
            )
    return "\n".join(lines) + "\n"


def write_atomically(path: str, text: str) -> None:
    """Write ``path`` through a temporary file in its directory and a rename, so a reader (the
    textfile collector) sees the old file or the new one, never half of one. The temporary
    name does not end in ``.prom``, which the collector would read."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tickrun-metrics-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
