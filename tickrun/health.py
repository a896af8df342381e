"""``tickrun check``: health for monitoring, one problem per crossed threshold.

Every ``now`` comes from the caller (tickrun.clock), never the database's ``NOW()``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select

from tickrun import gate
from tickrun.durations import format_duration
from tickrun.errors import NotFound
from tickrun.lifecycle import DEAD
from tickrun.schema import runs, schedules, tasks

_T = tasks


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
        # A long-running worker's heartbeat counts as a run started then.
        last_run = conn.execute(
            select(func.max(func.coalesce(runs.c.heartbeat_at, runs.c.started_at)))
        ).scalar()
        blocked = gate.blocked_groups(conn)
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
    due_age: float | None = None
    if oldest is not None:
        due_age = (now - oldest.claimable_at).total_seconds()
        if max_due_age is not None and due_age > max_due_age:
            problems.append(
                f"due: task {oldest.id} ({oldest.name}) has been due for "
                f"{format_duration(due_age)} (--max-due-age {format_duration(max_due_age)}); "
                "is `tickrun run` running?"
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
    for group, dead_id, waiting in blocked:
        problems.append(
            f"blocked: ordered group {group!r} is held by dead task {dead_id} "
            f"({_count(waiting, 'task')} waiting); `tickrun dlq retry {dead_id}` or purge it"
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
