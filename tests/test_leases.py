"""A run that cannot renew its leases acts before they expire, on every database.

The database is made to stop answering the run's renewals for real: the test holds the lock
the renewal needs (row locks on the held tasks on PostgreSQL and MariaDB, the write lock on
SQLite), so the run's main thread waits inside its UPDATE exactly as it would on a host cut off
from the network. tests/test_partition.py cuts a host off for real.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url

from tests.conftest import tickrun, write_app
from tests.helpers.apps import new_app, run_bounded
from tests.helpers.processes import (
    DEADLINE,
    app_source,
    executions,
    start_run,
    task_rows,
    twin_app,
    wait_all_due,
    wait_until,
)
from tickrun import DatabaseError, LeaseLost, TaskContext
from tickrun.leases import margin
from tickrun.lifecycle import RUNNING, SUCCEEDED
from tickrun.runner import RunOptions
from tickrun.schema import tasks

pytestmark = pytest.mark.slow

LEASE = 5

HANDLERS = """
@app.task(lease=5, priority=1, context=True)
def careful(ctx):
    if ctx.attempt > 1:
        return note(f"done careful {ctx.task_id}")
    note(f"started careful {ctx.task_id}")
    end = time.monotonic() + 300
    while time.monotonic() < end:
        try:
            ctx.check()
        except Exception as exc:
            note(f"stopped careful {time.time()} {type(exc).__name__} {ctx.lease_lost}")
            raise
        time.sleep(0.05)


@app.task(lease=5, priority=1, context=True)
def stubborn(ctx):
    if ctx.attempt > 1:
        return note(f"done stubborn {ctx.task_id}")
    note(f"started stubborn {ctx.task_id}")
    block_until("never")


@app.task(lease=5, priority=1, timeout=300, context=True)
def child(ctx):
    if ctx.attempt > 1:
        return note(f"done child {ctx.task_id}")
    note(f"started child {os.getpid()}")
    block_until("never")


@app.task(lease=5)
def later(n):
    note(f"done later {n}")
