"""Read models behind the listing commands: ``due``, ``failures``, ``dlq``, ``show``, ``stats``.

SQLAlchemy Core only, the same SQL on every database, and every ``now`` comes from the caller
(tickrun.clock), never the database's ``NOW()``. The ``*_FIELDS`` lists are the columns of the
JSON and CSV output, in order: part of the command-line contract.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Select, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import Executable

from tickrun import dialects, gate
from tickrun.errors import NotFound
from tickrun.lifecycle import (
    CANCELLED,
    DEAD,
    FAILING,
    PENDING,
    RETRYING,
    RUNNING,
    SUCCEEDED,
    Outcome,
)
from tickrun.schema import CLAIM_ORDER, attempts, limits, tasks
from tickrun.status import decode_result

# fmt: off
DUE_FIELDS = [
    "id", "task", "queue", "priority", "status", "run_at", "attempts", "max_attempts", "key",
    "group", "held",
]
LIMIT_FIELDS = [
    "scope", "rate", "started_in_window", "concurrency", "running", "full", "registered_at",
]
FAILURE_FIELDS = ["id", "task", "attempt", "failed_at", "error", "status", "next_run_at"]
DLQ_FIELDS = ["id", "task", "queue", "attempts", "failed_at", "last_error", "key"]
HISTORY_FIELDS = ["attempt", "started_at", "finished_at", "worker", "outcome", "error"]
STATS_FIELDS = [
    "task", "pending", "due", "running", "retrying", "succeeded", "dead", "cancelled",
    "oldest_due_age_s", "last_success_at",
]
# Beyond the contract: attempt timings and failures over the --since window.
STATS_WINDOW_FIELDS = [
    "window_attempts", "failure_rate", "run_p50_s", "run_p95_s", "wait_p50_s", "wait_p95_s",
]
# fmt: on

# Outcomes whose handler ran to its end, so finished_at - started_at is its run time. A lost
# attempt ended when a later run noticed its lease had expired, an interrupted one when the
# shutdown grace ran out: neither measures the handler.
TIMED = (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.RETRY, Outcome.TIMEOUT)

_T = tasks
_A = attempts


def as_dicts(conn: Connection, stmt: Executable) -> list[dict[str, Any]]:
    """Every row ``stmt`` returns, each as a plain dict keyed by column label."""
    return [dict(r._mapping) for r in conn.execute(stmt)]


def _narrowed(
    stmt: Select[Any],
    task: str | None,
    limit: int | None,
    *,
    queue: str | None = None,
    offset: int | None = None,
) -> Select[Any]:
    """``stmt`` restricted to tasks named ``task`` in ``queue``, and to ``limit`` rows after
    the first ``offset`` (the dashboard's pages), where given."""
    if task is not None:
        stmt = stmt.where(_T.c.name == task)
    if queue is not None:
        stmt = stmt.where(_T.c.queue == queue)
    if limit is not None:
        stmt = stmt.limit(limit)
    if offset:
        stmt = stmt.offset(offset)
    return stmt


def due(
    engine: Engine,
    now: datetime,
    *,
    queue: str | None = None,
    task: str | None = None,
    limit: int | None = None,
    offset: int | None = None,
) -> list[dict[str, Any]]:
    """Tasks due now, in claim order (priority desc, due time, id).

    ``claimable_at`` is the run_at of a waiting task and the lease expiry of a running one, so
    ``claimable_at <= now`` is exactly "pending or retrying and run_at <= now, or running with
    its lease expired", the claim query's own condition. ``held`` says why a limit keeps a
    task from being claimed now (tickrun.gate.holds), None when nothing does.
    """
    stmt = (
        select(
            _T.c.id,
            _T.c.name.label("task"),
            _T.c.queue,
            _T.c.priority,
            _T.c.status,
            _T.c.run_at,
            _T.c.attempts,
            _T.c.max_attempts,
            _T.c.key,
            _T.c.group_key,
            _T.c.group_limit,
            _T.c.group_order,
        )
        .where(_T.c.claimable_at <= now)
        .order_by(*CLAIM_ORDER)
    )
    with engine.connect() as conn:
        narrowed = _narrowed(stmt, task, limit, queue=queue, offset=offset)
        found = conn.execute(dialects.unfinished(narrowed, conn, claim_order=True)).all()
        held = gate.holds(conn, found, now)
    rows = []
    for r in found:
        row = dict(r._mapping)
        row["group"] = row.pop("group_key")
        del row["group_limit"], row["group_order"]
        row["held"] = held.get(r.id)
        rows.append(row)
    return rows


def failures(
    engine: Engine,
    now: datetime,
    *,
    since: float,
    task: str | None = None,
    queue: str | None = None,
    limit: int | None = None,
    offset: int | None = None,
) -> list[dict[str, Any]]:
    """Failed attempts that finished within ``since`` seconds of ``now``, newest first."""
    stmt = (
        select(
            _T.c.id,
            _T.c.name.label("task"),
            _A.c.attempt,
            _A.c.finished_at.label("failed_at"),
            _A.c.error,
            _A.c.outcome,
            _T.c.status,
            _T.c.run_at,
        )
        .select_from(_A.join(_T, _T.c.id == _A.c.task_id))
        .where(_A.c.outcome.in_(FAILING), _A.c.finished_at >= now - timedelta(seconds=since))
        .order_by(_A.c.finished_at.desc(), _A.c.id.desc())
    )
    with engine.connect() as conn:
        rows = as_dicts(conn, _narrowed(stmt, task, limit, queue=queue, offset=offset))
    for row in rows:
        run_at = row.pop("run_at")
        row["next_run_at"] = run_at if row["status"] == RETRYING else None
    return rows


def has_tasks(engine: Engine, name: str) -> bool:
    """Whether any task of this name is stored (a name the application no longer registers
    may still have rows to list or purge). Asked only for such names: it reads the table."""
    with engine.connect() as conn:
        return conn.execute(select(_T.c.id).where(_T.c.name == name).limit(1)).first() is not None


def dead_select() -> Select[Any]:
    """The columns of a dead-letter row (DLQ_FIELDS), as ``dlq`` lists them."""
    return select(
        _T.c.id,
        _T.c.name.label("task"),
        _T.c.queue,
        _T.c.attempts,
        _T.c.finished_at.label("failed_at"),
        _T.c.last_error,
        _T.c.key,
    )


def dead(
    engine: Engine,
    *,
    task: str | None = None,
    queue: str | None = None,
    limit: int | None = None,
    offset: int | None = None,
) -> list[dict[str, Any]]:
    """The dead-letter queue, most recently dead first."""
    stmt = (
        dead_select().where(_T.c.status == DEAD).order_by(_T.c.finished_at.desc(), _T.c.id.desc())
    )
    with engine.connect() as conn:
        return as_dicts(conn, _narrowed(stmt, task, limit, queue=queue, offset=offset))


@dataclass(frozen=True)
class TaskDetail:
    """One task: its fields (payload parsed), every attempt, and its last failure in full."""

    fields: dict[str, Any]
    history: list[dict[str, Any]]
    last_failure: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        return {
            **self.fields,
            "history": [{f: h[f] for f in HISTORY_FIELDS} for h in self.history],
        }


def show(engine: Engine, task_id: int) -> TaskDetail:
    stmt = select(
        _T.c.id,
        _T.c.name.label("task"),
        _T.c.status,
        _T.c.queue,
        _T.c.priority,
        _T.c.key,
        _T.c.attempts,
        _T.c.max_attempts,
        _T.c.run_at,
        _T.c.created_at,
        _T.c.started_at,
        _T.c.finished_at,
        _T.c.lease_until,
        _T.c.worker,
        _T.c.schedule,
        _T.c.scheduled_for,
        _T.c.last_error,
        _T.c.last_traceback,
        _T.c.payload,
        _T.c.parent_id,
        _T.c.result,
    ).where(_T.c.id == task_id)
    # The follow-ups its success enqueued (ctx.enqueue), served by ix_tickrun_tasks_parent.
    children_stmt = select(_T.c.id).where(_T.c.parent_id == task_id).order_by(_T.c.id)
    history_stmt = (
        select(
            _A.c.attempt,
            _A.c.started_at,
            _A.c.finished_at,
            _A.c.worker,
            _A.c.outcome,
            _A.c.error,
            _A.c.traceback,
        )
        .where(_A.c.task_id == task_id)
        .order_by(_A.c.id)
    )
    with engine.connect() as conn:
        found = as_dicts(conn, stmt)
        if not found:
            raise NotFound(f"no task with id {task_id}")
        history = as_dicts(conn, history_stmt)
        children = list(conn.execute(children_stmt).scalars())
    fields = found[0]
    fields["result"] = decode_result(fields["result"])
    fields["children"] = children
    # A payload written by something other than tickrun is shown as it is.
    with contextlib.suppress(ValueError):
        fields["payload"] = json.loads(fields["payload"])
    for h in history:
        # A lost attempt ended when its run died, unseen; its finished_at is when a later claim
        # noticed the expired lease, so the difference is no run time: unknown.
        lost = h["outcome"] == Outcome.LOST
        h["duration_s"] = None if lost else _seconds(h["started_at"], h["finished_at"])
    failed = [h for h in history if h["outcome"] in FAILING]
    last = failed[-1] if failed else None
    if last is None and fields["last_error"]:
        last = {
            "attempt": None,
            "outcome": fields["status"],
            "error": fields["last_error"],
            "traceback": fields["last_traceback"],
        }
    return TaskDetail(fields, history, last)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


# -- stats ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks.

    The same definition as numpy's default and ``statistics.quantiles(method="inclusive")``;
    ``percentile(v, 0.5)`` is the median.

    >>> percentile([1, 2, 3, 4], 0.5)
    2.5
    >>> percentile([10, 20, 30, 40, 50], 0.95)
    48.0
    """
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def stats(engine: Engine, now: datetime, *, since: float) -> list[dict[str, Any]]:
    """Per task name: counts by status, due tasks, last success, and over the window
    (attempts that finished within ``since`` seconds of ``now``):

    - ``run_p50_s`` / ``run_p95_s``: finished_at - started_at of attempts whose handler ran to
      an end (succeeded, failed, retry, timeout);
    - ``wait_p50_s`` / ``wait_p95_s``: from due to started, i.e. the task's started_at - run_at,
      for tasks whose latest attempt started in the window and that are running or succeeded
      (run_at is then still the due time of that attempt: the first run_at, or the retry time
      of a retried task);
    - ``failure_rate``: failing attempts / all attempts finished in the window.
    """
    start = now - timedelta(seconds=since)
    by_status = select(_T.c.name, _T.c.status, func.count()).group_by(_T.c.name, _T.c.status)
    due_now = (
        select(_T.c.name, func.count(), func.min(_T.c.claimable_at))
        .where(_T.c.claimable_at <= now)
        .group_by(_T.c.name)
    )
    last_success = (
        select(_T.c.name, func.max(_T.c.finished_at))
        .where(_T.c.status == SUCCEEDED)
        .group_by(_T.c.name)
    )
    window = (
        select(_T.c.name, _A.c.outcome, _A.c.started_at, _A.c.finished_at)
        .select_from(_A.join(_T, _T.c.id == _A.c.task_id))
        .where(_A.c.finished_at >= start)
    )
    waits = select(_T.c.name, _T.c.run_at, _T.c.started_at).where(
        _T.c.status.in_((RUNNING, SUCCEEDED)), _T.c.started_at >= start
    )
    rows: dict[str, dict[str, Any]] = defaultdict(dict)
    run_times: dict[str, list[float]] = defaultdict(list)
    wait_times: dict[str, list[float]] = defaultdict(list)
    tried: dict[str, int] = defaultdict(int)
    failed: dict[str, int] = defaultdict(int)
    with engine.connect() as conn:
        for name, status, n in conn.execute(by_status):
            rows[name][status] = n
        for name, n, oldest in conn.execute(due_now):
            rows[name]["due"] = n
            rows[name]["oldest_due_age_s"] = round((now - oldest).total_seconds(), 3)
        for name, at in conn.execute(last_success):
            rows[name]["last_success_at"] = at
        for name, outcome, started, finished in conn.execute(window):
            rows[name]  # noqa: B018 - a name seen only in the window still gets its row
            tried[name] += 1
            if outcome in FAILING:
                failed[name] += 1
            if outcome in TIMED and started is not None:
                run_times[name].append((finished - started).total_seconds())
        for name, run_at, started in conn.execute(waits):
            rows[name]  # noqa: B018
            wait_times[name].append(max(0.0, (started - run_at).total_seconds()))
    out = []
    for name in sorted(rows):
        row: dict[str, Any] = {"task": name}
        for status in (PENDING, "due", RUNNING, RETRYING, SUCCEEDED, DEAD, CANCELLED):
            row[status] = rows[name].get(status, 0)
        row["oldest_due_age_s"] = rows[name].get("oldest_due_age_s")
        row["last_success_at"] = rows[name].get("last_success_at")
        row["window_attempts"] = tried[name]
        row["failure_rate"] = round(failed[name] / tried[name], 4) if tried[name] else None
        row["run_p50_s"] = _rounded(percentile(run_times[name], 0.5))
        row["run_p95_s"] = _rounded(percentile(run_times[name], 0.95))
        row["wait_p50_s"] = _rounded(percentile(wait_times[name], 0.5))
        row["wait_p95_s"] = _rounded(percentile(wait_times[name], 0.95))
        out.append(row)
    return out


def limit_usage(engine: Engine, now: datetime) -> list[dict[str, Any]]:
    """Every registered task and queue limit and how full it is now (LIMIT_FIELDS)."""
    with engine.connect() as conn:
        defined = gate.registered(conn)
        used = gate.usage(conn, defined, now)
        updated = {s: at for s, at in conn.execute(select(limits.c.scope, limits.c.updated_at))}
    out = []
    for scope in sorted(defined):
        limit = defined[scope]
        running, started = used[scope]
        full = (limit.concurrency is not None and running >= limit.concurrency) or (
            limit.rate is not None and started >= limit.rate.count
        )
        out.append(
            {
                "scope": scope,
                "rate": None if limit.rate is None else str(limit.rate),
                "started_in_window": started if limit.rate is not None else None,
                "concurrency": limit.concurrency,
                "running": running,
                "full": full,
                "registered_at": updated.get(scope),
            }
        )
    return out
