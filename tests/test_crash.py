"""Crash guarantees with real ``tickrun run`` processes on every database.

Runs are killed (SIGKILL, SIGTERM, a handler killing its own process, a hung handler, the
database dropping the run's connections); afterwards every task must reach a final status with
its history telling what happened. Handlers append one line per execution to a file with
O_APPEND (one ``write()`` per line), so executions are counted exactly; every wait polls for a
condition with a generous deadline instead of sleeping.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.conftest import tickrun, write_app
from tests.helpers.processes import (
    DEADLINE,
    app_source,
    executions,
    history,
    start_run,
    task_rows,
    twin_app,
    wait_all_due,
    wait_until,
)
from tickrun.lifecycle import DEAD, PENDING, RETRYING, RUNNING, SUCCEEDED
from tickrun.schema import runs

pytestmark = pytest.mark.slow


def assert_clean(out: str, err: str) -> None:
    for word in ("Traceback", "database is locked"):
        assert word not in out + err, out + err


# -- SIGKILL of a run ---------------------------------------------------------------------------

KILLED_MID_TASK = """
@app.task(lease=2, context=True)
def slow(ctx):
    if not os.path.exists(here("first-attempt")):
        open(here("first-attempt"), "w").close()
        note(f"started {ctx.task_id}")
        time.sleep(600)
    note(f"done {ctx.task_id}")
"""


def test_sigkill_mid_task_loses_nothing(db_url: str, engine: Engine, project: Path) -> None:
    ref = write_app(project, app_source(KILLED_MID_TASK))
    ids = twin_app(db_url, "slow").enqueue_many(("slow", None) for _ in range(5))
    run = start_run(project, db_url, ref, "--concurrency", "1")
    (first,) = wait_until(lambda: executions(project), "the first handler to start")
    run.proc.send_signal(signal.SIGKILL)
    assert run.finish()[0] == -signal.SIGKILL

    # One task was in its handler; the run may have claimed others with it (they wait, running).
    hung = int(first.split()[1])
    rows = task_rows(engine)
    held = [i for i in ids if rows[i].status == RUNNING]
    assert hung in held
    assert {(rows[i].status, rows[i].attempts) for i in held} == {(RUNNING, 1)}
    assert {(rows[i].status, rows[i].attempts) for i in ids if i not in held} <= {(PENDING, 0)}
    assert executions(project) == [first]

    wait_all_due(engine)
    result = tickrun("run", cwd=project, db=db_url, env={"TICKRUN_APP": ref})
    assert result.returncode == 0, result.stderr
    assert "claimed 5, succeeded 5" in result.stdout, result.stdout
    assert f"{len(held)} lost lease" in result.stdout, result.stdout

    rows = task_rows(engine)
    assert {rows[i].status for i in ids} == {SUCCEEDED}
    assert Counter(executions(project)) == Counter([first] + [f"done {i}" for i in ids])
    for task_id in ids:
        attempts_made = history(engine, task_id)
        if task_id not in held:
            assert [(h.attempt, h.outcome) for h in attempts_made] == [(1, "succeeded")]
            continue
        assert rows[task_id].attempts == 2  # the lost attempt counts
        lost, done = attempts_made
        assert (lost.attempt, lost.outcome, done.attempt, done.outcome) == (
            1,
            "lost",
            2,
            "succeeded",
        )
        assert "lease expired" in lost.error


QUICK_THEN_STUCK = """
@app.task(lease=2, priority=10, context=True)
def quick(ctx):
    note(f"quick {ctx.task_id}")


@app.task(lease=2, context=True)
def stuck(ctx):
    note(f"stuck {ctx.task_id}")
    if ctx.attempt == 1:
        time.sleep(600)
