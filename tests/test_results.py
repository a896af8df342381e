"""Results, app.status(), follow-up tasks (ctx.enqueue) and ctx.connection(), in-process on
every database with a frozen clock. Crashes between a handler's return and its recorded
outcome are in tests/test_followups_crash.py (real processes)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy import update as sql_update

from tests.conftest import write_app
from tests.helpers.apps import T0, W, new_app
from tickrun import App, PayloadError, TaskContext, TaskStatus, UnknownTask, UsageError
from tickrun.cli import cli
from tickrun.execution import MAX_RESULT_BYTES, encode_result
from tickrun.lifecycle import DEAD, PENDING, RETRYING, SUCCEEDED
from tickrun.maintenance import prune
from tickrun.runner import RunOptions, run
from tickrun.schema import SCHEMA_VERSION, tasks


def children(engine: Engine, parent: int) -> list[Any]:
    with engine.connect() as conn:
        stmt = select(tasks).where(tasks.c.parent_id == parent).order_by(tasks.c.id)
        return list(conn.execute(stmt))


def count(engine: Engine, *where: Any) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(tasks).where(*where)).scalar_one()


def show_json(db_url: str, task_id: int) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["--db", db_url, "show", str(task_id), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def show_text(db_url: str, task_id: int) -> str:
    result = CliRunner().invoke(cli, ["--db", db_url, "show", str(task_id)])
    assert result.exit_code == 0, result.output
    return result.output


# -- results -------------------------------------------------------------------------------------


def test_a_return_value_is_stored_and_shown(db_url: str) -> None:
    app = new_app(db_url)

    @app.task
    def export(user_id: int) -> dict[str, Any]:
        return {"url": f"https://files.example/{user_id}.csv", "rows": 3, "ok": True}

    @app.task
    def nothing() -> None:
        return None

    with freeze_time(T0):
        task_id = app.enqueue("export", {"user_id": 7})
        quiet = app.enqueue("nothing")
        run(app, W)
    expected = {"url": "https://files.example/7.csv", "rows": 3, "ok": True}
    status = app.status(task_id)
    assert status is not None and status.result == expected
    assert show_json(db_url, task_id)["result"] == expected
    text = show_text(db_url, task_id)
    assert "result:" in text and '"url": "https://files.example/7.csv"' in text
    none = app.status(quiet)
    assert none is not None and none.status == SUCCEEDED and none.result is None
    assert show_json(db_url, quiet)["result"] is None
    assert "result:" not in show_text(db_url, quiet)


@pytest.mark.parametrize(
    "value, says",
    [
        ({1, 2}, "not JSON-serialisable"),
        (float("nan"), "not JSON-serialisable"),
        ("x" * (MAX_RESULT_BYTES + 1), f"over the {MAX_RESULT_BYTES} bytes"),
    ],
    ids=["set", "nan", "too-large"],
)
def test_a_result_that_cannot_be_stored_fails_the_attempt(
    db_url: str, value: Any, says: str
) -> None:
    app = new_app(db_url)

    @app.task(max_attempts=2, context=True)
    def odd(ctx: TaskContext) -> Any:
        ctx.enqueue("odd")  # and a failed attempt leaves no follow-up
        return value

    with freeze_time(T0):
        task_id = app.enqueue("odd")
        summary = run(app, W)
    assert (summary.succeeded, summary.retried) == (0, 1)
    status = app.status(task_id)
    assert status is not None and status.status == RETRYING and status.result is None
    assert status.error is not None and says in status.error
    assert status.error.startswith("ValueError: the handler's return value")
    assert children(app.engine, task_id) == []


def test_a_result_at_the_bound_is_stored_whole(db_url: str) -> None:
    app = new_app(db_url)
    big = "é" * ((MAX_RESULT_BYTES - 2) // 6)  # JSON escapes each as \u00e9: 6 bytes

    @app.task
    def large() -> str:
        return big

    assert len(encode_result(big) or "") <= MAX_RESULT_BYTES
    with freeze_time(T0):
        task_id = app.enqueue("large")
        run(app, W)
    status = app.status(task_id)
    assert status is not None and status.result == big


def test_a_timeout_task_returns_its_result_from_the_child_process(
    db_url: str, tmp_path: Path
) -> None:
    ref = write_app(
        tmp_path,
        """
        from tickrun import App

        app = App()

        @app.task(timeout=60)
        def square(n):
            return {"square": n * n}
        """,
        module="child_results",
    )
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        from tickrun.loader import load_app

        app = load_app(ref)
        app.use_database(db_url)
        task_id = app.enqueue("square", {"n": 12})
        run(app, W)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("child_results", None)
    status = app.status(task_id)
    assert status is not None and status.result == {"square": 144}


# -- app.status ----------------------------------------------------------------------------------


def test_status_by_id_and_by_key_through_the_lifecycle(db_url: str) -> None:
    app = new_app(db_url)

    @app.task(max_attempts=2, backoff=10)
    def flaky(n: int) -> int:
        if n == 0:
            raise ConnectionError("partner down")
        return n

    with freeze_time(T0):
        task_id = app.enqueue("flaky", {"n": 0}, key="order:1")
        waiting = app.status(task_id)
        assert waiting == app.status(key="order:1")
        assert isinstance(waiting, TaskStatus)
        assert (waiting.status, waiting.attempts, waiting.max_attempts) == (PENDING, 0, 2)
        assert waiting.run_at == T0 and waiting.started_at is None and not waiting.finished
        assert waiting.key == "order:1" and waiting.task == "flaky" and waiting.parent_id is None
        run(app, W)
        retrying = app.status(key="order:1")
        assert retrying is not None and retrying.status == RETRYING
        assert retrying.attempts == 1 and retrying.started_at == T0
        assert retrying.error == "ConnectionError: partner down"
        assert retrying.run_at == T0 + timedelta(seconds=10)
    with freeze_time(T0 + timedelta(seconds=11)):
        run(app, W)
    dead = app.status(task_id)
    assert dead is not None and dead.status == DEAD and dead.finished
    assert dead.finished_at == T0 + timedelta(seconds=11)
    body = dead.as_json()
    assert json.loads(json.dumps(body)) == body
    assert body["status"] == "dead" and body["finished_at"] == "2026-04-06T10:00:11+00:00"
    assert body["finished"] is True


def test_status_of_an_unknown_task_is_none(db_url: str) -> None:
    app = new_app(db_url)
    assert app.status(424242) is None
    assert app.status(key="nobody") is None


@pytest.mark.parametrize(
    "args, kwargs",
    [((), {}), ((1,), {"key": "k"}), (("1",), {}), ((True,), {}), ((), {"key": 5})],
)
def test_status_refuses_bad_arguments(db_url: str, args: Any, kwargs: Any) -> None:
    with pytest.raises(UsageError):
        new_app(db_url).status(*args, **kwargs)


def test_wait_returns_the_finished_status_or_the_last_one_at_the_timeout(db_url: str) -> None:
    app = new_app(db_url)

    @app.task
    def quick() -> str:
        return "done"

    task_id = app.enqueue("quick")
    waited = app.wait(task_id, timeout=0)
    assert waited is not None and waited.status == PENDING
    run(app, W)
    waited = app.wait(task_id, timeout=5)
    assert waited is not None and waited.finished and waited.result == "done"
    assert app.wait(key="never", timeout=0.1) is None


def test_a_result_lives_exactly_as_long_as_its_task(db_url: str) -> None:
    app = new_app(db_url)

    @app.task
    def answer() -> int:
        return 42

    with freeze_time(T0):
        task_id = app.enqueue("answer")
        run(app, W)
    assert prune(app.engine, T0 + timedelta(hours=1), older_than=2 * 3600) == 0
    status = app.status(task_id)
    assert status is not None and status.result == 42
    assert prune(app.engine, T0 + timedelta(hours=3), older_than=2 * 3600) == 1
    assert app.status(task_id) is None


# -- follow-ups: ctx.enqueue ---------------------------------------------------------------------


def chain_app(db_url: str, fail: set[str] | None = None) -> tuple[App, list[str]]:
    """charge -> invoice -> receipt, each step enqueued by the previous one's success."""
    app = new_app(db_url)
    ran: list[str] = []
    failing = fail or set()

    @app.task(context=True, max_attempts=1)
    def charge(ctx: TaskContext, order_id: int) -> dict[str, Any]:
        ran.append("charge")
        ctx.enqueue("invoice", {"order_id": order_id}, key=f"invoice:{order_id}")
        if "charge" in failing:
            raise RuntimeError("card declined")
        return {"charged": order_id}

    @app.task(context=True, max_attempts=1)
    def invoice(ctx: TaskContext, order_id: int) -> None:
        ran.append("invoice")
        ctx.enqueue("receipt", {"order_id": order_id}, priority=5)
        if "invoice" in failing:
            raise RuntimeError("invoice service down")

    @app.task
    def receipt(order_id: int) -> str:
        ran.append("receipt")
        return f"receipt {order_id}"

    return app, ran


