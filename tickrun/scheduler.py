"""Cron schedules: enqueueing the occurrences that came due, and listing their progress.

A schedule's progress (the last fire time it has handled) lives in ``tickrun_schedules``, not
in task rows or memory, so fresh processes on any host agree on what is due and pruning
finished tasks never makes an occurrence fire again. Each occurrence is enqueued with the key
``schedule:<name>:<UTC fire time>``: overlapping runs enqueue it once, and a lost race is
silent. The schedule rows are locked with SKIP LOCKED while a run advances them, so concurrent
runs never wait on each other here.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select, update

from tickrun import cron, dialects, store
from tickrun.lifecycle import RUNNING, WAITING
from tickrun.schema import schedules, tasks

if TYPE_CHECKING:
    from tickrun.app import App
    from tickrun.specs import ScheduleSpec


def occurrence_key(name: str, fire: datetime) -> str:
    return f"schedule:{name}:{fire.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def enqueue_due(app: App, engine: Engine, now: datetime) -> int:
    """Enqueue every schedule's occurrences due at ``now``; returns how many were added."""
    if not app.schedules:
        return 0
    specs = app.schedules
    marks = stored(engine, specs, schedules.c.last_fire_at)
    missing = [s for s in specs.values() if s.name not in marks]
    if missing:
        _register(engine, missing, now)
    due = [
        s
        for name, s in specs.items()
        if name in marks and cron.next_fire(s.cron, s.tz, marks[name]) <= now
    ]
    if not due:
        return 0
    added = 0
    with engine.begin() as conn:
        stmt = select(schedules).where(schedules.c.name.in_([s.name for s in due]))
        for row in conn.execute(dialects.skip_locked(stmt, conn)).all():
            added += _advance(app, conn, specs[row.name], row, now)
    return added


def stored(engine: Engine, names: Iterable[str], column: Any) -> dict[str, Any]:
    """One column of the stored rows of the named schedules, by name (absent: never seen)."""
    stmt = select(schedules.c.name, column).where(schedules.c.name.in_(list(names)))
    with engine.connect() as conn:
        return dict(conn.execute(stmt).all())


def _register(engine: Engine, specs: list[ScheduleSpec], now: datetime) -> None:
    """A new schedule starts from the moment it is first seen: no backfill."""
    with engine.begin() as conn:
        for spec in specs:
            dialects.insert_unless_exists(
                conn,
                schedules,
                {
                    "name": spec.name,
                    "task": spec.task,
                    "cron": spec.cron,
                    "tz": spec.tz,
                    "last_fire_at": now,
                    "missed": 0,
                    "skipped": 0,
                    "updated_at": now,
                },
                unique="name",
            )


def _advance(app: App, conn: Any, spec: ScheduleSpec, row: Any, now: datetime) -> int:
    fires, missed = cron.plan(spec.cron, spec.tz, row.last_fire_at, now, spec.catchup)
    capped = spec.catchup == "all" and len(fires) == cron.CATCHUP_ALL_CAP
    mark = fires[-1] if capped else now
    skipped = 0
    if spec.overlap == "skip" and fires:
        busy = conn.execute(
            select(tasks.c.id)
            .where(tasks.c.schedule == spec.name, tasks.c.status.in_((*WAITING, RUNNING)))
            .limit(1)
        ).first()
        # The first occurrence waits on any unfinished task, each later one on the one before.
        keep = [] if busy else fires[:1]
        skipped = len(fires) - len(keep)
        fires = keep
    added = 0
    for fire in fires:
        values = app.task_row(
            spec.task,
            spec.payload,
            key=occurrence_key(spec.name, fire),
            scheduled_for=fire,
            schedule=spec.name,
        )
        [(_, duplicate)] = store.insert_tasks(conn, [values])
        added += not duplicate
    conn.execute(
        update(schedules)
        .where(schedules.c.name == spec.name)
        .values(
            last_fire_at=mark,
            missed=schedules.c.missed + missed,
            skipped=schedules.c.skipped + skipped,
            task=spec.task,
            cron=spec.cron,
            tz=spec.tz,
            updated_at=now,
            **({"last_enqueued_at": now} if fires else {}),
        )
    )
    return added


def schedule_rows(app: App, engine: Engine, now: datetime) -> list[dict[str, Any]]:
    """Each registered schedule with its progress: the ``tickrun schedules`` listing."""
    with engine.connect() as conn:
        stored = {
            row.name: row
            for row in conn.execute(
                select(schedules).where(schedules.c.name.in_(list(app.schedules)))
            ).all()
        }
        conn.rollback()
    rows = []
    for spec in app.schedules.values():
        row = stored.get(spec.name)
        # The first occurrence after the stored mark: in the past when no run handled it yet,
        # then the next run (or worker pass) enqueues it (or, by catchup, a later one).
        after = row.last_fire_at if row is not None else now
        next_run_at = cron.next_fire(spec.cron, spec.tz, after)
        rows.append(
            {
                "name": spec.name,
                "task": spec.task,
                "cron": spec.cron,
                "tz": spec.tz,
                "next_run_at": next_run_at,
                "last_enqueued_at": row.last_enqueued_at if row is not None else None,
                "missed": row.missed if row is not None else 0,
                "skipped": row.skipped if row is not None else 0,
                "overdue": next_run_at <= now,
            }
        )
    return rows


def preview_rows(app: App, now: datetime, count: int) -> list[dict[str, Any]]:
    """The next ``count`` fire times of each schedule, in its own zone and in UTC."""
    from zoneinfo import ZoneInfo

    rows = []
    for spec in app.schedules.values():
        for fire in cron.preview(spec.cron, spec.tz, now, count):
            local = fire.astimezone(ZoneInfo(spec.tz))
            rows.append(
                {
                    "name": spec.name,
                    "tz": spec.tz,
                    "local_time": local.isoformat(),
                    "utc_time": fire,
                }
            )
    return rows
