"""The benchmark's tickrun application: handlers that append one line per execution.

Each handler writes ``<i>\\n`` to the file named by ``TICKRUN_BENCH_OUT`` with one ``write`` on an
``O_APPEND`` descriptor, which the kernel keeps whole across processes, so the benchmark can
count executions exactly (duplicates and misses) even with several runs and child processes.
"""

from __future__ import annotations

import os
import threading

from tickrun import App

app = App()

_fd: int | None = None
_lock = threading.Lock()


def _append(i: int) -> None:
    global _fd
    if _fd is None:
        with _lock:
            if _fd is None:
                _fd = os.open(
                    os.environ["TICKRUN_BENCH_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
                )
    os.write(_fd, b"%d\n" % i)


@app.task
def noop(i: int) -> None:
    _append(i)


# The same handler behind the timeout design: every attempt runs in a child process.
@app.task(timeout=60)
def noop_timeout(i: int) -> None:
    _append(i)
