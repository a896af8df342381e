"""``tickrun worker`` with real processes on every database: woken by NOTIFY (PostgreSQL) or
the database file (SQLite), never running a rolled-back enqueue, stopping on SIGTERM as a run
does, outliving the database going away (a TCP proxy of the test's own is killed and started
again, never the machine's server), one task per schedule occurrence beside other workers and
a cron run, and one-line errors at start. Every wait is on a condition with a deadline."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

from tests.conftest import ServerDatabases, empty_tables, tickrun, write_app
from tests.helpers.processes import (
    APP,
    RunProcess,
    WorkerProcess,
    app_for,
    app_source,
    executions,
    ran,
    start_run,
    start_worker,
    started,
    wait_until,
)
from tickrun import App
from tickrun.database import open_engine
from tickrun.lifecycle import SUCCEEDED
from tickrun.schema import attempts, runs, schedules, tasks

pytestmark = pytest.mark.slow

SCHEDULED = APP + 'app.schedule("* * * * *", task="hello", payload={"n": -1}, name="minutely")\n'


def test_a_task_enqueued_after_start_is_picked_up_at_once(
    db_url: str, project: Path, backend: str
) -> None:
    """PostgreSQL (NOTIFY) and SQLite (the file) wake a worker polling every 10 minutes."""
    write_app(project, APP)
    poll = "1s" if backend == "mysql" else "10m"
    worker = start_worker(project, db_url, "--poll", poll)
    wait_until(lambda: started(worker), "the worker to start")
    app = app_for(db_url)
    for n in range(3):
        began = time.time()
        app.enqueue("hello", {"n": n})
        at = wait_until(lambda n=n: ran(project, n), f"task {n} to run", timeout=60)
        # Far below the poll interval; generous for a loaded 2-core machine.
        assert at - began < (3.0 if backend != "mysql" else 4.0), (n, at - began)
    code, out, err = worker.stop()
    assert code == 0, err
    assert "no LISTEN/NOTIFY" not in err
    assert "tickrun worker" in out and "claimed 3" in out
    engine = open_engine(db_url)
    with engine.connect() as conn:
        row = conn.execute(select(runs).order_by(runs.c.id.desc()).limit(1)).one()
    assert row.heartbeat_at is not None and row.finished_at is not None and row.exit_code == 0


def test_a_task_enqueued_in_a_rolled_back_transaction_never_runs(
    db_url: str, project: Path
) -> None:
    write_app(project, APP)
    worker = start_worker(project, db_url, "--poll", "1s")
    wait_until(lambda: started(worker), "the worker to start")
    app = app_for(db_url)
    engine = open_engine(db_url)
    with engine.connect() as conn:
        tx = conn.begin()
        app.enqueue("hello", {"n": 1}, connection=conn)
        tx.rollback()
    app.enqueue("hello", {"n": 2})
    wait_until(lambda: ran(project, 2), "the committed task to run")
    code, _, err = worker.stop()
    assert code == 0, err
    assert ran(project, 1) is None
    assert [line.split()[0] for line in executions(project)] == ["2"]


def test_sigterm_mid_task_lets_it_finish_within_the_grace(db_url: str, project: Path) -> None:
    write_app(project, APP)
    worker = start_worker(project, db_url, "--poll", "1s", "--grace", "60s")
    wait_until(lambda: started(worker), "the worker to start")
    task = app_for(db_url).enqueue("slow", {"n": 1})
    wait_until(lambda: "start 1" in executions(project), "the task to start")
    worker.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # not a wait for a condition: gives the signal a chance to be seen early
    assert worker.proc.poll() is None, "the worker must wait for its in-flight task"
    (project / "go").touch()
    code, out, err = worker.stop()
    assert code == 0, err
    assert "stopped by signal" in out
    assert executions(project) == ["start 1", "end 1"]
    with open_engine(db_url).connect() as conn:
        status = conn.execute(select(tasks.c.status).where(tasks.c.id == task)).scalar()
    assert status == SUCCEEDED


def test_sigterm_past_the_grace_interrupts_and_releases(db_url: str, project: Path) -> None:
    write_app(project, APP)
    worker = start_worker(project, db_url, "--poll", "1s", "--grace", "1s")
    wait_until(lambda: started(worker), "the worker to start")
    task = app_for(db_url).enqueue("slow", {"n": 1})
    wait_until(lambda: "start 1" in executions(project), "the task to start")
    code, _, err = worker.stop()
    assert code == 0, err
    with open_engine(db_url).connect() as conn:
        row = conn.execute(select(tasks).where(tasks.c.id == task)).one()
    assert row.status == "retrying" and row.attempts == 1


def test_two_workers_and_a_cron_run_enqueue_one_task_per_occurrence(
    db_url: str, project: Path
) -> None:
    write_app(project, SCHEDULED)
    assert tickrun("run", cwd=project, db=db_url, env={"TICKRUN_APP": "jobs:app"}).returncode == 0
    engine = open_engine(db_url)
    now = datetime.now(UTC)
    minute = now.replace(second=0, microsecond=0)
    with engine.begin() as conn:  # the occurrence at `minute` is due for everyone at once
        conn.execute(update(schedules).values(last_fire_at=minute - timedelta(seconds=1)))
    workers = [start_worker(project, db_url, "--poll", "1s", tag=f"w{i}") for i in range(2)]
    cron = tickrun("run", cwd=project, db=db_url, env={"TICKRUN_APP": "jobs:app"})
    assert cron.returncode == 0, cron.stderr
    for w in workers:
        wait_until(lambda w=w: started(w), "the workers to start")

    def occurrences() -> Counter[datetime]:
        with engine.connect() as conn:
            rows = conn.execute(select(tasks.c.scheduled_for).where(tasks.c.schedule.is_not(None)))
            return Counter(r.scheduled_for for r in rows)

    wait_until(lambda: occurrences(), "the occurrence to be enqueued")
    for w in workers:
        code, _, err = w.stop()
        assert code == 0, err
    counts = occurrences()
    assert counts and set(counts.values()) == {1}, counts


def test_notified_workers_run_every_task_once(servers: ServerDatabases, project: Path) -> None:
    """Every enqueue's NOTIFY wakes both workers, and both claim the new task at once in one
    statement (store.claim_fresh): one of them must get it, never both."""
    url = servers.get("postgresql")
    empty_tables(url)
    write_app(project, APP)
    workers = [
        start_worker(project, url, "--poll", "10m", "--concurrency", "2", tag=f"w{i}")
        for i in range(2)
    ]
    for w in workers:
        wait_until(lambda w=w: started(w), "a worker to start")
    app = app_for(url)
    count = 80
    for n in range(count):
        app.enqueue("hello", {"n": n})
    wait_until(lambda: len(executions(project)) >= count, f"{count} tasks to run", timeout=60)
    claimed = 0
    for w in workers:
        code, out, err = w.stop()
        assert code == 0, err
        assert "no LISTEN/NOTIFY" not in err
        claimed += int(out.split("claimed ", 1)[1].split()[0].rstrip(","))
    runs_of = Counter(line.split()[0] for line in executions(project))
    assert runs_of == {str(n): 1 for n in range(count)}
    assert claimed == count


HOARD = app_source(
    """
