"""The engine in-process, on every database: claims, outcomes, leases, fencing, run records and
enqueueing, with a frozen clock instead of sleeps."""

from __future__ import annotations

import json
import os
import socket
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time
from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from tests.helpers.apps import T0, W, new_app, row, run_bounded
from tickrun import (
    App,
    ConfigError,
    Fail,
    PayloadError,
    Retry,
    SchemaError,
    TaskContext,
    UnknownTask,
    dialects,
    store,
)
from tickrun.database import open_engine
from tickrun.failures import MAX_TEXT_BYTES
from tickrun.lifecycle import DEAD, PENDING, RETRYING, RUNNING, SUCCEEDED
from tickrun.migrations import init_schema
from tickrun.runner import Runner, RunOptions, run
from tickrun.schema import attempts, runs, tasks


def history(engine: Engine, task_id: int) -> list[Any]:
    with engine.connect() as conn:
        stmt = (
            select(attempts)
            .where(attempts.c.task_id == task_id)
            .order_by(attempts.c.attempt, attempts.c.id)
        )
        return list(conn.execute(stmt).all())


def count(engine: Engine, *where: Any) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(tasks).where(*where)).scalar_one()


def ghost_claim(app: App, now: datetime, worker: str = "ghost") -> store.ClaimBatch:
    """A claim by a run that then dies: nothing renews or records it."""
    return store.claim(
        app.engine,
        names=list(app.tasks),
        queues=[],
        limit=100,
        worker=worker,
        leases={n: s.lease for n, s in app.tasks.items()},
        now=now,
    )


# -- outcomes --------------------------------------------------------------------------------


def test_success_records_the_task_and_its_attempt(db_url: str) -> None:
    app = new_app(db_url)
    seen: list[str] = []

    @app.task
    def hello(name: str) -> None:
        seen.append(name)

    with freeze_time(T0):
        task_id = app.enqueue("hello", {"name": "ada"})
        summary = run(app, W)
    assert seen == ["ada"]
    assert (summary.claimed, summary.succeeded, summary.retried, summary.dead) == (1, 1, 0, 0)
    assert summary.exit_code == 0
    assert summary.worker == "w1"
    task = row(app.engine, task_id)
    assert task.status == SUCCEEDED
    assert task.attempts == 1
    assert task.finished_at == T0
    assert task.started_at == T0
    assert task.worker == "w1"
    assert (task.claimable_at, task.lease_until, task.claim_token) == (None, None, None)
    assert (task.last_error, task.last_traceback) == (None, None)
    [attempt] = history(app.engine, task_id)
    assert attempt.attempt == 1
    assert attempt.outcome == "succeeded"
    assert attempt.worker == "w1"
    assert attempt.started_at == T0
    assert attempt.finished_at == T0
    assert (attempt.error, attempt.traceback) == (None, None)


def test_context_handler_sees_its_task_and_attempt(db_url: str) -> None:
    app = new_app(db_url)
    seen: list[TaskContext] = []

    @app.task(context=True, max_attempts=4, backoff=0)
    def ctx_task(ctx: TaskContext, n: int) -> None:
        seen.append(ctx)
        if ctx.attempt == 1:
            raise RuntimeError("first try fails")
        ctx.logger.info("second try works")

    with freeze_time(T0):
        task_id = app.enqueue("ctx_task", {"n": 1}, key="ctx:1")
        summary = run(app, W)
    assert summary.succeeded == 1 and summary.retried == 1
    assert [(c.task_id, c.task, c.attempt, c.max_attempts, c.key) for c in seen] == [
        (task_id, "ctx_task", 1, 4, "ctx:1"),
        (task_id, "ctx_task", 2, 4, "ctx:1"),
    ]
    assert seen[0].scheduled_for is None


def test_exception_retries_after_the_backoff_from_now_then_dies(db_url: str) -> None:
    app = new_app(db_url)
    calls: list[datetime] = []

    @app.task(max_attempts=3, backoff=[10, 20])
    def flaky() -> None:
        calls.append(datetime.now(UTC))
        raise ValueError(f"boom {len(calls)}")

    with freeze_time(T0) as frozen:
        task_id = app.enqueue("flaky")
        first = run(app, W)
        task = row(app.engine, task_id)
        assert (first.claimed, first.retried, first.dead, first.exit_code) == (1, 1, 0, 0)
        assert task.status == RETRYING
        assert task.attempts == 1
        assert task.run_at == task.claimable_at == T0 + timedelta(seconds=10)
        assert task.last_error == "ValueError: boom 1"
        assert task.last_traceback.startswith("Traceback (most recent call last):")
        assert 'raise ValueError(f"boom {len(calls)}")' in task.last_traceback
        assert (task.lease_until, task.claim_token, task.finished_at) == (None, None, None)

        frozen.move_to(T0 + timedelta(seconds=9))
        assert run(app, W).claimed == 0  # the backoff has not elapsed

        frozen.move_to(T0 + timedelta(seconds=10))
        assert run(app, W).retried == 1
        assert row(app.engine, task_id).run_at == T0 + timedelta(seconds=30)

        frozen.move_to(T0 + timedelta(seconds=30))
        last = run(app, W)
    assert (last.claimed, last.retried, last.dead, last.exit_code) == (1, 0, 1, 1)
    assert calls == [T0, T0 + timedelta(seconds=10), T0 + timedelta(seconds=30)]
    task = row(app.engine, task_id)
    assert task.status == DEAD
    assert task.attempts == 3
    assert task.finished_at == T0 + timedelta(seconds=30)
    assert task.claimable_at is None
    assert task.last_error == "ValueError: boom 3"
    assert "ValueError: boom 3" in task.last_traceback
    rows = history(app.engine, task_id)
    assert [(a.attempt, a.outcome, a.error) for a in rows] == [
        (1, "failed", "ValueError: boom 1"),
        (2, "failed", "ValueError: boom 2"),
        (3, "failed", "ValueError: boom 3"),
    ]
    assert [a.started_at for a in rows] == calls
    assert all(a.traceback and "Traceback" in a.traceback for a in rows)


