"""Follow-up tasks and ctx.connection() writes across crashes, with real ``tickrun run``
processes on every database.

The window that matters is after the handler returned and before its success was committed.
The application module stands in that window deterministically: it wraps ``store.record``
(the main thread's batched write) or ``store.record_success`` (the worker thread's commit for
``ctx.connection()``), and the first time a success of the watched task reaches it, it drops a
marker file and blocks. The test waits for the marker and SIGKILLs the run: the handler has
returned, nothing of its success is written. No sleep decides anything.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, select

from tests.conftest import tickrun, write_app
from tests.helpers.processes import (
    app_source,
    executions,
    history,
    start_run,
    task_rows,
    twin_app,
    wait_all_due,
    wait_until,
)
from tickrun.lifecycle import RUNNING, SUCCEEDED
from tickrun.schema import tasks

pytestmark = pytest.mark.slow

PAUSE = """
from tickrun import store

_real = {"record": store.record, "record_success": store.record_success}


def pause_in(name):
    def paused(conn_or_engine, outcomes, **kwargs):
        batch = outcomes if isinstance(outcomes, list) else [outcomes]
        watched = any(o.task.name == "charge" and o.status == "succeeded" for o in batch)
        if watched and not os.path.exists(here("paused")):
            note("paused " + name)
            open(here("paused"), "w").close()
            time.sleep(600)  # killed here by the test
        return _real[name](conn_or_engine, outcomes, **kwargs)

    setattr(store, name, paused)


pause_in("{where}")
"""

CHARGE = """
@app.task(lease=2, context=True)
def charge(ctx, order_id):
    note(f"charge {ctx.attempt}")
    ctx.enqueue("invoice", {"order_id": order_id}, key=f"invoice:{order_id}")
    ctx.enqueue("receipt", {"order_id": order_id})  # keyed by parent, attempt and call
    return {"charged": order_id}


@app.task
def invoice(order_id):
    note(f"invoice {order_id}")


@app.task
def receipt(order_id):
    note(f"receipt {order_id}")
"""

LEDGER = """
from sqlalchemy import text


@app.task(lease=2, context=True)
def charge(ctx, order_id):
    note(f"charge {ctx.attempt}")
    ctx.connection().execute(
        text("INSERT INTO test_ledger (order_id, note) VALUES (:o, :n)"),
        {"o": order_id, "n": f"attempt {ctx.attempt}"},
    )
    ctx.enqueue("invoice", {"order_id": order_id})
    return {"charged": order_id}


@app.task
def invoice(order_id):
    note(f"invoice {order_id}")
