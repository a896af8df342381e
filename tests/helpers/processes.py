"""Real ``tickrun run`` and ``tickrun worker`` processes, and what they leave behind.

Handlers append one line per execution to a file with O_APPEND (one ``write()`` per line), so
executions are counted exactly; every wait polls for a condition with a generous deadline
instead of sleeping.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from tests.conftest import cli_env
from tests.helpers.background import _background, _workers
from tickrun import App
from tickrun.database import open_engine
from tickrun.schema import attempts, runs, tasks

DEADLINE = 90.0  # seconds any awaited condition may take on a loaded 2-core machine

# Every jobs.py starts with this: files live next to the module, so no path is formatted in.
PRELUDE = """\
import os
import signal
import time

from tickrun import App

app = App()
HERE = os.path.dirname(os.path.abspath(__file__))
LOG = os.path.join(HERE, "executions.log")


def note(line):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)


def here(name):
    return os.path.join(HERE, name)


def block_until(name):
    while not os.path.exists(here(name)):
        time.sleep(0.02)
"""


def app_source(body: str) -> str:
    return PRELUDE + "\n\n" + body.strip("\n") + "\n"


def executions(project: Path) -> list[str]:
    log = project / "executions.log"
    return log.read_text().splitlines() if log.exists() else []


def wait_until(condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class RunProcess:
    """A ``tickrun run`` in the background; output goes to files so no pipe can fill up."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def finish(self, timeout: float = DEADLINE) -> tuple[int, str, str]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"tickrun run did not finish within {timeout:g}s: {self.err.read_text()}"
            ) from None
        return code, self.out.read_text(), self.err.read_text()


def start_run(
    project: Path,
    db_url: str,
    ref: str,
    *args: str,
    tag: str = "run",
    env: dict[str, str] | None = None,
) -> RunProcess:
    out, err = project / f"{tag}.out", project / f"{tag}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tickrun", "run", *args],
            cwd=project,
            env=cli_env(db_url, {"TICKRUN_APP": ref, **(env or {})}),
            stdout=stdout,
            stderr=stderr,
        )
    _background.append(proc)
    return RunProcess(proc, out, err)


def twin_app(db_url: str, *names: str, **options: Any) -> App:
    """An App in the test process registering ``names`` like jobs.py does, to enqueue with."""
    app = App(database_url=db_url)
    for name in names:
        app.task(name=name, **options.get(name, {}))(_accepts_anything)
    app.use_database(db_url)
    return app


def _accepts_anything(**_kwargs: Any) -> None:
    raise AssertionError("handlers run in tickrun processes, not in the test")


def task_rows(engine: Engine) -> dict[int, Any]:
    with engine.connect() as conn:
        return {r.id: r for r in conn.execute(select(tasks))}


def history(engine: Engine, task_id: int) -> list[Any]:
    stmt = select(attempts).where(attempts.c.task_id == task_id).order_by(attempts.c.attempt)
    with engine.connect() as conn:
        return list(conn.execute(stmt))


def not_due(engine: Engine) -> int:
    """Unfinished tasks that no run may claim yet (a live lease or a future run_at)."""
    stmt = select(func.count()).where(
        tasks.c.claimable_at > datetime.now(UTC),
        tasks.c.status.in_(("pending", "retrying", "running")),
    )
    with engine.connect() as conn:
        return conn.execute(stmt).scalar_one()


def wait_all_due(engine: Engine) -> None:
    wait_until(lambda: not_due(engine) == 0, "every lease to expire")


# -- workers ----------------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    err: Path
    out: Path
    db: str

    def stderr(self) -> str:
        return self.err.read_text()

    def stop(self, timeout: float = DEADLINE) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"worker did not stop: {self.stderr()}") from None
        return code, self.out.read_text(), self.stderr()


def start_worker(project: Path, db: str, *args: str, tag: str = "worker") -> WorkerProcess:
    out, err = project / f"{tag}.out", project / f"{tag}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tickrun", "worker", *args],
            cwd=project,
            env=cli_env(db, {"TICKRUN_APP": "jobs:app"}),
            stdout=stdout,
            stderr=stderr,
        )
    worker = WorkerProcess(proc, err, out, db)
    _workers.append(worker.proc)
    return worker


def started(worker: WorkerProcess) -> bool:
    """The worker has recorded itself and its first heartbeat (it then waits for tasks)."""
    assert worker.proc.poll() is None, worker.stderr()
    stmt = select(runs.c.heartbeat_at).where(
        runs.c.pid == worker.proc.pid, runs.c.finished_at.is_(None)
    )
    with open_engine(worker.db).connect() as conn:
        return conn.execute(stmt).scalar() is not None


def app_for(db: str) -> App:
    app = App(database_url=db)
    app.task(name="hello")(lambda n: None)
    app.task(name="slow")(lambda n: None)
    return app


def ran(project: Path, n: int) -> float | None:
    for line in executions(project):
        first, _, rest = line.partition(" ")
        if first == str(n):
            return float(rest)
    return None


# -- jobs.py bodies ----------------------------------------------------------------------------

APP = app_source(
    """
@app.task()
def hello(n):
    note(f"{n} {time.time()!r}")


@app.task(lease=30)
def slow(n):
    note(f"start {n}")
    block_until("go")
    note(f"end {n}")
"""
)

# Each run's first tasks wait until a second run is executing tasks too (a marker file per
# run process), so the first run to connect cannot drain the queue before the others claim: the
# claims overlap by construction, not by luck of the scheduler. A run holds only the tasks it
# claimed ahead (one batch: nothing is recorded while its handlers wait), and the others are
# left for the runs still starting. The wait is bounded: past it, the runs go on and the
# test's overlap assertion reports the failure.
WORK = """
BARRIER_TIMEOUT = 60
shared = []  # not empty once this run has seen two runs at work


def wait_for_a_second_run():
    open(here(f"working-{os.getpid()}"), "w").close()
    end = time.monotonic() + BARRIER_TIMEOUT
    while not shared and time.monotonic() < end:
        if sum(name.startswith("working-") for name in os.listdir(HERE)) >= 2:
            shared.append(True)
        else:
            time.sleep(0.02)


@app.task(context=True)
def work(ctx, n):
    if not shared:
        wait_for_a_second_run()
    note(str(ctx.task_id))
"""
