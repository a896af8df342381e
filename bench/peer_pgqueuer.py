"""pgqueuer in the side-by-side benchmark (bench/peers.py): its app and its adapter.

The child processes run what ``pgq run peer_pgqueuer:main`` runs (``--mode drain`` for a drain
and the empty tick, continuous for W4): pgqueuer's own runner and event loop (uvloop) with its
defaults (batch size 10, asyncpg, LISTEN/NOTIFY, durable LOGGED tables), through
``pgqueuer.run`` (``run_worker`` below), because ``pgq run`` itself fails at start-up with
pgqueuer 1.6.0 and typer 0.29 (its ``--log-level`` parser hands a string where it wants an
enum). The ``pgq`` program also imports its CLI module, so this imports it too. Handlers are
``async``, pgqueuer's native form; each appends its line to the execution log, like
tickrun's (bench/execlog.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from execlog import executed, started
from pgqueuer import PgQueuer
from pgqueuer.models import Job

TABLES = ("pgqueuer", "pgqueuer_log", "pgqueuer_statistics")


@contextlib.asynccontextmanager
async def main() -> AsyncIterator[PgQueuer]:
    """The factory ``pgq run`` calls in the child processes."""
    import asyncpg

    conn = await asyncpg.connect(os.environ["BENCH_PEER_PG_DSN"])
    pgq = PgQueuer.from_asyncpg_connection(conn)

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        executed(int(job.payload or b""))

    @pgq.entrypoint("ping")
    async def ping(job: Job) -> None:
        started(int(job.payload or b""))

    try:
        yield pgq
    finally:
        await conn.close()


def run_worker(mode: str) -> None:
    """``pgq run peer_pgqueuer:main --mode MODE``, without the CLI's logging set-up."""
    import pgqueuer
    from pgqueuer.adapters.cli.cli import asyncio_run
    from pgqueuer.domain.types import QueueExecutionMode

    asyncio_run(pgqueuer.run(main, mode=QueueExecutionMode(mode)))


class Adapter:
    """The benchmark's side: enqueue in process, fill, count, and the commands to run."""

    name = "pgqueuer"
    store = "postgresql"
    how = "pgqueuer.run, mode drain (batch 10, asyncpg, uvloop); W4: mode continuous (NOTIFY)"

    def __init__(self, cfg: dict[str, Any]) -> None:
        import asyncpg
        from pgqueuer import AsyncpgDriver, Queries

        self.dsn = cfg["pg_dsn"]
        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(asyncpg.connect(self.dsn))
        self.queries = Queries(AsyncpgDriver(self.conn))
        self.loop.run_until_complete(self.queries.install())

    def env(self) -> dict[str, str]:
        return {"BENCH_PEER_PG_DSN": self.dsn}

    def _sql(self, sql: str) -> Any:
        return self.loop.run_until_complete(self.conn.fetchval(sql))

    def reset(self) -> None:
        self._sql(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")

    def settle(self) -> None:
        pass  # bench/peers.py settles the whole PostgreSQL database

    def enqueue_one(self, ids: range) -> float:
        async def go() -> float:
            begin = time.perf_counter()
            for i in ids:
                await self.queries.enqueue("noop", b"%d" % i)
            return time.perf_counter() - begin

        return self.loop.run_until_complete(go())

    def enqueue_bulk(self, ids: range, batch: int) -> float | None:
        """pgqueuer's list form: one statement of ``batch`` jobs a call."""

        async def go() -> float:
            begin = time.perf_counter()
            for lo in range(ids.start, ids.stop, batch):
                part = range(lo, min(ids.stop, lo + batch))
                await self.queries.enqueue(
                    ["noop"] * len(part), [b"%d" % i for i in part], [0] * len(part)
                )
            return time.perf_counter() - begin

        return self.loop.run_until_complete(go())

    def fill(self, n: int) -> None:
        self.enqueue_bulk(range(n), 1000)

    def queued(self) -> int:
        return int(self._sql("SELECT count(*) FROM pgqueuer"))

    def problems_after_drain(self, n: int) -> str | None:
        # pgqueuer deletes a job once it is done; what stays is unfinished or failed.
        left = self.queued()
        return f"{left} jobs left in the pgqueuer table" if left else None

    def drain_cmd(self) -> list[str] | None:
        return [sys.executable, "-c", "import peer_pgqueuer; peer_pgqueuer.run_worker('drain')"]

    def worker_cmd(self, index: int) -> list[str]:
        return [
            sys.executable,
            "-c",
            "import peer_pgqueuer; peer_pgqueuer.run_worker('continuous')",
        ]

    def enqueue_ping(self, i: int) -> None:
        self.loop.run_until_complete(self.queries.enqueue("ping", b"%d" % i))

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()
