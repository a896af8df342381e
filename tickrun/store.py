"""Dialect-neutral reads and state transitions of task rows.

Leases are written and judged by the database's clock on PostgreSQL and MariaDB
(``dialects.now_or``, tickrun.clock), so hosts whose clocks disagree cannot take each other's
live claims; every other ``now`` is bound from Python (the clock seam). Every change to a
claimed task is fenced by its ``claim_token``: rows are locked, their token is compared with
the caller's, and only the caller's own claims are written, so a run whose lease was lost
(and the task claimed again) cannot overwrite the newer claim's outcome.
"""

from __future__ import annotations

import functools
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    Engine,
    Integer,
    Select,
    Update,
    bindparam,
    case,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection

from tickrun import dialects, gate, outbox
from tickrun.flow import Limit
from tickrun.lifecycle import (
    CANCELLED,
    DEAD,
    PENDING,
    RETRYING,
    RUNNING,
    SUCCEEDED,
    WAITING,
    Outcome,
    Status,
    after_failure,
)
from tickrun.notify import dead_document
from tickrun.schema import attempts, runs, schedules, tasks

INSERT_TASK = insert(tasks)
LEASE_EXPIRED = (
    "lease expired: worker {worker} stopped renewing its claim (killed, hung or cut off)"
)
EXHAUSTED = "no attempts left: " + LEASE_EXPIRED.format(worker="(see history)")


@dataclass(frozen=True)
class Claimed:
    """A task this run holds: what its handler needs, and the token that fences its writes."""

    id: int
    name: str
    queue: str
    payload: str
    attempt: int
    max_attempts: int
    key: str | None
    scheduled_for: datetime | None
    token: str
    started_at: datetime
    schedule: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class Lost:
    """An earlier attempt found with an expired lease (for the run's log)."""

    id: int
    name: str
    attempt: int
    worker: str | None
    dead: bool  # no attempt was left: the task is now dead


@dataclass(frozen=True)
class ClaimBatch:
    tasks: list[Claimed]
    lost: int  # earlier attempts whose lease expired, recorded as such
    dead: int  # of those, tasks with no attempt left, now dead
    seen: int = 0  # due rows the claim looked at: fewer than asked means none is left
    wake_at: datetime | None = None  # when a full rate window next lets a start in
    lost_attempts: tuple[Lost, ...] = ()
    now: datetime | None = None  # the claim's time, by the clock that judges leases

    def wake_in(self) -> float | None:
        """Seconds from the claim until ``wake_at``: the database's clock, not this host's."""
        if self.wake_at is None or self.now is None:
            return None
        return (self.wake_at - self.now).total_seconds()

    def exhausted(self, asked: int) -> bool:
        """Nothing more is claimable now: fewer rows were due than asked for, or every one
        was held back by a limit."""
        return self.seen < asked or not (self.tasks or self.dead)


@dataclass(frozen=True)
class Ended:
    """How one attempt ended and what the task becomes."""

    task: Claimed
    outcome: Outcome
    status: Status  # succeeded | retrying | dead
    finished_at: datetime
    run_at: datetime | None = None  # next attempt, when retrying
    error: str | None = None
    traceback: str | None = None
    started_at: datetime | None = None  # when the handler began; the claim time if it never did
    result: str | None = None  # succeeded: the return value as JSON text
    followups: tuple[dict[str, Any], ...] = ()  # succeeded: task rows inserted with the success
    # None: for record() to write. True / False: the worker thread already committed it in the
    # handler's own transaction (ctx.connection) / found its claim taken over and rolled back.
    committed: bool | None = None


def insert_tasks(conn: Connection, rows: Sequence[dict[str, Any]]) -> list[tuple[int, bool]]:
    """Insert new tasks in ``conn``'s transaction; (id, duplicate) per row, in order.

    Every enqueue goes through here but one: a keyless ``app.enqueue`` outside the caller's
    transaction, which ``dialects.insert_one`` sends straight to the driver (measured to be
    twice as fast; see its docstring). A row with a taken ``key`` inserts nothing and gives
    the existing task's id; several rows go in one statement, so they must have no key.
    """
    if len(rows) != 1:
        return [(new_id, False) for new_id in dialects.insert_many(conn, tasks, list(rows))]
    (values,) = rows
    key = values.get("key")
    if key is None:
        return [(dialects.inserted_id(conn.execute(INSERT_TASK, values)), False)]
    new_id = dialects.insert_unless_exists(conn, tasks, values)
    if new_id is not None:
        return [(new_id, False)]
    return [(dialects.existing_key_id(conn, tasks, key), True)]


