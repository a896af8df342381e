"""W4: latency of `tickrun worker`, from the start of the enqueue call to the handler's start.

One idle worker (default --poll), one task every 0.5 s, 200 samples; prints the median and p95
per database. Not yet part of `make bench` (bench.py); run it by hand:

    .venv/bin/python bench/worker_latency.py [sqlite|postgresql|mysql ...] [--samples N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tickrun import App  # noqa: E402
from tickrun.migrations import init_schema  # noqa: E402

SERVERS = {
    "postgresql": os.environ.get(
        "TICKRUN_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
    "mysql": os.environ.get("TICKRUN_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql"),
}
JOBS = """\
import os, time
from tickrun import App
app = App()
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "starts.log")

@app.task()
def ping(n):
    fd = os.open(OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{n} {time.time()!r}\\n".encode())
    os.close(fd)
"""


def database(kind: str, work: Path) -> tuple[str, str | None]:
    if kind == "sqlite":
        return f"sqlite:///{work / 'w4.db'}", None
    name = f"tickrun_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(SERVERS[kind], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    base = SERVERS[kind].rsplit("/", 1)[0]
    return f"{base}/{name}", name


def drop(kind: str, name: str | None) -> None:
    if name is None:
        return
    admin = create_engine(SERVERS[kind], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        force = " WITH (FORCE)" if kind == "postgresql" else ""
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
    admin.dispose()


def measure(kind: str, samples: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "jobs.py").write_text(JOBS)
        url, name = database(kind, work)
        try:
            app = App(database_url=url)
            app.task(name="ping")(lambda n: None)
            init_schema(app.engine)
            env = {k: v for k, v in os.environ.items() if not k.startswith("TICKRUN_")}
            env.update(TICKRUN_DATABASE_URL=url, TICKRUN_APP="jobs:app")
            worker = subprocess.Popen(
                [sys.executable, "-m", "tickrun", "worker"], cwd=work, env=env
            )
            log = work / "starts.log"
            try:
                time.sleep(3)  # the worker's start (imports, first claim): not measured
                began: dict[int, float] = {}
                for n in range(samples):
                    began[n] = time.time()
                    app.enqueue("ping", {"n": n})
                    time.sleep(0.5)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    lines = log.read_text().splitlines() if log.exists() else []
                    if len(lines) >= samples:
                        break
                    time.sleep(0.1)
            finally:
                worker.terminate()
                worker.wait(60)
            starts = dict(line.split() for line in log.read_text().splitlines())
            return [(float(starts[str(n)]) - began[n]) * 1000 for n in range(samples)]
        finally:
            app.engine.dispose()
            drop(kind, name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dbs", nargs="*", default=["sqlite", "postgresql", "mysql"])
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    for kind in args.dbs:
        ms = sorted(measure(kind, args.samples))
        p95 = ms[int(0.95 * (len(ms) - 1))]
        print(
            f"W4 {kind}: median {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, "
            f"max {ms[-1]:.1f} ms ({len(ms)} samples, load {os.getloadavg()[0]:.2f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