@app.task(lease=60)
def busy(n):
    note(f"busy {n}")
    block_until("release")


@app.task()
def quick(n):
    time.sleep(0.2)
    note(f"quick {n}")
"""
)


@pytest.mark.parametrize("command", ["worker", "run"])
def test_a_busy_worker_claims_nothing_its_slots_cannot_start(
    db_url: str, project: Path, command: str
) -> None:
    """A's two slots run tasks that block until the test releases them; 40 short tasks are
    due for B, started idle after A. A must not claim any of them: a task claimed behind a
    busy slot waits there (its lease renewed) while B could run it. A's rows in ``running``
    are sampled until every short task is done: at most its two busy tasks, ever.

    ``tickrun worker``: the short tasks arrive while A is busy (A looks again every poll).
    ``tickrun run``: they are due when A starts, behind the two busy ones in claim order."""
    write_app(project, HOARD)
    app = App(database_url=db_url)
    app.task(name="busy")(lambda n: None)
    app.task(name="quick")(lambda n: None)
    busy = [app.enqueue("busy", {"n": n}) for n in range(2)]
    quick: list[int] = []
    if command == "run":
        quick = app.enqueue_many(("quick", {"n": n}) for n in range(40))

    def start(name: str) -> WorkerProcess | RunProcess:
        args = ("--concurrency", "2", "--worker", name)
        if command == "run":
            return start_run(project, db_url, "jobs:app", *args, tag=name)
        worker = start_worker(project, db_url, "--poll", "0.5s", *args, tag=name)
        wait_until(lambda: started(worker), f"worker {name} to start")
        return worker

    a = start("A")
    wait_until(lambda: {"busy 0", "busy 1"} <= set(executions(project)), "A to run both")
    b = start("B")
    if command == "worker":
        quick = app.enqueue_many(("quick", {"n": n}) for n in range(40))
    engine = open_engine(db_url)
    held_by_a: list[int] = []

    def short_ones_done() -> bool:
        with engine.connect() as conn:
            held = conn.execute(
                select(func.count())
                .select_from(tasks)
                .where(tasks.c.status == "running", tasks.c.worker == "A")
            ).scalar_one()
            finished = conn.execute(
                select(func.count())
                .select_from(tasks)
                .where(tasks.c.id.in_(quick), tasks.c.status == SUCCEEDED)
            ).scalar_one()
        held_by_a.append(held)
        # A hoarding one is a failure now, not after the short tasks' deadline.
        return finished == len(quick) or held > 2

    wait_until(short_ones_done, "the short tasks to finish")
    assert max(held_by_a) == 2, f"A held {max(held_by_a)} running rows with 2 slots"
    with engine.connect() as conn:
        by_a = conn.execute(
            select(func.count())
            .select_from(attempts)
            .where(attempts.c.task_id.in_(quick), attempts.c.worker == "A")
        ).scalar_one()
    assert by_a == 0, f"A ran {by_a} short tasks while its slots were busy"
    (project / "release").touch()
    for process in (a, b):
        code, _, err = process.stop() if isinstance(process, WorkerProcess) else process.finish()
        assert code == 0, err
    lines = executions(project)
    assert Counter(lines) == Counter([f"quick {n}" for n in range(40)] + ["busy 0", "busy 1"])
    with engine.connect() as conn:
        statuses = dict(conn.execute(select(tasks.c.id, tasks.c.status)).all())
    assert statuses == dict.fromkeys(busy + quick, SUCCEEDED)


def test_errors_at_start_are_one_line(project: Path, tmp_path: Path) -> None:
    write_app(project, APP)
    missing = tickrun(
        "worker",
        cwd=project,
        db=f"sqlite:///{tmp_path / 'none.db'}",
        env={"TICKRUN_APP": "jobs:app"},
    )
    assert missing.returncode == 2
    assert missing.stderr.startswith("error:") and missing.stderr.count("\n") == 1
    bad = tickrun("worker", cwd=project, db="nosuchdb://x", env={"TICKRUN_APP": "jobs:app"})
    assert bad.returncode == 2 and bad.stderr.startswith("error: invalid database URL")
    port = free_port()
    down = tickrun(
        "worker",
        cwd=project,
        db=f"postgresql+psycopg://postgres@127.0.0.1:{port}/x",
        env={"TICKRUN_APP": "jobs:app"},
    )
    assert down.returncode == 3, down.stderr
    assert down.stderr.startswith("error:") and down.stderr.count("\n") == 1
    poll = tickrun("worker", "--poll", "0s", cwd=project, db="sqlite:///x.db")
    assert poll.returncode == 2 and poll.stderr.startswith("error:")


# -- the database going away ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of a local server; ``stop`` drops every connection
    as a server going away does, ``start`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def test_the_worker_outlives_the_database_going_away(
    db_url: str, project: Path, backend: str
) -> None:
    if backend == "sqlite":
        pytest.skip("a file does not go away like a server")
    url = make_url(db_url)
    proxy = Proxy(
        (url.host or "127.0.0.1", url.port or (5432 if backend == "postgresql" else 3306))
    )
    proxy.start()
    proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
    write_app(project, APP)
    worker = start_worker(project, proxied, "--poll", "1s")
    try:
        wait_until(lambda: started(worker), "the worker to start")
        app = app_for(db_url)
        app.enqueue("hello", {"n": 1})
        wait_until(lambda: ran(project, 1), "the first task to run")
        proxy.stop()
        wait_until(lambda: "lost the database" in worker.stderr(), "the worker to see the outage")
        for n in (2, 3, 4):
            app.enqueue("hello", {"n": n})  # straight to the server, during the outage
        time.sleep(1.0)  # the worker retries during the outage (not a wait for a condition)
        assert worker.proc.poll() is None, worker.stderr()
        proxy.start()
        for n in (2, 3, 4):
            wait_until(lambda n=n: ran(project, n), f"task {n} to run after the outage")
        assert worker.stderr().count("lost the database") == 1, worker.stderr()
        assert "the database is back" in worker.stderr()
        code, _, err = worker.stop()
        assert code == 0, err
    finally:
        proxy.stop()
    with open_engine(db_url).connect() as conn:
        done = conn.execute(
            select(func.count()).select_from(tasks).where(tasks.c.status == SUCCEEDED)
        ).scalar()
    assert done == 4
    assert os.path.exists(project / "executions.log")
