"""Flow-control limits held by overlapping ``tickrun run`` processes on every database (8 on
PostgreSQL and MariaDB, 4 on SQLite), counted from the handlers' own log.

Handlers append ``start``/``end`` lines with O_APPEND (one ``write()`` each), so the file's
order is the order things happened in: a task of a group is in flight between its ``start``
and ``end`` lines, and its outcome is recorded only after ``end``. A limit violation is a
line sequence, whatever the timing.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from tests.conftest import write_app
from tests.helpers.locks import sessions_waiting
from tests.helpers.processes import (
    DEADLINE,
    app_source,
    executions,
    start_run,
    task_rows,
    wait_until,
)
from tickrun import App
from tickrun.clock import now as clock_now
from tickrun.lifecycle import RUNNING, SUCCEEDED
from tickrun.schema import limits

pytestmark = pytest.mark.slow

# The first tasks of a group wait (bounded) until the group has as many in flight as its limit
# allows, so the runs press against the limit by construction: without the limit, more would
# start, and the log would show it.
HANDLERS = """
import glob

LIMIT = 2


def in_flight(group):
    return len(glob.glob(here(f"flight-{group}-*")))


def press(ctx):
    reached = here(f"reached-{ctx.group}")
    end = time.monotonic() + 30
    while not os.path.exists(reached) and time.monotonic() < end:
        if in_flight(ctx.group) >= LIMIT:
            open(reached, "w").close()
        time.sleep(0.01)


def step(ctx, fail_first=False, pressing=False):
    flag = here(f"flight-{ctx.group}-{ctx.task_id}")
    open(flag, "w").close()
    note(f"start {ctx.group} {ctx.task_id} {ctx.claimed_at.isoformat()}")
    if pressing:
        press(ctx)
    time.sleep(0.01)
    note(f"end {ctx.group} {ctx.task_id}")
    os.remove(flag)
    if fail_first and ctx.attempt == 1:
        raise Retry(delay=0)


@app.task(context=True, concurrency=LIMIT, concurrency_key="account")
def charge(ctx, account, n):
    step(ctx, pressing=True)


@app.task(context=True, ordered=True, concurrency_key="account", max_attempts=3)
def event(ctx, account, n):
    step(ctx, fail_first=n % 5 == 2)


@app.task(context=True, rate="10/s")
def call_api(ctx, n):
    step(ctx)
