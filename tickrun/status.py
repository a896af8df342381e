"""``app.status()``: where one task stands, for the application's own users.

One indexed query per lookup (the primary key, or the unique index on ``key``), so a web
endpoint may poll it every second; ``bench/status.py`` measures it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from tickrun.lifecycle import CANCELLED, DEAD, SUCCEEDED, Status

if TYPE_CHECKING:
    from sqlalchemy import Engine

FINAL = (SUCCEEDED, DEAD, CANCELLED)


@dataclass(frozen=True)
class TaskStatus:
    """One task as its application's users may see it.

    ``started_at`` is when its latest attempt was claimed, ``finished_at`` when it succeeded,
    died or was cancelled; ``result`` is the handler's return value once it succeeded (None
    before, and for a handler that returned None); ``error`` the last failure's
    ``Type: message`` (kept after a later success).
    """

    id: int
    task: str
    status: Status
    attempts: int
    max_attempts: int
    run_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: Any
    error: str | None
    key: str | None
    parent_id: int | None

    @property
    def finished(self) -> bool:
        """Succeeded, dead or cancelled: the status will not change again on its own."""
        return self.status in FINAL

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict: times in ISO 8601 with their UTC offset."""
        return {
            "id": self.id,
            "task": self.task,
            "status": str(self.status),
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "run_at": _iso(self.run_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "result": self.result,
            "error": self.error,
            "key": self.key,
            "parent_id": self.parent_id,
            "finished": self.finished,
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def decode_result(text: str | None) -> Any:
    """A stored result as the value the handler returned; text not written by tickrun is
    returned as it is (json.loads only: nothing from the database is ever evaluated)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


@cache
def _statements() -> tuple[Any, Any]:
    """By id and by key, built once (SQLAlchemy then caches their compiled form): an endpoint
    polled every second should not pay for building a statement each time. Built on first use
    so that ``import tickrun`` stays free of SQLAlchemy."""
    from sqlalchemy import bindparam, select

    from tickrun.schema import tasks as t

    columns = select(
        t.c.id,
        t.c.name,
        t.c.status,
        t.c.attempts,
        t.c.max_attempts,
        t.c.run_at,
        t.c.started_at,
        t.c.finished_at,
        t.c.result,
        t.c.last_error,
        t.c.key,
        t.c.parent_id,
    )
    return (
        columns.where(t.c.id == bindparam("task_id")),
        columns.where(t.c.key == bindparam("key")),
    )


def lookup(
    engine: Engine, *, task_id: int | None = None, key: str | None = None
) -> TaskStatus | None:
    """The task with ``task_id`` (or ``key``), or None when there is none."""
    from tickrun import dialects

    by_id, by_key = _statements()
    with dialects.for_lone_reads(engine).connect() as conn:
        if task_id is not None:
            row = conn.execute(by_id, {"task_id": task_id}).first()
        else:
            row = conn.execute(by_key, {"key": key}).first()
    if row is None:
        return None
    return TaskStatus(
        id=row.id,
        task=row.name,
        status=Status(row.status),
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        run_at=row.run_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        result=decode_result(row.result),
        error=row.last_error,
        key=row.key,
        parent_id=row.parent_id,
    )
