"""Task and run ids are never issued twice, on every database, and `tickrun init` upgrades a
version-1 SQLite database (whose ids could be reused) in place.

Handlers are told to pass ``TaskContext.task_id`` to payment APIs as an idempotency key, so a
reused id could silently skip a charge.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from freezegun import freeze_time
from sqlalchemy import Engine, delete, func, inspect, select, update

from tests.conftest import ROOT, cli_env, tickrun
from tests.helpers.apps import T0, new_app, run_bounded
from tickrun import dialects, maintenance, store
from tickrun.database import open_engine
from tickrun.schema import SCHEMA_VERSION, attempts, meta, runs, tasks

V1_SCHEMA = ROOT / "tests" / "data" / "schema_v1.sqlite.sql"


def newest(engine: Engine, table_id) -> int:  # noqa: ANN001 - a Column
    with engine.connect() as conn:
        return conn.execute(select(func.max(table_id))).scalar_one()


def test_pruning_the_newest_tasks_never_gives_their_ids_again(db_url: str) -> None:
    app = new_app(db_url)
    app.task(name="work")(lambda: None)
    with freeze_time(T0):
        first = app.enqueue("work", key="k")
        second = app.enqueue("work")
        run_bounded(app)
    with freeze_time(T0 + timedelta(seconds=5)):
        assert maintenance.prune(app.engine, T0 + timedelta(seconds=5), older_than=1) == 2
        again = app.enqueue("work", key="k")
        plain = app.enqueue("work")
        [many] = app.enqueue_many([("work", {})])
    assert min(again, plain, many) > max(first, second), (first, second, again, plain, many)


def test_purging_the_newest_dead_tasks_never_gives_their_ids_again(db_url: str) -> None:
    app = new_app(db_url)

    @app.task(name="boom", max_attempts=1)
    def boom() -> None:
        raise RuntimeError("no")

    with freeze_time(T0):
        dead = app.enqueue("boom")
        run_bounded(app)
        assert len(maintenance.purge_dead(app.engine, T0).rows) == 1
        assert app.enqueue("boom") > dead


def test_the_id_of_an_enqueue_that_rolled_back_is_issued_again_on_sqlite_only(
    db_url: str, backend: str
) -> None:
    """What docs/concepts/guarantees.md says: SQLite's AUTOINCREMENT counter is part of the
    transaction, so a rollback takes the id back; PostgreSQL's sequences and InnoDB's
    counter never go back."""
    app = new_app(db_url)
    app.task(name="work")(lambda: None)
    with app.engine.connect() as conn, conn.begin() as trans:
        given = app.enqueue("work", connection=conn)
        trans.rollback()
    committed = app.enqueue("work")
    if backend == "sqlite":
        assert committed == given
    else:
        assert committed > given
    guarantees = " ".join((ROOT / "docs" / "concepts" / "guarantees.md").read_text().split())
    assert (
        "On SQLite, the id of a task enqueued in a transaction that rolls back "
        "(`connection=`) is issued again" in guarantees
    )


def test_a_deleted_newest_run_never_gives_its_id_again(db_url: str) -> None:
    app = new_app(db_url)
    with freeze_time(T0):
        first = store.start_run(app.engine, host="h", worker="w", pid=1, now=T0)
        with app.engine.begin() as conn:
            conn.execute(delete(runs).where(runs.c.id == first))
        assert store.start_run(app.engine, host="h", worker="w", pid=1, now=T0) > first


def test_the_cli_reproduction_gets_a_new_id(db_url: str, project: Path) -> None:
    """The issue's steps: enqueue with a key, run, prune after a second, enqueue again."""
    (project / "jobs.py").write_text(
        "from tickrun import App\napp = App()\n\n@app.task\ndef work():\n    pass\n"
    )
    env = {"TICKRUN_APP": "jobs:app"}
    first = tickrun("enqueue", "work", "--key", "k", "--json", cwd=project, db=db_url, env=env)
    assert first.returncode == 0, first.stderr
    assert tickrun("run", cwd=project, db=db_url, env=env).returncode == 0
    engine = open_engine(db_url)
    with engine.begin() as conn:  # finished long enough ago, without waiting a second
        conn.execute(tasks.update().values(finished_at=T0))
    pruned = tickrun("prune", "--older-than", "1s", cwd=project, db=db_url, env=env)
    assert pruned.returncode == 0, pruned.stderr
    second = tickrun("enqueue", "work", "--key", "k", "--json", cwd=project, db=db_url, env=env)
    assert second.returncode == 0, second.stderr
    assert '"duplicate": false' in second.stdout
    assert _id(second.stdout) > _id(first.stdout), (first.stdout, second.stdout)