def test_default_backoff_is_about_30_seconds_first(db_url: str) -> None:
    app = new_app(db_url)

    @app.task
    def flaky() -> None:
        raise ValueError("boom")

    with freeze_time(T0):
        task_id = app.enqueue("flaky")
        run(app, W)
    delay = (row(app.engine, task_id).run_at - T0).total_seconds()
    assert 24 <= delay <= 36


def test_retry_uses_its_delay_and_counts_as_an_attempt(db_url: str) -> None:
    app = new_app(db_url)
    attempts_seen: list[int] = []

    @app.task(context=True, max_attempts=3, backoff=[42])
    def polite(ctx: TaskContext) -> None:
        attempts_seen.append(ctx.attempt)
        if ctx.attempt == 1:
            raise Retry(delay=7)
        if ctx.attempt == 2:
            raise Retry()  # no delay: the task's backoff

    with freeze_time(T0) as frozen:
        task_id = app.enqueue("polite")
        summary = run(app, W)
        task = row(app.engine, task_id)
        assert (summary.retried, summary.dead, summary.exit_code) == (1, 0, 0)
        assert task.status == RETRYING
        assert task.attempts == 1
        assert task.run_at == T0 + timedelta(seconds=7)
        assert task.last_error.startswith("Retry: ")

        frozen.move_to(T0 + timedelta(seconds=7))
        run(app, W)
        assert row(app.engine, task_id).run_at == T0 + timedelta(seconds=49)

        frozen.move_to(T0 + timedelta(seconds=49))
        assert run(app, W).succeeded == 1
    assert attempts_seen == [1, 2, 3]
    assert row(app.engine, task_id).status == SUCCEEDED
    assert [a.outcome for a in history(app.engine, task_id)] == ["retry", "retry", "succeeded"]


def test_retry_with_no_attempt_left_is_dead(db_url: str) -> None:
    app = new_app(db_url)

    @app.task(max_attempts=2)
    def again() -> None:
        raise Retry(delay=0)

    with freeze_time(T0):
        task_id = app.enqueue("again")
        summary = run(app, W)  # the immediate retry is due again within the same run
    assert (summary.claimed, summary.retried, summary.dead, summary.exit_code) == (2, 1, 1, 1)
    task = row(app.engine, task_id)
    assert task.status == DEAD
    assert task.attempts == 2
    assert [a.outcome for a in history(app.engine, task_id)] == ["retry", "retry"]


def test_fail_sends_the_task_to_the_dlq_at_once(db_url: str) -> None:
    app = new_app(db_url)

    @app.task(max_attempts=5)
    def hopeless(order: int) -> None:
        raise Fail(f"order {order} does not exist")

    with freeze_time(T0):
        task_id = app.enqueue("hopeless", {"order": 7})
        summary = run(app, W)
    assert (summary.claimed, summary.retried, summary.dead, summary.exit_code) == (1, 0, 1, 1)
    task = row(app.engine, task_id)
    assert task.status == DEAD
    assert task.attempts == 1
    assert task.finished_at == T0
    assert task.claimable_at is None
    assert task.last_error == "Fail: order 7 does not exist"
    assert task.last_traceback.startswith("Traceback (most recent call last):")
    assert "Fail: order 7 does not exist" in task.last_traceback
    [attempt] = history(app.engine, task_id)
    assert (attempt.outcome, attempt.error) == ("failed", "Fail: order 7 does not exist")


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


@pytest.mark.parametrize(
    ("exc", "starts", "ends"),
    [
        (BrokenStr(), "BrokenStr: ", ""),
        (ValueError("HEAD" + "é" * 5_000_000 + "TAIL"), "ValueError: HEADé", "TAIL"),
        (RuntimeError("out: \udcff\udcfe!"), "RuntimeError: out: ", "!"),
    ],
    ids=["broken-str", "10MB", "surrogates"],
)
def test_any_failure_is_recorded_bounded(
    db_url: str, exc: Exception, starts: str, ends: str
) -> None:
    app = new_app(db_url)

    @app.task(max_attempts=2, backoff=60)
    def bad() -> None:
        raise exc

    with freeze_time(T0):
        task_id = app.enqueue("bad")
        summary = run_bounded(app)
    assert summary.retried == 1
    task = row(app.engine, task_id)
    assert task.status == RETRYING
    assert task.last_error.startswith(starts) and task.last_error.endswith(ends)
    assert len(task.last_error.encode()) <= MAX_TEXT_BYTES
    assert len(task.last_traceback.encode()) <= MAX_TEXT_BYTES
    assert "Traceback" in task.last_traceback
    [attempt] = history(app.engine, task_id)
    assert attempt.error == task.last_error