"""


def twin(db_url: str) -> App:
    app = App(database_url=db_url)
    app.task(name="charge", concurrency=2, concurrency_key="account")(lambda account, n: None)
    app.task(name="event", ordered=True, concurrency_key="account")(lambda account, n: None)
    app.task(name="call_api", rate="10/s")(lambda n: None)
    app.use_database(db_url)
    return app


def overlapping_runs(project: Path, db_url: str, backend: str, ref: str) -> None:
    count = 4 if backend == "sqlite" else 8
    procs = [
        start_run(project, db_url, ref, "--concurrency", "4", tag=f"run{i}") for i in range(count)
    ]
    for proc in procs:
        code, out, err = proc.finish(timeout=3 * DEADLINE)
        assert code == 0, out + err
        assert "Traceback" not in out + err and "stale outcome" not in out + err, out + err


def events(project: Path) -> list[list[str]]:
    return [line.split(" ") for line in executions(project)]


def max_in_flight(lines: list[list[str]]) -> dict[str, int]:
    """Per group, the most tasks between their start and end lines at once."""
    current: Counter[str] = Counter()
    most: Counter[str] = Counter()
    for kind, group, *_ in lines:
        current[group] += 1 if kind == "start" else -1
        most[group] = max(most[group], current[group])
    return dict(most)


def test_per_key_concurrency_holds_across_overlapping_runs(
    db_url: str, backend: str, engine: Engine, project: Path
) -> None:
    ref = write_app(project, "from tickrun import Retry\n" + app_source(HANDLERS))
    app = twin(db_url)
    for n in range(25):
        for account in range(6):
            app.enqueue("charge", {"account": account, "n": n})
    overlapping_runs(project, db_url, backend, ref)

    lines = events(project)
    starts = [line for line in lines if line[0] == "start"]
    assert len(starts) == 150 and len({line[2] for line in starts}) == 150
    most = max_in_flight(lines)
    assert set(most) == {f"account={a}" for a in range(6)}
    assert max(most.values()) <= 2, most  # the limit
    assert min(most.values()) == 2, most  # and the runs did press against it
    assert {r.status for r in task_rows(engine).values()} == {SUCCEEDED}


def test_ordered_groups_start_in_enqueue_order_one_at_a_time(
    db_url: str, backend: str, engine: Engine, project: Path
) -> None:
    ref = write_app(project, "from tickrun import Retry\n" + app_source(HANDLERS))
    app = twin(db_url)
    order: dict[str, list[str]] = defaultdict(list)
    for n in range(15):
        for account in range(10):
            task_id = app.enqueue("event", {"account": account, "n": n})
            order[f"account={account}"].append(str(task_id))
    overlapping_runs(project, db_url, backend, ref)

    lines = events(project)
    assert max(max_in_flight(lines).values()) == 1
    started: dict[str, list[str]] = defaultdict(list)
    for kind, group, task_id, *_ in lines:
        if kind == "start" and (not started[group] or started[group][-1] != task_id):
            started[group].append(task_id)  # a retry follows its first attempt directly
    assert started == order
    retried = Counter(line[2] for line in lines if line[0] == "start")
    assert sum(n == 2 for n in retried.values()) == 30  # n % 5 == 2: 3 per group
    assert {(r.status, r.attempts) for r in task_rows(engine).values()} == {
        (SUCCEEDED, 1),
        (SUCCEEDED, 2),
    }


def test_a_rate_is_held_by_overlapping_runs_as_a_sliding_window(
    db_url: str, backend: str, engine: Engine, project: Path
) -> None:
    ref = write_app(project, "from tickrun import Retry\n" + app_source(HANDLERS))
    app = twin(db_url)
    app.enqueue_many(("call_api", {"n": n}) for n in range(45))
    overlapping_runs(project, db_url, backend, ref)

    claimed = sorted(
        datetime.fromisoformat(line[3]) for line in events(project) if line[0] == "start"
    )
    assert len(claimed) == 45
    # Any 11 consecutive starts span at least the period: never 11 in one second.
    spans = [claimed[i + 10] - claimed[i] for i in range(len(claimed) - 10)]
    assert min(spans) >= timedelta(seconds=1), min(spans)
    assert {r.status for r in task_rows(engine).values()} == {SUCCEEDED}


KILLABLE = """
@app.task(context=True, concurrency=1, concurrency_key="account", lease=8)
def charge(ctx, account, n):
    note(f"start {ctx.task_id} {ctx.claimed_at.isoformat()}")
    if n == 0 and ctx.attempt == 1:
        block_until("never")  # killed here, holding account 1's only slot
"""


def test_a_killed_run_frees_its_keys_slot_after_the_lease(
    db_url: str, engine: Engine, project: Path
) -> None:
    ref = write_app(project, app_source(KILLABLE))
    app = App(database_url=db_url)
    app.task(name="charge", concurrency=1, concurrency_key="account", lease=8)(
        lambda account, n: None
    )
    app.use_database(db_url)
    first = app.enqueue("charge", {"account": 1, "n": 0})
    second = app.enqueue("charge", {"account": 1, "n": 1})

    holder = start_run(project, db_url, ref, tag="holder")
    wait_until(lambda: executions(project), "the first task to start")
    holder.proc.kill()
    holder.proc.wait()
    lease_until = task_rows(engine)[first].lease_until
    assert task_rows(engine)[first].status == RUNNING

    code, out, err = start_run(project, db_url, ref, tag="early").finish()
    assert code == 0, out + err
    wait_until(lambda: clock_now() > lease_until, "the dead run's lease to expire", 30)
    code, out, err = start_run(project, db_url, ref, tag="late").finish()
    assert code == 0, out + err

    starts = {}
    for line in executions(project):
        _, task_id, at = line.split(" ")
        starts.setdefault(int(task_id), []).append(datetime.fromisoformat(at))
    # The second task started only once the dead run's lease was over, and the first ran again.
    assert len(starts[second]) == 1 and starts[second][0] >= lease_until
    assert len(starts[first]) == 2
    rows = task_rows(engine)
    assert (rows[first].status, rows[first].attempts) == (SUCCEEDED, 2)
    assert (rows[second].status, rows[second].attempts) == (SUCCEEDED, 1)


# Two limits whose names are not in alphabetical order: a run's start registers them, claims
# lock them. `other` is never enqueued; its limit is there to be locked.
RATED = """
@app.task(context=True, rate="3/2s")
def rated(ctx, n):
    note(f"start {ctx.task_id} {time.time()!r}")


