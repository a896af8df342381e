"""Repair writes behind ``dlq retry``, ``dlq purge``, ``cancel`` and ``prune``.

SQLAlchemy Core only, the same SQL on every database, and every ``now`` comes from the caller
(tickrun.clock), never the database's ``NOW()``.

Each repair write is conditional on the status it repairs, on rows read under a lock in the same
transaction: two operators (or an operator and a run) acting on one task at once never leave it
in two states; the later one finds it already moved and reports it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, delete, func, select
from sqlalchemy.engine import Connection

from tickrun import dialects, gate, outbox, store
from tickrun.errors import NotFound
from tickrun.lifecycle import DEAD, FINISHED, WAITING
from tickrun.listings import as_dicts, dead_select
from tickrun.schema import attempts, tasks

# Ids per IN (...) list: far below every database's bound-parameter limit.
CHUNK = 500

_T = tasks
_A = attempts


def _chunks(ids: Sequence[int], size: int = CHUNK) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def _unique(ids: Sequence[int]) -> list[int]:
    return list(dict.fromkeys(ids))


@dataclass(frozen=True)
class Moved:
    """What a repair did (or, in a dry run, would do)."""

    rows: list[dict[str, Any]]  # the tasks moved or deleted, as they were before
    skipped: dict[int, str] = field(default_factory=dict)  # id -> status, left alone

    @property
    def ids(self) -> list[int]:
        return [r["id"] for r in self.rows]


def _locked_by_id(conn: Connection, stmt: Select[Any], ids: Sequence[int]) -> list[dict[str, Any]]:
    """The rows of ``ids`` (locked until commit); NotFound, before any write, if one is missing."""
    found: dict[int, dict[str, Any]] = {}
    # Locked in id order, so two repairs of overlapping ids wait for each other, never deadlock.
    for chunk in _chunks(sorted(ids)):
        selected = stmt.where(_T.c.id.in_(chunk)).order_by(_T.c.id)
        for row in as_dicts(conn, dialects.locked(selected, conn)):
            found[row["id"]] = row
    missing = [i for i in ids if i not in found]
    if missing:
        shown = ", ".join(str(i) for i in missing[:10]) + (", …" if len(missing) > 10 else "")
        noun = "id" if len(missing) == 1 else "ids"
        raise NotFound(f"no task with {noun} {shown}; nothing changed")
    return [found[i] for i in ids]


def _pick(
    conn: Connection,
    ids: Sequence[int] | None,
    wanted: Collection[str],
    where: Sequence[ColumnElement[bool]],
) -> Moved:
    """Rows in a ``wanted`` status, by id (others reported) or by ``where`` (all of them)."""
    stmt = dead_select().add_columns(_T.c.status)
    if ids is not None:
        rows = _locked_by_id(conn, stmt, _unique(ids))
        chosen = [r for r in rows if r["status"] in wanted]
        skipped = {r["id"]: r["status"] for r in rows if r["status"] not in wanted}
        return Moved(chosen, skipped)
    stmt = stmt.where(_T.c.status.in_(wanted), *where).order_by(_T.c.id)
    return Moved(as_dicts(conn, dialects.locked(stmt, conn)))


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
                store.revive_dead(conn, chunk, now)
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
    where: list[ColumnElement[bool]] = []
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
            store.cancel_waiting(conn, chunk, now)
    return moved


def prune(engine: Engine, now: datetime, *, older_than: float, dry_run: bool = False) -> int:
    """Delete succeeded and cancelled tasks finished more than ``older_than`` seconds ago, and
    their attempts, and alerts delivered that long ago; returns how many tasks.

    The lock rows of per-key limits created before then go too (claims recreate them).
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
                gate.forget_groups(conn, now - timedelta(seconds=older_than))
                break
            conn.execute(delete(_A).where(_A.c.task_id.in_(ids)))
            total += conn.execute(delete(_T).where(_T.c.id.in_(ids), *where)).rowcount
    outbox.prune_delivered(engine, now - timedelta(seconds=older_than), CHUNK)
    return total