"""


def test_a_killed_run_shows_as_lost_with_what_it_claimed(
    db_url: str, engine: Engine, project: Path
) -> None:
    """It showed ``claimed 0`` and no end, and its lost attempt took "33.7s": the time until
    another run noticed the loss."""
    ref = write_app(project, app_source(QUICK_THEN_STUCK))
    twin = twin_app(db_url, "quick", "stuck", quick={"priority": 10})
    quick = twin.enqueue_many(("quick", None) for _ in range(3))
    (stuck,) = twin.enqueue_many([("stuck", None)])
    env = {"TICKRUN_APP": ref}

    def the_run() -> dict[str, Any]:
        listed = tickrun("runs", "--json", cwd=project, db=db_url, env=env)
        assert listed.returncode == 0, listed.stderr
        return json.loads(listed.stdout)[-1]  # the oldest: the run under test

    run = start_run(project, db_url, ref, "--concurrency", "1")
    wait_until(lambda: f"stuck {stuck}" in executions(project), "the stuck handler to start")
    wait_until(
        lambda: all(task_rows(engine)[i].status == SUCCEEDED for i in quick),
        "the quick tasks' successes to be recorded",
    )
    alive = the_run()
    assert (alive["state"], alive["claimed"], alive["succeeded"]) == ("running", 4, 3), alive
    run.proc.send_signal(signal.SIGKILL)
    assert run.finish()[0] == -signal.SIGKILL

    killed = the_run()  # on this host its process is seen to be gone
    assert (killed["state"], killed["finished_at"], killed["exit_code"]) == ("lost", None, None)
    assert (killed["claimed"], killed["succeeded"], killed["retried"], killed["dead"]) == (
        4,
        3,
        None,
        None,
    )
    table = tickrun("runs", cwd=project, db=db_url, env={**env, "COLUMNS": "200"})
    assert " lost " in table.stdout, table.stdout

    # Seen from another host: lost once the lease of the task it held expired.
    with engine.begin() as conn:
        conn.execute(runs.update().where(runs.c.id == killed["id"]).values(host="elsewhere"))
    wait_all_due(engine)
    assert the_run()["state"] == "lost"
    later = tickrun("run", "--max-tasks", "1", cwd=project, db=db_url, env=env)
    assert "1 lost lease" in later.stdout, later.stdout + later.stderr
    assert the_run()["claimed"] == 4  # the lost attempt, recorded by the later run, is its

    table = tickrun("show", str(stuck), cwd=project, db=db_url, env={**env, "COLUMNS": "200"})
    (line,) = [ln for ln in table.stdout.splitlines() if " lost " in ln and "unknown" in ln]
    assert line.split()[0] == "1", table.stdout


SELF_KILLING = """
@app.task(max_attempts=3, lease=1)
def suicide():
    note("executed")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_handler_killing_its_process_uses_up_its_attempts(
    db_url: str, engine: Engine, project: Path
) -> None:
    ref = write_app(project, app_source(SELF_KILLING))
    (task_id,) = twin_app(db_url, "suicide", suicide={"max_attempts": 3, "lease": 1}).enqueue_many(
        [("suicide", None)]
    )
    codes = []
    end = time.monotonic() + 3 * DEADLINE
    while task_rows(engine)[task_id].status != DEAD:
        assert time.monotonic() < end, f"task never became dead; run exit codes {codes}"
        wait_all_due(engine)
        codes.append(tickrun("run", cwd=project, db=db_url, env={"TICKRUN_APP": ref}).returncode)

    # Three runs died with their handler; the fourth found the third lease expired, no attempt
    # left, and recorded the task dead without running it again.
    assert codes == [-signal.SIGKILL] * 3 + [1]
    assert executions(project) == ["executed"] * 3
    row = task_rows(engine)[task_id]
    assert row.attempts == 3
    assert "lease expired" in row.last_error
    lost = history(engine, task_id)
    assert [(h.attempt, h.outcome) for h in lost] == [(1, "lost"), (2, "lost"), (3, "lost")]
    assert all("lease expired" in h.error for h in lost)


# -- a hung handler -----------------------------------------------------------------------------

HUNG = """
@app.task(timeout=1, max_attempts=3, backoff=3600)
def hang():
    note(f"hang {os.getpid()}")
    time.sleep(600)


@app.task
def quick(n):
    note(f"quick {n}")


@app.task(timeout=60)
def quick_child(n):
    note(f"child {n}")
"""