@pytest.mark.parametrize(
    "options",
    [{"backoff": lambda attempt: float("inf")}, {"backoff": lambda attempt: 1e12}],
    ids=["inf", "huge"],
)
def test_an_enormous_backoff_cannot_stall_the_run(db_url: str, options: dict[str, Any]) -> None:
    app = new_app(db_url)

    @app.task(max_attempts=3, **options)
    def later() -> None:
        raise ValueError("not yet")

    @app.task(max_attempts=3)
    def much_later() -> None:
        raise Retry(delay=1e12)

    with freeze_time(T0):
        ids = [app.enqueue("later"), app.enqueue("much_later")]
        summary = run_bounded(app)
    assert summary.retried == 2
    for task_id in ids:
        task = row(app.engine, task_id)
        assert task.status == RETRYING
        assert task.run_at > T0 + timedelta(days=365)


def test_a_timeout_task_whose_app_cannot_be_imported_again_fails_instead_of_hanging(
    db_url: str,
) -> None:
    # This App lives in a local variable: a child process could not import it.
    app = new_app(db_url)

    @app.task(timeout=30, max_attempts=1)
    def bounded_task() -> None: ...

    with freeze_time(T0):
        task_id = app.enqueue("bounded_task")
        summary = run_bounded(app)
    assert (summary.claimed, summary.dead, summary.exit_code) == (1, 1, 1)
    task = row(app.engine, task_id)
    assert task.status == DEAD
    assert "child process" in task.last_error


# -- leases ----------------------------------------------------------------------------------


def test_an_expired_lease_is_reclaimed_and_the_lost_attempt_recorded(db_url: str) -> None:
    app = new_app(db_url)
    ran: list[int] = []

    @app.task(lease=30, max_attempts=3)
    def sturdy(n: int) -> None:
        ran.append(n)

    with freeze_time(T0) as frozen:
        task_id = app.enqueue("sturdy", {"n": 1})
        assert [c.id for c in ghost_claim(app, T0).tasks] == [task_id]
        assert row(app.engine, task_id).status == RUNNING

        frozen.move_to(T0 + timedelta(seconds=29))
        early = run(app, W)
        assert (early.claimed, early.lost) == (0, 0)  # still under the ghost's lease
        assert row(app.engine, task_id).worker == "ghost"

        frozen.move_to(T0 + timedelta(seconds=31))
        summary = run(app, W)
    assert (summary.claimed, summary.lost, summary.succeeded, summary.dead) == (1, 1, 1, 0)
    assert summary.exit_code == 0
    assert ran == [1]
    task = row(app.engine, task_id)
    assert task.status == SUCCEEDED
    assert task.attempts == 2
    lost, done = history(app.engine, task_id)
    assert (lost.attempt, lost.outcome, lost.worker) == (1, "lost", "ghost")
    assert lost.started_at == T0
    assert lost.finished_at == T0 + timedelta(seconds=31)
    assert "lease expired" in lost.error
    assert (done.attempt, done.outcome, done.worker) == (2, "succeeded", "w1")


def test_an_expired_lease_with_no_attempt_left_is_dead_without_running(db_url: str) -> None:
    app = new_app(db_url)
    ran: list[int] = []

    @app.task(lease=30, max_attempts=1)
    def once(n: int) -> None:
        ran.append(n)

    with freeze_time(T0) as frozen:
        task_id = app.enqueue("once", {"n": 1})
        ghost_claim(app, T0)
        frozen.move_to(T0 + timedelta(seconds=31))
        summary = run(app, W)
    assert ran == []
    assert (summary.claimed, summary.lost, summary.dead, summary.exit_code) == (0, 1, 1, 1)
    task = row(app.engine, task_id)
    assert task.status == DEAD
    assert task.attempts == 1
    assert task.finished_at == T0 + timedelta(seconds=31)
    assert (task.claimable_at, task.claim_token) == (None, None)
    assert "lease expired" in task.last_error
    [lost] = history(app.engine, task_id)
    assert (lost.outcome, lost.worker) == ("lost", "ghost")
    assert "lease expired" in lost.error


def test_a_stale_claim_cannot_overwrite_the_newer_claim(db_url: str) -> None:
    app = new_app(db_url)

    @app.task(lease=30, max_attempts=3)
    def fenced() -> None: ...

    engine = app.engine
    with freeze_time(T0):
        task_id = app.enqueue("fenced")
    [old] = ghost_claim(app, T0, worker="old").tasks
    later = T0 + timedelta(seconds=31)
    batch = ghost_claim(app, later, worker="new")
    [new] = batch.tasks
    assert batch.lost == 1
    assert old.token != new.token
    assert (old.attempt, new.attempt) == (1, 2)

    # The old run comes back to life and reports, renews and releases: nothing changes.
    stale_done = store.Ended(old, "succeeded", SUCCEEDED, later)
    stale_dead = store.Ended(old, "failed", DEAD, later, None, "late failure", "tb")
    at = later + timedelta(seconds=1)
    assert store.record(engine, [stale_done], now=at, worker="old") == set()
    assert store.record(engine, [stale_dead], now=at, worker="old") == set()
    store.renew(engine, [old], {"fenced": 3600}, at)
    assert store.release(engine, [old], at) == 0
    task = row(engine, task_id)
    assert task.status == RUNNING
    assert task.claim_token == new.token
    assert task.worker == "new"
    assert task.attempts == 2
    assert task.lease_until == later + timedelta(seconds=30)
    assert task.last_error is None
    assert [(a.attempt, a.outcome) for a in history(engine, task_id)] == [(1, "lost")]

    # The current claim still records its own outcome.
    done = store.Ended(new, "succeeded", SUCCEEDED, at)
    assert store.record(engine, [done], now=at, worker="new") == {task_id}
    assert row(engine, task_id).status == SUCCEEDED
    assert [(a.attempt, a.outcome, a.worker) for a in history(engine, task_id)] == [
        (1, "lost", "old"),
        (2, "succeeded", "new"),
    ]


