"""How an idle ``tickrun worker`` learns that there may be work: it waits on a :class:`Waker`.

* PostgreSQL: LISTEN on a connection of its own. The NOTIFY comes from a trigger on the tasks
  table (tickrun.dialects.install_notify), so it is sent when the enqueueing transaction
  commits, never for one rolled back. Behind PgBouncer in transaction pooling mode a LISTEN is
  accepted but its notifications never arrive; a self-test at connect (a NOTIFY from
  another connection) finds that, and the worker then polls (one line in its log says so).
* SQLite: the database and WAL files change when another process commits; watching their
  size and modification time costs a ``stat`` every few hundredths of a second, not a query.
* MariaDB (and the fallbacks): nothing to watch; the worker claims every poll interval.

Every wait is bounded by the caller's timeout, and sliced so a stop request (a signal) is seen
within a fraction of a second.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from tickrun import dialects
from tickrun.database import sqlite_path

log = logging.getLogger("tickrun")

SLICE = 0.25  # longest uninterrupted sleep: how soon a stop request is seen
FILE_CHECK = 0.02  # between two looks at an SQLite database's files
SELF_TEST = 2.0  # how long a new listener waits for its self-test's notification
RELISTEN = 30.0  # between two attempts to listen again after the listener failed


class Waker:
    """Polling: wait the whole timeout (unless stopped)."""

    how = "polling"
    # Whether a wake means that tasks were committed (a NOTIFY), so that the tasks newer than
    # the last ones seen are worth a claim of their own (store.claim_fresh).
    announces_commits = False

    def wait(self, timeout: float, stop: Callable[[], bool]) -> bool:
        """Wait up to ``timeout`` seconds; True when woken early (there may be work)."""
        deadline = time.monotonic() + timeout
        while not stop():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._slice(min(SLICE, left)):
                return True
        return False

    def _slice(self, seconds: float) -> bool:
        time.sleep(seconds)
        return False

    def mark(self) -> None:
        """The worker has looked at the database: changes until now are seen."""

    def close(self) -> None:
        """Release what the waker holds."""


class FileWaker(Waker):
    """SQLite: woken when the database or its WAL file changes."""

    how = "watching the database file"

    def __init__(self, path: str) -> None:
        self._files = (path, f"{path}-wal")
        self._seen = self._state()

    def _state(self) -> tuple[tuple[int, int], ...]:
        state = []
        for name in self._files:
            try:
                st = os.stat(name)
            except OSError:
                state.append((-1, -1))
            else:
                state.append((st.st_mtime_ns, st.st_size))
        return tuple(state)

    def mark(self) -> None:
        self._seen = self._state()

    def _slice(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            if self._state() != self._seen:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(FILE_CHECK, left))


class ListenWaker(Waker):
    """PostgreSQL: woken by NOTIFY; polls while it has no working listener."""

    how = "LISTEN/NOTIFY"
    announces_commits = True

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Any = None
        self._retry_at = 0.0
        self._warned = False
        self._connect()

    def _connect(self) -> None:
        self._retry_at = time.monotonic() + RELISTEN
        raw = None
        try:
            raw = self._engine.raw_connection()
            conn: Any = raw.driver_connection
            raw.detach()  # held for the worker's life, never returned to the pool
            if not hasattr(conn, "notifies"):
                self._fallback("the driver is not psycopg 3")
                raw.close()
                return
            conn.autocommit = True
            dialects.listen(conn)
            # From another connection, as an enqueue's trigger sends it: behind PgBouncer the
            # listener's own NOTIFY would often run on the same server session as its LISTEN
            # and come back to it, though no other client's ever would.
            with self._engine.begin() as other:
                dialects.notify(other)
            if not any(True for _ in conn.notifies(timeout=SELF_TEST, stop_after=1)):
                self._fallback(
                    "LISTEN gets no notifications (PgBouncer in transaction pooling mode?)"
                )
                raw.close()
                return
        except Exception as exc:  # noqa: BLE001 - no listener: the worker polls meanwhile
            self._fallback(_one_line(exc))
            if raw is not None:
                with contextlib.suppress(Exception):  # the connection is gone anyway
                    raw.close()
            return
        self._conn = conn
        self._warned = False

    def _fallback(self, why: str) -> None:
        self._conn = None
        if not self._warned:
            log.warning("worker: no LISTEN/NOTIFY (%s); polling instead", why)
            self._warned = True

    @property
    def listening(self) -> bool:
        return self._conn is not None

    def _slice(self, seconds: float) -> bool:
        if self._conn is None:
            if time.monotonic() >= self._retry_at:
                self._connect()
            if self._conn is None:
                time.sleep(seconds)
                return False
        try:
            return any(True for _ in self._conn.notifies(timeout=seconds, stop_after=1))
        except Exception as exc:  # noqa: BLE001 - e.g. the server went away
            self.close()
            self._fallback(_one_line(exc))
            return False

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                conn.close()


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def for_engine(engine: Engine, url: str) -> Waker:
    backend = dialects.kind(engine)
    if backend == "postgresql":
        return ListenWaker(engine)
    path = sqlite_path(url)
    if backend == "sqlite" and path is not None:
        return FileWaker(path)
    return Waker()