"""

ledger_meta = MetaData()
ledger = Table(
    "test_ledger",
    ledger_meta,
    Column("id", Integer, primary_key=True),
    Column("order_id", Integer, nullable=False),
    Column("note", String(100), nullable=False),
)


def children(engine: Engine, parent: int) -> list[Any]:
    stmt = select(tasks).where(tasks.c.parent_id == parent).order_by(tasks.c.id)
    with engine.connect() as conn:
        return list(conn.execute(stmt))


def ledger_notes(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(ledger.c.note).order_by(ledger.c.id)).scalars())


def kill_in_the_window(project: Path, db_url: str, ref: str) -> None:
    """Start a run, wait until the handler returned and its success is held before the
    write, SIGKILL the run."""
    run = start_run(project, db_url, ref)
    wait_until(lambda: (project / "paused").exists(), "the run to hold a returned success")
    run.proc.send_signal(signal.SIGKILL)
    assert run.finish()[0] == -signal.SIGKILL


def rerun(project: Path, db_url: str, ref: str) -> str:
    result = tickrun("run", cwd=project, db=db_url, env={"TICKRUN_APP": ref})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result.stdout


def test_follow_ups_exist_once_after_a_crash_between_return_and_record(
    db_url: str, engine: Engine, project: Path
) -> None:
    ref = write_app(project, app_source(PAUSE.replace("{where}", "record") + CHARGE))
    app = twin_app(db_url, "charge", "invoice", "receipt")
    task_id = app.enqueue("charge", {"order_id": 5})

    kill_in_the_window(project, db_url, ref)
    assert executions(project) == ["charge 1", "paused record"]
    row = task_rows(engine)[task_id]
    assert (row.status, row.attempts, row.result) == (RUNNING, 1, None)
    assert children(engine, task_id) == []  # the returned handler's follow-ups are not in yet

    wait_all_due(engine)
    out = rerun(project, db_url, ref)
    assert "claimed 3, succeeded 3" in out and "1 lost lease" in out, out
    row = task_rows(engine)[task_id]
    assert (row.status, row.attempts, json.loads(row.result)) == (SUCCEEDED, 2, {"charged": 5})
    assert [(h.attempt, h.outcome) for h in history(engine, task_id)] == [
        (1, "lost"),
        (2, "succeeded"),
    ]
    invoice, receipt = children(engine, task_id)
    assert (invoice.name, invoice.key, invoice.status) == ("invoice", "invoice:5", SUCCEEDED)
    assert (receipt.name, receipt.key) == ("receipt", f"tickrun:after:{task_id}:2:2")
    # At least once for the handler; exactly once for what its success enqueued.
    assert Counter(executions(project)) == Counter(
        ["charge 1", "paused record", "charge 2", "invoice 5", "receipt 5"]
    )


def test_ctx_connection_writes_exist_once_after_a_crash_before_the_commit(
    db_url: str, engine: Engine, project: Path
) -> None:
    ledger_meta.drop_all(engine)
    ledger_meta.create_all(engine)
    ref = write_app(project, app_source(PAUSE.replace("{where}", "record_success") + LEDGER))
    app = twin_app(db_url, "charge", "invoice")
    task_id = app.enqueue("charge", {"order_id": 6})

    kill_in_the_window(project, db_url, ref)
    assert executions(project) == ["charge 1", "paused record_success"]
    assert task_rows(engine)[task_id].status == RUNNING
    assert ledger_notes(engine) == []  # the handler's write died with its transaction
    assert children(engine, task_id) == []

    wait_all_due(engine)
    out = rerun(project, db_url, ref)
    assert "claimed 2, succeeded 2" in out, out
    assert ledger_notes(engine) == ["attempt 2"]
    (invoice,) = children(engine, task_id)
    assert invoice.status == SUCCEEDED and invoice.key == f"tickrun:after:{task_id}:2:1"
    row = task_rows(engine)[task_id]
    assert (row.status, json.loads(row.result)) == (SUCCEEDED, {"charged": 6})
    assert Counter(executions(project)) == Counter(
        ["charge 1", "paused record_success", "charge 2", "invoice 6"]
    )


DIES = """
@app.task(lease=2, context=True)
def charge(ctx, order_id):
    note(f"charge {ctx.attempt}")
    ctx.enqueue("invoice", {"order_id": order_id}, key=f"invoice:{order_id}")
    if ctx.attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # the run dies with the attempt
    return "charged"


@app.task
def invoice(order_id):
    note(f"invoice {order_id}")
"""


def test_an_attempt_whose_run_dies_leaves_no_follow_up(
    db_url: str, engine: Engine, project: Path
) -> None:
    ref = write_app(project, app_source(DIES))
    app = twin_app(db_url, "charge", "invoice")
    task_id = app.enqueue("charge", {"order_id": 8})
    first = tickrun("run", cwd=project, db=db_url, env={"TICKRUN_APP": ref})
    assert first.returncode == -signal.SIGKILL
    assert children(engine, task_id) == [] and app.status(key="invoice:8") is None

    wait_all_due(engine)
    rerun(project, db_url, ref)
    (invoice,) = children(engine, task_id)
    assert invoice.key == "invoice:8" and invoice.status == SUCCEEDED
    assert executions(project) == ["charge 1", "charge 2", "invoice 8"]
