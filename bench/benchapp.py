"""The benchmark's tickrun application: handlers that append one line per execution.

Each handler writes ``<i>\\n`` to the file named by ``TICKRUN_BENCH_OUT`` with one ``write`` on an
``O_APPEND`` descriptor, which the kernel keeps whole across processes, so the benchmark can
count executions exactly (duplicates and misses) even with several runs and child processes.
"""

from __future__ import annotations

import time

from execlog import append_line, executed, started

from tickrun import App

app = App()


@app.task
def noop(i: int) -> None:
    executed(i)


# The same handler behind the timeout design: every attempt runs in a child process.
@app.task(timeout=60)
def noop_timeout(i: int) -> None:
    executed(i)


# W8: ordered keys. Each line is "<key> <seq>": the file's order is the start order.
@app.task(concurrency_key="key", ordered=True)
def ordered_step(key: int, seq: int) -> None:
    append_line(b"%d %d\n" % (key, seq))


# W9: a rate limit. Each line is "<i> <claimed at> <started at>" (Unix seconds).
@app.task(rate="50/s", context=True)
def rated(ctx, i: int) -> None:  # noqa: ANN001 - a TaskContext
    append_line(b"%d %.6f %.6f\n" % (i, ctx.claimed_at.timestamp(), time.time()))


# W4: a worker's wake-up latency. Each line is "<i> <started at>" (Unix seconds).
@app.task
def ping(i: int) -> None:
    started(i)