# -- what a run claims -----------------------------------------------------------------------


def test_claim_order_is_priority_then_run_at_then_enqueue_order(db_url: str) -> None:
    app = new_app(db_url)
    order: list[str] = []

    @app.task
    def step(label: str) -> None:
        order.append(label)

    with freeze_time(T0):
        plan = [
            ("a", 0, -10),
            ("b", 5, -1),
            ("c", 0, -20),
            ("d", -3, -100),
            ("e", 5, -1),
            ("f", 0, -10),
            ("future", 100, 10),
        ]
        for label, priority, offset in plan:
            app.enqueue(
                "step",
                {"label": label},
                priority=priority,
                run_at=T0 + timedelta(seconds=offset),
            )
        first = run(app, RunOptions(worker="w1", max_tasks=3))
        assert order == ["b", "e", "c"]  # the limit takes the first three in claim order
        assert first.claimed == 3
        run(app, W)
    assert order == ["b", "e", "c", "a", "f", "d"]
    assert count(app.engine, tasks.c.status == PENDING) == 1  # "future" is not due


def test_claims_share_one_select_and_bind_their_own_time_and_limit(db_url: str) -> None:
    """The claim's statements are built once (store.claim_query) with ``now`` and the limit as
    bind parameters: a later claim must see its own time and limit, not the first one's."""
    app = new_app(db_url)

    @app.task
    def step(n: int) -> None: ...

    with freeze_time(T0):
        ids = [app.enqueue("step", {"n": n}, run_at=T0 + timedelta(minutes=n)) for n in range(5)]

    def claim(at: datetime, limit: int) -> list[int]:
        batch = store.claim(
            app.engine,
            names=["step"],
            queues=[],
            limit=limit,
            worker="w1",
            leases={"step": 3600.0},
            now=at,
        )
        return [json.loads(t.payload)["n"] for t in batch.tasks]

    assert claim(T0, 5) == [0]
    built = store.claim_query.cache_info().misses
    assert claim(T0 + timedelta(minutes=3), 1) == [1]  # due: 1, 2, 3; the limit takes one
    assert claim(T0 + timedelta(minutes=3), 5) == [2, 3]
    assert claim(T0 + timedelta(minutes=10), 5) == [4]
    assert store.claim_query.cache_info().misses == built
    assert row(app.engine, ids[4]).lease_until == T0 + timedelta(minutes=10, hours=1)


def test_the_full_priority_range_is_stored_and_ordered(db_url: str) -> None:
    app = new_app(db_url)
    order: list[int] = []

    @app.task
    def prio(p: int) -> None:
        order.append(p)

    extremes = [0, -(2**31), 2**31 - 1, -1, 1]
    with freeze_time(T0):
        for p in extremes:
            app.enqueue("prio", {"p": p}, priority=p)
        assert run(app, W).succeeded == 5
    assert order == sorted(extremes, reverse=True)


def test_queue_filter(db_url: str) -> None:
    app = new_app(db_url)
    ran: list[str] = []

    @app.task(queue="mail")
    def job(label: str) -> None:
        ran.append(label)

    with freeze_time(T0):
        app.enqueue("job", {"label": "mail"})
        app.enqueue("job", {"label": "sms"}, queue="sms")
        app.enqueue("job", {"label": "batch"}, queue="batch")
        summary = run(app, RunOptions(worker="w1", queues=("sms", "batch")))
        assert sorted(ran) == ["batch", "sms"]
        assert summary.claimed == 2
        with app.engine.connect() as conn:
            left = conn.execute(select(tasks.c.queue).where(tasks.c.status == PENDING)).all()
        assert [r.queue for r in left] == ["mail"]
        run(app, RunOptions(worker="w1", queues=("mail",)))
    assert sorted(ran) == ["batch", "mail", "sms"]


def test_a_run_claims_only_the_task_names_its_app_registers(db_url: str) -> None:
    app = new_app(db_url)
    other = new_app(db_url)
    ran: list[str] = []

    @app.task
    def mine() -> None:
        ran.append("mine")

    @other.task(priority=10)
    def theirs() -> None:
        ran.append("theirs")

    with freeze_time(T0):
        foreign = other.enqueue("theirs")
        app.enqueue("mine")
        summary = run(app, W)
    assert ran == ["mine"]
    assert summary.claimed == 1
    task = row(app.engine, foreign)
    assert (task.status, task.attempts, task.worker) == (PENDING, 0, None)
    assert history(app.engine, foreign) == []
    with pytest.raises(UnknownTask):
        app.enqueue("theirs")


def test_max_tasks_stops_claiming_and_leaves_the_rest_due(db_url: str) -> None:
    app = new_app(db_url)
    ran: list[int] = []

    @app.task
    def job(n: int) -> None:
        ran.append(n)

    with freeze_time(T0):
        for n in range(5):
            app.enqueue("job", {"n": n})
        summary = run(app, RunOptions(worker="w1", max_tasks=2, concurrency=2))
        assert (summary.claimed, summary.succeeded) == (2, 2)
        assert sorted(ran) == [0, 1]
        assert count(app.engine, tasks.c.status == PENDING, tasks.c.run_at <= T0) == 3
        assert run(app, RunOptions(worker="w1", max_tasks=10)).claimed == 3
    assert sorted(ran) == [0, 1, 2, 3, 4]


