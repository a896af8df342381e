"""Task, attempt and run rows written directly, as the engine would have left them, for the
inspection commands and the dashboard to show: times relative to ``T0``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select

from tickrun.schema import attempts, runs, tasks

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
SEC = timedelta(seconds=1)


def add_task(engine: Engine, **fields: Any) -> int:
    """Insert a task row as the engine would have left it in ``status``."""
    status = fields.setdefault("status", "pending")
    run_at = fields.setdefault("run_at", T0 - MIN)
    row = {
        "name": "job",
        "queue": "default",
        "priority": 0,
        "payload": "{}",
        "key": None,
        "attempts": 0,
        "max_attempts": 5,
        "created_at": T0 - timedelta(hours=2),
        **fields,
    }
    if status == "running":
        row.setdefault("started_at", run_at)
        row.setdefault("lease_until", T0 + MIN)
        row.setdefault("claim_token", "t" * 32)
        row.setdefault("worker", "host:1")
        row.setdefault("claimable_at", row["lease_until"])
    elif status in ("pending", "retrying"):
        row.setdefault("claimable_at", run_at)
    else:
        row.setdefault("finished_at", T0 - 10 * MIN)
        row.setdefault("claimable_at", None)
    with engine.begin() as conn:
        return conn.execute(insert(tasks).values(**row)).inserted_primary_key[0]


def add_attempt(
    engine: Engine,
    task_id: int,
    attempt: int,
    outcome: str,
    started: datetime | None,
    finished: datetime,
    error: str | None = None,
    **extra: Any,
) -> None:
    if error is None and outcome != "succeeded":
        error = f"ValueError: attempt {attempt} {outcome}"
    with engine.begin() as conn:
        conn.execute(
            insert(attempts).values(
                task_id=task_id,
                attempt=attempt,
                outcome=outcome,
                started_at=started,
                finished_at=finished,
                worker=extra.pop("worker", "host:1"),
                error=error,
                **extra,
            )
        )


def add_run(engine: Engine, started: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(runs).values(
                started_at=started,
                finished_at=started + SEC,
                host="host",
                worker="host:1",
                pid=1,
                claimed=0,
                succeeded=0,
                retried=0,
                dead=0,
                exit_code=0,
            )
        )


def task_row(engine: Engine, task_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(tasks).where(tasks.c.id == task_id)).one()


def mixed_state(engine: Engine) -> dict[str, int]:
    """One row in every interesting state, with failures."""
    ids = {
        "due": add_task(engine, name="send_email", key="welcome:1", payload='{"user_id": 1}'),
        "future": add_task(engine, name="send_email", run_at=T0 + 5 * MIN),
        "retrying": add_task(
            engine, name="sync", status="retrying", attempts=1, run_at=T0 + 2 * MIN
        ),
        "dead": add_task(
            engine,
            name="sync",
            status="dead",
            attempts=5,
            last_error="RuntimeError: gave up",
            last_traceback="Traceback (most recent call last):\nRuntimeError: gave up",
        ),
    }
    add_attempt(engine, ids["retrying"], 1, "failed", T0 - 3 * MIN, T0 - 2 * MIN)
    add_attempt(engine, ids["dead"], 5, "timeout", T0 - 11 * MIN, T0 - 10 * MIN, "timeout")
    return ids
