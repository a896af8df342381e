"""Flow control inside the claim transaction: which due tasks a claim may take now.

Three kinds of limit (tickrun.flow), each enforced so that any number of overlapping claims on
any number of hosts never exceeds it:

- **Task and queue limits** (rate and concurrency, from the application). The claim locks the
  scope's row in ``tickrun_limits`` before it counts, so claims that could exceed one limit
  take turns; it then counts running tasks whose lease has not expired and starts in the rate
  window, and excludes full scopes from its SELECT.
- **Group concurrency** (``concurrency_key`` with ``concurrency=K``): the same, with one lock
  row per group, taken after the candidate rows are known.
- **Group order** (``ordered=True``): a task starts only when no earlier task of its group is
  unfinished (or dead, with ``on_dead="block"``). No lock is needed: an earlier task stays
  unfinished until it has run, so two tasks of one ordered group can never both qualify.

The SELECT filters groups in SQL too (``group_filter``), so held tasks do not fill a claim's
LIMIT ahead of claimable ones; the checks here, made after the locks, are what guarantees the
limits. SQLite runs every claim under its write lock, so there the locks are no-ops.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from tickrun import dialects
from tickrun.flow import Limit, group_scope, queue_scope, task_scope
from tickrun.lifecycle import DEAD, PENDING, RETRYING, RUNNING
from tickrun.schema import limits, starts, tasks

# Tasks that hold back the later tasks of an ordered group.
UNFINISHED = (PENDING, RETRYING, RUNNING)


def blocking(t: Any) -> ColumnElement[bool]:
    """Rows of ``t`` that hold back the later tasks of their ordered group."""
    return or_(t.c.status.in_(UNFINISHED), and_(t.c.status == DEAD, t.c.group_order == "block"))


def group_filter(now: ColumnElement[datetime]) -> ColumnElement[bool]:
    """Due rows whose group (if any) could take them now, as a WHERE clause of the claim."""
    t = tasks
    earlier = tasks.alias("earlier")
    running = tasks.alias("running")
    no_earlier = ~exists().where(
        earlier.c.group_key == t.c.group_key, earlier.c.id < t.c.id, blocking(earlier)
    )
    in_use = (
        select(func.count())
        .where(
            running.c.group_key == t.c.group_key,
            running.c.status == RUNNING,
            running.c.lease_until > now,
        )
        .scalar_subquery()
    )
    return or_(
        t.c.group_key.is_(None),
        and_(
            or_(t.c.group_order.is_(None), no_earlier),
            or_(t.c.group_limit.is_(None), in_use < t.c.group_limit),
        ),
    )


def register(conn: Connection, defined: Sequence[Limit], now: datetime) -> None:
    """Write the application's limits to ``tickrun_limits`` (what ``stats`` shows, and the
    rows claims lock).

    Only rows that are missing or changed are written, in scope order: the order claims lock
    them in (``_lock``). Written in the order the app defines them, a run starting beside a
    claim locked two rows the other way round and one of them died of a deadlock.
    """
    wanted = {limit.scope: limit for limit in defined}
    if not wanted:
        return
    stmt = select(limits).where(limits.c.scope.in_(sorted(wanted)))
    stored = {row.scope: row for row in conn.execute(stmt)}
    for scope in sorted(wanted):
        limit = wanted[scope]
        values: dict[str, Any] = {
            "rate_count": limit.rate.count if limit.rate else None,
            "rate_period": limit.rate.period if limit.rate else None,
            "concurrency": limit.concurrency,
        }
        row = stored.get(scope)
        if row is not None and all(getattr(row, k) == v for k, v in values.items()):
            continue  # as registered: no write, no lock
        # Runs starting together may both find the row missing: one statement each, so the
        # second waits for the first instead of deadlocking with it.
        dialects.upsert(conn, limits, {"scope": scope, **values, "updated_at": now}, "scope")


def _lock(conn: Connection, scopes: Iterable[str], now: datetime) -> None:
    """Lock the rows of ``scopes`` in scope order, creating missing ones first.

    Every claim locks in the same order, so claims cannot deadlock on these rows. A missing
    row is inserted (and committed) on another connection: inserted inside the claim, it
    would be locked out of order, before rows that sort ahead of it.
    """
    wanted = sorted(set(scopes))
    if not wanted or dialects.kind(conn) == "sqlite":
        return
    stmt = select(limits.c.scope).where(limits.c.scope.in_(wanted)).order_by(limits.c.scope)
    found = set(conn.execute(stmt).scalars())  # committed rows; not locked yet
    missing = [s for s in wanted if s not in found]
    if missing:
        with conn.engine.begin() as other:
            for scope in missing:
                row = {"scope": scope, "updated_at": now}
                dialects.insert_unless_exists(other, limits, row, "scope")
    conn.execute(dialects.locked(stmt, conn)).all()


@dataclass
class Gate:
    """What one claim may still take: budgets per scope, the groups' state, and the rate
    starts to log at ``now``, the claim's time (set once the claim has read it)."""

    defined: dict[str, Limit]
    now: datetime = datetime.min
    budget: dict[str, int] = field(default_factory=dict)
    window: dict[str, list[datetime]] = field(default_factory=dict)  # starts in the window
    excluded_names: set[str] = field(default_factory=set)
    excluded_queues: set[str] = field(default_factory=set)
    taken_rate: Counter[str] = field(default_factory=Counter)
    # The limited names and queues, so that a claim of 50 unlimited rows asks two dicts
    # per row and formats no scope string.
    limited_names: dict[str, str] = field(init=False, repr=False)
    limited_queues: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.limited_names = {s[5:]: s for s in self.defined if s.startswith("task:")}
        self.limited_queues = {s[6:]: s for s in self.defined if s.startswith("queue:")}

    @property
    def wake_at(self) -> datetime | None:
        """When the earliest full rate window lets a start in again (None: none is full)."""
        times = []
        for scope, began in self.window.items():
            rate = self.defined[scope].rate
            assert rate is not None
            logged = sorted(began + [self.now] * self.taken_rate[scope])
            if len(logged) >= rate.count:
                times.append(logged[len(logged) - rate.count] + timedelta(seconds=rate.period))
        return min(times, default=None)

    def scopes(self, row: Any) -> list[str]:
        found = (self.limited_names.get(row.name), self.limited_queues.get(row.queue))
        return [s for s in found if s is not None]


