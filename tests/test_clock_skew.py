"""Leases are judged by the database's clock, so hosts whose clocks disagree cannot take each
other's live claims; and a run whose claim was taken over is told at its next renewal.

Each ``tickrun run`` here is a real process. A host's skewed clock is made through tickrun's
clock seam: a ``sitecustomize`` module (on the process's ``PYTHONPATH``) moves
``tickrun.clock.now`` by ``SKEW_SECONDS`` before the program starts, which is every time
tickrun reads from the host. (libfaketime would do the same to the whole process, but
Python's ``time.sleep`` fails under it here.)
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from tests.conftest import write_app
from tests.helpers.processes import (
    app_source,
    executions,
    start_run,
    task_rows,
    twin_app,
    wait_until,
)
from tickrun.lifecycle import SUCCEEDED
from tickrun.schema import tasks

pytestmark = pytest.mark.slow

SKEW = """\
import os
from datetime import timedelta

from tickrun import clock

_offset = timedelta(seconds=float(os.environ["SKEW_SECONDS"]))
_host_now = clock.now
clock.now = lambda: _host_now() + _offset
"""

SLOW = """
@app.task(lease=10, context=True)
def slow(ctx, n):
    note(f"start {n} {os.getpid()}")
    time.sleep(4)
    note(f"end {n} {os.getpid()}")
"""


def skewed(project: Path, seconds: float) -> dict[str, str]:
    """The environment of a process whose host clock is ``seconds`` off."""
    site = project / "skew"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SKEW)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "SKEW_SECONDS": str(seconds)}


def test_a_host_whose_clock_is_ahead_does_not_take_live_leases(
    server_url: str, project: Path, server_engine: Engine
) -> None:
    ref = write_app(project, app_source(SLOW))
    app = twin_app(server_url, "slow", slow={"lease": 10})
    # Due a minute ago, so that the host behind sees them due by its own clock too.
    past = datetime.now(UTC) - timedelta(minutes=1)
    ids = [app.enqueue("slow", {"n": n}, run_at=past) for n in range(8)]
    behind = start_run(
        project, server_url, ref, "--concurrency", "8", tag="behind", env=skewed(project, -20)
    )
    wait_until(
        lambda: sum(line.startswith("start") for line in executions(project)) == 8,
        "the host 20 s behind to start all eight tasks",
    )
    ahead = start_run(
        project, server_url, ref, "--concurrency", "8", tag="ahead", env=skewed(project, 20)
    )
    code, out, err = ahead.finish()
    assert code == 0, out + err
    assert "claimed 0," in out + err, out + err  # every lease is live by the database's clock
    code, out, err = behind.finish()
    assert code == 0, out + err
    assert "stale outcome" not in out + err and "lease lost" not in out + err, out + err

    starts = [line.split()[1] for line in executions(project) if line.startswith("start")]
    assert sorted(starts) == [str(n) for n in range(8)]  # each ran once
    rows = task_rows(server_engine)
    assert {(rows[i].status, rows[i].attempts) for i in ids} == {(SUCCEEDED, 1)}


PATIENT = """
@app.task(lease=3, context=True)
def patient(ctx):
    note(f"start {ctx.task_id}")
    end = time.monotonic() + 20
    while time.monotonic() < end:
        try:
            ctx.check()
        except Exception as exc:
            note(f"told {type(exc).__name__} {ctx.lease_lost}")
            raise
        time.sleep(0.05)
    note("never told")
"""


def test_a_renewal_that_finds_the_claim_taken_over_tells_the_handler(
    db_url: str, engine: Engine, project: Path
) -> None:
    ref = write_app(project, app_source(PATIENT))
    app = twin_app(db_url, "patient", patient={"lease": 3})
    task_id = app.enqueue("patient")
    run = start_run(project, db_url, ref)
    wait_until(lambda: f"start {task_id}" in executions(project), "the handler to start")
    # What another run's claim writes once it judged the lease expired: its own token.
    with engine.begin() as conn:
        conn.execute(update(tasks).where(tasks.c.id == task_id).values(claim_token="another"))

    code, out, err = run.finish()
    lines = executions(project)
    assert "told LeaseLost True" in lines, lines  # at the next renewal (every lease / 3 s)
    assert code == 0, out + err
    assert f"task {task_id} patient: lease lost: another run claimed it again" in err, err
    assert "Traceback" not in out + err
    row = task_rows(engine)[task_id]
    assert row.claim_token == "another"  # the outcome was not written over the other claim