def left_running(status: Status, now: datetime, run_at: datetime | None = None) -> dict[str, Any]:
    """The columns of a task that leaves ``running`` (or is moved by a repair) for ``status``:
    no lease and no claim; due again at ``run_at`` when waiting, finished at ``now`` when not."""
    waiting = status in WAITING
    columns: dict[str, Any] = {
        "status": status,
        "lease_until": None,
        "claim_token": None,
        "claimable_at": run_at if waiting else None,
        "finished_at": None if waiting else now,
    }
    if waiting:
        columns["run_at"] = run_at
    return columns


# The claim SELECT's parameters: everything else in it is fixed per set of names and queues.
# ``claim_now`` is bound with dialects.bound_now: None, so the claim's time is the database's.
CLAIM_NOW = bindparam("claim_now", type_=tasks.c.claimable_at.type)
CLAIM_TIME = dialects.now_or(CLAIM_NOW)
CLAIM_LIMIT = bindparam("claim_limit", type_=Integer)


# What a claim writes to the tasks it takes (built once, like the claim's SELECT).
def _started(began: Any, until: Any) -> dict[str, Any]:
    """The claim's writes to a task it takes at ``began``, leased until ``until``; bind
    ``start_token`` and ``start_worker``."""
    return {
        "status": RUNNING,
        "attempts": tasks.c.attempts + 1,
        "claim_token": bindparam("start_token"),
        "worker": bindparam("start_worker"),
        "started_at": began,
        "lease_until": until,
        "claimable_at": until,
    }


START = (
    update(tasks)
    .where(tasks.c.id.in_(bindparam("start_ids", expanding=True)))
    .values(
        _started(
            bindparam("start_now", type_=tasks.c.started_at.type),
            bindparam("start_until", type_=tasks.c.lease_until.type),
        )
    )
)


@functools.cache
def due_query(names: tuple[str, ...], queues: tuple[str, ...]) -> Select[Any]:
    """The SELECT of due rows of the given task names (and queues, if any), in claim order,
    served by ``ix_tickrun_tasks_claim``, each with the claim's time (``claim_time``: the
    database's, read as the SELECT starts); bind ``claim_now`` and ``claim_limit``.

    Built once and kept: building it (the group filter's subqueries) and SQLAlchemy's cache
    key of a new statement cost 0.8 ms a claim, as much as the rest of a one-task claim on
    SQLite."""
    t = tasks
    stmt = (
        select(
            t.c.id,
            t.c.name,
            t.c.queue,
            t.c.status,
            t.c.payload,
            t.c.key,
            t.c.attempts,
            t.c.max_attempts,
            t.c.worker,
            t.c.started_at,
            t.c.scheduled_for,
            t.c.schedule,
            t.c.group_key,
            t.c.group_limit,
            t.c.group_order,
            CLAIM_TIME.label("claim_time"),
        )
        .where(t.c.claimable_at <= CLAIM_TIME, t.c.name.in_(names), gate.group_filter(CLAIM_TIME))
        .order_by(t.c.priority.desc(), t.c.claimable_at, t.c.id)
        .limit(CLAIM_LIMIT)
    )
    return stmt.where(t.c.queue.in_(queues)) if queues else stmt


@functools.lru_cache(maxsize=256)  # full scopes vary; the app's limits bound them
def claim_query(
    backend: str,
    names: tuple[str, ...],
    queues: tuple[str, ...],
    excluded: tuple[tuple[str, ...], tuple[str, ...]] = ((), ()),
) -> Select[Any]:
    """``due_query`` as the claim runs it on ``backend`` (after ``dialects.before_claim``),
    leaving out the ``excluded`` task names and queues (``gate.excluded``)."""
    t = tasks
    stmt = due_query(names, queues)
    left_out_names, left_out_queues = excluded
    if left_out_names:
        stmt = stmt.where(t.c.name.not_in(left_out_names))
    if left_out_queues:
        stmt = stmt.where(t.c.queue.not_in(left_out_queues))
    return dialects.for_claim(stmt, backend)