def test_a_run_with_nothing_due(db_url: str) -> None:
    app = new_app(db_url)

    @app.task
    def idle() -> None: ...

    with freeze_time(T0):
        app.enqueue("idle", delay=60)
        summary = run(app, W)
    assert (summary.claimed, summary.exit_code) == (0, 0)
    assert "claimed 0" in summary.line()


# -- run records and exit codes --------------------------------------------------------------


def mixed_app(db_url: str) -> App:
    app = new_app(db_url)

    @app.task
    def ok() -> None: ...

    @app.task(max_attempts=3, backoff=60)
    def flaky() -> None:
        raise ValueError("try later")

    @app.task
    def doomed() -> None:
        raise Fail("never")

    return app


def test_each_run_is_recorded_with_its_counts_and_exit_code(db_url: str) -> None:
    app = mixed_app(db_url)
    with freeze_time(T0):
        for name in ("ok", "flaky", "doomed"):
            app.enqueue(name)
        summary = run(app, W)
    assert (summary.claimed, summary.succeeded, summary.retried, summary.dead) == (3, 1, 1, 1)
    assert summary.exit_code == 1
    with app.engine.connect() as conn:
        [record] = conn.execute(select(runs)).all()
    assert record.id == summary.run_id
    assert (record.started_at, record.finished_at) == (T0, T0)
    assert record.host == socket.gethostname()
    assert record.worker == "w1"
    assert record.pid == os.getpid()
    assert (record.claimed, record.succeeded, record.retried, record.dead) == (3, 1, 1, 1)
    assert record.exit_code == 1
    assert f"tickrun run {summary.run_id}: claimed 3, succeeded 1, retried 1, dead 1" in (
        summary.line()
    )


@pytest.mark.parametrize(
    ("names", "fail_on", "code"),
    [
        (["ok"], "dead", 0),
        (["ok"], "failure", 0),
        (["ok", "flaky"], "dead", 0),
        (["ok", "flaky"], "failure", 1),
        (["ok", "flaky"], "never", 0),
        (["ok", "doomed"], "dead", 1),
        (["ok", "doomed"], "failure", 1),
        (["ok", "doomed"], "never", 0),
    ],
)
def test_exit_code_follows_fail_on(db_url: str, names: list[str], fail_on: str, code: int) -> None:
    app = mixed_app(db_url)
    with freeze_time(T0):
        for name in names:
            app.enqueue(name)
        summary = Runner(app, app.engine, RunOptions(worker="w1", fail_on=fail_on)).run()
    assert summary.exit_code == code
    with app.engine.connect() as conn:
        assert conn.execute(select(runs.c.exit_code)).scalar_one() == code


def test_fail_on_must_be_known(db_url: str) -> None:
    app = mixed_app(db_url)
    with pytest.raises(ValueError, match="fail_on"):
        run(app, RunOptions(fail_on="sometimes"))


# -- enqueueing ------------------------------------------------------------------------------


def simple_app(db_url: str) -> App:
    app = new_app(db_url)

    @app.task
    def hello(name: str) -> None: ...

    return app


def test_enqueue_in_a_connection_transaction(db_url: str) -> None:
    app = simple_app(db_url)
    engine = app.engine
    with engine.connect() as conn:
        trans = conn.begin()
        task_id = app.enqueue("hello", {"name": "rolled back"}, connection=conn)
        inside = conn.execute(select(func.count()).select_from(tasks)).scalar_one()
        trans.rollback()
    assert inside == 1
    assert count(engine) == 0

    with engine.connect() as conn, conn.begin():
        task_id = app.enqueue("hello", {"name": "kept"}, connection=conn)
    assert count(engine) == 1
    assert row(engine, task_id).payload == '{"name":"kept"}'


def test_enqueue_with_a_key_in_a_connection_transaction(db_url: str) -> None:
    app = simple_app(db_url)
    engine = app.engine
    with engine.connect() as conn:
        trans = conn.begin()
        first = app.enqueue_result("hello", {"name": "a"}, key="k", connection=conn)
        again = app.enqueue_result("hello", {"name": "b"}, key="k", connection=conn)
        trans.rollback()
    assert first.duplicate is False
    assert again == (first.id, True)
    assert count(engine) == 0

    with engine.connect() as conn, conn.begin():
        kept = app.enqueue_result("hello", {"name": "c"}, key="k", connection=conn)
    assert kept.duplicate is False
    assert app.enqueue_result("hello", {"name": "d"}, key="k") == (kept.id, True)
    assert count(engine) == 1


def test_enqueue_in_an_orm_session(db_url: str) -> None:
    app = simple_app(db_url)
    engine = app.engine
    with Session(engine) as session:
        app.enqueue("hello", {"name": "rolled back"}, connection=session)
        session.rollback()
    assert count(engine) == 0

    with Session(engine) as session, session.begin():
        task_id = app.enqueue("hello", {"name": "kept"}, connection=session)
    assert count(engine) == 1
    assert row(engine, task_id).status == PENDING

    with pytest.raises(Exception, match="Connection or Session"):
        app.enqueue("hello", {"name": "x"}, connection="not a connection")