def plan_gate(defined: Sequence[Limit], names: Sequence[str], queues: Sequence[str]) -> Gate:
    """The task and queue limits this claim could touch, not yet measured (no query)."""
    relevant = {
        limit.scope: limit
        for limit in defined
        if limit.scope in {task_scope(n) for n in names}
        or (limit.scope.startswith("queue:") and (not queues or limit.scope[6:] in queues))
    }
    return Gate(relevant)


def touches(gate: Gate, rows: Sequence[Any]) -> bool:
    """Whether any of these candidate rows is under a task or queue limit of the claim."""
    names, queues = gate.limited_names, gate.limited_queues
    if not rows or not (names or queues):
        return False
    return not (
        names.keys().isdisjoint(map(_column(rows, "name"), rows))
        and queues.keys().isdisjoint(map(_column(rows, "queue"), rows))
    )


def _column(rows: Sequence[Any], name: str) -> Callable[[Any], Any]:
    """A getter of one column of these rows, by position. Every claim asks about its few
    hundred rows inside its transaction (SQLite's write lock): by attribute, the rows of a
    20,000-task drain cost 2 % of it; by position, in C, 14 times less."""
    return itemgetter(rows[0]._fields.index(name))


def measure(conn: Connection, gate: Gate, pinned: datetime | None) -> datetime:
    """Lock the claim's task and queue limits and measure what room they leave; the claim's
    time, read once the locks are held (``pinned``: see dialects.bound_now).

    Only a claim whose candidates include a limited task pays for it: claims of unlimited
    tasks beside limited ones run no statement more than without limits.
    """
    relevant = gate.defined
    _lock(conn, relevant, gate.now)
    # A time read before a wait for the locks would log this claim's starts too early: a
    # claim after it would count them out of its window while the handlers start only now.
    now = gate.now = dialects.current_time(conn, pinned)
    t = tasks
    counted = {}
    concurrent = [s for s, lim in relevant.items() if lim.concurrency is not None]
    if concurrent:
        for column, prefix in ((t.c.name, "task:"), (t.c.queue, "queue:")):
            values = [s[len(prefix) :] for s in concurrent if s.startswith(prefix)]
            if values:
                stmt = (
                    select(column, func.count())
                    .where(t.c.status == RUNNING, t.c.lease_until > now, column.in_(values))
                    .group_by(column)
                )
                counted.update({prefix + v: n for v, n in conn.execute(stmt)})
    rated = {s: lim.rate for s, lim in relevant.items() if lim.rate is not None}
    if rated:
        gate.now = _rate_clock(conn, rated, gate.now)
    for scope, limit in relevant.items():
        room = []
        if limit.concurrency is not None:
            room.append(limit.concurrency - counted.get(scope, 0))
        if limit.rate is not None:
            since = gate.now - timedelta(seconds=limit.rate.period)
            began = list(
                conn.execute(
                    select(starts.c.started_at).where(
                        starts.c.scope == scope, starts.c.started_at > since
                    )
                ).scalars()
            )
            gate.window[scope] = began
            room.append(limit.rate.count - len(began))
        gate.budget[scope] = max(0, min(room))
        if gate.budget[scope] == 0:
            (gate.excluded_names if scope.startswith("task:") else gate.excluded_queues).add(
                scope.split(":", 1)[1]
            )
    return gate.now


