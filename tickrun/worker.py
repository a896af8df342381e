"""``tickrun worker``: a run that does not stop when idle.

The engine is tickrun.runner's: the same claims, leases, fencing, flow-control limits, alerts
and schedule keys (so workers, cron runs and other hosts never enqueue an occurrence twice),
and the same stop on SIGTERM/SIGINT (``grace``). Between rounds of claiming until idle, the
worker waits on a tickrun.wakeup.Waker until a notification, a file change, the earliest
claimable time of a delayed or retrying task, or the poll interval, whichever comes first.

A worker outlives database outages: a connection failure after it started (a query's, or
the listener's) is an outage, logged once; the worker then tries a round trip (a query, and
the waker's LISTEN) after 0, 0.5, 1, 2, ... seconds, at most MAX_BACKOFF apart, logs the
recovery once, and carries on at once, listening again; the next outage starts from the
shortest wait again. A stop during an outage tries one round trip: with the database back
the worker stops as usual (exit 0), without it, it is an error (exit 3). At start, a database
it cannot reach is an error, as for ``tickrun run``. Its row in tickrun_runs has a
heartbeat, so ``tickrun check --max-silence`` and ``tickrun doctor`` see it alive.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from tickrun import clock, store, wakeup
from tickrun.database import describe_db_error, mask_url, ping
from tickrun.errors import DatabaseError
from tickrun.runner import Runner, RunOptions, RunSummary

if TYPE_CHECKING:
    from tickrun.app import App

log = logging.getLogger("tickrun")

DEFAULT_POLL = 1.0
HEARTBEAT = 15.0  # seconds between two heartbeats of a worker
FIRST_BACKOFF = 0.5  # wait after the first failed reconnection attempt, doubled after each
MAX_BACKOFF = 30.0  # longest wait between two reconnection attempts
SCHEDULES_EVERY = 1.0  # seconds between two looks at the schedules


@dataclass(frozen=True)
class WorkerOptions:
    """What only a worker has beside :class:`~tickrun.runner.RunOptions`: ``poll``, the longest
    idle wait in seconds (``--poll``), and the heartbeat's interval and callback."""

    poll: float = DEFAULT_POLL  # longest idle wait without a look at the database
    heartbeat: float = HEARTBEAT
    # Called at every heartbeat and once at exit (the CLI writes the --metrics-file there).
    on_beat: Callable[[Engine], None] | None = None


def work(
    app: App, options: RunOptions | None = None, worker: WorkerOptions | None = None
) -> RunSummary:
    """A ``tickrun worker`` in this process, until :meth:`Worker.stop` (or ``max_tasks``)."""
    return Worker(app, app.engine, options or RunOptions(), worker or WorkerOptions()).run()


