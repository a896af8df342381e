"""App: the registry of tasks (and their schedules), and enqueueing work."""

from __future__ import annotations

import inspect
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from tickrun import clock
from tickrun.backoff import BackoffFn, BackoffSpec, as_backoff, exponential
from tickrun.errors import ConfigError, PayloadError, UnknownTask, UsageError
from tickrun.schema import PENDING

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.engine import Connection

    from tickrun.runner import RunOptions, RunSummary
    from tickrun.scheduler import ScheduleSpec

T = TypeVar("T")
_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
_QUEUE = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}$")  # the queue column is 100 wide
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class TaskSpec:
    """A registered handler and the options it was registered with."""

    name: str
    fn: Callable[..., Any]
    max_attempts: int
    backoff: BackoffFn
    timeout: float | None
    lease: float
    queue: str
    priority: int
    context: bool
    signature: inspect.Signature = field(repr=False)
    fitting_keys: set[frozenset[str]] = field(default_factory=set, repr=False, compare=False)

    def bind(self, payload: Mapping[str, Any]) -> None:
        """Raise PayloadError unless the handler can be called with this payload."""
        if any(not isinstance(k, str) for k in payload):
            raise PayloadError("payload keys must be strings (they become keyword arguments)")
        # Every key is passed by keyword, so whether a payload fits depends only on its keys.
        keys = frozenset(payload)
        if keys in self.fitting_keys:
            return
        args = (None,) if self.context else ()
        try:
            self.signature.bind(*args, **payload)
        except TypeError as exc:
            raise PayloadError(
                f"payload does not fit {self.name}{self._shown_signature()}: {exc}"
            ) from None
        if len(self.fitting_keys) < 64:
            self.fitting_keys.add(keys)

    def _shown_signature(self) -> str:
        params = list(self.signature.parameters.values())
        return str(self.signature.replace(parameters=params[1:] if self.context else params))


class Enqueued(NamedTuple):
    id: int
    duplicate: bool