@app.task(rate="1/h")
def other(n):
    pass
"""


def handler_starts(project: Path) -> list[float]:
    """When the handlers began, by their own clock (not the claim time tickrun recorded)."""
    return sorted(float(line.split()[2]) for line in executions(project))


def assert_rate(starts: list[float], count: int, period: float) -> None:
    """No ``count + 1`` handler starts within one period. A handler starts a little after
    its claim commits, and not always as soon after it on a loaded machine: a quarter of
    the period is allowed for that, far less than the whole windows the bugs made."""
    spans = [starts[i + count] - starts[i] for i in range(len(starts) - count)]
    assert min(spans) >= period * 0.75, spans


def rated_twin(url: str) -> App:
    app = App(database_url=url)
    app.task(name="rated", rate="3/2s")(lambda n: None)
    app.task(name="other", rate="1/h")(lambda n: None)
    app.use_database(url)
    return app


def test_overlapping_runs_with_two_limits_never_deadlock(
    server_url: str, server_engine: Engine, project: Path
) -> None:
    ref = write_app(project, app_source(RATED))
    app = rated_twin(server_url)
    for _ in range(2):  # the deadlock came in most rounds
        (project / "executions.log").unlink(missing_ok=True)
        app.enqueue_many(("rated", {"n": n}) for n in range(12))
        procs = [
            start_run(
                project,
                server_url,
                ref,
                "--concurrency",
                "2",
                "--max-time",
                "60s",
                tag=f"run{i}",
            )
            for i in range(8)
        ]
        for proc in procs:
            code, out, err = proc.finish(timeout=3 * DEADLINE)
            assert code == 0, out + err  # exit 3 with "deadlock detected" before
            assert "Traceback" not in out + err, out + err
        assert len(executions(project)) == 12
        assert_rate(handler_starts(project), 3, 2.0)
    assert {r.status for r in task_rows(server_engine).values()} == {SUCCEEDED}


def test_a_claim_that_waited_for_a_limits_lock_counts_its_starts_from_after_the_wait(
    server_url: str, server_engine: Engine, project: Path
) -> None:
    ref = write_app(project, app_source(RATED))
    app = rated_twin(server_url)
    app.enqueue_many(("rated", {"n": n}) for n in range(9))
    run = start_run(project, server_url, ref, "--concurrency", "3", "--max-time", "60s")
    wait_until(lambda: len(executions(project)) == 3, "the first three starts")
    first = handler_starts(project)[0]
    # The run's next claim comes 2 s after its first and waits for this lock; held until just
    # before the claim after it. Its starts were logged at the time it read before the wait.
    with server_engine.connect() as conn, conn.begin():
        conn.execute(select(limits.c.scope).where(limits.c.scope == "task:rated").with_for_update())
        wait_until(lambda: sessions_waiting(server_engine), "the run's claim to wait for the lock")
        wait_until(lambda: time.time() > first + 3.9, "the lock to have been held long enough")
    code, out, err = run.finish()
    assert code == 0, out + err
    starts = handler_starts(project)
    assert len(starts) == 9
    assert_rate(starts, 3, 2.0)
