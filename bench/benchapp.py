"""The benchmark's tickrun application: handlers that append one line per execution.

Each handler writes ``<i>\\n`` to the file named by ``TICKRUN_BENCH_OUT`` with one ``write`` on an
``O_APPEND`` descriptor, which the kernel keeps whole across processes, so the benchmark can
count executions exactly (duplicates and misses) even with several runs and child processes.
"""

from __future__ import annotations

import os
import threading
import time

from tickrun import App

app = App()

_fd: int | None = None
_lock = threading.Lock()


def _append(i: int) -> None:
    _append_line(b"%d\n" % i)


@app.task
def noop(i: int) -> None:
    _append(i)


# The same handler behind the timeout design: every attempt runs in a child process.
@app.task(timeout=60)
def noop_timeout(i: int) -> None:
    _append(i)


# W8: ordered keys. Each line is "<key> <seq>": the file's order is the start order.
@app.task(concurrency_key="key", ordered=True)
def ordered_step(key: int, seq: int) -> None:
    _append_line(b"%d %d\n" % (key, seq))


# W9: a rate limit. Each line is "<i> <claimed at> <started at>" (Unix seconds).
@app.task(rate="50/s", context=True)
def rated(ctx, i: int) -> None:  # noqa: ANN001 - a TaskContext
    _append_line(b"%d %.6f %.6f\n" % (i, ctx.claimed_at.timestamp(), time.time()))


# W4: a worker's wake-up latency. Each line is "<i> <started at>" (Unix seconds).
@app.task
def ping(i: int) -> None:
    _append_line(b"%d %.6f\n" % (i, time.time()))


def _append_line(line: bytes) -> None:
    global _fd
    if _fd is None:
        with _lock:
            if _fd is None:
                _fd = os.open(
                    os.environ["TICKRUN_BENCH_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
                )
    os.write(_fd, line)