def _id(out: str) -> int:
    import json

    return int(json.loads(out)["id"])


# -- upgrading a version-1 SQLite database ----------------------------------------------------


def v1_database(path: Path) -> str:
    """A version-1 database holding tasks 1-4 (task 5 was pruned), an attempt of task 7 (whose
    task row is gone), and runs 1-3 (run 4 deleted)."""
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA.read_text())
    now = "2026-04-06 10:00:00.000000"
    for n in range(1, 6):
        conn.execute(
            "INSERT INTO tickrun_tasks (id, name, queue, priority, status, payload, key, run_at,"
            " claimable_at, attempts, max_attempts, created_at) VALUES"
            " (?, 'work', 'default', 0, 'pending', ?, ?, ?, ?, 0, 3, ?)",
            (n, f'{{"n": {n}}}', f"key-{n}", now, now, now),
        )
    conn.execute(
        "INSERT INTO tickrun_attempts (task_id, attempt, finished_at, outcome)"
        " VALUES (7, 1, ?, 'succeeded')",
        (now,),
    )
    for n in range(1, 5):
        conn.execute(
            "INSERT INTO tickrun_runs (id, started_at, host, worker, pid, claimed, succeeded,"
            " retried, dead) VALUES (?, ?, 'h', 'w', 1, 0, 0, 0, 0)",
            (n, now),
        )
    conn.execute("DELETE FROM tickrun_tasks WHERE id = 5")
    conn.execute("DELETE FROM tickrun_runs WHERE id = 4")
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def schema_sql(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(
            conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"
                " AND name != 'sqlite_sequence'"
            ).fetchall()
        )
    finally:
        conn.close()


def test_init_upgrades_a_v1_sqlite_database_from_several_processes_at_once(
    tmp_path: Path, project: Path
) -> None:
    url = v1_database(tmp_path / "old.db")
    blocked = tickrun("due", cwd=project, db=url)
    assert blocked.returncode == 2 and "run `tickrun init`" in blocked.stderr, blocked.stderr
    with sqlite3.connect(tmp_path / "old.db") as conn:
        cursor = conn.execute("SELECT * FROM tickrun_tasks ORDER BY id")
        rows_before = cursor.fetchall()
        old_columns = [d[0] for d in cursor.description]
    # Columns of later versions are added empty; the old ones keep every value.
    kept = ", ".join(f'"{c}"' for c in old_columns)

    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tickrun", "init"],
            cwd=project,
            env=cli_env(url, None),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out + err
    assert sum("upgraded" in out for out, _ in outputs) == 1, outputs

    with sqlite3.connect(tmp_path / "old.db") as conn:
        after = conn.execute(f"SELECT {kept} FROM tickrun_tasks ORDER BY id").fetchall()
        assert after == rows_before
        assert conn.execute("SELECT DISTINCT group_key FROM tickrun_tasks").fetchall() == [(None,)]
        assert conn.execute("SELECT count(*) FROM tickrun_attempts").fetchone() == (1,)
        version = conn.execute("SELECT value FROM tickrun_meta").fetchone()
    assert version == (str(SCHEMA_VERSION),)

    # The upgraded schema is the one a fresh `tickrun init` creates.
    fresh = tmp_path / "fresh.db"
    assert tickrun("init", cwd=project, db=f"sqlite:///{fresh}").returncode == 0
    assert schema_sql(tmp_path / "old.db") == schema_sql(fresh)

    engine = open_engine(url)
    app = new_app(url)
    app.task(name="work")(lambda n: None)
    # Above task 7, which an attempt row still names, not only above the rows left (4).
    assert app.enqueue("work", {"n": 8}) == 8
    # Run 4 was deleted before the upgrade: no row remembers it, so its id is given again once;
    # from the upgrade on, a deleted id never is.
    assert store.start_run(engine, host="h", worker="w", pid=1, now=T0) == 4
    with engine.begin() as conn:
        conn.execute(delete(tasks).where(tasks.c.id == 8))
        conn.execute(delete(attempts))
        conn.execute(delete(runs).where(runs.c.id == 4))
    assert store.start_run(engine, host="h", worker="w", pid=1, now=T0) == 5
    assert app.enqueue("work", {"n": 9}) == 9
    assert newest(engine, tasks.c.id) == 9
    assert tickrun("due", cwd=project, db=url).returncode == 0


