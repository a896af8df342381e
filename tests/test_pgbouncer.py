"""tickrun behind PgBouncer in transaction pooling mode (SPEC section 9), with real processes.

The ``pgbouncer`` fixture (tests/conftest.py) starts a PgBouncer of the test session in front
of the test PostgreSQL: transaction pooling, 3 server connections per database, handed out in
turn, so consecutive transactions of one client land on different server connections and many
clients share few. Each test gets a fresh database through it, with no schema until the test
runs ``tickrun init``. Without a ``pgbouncer`` binary these tests are skipped, unless
TICKRUN_TEST_REQUIRE_PGBOUNCER=1 (``.ci/run``), where they fail.

What breaks behind such a pooler is session state: psycopg 3's automatic prepared statements
(``prepared statement "_pg3_0" already exists`` / ``does not exist``), session settings,
session advisory locks. Every command's output is checked for driver errors.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text, update

from tests.conftest import SERVERS, PgBouncer, tickrun, write_app
from tests.helpers.processes import APP as WORKER_APP
from tests.helpers.processes import (
    DEADLINE,
    WORK,
    app_for,
    app_source,
    executions,
    ran,
    start_run,
    start_worker,
    started,
    task_rows,
    twin_app,
    wait_until,
)
from tickrun.database import open_engine
from tickrun.lifecycle import DEAD, SUCCEEDED
from tickrun.schema import attempts, runs, schedules, tasks

pytestmark = pytest.mark.slow

CYCLE = """
@app.task
def hello(n):
    note(f"hello {n}")


@app.task(max_attempts=1)
def fragile(n):
    if not os.path.exists(here("fixed")):
        raise RuntimeError(f"fragile {n} is not fixed yet")
    note(f"fragile {n}")


@app.schedule("*/5 * * * *")
def tick():
    note("tick")
