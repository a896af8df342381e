"""store.claim_fresh: the one-statement claim of a worker woken by NOTIFY (PostgreSQL).

It takes only what the full claim would take without a second thought: due, waiting tasks
just past the newest id the worker saw, that no limit or group could hold back. Everything
else is left, untouched, to the full claim that follows it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, event, select

from tests.conftest import ServerDatabases, empty_tables
from tickrun import App, store
from tickrun.database import open_engine
from tickrun.lifecycle import PENDING, RUNNING
from tickrun.schema import tasks

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
def pg_url(servers: ServerDatabases) -> Iterator[str]:
    url = servers.get("postgresql")
    empty_tables(url)
    yield url


def flow_app(url: str) -> App:
    app = App(database_url=url)
    app.task(name="plain", lease=120)(lambda n: None)
    app.task(name="other", lease=30)(lambda n: None)
    app.task(name="api", rate="5/m")(lambda n: None)
    app.task(name="charge", concurrency_key="account", concurrency=1)(lambda account, n: None)
    app.task(name="ordered", concurrency_key="account", ordered=True)(lambda account, n: None)
    return app


def fresh(app: App, after: int, *, limit: int = 100, now: datetime = T0) -> list[int]:
    batch = store.claim_fresh(
        app.engine,
        after=after,
        names=list(app.tasks),
        queues=[],
        limit=limit,
        worker="w1",
        leases={n: s.lease for n, s in app.tasks.items()},
        now=now,
        limits=app.limits(),
    )
    assert batch.lost == batch.dead == 0 and batch.seen == len(batch.tasks)
    return [t.id for t in batch.tasks]


def newest(app: App) -> int:
    return store.next_claimable(app.engine, names=list(app.tasks), queues=[], now=T0)[1]


def status(app: App, task_id: int) -> str:
    with app.engine.connect() as conn:
        return conn.execute(select(tasks.c.status).where(tasks.c.id == task_id)).scalar_one()


def test_takes_new_unheld_due_tasks_and_leaves_everything_else(pg_url: str) -> None:
    app = flow_app(pg_url)
    old = app.enqueue("plain", {"n": 0}, run_at=T0)
    after = newest(app)
    assert after == old
    new = app.enqueue("plain", {"n": 1}, run_at=T0, priority=1)
    other = app.enqueue("other", {"n": 2}, run_at=T0)
    later = app.enqueue("plain", {"n": 3}, run_at=T0 + timedelta(seconds=1))
    rated = app.enqueue("api", {"n": 4}, run_at=T0)
    keyed = app.enqueue("charge", {"account": 7, "n": 5}, run_at=T0)
    ordered = app.enqueue("ordered", {"account": 8, "n": 6}, run_at=T0)

    assert fresh(app, after) == [new, other]  # in claim order: priority first
    for left in (old, later, rated, keyed, ordered):
        assert status(app, left) == PENDING
    with app.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(tasks).where(tasks.c.id.in_([new, other])))}
    for task_id, lease in ((new, 120), (other, 30)):
        r = rows[task_id]
        assert (r.status, r.attempts, r.worker, r.started_at) == (RUNNING, 1, "w1", T0)
        assert r.lease_until == r.claimable_at == T0 + timedelta(seconds=lease)
        assert r.claim_token is not None
    assert rows[new].claim_token == rows[other].claim_token
    assert fresh(app, after) == []  # claimed once only

    # What it left is the full claim's, in its order, limits and groups applied.
    batch = store.claim(
        app.engine,
        names=list(app.tasks),
        queues=[],
        limit=100,
        worker="w2",
        leases={n: s.lease for n, s in app.tasks.items()},
        now=T0,
        limits=app.limits(),
    )
    assert sorted(t.id for t in batch.tasks) == [old, rated, keyed, ordered]


def test_tasks_past_the_window_or_the_limit_are_left_to_the_full_claim(pg_url: str) -> None:
    app = flow_app(pg_url)
    after = newest(app)
    ids = app.enqueue_many(("plain", {"n": n}) for n in range(store.FRESH_WINDOW + 4))
    with app.engine.begin() as conn:  # enqueue_many stamps now: make them due at T0
        conn.execute(tasks.update().values(run_at=T0, claimable_at=T0))
    assert fresh(app, after, limit=3) == ids[:3]
    assert fresh(app, after) == ids[3 : store.FRESH_WINDOW]
    assert all(status(app, i) == PENDING for i in ids[store.FRESH_WINDOW :])


def test_a_batch_payload_and_attempt_are_what_the_handler_gets(pg_url: str) -> None:
    app = flow_app(pg_url)
    after = newest(app)
    task_id = app.enqueue("plain", {"n": 42}, run_at=T0, key="k-42")
    batch = store.claim_fresh(
        app.engine,
        after=after,
        names=["plain"],
        queues=["default"],
        limit=1,
        worker="w1",
        leases={"plain": 120.0},
        now=T0,
    )
    (claimed,) = batch.tasks
    assert (claimed.id, claimed.name, claimed.queue, claimed.key) == (
        task_id,
        "plain",
        "default",
        "k-42",
    )
    assert json.loads(claimed.payload) == {"n": 42}
    with app.engine.connect() as conn:
        stored = conn.execute(select(tasks).where(tasks.c.id == task_id)).one()
    assert (claimed.attempt, claimed.max_attempts, claimed.started_at) == (
        1,
        stored.max_attempts,
        T0,
    )
    assert claimed.token == stored.claim_token


def test_it_is_planned_on_the_primary_key_beside_many_pending_rows(pg_url: str) -> None:
    """With no statistics of the table yet (a new table, a bulk load ANALYZE has not seen),
    an indexed status condition was planned as a scan of every pending row."""
    app = flow_app(pg_url)
    engine = open_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE tickrun_tasks SET (autovacuum_enabled = false)")
    try:
        explain_a_fresh_claim_beside_pending_rows(app, engine)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE tickrun_tasks RESET (autovacuum_enabled)")


def explain_a_fresh_claim_beside_pending_rows(app: App, engine: Engine) -> None:
    with engine.begin() as conn:
        app.enqueue_many((("plain", {"n": n}) for n in range(20_000)), connection=conn)
        week = T0 + timedelta(days=7)  # pending for a week: not due
        conn.execute(tasks.update().values(run_at=week, claimable_at=week))
    after = newest(app)
    new = app.enqueue("plain", {"n": -1}, run_at=T0)
    sent: list[tuple[str, object]] = []

    def keep(conn: object, cursor: object, sql: str, params: object, *_: object) -> None:
        if sql.startswith("UPDATE"):
            sent.append((sql, params))

    event.listen(app.engine, "before_cursor_execute", keep)
    try:
        assert fresh(app, after) == [new]
    finally:
        event.remove(app.engine, "before_cursor_execute", keep)
    ((sql, params),) = sent
    raw = app.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(line for (line,) in cursor.fetchall())
    finally:
        raw.close()
    assert "tickrun_tasks_pkey" in plan and "Seq Scan" not in plan, plan
    assert "ix_tickrun_tasks_status_finished" not in plan, plan