def test_a_bad_payload_raises_before_touching_the_transaction(db_url: str) -> None:
    app = simple_app(db_url)
    with app.engine.connect() as conn, conn.begin():
        app.enqueue("hello", {"name": "ok"}, connection=conn)
        with pytest.raises(PayloadError):
            app.enqueue("hello", {"nom": "x"}, connection=conn)
    assert count(app.engine) == 1


def test_enqueue_before_tickrun_init_raises_the_schema_error(bare_url: str) -> None:
    """Not the driver's "no such table" with the SQL: tickrun's SchemaError, saying what to do."""
    app = simple_app(bare_url)
    calls = {
        "enqueue": lambda: app.enqueue("hello", {"name": "a"}),
        "enqueue with a key": lambda: app.enqueue("hello", {"name": "a"}, key="k"),
        "enqueue_many": lambda: app.enqueue_many([("hello", {"name": "a"})]),
        "status": lambda: app.status(1),
    }
    for what, call in calls.items():
        with pytest.raises(SchemaError, match="no tickrun schema: run `tickrun init`") as info:
            call()
        assert "\n" not in str(info.value) and "INSERT" not in str(info.value), what
        assert isinstance(info.value.__cause__, DBAPIError), what  # the driver's error, kept
    with (
        app.engine.connect() as conn,
        pytest.raises(SchemaError, match="tickrun init"),
        conn.begin(),
    ):
        app.enqueue("hello", {"name": "a"}, connection=conn)
    init_schema(app.engine)
    assert app.enqueue("hello", {"name": "a"}) == 1


def test_idempotency_key_returns_the_existing_task(db_url: str) -> None:
    app = simple_app(db_url)

    @app.task
    def other(name: str) -> None: ...

    with freeze_time(T0):
        first = app.enqueue_result("hello", {"name": "one"}, key="welcome:42")
        second = app.enqueue_result("hello", {"name": "two"}, key="welcome:42", delay=99)
        assert app.enqueue("hello", {"name": "three"}, key="welcome:42") == first.id
        # The key identifies the task whatever its name or status.
        assert app.enqueue_result("other", {"name": "x"}, key="welcome:42") == (first.id, True)
        run(app, W)
        assert row(app.engine, first.id).status == SUCCEEDED
        after = app.enqueue_result("hello", {"name": "four"}, key="welcome:42")
        fresh = app.enqueue_result("hello", {"name": "five"}, key="welcome:43")
    assert first.duplicate is False
    assert second == (first.id, True)
    assert after == (first.id, True)
    assert fresh.duplicate is False and fresh.id != first.id
    task = row(app.engine, first.id)
    assert task.payload == '{"name":"one"}'
    assert task.run_at == T0
    assert count(app.engine) == 2


def test_enqueue_many(db_url: str) -> None:
    app = simple_app(db_url)
    ran: list[str] = []

    @app.task(priority=3)
    def shout(word: str) -> None:
        ran.append(word.upper())

    with freeze_time(T0):
        ids = app.enqueue_many(
            [("hello", {"name": "a"}), ("shout", {"word": "b"}), ("hello", {"name": "c"})]
        )
        assert ids == sorted(ids) and len(set(ids)) == 3
        got = [row(app.engine, i) for i in ids]
        assert [(t.name, t.payload, t.priority, t.run_at) for t in got] == [
            ("hello", '{"name":"a"}', 0, T0),
            ("shout", '{"word":"b"}', 3, T0),
            ("hello", '{"name":"c"}', 0, T0),
        ]
        assert app.enqueue_many([]) == []

        # One bad item: nothing is inserted.
        for bad in ([("hello", {"name": "d"}), ("hello", {})], [("nope", {})]):
            with pytest.raises((PayloadError, UnknownTask)):
                app.enqueue_many(bad)
        assert count(app.engine) == 3

        with app.engine.connect() as conn:
            trans = conn.begin()
            assert len(app.enqueue_many([("shout", {"word": "x"})], connection=conn)) == 1
            trans.rollback()
        assert count(app.engine) == 3
        assert run(app, W).succeeded == 3
    assert ran == ["B"]


def test_enqueue_many_stores_every_payload_exactly_in_the_given_order(db_url: str) -> None:
    app = simple_app(db_url)

    @app.task(queue="slow", max_attempts=2)
    def other(name: str) -> None: ...

    tricky = ['quote " backslash \\ slash /', "new\nline\ttab", "é ü 日本 🎉"]
    tricky += ["\u0000 nul", "", "{}"]
    items = [("other" if i % 3 else "hello", {"name": f"{tricky[i % 6]} {i}"}) for i in range(300)]
    with freeze_time(T0):
        ids = app.enqueue_many(items)
        same = app.enqueue_many([("hello", {"name": "same"})] * 3)  # no column varies
    got = [row(app.engine, i) for i in ids + same]
    assert [(t.name, t.payload) for t in got] == [
        (name, json.dumps(payload, separators=(",", ":")))
        for name, payload in items + [("hello", {"name": "same"})] * 3
    ]
    assert {(t.name, t.queue, t.max_attempts) for t in got} == {
        ("hello", "default", 5),
        ("other", "slow", 2),
    }
    assert {(t.status, t.run_at, t.claimable_at, t.created_at, t.key) for t in got} == {
        (PENDING, T0, T0, T0, None)
    }