def test_a_chain_runs_step_by_step_with_parents_shown(db_url: str) -> None:
    app, ran = chain_app(db_url)
    with freeze_time(T0):
        charge_id = app.enqueue("charge", {"order_id": 9})
        summary = run(app, W)
    assert ran == ["charge", "invoice", "receipt"]
    assert summary.succeeded == 3
    (invoice,) = children(app.engine, charge_id)
    assert (invoice.name, invoice.key, invoice.status) == ("invoice", "invoice:9", SUCCEEDED)
    assert json.loads(invoice.payload) == {"order_id": 9}
    (receipt,) = children(app.engine, invoice.id)
    assert receipt.key == f"tickrun:after:{invoice.id}:1:1" and receipt.priority == 5
    final = app.status(receipt.id)
    assert final is not None and final.result == "receipt 9" and final.parent_id == invoice.id
    follow_up = app.status(key="invoice:9")
    assert follow_up is not None and follow_up.parent_id == charge_id

    parent = show_json(db_url, charge_id)
    assert parent["parent_id"] is None and parent["children"] == [invoice.id]
    middle = show_json(db_url, invoice.id)
    assert middle["parent_id"] == charge_id and middle["children"] == [receipt.id]
    text = show_text(db_url, invoice.id)
    assert re.search(rf"^parent_id\s+{charge_id}$", text, re.M), text
    assert re.search(rf"^children\s+{receipt.id}$", text, re.M), text
    csv_out = CliRunner().invoke(cli, ["--db", db_url, "show", str(invoice.id), "--format", "csv"])
    assert csv_out.exit_code == 0 and "parent_id" in csv_out.output


