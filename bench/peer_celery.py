"""Celery with the Redis broker in the side-by-side benchmark (bench/peers.py).

Workers are ``celery worker -P solo`` (one task at a time in the worker process, Celery's
cheapest pool for no-op tasks), on a queue named for this benchmark run only, without
gossip, mingle, heartbeats or remote control. Results are ignored. Celery has no mode that
exits once the queue is empty, so a drain stops its workers when the execution log holds every
task (bench/peers.py). Redis here runs without persistence (no AOF, no snapshots), and Celery
acknowledges a message when it takes it (``acks_late`` off): neither is durable, and both are
the defaults.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import Celery
from execlog import executed, started

app = Celery("peer_celery", broker=os.environ.get("BENCH_PEER_REDIS", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_default_queue=os.environ.get("BENCH_PEER_QUEUE", "celery"),
    task_ignore_result=True,
    worker_enable_remote_control=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="noop")
def noop(i: int) -> None:
    executed(i)


@app.task(name="ping")
def ping(i: int) -> None:
    started(i)


class Adapter:
    name = "celery"
    store = "redis"
    how = "celery worker -P solo, stopped once every task ran; Redis broker"

    def __init__(self, cfg: dict[str, Any]) -> None:
        import redis

        self.url = cfg["redis_url"]
        self.queue = f"tickrun_bench_{cfg['run_id']}"
        self.bin = cfg["bin"]
        app.conf.update(broker_url=self.url, task_default_queue=self.queue)
        self.redis = redis.Redis.from_url(self.url)
        self.redis.ping()

    def env(self) -> dict[str, str]:
        return {"BENCH_PEER_REDIS": self.url, "BENCH_PEER_QUEUE": self.queue}

    def reset(self) -> None:
        self.redis.delete(self.queue)

    def settle(self) -> None:
        pass

    def enqueue_one(self, ids: range) -> float:
        with app.producer_or_acquire() as producer:  # the broker connection, before the clock
            begin = time.perf_counter()
            for i in ids:
                noop.apply_async((i,), producer=producer)
            return time.perf_counter() - begin

    def enqueue_bulk(self, ids: range, batch: int) -> float | None:
        return None  # a group is one message per task: no batch form

    def fill(self, n: int) -> None:
        self.enqueue_one(range(n))

    def queued(self) -> int:
        return int(self.redis.llen(self.queue))

    def problems_after_drain(self, n: int) -> str | None:
        left = self.queued()
        return f"{left} messages left in the queue" if left else None

    def drain_cmd(self) -> list[str] | None:
        return None

    def worker_cmd(self, index: int) -> list[str]:
        celery = str(Path(self.bin) / "celery")
        return [celery, "-A", "peer_celery", "worker", "-P", "solo", "-l", "WARNING"] + [
            "-n",
            f"bench{index}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]

    def enqueue_ping(self, i: int) -> None:
        ping.apply_async((i,))

    def close(self) -> None:
        # The queue and kombu's record of its binding (named so in kombu 5.7, and before it).
        bindings = [f"_kombu.binding{kind}.{self.queue}" for kind in ("", "_permanent")]
        self.redis.delete(self.queue, *bindings)
        self.redis.close()