def test_hung_handler_times_out_while_the_run_goes_on(
    db_url: str, engine: Engine, project: Path
) -> None:
    ref = write_app(project, app_source(HUNG))
    app = twin_app(db_url, "hang", "quick", "quick_child", hang={"timeout": 1, "max_attempts": 3})
    (hung,) = app.enqueue_many([("hang", None)])
    others = app.enqueue_many([("quick", {"n": n}) for n in range(10)])
    others += app.enqueue_many([("quick_child", {"n": n}) for n in range(4)])

    began = time.monotonic()
    result = tickrun(
        "run", "--concurrency", "2", cwd=project, db=db_url, env={"TICKRUN_APP": ref}, timeout=300
    )
    elapsed = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    assert elapsed < 60, f"the run took {elapsed:.1f}s: the hung handler held it up"
    assert "Traceback" not in result.stdout + result.stderr

    rows = task_rows(engine)
    assert {rows[i].status for i in others} == {SUCCEEDED}
    assert rows[hung].status == RETRYING and rows[hung].attempts == 1
    assert "timeout" in rows[hung].last_error
    (attempt,) = history(engine, hung)
    assert attempt.outcome == "timeout" and "timeout" in attempt.error

    lines = executions(project)
    expected = [f"quick {n}" for n in range(10)] + [f"child {n}" for n in range(4)]
    assert sorted(line for line in lines if not line.startswith("hang")) == sorted(expected)
    (hang_line,) = [line for line in lines if line.startswith("hang")]
    pid = int(hang_line.split()[1])
    with pytest.raises(ProcessLookupError):  # the child running the hung handler was stopped
        os.kill(pid, 0)


# -- the database drops the run's connections ---------------------------------------------------

BLOCKED = """
@app.task(lease=2)
def blocked(n):
    note(f"started {n}")
    block_until("release")
    note(f"done {n}")
"""


def drop_connections(db_url: str) -> int:
    """Make the server end every other session on the test database; returns how many."""
    url = make_url(db_url)
    admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            if url.get_backend_name() == "postgresql":
                return len(
                    conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    ).all()
                )
            ids = conn.execute(
                text(
                    "SELECT id FROM information_schema.processlist "
                    "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
                )
            ).scalars()
            killed = 0
            for session in list(ids):
                conn.execute(text(f"KILL CONNECTION {int(session)}"))
                killed += 1
            return killed
    finally:
        admin.dispose()


def test_connection_lost_mid_run(db_url: str, backend: str, engine: Engine, project: Path) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has no server connection to lose")
    ref = write_app(project, app_source(BLOCKED))
    ids = twin_app(db_url, "blocked", blocked={"lease": 2}).enqueue_many(
        ("blocked", {"n": n}) for n in range(4)
    )
    run = start_run(project, db_url, ref, "--concurrency", "2")
    wait_until(
        lambda: sum(line.startswith("started") for line in executions(project)) == 2,
        "two handlers to start",
    )
    assert drop_connections(db_url) >= 1
    engine.dispose()  # the test's own pooled connections were dropped too
    (project / "release").touch()

    code, out, err = run.finish()
    assert code == 3, out + err
    assert len(err.splitlines()) == 1 and err.startswith("error: database error"), err
    assert "Traceback" not in out + err

    # The run could record nothing after the drop: what it held waits for its lease to expire.
    rows = task_rows(engine)
    held = {i for i in ids if rows[i].status == RUNNING}
    assert len(held) >= 2 and {rows[i].status for i in ids} <= {RUNNING, PENDING}
    first_run = executions(project)
    wait_all_due(engine)
    result = tickrun("run", cwd=project, db=db_url, env={"TICKRUN_APP": ref})
    assert result.returncode == 0, result.stderr
    rows = task_rows(engine)
    assert {rows[i].status for i in ids} == {SUCCEEDED}
    done = Counter(line for line in executions(project) if line.startswith("done"))
    for n in range(4):
        # Once in the second run; a handler released before the first run died ran twice.
        assert done[f"done {n}"] == 1 + first_run.count(f"done {n}"), done
    for task_id in ids:
        outcomes = [h.outcome for h in history(engine, task_id)]
        assert outcomes == (["lost", "succeeded"] if task_id in held else ["succeeded"])


# -- SIGTERM ------------------------------------------------------------------------------------

GRACEFUL = """
@app.task(context=True)
def polite(ctx):
    note(f"started {ctx.task_id}")
    block_until("release")
    note(f"done {ctx.task_id}")


@app.task
def warm():
    pass
"""


