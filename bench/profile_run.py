"""Profile one ``tickrun run`` the way the benchmark times it (W2 with tasks, W5 without).

    .venv/bin/python bench/profile_run.py --db postgresql --tasks 20000       # cProfile, W2
    .venv/bin/python bench/profile_run.py --db sqlite --tasks 0 --importtime  # W5 imports

Creates a database (as bench.py does), fills it, runs ``python -m cProfile -o OUT -m tickrun
... run --concurrency 1`` (or ``python -X importtime``), prints the top entries and drops the
database. The profile file is kept for ``python -m pstats OUT`` or snakeviz.
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchapp import app  # noqa: E402
from benchdb import BenchDB  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgresql", "mysql"])
    parser.add_argument("--tasks", type=int, default=20_000, help="due tasks [20000]")
    parser.add_argument("--finished", type=int, default=0, help="finished rows beside them")
    parser.add_argument("--task", default="noop", choices=sorted(app.tasks))
    parser.add_argument("--importtime", action="store_true", help="-X importtime, not cProfile")
    parser.add_argument("--out", help="profile file [a temp file]")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()

    db = BenchDB.create(args.db, None)
    work = tempfile.mkdtemp(prefix="tickrun-profile-")
    try:
        db.fill(
            args.task, app.task_row(args.task, {"i": 0}), finished=args.finished, due=args.tasks
        )
        db.settle()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICKRUN_")}
        env["PYTHONPATH"] = str(HERE)
        env["TICKRUN_BENCH_OUT"] = os.path.join(work, "executions.log")
        tail = ["-m", "tickrun", "--app", "benchapp:app", "--db", db.url, "run"]
        if args.importtime:
            done = subprocess.run(
                [sys.executable, "-X", "importtime", *tail],
                env=env,
                cwd=work,
                text=True,
                capture_output=True,
                check=True,
            )
            rows = [line.split("|") for line in done.stderr.splitlines()[1:] if "|" in line]
            rows.sort(key=lambda r: -int(r[1]))
            print("cumulative us | module (top by cumulative import time)")
            for _self, cumulative, name in rows[: args.top]:
                print(f"{int(cumulative):>13} | {name.rstrip()}")
            return 0
        out = args.out or os.path.join(work, "run.prof")
        subprocess.run(
            [sys.executable, "-m", "cProfile", "-o", out, *tail, "--concurrency", "1"],
            env=env,
            cwd=work,
            check=True,
        )
        stats = pstats.Stats(out)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(r"tickrun/", args.top)
        print(f"profile: {out}")
        return 0
    finally:
        db.drop()


if __name__ == "__main__":
    sys.exit(main())