@pytest.mark.parametrize("step", ["charge", "invoice"])
def test_a_chain_stops_at_its_first_failure(db_url: str, step: str) -> None:
    app, ran = chain_app(db_url, fail={step})
    with freeze_time(T0):
        charge_id = app.enqueue("charge", {"order_id": 9})
        run(app, W)
    if step == "charge":
        assert ran == ["charge"]
        assert children(app.engine, charge_id) == []
        assert count(app.engine) == 1
    else:
        assert ran == ["charge", "invoice"]
        (invoice,) = children(app.engine, charge_id)
        assert invoice.status == DEAD and children(app.engine, invoice.id) == []
        assert count(app.engine) == 2


def test_a_retried_attempt_enqueues_its_follow_ups_once(db_url: str) -> None:
    app = new_app(db_url)
    calls: list[int] = []

    @app.task(context=True, max_attempts=3, backoff=1)
    def step(ctx: TaskContext) -> None:
        calls.append(ctx.attempt)
        ctx.enqueue("after", {"n": 1})
        ctx.enqueue("after", {"n": 2}, delay=60)
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} fails")

    @app.task
    def after(n: int) -> None:
        pass

    with freeze_time(T0):
        parent = app.enqueue("step")
        run(app, W)
        assert children(app.engine, parent) == []
    with freeze_time(T0 + timedelta(seconds=5)):
        run(app, W)
        assert children(app.engine, parent) == []
    with freeze_time(T0 + timedelta(seconds=10)):
        run(app, W)
    assert calls == [1, 2, 3]
    first, second = children(app.engine, parent)
    assert [json.loads(r.payload) for r in (first, second)] == [{"n": 1}, {"n": 2}]
    assert [r.key for r in (first, second)] == [
        f"tickrun:after:{parent}:3:1",
        f"tickrun:after:{parent}:3:2",
    ]
    assert first.status == SUCCEEDED  # due at once, run by the same run
    assert second.status == PENDING and second.run_at == T0 + timedelta(seconds=70)