def test_sigterm_finishes_in_flight_and_releases_the_rest(
    db_url: str, engine: Engine, project: Path
) -> None:
    ref = write_app(project, app_source(GRACEFUL))
    app = twin_app(db_url, "polite", "warm")
    # Claimed first, the fast ones show the run that handlers are quick: its next claim takes
    # a quarter of a second of such work ahead of its workers, the six polite tasks included.
    app.enqueue_many(("warm", None) for _ in range(2))
    ids = app.enqueue_many(("polite", None) for _ in range(6))
    run = start_run(project, db_url, ref, "--concurrency", "2", "--grace", "120s")

    def two_started() -> list[str] | None:
        lines = [line for line in executions(project) if line.startswith("started")]
        return lines if len(lines) >= 2 else None

    started = wait_until(two_started, "two handlers to start")
    in_flight = {int(line.split()[1]) for line in started}
    assert len(in_flight) == 2
    rows = task_rows(engine)
    # Claimed ahead of the workers, never started: what SIGTERM must hand back.
    waiting = {i for i in ids if rows[i].status == RUNNING} - in_flight
    assert waiting, "the run claimed nothing beyond its two workers: no release to test"
    run.proc.send_signal(signal.SIGTERM)

    def released() -> bool:
        rows = task_rows(engine)
        return all(rows[i].status == PENDING for i in waiting)

    wait_until(released, "the claimed tasks not started to be released")
    (project / "release").touch()
    freed = time.monotonic()
    code, out, err = run.finish()
    assert time.monotonic() - freed < 30, "the run waited for its grace period to run out"
    assert code == 0, err
    assert "stopped by signal" in out and f"{len(waiting)} released" in out, out
    assert_clean(out, err)

    now = datetime.now(UTC)
    rows = task_rows(engine)
    for task_id in ids:
        row = rows[task_id]
        if task_id in in_flight:
            assert (row.status, row.attempts) == (SUCCEEDED, 1)
        else:
            assert (row.status, row.attempts) == (PENDING, 0)
            assert row.claimable_at <= now and row.run_at <= now
            assert history(engine, task_id) == []

    # Released, not lost: the next run claims them at once, though their lease was 60 s.
    result = tickrun("run", cwd=project, db=db_url, env={"TICKRUN_APP": ref})
    assert result.returncode == 0, result.stderr
    assert f"claimed {len(ids) - 2}, succeeded {len(ids) - 2}" in result.stdout, result.stdout
    assert Counter(x for x in executions(project) if x.startswith("done")) == Counter(
        f"done {i}" for i in ids
    )


STUBBORN = """
@app.task
def stubborn():
    if not os.path.exists(here("first-attempt")):
        open(here("first-attempt"), "w").close()
        note("started")
        time.sleep(600)
    note("done")
"""


def test_sigterm_interrupts_a_handler_that_outlives_the_grace(
    db_url: str, engine: Engine, project: Path
) -> None:
    ref = write_app(project, app_source(STUBBORN))
    (task_id,) = twin_app(db_url, "stubborn").enqueue_many([("stubborn", None)])
    run = start_run(project, db_url, ref, "--grace", "1s")
    wait_until(lambda: executions(project) == ["started"], "the handler to start")
    run.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    code, out, err = run.finish()
    assert time.monotonic() - signalled < 30, "the run outlived its 1 s grace by far"
    assert code == 0, err
    assert "stopped by signal" in out, out
    assert_clean(out, err)

    row = task_rows(engine)[task_id]
    assert (row.status, row.attempts) == (RETRYING, 1)
    assert row.claimable_at <= datetime.now(UTC)
    (attempt,) = history(engine, task_id)
    assert attempt.outcome == "interrupted" and "interrupted" in attempt.error

    result = tickrun("run", cwd=project, db=db_url, env={"TICKRUN_APP": ref})
    assert result.returncode == 0, result.stderr
    assert "claimed 1, succeeded 1" in result.stdout, result.stdout
    assert [h.outcome for h in history(engine, task_id)] == ["interrupted", "succeeded"]
    assert executions(project) == ["started", "done"]
