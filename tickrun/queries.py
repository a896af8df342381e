"""Reads and repair writes behind the commands that inspect and repair the queue.

``due``, ``failures``, ``dlq``, ``show``, ``stats``, ``check`` read; ``dlq retry``, ``dlq purge``,
``cancel`` and ``prune`` write. SQLAlchemy Core only, the same SQL on every database, and every
``now`` comes from the caller (tickrun.clock), never the database's ``NOW()``.

Each repair write is conditional on the status it repairs, on rows read under a lock in the same
transaction: two operators (or an operator and a run) acting on one task at once never leave it
in two states; the later one finds it already moved and reports it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.engine import Connection

from tickrun import dialects
from tickrun.durations import format_duration
from tickrun.errors import NotFound
from tickrun.schema import (
    CANCELLED,
    DEAD,
    FINISHED,
    PENDING,
    RETRYING,
    RUNNING,
    STATUSES,
    SUCCEEDED,
    WAITING,
    attempts,
    runs,
    schedules,
    tasks,
)

# fmt: off
DUE_FIELDS = [
    "id", "task", "queue", "priority", "status", "run_at", "attempts", "max_attempts", "key",
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

# Attempt outcomes that count as failures (every outcome but ``succeeded``).
FAILING = ("failed", "retry", "timeout", "lost", "interrupted")
# Outcomes whose handler ran to its end, so finished_at - started_at is its run time. A lost
# attempt ended when a later run noticed its lease had expired, an interrupted one when the
# shutdown grace ran out: neither measures the handler.
TIMED = ("succeeded", "failed", "retry", "timeout")

# Ids per IN (...) list: far below every database's bound-parameter limit.
CHUNK = 500

_T = tasks
_A = attempts


def _rows(conn: Connection, stmt: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(stmt)]


def _chunks(ids: Sequence[int], size: int = CHUNK) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def _unique(ids: Sequence[int]) -> list[int]:
    return list(dict.fromkeys(ids))


# -- listings ------------------------------------------------------------------------------


def due(
    engine: Engine,
    now: datetime,
    *,
    queue: str | None = None,
    task: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Tasks due now, in claim order (priority desc, due time, id).

    ``claimable_at`` is the run_at of a waiting task and the lease expiry of a running one, so
    ``claimable_at <= now`` is exactly "pending or retrying and run_at <= now, or running with
    its lease expired", the claim query's own condition.
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
        )
        .where(_T.c.claimable_at <= now)
        .order_by(_T.c.priority.desc(), _T.c.claimable_at, _T.c.id)
    )
    if queue is not None:
        stmt = stmt.where(_T.c.queue == queue)
    if task is not None:
        stmt = stmt.where(_T.c.name == task)
    if limit is not None:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        return _rows(conn, stmt)


def failures(
    engine: Engine,
    now: datetime,
    *,
    since: float,
    task: str | None = None,
    limit: int | None = None,
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
    if task is not None:
        stmt = stmt.where(_T.c.name == task)
    if limit is not None:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        rows = _rows(conn, stmt)
    for row in rows:
        run_at = row.pop("run_at")
        row["next_run_at"] = run_at if row["status"] == RETRYING else None
    return rows


def _dead_select() -> Any:
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
    engine: Engine, *, task: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """The dead-letter queue, most recently dead first."""
    stmt = (
        _dead_select().where(_T.c.status == DEAD).order_by(_T.c.finished_at.desc(), _T.c.id.desc())
    )
    if task is not None:
        stmt = stmt.where(_T.c.name == task)
    if limit is not None:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        return _rows(conn, stmt)


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
    ).where(_T.c.id == task_id)
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
        found = _rows(conn, stmt)
        if not found:
            raise NotFound(f"no task with id {task_id}")
        history = _rows(conn, history_stmt)
    fields = found[0]
    # A payload written by something other than tickrun is shown as it is.
    with contextlib.suppress(ValueError):
        fields["payload"] = json.loads(fields["payload"])
    for h in history:
        h["duration_s"] = _seconds(h["started_at"], h["finished_at"])
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


# -- repairs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Moved:
    """What a repair did (or, in a dry run, would do)."""

    rows: list[dict[str, Any]]  # the tasks moved or deleted, as they were before
    skipped: dict[int, str] = field(default_factory=dict)  # id -> status, left alone

    @property
    def ids(self) -> list[int]:
        return [r["id"] for r in self.rows]


def _locked_by_id(conn: Connection, stmt: Any, ids: Sequence[int]) -> list[dict[str, Any]]:
    """The rows of ``ids`` (locked until commit); NotFound, before any write, if one is missing."""
    found: dict[int, dict[str, Any]] = {}
    # Locked in id order, so two repairs of overlapping ids wait for each other, never deadlock.
    for chunk in _chunks(sorted(ids)):
        selected = stmt.where(_T.c.id.in_(chunk)).order_by(_T.c.id)
        for row in _rows(conn, dialects.locked(selected, conn)):
            found[row["id"]] = row
    missing = [i for i in ids if i not in found]
    if missing:
        shown = ", ".join(str(i) for i in missing[:10]) + (", …" if len(missing) > 10 else "")
        noun = "id" if len(missing) == 1 else "ids"
        raise NotFound(f"no task with {noun} {shown}; nothing changed")
    return [found[i] for i in ids]


def _pick(
    conn: Connection, ids: Sequence[int] | None, wanted: Collection[str], where: Sequence[Any]
) -> Moved:
    """Rows in a ``wanted`` status, by id (others reported) or by ``where`` (all of them)."""
    stmt = _dead_select().add_columns(_T.c.status)
    if ids is not None:
        rows = _locked_by_id(conn, stmt, _unique(ids))
        chosen = [r for r in rows if r["status"] in wanted]
        skipped = {r["id"]: r["status"] for r in rows if r["status"] not in wanted}
        return Moved(chosen, skipped)
    stmt = stmt.where(_T.c.status.in_(wanted), *where).order_by(_T.c.id)
    return Moved(_rows(conn, dialects.locked(stmt, conn)))


def retry_dead(
    engine: Engine,
    now: datetime,
    *,
    ids: Sequence[int] | None = None,
    task: str | None = None,
    dry_run: bool = False,
) -> Moved:
    """Move dead tasks (``ids``, or every one, of ``task`` if given) back to pending, due now.

    Attempts restart from 0; the attempt history is kept. The update is conditional on the task
    still being dead, so a task retried twice at once is moved once and runs once.
    """
    where = [_T.c.name == task] if task is not None else []
    with engine.begin() as conn:
        moved = _pick(conn, ids, (DEAD,), where)
        if not dry_run:
            for chunk in _chunks(moved.ids):
                conn.execute(
                    update(_T)
                    .where(_T.c.id.in_(chunk), _T.c.status == DEAD)
                    .values(
                        status=PENDING,
                        attempts=0,
                        run_at=now,
                        claimable_at=now,
                        started_at=None,
                        finished_at=None,
                        lease_until=None,
                        claim_token=None,
                        worker=None,
                    )
                )
    return moved


def purge_dead(
    engine: Engine,
    now: datetime,
    *,
    older_than: float | None = None,
    task: str | None = None,
    dry_run: bool = False,
) -> Moved:
    """Delete dead tasks (dead for longer than ``older_than`` seconds, of ``task``) and their
    attempts."""
    where = []
    if task is not None:
        where.append(_T.c.name == task)
    if older_than is not None:
        where.append(_T.c.finished_at < now - timedelta(seconds=older_than))
    with engine.begin() as conn:
        moved = _pick(conn, None, (DEAD,), where)
        if not dry_run:
            for chunk in _chunks(moved.ids):
                conn.execute(delete(_A).where(_A.c.task_id.in_(chunk)))
                conn.execute(delete(_T).where(_T.c.id.in_(chunk), _T.c.status == DEAD))
    return moved


def cancel(engine: Engine, now: datetime, ids: Sequence[int]) -> Moved:
    """Cancel the pending or retrying tasks among ``ids``; the others are reported, untouched."""
    with engine.begin() as conn:
        moved = _pick(conn, ids, WAITING, ())
        for chunk in _chunks(moved.ids):
            conn.execute(
                update(_T)
                .where(_T.c.id.in_(chunk), _T.c.status.in_(WAITING))
                .values(status=CANCELLED, finished_at=now, claimable_at=None)
            )
    return moved


def prune(engine: Engine, now: datetime, *, older_than: float, dry_run: bool = False) -> int:
    """Delete succeeded and cancelled tasks finished more than ``older_than`` seconds ago, and
    their attempts; returns how many tasks.

    Finished rows never change again, so batches commit one by one: a large prune neither holds
    one long transaction nor blocks runs for its whole length.
    """
    where = (_T.c.status.in_(FINISHED), _T.c.finished_at < now - timedelta(seconds=older_than))
    if dry_run:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(_T).where(*where)).scalar_one()
    total = 0
    while True:
        with engine.begin() as conn:
            ids = list(
                conn.execute(select(_T.c.id).where(*where).order_by(_T.c.id).limit(CHUNK)).scalars()
            )
            if not ids:
                return total
            conn.execute(delete(_A).where(_A.c.task_id.in_(ids)))
            total += conn.execute(delete(_T).where(_T.c.id.in_(ids), *where)).rowcount


# -- health --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    problems: list[str]
    summary: str


def check(
    engine: Engine,
    now: datetime,
    *,
    max_dead: int | None = None,
    max_due_age: float | None = None,
    max_silence: float | None = None,
    handled: Collection[str] | None = None,
    app_ref: str = "the application",
    stale: Mapping[str, float] | None = None,
) -> Health:
    """Health for monitoring: one problem per crossed threshold, and per task name that has due
    tasks no handler of the application (``handled``, when one is loaded) claims."""
    problems: list[str] = []
    oldest_due = (
        select(_T.c.id, _T.c.name, _T.c.claimable_at)
        .where(_T.c.claimable_at <= now)
        .order_by(_T.c.claimable_at, _T.c.id)
        .limit(1)
    )
    with engine.connect() as conn:
        n_dead = conn.execute(
            select(func.count()).select_from(_T).where(_T.c.status == DEAD)
        ).scalar_one()
        oldest = conn.execute(oldest_due).first()
        last_run = conn.execute(select(func.max(runs.c.started_at))).scalar()
        due_names = (
            conn.execute(
                select(_T.c.name, func.count()).where(_T.c.claimable_at <= now).group_by(_T.c.name)
            ).all()
            if handled is not None
            else []
        )
    if max_dead is not None and n_dead > max_dead:
        problems.append(
            f"dead: {_count(n_dead, 'task')} in the dead-letter queue (--max-dead {max_dead}); "
            "see `tickrun dlq`"
        )
    due_age = None if oldest is None else (now - oldest.claimable_at).total_seconds()
    if max_due_age is not None and due_age is not None and due_age > max_due_age:
        problems.append(
            f"due: task {oldest.id} ({oldest.name}) has been due for {format_duration(due_age)} "
            f"(--max-due-age {format_duration(max_due_age)}); is `tickrun run` running?"
        )
    silence = None if last_run is None else (now - last_run).total_seconds()
    if max_silence is not None and (silence is None or silence > max_silence):
        problems.append(
            "silence: no run has ever been recorded"
            if silence is None
            else f"silence: no run started in the last {format_duration(max_silence)} "
            f"(the last one started {format_duration(silence)} ago, "
            f"at {last_run:%Y-%m-%d %H:%M:%S} UTC)"
        )
    problems.extend(_stale_schedules(engine, now, stale or {}))
    for name, n in sorted(due_names):
        if handled is not None and name not in handled:
            problems.append(
                f"unclaimed: {_count(n, 'due task')} named {name!r} that no handler of "
                f"{app_ref} claims"
            )
    summary = ", ".join(
        [
            f"{_count(n_dead, 'dead task')}",
            "nothing due" if due_age is None else f"oldest due task {format_duration(due_age)} old",
            "no run recorded" if silence is None else f"last run {format_duration(silence)} ago",
        ]
    )
    return Health(problems, summary)


def _stale_schedules(engine: Engine, now: datetime, bounds: Mapping[str, float]) -> list[str]:
    """A schedule whose last success is older than its bound, or that never succeeded."""
    if not bounds:
        return []
    from tickrun.scheduler import stored

    known = stored(engine, bounds, schedules.c.last_success_at)
    unknown = sorted(set(bounds) - set(known))
    if unknown:
        raise NotFound(
            f"unknown schedule {', '.join(map(repr, unknown))}: it has never been seen by a "
            "`tickrun run` (see `tickrun schedules`)"
        )
    problems = []
    for name, bound in bounds.items():
        last = known[name]
        flag = f"--stale {name}={format_duration(bound)}"
        if last is None:
            problems.append(f"stale: schedule {name!r} has never succeeded ({flag})")
        elif (now - last).total_seconds() > bound:
            age = format_duration((now - last).total_seconds())
            problems.append(
                f"stale: schedule {name!r} last succeeded {age} ago, at "
                f"{last:%Y-%m-%d %H:%M:%S} UTC ({flag})"
            )
    return problems


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# -- doctor --------------------------------------------------------------------------------

# File systems where SQLite's locking (and so WAL) cannot be trusted.
# fmt: off
NETWORK_FS = frozenset([
    "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "ncpfs", "afs", "9p", "sshfs",
    "fuse.sshfs", "ceph", "fuse.ceph", "glusterfs", "fuse.glusterfs", "lustre", "gpfs", "davfs",
    "fuse.davfs2", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "fuse.juicefs", "beegfs",
])
# fmt: on


def filesystem_type(path: str, mounts: str | None = None) -> str | None:
    """The type of the file system holding ``path``, from /proc/mounts (None if unknown)."""
    if mounts is None:
        try:
            with open("/proc/mounts", encoding="utf-8", errors="replace") as fh:
                mounts = fh.read()
        except OSError:
            return None
    target = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        # /proc/mounts escapes spaces, tabs, newlines and backslashes as octal.
        point = _unescape(parts[1])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        # The last mount of a point shadows earlier ones: keep it on equal length.
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), parts[2])
    return None if best is None else best[1]


def _unescape(text: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text


def is_network_fs(fs_type: str | None) -> bool:
    return fs_type is not None and (fs_type in NETWORK_FS or fs_type.split(".")[0] in NETWORK_FS)


def server_facts(engine: Engine) -> dict[str, Any]:
    """What the database says about itself: product and version, and SQLite's settings."""
    with engine.connect() as conn:
        sqlite = dialects.sqlite_settings(conn)
        dialect = conn.dialect
        info = dialect.server_version_info or ()
    product = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}.get(dialect.name)
    if product is None:
        product = "MariaDB" if getattr(dialect, "is_mariadb", False) else "MySQL"
    version = ".".join(str(p) for p in info if isinstance(p, int))
    facts: dict[str, Any] = {"server": f"{product} {version} ({dialect.driver})".replace("  ", " ")}
    if sqlite is not None:
        facts.update(sqlite)
    return facts


def status_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        counts = dict(conn.execute(select(_T.c.status, func.count()).group_by(_T.c.status)).all())
    return {s: counts.get(s, 0) for s in STATUSES}