def test_a_follow_up_with_a_taken_key_is_not_duplicated(db_url: str) -> None:
    app = new_app(db_url)

    @app.task(context=True)
    def fan(ctx: TaskContext) -> None:
        ctx.enqueue("after", key="once")
        ctx.enqueue("after", key="once")

    @app.task
    def after() -> None:
        pass

    existing = app.enqueue("after", key="once", delay=3600)
    with freeze_time(T0):
        parent = app.enqueue("fan")
    run(app, RunOptions(worker="w1", max_tasks=1))
    assert children(app.engine, parent) == []
    assert count(app.engine, tasks.c.key == "once") == 1
    assert app.status(key="once") == app.status(existing)


def test_ctx_enqueue_checks_like_app_enqueue(db_url: str) -> None:
    app = new_app(db_url)
    errors: list[type[Exception]] = []

    @app.task(context=True, max_attempts=1)
    def bad(ctx: TaskContext, kind: str) -> None:
        try:
            if kind == "unknown":
                ctx.enqueue("nope")
            elif kind == "payload":
                ctx.enqueue("after", {"wrong": 1})
            else:
                ctx.enqueue("after", {"n": 1}, delay=-1)
        except Exception as exc:
            errors.append(type(exc))
            raise

    @app.task
    def after(n: int) -> None:
        pass

    for kind in ("unknown", "payload", "delay"):
        app.enqueue("bad", {"kind": kind})
    summary = run(app, W)
    assert summary.dead == 3
    assert errors == [UnknownTask, PayloadError, UsageError]
    assert count(app.engine, tasks.c.name == "after") == 0


def test_a_timeout_task_sends_its_follow_ups_back_from_the_child(
    db_url: str, tmp_path: Path
) -> None:
    ref = write_app(
        tmp_path,
        """
        import time

        from tickrun import App

        app = App()

        @app.task(timeout=60, context=True)
        def parent(ctx, n):
            ctx.enqueue("child", {"n": n + 1}, key=f"child:{n}")
            return "sent"

        @app.task(timeout=1, context=True, max_attempts=1)
        def hangs(ctx):
            ctx.enqueue("child", {"n": 0}, key="from-a-timeout")
            time.sleep(60)

        @app.task(timeout=60, context=True, max_attempts=1)
        def wants_connection(ctx):
            ctx.connection()

        @app.task
        def child(n):
            return n
        """,
        module="child_followups",
    )
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        from tickrun.loader import load_app

        app = load_app(ref)
        app.use_database(db_url)
        parent = app.enqueue("parent", {"n": 1})
        hung = app.enqueue("hangs")
        needy = app.enqueue("wants_connection")
        run(app, RunOptions(worker="w1", concurrency=3))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("child_followups", None)
    (child,) = children(app.engine, parent)
    assert (child.key, child.status, json.loads(child.payload)) == ("child:1", SUCCEEDED, {"n": 2})
    timed_out = app.status(hung)
    assert timed_out is not None and timed_out.status == DEAD
    assert "timeout" in (timed_out.error or "")
    assert app.status(key="from-a-timeout") is None and children(app.engine, hung) == []
    refused = app.status(needy)
    assert refused is not None and refused.status == DEAD
    assert "ctx.connection() is not available to tasks with timeout=" in (refused.error or "")


# -- ctx.connection ------------------------------------------------------------------------------

ledger_meta = MetaData()
ledger = Table(
    "test_ledger",
    ledger_meta,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("note", String(100), nullable=False),
)


def ledger_rows(engine: Engine) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        return [(r.id, r.note) for r in conn.execute(select(ledger).order_by(ledger.c.id))]


@pytest.fixture
def ledger_app(db_url: str) -> App:
    app = new_app(db_url)
    ledger_meta.drop_all(app.engine)
    ledger_meta.create_all(app.engine)
    return app