def claim(
    engine: Engine,
    *,
    names: Sequence[str],
    queues: Sequence[str],
    limit: int,
    worker: str,
    leases: Mapping[str, float],
    now: datetime | None = None,
    limits: Sequence[Limit] = (),
    flow_cap: int | None = None,
    alerts: Sequence[str] = (),
) -> ClaimBatch:
    """Atomically claim up to ``limit`` due tasks, in claim order; counts the attempt now.

    The claim's time is the database's (``now``: a time pinned instead, as frozen tests do),
    read by the SELECT that finds the due rows, or after the limits' locks are held when a
    limit is involved: what a rate window counts is the time the handlers start.

    A due ``running`` row is one whose lease expired: its lost attempt is recorded, and if it
    has no attempt left it becomes ``dead`` instead of running again, with an alert row per
    target in ``alerts`` written in the same transaction. Tasks that ``limits`` or their
    group hold back are left as they are (tickrun.gate); at most ``flow_cap`` limited tasks
    are taken.
    """
    t = tasks
    token = uuid.uuid4().hex
    backend, names, queues = dialects.kind(engine), tuple(names), tuple(queues)
    with engine.begin() as conn:
        pinned = dialects.bound_now(now, conn)
        flow = gate.plan_gate(limits, names, queues)
        dialects.before_claim(conn)

        def candidates() -> Sequence[Any]:
            stmt = claim_query(backend, names, queues, gate.excluded(flow, flow_cap))
            return conn.execute(stmt, {CLAIM_NOW.key: pinned, CLAIM_LIMIT.key: limit}).all()

        rows = candidates()
        if not rows:
            return ClaimBatch(tasks=[], lost=0, dead=0, now=pinned)
        now = flow.now = rows[0].claim_time
        if gate.touches(flow, rows):
            # Later than the SELECT's: after the locks (and any wait for them), and no earlier
            # than a start a rate window already holds.
            now = gate.measure(conn, flow, pinned)
            if flow.excluded_names or flow.excluded_queues:
                rows = candidates()  # full scopes left out: their held tasks fill no LIMIT
        expired = [r for r in rows if r.status == RUNNING]
        exhausted = {r.id for r in expired if after_failure(r.attempts, r.max_attempts) == DEAD}
        live = [r for r in rows if r.id not in exhausted] if exhausted else rows
        chosen = gate.admit(conn, flow, live, flow_cap)
        # A lost attempt is recorded when its task is claimed again or dies, not while a limit
        # holds the task back (it would be recorded again by every claim that saw it).
        if expired:
            taken = {r.id for r in chosen} | exhausted
            lost = [r for r in expired if r.id in taken]
        else:
            lost = []
        if lost:
            conn.execute(
                insert(attempts),
                [
                    {
                        "task_id": r.id,
                        "attempt": r.attempts,
                        "started_at": r.started_at,
                        "finished_at": now,
                        "worker": r.worker,
                        "outcome": Outcome.LOST,
                        "error": LEASE_EXPIRED.format(worker=r.worker),
                        "traceback": None,
                    }
                    for r in lost
                ],
            )
        if exhausted:
            conn.execute(
                update(t)
                .where(t.c.id.in_(exhausted))
                .values(
                    **left_running(DEAD, now),
                    last_error=EXHAUSTED,
                    last_traceback=None,
                )
            )
            _write_alerts(
                conn, alerts, [_dead(r, EXHAUSTED, now) for r in rows if r.id in exhausted], now
            )
        gate.log_starts(conn, flow)
        wake_at = gate.rate_held(conn, flow, names) if len(chosen) < limit else None
        by_lease: dict[float, list[int]] = defaultdict(list)
        for r in chosen:
            by_lease[leases[r.name]].append(r.id)
        for lease, ids in by_lease.items():
            until = now + timedelta(seconds=lease)
            conn.execute(
                START,
                {
                    "start_ids": ids,
                    "start_token": token,
                    "start_worker": worker,
                    "start_now": now,
                    "start_until": until,
                },
            )
    claimed = _claimed(chosen, token, now, counted=False)
    found = tuple(Lost(r.id, r.name, r.attempts, r.worker, r.id in exhausted) for r in lost)
    return ClaimBatch(
        tasks=claimed,
        lost=len(lost),
        dead=len(exhausted),
        seen=len(rows),
        wake_at=wake_at,
        lost_attempts=found,
        now=now,
    )


