"""How long the dashboard's pages take beside 1,000,000 finished rows, idle and while a run
drains the queue on the same database.

Per database: a fresh benchmark database holding ``--finished`` succeeded tasks (finished two
days ago) with one attempt row each, ``--dead`` dead tasks with a failed attempt each, and
``--due`` due tasks. Each page is requested ``--repeat`` times in process through Starlette's
test client (the page's whole work: read models, template, no network), first with the
database idle, then while one ``tickrun run`` drains the due tasks. Prints one table per
database; bench/README.md keeps the figures. Not a test: nothing here runs under pytest.

    .venv/bin/python bench/web.py                      # 1,000,000 finished rows, every database
    .venv/bin/python bench/web.py --db sqlite --finished 100000 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, text
from tabulate import tabulate

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchapp import app as bench_app  # noqa: E402
from benchdb import BenchDB, Unavailable  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from bench import child_env, machine, tickrun_cmd  # noqa: E402  (bench/bench.py)
from tickrun import clock  # noqa: E402
from tickrun.schema import attempts, tasks  # noqa: E402
from tickrun.web.app import create_app  # noqa: E402

PAGES = [
    ("overview (24h)", "/"),
    ("overview (7d: every attempt)", "/?window=7d"),
    ("tasks (tickrun stats, 1h)", "/stats"),
    ("due", "/due"),
    ("failures (24h)", "/failures"),
    ("dlq", "/dlq"),
    ("dlq page 4", "/dlq?page=4"),
    ("one task", "/tasks/{dead}"),
    ("runs", "/runs"),
]


def fill(db: BenchDB, finished: int, due: int, dead: int) -> int:
    """The rows; returns the id of one dead task."""
    template = bench_app.task_row("noop", {"i": 0})
    db.fill("noop", template, finished=finished, due=due)
    with db.engine.begin() as conn:
        # One attempt per finished task, as `tickrun run` leaves it.
        conn.execute(
            text(
                "INSERT INTO tickrun_attempts (task_id, attempt, started_at, finished_at, worker, "
                "outcome) SELECT id, 1, started_at, finished_at, 'bench', 'succeeded' "
                "FROM tickrun_tasks WHERE status = 'succeeded'"
            )
        )
    now = clock.now()
    first = 0
    with db.engine.begin() as conn:
        for i in range(dead):
            at = now - timedelta(seconds=(i + 1) * 3600 / dead)  # within the last hour
            row = conn.execute(
                insert(tasks).values(
                    name="noop",
                    queue="default",
                    priority=0,
                    status="dead",
                    payload='{"i": -1}',
                    run_at=at,
                    attempts=1,
                    max_attempts=1,
                    created_at=at,
                    started_at=at,
                    finished_at=at,
                    last_error=f"ValueError: bench failure {i}",
                    last_traceback=f"Traceback (most recent call last):\nValueError: {i}",
                )
            )
            task_id = row.inserted_primary_key[0]
            first = first or task_id
            conn.execute(
                insert(attempts).values(
                    task_id=task_id,
                    attempt=1,
                    outcome="failed",
                    started_at=at,
                    finished_at=at,
                    worker="bench",
                    error=f"ValueError: bench failure {i}",
                )
            )
    db.settle()
    return first


def measure(client: TestClient, path: str, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - start)
        if response.status_code != 200:
            raise SystemExit(f"{path}: HTTP {response.status_code}: {response.text[:300]}")
    return times


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f}" if values else "–"


def bench_one(kind: str, args: argparse.Namespace) -> None:
    try:
        db = BenchDB.create(kind, args.sqlite_dir)
    except Unavailable as exc:
        print(f"\n{kind}: skipped ({exc})")
        return
    try:
        started = time.perf_counter()
        dead_id = fill(db, args.finished, args.due, args.dead)
        print(f"\n{kind}: filled in {time.perf_counter() - started:.0f}s", flush=True)
        client = TestClient(create_app(db.engine), base_url="http://127.0.0.1")
        idle = {}
        for label, path in PAGES:
            measure(client, path.format(dead=dead_id), 1)  # warm: plans, templates, the pool
            idle[label] = measure(client, path.format(dead=dead_id), args.repeat)
        out = tempfile.mktemp(prefix="tickrun-bench-web-")
        run = subprocess.Popen(
            [*tickrun_cmd(), "--app", "benchapp:app", "--db", db.url, "run", "--max-time", "120s"],
            env=child_env(out),
            cwd=str(HERE),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        draining: dict[str, list[float]] = {label: [] for label, _ in PAGES}
        rounds = 0
        while run.poll() is None and rounds < args.repeat:
            for label, path in PAGES:
                draining[label] += measure(client, path.format(dead=dead_id), 1)
            rounds += 1
        stdout, stderr = run.communicate(timeout=600)
        drained = stdout.strip().splitlines()[-1:] or stderr.strip().splitlines()[-1:]
        with db.engine.connect() as conn:
            left = conn.execute(
                text("SELECT count(*) FROM tickrun_tasks WHERE status = 'pending'")
            ).scalar_one()
        rows = [
            [label, ms(idle[label]), f"{max(idle[label]) * 1000:.0f}", ms(draining[label])]
            for label, _ in PAGES
        ]
        print(
            tabulate(
                rows,
                headers=["page", "idle median ms", "idle max ms", "during the drain, median ms"],
                tablefmt="github",
            )
        )
        print(
            f"{args.finished:,} finished tasks (+1 attempt each), {args.dead} dead, {args.due:,} "
            f"due; {args.repeat} requests per page idle, {rounds} round(s) during the drain; "
            f"the run: {' '.join(drained)} ({left} left pending)"
        )
        with contextlib.suppress(OSError):
            os.remove(out)
    finally:
        db.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite,postgresql,mysql")
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=20_000)
    parser.add_argument("--dead", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sqlite-dir", help="directory for the SQLite file [the temp dir]")
    args = parser.parse_args()
    info = machine()
    print(
        f"machine: {info['nproc']} cores, {info['cpu']}, {info['memory_gb']} GB; "
        f"python {info['python']}, sqlite {info['sqlite']}, tickrun {info['tickrun']} "
        f"({info['git_head']})"
    )
    for kind in args.db.split(","):
        bench_one(kind.strip(), args)


if __name__ == "__main__":
    main()