def test_writes_through_ctx_connection_commit_with_the_success_only(
    ledger_app: App, db_url: str
) -> None:
    app = ledger_app

    @app.task(context=True, max_attempts=3, backoff=1)
    def book(ctx: TaskContext, n: int) -> dict[str, int]:
        conn = ctx.connection()
        assert ctx.connection() is conn  # one transaction per attempt
        conn.execute(insert(ledger).values(id=n, note=f"attempt {ctx.attempt}"))
        ctx.enqueue("notify", {"n": n}, key=f"notify:{n}")
        if ctx.attempt == 1:
            raise RuntimeError("fails after writing")
        return {"booked": n}

    @app.task
    def notify(n: int) -> None:
        pass

    with freeze_time(T0):
        task_id = app.enqueue("book", {"n": 1})
        first = run(app, W)
    assert (first.succeeded, first.retried) == (0, 1)
    assert ledger_rows(app.engine) == []  # rolled back with the failed attempt
    assert app.status(key="notify:1") is None
    with freeze_time(T0 + timedelta(seconds=5)):
        second = run(app, W)
    assert second.succeeded == 2  # book and its follow-up
    assert ledger_rows(app.engine) == [(1, "attempt 2")]
    status = app.status(task_id)
    assert status is not None and status.status == SUCCEEDED and status.result == {"booked": 1}
    assert status.attempts == 2
    follow_up = app.status(key="notify:1")
    assert follow_up is not None and follow_up.parent_id == task_id
    outcomes = [h["outcome"] for h in show_json(db_url, task_id)["history"]]
    assert outcomes == ["failed", "succeeded"]


def test_ctx_connection_writes_are_rolled_back_when_the_claim_was_taken_over(
    ledger_app: App,
) -> None:
    app = ledger_app

    @app.task(context=True, max_attempts=3)
    def book(ctx: TaskContext) -> None:
        # Another run took the task over after this one's lease expired (before the handler's
        # transaction begins: on SQLite it holds the write lock).
        with app.engine.begin() as other:
            other.execute(
                sql_update(tasks).where(tasks.c.id == ctx.task_id).values(claim_token="theirs")
            )
        ctx.connection().execute(insert(ledger).values(id=1, note="lost claim"))
        ctx.enqueue("notify", key="after-lost")

    @app.task
    def notify() -> None:
        pass

    task_id = app.enqueue("book")
    summary = run(app, W)
    assert (summary.succeeded, summary.stale) == (0, 1)
    assert ledger_rows(app.engine) == []
    assert app.status(key="after-lost") is None
    status = app.status(task_id)
    assert status is not None and status.status != SUCCEEDED and status.result is None


def test_a_handler_that_commits_ctx_connection_itself_fails(ledger_app: App) -> None:
    app = ledger_app

    @app.task(context=True, max_attempts=1)
    def rude(ctx: TaskContext) -> None:
        conn = ctx.connection()
        conn.execute(insert(ledger).values(id=2, note="committed early"))
        conn.commit()

    task_id = app.enqueue("rude")
    run(app, W)
    status = app.status(task_id)
    assert status is not None and status.status == DEAD
    assert "committed or rolled back ctx.connection()" in (status.error or "")


def test_handlers_without_ctx_connection_still_share_batched_commits(db_url: str) -> None:
    app = new_app(db_url)

    @app.task
    def plain(n: int) -> int:
        return n

    ids = app.enqueue_many(("plain", {"n": n}) for n in range(20))
    summary = run(app, RunOptions(worker="w1", concurrency=4))
    assert summary.succeeded == 20
    assert [app.status(i).result for i in ids] == list(range(20))  # type: ignore[union-attr]


