"""One run: enqueue due schedule occurrences, then claim, execute and record until none is due.

The main thread owns the database connection: it claims in batches, hands tasks to worker
threads, records their outcomes in batches, and renews the leases of everything it holds. An
outcome not yet recorded when the run dies means the task runs again after its lease (at least
once); the claim token fences every write, so a late run cannot overwrite a newer claim.
This is the only place handler errors are caught.

A handler that called ``ctx.connection()`` is the exception to batching: its own writes are in
a transaction of its worker thread, so that thread records the success there (fenced by the
claim, with the follow-ups) and commits, and hands the main thread an outcome already written.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tickrun import clock, store
from tickrun.database import describe_db_error
from tickrun.delivery import Deliverer
from tickrun.errors import DatabaseError
from tickrun.execution import ChildPool, OutcomeTransaction, Result, invoke, make_context
from tickrun.failures import describe
from tickrun.leases import LeaseGuard
from tickrun.lifecycle import DEAD, RETRYING, SUCCEEDED, Outcome, after_failure
from tickrun.loader import import_ref
from tickrun.notify import Targets, resolve_targets

if TYPE_CHECKING:
    from tickrun.app import App

log = logging.getLogger("tickrun")
# Attempt and run events, with their fields in ``extra`` (tickrun.logs renders them as JSON).
events = logging.getLogger("tickrun.run")

FAIL_ON = ("dead", "failure", "never")
_OUTCOMES = {
    "error": Outcome.FAILED,
    "fail": Outcome.FAILED,
    "retry": Outcome.RETRY,
    "timeout": Outcome.TIMEOUT,
}
FALLBACK_DELAY = 60.0
RATE_WAIT = 60.0  # seconds a run without --max-time may wait for rate windows
MAX_DELAY = 100 * 365 * 86400.0  # far enough to mean "not soon", near enough for a datetime


@dataclass(frozen=True)
class RunOptions:
    """How one run (or worker) claims and runs tasks: the flags of ``tickrun run``.

    ``queues`` (empty: every queue), ``max_tasks``, ``max_time`` (seconds), ``concurrency``,
    ``worker`` (the name on attempts and runs; default ``host:pid``), ``fail_on`` (``dead``,
    ``failure`` or ``never``), ``grace`` (seconds in-flight handlers may finish after SIGTERM
    or SIGINT), ``log_format``; the rest tune batching and alert delivery.
    """

    queues: tuple[str, ...] = ()
    max_tasks: int | None = None
    max_time: float | None = None
    concurrency: int = 1
    worker: str | None = None
    fail_on: str = "dead"
    grace: float = 30.0
    batch_size: int = 500  # at most this many tasks claimed ahead, or recorded, per round trip
    flush_after: float = 0.05  # seconds an outcome may wait to share a commit with others
    prefetch_seconds: float = 0.25  # claim ahead about this much work per worker
    # Leave the process when a lost lease's handler may still run as the lease expires (see
    # tickrun.leases): right for the tickrun program, never for a caller's own process.
    exit_on_lease_loss: bool = False
    # Where alerts about dead tasks go; None: as configured (TICKRUN_ALERT_*, [tool.tickrun],
    # App(alert_...=), @app.on_dead).
    alerts: Targets | None = None
    alert_budget: float = 30.0  # seconds the end of a run may spend delivering alerts
    log_format: str = "text"  # of child processes' logging (tickrun.logs); the run's is the CLI's


@dataclass
class RunSummary:
    """What a run did: the counts of its summary line and its ``exit_code``."""

    run_id: int = 0
    worker: str = ""
    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    dead: int = 0
    failed: int = 0  # failed attempts, dead ones included
    lost: int = 0  # earlier attempts found with an expired lease
    released: int = 0
    scheduled: int = 0
    interrupted: bool = False
    elapsed: float = 0.0
    exit_code: int = 0
    stale: int = 0  # outcomes not written because the claim had been taken over
    alerts_sent: int = 0
    alerts_failed: int = 0  # failed deliveries (retried by later runs)
    notes: list[str] = field(default_factory=list)
    command: str = "run"  # or "worker"

    def line(self) -> str:
        extra = "".join(
            f", {n} {one if n == 1 else many}"
            for n, one, many in (
                (self.scheduled, "scheduled", "scheduled"),
                (self.lost, "lost lease", "lost leases"),
                (self.released, "released", "released"),
                (self.stale, "stale outcome", "stale outcomes"),
                (self.alerts_sent, "alert sent", "alerts sent"),
                (self.alerts_failed, "alert delivery failed", "alert deliveries failed"),
            )
            if n
        )
        stop = " (stopped by signal)" if self.interrupted else ""
        return (
            f"tickrun {self.command} {self.run_id}: claimed {self.claimed}, "
            f"succeeded {self.succeeded}, retried {self.retried}, dead {self.dead}{extra} "
            f"in {self.elapsed:.2f}s "
            f"[worker {self.worker}]{stop}"
        )


def run(app: App, options: RunOptions | None = None) -> RunSummary:
    """One ``tickrun run`` in this process: claim and run due tasks until none is due or a
    limit is hit."""
    return Runner(app, app.engine, options or RunOptions()).run()


class Runner:
    def __init__(self, app: App, engine: Engine, options: RunOptions) -> None:
        if options.fail_on not in FAIL_ON:
            raise ValueError(f"fail_on must be one of {FAIL_ON}")
        self.app = app
        self.engine = engine
        self.options = options
        self.worker = options.worker or f"{socket.gethostname()}:{os.getpid()}"
        self.leases = {name: spec.lease for name, spec in app.tasks.items()}
        self.limits = app.limits()
        # Tasks under a task or queue limit are claimed only for idle workers (never ahead), so
        # a claim's time is the handler's start and a slot is never hoarded in a local queue.
        self._flow = bool(self.limits)
        # When a full rate window next admits a start (monotonic): the database's clock says
        # how long after the claim, and this host's clock need not agree with it.
        self._wake_at: float | None = None
        self.summary = RunSummary(worker=self.worker)
        self._jobs: queue.Queue[store.Claimed | None] = queue.Queue()
        self._results: queue.Queue[store.Ended] = queue.Queue()
        self._held: dict[int, store.Claimed] = {}
        self._taken_over: set[int] = set()  # held tasks another run claimed again
        self._signals = 0
        self._children: ChildPool | None = None
        self._guard = LeaseGuard(exit_process=options.exit_on_lease_loss)
        self._mean_duration: float | None = None  # of recent attempts, seconds (moving average)
        # When each running handler began (time.monotonic()), by task id: written by the worker
        # threads, read by the claim to tell slots busy with a long task (see _prefetch).
        self._began: dict[int, float] = {}
        self._began_lock = threading.Lock()
        self._pending: list[store.Ended] = []  # outcomes not yet recorded
        self._first_pending = 0.0
        # Checked here, before anything is written: a bad URL or format is an error at start.
        self.targets = (
            options.alerts
            if options.alerts is not None
            else resolve_targets(app.alert_settings, hook=bool(app.dead_hooks))
        )
        self._alert_targets = self.targets.names
        self._deliverer = Deliverer(engine, app, self.targets)

    # -- the loop -----------------------------------------------------------------------

    def run(self, install_signals: bool = False) -> RunSummary:
        began = time.monotonic()
        previous = self._install_signals() if install_signals else {}
        threads = [
            threading.Thread(target=self._work, name=f"tickrun-worker-{i}", daemon=True)
            for i in range(self.options.concurrency)
        ]
        failure: SQLAlchemyError | None = None
        try:
            self.summary.run_id = store.start_run(
                self.engine,
                host=socket.gethostname(),
                worker=self.worker,
                pid=os.getpid(),
                now=clock.now(),
                limits=self.limits,
            )
            self._deliverer.start()  # alerts earlier runs could not deliver go first
            self.summary.scheduled = self._enqueue_schedules()
            self._guard.start()
            for thread in threads:
                thread.start()
            self._serve(began)
        except SQLAlchemyError as exc:
            failure = exc
        finally:
            for _ in threads:
                self._jobs.put(None)
            if self._children is not None:
                self._children.close()
            self._guard.stop()
            # Before the signal handlers go back: a second Ctrl-C still shortens the run.
            budget = self._alert_budget(failure is not None)
            report = self._deliverer.stop(budget)
            self.summary.alerts_sent, self.summary.alerts_failed = report.delivered, report.failed
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.summary.elapsed = time.monotonic() - began
        self.summary.exit_code = self._exit_code()
        if failure is not None:
            raise describe_db_error(
                failure, self.engine.url.render_as_string(hide_password=False)
            ) from None
        if self._guard.cut_off.is_set():
            raise DatabaseError(
                "lease lost: the database did not confirm a lease renewal in time; the run "
                "stopped claiming and left its tasks to be claimed again"
            )
        try:
            store.finish_run(
                self.engine,
                self.summary.run_id,
                now=clock.now(),
                exit_code=self.summary.exit_code,
                claimed=self.summary.claimed,
                succeeded=self.summary.succeeded,
                retried=self.summary.retried,
                dead=self.summary.dead,
            )
        except SQLAlchemyError as exc:
            raise describe_db_error(
                exc, self.engine.url.render_as_string(hide_password=False)
            ) from None
        events.info(
            self.summary.line(),
            extra={
                "event": "run",
                "run_id": self.summary.run_id,
                "worker": self.worker,
                "claimed": self.summary.claimed,
                "succeeded": self.summary.succeeded,
                "retried": self.summary.retried,
                "dead": self.summary.dead,
                "failed": self.summary.failed,
                "lost": self.summary.lost,
                "duration_s": round(self.summary.elapsed, 3),
                "exit_code": self.summary.exit_code,
                "alerts_sent": self.summary.alerts_sent,
                "alerts_failed": self.summary.alerts_failed,
            },
        )
        return self.summary

    def _serve(self, began: float) -> None:
        """Claim and run until idle or stopped (tickrun.worker waits and goes on instead)."""
        self._loop(began)

    def _claim_again(self) -> bool:
        """Whether to claim again though the last claim found nothing more: never in a run
        (it ends when idle); a worker's answer depends on its poll interval."""
        return False

    def _tick(self) -> None:
        """Once per turn of the loop: nothing in a run (a worker beats and fires schedules)."""

    def _loop(self, began: float) -> None:
        opts = self.options
        # Kept on the runner: a worker whose database failed mid-loop still has these to record.
        pending = self._pending
        first_pending = self._first_pending
        exhausted = False
        next_beat = time.monotonic() + self._beat_interval()
        grace_end: float | None = None
        while not self._guard.cut_off.is_set():
            self._tick()
            stopping = self._signals > 0
            if stopping and grace_end is None:
                grace_end = time.monotonic() + (opts.grace if self._signals == 1 else 0)
                self._release_unstarted()
            if self._signals > 1:
                grace_end = min(grace_end or 0, time.monotonic())
            time_up = opts.max_time is not None and time.monotonic() - began >= opts.max_time
            if time_up and not stopping:
                self._release_unstarted()
            limited = time_up or (
                opts.max_tasks is not None and self.summary.claimed >= opts.max_tasks
            )
            if exhausted and self._claim_again():
                exhausted = False
            if not (stopping or limited or exhausted) and self._jobs.qsize() < opts.concurrency:
                exhausted = self._claim(len(pending))
            rate_wait = self._rate_wait(began) if exhausted and not (stopping or limited) else None
            if rate_wait == 0:
                exhausted = False  # a rate window has room again
                continue
            if not self._held and (exhausted or stopping or limited) and rate_wait is None:
                break
            wait = min(0.5, max(0.0, next_beat - time.monotonic()))
            if rate_wait is not None:
                wait = min(wait, rate_wait)
            if pending:
                wait = min(wait, max(0.0, first_pending + opts.flush_after - time.monotonic()))
            if grace_end is not None:
                wait = min(wait, max(0.0, grace_end - time.monotonic()))
            try:
                outcome = self._results.get(timeout=wait)
                if not pending:
                    first_pending = self._first_pending = time.monotonic()
                pending.append(outcome)
                while True:
                    pending.append(self._results.get_nowait())
            except queue.Empty:
                pass
            all_done = len(pending) == len(self._held)
            if pending and (
                all_done
                or len(pending) >= opts.batch_size
                or stopping
                or time.monotonic() - first_pending >= opts.flush_after
            ):
                self._record(pending)
                pending.clear()
                exhausted = False
            if time.monotonic() >= next_beat and self._held:
                self._renew()
                next_beat = time.monotonic() + self._beat_interval()
            if grace_end is not None and time.monotonic() >= grace_end and self._held:
                self._interrupt_in_flight()
                break

    def _renew(self) -> None:
        """Renew the leases of the tasks held; give up those another run claimed again."""
        since = time.monotonic()
        mine = [c for c in self._held.values() if c.id not in self._taken_over]
        taken = store.renew(self.engine, mine, self.leases, clock.pinned())
        self._guard.renewed(self._held, since)
        if not taken:
            return
        self._taken_over |= taken
        self._guard.taken_over(taken)
        for task_id in sorted(taken):
            task = self._held[task_id]
            events.error(
                "task %d %s: lease lost: another run claimed it again after its lease expired "
                "(this run was paused or its renewals came late); the handler is told "
                "(ctx.lease_lost) and its outcome will not be recorded",
                task.id,
                task.name,
                extra={
                    "event": "lease_lost",
                    "task_id": task.id,
                    "task": task.name,
                    "attempt": task.attempt,
                    "worker": self.worker,
                },
            )

    def _rate_wait(self, began: float) -> float | None:
        """Seconds until a full rate window admits the due tasks it holds back, while the run
        may wait for it: until ``max_time``, or RATE_WAIT seconds without one (a cron period,
        so runs do not pile up behind a long rate-limited backlog). None: do not wait."""
        if self._wake_at is None:
            return None
        budget = self.options.max_time if self.options.max_time is not None else RATE_WAIT
        left = budget - (time.monotonic() - began)
        until = self._wake_at - time.monotonic()
        if until > left:
            return None
        if until <= 0:
            self._wake_at = None
            return 0.0
        return until

    def _claim(self, unrecorded: int = 0, fresh_after: int | None = None) -> bool:
        """Claim a batch; True when nothing more is claimable now.

        ``unrecorded``: outcomes the loop holds that are not yet written, whose workers are
        free again. ``fresh_after``: claim only the unheld tasks enqueued after that task id
        (store.claim_fresh), as a worker does when a notification wakes it."""
        opts = self.options
        if not self.leases:
            return True
        if opts.max_tasks is not None and self.summary.claimed >= opts.max_tasks:
            return True
        want = opts.concurrency + self._prefetch() - self._outstanding(unrecorded)
        if opts.max_tasks is not None:
            want = min(want, opts.max_tasks - self.summary.claimed)
        if want <= 0:
            return False  # no room now, which is not "nothing due": claim when a slot frees
        since = time.monotonic()
        claim: Callable[..., store.ClaimBatch]
        if fresh_after is not None:
            claim = functools.partial(store.claim_fresh, after=fresh_after)
        else:
            flow_cap = self._idle_workers(unrecorded) if self._flow else None
            claim = functools.partial(store.claim, flow_cap=flow_cap, alerts=self._alert_targets)
        batch = claim(
            self.engine,
            names=list(self.leases),
            queues=list(opts.queues),
            limit=want,
            worker=self.worker,
            leases=self.leases,
            now=clock.pinned(),
            limits=self.limits,
        )
        wake_in = batch.wake_in()
        self._wake_at = None if wake_in is None else since + wake_in
        self.summary.claimed += len(batch.tasks)
        self.summary.lost += batch.lost
        self.summary.dead += batch.dead
        self.summary.failed += batch.dead
        self._guard.hold({t.id: self.leases[t.name] for t in batch.tasks}, since)
        for task in batch.tasks:
            self._held[task.id] = task
            self._jobs.put(task)
        for lost in batch.lost_attempts:
            fields = {
                "task_id": lost.id,
                "task": lost.name,
                "attempt": lost.attempt,
                "worker": lost.worker,
                "outcome": Outcome.LOST.value,
                "error": store.LEASE_EXPIRED.format(worker=lost.worker),
            }
            if lost.dead:
                events.error(
                    "task %d %s: attempt %d lost (lease expired), now dead",
                    lost.id,
                    lost.name,
                    lost.attempt,
                    extra={"event": "dead", **fields},
                )
            else:
                events.warning(
                    "task %d %s: attempt %d lost (lease of worker %s expired), running again",
                    lost.id,
                    lost.name,
                    lost.attempt,
                    lost.worker,
                    extra={"event": "lost", **fields},
                )
        if batch.dead:
            self._deliverer.wake()
        return batch.exhausted(want)

    def _outstanding(self, unrecorded: int) -> int:
        """Claimed tasks not finished: running, or waiting in the local queue for a slot."""
        return len(self._held) - unrecorded - self._results.qsize()

    def _idle_workers(self, unrecorded: int) -> int:
        return max(0, self.options.concurrency - self._outstanding(unrecorded))

    def _prefetch(self) -> int:
        """How many tasks to claim beyond one per free slot: what the slots that are not
        busy with a long task start within ``prefetch_seconds`` at the recent mean duration.
        For fast tasks that is a round trip's worth (a batch of 50 no-op tasks drained
        3,300/s on PostgreSQL, 200 drained 7,100/s), at most ``batch_size``; for tasks slower
        than ``prefetch_seconds`` it is none. A slot whose handler has run longer than
        ``prefetch_seconds`` counts for nothing: a task claimed behind it would wait there
        while another run or host could start it. None until a handler has finished."""
        opts = self.options
        if self._mean_duration is None:
            return 0
        now = time.monotonic()
        with self._began_lock:
            long = sum(now - began > opts.prefetch_seconds for began in self._began.values())
        per_slot = opts.prefetch_seconds / max(self._mean_duration, 1e-6)
        return min(opts.batch_size, int(per_slot * max(0, opts.concurrency - long)))

    def _beat_interval(self) -> float:
        leases = [self.leases[t.name] for t in self._held.values()] or list(self.leases.values())
        return min(leases, default=60) / 3

    # -- workers ------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            task = self._jobs.get()
            if task is None:
                return
            if self._guard.cut_off.is_set():
                continue  # a host cut off from the database starts nothing more
            if self._guard.is_lost(task.id):  # taken over before it started: give it up
                lost = Result("error", error="lease lost before the handler started")
                self._results.put(self._outcome(task, lost, None))
                continue
            spec = self.app.tasks[task.name]
            # Only handlers in this process can share a transaction with the run's commit.
            tx = OutcomeTransaction(self.engine) if spec.timeout is None else None
            ctx = make_context(
                spec,
                task.id,
                task.attempt,
                task.max_attempts,
                task.key,
                task.scheduled_for,
                functools.partial(self._guard.is_lost, task.id),
                claimed_at=task.started_at,
                group=task.group,
                app=self.app,
                transaction=tx,
            )
            began = clock.now()
            with self._began_lock:
                self._began[task.id] = time.monotonic()
            try:
                if spec.timeout is None:
                    result = invoke(spec, task.payload, ctx)
                else:
                    result = self._child_pool().call(spec, task.payload, ctx)
            except Exception as exc:  # a worker thread that died would leave the run waiting
                error, trace = describe(exc)
                result = Result("error", error=error, traceback=trace)
            finally:
                with self._began_lock:
                    del self._began[task.id]
            ended = self._outcome(task, result, began)
            if tx is not None:
                ended = self._commit_own(tx, ended)
            self._results.put(ended)

    def _commit_own(self, tx: OutcomeTransaction, ended: store.Ended) -> store.Ended:
        """For a handler that used ``ctx.connection()``: record its success in that
        transaction and commit, or roll its writes back (it failed, or lost its claim)."""
        try:
            if tx.conn is None or ended.status != SUCCEEDED:
                return ended  # nothing of the handler's to keep; the batch records a failure
            if not tx.intact:
                misuse = Result(
                    "error",
                    error="the handler committed or rolled back ctx.connection()'s "
                    "transaction itself; tickrun commits it with the success",
                )
                return self._outcome(ended.task, misuse, ended.started_at)
            if not store.record_success(tx.conn, ended, now=clock.now(), worker=self.worker):
                return replace(ended, committed=False)
            tx.commit()
            return replace(ended, committed=True)
        except SQLAlchemyError as exc:
            # Whether a failed COMMIT took effect is unknown: the failure recorded by the batch
            # is fenced, so it is written only if the success was not.
            error, trace = describe(exc)
            return self._outcome(
                ended.task,
                Result("error", error=f"recording the success failed: {error}", traceback=trace),
                ended.started_at,
            )
        finally:
            tx.close()

    def _followup_row(self, task: store.Claimed, request: dict[str, Any]) -> dict[str, Any]:
        """The row of a ``ctx.enqueue`` request, checked again here: a child process sends its
        requests as JSON, and nothing from a pipe is inserted unchecked."""
        row = self.app.task_row(
            request["task"],
            request["payload"],
            key=request["key"],
            run_at=datetime.fromisoformat(request["run_at"]),
            queue=request["queue"],
            priority=request["priority"],
        )
        row["parent_id"] = task.id
        return row

    def _child_pool(self) -> ChildPool:
        if self._children is None:
            self._children = ChildPool(import_ref(self.app), self.options.log_format)
        return self._children

    def _outcome(
        self, task: store.Claimed, result: Result, started_at: datetime | None
    ) -> store.Ended:
        now = clock.now()
        if result.kind == "ok":
            try:
                rows = tuple(self._followup_row(task, f) for f in result.followups)
            except Exception as exc:  # noqa: BLE001 - a request that no longer checks out
                error, trace = describe(exc)
                result = Result("error", error=f"follow-up task: {error}", traceback=trace)
            else:
                return store.Ended(
                    task,
                    Outcome.SUCCEEDED,
                    SUCCEEDED,
                    now,
                    started_at=started_at,
                    result=result.value,
                    followups=rows,
                )
        spec = self.app.tasks[task.name]
        outcome = _OUTCOMES[result.kind]
        status = after_failure(task.attempt, task.max_attempts, final=result.kind == "fail")
        if status == DEAD:
            return store.Ended(
                task,
                outcome,
                DEAD,
                now,
                error=result.error,
                traceback=result.traceback,
                started_at=started_at,
            )
        try:
            delay = float(result.delay if result.delay is not None else spec.backoff(task.attempt))
        except Exception:  # a user's backoff callable must not lose the outcome
            log.exception("task %s: backoff raised; retrying in %ss", task.name, FALLBACK_DELAY)
            delay = FALLBACK_DELAY
        run_at = now + timedelta(seconds=min(max(0.0, delay), MAX_DELAY))  # inf, NaN too
        return store.Ended(
            task,
            outcome,
            RETRYING,
            now,
            run_at,
            error=result.error,
            traceback=result.traceback,
            started_at=started_at,
        )

    # -- recording ----------------------------------------------------------------------

    def _record(self, outcomes: list[store.Ended]) -> None:
        batch = [o for o in outcomes if o.committed is None]
        written = store.record(
            self.engine, batch, now=clock.now(), worker=self.worker, alerts=self._alert_targets
        )
        written |= {o.task.id for o in outcomes if o.committed}
        if any(o.status == DEAD and o.task.id in written for o in outcomes):
            self._deliverer.wake()
        self._guard.release(o.task.id for o in outcomes)
        for o in outcomes:
            if o.started_at is not None:
                took = (o.finished_at - o.started_at).total_seconds()
                mean = self._mean_duration
                self._mean_duration = took if mean is None else 0.8 * mean + 0.2 * took
            self._held.pop(o.task.id, None)
            self._taken_over.discard(o.task.id)
            if o.task.id not in written:
                self.summary.stale += 1
                log.warning(
                    "task %d %s: outcome %s not recorded, its claim was taken over after the "
                    "lease expired",
                    o.task.id,
                    o.task.name,
                    o.outcome,
                )
                continue
            if o.status == SUCCEEDED:
                self.summary.succeeded += 1
                continue
            self.summary.failed += 1
            fields = self._fields(o)
            if o.status == DEAD:
                self.summary.dead += 1
                events.error(
                    "task %d %s: attempt %d/%d failed, now dead: %s",
                    o.task.id,
                    o.task.name,
                    o.task.attempt,
                    o.task.max_attempts,
                    o.error,
                    extra={"event": "dead", **fields},
                )
            else:
                self.summary.retried += 1
                events.warning(
                    "task %d %s: attempt %d/%d %s, retry at %s: %s",
                    o.task.id,
                    o.task.name,
                    o.task.attempt,
                    o.task.max_attempts,
                    o.outcome,
                    o.run_at.isoformat(timespec="seconds") if o.run_at else "?",
                    o.error,
                    extra={"event": "retrying", **fields},
                )

    def _fields(self, o: store.Ended) -> dict[str, object]:
        """An attempt's fields in a log record (the JSON log's keys)."""
        started = o.started_at or o.task.started_at
        return {
            "task_id": o.task.id,
            "task": o.task.name,
            "queue": o.task.queue,
            "attempt": o.task.attempt,
            "max_attempts": o.task.max_attempts,
            "worker": self.worker,
            "outcome": str(o.outcome),
            "duration_s": round((o.finished_at - started).total_seconds(), 3),
            "error": o.error,
            "retry_at": o.run_at.isoformat() if o.run_at else None,
        }

    def _release_unstarted(self) -> None:
        unstarted = []
        while True:
            try:
                task = self._jobs.get_nowait()
            except queue.Empty:
                break
            if task is not None:
                unstarted.append(task)
        if unstarted:
            self.summary.released += store.release(self.engine, unstarted, clock.now())
            for task in unstarted:
                self._held.pop(task.id, None)
            self._guard.release(task.id for task in unstarted)

    def _interrupt_in_flight(self) -> None:
        """At the end of the grace period: record the attempts still running as interrupted."""
        now = clock.now()
        outcomes = []
        for task in self._held.values():
            status = after_failure(task.attempt, task.max_attempts)
            outcomes.append(
                store.Ended(
                    task,
                    Outcome.INTERRUPTED,
                    status,
                    now,
                    now if status == RETRYING else None,
                    "interrupted: the run was stopped before the handler finished",
                    None,
                )
            )
        self._record(outcomes)

    # -- signals and exit ---------------------------------------------------------------

    def _install_signals(self) -> dict[int, signal._HANDLER]:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            self._signals += 1
            self.summary.interrupted = True

        previous: dict[int, signal._HANDLER] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
        return previous

    def _alert_budget(self, failed: bool) -> float:
        """How long the end of the run may deliver alerts: nothing when the database failed or
        the run was cut off from it (it must exit before its leases expire), or on a second
        signal; a few seconds after one signal (a service manager's stop timeout is short)."""
        if failed or self._guard.cut_off.is_set() or self._signals > 1:
            return 0.0
        if self._signals:
            return min(5.0, self.options.alert_budget)
        return self.options.alert_budget

    def _exit_code(self) -> int:
        fail_on = self.options.fail_on
        if fail_on == "dead" and self.summary.dead:
            return 1
        if fail_on == "failure" and self.summary.failed:
            return 1
        return 0

    def _enqueue_schedules(self) -> int:
        if not self.app.schedules:
            return 0  # and croniter is never imported: every cron tick pays for imports
        from tickrun.scheduler import enqueue_due

        return enqueue_due(self.app, self.engine, clock.now())