"""

DRIVER_ERRORS = ("Traceback", "prepared statement", "error:", "warning")


def cli(*args: str, project: Path, db: str, ref: str, expect: int = 0) -> str:
    """``tickrun ARGS`` through PgBouncer; its stdout, after checking its exit code and that
    stderr holds no driver error."""
    done = tickrun(*args, cwd=project, db=db, env={"TICKRUN_APP": ref}, timeout=DEADLINE)
    assert done.returncode == expect, f"tickrun {' '.join(args)}: {done.stdout}{done.stderr}"
    for word in DRIVER_ERRORS:
        assert word not in done.stderr, f"tickrun {' '.join(args)}: {done.stderr}"
    return done.stdout


def test_the_core_cycle_through_pgbouncer(bounced_url: str, project: Path) -> None:
    url = bounced_url
    ref = write_app(project, app_source(CYCLE))
    assert "created" in cli("init", project=project, db=url, ref=ref)
    cli("init", project=project, db=url, ref=ref)  # again: idempotent

    # Plain enqueues: from the CLI, then many on one pooled connection (the raw DB-API path).
    def enqueue(n: int, *more: str) -> dict[str, object]:
        args = ["enqueue", "hello", "--payload", json.dumps({"n": n}), *more, "--json"]
        return json.loads(cli(*args, project=project, db=url, ref=ref))

    plain = [enqueue(n)["id"] for n in range(3)]
    app = twin_app(url, "hello", "fragile", fragile={"max_attempts": 1})
    plain += [app.enqueue("hello", {"n": n}) for n in range(3, 30)]

    # Keyed: the second enqueue of a key returns the first task.
    first, again = enqueue(30, "--key", "k30"), enqueue(30, "--key", "k30")
    assert first["duplicate"] is False and again == {"id": first["id"], "duplicate": True}
    keyed = [first["id"]]
    for n in range(31, 41):
        result = app.enqueue_result("hello", {"n": n}, key=f"k{n}")
        assert result.duplicate is False
        assert app.enqueue_result("hello", {"n": n}, key=f"k{n}") == (result.id, True)
        keyed.append(result.id)

    # Transactional: the application's own engine (which, behind PgBouncer, must not prepare
    # statements either: README) writes its row and the task in one transaction.
    own = create_engine(url, connect_args={"prepare_threshold": None})
    with own.begin() as conn:
        conn.execute(text("CREATE TABLE orders (n integer PRIMARY KEY)"))
    transactional = []
    for n in range(41, 51):
        with own.begin() as conn:
            conn.execute(text("INSERT INTO orders VALUES (:n)"), {"n": n})
            transactional.append(app.enqueue("hello", {"n": n}, connection=conn))
    with own.connect() as conn:
        trans = conn.begin()
        app.enqueue("hello", {"n": 99}, connection=conn)
        conn.execute(text("INSERT INTO orders VALUES (99)"))
        trans.rollback()
    with own.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM orders")).scalar_one() == 10
    own.dispose()

    fragile = app.enqueue_many(("fragile", {"n": n}) for n in range(3))
    hello_ids = plain + keyed + transactional
    assert len(set(hello_ids)) == 51

    # The first run: every hello succeeds, every fragile task dies (max_attempts=1): exit 1.
    out = cli("run", "--concurrency", "2", project=project, db=url, ref=ref, expect=1)
    assert "claimed 54, succeeded 51, retried 0, dead 3" in out, out
    dlq = json.loads(cli("dlq", "--json", project=project, db=url, ref=ref))
    assert sorted(row["id"] for row in dlq) == sorted(fragile)
    assert all("is not fixed yet" in row["last_error"] for row in dlq)
    assert "dead" in cli("check", project=project, db=url, ref=ref, expect=1)

    # Fixed: back from the dead-letter queue, due at once.
    (project / "fixed").touch()
    cli("dlq", "retry", "--all", project=project, db=url, ref=ref)
    due = json.loads(cli("due", "--json", project=project, db=url, ref=ref))
    assert sorted(row["id"] for row in due) == sorted(fragile)
    assert {row["status"] for row in due} == {"pending"}

    # The first run saw the schedule; make its last fire an hour ago, so one is due now.
    engine = open_engine(url)
    with engine.begin() as conn:
        stamp = datetime.now(UTC) - timedelta(hours=1)
        moved = conn.execute(update(schedules).values(last_fire_at=stamp)).rowcount
    assert moved == 1
    out = cli("run", "--concurrency", "2", project=project, db=url, ref=ref)
    assert "claimed 4, succeeded 4, retried 0, dead 0" in out, out
    (listed,) = json.loads(cli("schedules", "--json", project=project, db=url, ref=ref))
    assert listed["name"] == "tick" and listed["last_enqueued_at"] is not None

    assert json.loads(cli("due", "--json", project=project, db=url, ref=ref)) == []
    assert cli("check", "--max-silence", "10m", project=project, db=url, ref=ref).startswith("OK")
    shown = json.loads(cli("show", str(fragile[0]), "--json", project=project, db=url, ref=ref))
    assert shown["status"] == SUCCEEDED
    assert [h["outcome"] for h in shown["history"]] == ["failed", "succeeded"]

    # Every handler ran exactly once; the table agrees.
    expected = [f"hello {n}" for n in range(51)] + [f"fragile {n}" for n in range(3)] + ["tick"]
    assert Counter(executions(project)) == Counter(expected)
    rows = task_rows(engine)
    assert Counter(r.status for r in rows.values()) == {SUCCEEDED: 55}
    with engine.connect() as conn:
        outcomes = dict(
            conn.execute(
                select(attempts.c.outcome, func.count()).group_by(attempts.c.outcome)
            ).all()
        )
    assert outcomes == {"succeeded": 55, "failed": 3}
    assert DEAD not in {r.status for r in rows.values()}


SERVER_BACKENDS = text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d")


def test_overlapping_runs_through_pgbouncer_execute_every_task_once(
    bounced_url: str, project: Path
) -> None:
    url = bounced_url
    database = url.rsplit("/", 1)[1]
    # test_concurrency's handler waits for a second run at work: the runs overlap by design.
    ref = write_app(project, app_source(WORK))
    cli("init", project=project, db=url, ref=ref)
    app = twin_app(url, "work")
    ids = app.enqueue_many(("work", {"n": n}) for n in range(2000))
    assert len(set(ids)) == 2000

    procs = [start_run(project, url, ref, "--concurrency", "2", tag=f"run{i}") for i in range(4)]
    # While they run, the server never sees more than PgBouncer's pool: the runs' many client
    # connections really share 3 server connections, transaction by transaction.
    # Counted on the PostgreSQL server itself, not through PgBouncer.
    admin = create_engine(SERVERS["postgresql"], connect_args={"prepare_threshold": None})
    most = 0
    end = time.monotonic() + 3 * DEADLINE
    with admin.connect() as conn:
        while any(p.proc.poll() is None for p in procs) and time.monotonic() < end:
            most = max(most, conn.execute(SERVER_BACKENDS, {"d": database}).scalar_one())
            conn.rollback()  # a fresh snapshot of pg_stat_activity each time
            time.sleep(0.05)
    admin.dispose()
    results = [p.finish(timeout=max(end - time.monotonic(), 1)) for p in procs]
    assert 0 < most <= PgBouncer.POOL_SIZE, most

    for code, out, err in results:
        assert code == 0, out + err
        assert err == "", err  # no warning (a stale outcome means a double claim), no traceback
    lines = executions(project)
    assert len(lines) == 2000, f"{len(lines)} executions for 2000 tasks"
    assert Counter(lines) == Counter(str(i) for i in ids)

    engine = open_engine(url)
    rows = task_rows(engine)
    assert Counter((r.status, r.attempts) for r in rows.values()) == {(SUCCEEDED, 1): 2000}
    with engine.connect() as conn:
        outcomes = dict(
            conn.execute(
                select(attempts.c.outcome, func.count()).group_by(attempts.c.outcome)
            ).all()
        )
        recorded = conn.execute(select(runs.c.claimed, runs.c.exit_code)).all()
        left = conn.execute(
            select(func.count()).select_from(tasks).where(tasks.c.status != SUCCEEDED)
        ).scalar_one()
    assert outcomes == {"succeeded": 2000} and left == 0
    assert len(recorded) == 4 and {code for _, code in recorded} == {0}
    assert sum(claimed for claimed, _ in recorded) == 2000
    assert sum(claimed > 0 for claimed, _ in recorded) >= 2, recorded  # the work was shared


def test_a_worker_behind_pgbouncer_polls_and_leaves_no_listen_behind(
    bounced_url: str, project: Path, pgbouncer: PgBouncer
) -> None:
    """PgBouncer's transaction pooling hands LISTEN's server connection to other clients, so
    other clients' notifications never reach the worker, and the LISTEN stays on that server
    connection after the worker's transaction: every enqueue's NOTIFY then reaches a server
    connection no client is linked to, which PgBouncer logs as ``got packet 'A' from server
    when not linked``. The worker must see the pooler before it listens, say once that it
    polls, and leave nothing behind over its life (tasks enqueued and run meanwhile)."""
    url = bounced_url
    ref = write_app(project, WORKER_APP)
    cli("init", project=project, db=url, ref=ref)
    seen = len(pgbouncer.log_text())
    worker = start_worker(project, url, "--poll", "0.5s")
    wait_until(lambda: started(worker), "the worker to start")
    app = app_for(url)
    for n in range(6):
        app.enqueue("hello", {"n": n})
        wait_until(lambda n=n: ran(project, n), f"task {n} to run", timeout=60)
    code, out, err = worker.stop()
    assert code == 0, err
    assert err.count("no LISTEN/NOTIFY (") == 1, err
    assert "connection pooler" in err and "polling instead" in err and "claimed 6" in out
    assert "Traceback" not in err, err
    unlinked = [line for line in pgbouncer.log_text()[seen:].splitlines() if "not linked" in line]
    assert unlinked == [], unlinked
