"""What ``app.status()`` costs: the call a web endpoint polled every second makes.

For each database: a table of ``--finished`` succeeded tasks (with results) and ``--due``
pending ones, a few thousand of them keyed; then ``--calls`` lookups of random ids and of random
keys, each timed alone, in one process with its pool warm (as a web worker would be). Prints
one table, and each query's plan so "one indexed query" can be checked, not assumed.

    .venv/bin/python bench/status.py                      # sqlite, postgresql, mysql
    .venv/bin/python bench/status.py --db sqlite --finished 100000 --calls 2000

Not a unit test: nothing here runs under pytest. Figures and the machine: bench/README.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

from sqlalchemy import select, update

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchdb import BenchDB, Unavailable  # noqa: E402

from tickrun import App  # noqa: E402
from tickrun.schema import tasks  # noqa: E402
from tickrun.status import _statements  # noqa: E402

KEYED = 2_000


def build_app(url: str) -> App:
    app = App()

    @app.task
    def noop(i: int) -> None:
        pass

    app.use_database(url)
    return app


def timed(calls: list[dict[str, object]], app: App) -> list[float]:
    """Microseconds per call."""
    took = []
    for call in calls:
        began = time.perf_counter()
        found = app.status(**call)  # type: ignore[arg-type]
        took.append((time.perf_counter() - began) * 1e6)
        assert found is not None, call
    return took


def plans(db: BenchDB) -> list[str]:
    by_id, by_key = _statements()
    out = []
    engine = db.engine
    prefix = {"sqlite": "EXPLAIN QUERY PLAN", "postgresql": "EXPLAIN", "mysql": "EXPLAIN"}
    with engine.connect() as conn:
        for name, stmt, params in (("id", by_id, {"task_id": 1}), ("key", by_key, {"key": "k:1"})):
            literal = stmt.params(**params).compile(engine, compile_kwargs={"literal_binds": True})
            rows = conn.exec_driver_sql(f"{prefix[db.kind]} {literal}").all()
            if db.kind == "mysql":
                shown = "; ".join(f"type={r.type} key={r.key} rows={r.rows}" for r in rows)
            else:
                shown = "; ".join(str(r[-1]) for r in rows)
            out.append(f"  by {name}: {shown}")
    return out


def measure(kind: str, finished: int, due: int, calls: int, sqlite_dir: str | None) -> list[str]:
    db = BenchDB.create(kind, sqlite_dir)
    try:
        app = build_app(db.url)
        db.fill("noop", app.task_row("noop", {"i": 0}), finished=finished, due=due)
        with db.engine.begin() as conn:  # results on the finished rows, as a real table has
            conn.execute(
                update(tasks)
                .where(tasks.c.status == "succeeded")
                .values(result='{"url":"https://files.example/export.csv","rows":1234}')
            )
        for i in range(KEYED):
            app.enqueue("noop", {"i": i}, key=f"k:{i}")
        total = finished + due + KEYED
        rng = random.Random(13)
        with db.engine.connect() as conn:  # MariaDB's bulk inserts leave gaps in the ids
            ids = list(conn.execute(select(tasks.c.id)).scalars())
        by_id = [{"task_id": rng.choice(ids)} for _ in range(calls)]
        by_key = [{"key": f"k:{rng.randrange(KEYED)}"} for _ in range(calls)]
        timed(by_id[:50], app)  # warm the pool and the statement cache
        rows = []
        for label, sample in (("by id", by_id), ("by key", by_key)):
            took = sorted(timed(sample, app))
            q = statistics.quantiles(took, n=100, method="inclusive")
            rows.append(
                f"{kind:<11} {label:<7} {total:>10,} {calls:>7,} {q[49]:>9.0f} {q[94]:>9.0f} "
                f"{q[98]:>9.0f} {1e6 / statistics.fmean(took):>9,.0f}"
            )
        return rows + plans(db)
    finally:
        db.drop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite,postgresql,mysql")
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=5_000)
    parser.add_argument("--sqlite-dir", default=None)
    args = parser.parse_args(argv)
    print(
        f"{'database':<11} {'lookup':<7} {'rows':>10} {'calls':>7} {'p50 µs':>9} {'p95 µs':>9} "
        f"{'p99 µs':>9} {'calls/s':>9}"
    )
    for kind in args.db.split(","):
        try:
            lines = measure(kind, args.finished, args.due, args.calls, args.sqlite_dir)
        except Unavailable as exc:
            print(f"{kind:<11} skipped: {exc}")
            continue
        print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
