"""Calling one handler for one attempt, and turning whatever happens into a Result.

Handlers without a ``timeout`` run in a thread of the run. Python cannot stop a thread, so a
handler with a ``timeout`` runs in a child process (spawned once per concurrency slot and
reused); when the attempt overruns, the child is killed and replaced. Messages between the run
and its children are JSON, never pickles.

What a successful attempt leaves travels with its Result: the return value as JSON text, and
the follow-up tasks ``ctx.enqueue`` asked for, as JSON-able requests (so a child process can
send them back over its pipe). The runner turns them into rows that commit with the success.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from tickrun.errors import Fail, LeaseLost, Retry, UsageError
from tickrun.failures import bounded, describe

if TYPE_CHECKING:
    from multiprocessing.connection import Connection as Pipe
    from multiprocessing.process import BaseProcess

    from sqlalchemy import Engine
    from sqlalchemy.engine import Connection, RootTransaction

    from tickrun.app import App
    from tickrun.specs import TaskSpec

LEASE_POLL = 0.1  # seconds between looks at the lease while a child process works
# A result is stored in the task row and read by status endpoints polled every second: 64 KiB
# of JSON is plenty for "where is the export" and keeps every row readable in one round trip.
# A larger one fails the attempt (a cut JSON text would mean nothing); keep big output
# elsewhere and return where it is.
MAX_RESULT_BYTES = 64 * 1024


@dataclass(frozen=True)
class TaskContext:
    """What a handler declared with ``context=True`` receives as its first argument."""

    task_id: int
    task: str
    attempt: int
    max_attempts: int
    key: str | None
    scheduled_for: datetime | None
    logger: logging.LoggerAdapter[logging.Logger]
    _is_lost: Callable[[], bool] = field(default=lambda: False, repr=False, compare=False)
    # A child process's context keeps the default: the run kills that process instead.
    claimed_at: datetime | None = None  # when this attempt was claimed: its start for rates
    group: str | None = None  # the key value per-key limits and ordering apply to
    _app: App | None = field(default=None, repr=False, compare=False)
    _followups: list[dict[str, Any]] = field(default_factory=list, repr=False, compare=False)
    # None in a child process (timeout=): its connection could not share the run's commit.
    _transaction: OutcomeTransaction | None = field(default=None, repr=False, compare=False)

    @property
    def lease_lost(self) -> bool:
        """True once the run gave up this task's lease (it could not renew it in time): another
        run may take the task over, so the handler should stop. Never true in a child process
        (``timeout=``): the run kills that process instead."""
        return self._is_lost()

    def check(self) -> None:
        """Raise :class:`LeaseLost` once the lease is lost; call it between steps of long work."""
        if self._is_lost():
            raise LeaseLost(f"task {self.task_id}: the run lost its lease; stop, it will run again")

    def enqueue(
        self,
        task: str,
        payload: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
    ) -> str:
        """Add a follow-up task that is committed only together with this attempt's success.

        Same options as ``app.enqueue`` (checked now: a bad payload raises here). If the
        attempt fails, times out or its run dies, the task is never inserted; if it succeeds,
        it is inserted once, in the transaction that records the success (fenced by the
        claim, like every outcome). Returns the follow-up's key: ``key`` if given, else
        ``tickrun:after:<task id>:<attempt>:<n>`` (n counts this attempt's calls from 1).
        Look it up with ``app.status(key=...)`` once this task has succeeded.
        """
        if self._app is None:
            raise UsageError("ctx.enqueue() needs the context a run gives its handler")
        if key is None:
            key = f"tickrun:after:{self.task_id}:{self.attempt}:{len(self._followups) + 1}"
        row = self._app.task_row(
            task, payload, key=key, delay=delay, run_at=run_at, queue=queue, priority=priority
        )
        self._followups.append(
            {
                "task": task,
                "payload": dict(payload or {}),
                "key": key,
                "run_at": row["run_at"].isoformat(),  # delay= counts from now, not the commit
                "queue": queue,
                "priority": priority,
            }
        )
        return key

    def connection(self) -> Connection:
        """A SQLAlchemy Connection in the transaction that will record this attempt's success.

        Write your own rows with it (same database as tickrun's tables): they commit together
        with the success and the follow-ups of :meth:`enqueue`, or not at all (the handler
        raised, or the claim was taken over after its lease expired). Do not commit or roll it
        back yourself. Not available to tasks with ``timeout=``, which run in a child process.
        On SQLite the transaction holds the database's write lock from the first call until
        the handler returns: call it late, after slow work.
        """
        if self._transaction is None:
            raise UsageError(
                f"task {self.task}: ctx.connection() is not available to tasks with timeout= "
                "(they run in a child process, whose connection cannot share the run's commit)"
            )
        return self._transaction.connection()


@dataclass(frozen=True)
class Result:
    kind: str  # ok | error | retry | fail | timeout
    error: str | None = None
    traceback: str | None = None
    delay: float | None = None
    value: str | None = None  # ok: the return value as JSON text (None when it returned None)
    followups: tuple[dict[str, Any], ...] = ()  # ok: ctx.enqueue requests, in call order


class OutcomeTransaction:
    """The transaction ``ctx.connection()`` opens on the run's database, lazily: the worker
    thread records the attempt's success in it and commits (see ``runner``), or rolls it back.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.conn: Connection | None = None
        self._tx: RootTransaction | None = None

    def connection(self) -> Connection:
        if self.conn is None:
            conn = self._engine.connect()
            self._tx = conn.begin()
            self.conn = conn
        return self.conn

    @property
    def intact(self) -> bool:
        """Still the transaction tickrun began: the handler did not commit or roll it back."""
        return self._tx is not None and self._tx.is_active

    def commit(self) -> None:
        assert self._tx is not None
        self._tx.commit()

    def close(self) -> None:
        """Roll back whatever was not committed, and give the connection back."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
            self._tx = None


def encode_result(value: Any) -> str | None:
    """The stored form of a handler's return value; ValueError when it cannot be stored."""
    if value is None:
        return None
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the handler's return value is not JSON-serialisable: {exc}") from None
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_RESULT_BYTES:
        raise ValueError(
            f"the handler's return value is {size} bytes of JSON, over the "
            f"{MAX_RESULT_BYTES} bytes a result may take; store it elsewhere and return "
            "where it is"
        )
    return text


def decode_payload(payload: str) -> dict[str, Any]:
    value = json.loads(payload)
    if not isinstance(value, dict):
        raise TypeError("stored payload is not a JSON object")
    return value


def invoke(spec: TaskSpec, payload: str, context: TaskContext) -> Result:
    """Run the handler once in this thread; every exception becomes a Result."""
    try:
        kwargs = decode_payload(payload)
        value = spec.fn(context, **kwargs) if spec.context else spec.fn(**kwargs)
        stored = encode_result(value)
    except Retry as exc:
        return Result("retry", error=f"Retry: {exc}", delay=exc.delay)
    except Fail as exc:
        error, trace = describe(exc)
        return Result("fail", error=error, traceback=trace)
    except BaseException as exc:  # noqa: BLE001 - SystemExit from a handler is a failure too
        error, trace = describe(exc)
        return Result("error", error=error, traceback=trace)
    return Result("ok", value=stored, followups=tuple(context._followups))


@functools.cache  # getLogger takes logging's module lock: once per task name, not per task
def _task_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"tickrun.task.{name}")


def make_context(
    spec: TaskSpec,
    task_id: int,
    attempt: int,
    max_attempts: int,
    key: str | None,
    scheduled_for: datetime | None,
    is_lost: Callable[[], bool] = lambda: False,
    *,
    claimed_at: datetime | None = None,
    group: str | None = None,
    app: App | None = None,
    transaction: OutcomeTransaction | None = None,
) -> TaskContext:
    logger = logging.LoggerAdapter(
        _task_logger(spec.name), {"task_id": task_id, "attempt": attempt}
    )
    return TaskContext(
        task_id,
        spec.name,
        attempt,
        max_attempts,
        key,
        scheduled_for,
        logger,
        is_lost,
        claimed_at,
        group,
        app,
        [],
        transaction,
    )


class ChildPool:
    """Child processes that run handlers with a timeout; one is killed when it overruns."""

    def __init__(self, app_ref: str, log_format: str = "text") -> None:
        self._app_ref = app_ref
        self._log_format = log_format  # the run's, so a child's handler lines look the same
        self._idle: list[tuple[BaseProcess, Pipe]] = []
        self._busy: set[BaseProcess] = set()
        self._lock = threading.Lock()

    def call(self, spec: TaskSpec, payload: str, ctx: TaskContext) -> Result:
        timeout = float(spec.timeout or 0)
        try:
            proc, conn = self._acquire()
        except ChildStartError as exc:
            return Result("error", error=bounded(str(exc)), traceback=None)
        job = {
            "task": spec.name,
            "payload": payload,
            "task_id": ctx.task_id,
            "attempt": ctx.attempt,
            "max_attempts": ctx.max_attempts,
            "key": ctx.key,
            "scheduled_for": ctx.scheduled_for.isoformat() if ctx.scheduled_for else None,
            "claimed_at": ctx.claimed_at.isoformat() if ctx.claimed_at else None,
            "group": ctx.group,
        }
        try:
            conn.send_bytes(json.dumps(job).encode())
        except OSError:
            self._kill(proc, conn)
            return Result("error", error=f"worker process died (exit code {proc.exitcode})")
        # In slices, so a lost lease stops the child within a tenth of a second.
        deadline = time.monotonic() + timeout
        while not conn.poll(min(LEASE_POLL, max(0.0, deadline - time.monotonic()))):
            if ctx.lease_lost:
                self._kill(proc, conn)
                return Result(
                    "error", error="lease lost: the run could not renew the lease; stopped"
                )
            if time.monotonic() >= deadline:
                self._kill(proc, conn)
                return Result(
                    "timeout", error=f"timeout: the attempt ran over {timeout:g}s and was stopped"
                )
        try:
            answer = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            self._kill(proc, conn)
            return Result("error", error=f"worker process died (exit code {proc.exitcode})")
        with self._lock:
            self._busy.discard(proc)
            self._idle.append((proc, conn))
        return Result(**{**answer, "followups": tuple(answer.get("followups") or ())})

    def _acquire(self) -> tuple[BaseProcess, Pipe]:
        with self._lock:
            while self._idle:
                proc, conn = self._idle.pop()
                if proc.is_alive():
                    self._busy.add(proc)
                    return proc, conn
        import multiprocessing  # only runs with a timeout task pay for it

        ctx = multiprocessing.get_context("spawn")
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(
            target=_child_main,
            args=(child_end, self._app_ref, os.getpid(), self._log_format),
            daemon=True,
        )
        proc.start()
        child_end.close()
        try:
            ready = json.loads(parent_end.recv_bytes())
        except (EOFError, OSError):
            ready = {"error": f"worker process died at start (exit code {proc.exitcode})"}
        if ready.get("error"):
            proc.kill()
            raise ChildStartError(ready["error"])
        with self._lock:
            self._busy.add(proc)
        return proc, parent_end

    def _kill(self, proc: BaseProcess, conn: Pipe) -> None:
        proc.kill()
        proc.join(5)
        conn.close()
        with self._lock:
            self._busy.discard(proc)

    def close(self) -> None:
        with self._lock:
            procs = [p for p, _ in self._idle] + list(self._busy)
            for _, conn in self._idle:
                conn.close()
            self._idle.clear()
            self._busy.clear()
        for proc in procs:
            proc.kill()
            proc.join(5)


class ChildStartError(Exception):
    pass


def _child_main(conn: Pipe, app_ref: str, parent_pid: int, log_format: str = "text") -> None:
    # The run decides when a child stops (timeout, end of grace); Ctrl-C and a service
    # manager's SIGTERM to the whole group must not cut a handler short behind its back.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    from tickrun import logs

    # The run's --log-format: a handler's ctx.logger lines look the same whether it runs in
    # the run's thread or in this child.
    logs.setup(log_format)
    try:
        from tickrun.loader import load_app

        app = load_app(app_ref)
    except BaseException as exc:  # noqa: BLE001
        conn.send_bytes(
            json.dumps(
                {"error": f"worker process could not load {app_ref}: {describe(exc)[0]}"}
            ).encode()
        )
        return
    conn.send_bytes(b'{"error": null}')
    while True:
        try:
            job = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        spec = app.tasks[job["task"]]
        scheduled, claimed = job["scheduled_for"], job["claimed_at"]
        ctx = make_context(
            spec,
            job["task_id"],
            job["attempt"],
            job["max_attempts"],
            job["key"],
            datetime.fromisoformat(scheduled) if scheduled else None,
            claimed_at=datetime.fromisoformat(claimed) if claimed else None,
            group=job["group"],
            app=app,
        )
        conn.send_bytes(json.dumps(asdict(invoke(spec, job["payload"], ctx))).encode())


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1)
    os._exit(1)