"""


@contextmanager
def renewals_blocked(db_url: str, engine: Engine, ids: list[int]) -> Iterator[None]:
    """Hold the lock a renewal of ``ids`` needs until the block ends."""
    if make_url(db_url).get_backend_name() == "sqlite":
        conn = sqlite3.connect(make_url(db_url).database, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    with engine.connect() as conn, conn.begin():
        locked = select(tasks.c.id).where(tasks.c.id.in_(ids)).with_for_update()
        assert len(conn.execute(locked).all()) == len(ids)
        yield


def lease_until(engine: Engine, ids: list[int]) -> float:
    """The earliest lease expiry the database holds for ``ids``, as a Unix time."""
    rows = task_rows(engine)
    return min(rows[i].lease_until.timestamp() for i in ids)


def test_a_run_that_cannot_renew_stops_its_handlers_and_exits_before_the_lease_expires(
    db_url: str, engine: Engine, project: Path
) -> None:
    ref = write_app(project, app_source(HANDLERS))
    app = twin_app(
        db_url,
        "careful",
        "stubborn",
        "child",
        "later",
        careful={"lease": LEASE, "priority": 1},
        stubborn={"lease": LEASE, "priority": 1},
        child={"lease": LEASE, "priority": 1},
        later={"lease": LEASE},
    )
    busy = app.enqueue_many([("careful", None), ("stubborn", None), ("child", None)])
    waiting = app.enqueue_many(("later", {"n": n}) for n in range(3))
    run = start_run(project, db_url, ref, "--concurrency", "3")
    wait_until(
        lambda: sum(line.startswith("started") for line in executions(project)) == 3,
        "the three handlers to start",
    )
    child_pid = int(
        next(x for x in executions(project) if x.startswith("started child")).split()[2]
    )
    held = [i for i, row in task_rows(engine).items() if row.status == RUNNING]

    with renewals_blocked(db_url, engine, held):
        blocked_at = time.time()
        code, out, err = run.finish()
        exited_at = time.time()
    expiry = lease_until(engine, busy)

    assert code == 3, out + err
    assert "lease lost" in err and "exiting before the leases expire" in err, err
    assert "Traceback" not in out + err
    # Gone before any other run could take the tasks over, and within one lease of the block.
    assert exited_at < expiry, (exited_at, expiry)
    assert exited_at - blocked_at < LEASE, exited_at - blocked_at
    lines = executions(project)
    (stopped,) = [line for line in lines if line.startswith("stopped careful")]
    _, _, at, kind, flag = stopped.split()
    assert (kind, flag) == ("LeaseLost", "True")
    assert float(at) < expiry - margin(LEASE) / 2 + 0.5  # told at lease - margin, give or take
    with pytest.raises(ProcessLookupError):  # the child process running `child` was stopped
        os.kill(child_pid, 0)
    # Nothing new started on the cut-off run: the tasks it had claimed ahead never ran.
    assert not [line for line in lines if line.startswith("done")], lines

    wait_all_due(engine)
    result = tickrun("run", "--concurrency", "3", cwd=project, db=db_url, env={"TICKRUN_APP": ref})
    assert result.returncode == 0, result.stdout + result.stderr
    rows = task_rows(engine)
    assert {rows[i].status for i in busy + waiting} == {SUCCEEDED}
    done = [line for line in executions(project) if line.startswith("done")]
    assert sorted(done) == sorted(
        [f"done careful {busy[0]}", f"done stubborn {busy[1]}", f"done child {busy[2]}"]
        + [f"done later {n}" for n in range(3)]
    )


def test_app_run_tells_the_handler_and_raises_without_ending_the_process(
    db_url: str, engine: Engine
) -> None:
    app = new_app(db_url)
    seen: list[bool] = []

    @app.task(name="careful", lease=LEASE, context=True)
    def careful(ctx: TaskContext) -> None:
        assert ctx.lease_lost is False
        ctx.check()  # returns while the lease holds
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            try:
                ctx.check()
            except LeaseLost:
                seen.append(ctx.lease_lost)
                raise
            time.sleep(0.05)

    task_id = app.enqueue("careful")
    box: dict[str, BaseException] = {}

    def run() -> None:
        try:
            run_bounded(app, RunOptions(worker="w1"))
        except BaseException as exc:  # noqa: BLE001 - checked below
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until(lambda: task_rows(engine)[task_id].status == RUNNING, "the claim")
    with renewals_blocked(db_url, engine, [task_id]):
        wait_until(lambda: seen, "the handler to see its lease lost")
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert seen == [True]
    assert isinstance(box.get("error"), DatabaseError), box
    assert "lease lost" in str(box["error"])


# -- a database that does not answer -----------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port whose connection attempts go unanswered, as on a host cut off: the
    listen queue is full, so the kernel drops every further SYN."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):  # more than the queue holds, whatever the kernel adds to 0
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            yield port
        finally:
            for filler in fillers:
                filler.close()


@pytest.mark.parametrize(
    ("url", "bound"),
    [
        ("postgresql+psycopg://postgres@127.0.0.1:{port}/tickrun", 10),  # the default
        ("mysql+pymysql://root@127.0.0.1:{port}/tickrun", 10),
        ("postgresql+psycopg://postgres@127.0.0.1:{port}/tickrun?connect_timeout=2", 2),
    ],
    ids=["postgresql", "mysql", "postgresql-url-timeout"],
)
def test_a_run_against_a_database_that_does_not_answer_fails_fast(
    silent_server: int, project: Path, url: str, bound: float
) -> None:
    write_app(project, "from tickrun import App\napp = App()\n")
    began = time.monotonic()
    result = tickrun(
        "run", cwd=project, db=url.format(port=silent_server), env={"TICKRUN_APP": "jobs:app"}
    )
    took = time.monotonic() - began
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stderr.startswith("error: database error"), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert bound <= took < bound + 10, took


def test_a_lease_is_given_up_a_fifth_before_expiry_at_most_five_seconds() -> None:
    assert (margin(5), margin(10), margin(60), margin(3600)) == (1, 2, 5, 5)