def test_enqueue_run_at_and_delay_are_stored_in_utc(db_url: str) -> None:
    app = simple_app(db_url)
    plus2 = datetime(2026, 7, 1, 11, 30, tzinfo=UTC).astimezone(ZoneInfo("Europe/Paris"))
    with freeze_time(T0):
        at = app.enqueue("hello", {"name": "a"}, run_at=plus2)
        later = app.enqueue("hello", {"name": "b"}, delay=timedelta(minutes=5))
    assert row(app.engine, at).run_at == datetime(2026, 7, 1, 11, 30, tzinfo=UTC)
    assert row(app.engine, later).run_at == T0 + timedelta(minutes=5)


# An enqueue outside the caller's transaction goes straight through the DB-API driver
# (dialects.insert_one): these hold it to what SQLAlchemy would have done.


def _admin(db_url: str) -> Engine:
    return create_engine(db_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)


def test_a_refused_enqueue_raises_sqlalchemys_error_and_leaves_the_connection_clean(
    db_url: str, backend: str
) -> None:
    app = simple_app(db_url)
    app.enqueue("hello", {"name": "before"})  # the pool now holds a used connection
    rename = "ALTER TABLE {} RENAME TO {}"
    with _admin(db_url).connect() as admin:
        admin.exec_driver_sql(rename.format("tickrun_tasks", "tickrun_tasks_away"))
        try:
            with pytest.raises(DBAPIError, match="tickrun_tasks") as failed:
                app.enqueue("hello", {"name": "refused"})
        finally:
            admin.exec_driver_sql(rename.format("tickrun_tasks_away", "tickrun_tasks"))
    assert failed.value.connection_invalidated is False
    assert app.enqueue("hello", {"name": "after"}) > 0
    # The pooled connection went back transactional: this insert can still be rolled back.
    with app.engine.connect() as conn:
        trans = conn.begin()
        app.enqueue("hello", {"name": "rolled back"}, connection=conn)
        trans.rollback()
    with app.engine.connect() as conn:
        names = conn.execute(select(tasks.c.payload).order_by(tasks.c.id)).scalars().all()
    assert names == ['{"name":"before"}', '{"name":"after"}']


@pytest.mark.parametrize("db_url", ["postgresql", "mysql"], indirect=True)
def test_an_enqueue_on_a_connection_the_server_dropped_fails_once_then_reconnects(
    db_url: str, backend: str
) -> None:
    app = simple_app(db_url)
    app.enqueue("hello", {"name": "before"})
    with app.engine.connect() as one, app.engine.connect() as two:  # two pooled connections
        one.exec_driver_sql("SELECT 1")
        two.exec_driver_sql("SELECT 1")
    assert app.engine.pool.checkedin() == 2
    with _admin(db_url).connect() as admin:
        if backend == "postgresql":
            admin.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        else:
            ids = admin.exec_driver_sql(
                "SELECT id FROM information_schema.processlist"
                " WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            ).scalars()
            for connection_id in ids.all():
                admin.exec_driver_sql(f"KILL CONNECTION {connection_id}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "Can't invalidate an already-closed connection"
        with pytest.raises(DBAPIError) as failed:
            app.enqueue("hello", {"name": "lost"})
    assert failed.value.connection_invalidated is True
    # The dead connection left the pool, and so did any other connection of that server.
    assert app.enqueue("hello", {"name": "after"}) > 0
    assert app.engine.pool.checkedin() == 1
    assert count(app.engine) == 2


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////nonexistent-tickrun-dir/tasks.db",
        "postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
        "mysql+pymysql://root@127.0.0.1:1/nowhere",
    ],
)
@pytest.mark.parametrize("key", [None, "k"])
def test_an_enqueue_that_cannot_connect_raises_sqlalchemys_error(url: str, key: str | None) -> None:
    app = App(database_url=url)

    @app.task
    def hello(name: str) -> None: ...

    with pytest.raises(DBAPIError):
        app.enqueue("hello", {"name": "x"}, key=key)


@pytest.mark.parametrize("db_url", ["postgresql", "mysql"], indirect=True)
@pytest.mark.parametrize("column, bad", [("name", "n" * 201), ("priority", 2**31)])
def test_a_bulk_insert_refuses_a_value_its_column_cannot_hold(
    db_url: str, column: str, bad: Any
) -> None:
    """As a single insert would: never truncated or clamped (SQLite has no such limits)."""
    app = simple_app(db_url)
    with freeze_time(T0):
        rows = [app.task_row("hello", {"name": str(i)}) for i in range(3)]
    rows[1][column] = bad
    with pytest.raises(DBAPIError), app.engine.begin() as conn:
        dialects.insert_many(conn, tasks, rows)
    assert count(app.engine) == 0


