"""Issue 14: does a long-lived `tickrun worker` keep its memory flat? RSS while it drains N tasks.

One `tickrun worker --concurrency 4` on a fresh database (SQLite file, or a database of its own
on the server, as bench.py makes them), the bench app's `noop` task, tasks added
in batches of 50,000 while it runs (so the table never holds much more than a batch of due
rows; before each batch the database is settled as bench.py does it, VACUUM ANALYZE on
PostgreSQL); the worker's RSS (VmRSS from /proc) is read at every tenth of the work. Prints a table:

    .venv/bin/python bench/worker_memory.py                  # 1,000,000 tasks
    .venv/bin/python bench/worker_memory.py --tasks 100000 --db postgresql
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select
from tabulate import tabulate

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchapp import app  # noqa: E402
from benchdb import BenchDB  # noqa: E402

from tickrun.lifecycle import PENDING, RUNNING, SUCCEEDED  # noqa: E402
from tickrun.schema import tasks  # noqa: E402

BATCH = 50_000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgresql", "mysql"])
    args = parser.parse_args()
    total: int = args.tasks
    db = BenchDB.create(args.db, None)
    with tempfile.TemporaryDirectory() as tmp:
        url = db.url
        app.use_database(url)
        out = Path(tmp) / "executions.log"
        env = dict(os.environ, TICKRUN_DATABASE_URL=url, TICKRUN_APP="benchapp:app")
        env["TICKRUN_BENCH_OUT"] = str(out)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
        cmd = [sys.executable, "-m", "tickrun", "worker", "--concurrency", "4"]
        worker = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
        began = time.monotonic()
        rows: list[list[object]] = []
        added = done = 0
        next_mark = 0
        try:
            while done < total:
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited with {worker.returncode}")
                if added < total and added - done < BATCH:
                    n = min(BATCH, total - added)
                    # What autovacuum would do between batches (this machine's PostgreSQL runs
                    # without it): dead index entries otherwise slow every claim down.
                    db.settle()
                    app.enqueue_many(("noop", {"i": added + i}) for i in range(n))
                    added += n
                with app.engine.connect() as conn:
                    query = select(tasks.c.status, func.count()).group_by(tasks.c.status)
                    counts = dict(conn.execute(query).all())
                done = counts.get(SUCCEEDED, 0)
                if set(counts) - {PENDING, RUNNING, SUCCEEDED}:
                    raise RuntimeError(f"a task failed: {counts}")
                if done >= next_mark:
                    rows.append([f"{done:,}", f"{rss_mb(worker.pid):.1f}"])
                    next_mark += total // 10
                time.sleep(0.5)
            rows.append([f"{done:,} (end)", f"{rss_mb(worker.pid):.1f}"])
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
            app.engine.dispose()
            db.drop()
        took = time.monotonic() - began
    print(tabulate(rows, headers=["tasks done", "worker RSS (MB)"]))
    print(
        f"{args.db}: {total:,} tasks in {took:.0f} s ({total / took:,.0f}/s), "
        f"load {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