def test_init_adds_version_3_columns_and_tables_in_place(db_url: str, project: Path) -> None:
    """A version 2 schema (no flow-control columns or tables) gets them from `tickrun init`,
    rows kept, and then holds its limits."""
    engine = open_engine(db_url)
    app = new_app(db_url)
    app.task(name="work")(lambda n: None)
    kept = app.enqueue("work", {"n": 1})
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE tickrun_limits")
        conn.exec_driver_sql("DROP TABLE tickrun_starts")
        on = " ON tickrun_tasks" if dialects.kind(conn) == "mysql" else ""
        conn.exec_driver_sql(f"DROP INDEX ix_tickrun_tasks_group{on}")
        for column in ("group_key", "group_limit", "group_order"):
            conn.exec_driver_sql(f"ALTER TABLE tickrun_tasks DROP COLUMN {column}")
        conn.execute(update(meta).values(value="2"))
    engine.dispose()

    result = tickrun("init", cwd=project, db=db_url)
    assert result.returncode == 0, result.stderr
    assert "upgraded from version 2" in result.stdout
    inspector = inspect(engine)
    assert {"group_key", "group_limit", "group_order"} <= {
        c["name"] for c in inspector.get_columns("tickrun_tasks")
    }
    assert "ix_tickrun_tasks_group" in {i["name"] for i in inspector.get_indexes("tickrun_tasks")}
    assert {"tickrun_limits", "tickrun_starts"} <= set(inspector.get_table_names())
    assert newest(engine, tasks.c.id) == kept

    ordered = new_app(db_url)
    ordered.task(name="step", concurrency_key="k", ordered=True)(lambda k: None)
    first, _ = (ordered.enqueue("step", {"k": 1}, run_at=T0) for _ in range(2))
    batch = store.claim(
        engine, names=["step"], queues=[], limit=5, worker="w", leases={"step": 60}, now=T0
    )
    assert [c.id for c in batch.tasks] == [first]


def test_init_adds_version_4_heartbeat_and_notify_trigger_in_place(
    db_url: str, project: Path
) -> None:
    """A version 3 schema gets the runs' heartbeat column (and on PostgreSQL the trigger that
    wakes workers) from `tickrun init`, rows kept."""
    engine = open_engine(db_url)
    app = new_app(db_url)
    app.task(name="work")(lambda n: None)
    kept = app.enqueue("work", {"n": 1})
    with engine.begin() as conn:
        postgres = dialects.kind(conn) == "postgresql"
        if postgres:
            conn.exec_driver_sql("DROP TRIGGER tickrun_tasks_inserted ON tickrun_tasks")
            conn.exec_driver_sql("DROP TRIGGER tickrun_tasks_pending ON tickrun_tasks")
        conn.exec_driver_sql("ALTER TABLE tickrun_runs DROP COLUMN heartbeat_at")
        conn.execute(update(meta).values(value="3"))
    engine.dispose()

    result = tickrun("init", cwd=project, db=db_url)
    assert result.returncode == 0, result.stderr
    assert "upgraded from version 3" in result.stdout
    assert "heartbeat_at" in {c["name"] for c in inspect(engine).get_columns("tickrun_runs")}
    assert newest(engine, tasks.c.id) == kept
    if postgres:
        with engine.connect() as conn:
            names = set(
                conn.exec_driver_sql(
                    "SELECT tgname FROM pg_trigger WHERE tgrelid = 'tickrun_tasks'::regclass"
                ).scalars()
            )
        assert {"tickrun_tasks_inserted", "tickrun_tasks_pending"} <= names
