"""Concurrency guarantees with real processes on every database: overlapping runs execute each
task exactly once, and concurrent enqueues of one key create one task.

Handlers append one line per execution to a file with O_APPEND (one ``write()`` per line), so
duplicates and misses are counted exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from tests.conftest import cli_env, write_app
from tests.helpers.processes import (
    DEADLINE,
    WORK,
    app_source,
    executions,
    start_run,
    task_rows,
    twin_app,
    wait_until,
)
from tickrun.lifecycle import SUCCEEDED
from tickrun.schema import attempts, runs

pytestmark = pytest.mark.slow


def test_overlapping_runs_execute_every_task_exactly_once(
    db_url: str, backend: str, engine: Engine, project: Path
) -> None:
    ref = write_app(project, app_source(WORK))
    app = twin_app(db_url, "work")
    ids = app.enqueue_many(("work", {"n": n}) for n in range(2000))
    assert len(set(ids)) == 2000

    count = 4 if backend == "sqlite" else 8
    procs = [
        start_run(project, db_url, ref, "--concurrency", "2", tag=f"run{i}") for i in range(count)
    ]
    results = [p.finish(timeout=3 * DEADLINE) for p in procs]

    for code, out, err in results:
        assert code == 0, out + err
        assert err == "", err  # no warning (a stale outcome means a double claim), no traceback
        assert "database is locked" not in out and "Traceback" not in out
    lines = executions(project)
    assert len(lines) == 2000, f"{len(lines)} executions for 2000 tasks"
    assert Counter(lines) == Counter(str(i) for i in ids)

    rows = task_rows(engine)
    assert Counter((r.status, r.attempts) for r in rows.values()) == {(SUCCEEDED, 1): 2000}
    with engine.connect() as conn:
        outcomes = conn.execute(
            select(attempts.c.outcome, func.count()).group_by(attempts.c.outcome)
        ).all()
        recorded = conn.execute(select(runs.c.claimed, runs.c.exit_code)).all()
    assert dict(outcomes) == {"succeeded": 2000}
    assert len(recorded) == count and {code for _, code in recorded} == {0}
    assert sum(claimed for claimed, _ in recorded) == 2000
    # The runs really overlapped: the work was shared, not done by whichever started first;
    # every run that claimed something executed it (one marker each).
    working = sorted(p.name for p in project.glob("working-*"))
    assert len(working) >= 2, (working, recorded)
    assert sum(claimed > 0 for claimed, _ in recorded) == len(working), (working, recorded)


# Connects and loads the app, then waits at a barrier (a pipe the test closes) so the 20
# enqueues hit the database together; then it is exactly `tickrun enqueue ...` (the entry point
# of `python -m tickrun`).
LAUNCHER = """\
import os
import sys

from sqlalchemy import text

from tickrun.cli import main
from tickrun.database import open_engine
from tickrun.loader import load_app

load_app(os.environ["TICKRUN_APP"])
with open_engine(os.environ["TICKRUN_DATABASE_URL"]).connect() as conn:
    conn.execute(text("SELECT 1"))
barrier = int(sys.argv[1])
open(f"ready-{os.getpid()}", "w").close()
os.read(barrier, 1)
main(sys.argv[2:])
"""

ONE_TASK = """
@app.task
def welcome(user_id):
    note(str(user_id))
"""


def test_concurrent_enqueues_of_one_key_create_one_task(
    db_url: str, engine: Engine, project: Path
) -> None:
    ref = write_app(project, app_source(ONE_TASK))
    (project / "launch.py").write_text(LAUNCHER)
    args = ["welcome", "--payload", '{"user_id": 42}', "--key", "welcome:42", "--json"]
    barrier, release = os.pipe()
    procs = [
        subprocess.Popen(
            [sys.executable, "launch.py", str(barrier), "enqueue", *args],
            cwd=project,
            env=cli_env(db_url, {"TICKRUN_APP": ref}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=(barrier,),
        )
        for _ in range(20)
    ]
    os.close(barrier)

    def ready() -> bool:
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"an enqueuer exited early: {proc.communicate()}")
        return len(list(project.glob("ready-*"))) == 20

    try:
        wait_until(ready, "20 enqueuers to be ready")
    finally:
        os.close(release)  # every enqueuer's read() returns at once
    outputs = [p.communicate(timeout=DEADLINE) for p in procs]

    answers = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert err == "", err
        answers.append(json.loads(out))
    rows = task_rows(engine)
    assert len(rows) == 1
    ((task_id, row),) = rows.items()
    assert row.key == "welcome:42" and json.loads(row.payload) == {"user_id": 42}
    assert {a["id"] for a in answers} == {task_id}
    assert Counter(a["duplicate"] for a in answers) == {True: 19, False: 1}
