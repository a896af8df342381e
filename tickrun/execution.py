"""Calling one handler for one attempt, and turning whatever happens into a Result.

Handlers without a ``timeout`` run in a thread of the run. Python cannot stop a thread, so a
handler with a ``timeout`` runs in a child process (spawned once per concurrency slot and
reused); when the attempt overruns, the child is killed and replaced. Messages between the run
and its children are JSON, never pickles.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tickrun.errors import Fail, LeaseLost, Retry
from tickrun.failures import bounded, describe

if TYPE_CHECKING:
    from multiprocessing.connection import Connection as Pipe
    from multiprocessing.process import BaseProcess

    from tickrun.specs import TaskSpec

LEASE_POLL = 0.1  # seconds between looks at the lease while a child process works


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


@dataclass(frozen=True)
class Result:
    kind: str  # ok | error | retry | fail | timeout
    error: str | None = None
    traceback: str | None = None
    delay: float | None = None


def decode_payload(payload: str) -> dict[str, Any]:
    value = json.loads(payload)
    if not isinstance(value, dict):
        raise TypeError("stored payload is not a JSON object")
    return value


def invoke(spec: TaskSpec, payload: str, context: TaskContext) -> Result:
    """Run the handler once in this thread; every exception becomes a Result."""
    try:
        kwargs = decode_payload(payload)
        if spec.context:
            spec.fn(context, **kwargs)
        else:
            spec.fn(**kwargs)
    except Retry as exc:
        return Result("retry", error=f"Retry: {exc}", delay=exc.delay)
    except Fail as exc:
        error, trace = describe(exc)
        return Result("fail", error=error, traceback=trace)
    except BaseException as exc:  # noqa: BLE001 - SystemExit from a handler is a failure too
        error, trace = describe(exc)
        return Result("error", error=error, traceback=trace)
    return Result("ok")


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
) -> TaskContext:
    logger = logging.LoggerAdapter(
        logging.getLogger(f"tickrun.task.{spec.name}"), {"task_id": task_id, "attempt": attempt}
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
        return Result(**answer)

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
        )
        conn.send_bytes(json.dumps(asdict(invoke(spec, job["payload"], ctx))).encode())


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1)
    os._exit(1)
