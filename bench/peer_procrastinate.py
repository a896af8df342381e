"""procrastinate in the side-by-side benchmark (bench/peers.py): its app and its adapter.

The child processes run ``procrastinate --app peer_procrastinate.app worker`` with its
defaults (concurrency 1, LISTEN/NOTIFY), ``--one-shot`` for a drain and the empty tick (the
worker exits once nothing is left). Handlers are ``async``, its fastest form; finished jobs
stay in ``procrastinate_jobs`` as ``succeeded`` (its default), which the benchmark checks.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import procrastinate
from execlog import executed, started

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ.get("BENCH_PEER_PG_DSN", ""))
)


@app.task(name="noop")
async def noop(i: int) -> None:
    executed(i)


@app.task(name="ping")
async def ping(i: int) -> None:
    started(i)


class Adapter:
    name = "procrastinate"
    store = "postgresql"
    how = "procrastinate worker --one-shot (concurrency 1); W4: worker (LISTEN/NOTIFY)"

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.dsn = cfg["pg_dsn"]
        self.cli = str(Path(cfg["bin"]) / "procrastinate")
        self.loop = asyncio.new_event_loop()
        # The module's app, as the workers use it: bench/peers.py sets BENCH_PEER_PG_DSN
        # before it imports this module.
        self.app = app
        self.loop.run_until_complete(self.app.open_async())
        self.loop.run_until_complete(self.app.schema_manager.apply_schema_async())

    def env(self) -> dict[str, str]:
        return {"BENCH_PEER_PG_DSN": self.dsn}

    def _sql(self, sql: str) -> None:
        self.loop.run_until_complete(self.app.connector.execute_query_async(sql))

    def reset(self) -> None:
        self._sql("TRUNCATE procrastinate_jobs RESTART IDENTITY CASCADE")

    def settle(self) -> None:
        pass  # bench/peers.py settles the whole PostgreSQL database

    def enqueue_one(self, ids: range) -> float:
        task = self.app.tasks["noop"]

        async def go() -> float:
            begin = time.perf_counter()
            for i in ids:
                await task.defer_async(i=i)
            return time.perf_counter() - begin

        return self.loop.run_until_complete(go())

    def enqueue_bulk(self, ids: range, batch: int) -> float | None:
        """``batch_defer_async``: one statement of ``batch`` jobs a call."""
        task = self.app.tasks["noop"]

        async def go() -> float:
            begin = time.perf_counter()
            for lo in range(ids.start, ids.stop, batch):
                part = range(lo, min(ids.stop, lo + batch))
                await task.batch_defer_async(*({"i": i} for i in part))
            return time.perf_counter() - begin

        return self.loop.run_until_complete(go())

    def fill(self, n: int) -> None:
        self.enqueue_bulk(range(n), 1000)

    def _counts(self) -> dict[str, int]:
        async def go() -> dict[str, int]:
            rows = await self.app.connector.execute_query_all_async(
                "SELECT status::text AS status, count(*) AS n FROM procrastinate_jobs "
                "GROUP BY status"
            )
            return {r["status"]: r["n"] for r in rows}

        return self.loop.run_until_complete(go())

    def queued(self) -> int:
        return sum(n for status, n in self._counts().items() if status in ("todo", "doing"))

    def problems_after_drain(self, n: int) -> str | None:
        counts = self._counts()
        return None if counts == {"succeeded": n} else f"job statuses {counts}, not {n} succeeded"

    def drain_cmd(self) -> list[str] | None:
        return [self.cli, "--app", "peer_procrastinate.app", "worker", "--one-shot"]

    def worker_cmd(self, index: int) -> list[str]:
        return [self.cli, "--app", "peer_procrastinate.app", "worker"]

    def enqueue_ping(self, i: int) -> None:
        self.loop.run_until_complete(self.app.tasks["ping"].defer_async(i=i))

    def close(self) -> None:
        self.loop.run_until_complete(self.app.close_async())
        self.loop.close()
