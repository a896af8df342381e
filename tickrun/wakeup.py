"""How an idle ``tickrun worker`` learns that there may be work: it waits on a :class:`Waker`.

* PostgreSQL: LISTEN on a connection of its own. The NOTIFY comes from a trigger on the tasks
  table (tickrun.dialects.install_notify), so it is sent when the enqueueing transaction
  commits, never for one rolled back. Before it listens, the waker asks whether a pooler
  (PgBouncer, ...) relays its connection: there a LISTEN would stay behind on a server
  connection the pooler shares, and in transaction pooling mode notifications would reach
  it while no client is linked to it (PgBouncer logs ``got packet 'A' from server when not
  linked``) and never this worker. Behind a pooler the worker therefore polls, and says so
  once; on a direct connection a self-test (a NOTIFY from another connection) checks that
  notifications arrive. The listener's connection breaking is an outage (:class:`Lost`):
  the worker reconnects, then calls :meth:`Waker.connect` to LISTEN again at once.
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
# Between two self-tests on a direct connection after one got no notification in SELF_TEST
# (a server too slow to answer in time, most likely). Never behind a pooler: see the module.
RELISTEN = 30.0


class Lost(Exception):
    """The waker's own connection to the database failed: an outage, as a failed query is."""


class Waker:
    """Polling: wait the whole timeout (unless stopped)."""

    how = "polling"
    # Whether a wake means that tasks were committed (a NOTIFY), so that the tasks newer than
    # the last ones seen are worth a claim of their own (store.claim_fresh).
    announces_commits = False

    def connect(self) -> None:
        """Open what the waker watches through, at start and again after an outage; raises
        :class:`Lost` when the database does not answer."""

    def wait(self, timeout: float, stop: Callable[[], bool]) -> bool:
        """Wait up to ``timeout`` seconds; True when woken early (there may be work). Raises
        :class:`Lost` when the waker's connection breaks."""
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
    """PostgreSQL: woken by NOTIFY; polls while it has no listener it can trust."""

    how = "LISTEN/NOTIFY"
    announces_commits = True

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Any = None
        self._retry_at: float | None = None  # when to self-test again (a direct connection)
        self._never: str | None = None  # why this database cannot have a listener at all
        self._warned = False

    def connect(self) -> None:
        self.close()
        self._retry_at = None
        if self._never is not None:
            return  # a pooler or the driver: decided once, never tried again
        try:
            raw = self._engine.raw_connection()
        except Exception as exc:  # noqa: BLE001 - whatever the driver raises, the server is gone
            raise Lost(_one_line(exc)) from exc
        conn: Any = raw.driver_connection
        # Held for the worker's life, never returned to the pool; from here on it is closed
        # only as a driver connection (a pool would roll back a broken one and log a
        # traceback, "Exception during reset or similar").
        raw.detach()
        try:
            why = self._listen(conn)
        except Exception as exc:  # noqa: BLE001 - e.g. the server going away meanwhile
            _close_quietly(conn)
            raise Lost(_one_line(exc)) from exc
        if why is not None:
            _close_quietly(conn)
            self._fallback(why)
            self.how = "polling"
            return
        self._conn = conn
        self._warned = False
        self.how = ListenWaker.how

    def _listen(self, conn: Any) -> str | None:
        """LISTEN on ``conn`` once notifications are known to reach it; else why not."""
        if not hasattr(conn, "notifies"):
            self._never = "the driver is not psycopg 3"
            return self._never
        conn.autocommit = True
        if dialects.relayed(conn):
            self._never = (
                "a connection pooler such as PgBouncer relays the connection; a LISTEN would "
                "stay behind on a server connection it shares"
            )
            return self._never
        dialects.listen(conn)
        # From another connection, as an enqueue's trigger sends it: through a relay the
        # listener's own NOTIFY could come back to it on the session of its LISTEN, though
        # no other client's would.
        with self._engine.begin() as other:
            dialects.notify(other)
        if not any(True for _ in conn.notifies(timeout=SELF_TEST, stop_after=1)):
            self._retry_at = time.monotonic() + RELISTEN
            return f"LISTEN got no notification within {SELF_TEST:g}s; trying again later"
        return None

    def _fallback(self, why: str) -> None:
        if not self._warned:
            log.warning("worker: no LISTEN/NOTIFY (%s); polling instead", why)
            self._warned = True

    @property
    def listening(self) -> bool:
        return self._conn is not None

    def _slice(self, seconds: float) -> bool:
        if self._conn is None:
            if self._retry_at is not None and time.monotonic() >= self._retry_at:
                self.connect()
            if self._conn is None:
                time.sleep(seconds)
                return False
        try:
            return any(True for _ in self._conn.notifies(timeout=seconds, stop_after=1))
        except Exception as exc:  # noqa: BLE001 - e.g. the server went away
            self.close()
            raise Lost(_one_line(exc)) from exc

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            _close_quietly(conn)


def _close_quietly(conn: Any) -> None:
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