# How many ids past the newest one a fresh claim looks at: a notified worker's burst.
FRESH_WINDOW = 16


@functools.lru_cache(maxsize=64)
def fresh_claim_query(
    backend: str,
    names: tuple[str, ...],
    queues: tuple[str, ...],
    excluded: tuple[tuple[str, ...], tuple[str, ...]] = ((), ()),
) -> Update:
    """One statement that claims the due pending tasks among the ids ``fresh_ids`` which
    nothing can hold back (no group; ``excluded``: the limited names and queues), returning
    them; bind ``fresh_ids``, ``claim_now``, ``claim_limit``, ``start_token``,
    ``start_worker`` and ``lease_<i>`` (the lease of ``names[i]``, seconds). The claim's time
    and the leases' ends are the database's (``claim_now`` None), as in :func:`claim`.

    New tasks take the next ids of the table's sequence, so the ones a notification
    announces lie just past the newest id a worker saw (ids skipped by rolled-back or
    duplicate inserts leave gaps, and a task past the window is left to the full claim).
    Looked up by primary key, they need no planner setting (``dialects.before_claim``) and
    no scan, however many other rows are pending: with an indexed condition beside the ids
    (``status = 'pending'``), PostgreSQL planned a scan of every pending row when the
    table's statistics were stale."""
    t = tasks
    left_out_names, left_out_queues = excluded
    fresh = select(t.c.id).where(
        dialects.any_of(t.c.id, "fresh_ids"),
        # Due and waiting (finished rows have no claimable_at), and in no group that limits
        # or orders it: conditions no index serves, so that only the primary key can.
        t.c.claimable_at <= CLAIM_TIME,
        t.c.status != RUNNING,
        t.c.group_limit.is_(None),
        t.c.group_order.is_(None),
        dialects.any_of(t.c.name, "fresh_names"),
    )
    if queues:
        fresh = fresh.where(dialects.any_of(t.c.queue, "fresh_queues"))
    if left_out_names:
        fresh = fresh.where(t.c.name.not_in(left_out_names))
    if left_out_queues:
        fresh = fresh.where(t.c.queue.not_in(left_out_queues))
    fresh = fresh.order_by(t.c.priority.desc(), t.c.claimable_at, t.c.id).limit(CLAIM_LIMIT)
    lease = case({name: bindparam(f"lease_{i}") for i, name in enumerate(names)}, value=t.c.name)
    until = dialects.plus_seconds(CLAIM_TIME, lease)
    return (
        update(t)
        .where(t.c.id.in_(dialects.for_claim(fresh, backend).scalar_subquery()))
        .values(_started(CLAIM_TIME, until))
        .returning(
            t.c.id,
            t.c.name,
            t.c.queue,
            t.c.priority,
            t.c.payload,
            t.c.key,
            t.c.attempts,
            t.c.max_attempts,
            t.c.scheduled_for,
            t.c.schedule,
            t.c.group_key,
            t.c.started_at,
        )
    )