def test_an_orm_session_bound_to_ctx_connection_joins_its_transaction(ledger_app: App) -> None:
    from sqlalchemy.orm import Session

    app = ledger_app

    @app.task(context=True, max_attempts=2, backoff=0)
    def orm(ctx: TaskContext) -> None:
        with Session(bind=ctx.connection()) as session:
            session.execute(insert(ledger).values(id=ctx.attempt, note="orm"))
            session.commit()  # joins tickrun's transaction: commits nothing by itself
        if ctx.attempt == 1:
            raise RuntimeError("after the session's commit")

    task_id = app.enqueue("orm")
    run(app, W)
    run(app, W)
    status = app.status(task_id)
    assert status is not None and status.status == SUCCEEDED
    assert ledger_rows(app.engine) == [(2, "orm")]


def test_status_is_one_query(db_url: str) -> None:
    from sqlalchemy import event

    app = new_app(db_url)

    @app.task
    def quick() -> None:
        pass

    task_id = app.enqueue("quick", key="q")
    app.status(task_id)  # the pool's first connection may run set-up statements of its own
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(app.engine, "before_cursor_execute", seen)
    try:
        app.status(task_id)
        app.status(key="q")
        app.status(key="missing")
    finally:
        event.remove(app.engine, "before_cursor_execute", seen)
    assert len(statements) == 3, statements
    assert all("FROM tickrun_tasks" in s for s in statements)


def test_status_reads_beside_a_writer_without_waiting_for_its_lock(db_url: str) -> None:
    """A status endpoint must not queue behind a run's write transaction (on SQLite every
    tickrun transaction takes the write lock up front: a lookup must not open one)."""
    app = new_app(db_url)

    @app.task
    def quick() -> None:
        pass

    task_id = app.enqueue("quick")
    with app.engine.begin() as writer:
        writer.execute(sql_update(tasks).where(tasks.c.id == task_id).values(priority=7))
        status = app.status(task_id)  # the busy timeout (30 s) would fail it with "locked"
        assert status is not None and status.status == PENDING
    after = app.status(task_id)
    assert after is not None and after.status == PENDING


def test_init_adds_the_result_and_parent_columns_to_a_version_2_database(db_url: str) -> None:
    from sqlalchemy import inspect, text
    from sqlalchemy import update as sql_update_meta

    from tickrun.migrations import init_schema
    from tickrun.schema import meta

    app = new_app(db_url)

    @app.task
    def old(n: int) -> int:
        return n

    engine = app.engine
    task_id = app.enqueue("old", {"n": 3})
    with engine.begin() as conn:  # back to version 2: neither column nor the index exists
        quote = conn.dialect.identifier_preparer.quote
        on = " ON tickrun_tasks" if conn.dialect.name in ("mysql", "mariadb") else ""
        conn.execute(text(f"DROP INDEX {quote('ix_tickrun_tasks_parent')}{on}"))
        for column in ("result", "parent_id"):
            conn.execute(text(f"ALTER TABLE tickrun_tasks DROP COLUMN {quote(column)}"))
        conn.execute(sql_update_meta(meta).values(value="2"))
    engine.dispose()
    try:
        assert init_schema(engine) == (2, SCHEMA_VERSION)
        columns = {c["name"] for c in inspect(engine).get_columns("tickrun_tasks")}
        assert {"result", "parent_id"} <= columns
        run(app, W)
        status = app.status(task_id)
        assert status is not None and status.result == 3 and status.parent_id is None
    finally:
        init_schema(engine)  # leave the shared server database current for the next test


def test_app_enqueue_on_ctx_connection_commits_with_the_success(ledger_app: App) -> None:
    app = ledger_app
    ids: list[int] = []

    @app.task(context=True, max_attempts=2, backoff=0)
    def step(ctx: TaskContext) -> None:
        ids.append(app.enqueue("notify", {"n": ctx.attempt}, connection=ctx.connection()))
        if ctx.attempt == 1:
            raise RuntimeError("rolled back with the attempt")

    @app.task
    def notify(n: int) -> None:
        pass

    app.enqueue("step")
    run(app, RunOptions(worker="w1", max_tasks=1))
    assert count(app.engine, tasks.c.name == "notify") == 0
    run(app, RunOptions(worker="w1", max_tasks=1))
    assert len(ids) == 2 and count(app.engine, tasks.c.name == "notify") == 1
    kept = app.status(ids[1])  # SQLite may give the rolled-back insert's id again
    assert kept is not None and kept.status == PENDING and kept.parent_id is None
