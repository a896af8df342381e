"""huey on SQLite in the side-by-side benchmark (bench/peers.py): its app and its adapter.

``SqliteHuey`` with its defaults (WAL; SQLite's default ``synchronous``, FULL here). A drain is
``drain()`` below: huey's consumer loop (dequeue, execute) until the queue is empty, since
``huey_consumer`` has no mode that exits when it is done. W4 runs ``huey_consumer`` with one
thread worker, polling every 0.1 s and backing off to 1 s (``-m 1``: tickrun's ``--poll``).
huey deletes a task's row when it dequeues it, before it runs (at most once).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from execlog import executed, started
from huey import SqliteHuey

huey = SqliteHuey(name="bench", filename=os.environ.get("BENCH_PEER_SQLITE", ":memory:"))


@huey.task()
def noop(i: int) -> None:
    executed(i)


@huey.task()
def ping(i: int) -> None:
    started(i)


def drain() -> None:
    """What ``huey_consumer``'s worker does for each task, until none is left."""
    while (task := huey.dequeue()) is not None:
        huey.execute(task)


class Adapter:
    name = "huey"
    store = "sqlite"
    how = "dequeue + execute until empty (huey's worker loop); W4: huey_consumer -m 1"

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.dir = tempfile.mkdtemp(prefix="huey-bench-", dir=cfg.get("sqlite_dir"))
        self.bin = cfg["bin"]
        self.file = ""
        self.huey = huey  # its task registry is the module's

    def env(self) -> dict[str, str]:
        return {"BENCH_PEER_SQLITE": self.file}

    def _remove(self) -> None:
        if self.file:
            for suffix in ("", "-wal", "-shm"):
                Path(self.file + suffix).unlink(missing_ok=True)

    def reset(self) -> None:
        """A new database file for every run, as tickrun's SQLite runs get."""
        self._remove()
        huey.storage.close()
        self.file = os.path.join(self.dir, f"huey-{uuid.uuid4().hex[:8]}.db")
        huey.storage_kwargs["filename"] = self.file
        huey.storage = huey.create_storage()
        huey.storage.queue_size()  # connect and create the tables before any clock

    def settle(self) -> None:
        raw = sqlite3.connect(self.file)
        try:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            raw.close()

    def enqueue_one(self, ids: range) -> float:
        begin = time.perf_counter()
        for i in ids:
            self.huey.enqueue(noop.s(i))  # what calling noop(i) does, on this file
        return time.perf_counter() - begin

    def enqueue_bulk(self, ids: range, batch: int) -> float | None:
        return None  # huey has no batch enqueue

    def fill(self, n: int) -> None:
        """Untimed: huey's own messages, inserted in one transaction."""
        rows = [("bench", self.huey.serialize_task(noop.s(i)), 0) for i in range(n)]
        raw = sqlite3.connect(self.file)
        try:
            with raw:
                raw.executemany("INSERT INTO task (queue, data, priority) VALUES (?, ?, ?)", rows)
        finally:
            raw.close()

    def queued(self) -> int:
        return int(self.huey.storage.queue_size())

    def problems_after_drain(self, n: int) -> str | None:
        left = self.queued()
        return f"{left} tasks left in huey's queue" if left else None

    def drain_cmd(self) -> list[str] | None:
        return [sys.executable, "-c", "import peer_huey; peer_huey.drain()"]

    def worker_cmd(self, index: int) -> list[str]:
        consumer = str(Path(self.bin) / "huey_consumer")
        return [consumer, "peer_huey.huey", "-w", "1", "-k", "thread", "-m", "1", "-q"]

    def enqueue_ping(self, i: int) -> None:
        self.huey.enqueue(ping.s(i))

    def close(self) -> None:
        self._remove()
        os.rmdir(self.dir)