def claim_fresh(
    engine: Engine,
    *,
    after: int,
    names: Sequence[str],
    queues: Sequence[str],
    limit: int,
    worker: str,
    leases: Mapping[str, float],
    now: datetime | None = None,
    limits: Sequence[Limit] = (),
) -> ClaimBatch:
    """Claim up to ``limit`` tasks enqueued since the task ``after`` that no limit or group
    could hold, in one statement that commits on its own: a notified worker's claim
    (PostgreSQL), one round trip instead of the five of :func:`claim`.

    It sees only new tasks that are waiting (pending or retrying) and unheld: whatever else
    is due is left to the :func:`claim` that follows it.
    """
    names, queues = tuple(names), tuple(queues)
    flow = gate.plan_gate(limits, names, queues)
    excluded = (tuple(sorted(flow.limited_names)), tuple(sorted(flow.limited_queues)))
    if set(names) <= set(excluded[0]):
        return ClaimBatch(tasks=[], lost=0, dead=0)
    token = uuid.uuid4().hex
    params: dict[str, Any] = {
        "fresh_ids": list(range(after + 1, after + 1 + FRESH_WINDOW)),
        "fresh_names": list(names),
        "fresh_queues": list(queues),
        CLAIM_NOW.key: dialects.bound_now(now, engine),
        CLAIM_LIMIT.key: limit,
        "start_token": token,
        "start_worker": worker,
    }
    for i, name in enumerate(names):
        params[f"lease_{i}"] = float(leases[name])
    stmt = fresh_claim_query(dialects.kind(engine), names, queues, excluded)
    with engine.connect() as conn:
        # The UPDATE is the whole transaction: its own commit, with no BEGIN or COMMIT sent.
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        rows = sorted(conn.execute(stmt, params).all(), key=lambda r: (-r.priority, r.id))
    claimed = _claimed(rows, token, None, counted=True)
    began = claimed[0].started_at if claimed else now
    return ClaimBatch(tasks=claimed, lost=0, dead=0, seen=len(rows), now=began)


def _claimed(
    rows: Iterable[Any], token: str, now: datetime | None, *, counted: bool
) -> list[Claimed]:
    """The tasks a claim took at ``now``, from their rows as read before its UPDATE counted
    the attempt, or (``counted``) as its UPDATE ... RETURNING gave them, start time included."""
    bump = 0 if counted else 1
    return [
        Claimed(
            id=r.id,
            name=r.name,
            queue=r.queue,
            payload=r.payload,
            attempt=r.attempts + bump,
            max_attempts=r.max_attempts,
            key=r.key,
            scheduled_for=r.scheduled_for,
            schedule=r.schedule,
            group=r.group_key,
            token=token,
            started_at=r.started_at if now is None else now,
        )
        for r in rows
    ]


def _owned(conn: Connection, held: Iterable[Claimed]) -> list[Claimed]:
    """Lock the rows of ``held`` and keep those still under the caller's claim."""
    held = list(held)
    if not held:
        return []
    stmt = select(tasks.c.id, tasks.c.claim_token).where(tasks.c.id.in_([c.id for c in held]))
    current: dict[int, str | None] = {
        row.id: row.claim_token for row in conn.execute(dialects.locked(stmt, conn))
    }
    return [c for c in held if current.get(c.id) == c.token]


def record(
    engine: Engine,
    outcomes: Sequence[Ended],
    *,
    now: datetime,
    worker: str,
    alerts: Sequence[str] = (),
) -> set[int]:
    """Write the outcomes still under their claim, in one transaction; returns their ids.

    A task that becomes dead gets an alert row per target in ``alerts``, in that transaction.
    """
    if not outcomes:
        return set()
    by_id = {o.task.id: o for o in outcomes}
    t = tasks
    with engine.begin() as conn:
        mine = [by_id[c.id] for c in _owned(conn, (o.task for o in outcomes))]
        _succeed(conn, [o for o in mine if o.status == SUCCEEDED], now)
        failed = [o for o in mine if o.status != SUCCEEDED]
        if failed:
            rows = [
                {
                    "run_at": o.task.started_at,  # a dead task keeps the start of its last try
                    **left_running(o.status, now, o.run_at),
                    "last_error": o.error,
                    "last_traceback": o.traceback,
                }
                for o in failed
            ]
            conn.execute(
                update(t)
                .where(t.c.id == bindparam("b_id"))
                .values({name: bindparam(f"b_{name}") for name in rows[0]}),
                [
                    {"b_id": o.task.id, **{f"b_{k}": v for k, v in row.items()}}
                    for o, row in zip(failed, rows, strict=True)
                ],
            )
            _write_alerts(
                conn, alerts, [_dead(o, o.error, now) for o in failed if o.status == DEAD], now
            )
        _history(conn, mine, worker)
    return {o.task.id for o in mine}


def record_success(conn: Connection, outcome: Ended, *, now: datetime, worker: str) -> bool:
    """Write one succeeded attempt in the caller's open transaction, fenced like ``record``:
    the transaction ``ctx.connection()`` gave the handler, so its writes commit with the
    success. False when the claim was taken over: the caller must roll back."""
    if not _owned(conn, [outcome.task]):
        return False
    _succeed(conn, [outcome], now)
    _history(conn, [outcome], worker)
    return True