def test_a_bulk_enqueue_larger_than_one_statement_is_split_in_one_transaction(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = simple_app(db_url)
    monkeypatch.setattr(dialects, "BULK_DOCUMENT_BYTES", 500)
    items = [("hello", {"name": f"{i:03d} " + "x" * 40}) for i in range(60)]
    documents: list[int] = []

    def count_documents(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.startswith("INSERT INTO"):
            documents.append(len(str(params)))

    event.listen(app.engine, "before_cursor_execute", count_documents)
    try:
        ids = app.enqueue_many(items)
    finally:
        event.remove(app.engine, "before_cursor_execute", count_documents)
    assert len(documents) > 5 and max(documents) < 1000
    assert len(set(ids)) == 60
    assert [json.loads(row(app.engine, i).payload) for i in ids] == [p for _, p in items]
    with app.engine.connect() as conn:
        trans = conn.begin()
        app.enqueue_many(items, connection=conn)
        trans.rollback()
    assert count(app.engine) == 60


@pytest.mark.parametrize("db_url", ["mysql"], indirect=True)
def test_a_bulk_enqueue_larger_than_the_servers_packet_limit_goes_in(db_url: str) -> None:
    app = simple_app(db_url)
    with app.engine.connect() as conn:
        limit = conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one()
    n = limit // 8000 + 10
    ids = app.enqueue_many([("hello", {"name": f"{i} " + "x" * 8000}) for i in range(n)])
    assert len(set(ids)) == n == count(app.engine)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_an_enqueue_interrupted_mid_statement_keeps_its_exception_and_the_pool_transactional(
    db_url: str,
) -> None:
    """A signal handler raising while the INSERT waits (here on a table lock) must surface as
    itself, and the autocommit connection it interrupted must not return to the pool."""
    import signal

    class Interrupted(Exception):
        pass

    def interrupt(*_: Any) -> None:
        raise Interrupted

    app = simple_app(db_url)
    app.enqueue("hello", {"name": "before"})
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with _admin(db_url).connect() as locker:
            locker.exec_driver_sql("BEGIN")
            locker.exec_driver_sql("LOCK TABLE tickrun_tasks IN ACCESS EXCLUSIVE MODE")
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            with pytest.raises(Interrupted):
                app.enqueue("hello", {"name": "interrupted"})
            locker.exec_driver_sql("ROLLBACK")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    for _ in range(3):  # whichever pooled connection a transaction gets, it is transactional
        with app.engine.connect() as conn:
            trans = conn.begin()
            app.enqueue("hello", {"name": "rolled back"}, connection=conn)
            trans.rollback()
    with app.engine.connect() as conn:
        payloads = conn.execute(select(tasks.c.payload)).scalars().all()
    # The interrupted INSERT may still have run once the lock was gone (like a request whose
    # answer was lost), but nothing rolled back may be there.
    assert '{"name":"before"}' in payloads
    assert '{"name":"rolled back"}' not in payloads


def test_a_bulk_enqueue_split_in_several_statements_is_all_or_nothing(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = simple_app(db_url)
    monkeypatch.setattr(dialects, "BULK_DOCUMENT_BYTES", 200)
    split = dialects._json_documents

    def last_one_refused(rows: list[list[Any]]) -> Iterator[str]:
        yield from split(rows)
        yield "[[]]"  # a row without its payload: NOT NULL refuses it

    monkeypatch.setattr(dialects, "_json_documents", last_one_refused)
    with pytest.raises(DBAPIError):
        app.enqueue_many([("hello", {"name": f"{i:03d} " + "x" * 40}) for i in range(20)])
    assert count(app.engine) == 0


# -- the start of a run on PostgreSQL ------------------------------------------------------


def test_a_postgresql_engine_starts_without_looking_up_hstore(servers, monkeypatch) -> None:  # noqa: ANN001
    """SQLAlchemy's psycopg dialect looks the hstore type up on an engine's first connection
    (a savepoint, a catalog query and its release); tickrun stores none, so every cron tick
    spares those round trips. Every statement psycopg runs is recorded, then run as usual."""
    import psycopg

    # A URL of its own: open_engine keeps one engine per URL, and this one must be new.
    url = make_url(servers.get("postgresql")).update_query_dict({"application_name": "hstore"})
    statements: list[tuple[str, Any]] = []
    execute = psycopg.Cursor.execute

    def recorded(self, query, params=None, **kwargs):  # noqa: ANN001, ANN202
        statements.append((str(query), params))
        return execute(self, query, params, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", recorded)
    engine = open_engine(url.render_as_string(hide_password=False))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()
    assert any("SELECT 1" in sql for sql, _ in statements)  # the spy saw the connection
    assert not [s for s in statements if "hstore" in repr(s).lower()], statements


# -- psycopg's prepared statements (PgBouncer's transaction pooling cannot carry them) --------


def test_psycopg_prepares_nothing_unless_the_url_asks(servers) -> None:  # noqa: ANN001
    base = make_url(servers.get("postgresql"))

    def prepared_after_repeats(url: str) -> tuple[int | None, int]:
        """The pooled connection's threshold, and the statements the server holds prepared
        for it after ten keyless enqueues (the raw DB-API path) and ten keyed ones."""
        app = simple_app(url)
        for n in range(10):
            app.enqueue("hello", {"name": str(n)})
            app.enqueue("hello", {"name": str(n)}, key=f"{url}:{n}")
        with app.engine.connect() as conn:
            threshold = conn.connection.driver_connection.prepare_threshold
            held = conn.execute(text("SELECT count(*) FROM pg_prepared_statements"))
            return threshold, held.scalar_one()

    assert prepared_after_repeats(base.render_as_string(hide_password=False)) == (None, 0)
    for value in ("none", "None", ""):
        url = base.update_query_dict({"prepare_threshold": value})
        assert prepared_after_repeats(url.render_as_string(hide_password=False)) == (None, 0)
    # Turned back on (for a direct connection): psycopg prepares what runs that often.
    url = base.update_query_dict({"prepare_threshold": "2"})
    threshold, held = prepared_after_repeats(url.render_as_string(hide_password=False))
    assert threshold == 2 and held >= 2

    for value in ("often", "-1", "2.5"):
        url = base.update_query_dict({"prepare_threshold": value})
        with pytest.raises(ConfigError, match="prepare_threshold"):
            open_engine(url.render_as_string(hide_password=False))