class App:
    """The registry of an application's task handlers and schedules.

    ``database_url`` is used when nothing more specific (``--db``, ``TICKRUN_DATABASE_URL``,
    ``[tool.tickrun]``) names a database.
    """

    def __init__(self, database_url: str | None = None) -> None:
        self.database_url = database_url
        self.tasks: dict[str, TaskSpec] = {}
        self.schedules: dict[str, ScheduleSpec] = {}
        self.import_ref: str | None = None  # "module:attr", set by the loader
        self._engine: Engine | None = None

    # -- registration -------------------------------------------------------------------

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        max_attempts: int = 5,
        backoff: BackoffSpec | None = None,
        timeout: float | None = None,
        lease: float = 60,
        queue: str = "default",
        priority: int = 0,
        name: str | None = None,
        context: bool = False,
    ) -> Any:
        """Register a handler: ``@app.task`` or ``@app.task(max_attempts=3, ...)``."""

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            task_name = name or func.__name__
            self._check_options(task_name, max_attempts, timeout, lease, queue, priority)
            if task_name in self.tasks:
                raise ConfigError(f"task {task_name!r} is registered twice")
            try:
                backoff_fn = as_backoff(exponential() if backoff is None else backoff)
            except ValueError as exc:
                raise ConfigError(f"task {task_name!r}: {exc}") from None
            signature = inspect.signature(func)
            if context and not signature.parameters:
                raise ConfigError(f"task {task_name!r}: context=True needs a first parameter")
            self.tasks[task_name] = TaskSpec(
                name=task_name,
                fn=func,
                max_attempts=max_attempts,
                backoff=backoff_fn,
                timeout=timeout,
                lease=float(lease),
                queue=queue,
                priority=priority,
                context=context,
                signature=signature,
            )
            return func

        return register(fn) if fn is not None else register

    def schedule(
        self,
        cron: str,
        *,
        tz: str = "UTC",
        catchup: str = "latest",
        overlap: str = "allow",
        payload: Mapping[str, Any] | None = None,
        name: str | None = None,
        task: str | None = None,
    ) -> Any:
        """Run a task on a cron schedule, evaluated in the IANA zone ``tz``.

        As a decorator it registers the function as a task (with default options, unless
        ``@app.task(...)`` below it already did). With ``task=``, it schedules an already
        registered task under ``name`` (default: the task's name) and returns the schedule.
        """
        from tickrun.scheduler import make_spec

        def register(task_name: str) -> ScheduleSpec:
            spec = make_spec(
                self,
                name=name or task_name,
                task=task_name,
                expr=cron,
                tz=tz,
                catchup=catchup,
                overlap=overlap,
                payload=payload,
            )
            self.schedules[spec.name] = spec
            return spec

        if task is not None:
            return register(task)

        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            registered = [s.name for s in self.tasks.values() if s.fn is func]
            if not registered:
                self.task(func, name=name)
                registered = [name or func.__name__]
            register(registered[0])
            return func

        return decorate

    @staticmethod
    def _check_options(
        name: str, max_attempts: int, timeout: float | None, lease: float, queue: str, priority: int
    ) -> None:
        problems = []
        if not _NAME.match(name):
            problems.append("name must be 1-200 letters, digits or _ . : -")
        if (
            not isinstance(max_attempts, int)
            or isinstance(max_attempts, bool)
            or not 1 <= max_attempts <= _INT32_MAX
        ):
            problems.append(
                f"max_attempts must be an integer from 1 to {_INT32_MAX}, not {max_attempts!r}"
            )
        # Non-finite values would overflow the lease expiry or the child's wait mid-run.
        if timeout is not None and not (
            isinstance(timeout, int | float) and 0 < timeout < math.inf
        ):
            problems.append(f"timeout must be a number of seconds > 0, not {timeout!r}")
        if not (isinstance(lease, int | float) and 1 <= lease < math.inf):
            problems.append(f"lease must be a number of seconds >= 1, not {lease!r}")
        if not isinstance(queue, str) or not _QUEUE.match(queue):
            problems.append(f"queue must be 1-100 letters, digits or _ . : -, not {queue!r}")
        if not _is_priority(priority):
            problems.append(f"priority must be a 32-bit integer, not {priority!r}")
        if problems:
            raise ConfigError(f"task {name!r}: " + "; ".join(problems))

    # -- database -----------------------------------------------------------------------

    def use_database(self, url: str) -> None:
        """Point this app at ``url`` (what the CLI does with the resolved configuration)."""
        from tickrun.database import open_engine

        self.database_url = url
        self._engine = open_engine(url)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from tickrun.config import resolve_database_url

            self.use_database(resolve_database_url(None, self).value)
        assert self._engine is not None
        return self._engine

    def init_db(self) -> None:
        """Create or upgrade the schema (``tickrun init``)."""
        from tickrun.migrations import init_schema

        init_schema(self.engine)

    # -- enqueueing ---------------------------------------------------------------------

    def enqueue(
        self,
        task: str,
        payload: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
        connection: Any = None,
    ) -> int:
        """Add a task and return its id (an existing task's id for a known ``key``).

        With ``connection`` (a SQLAlchemy Connection or Session in an open transaction), the
        task is inserted in that transaction and exists only if it commits.
        """
        return self.enqueue_result(
            task,
            payload,
            key=key,
            delay=delay,
            run_at=run_at,
            queue=queue,
            priority=priority,
            connection=connection,
        ).id

    def enqueue_result(
        self,
        task: str,
        payload: Mapping[str, Any] | None = None,
        *,
        connection: Any = None,
        **options: Any,
    ) -> Enqueued:
        """Like :meth:`enqueue` (same options), and tells whether the key was already taken."""
        from tickrun import dialects, store
        from tickrun.schema import tasks

        values = self.task_row(task, payload, **options)
        if connection is None and values["key"] is None:
            return Enqueued(dialects.insert_one(self.engine, tasks, values), False)
        insert = lambda c: store.insert_task(c, values)  # noqa: E731
        return Enqueued(*self._in_transaction(connection, insert, needs_transaction=False))

    def enqueue_many(
        self, items: Iterable[tuple[str, Mapping[str, Any] | None]], *, connection: Any = None
    ) -> list[int]:
        """Add many keyless tasks in one transaction (each checked like :meth:`enqueue`).

        Returns the new tasks' ids, ascending.
        """
        from tickrun import dialects
        from tickrun.schema import tasks

        # One time for the whole batch: the rows then share their times, bound once.
        now = clock.now()
        rows = [self.task_row(name, payload, now=now) for name, payload in items]
        if not rows:
            return []
        return sorted(
            self._in_transaction(connection, lambda c: dialects.insert_many(c, tasks, rows))
        )

    def _in_transaction(
        self, connection: Any, work: Callable[[Connection], T], *, needs_transaction: bool = True
    ) -> T:
        """``work`` in the caller's transaction when given one, else in a transaction of ours;
        work whose statements each stand alone may run them in autocommit where that is
        faster."""
        if connection is not None:
            return work(_as_connection(connection))
        from tickrun import dialects

        autocommit = None if needs_transaction else dialects.autocommit_enqueue(self.engine)
        if autocommit is not None:
            with autocommit.connect() as conn:
                return work(conn)
        with self.engine.begin() as conn:
            return work(conn)

    def task_row(
        self,
        task: str,
        payload: Mapping[str, Any] | None,
        *,
        key: str | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
        scheduled_for: datetime | None = None,
        schedule: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """The checked row for a new task; raises before anything touches the database."""
        spec = self.spec(task)
        payload = {} if payload is None else payload
        if not isinstance(payload, Mapping):
            raise PayloadError(f"payload must be a JSON object, not {_json_kind(payload)}")
        try:
            text = json.dumps(payload, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"payload is not JSON-serialisable: {exc}") from None
        spec.bind(payload)
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 255):
            raise UsageError("key must be a string of 1 to 255 characters")
        if priority is not None and not _is_priority(priority):
            raise UsageError(f"priority must be a 32-bit integer, not {priority!r}")
        if queue is not None and not (isinstance(queue, str) and _QUEUE.match(queue)):
            raise UsageError(f"queue must be 1-100 letters, digits or _ . : -, not {queue!r}")
        now = now or clock.now()
        when = _when(now, delay, run_at)
        return {
            "name": spec.name,
            "queue": queue or spec.queue,
            "priority": spec.priority if priority is None else priority,
            "status": PENDING,
            "payload": text,
            "key": key,
            "run_at": when,
            "claimable_at": when,
            "attempts": 0,
            "max_attempts": spec.max_attempts,
            "created_at": now,
            "scheduled_for": scheduled_for,
            "schedule": schedule,
        }

    def spec(self, task: str) -> TaskSpec:
        try:
            return self.tasks[task]
        except KeyError:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise UnknownTask(f"unknown task {task!r} (registered: {known})") from None

    # -- running ------------------------------------------------------------------------

    def run(self, options: RunOptions | None = None) -> RunSummary:
        """One ``tickrun run``: claim and run due tasks until none is due or a limit is hit."""
        from tickrun.runner import Runner, RunOptions

        return Runner(self, self.engine, options or RunOptions()).run()

    def resolve_import_ref(self) -> str:
        """How a child process can import this app again (for tasks with a ``timeout``)."""
        if self.import_ref:
            return self.import_ref
        for spec in self.tasks.values():
            module = sys.modules.get(spec.fn.__module__)
            if module is None or module.__name__ == "__main__":
                continue
            for attr, value in vars(module).items():
                if value is self:
                    return f"{module.__name__}:{attr}"
        raise ConfigError(
            "tasks with a timeout run in a child process, which must import the app: "
            "load it as MODULE:ATTR (--app) or define it in an importable module"
        )


def _is_priority(value: Any) -> bool:
    # The column is a 32-bit INTEGER: a larger value would fail on the server, not here.
    return isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31


def _as_connection(connection: Any) -> Connection:
    """A Session gives its Connection, inside the Session's transaction."""
    from sqlalchemy.engine import Connection

    if isinstance(connection, Connection):
        return connection
    get = getattr(connection, "connection", None)
    if callable(get):
        return get()
    raise UsageError("connection= takes a SQLAlchemy Connection or Session")


def _when(now: datetime, delay: float | timedelta | None, run_at: datetime | None) -> datetime:
    if delay is not None and run_at is not None:
        raise UsageError("give delay or run_at, not both")
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise UsageError(f"run_at must be a datetime, not {run_at!r}")
        return clock.as_utc(run_at)
    if delay is None:
        return now
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    if not isinstance(seconds, int | float) or seconds < 0 or not math.isfinite(seconds):
        raise UsageError(f"delay must be a number of seconds >= 0, not {delay!r}")
    return now + timedelta(seconds=seconds)


def _json_kind(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None or isinstance(value, bool | int | float):
        return f"{json.dumps(value)}"
    return type(value).__name__