def _succeed(conn: Connection, done: Sequence[Ended], now: datetime) -> None:
    """The writes of succeeded attempts still under their claim: status, result, follow-ups."""
    if not done:
        return
    t = tasks
    conn.execute(
        update(t).where(t.c.id.in_([o.task.id for o in done])).values(left_running(SUCCEEDED, now))
    )
    valued = [o for o in done if o.result is not None]
    if valued:
        conn.execute(
            update(t).where(t.c.id == bindparam("b_id")).values(result=bindparam("b_result")),
            [{"b_id": o.task.id, "b_result": o.result} for o in valued],
        )
    # Keyed (by parent, attempt and call, unless the handler chose a key), so each follow-up
    # is inserted one at a time and never twice. Only this transaction inserts them: an
    # attempt that fails, times out or dies leaves none.
    for o in done:
        for row in o.followups:
            insert_tasks(conn, [row])
    # Kept on the schedule, not only on task rows, so `check --stale` survives pruning.
    fresh = {o.task.schedule for o in done if o.task.schedule}
    if fresh:
        conn.execute(
            update(schedules).where(schedules.c.name.in_(fresh)).values(last_success_at=now)
        )


def _history(conn: Connection, ended: Sequence[Ended], worker: str) -> None:
    """One attempt row per outcome written."""
    if not ended:
        return
    conn.execute(
        insert(attempts),
        [
            {
                "task_id": o.task.id,
                "attempt": o.task.attempt,
                "started_at": o.started_at or o.task.started_at,
                "finished_at": o.finished_at,
                "worker": worker,
                "outcome": o.outcome,
                "error": o.error,
                "traceback": o.traceback,
            }
            for o in ended
        ],
    )


def _dead(task: Any, error: str | None, now: datetime) -> dict[str, Any]:
    """The alert document of a task (a claim's row, or an Ended outcome) that became dead."""
    if isinstance(task, Ended):
        c = task.task
        values = (c.id, c.name, c.queue, c.attempt, c.max_attempts, c.key)
    else:
        values = (task.id, task.name, task.queue, task.attempts, task.max_attempts, task.key)
    task_id, name, queue, attempt, max_attempts, key = values
    return dead_document(
        task_id=task_id,
        task=name,
        queue=queue,
        attempts=attempt,
        max_attempts=max_attempts,
        key=key,
        error=error,
        dead_at=now.isoformat(),
    )


def _write_alerts(
    conn: Connection, targets: Sequence[str], documents: list[dict[str, Any]], now: datetime
) -> None:
    """The outbox rows of tasks that became dead, in the transaction that made them dead."""
    outbox.write(conn, targets, documents, now)


def renew(
    engine: Engine,
    held: Iterable[Claimed],
    leases: Mapping[str, float],
    now: datetime | None = None,
) -> set[int]:
    """Push the leases of the tasks this run holds forward from the database's clock (``now``:
    a pinned time); returns the ids whose claim was taken over, which are left alone: another
    run judged their lease expired and claimed them again."""
    held = list(held)
    if not held:
        return set()
    t = tasks
    with engine.begin() as conn:
        stmt = select(t.c.id, t.c.claim_token, t.c.status, CLAIM_TIME.label("now")).where(
            t.c.id.in_([c.id for c in held])
        )
        rows = conn.execute(
            dialects.locked(stmt, conn), {CLAIM_NOW.key: dialects.bound_now(now, conn)}
        ).all()
        current = {r.id: (r.claim_token, r.status) for r in rows}
        mine = [c for c in held if current.get(c.id) == (c.token, RUNNING)]
        groups: dict[float, list[int]] = defaultdict(list)
        for c in mine:
            groups[leases[c.name]].append(c.id)
        for lease, ids in groups.items():
            until = rows[0].now + timedelta(seconds=lease)
            # The rows are locked and checked above: no other claim can come between.
            conn.execute(
                update(t).where(t.c.id.in_(ids)).values(lease_until=until, claimable_at=until)
            )
    return {c.id for c in held} - {c.id for c in mine}


