"""One appended line per handler execution, for counting duplicates and misses.

Each call is one ``write`` on an ``O_APPEND`` descriptor of the file named by
``TICKRUN_BENCH_OUT``, which the kernel keeps whole across processes and threads. Standard
library only: tickrun's benchmark app and every peer's app (bench/peer_*.py) import it, and it
must add nothing to a peer's start-up that tickrun's does not pay too.
"""

from __future__ import annotations

import os
import threading
import time

_fd: int | None = None
_lock = threading.Lock()


def append_line(line: bytes) -> None:
    global _fd
    if _fd is None:
        with _lock:
            if _fd is None:
                _fd = os.open(
                    os.environ["TICKRUN_BENCH_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
                )
    os.write(_fd, line)


def executed(i: int) -> None:
    """A drain's line: ``<i>``."""
    append_line(b"%d\n" % i)


def started(i: int) -> None:
    """W4's line: ``<i> <Unix time of the handler's start>``."""
    append_line(b"%d %.6f\n" % (i, time.time()))