def transient(exc: SQLAlchemyError) -> bool:
    """A failure that may pass: the connection was lost or could not be made."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    name = type(exc).__name__
    return name in ("OperationalError", "InterfaceError")


class Worker(Runner):
    def __init__(
        self, app: App, engine: Engine, options: RunOptions, worker: WorkerOptions
    ) -> None:
        super().__init__(app, engine, options)
        self.summary.command = "worker"
        self.worker_options = worker
        self._waker: wakeup.Waker = wakeup.Waker()  # replaced by the database's at start
        self._last_claim = time.monotonic()
        self._next_beat = 0.0
        self._next_schedules = 0.0
        self._newest_id = 0  # the highest task id when the worker last went idle
        self._url = ""

    def stop(self) -> None:
        """Stop as on SIGTERM (from another thread, or a signal handler of the caller's)."""
        self._signals += 1
        self.summary.interrupted = True

    def _stopped(self) -> bool:
        return self._signals > 0 or self._cut_off()

    def _cut_off(self) -> bool:
        return self._guard.cut_off.is_set()

    def _limited(self) -> bool:
        limit = self.options.max_tasks
        return limit is not None and self.summary.claimed >= limit

    def _claim_again(self) -> bool:
        # A busy worker with free slots looks again every poll interval, like an idle one.
        return time.monotonic() - self._last_claim >= self.worker_options.poll

    def _claim(self, unrecorded: int = 0, fresh_after: int | None = None) -> bool:
        self._last_claim = time.monotonic()
        return super()._claim(unrecorded, fresh_after)

    def _serve(self, began: float) -> None:
        self._url = self.engine.url.render_as_string(hide_password=False)
        self._waker = wakeup.for_engine(self.engine, self._url)
        woken = False
        try:
            try:
                self._waker.connect()
            except wakeup.Lost as exc:
                self._reconnect(exc)
            log.info("worker %s: waiting for tasks by %s", self.worker, self._waker.how)
            while True:
                try:
                    if self._stopped() or self._limited():
                        self._loop(time.monotonic())  # grace, release, interrupt as a run does
                        return
                    self._waker.mark()
                    if woken and self._waker.announces_commits:
                        # Straight to what the notification announced, in one round trip;
                        # the loop's claim then takes whatever else is due, in claim order.
                        self._claim(fresh_after=self._newest_id)
                    self._loop(time.monotonic())
                    if self._stopped() or self._limited():
                        continue
                    self._tick()
                    woken = self._waker.wait(self._idle_wait(), self._stopped)
                except (SQLAlchemyError, wakeup.Lost) as exc:
                    if isinstance(exc, SQLAlchemyError) and not transient(exc):
                        raise
                    woken = False
                    # Stopped with the database still away: the stop cannot release or record
                    # anything, so that is the error (a run cut off from its leases says so
                    # instead, after the loop).
                    if not self._reconnect(exc) and not self._cut_off():
                        if isinstance(exc, SQLAlchemyError):
                            raise
                        raise DatabaseError(
                            f"database error ({mask_url(self._url)}): {exc}"
                        ) from None
        finally:
            self._waker.close()
            if self.worker_options.on_beat is not None:
                self._call_on_beat()

    def _reconnect(self, exc: SQLAlchemyError | wakeup.Lost) -> bool:
        """Wait out an outage: log it, try a round trip (a query, then the waker's LISTEN) at
        once and then with a backoff, log the recovery. True once the database answered;
        False when stopped before (a stop tries one round trip first, for a database that is
        back already)."""
        began = time.monotonic()
        why = describe_db_error(exc, self._url) if isinstance(exc, SQLAlchemyError) else exc
        log.warning("worker %s: lost the database, reconnecting with backoff: %s", self.worker, why)
        self._waker.close()
        backoff = FIRST_BACKOFF
        while True:
            self.engine.dispose()  # every pooled connection may be dead
            try:
                ping(self.engine)
                if not self._stopped():
                    self._waker.connect()  # LISTEN again at once, not after a poll
            except (SQLAlchemyError, wakeup.Lost) as again:
                if isinstance(again, SQLAlchemyError) and not transient(again):
                    raise
                if self._stopped():
                    return False
                self._sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
                continue
            log.warning(
                "worker %s: the database is back after %.1fs",
                self.worker,
                time.monotonic() - began,
            )
            self._next_beat = 0.0  # a heartbeat at once; the loop claims at once too
            return True

    def _tick(self) -> None:
        now = time.monotonic()
        if now >= self._next_beat:
            self._beat()
            self._next_beat = now + self.worker_options.heartbeat
        if now >= self._next_schedules and not self._stopped():
            # At most once a second: occurrences fire on minute boundaries at the finest.
            self.summary.scheduled += self._enqueue_schedules()
            self._next_schedules = now + SCHEDULES_EVERY

    def _idle_wait(self) -> float:
        """Until the earliest claimable task, bounded by the poll interval and the heartbeat."""
        opts = self.worker_options
        wait = min(opts.poll, max(0.0, self._next_beat - time.monotonic()))
        upcoming = store.next_claimable(
            self.engine,
            names=list(self.leases),
            queues=list(self.options.queues),
            now=clock.pinned(),
        )
        self._newest_id = upcoming.newest
        if upcoming.at is not None:
            wait = min(wait, (upcoming.at - upcoming.now).total_seconds())
        if self._wake_at is not None:  # a rate window opens
            wait = min(wait, max(0.0, self._wake_at - time.monotonic()))
        # Time spent claiming counts: a poll every `poll` seconds, not every poll + claim.
        return max(0.0, min(wait, self._last_claim + opts.poll - time.monotonic()))

    def _beat(self) -> None:
        s = self.summary
        store.heartbeat(
            self.engine,
            s.run_id,
            now=clock.now(),
            claimed=s.claimed,
            succeeded=s.succeeded,
            retried=s.retried,
            dead=s.dead,
        )
        if self.worker_options.on_beat is not None:
            self._call_on_beat()

    def _call_on_beat(self) -> None:
        assert self.worker_options.on_beat is not None
        try:
            self.worker_options.on_beat(self.engine)
        except Exception:  # noqa: BLE001 - reporting never stops a worker
            log.exception("worker %s: heartbeat hook failed", self.worker)

    def _sleep(self, seconds: float) -> None:
        wakeup.Waker().wait(seconds, self._stopped)