def _rate_clock(conn: Connection, rated: dict[str, Any], now: datetime) -> datetime:
    """The time this claim's starts are logged at: ``now``, or the latest start already logged
    in these scopes if that is later; and the log trimmed to what no claim can need.

    ``now`` is read after the locks, so it is normally the latest; a clock that steps back
    (or a pinned time) must not log starts out of order. Logging starts in order keeps the
    window exact: each claim counts
    every start within one period before its own time, and no claim's time is ever earlier
    than a start already logged, so trimming what is a period older than the latest start
    removes nothing a later claim counts.
    """
    stmt = (
        select(starts.c.scope, func.max(starts.c.started_at))
        .where(starts.c.scope.in_(sorted(rated)))
        .group_by(starts.c.scope)
    )
    latest: dict[str, datetime] = {scope: at for scope, at in conn.execute(stmt)}
    for scope, at in latest.items():
        horizon = at - timedelta(seconds=rated[scope].period)
        conn.execute(delete(starts).where(starts.c.scope == scope, starts.c.started_at <= horizon))
    return max([now, *latest.values()])


def excluded(gate: Gate, cap: int | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The task names and queues this claim must not even look at: full scopes, and every
    task with a task or queue limit when it may take none (``cap`` 0: no idle worker). Tasks
    limited per key are claimed ahead like any other: a claim holds a key's slot only for the
    little work a run prefetches, while a task or queue slot is one of few shared by all.
    Sorted tuples, so that claims that leave out the same ones share one SELECT."""
    if cap == 0:
        return tuple(sorted(gate.limited_names)), tuple(sorted(gate.limited_queues))
    return tuple(sorted(gate.excluded_names)), tuple(sorted(gate.excluded_queues))


def rate_held(conn: Connection, gate: Gate, names: Sequence[str]) -> datetime | None:
    """When a full rate window lets a start in again, if a due task waits for it."""
    wake_at = gate.wake_at
    if wake_at is None:
        return None
    full = [s for s in gate.window if gate.budget[s] <= 0]
    t = tasks
    scoped = [
        t.c.name.in_([s[5:] for s in full if s.startswith("task:")]),
        t.c.queue.in_([s[6:] for s in full if s.startswith("queue:")]),
    ]
    stmt = select(t.c.id).where(t.c.claimable_at <= gate.now, t.c.name.in_(names), or_(*scoped))
    return wake_at if conn.execute(stmt.limit(1)).first() else None


def admit(conn: Connection, gate: Gate, rows: Sequence[Any], cap: int | None) -> list[Any]:
    """The rows, in claim order, that the limits let this claim take."""
    ungrouped = not rows or {None}.issuperset(map(_column(rows, "group_key"), rows))
    if ungrouped and not touches(gate, rows):
        return list(rows)  # nothing limits these rows: the claim of unlimited tasks
    grouped = [r for r in rows if r.group_key is not None]
    heads: dict[str, int] = {}
    in_use: dict[str, int] = defaultdict(int)
    t = tasks
    ordered = sorted({r.group_key for r in grouped if r.group_order is not None})
    if ordered:
        stmt = (
            select(t.c.group_key, func.min(t.c.id))
            .where(t.c.group_key.in_(ordered), blocking(t))
            .group_by(t.c.group_key)
        )
        heads = {group: first for group, first in conn.execute(stmt)}
    counted = sorted({r.group_key for r in grouped if r.group_limit is not None})
    if counted:
        _lock(conn, (group_scope(g) for g in counted), gate.now)
        stmt = (
            select(t.c.group_key, func.count())
            .where(t.c.group_key.in_(counted), t.c.status == RUNNING, t.c.lease_until > gate.now)
            .group_by(t.c.group_key)
        )
        in_use.update({group: n for group, n in conn.execute(stmt)})
    taken = []
    flow_taken = 0
    for row in rows:
        scopes = gate.scopes(row)
        if scopes and cap is not None and flow_taken >= cap:
            continue
        if any(gate.budget[s] <= 0 for s in scopes):
            continue
        if row.group_order is not None and heads.get(row.group_key) != row.id:
            continue
        if row.group_limit is not None and in_use[row.group_key] >= row.group_limit:
            continue
        for s in scopes:
            gate.budget[s] -= 1
            if s in gate.window:
                gate.taken_rate[s] += 1
        if row.group_limit is not None:
            in_use[row.group_key] += 1
        flow_taken += bool(scopes)
        taken.append(row)
    return taken


def log_starts(conn: Connection, gate: Gate) -> None:
    """Log this claim's starts of rate-limited tasks in their windows."""
    rows = [
        {"scope": scope, "started_at": gate.now}
        for scope, n in gate.taken_rate.items()
        for _ in range(n)
    ]
    if rows:
        conn.execute(insert(starts), rows)


# -- what `due`, `stats` and `check` show ------------------------------------------------------


def registered(conn: Connection) -> dict[str, Limit]:
    """The task and queue limits runs registered in ``tickrun_limits``."""
    from tickrun.flow import Rate

    stmt = select(limits).where(
        or_(limits.c.rate_count.isnot(None), limits.c.concurrency.isnot(None))
    )
    return {
        r.scope: Limit(
            r.scope,
            Rate(r.rate_count, r.rate_period) if r.rate_count is not None else None,
            r.concurrency,
        )
        for r in conn.execute(stmt)
    }


def usage(conn: Connection, defined: dict[str, Limit], now: datetime) -> dict[str, tuple[int, int]]:
    """Per scope: (running tasks with a live lease, starts in the rate window)."""
    t = tasks
    live = (t.c.status == RUNNING, t.c.lease_until > now)
    running: dict[str, int] = {}
    for column, prefix in ((t.c.name, "task:"), (t.c.queue, "queue:")):
        values = [s[len(prefix) :] for s in defined if s.startswith(prefix)]
        if values:
            stmt = select(column, func.count()).where(*live, column.in_(values)).group_by(column)
            running.update({prefix + v: n for v, n in conn.execute(stmt)})
    used = {}
    for scope, limit in defined.items():
        started = 0
        if limit.rate is not None:
            since = now - timedelta(seconds=limit.rate.period)
            stmt = select(func.count()).where(starts.c.scope == scope, starts.c.started_at > since)
            started = conn.execute(stmt).scalar_one()
        used[scope] = (running.get(scope, 0), started)
    return used


def holds(conn: Connection, rows: Sequence[Any], now: datetime) -> dict[int, str]:
    """Why each of these due rows would not be claimed now, for those a limit holds back:
    ``waiting for #ID`` (an earlier task of its ordered group), ``key busy (n/K)``,
    ``task limit (n/K)``, ``queue limit (n/K)``, ``rate (25/s)``."""
    defined = registered(conn)
    used = usage(conn, defined, now)
    t = tasks
    groups = sorted({r.group_key for r in rows if r.group_key is not None})
    earliest: dict[str, list[int]] = defaultdict(list)
    busy: dict[str, int] = {}
    if groups:
        stmt = (
            select(t.c.group_key, t.c.id)
            .where(t.c.group_key.in_(groups), blocking(t))
            .order_by(t.c.id)
        )
        for group, task_id in conn.execute(stmt):
            earliest[group].append(task_id)
        stmt = (
            select(t.c.group_key, func.count())
            .where(t.c.group_key.in_(groups), t.c.status == RUNNING, t.c.lease_until > now)
            .group_by(t.c.group_key)
        )
        busy = {group: n for group, n in conn.execute(stmt)}
    reasons: dict[int, str] = {}
    for r in rows:
        why = []
        if r.group_order is not None:
            before = [i for i in earliest.get(r.group_key, []) if i < r.id]
            if before:
                why.append(f"waiting for #{before[0]}")
        if r.group_limit is not None and busy.get(r.group_key, 0) >= r.group_limit:
            why.append(f"key busy ({busy[r.group_key]}/{r.group_limit})")
        for scope, what in ((task_scope(r.task), "task"), (queue_scope(r.queue), "queue")):
            limit = defined.get(scope)
            if limit is None:
                continue
            running, started = used[scope]
            if limit.concurrency is not None and running >= limit.concurrency:
                why.append(f"{what} limit ({running}/{limit.concurrency})")
            if limit.rate is not None and started >= limit.rate.count:
                why.append(f"{what} rate ({limit.rate})")
        if why:
            reasons[r.id] = ", ".join(why)
    return reasons


def blocked_groups(conn: Connection) -> list[tuple[str, int, int]]:
    """Ordered groups held by a dead task that blocks them: (group, dead task id, waiting)."""
    t = tasks
    dead = (
        select(t.c.group_key, func.min(t.c.id).label("dead_id"))
        .where(t.c.status == DEAD, t.c.group_order == "block", t.c.group_key.isnot(None))
        .group_by(t.c.group_key)
        .subquery()
    )
    stmt = (
        select(dead.c.group_key, dead.c.dead_id, func.count(t.c.id))
        .join(t, and_(t.c.group_key == dead.c.group_key, t.c.id > dead.c.dead_id))
        .where(t.c.status.in_(UNFINISHED))
        .group_by(dead.c.group_key, dead.c.dead_id)
        .order_by(dead.c.dead_id)
    )
    return [(g, i, n) for g, i, n in conn.execute(stmt)]


def forget_groups(conn: Connection, before: datetime) -> None:
    """Delete the lock rows of groups created before ``before`` (``prune``).

    Safe at any time: a claim that finds its group's row gone, or waited on a row that was
    deleted, inserts it again before it counts (``_lock``).
    """
    conn.execute(
        delete(limits).where(limits.c.scope.startswith("group:"), limits.c.updated_at < before)
    )