def release(engine: Engine, held: Iterable[Claimed], now: datetime) -> int:
    """Give back claimed tasks whose handler never started: due now, the attempt uncounted."""
    t = tasks
    with engine.begin() as conn:
        mine = _owned(conn, held)
        # A task never attempted before this claim is pending again, else retrying.
        for status, ids in (
            (PENDING, [c.id for c in mine if c.attempt <= 1]),
            (RETRYING, [c.id for c in mine if c.attempt > 1]),
        ):
            if ids:
                conn.execute(
                    update(t)
                    .where(t.c.id.in_(ids))
                    .values(
                        **left_running(status, now, now),
                        attempts=t.c.attempts - 1,
                        worker=None,
                        started_at=None,
                    )
                )
    return len(mine)


def revive_dead(conn: Connection, ids: Sequence[int], now: datetime) -> None:
    """``dlq retry``: the dead tasks among ``ids`` become pending, due now, attempts from 0
    (their history is kept)."""
    conn.execute(
        update(tasks)
        .where(tasks.c.id.in_(ids), tasks.c.status == DEAD)
        .values(**left_running(PENDING, now, now), attempts=0, started_at=None, worker=None)
    )


def cancel_waiting(conn: Connection, ids: Sequence[int], now: datetime) -> None:
    """``cancel``: the pending or retrying tasks among ``ids`` become cancelled."""
    conn.execute(
        update(tasks)
        .where(tasks.c.id.in_(ids), tasks.c.status.in_(WAITING))
        .values(left_running(CANCELLED, now))
    )


def start_run(
    engine: Engine,
    *,
    host: str,
    worker: str,
    pid: int,
    now: datetime,
    limits: Sequence[Limit] = (),
) -> int:
    """Record a run that starts, and the application's task and queue limits (what
    ``stats`` shows, and the rows claims lock); its id.

    One write transaction: overlapping runs that start together each wait for SQLite's write
    lock once, not once per write.
    """
    with engine.begin() as conn:
        gate.register(conn, limits, now)
        return dialects.inserted_id(
            conn.execute(
                insert(runs).values(
                    started_at=now,
                    host=host,
                    worker=worker,
                    pid=pid,
                    claimed=0,
                    succeeded=0,
                    retried=0,
                    dead=0,
                )
            )
        )


def finish_run(
    engine: Engine, run_id: int, *, now: datetime, exit_code: int, **counts: int
) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(finished_at=now, exit_code=exit_code, **counts)
        )


def heartbeat(engine: Engine, run_id: int, *, now: datetime, **counts: int) -> None:
    """A long-running worker is alive: its run row's heartbeat, and its counts so far."""
    with engine.begin() as conn:
        conn.execute(update(runs).where(runs.c.id == run_id).values(heartbeat_at=now, **counts))


class Upcoming(NamedTuple):
    at: datetime | None  # when the earliest task becomes claimable (None: none will)
    newest: int  # the highest task id given out yet (0 for none)
    now: datetime  # the time ``at`` is to be compared with, by the clock that judges leases


def next_claimable(
    engine: Engine, *, names: list[str], queues: list[str], now: datetime | None = None
) -> Upcoming:
    """When the earliest of these tasks becomes claimable after now (a delayed or retrying
    task's time, a running one's lease expiry), and the highest task id given out yet: a
    later notification announces tasks above it (claim_fresh). ``now`` is the database's
    clock's, or the pinned ``now``.

    Tasks already due are left out: a claim just saw them, so a limit holds them (a busy key,
    a blocked ordered group), and waiting for them would be no wait at all."""
    t = tasks
    stmt = select(func.min(t.c.claimable_at)).where(
        t.c.claimable_at > CLAIM_TIME, t.c.name.in_(names)
    )
    if queues:
        stmt = stmt.where(t.c.queue.in_(queues))
    with engine.connect() as conn:
        at, top, current = conn.execute(
            select(
                stmt.scalar_subquery(),
                dialects.newest_id(t, dialects.kind(engine)),
                CLAIM_TIME,
            ),
            {CLAIM_NOW.key: dialects.bound_now(now, conn)},
        ).one()
    return Upcoming(at, top or 0, current)
