"""App: the registry of an application's tasks and schedules, and enqueueing work."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from tickrun import clock, specs
from tickrun.backoff import BackoffSpec
from tickrun.durations import Duration
from tickrun.errors import ConfigError, UnknownTask, UsageError
from tickrun.flow import Limit, check_limit, parse_rate, queue_scope, task_scope
from tickrun.specs import ScheduleSpec, TaskSpec

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.engine import Connection

    from tickrun.status import TaskStatus

T = TypeVar("T")


class Enqueued(NamedTuple):
    id: int
    duplicate: bool


class App:
    """The registry of an application's task handlers and schedules.

    ``database_url`` is used when nothing more specific (``--db``, ``TICKRUN_DATABASE_URL``,
    ``[tool.tickrun]``) names a database; the ``alert_*`` options likewise, where alerts about
    dead tasks go (``TICKRUN_ALERT_*`` and ``[tool.tickrun] alert_*`` win over them).
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        alert_webhook: str | None = None,
        alert_format: str | None = None,
        alert_command: str | list[str] | None = None,
        alert_timeout: float | str | None = None,
    ) -> None:
        self.database_url = database_url
        self.alert_settings: dict[str, Any] = {
            name: value
            for name, value in (
                ("alert_webhook", alert_webhook),
                ("alert_format", alert_format),
                ("alert_command", alert_command),
                ("alert_timeout", alert_timeout),
            )
            if value is not None
        }
        self.dead_hooks: list[Callable[[dict[str, Any]], Any]] = []
        self.tasks: dict[str, TaskSpec] = {}
        self.schedules: dict[str, ScheduleSpec] = {}
        self.queues: dict[str, Limit] = {}  # queue name -> its limits
        self.import_ref: str | None = None  # "module:attr", set by the loader
        self._url: str | None = None  # the database this app uses, once resolved

    # -- registration -------------------------------------------------------------------

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        max_attempts: int = 5,
        backoff: BackoffSpec | None = None,
        timeout: Duration | None = None,
        lease: Duration = 60,
        queue: str = "default",
        priority: int = 0,
        name: str | None = None,
        context: bool = False,
        rate: str | None = None,
        concurrency: int | None = None,
        concurrency_key: str | None = None,
        ordered: bool = False,
        on_dead: str = "block",
    ) -> Any:
        """Register a handler: ``@app.task`` or ``@app.task(max_attempts=3, ...)``.

        Flow control (docs/guides/flow-control.md): ``rate="100/m"`` allows at most 100 starts in
        any minute; ``concurrency=K`` at most K running at once, per value of the payload
        field ``concurrency_key`` when one is named; ``ordered=True`` (with a
        ``concurrency_key``) starts one task per key at a time, in enqueue order, and
        ``on_dead`` says whether a dead task holds back the later ones ("block") or not
        ("release").
        """

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            spec = specs.task_spec(
                func,
                name=name or func.__name__,
                max_attempts=max_attempts,
                backoff=backoff,
                timeout=timeout,
                lease=lease,
                queue=queue,
                priority=priority,
                context=context,
                rate=rate,
                concurrency=concurrency,
                concurrency_key=concurrency_key,
                ordered=ordered,
                on_dead=on_dead,
            )
            if spec.name in self.tasks:
                raise ConfigError(f"task {spec.name!r} is registered twice")
            self.tasks[spec.name] = spec
            return func

        return register(fn) if fn is not None else register

    def queue(self, name: str, *, rate: str | None = None, concurrency: int | None = None) -> None:
        """Limits shared by every task of queue ``name``, on every run and host: at most
        ``rate`` starts (``"25/s"``) and ``concurrency`` running at once."""
        what = f"queue {name!r}"
        specs.check_queue(name, what)
        if name in self.queues:
            raise ConfigError(f"{what} is configured twice")
        if rate is None and concurrency is None:
            raise ConfigError(f"{what}: give rate= or concurrency=")
        self.queues[name] = Limit(
            queue_scope(name),
            None if rate is None else parse_rate(rate, what),
            check_limit(concurrency, what),
        )

    def limits(self) -> list[Limit]:
        """Every task and queue limit of this application (per-key limits live on the rows)."""
        found = [
            Limit(task_scope(s.name), s.rate, None if s.concurrency_key else s.concurrency)
            for s in self.tasks.values()
            if s.rate is not None or (s.concurrency is not None and s.concurrency_key is None)
        ]
        return found + list(self.queues.values())

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

        def register(task_name: str) -> ScheduleSpec:
            spec = specs.schedule_spec(
                name=name or task_name,
                task=self.tasks.get(task_name),
                task_name=task_name,
                taken=self.schedules,
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

    def on_dead(self, fn: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
        """Call ``fn(alert)`` when a task becomes dead: ``alert`` is the webhook's JSON document
        as a dict. Called by a run, at least once per dead task (again after a run died before
        the call returned, or when it raised: exceptions are logged, never fatal)."""
        if not callable(fn):
            raise ConfigError("@app.on_dead takes a function of one argument (the alert)")
        self.dead_hooks.append(fn)
        return fn

    # -- database -----------------------------------------------------------------------

    def use_database(self, url: str) -> None:
        """Point this app at ``url`` (what the CLI does with the resolved configuration)."""
        self._url = url

    @property
    def engine(self) -> Engine:
        """The engine of this app's database; the one per URL that ``tickrun.database`` keeps."""
        from tickrun.database import open_engine

        if self._url is None:
            from tickrun.config import resolve_database_url

            self._url = resolve_database_url(None, self.database_url).value
        return open_engine(self._url)

    # -- enqueueing ---------------------------------------------------------------------

    def enqueue(
        self,
        task: str,
        payload: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
        delay: Duration | None = None,
        run_at: datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
        group: str | None = None,
        connection: Any = None,
    ) -> int:
        """Add a task and return its id (an existing task's id for a known ``key``).

        ``group`` sets the value per-key limits apply to, for a task registered with a
        ``concurrency_key`` (default: that payload field's value). With ``connection`` (a
        SQLAlchemy Connection or Session in an open transaction), the task is inserted in that
        transaction and exists only if it commits.
        """
        return self.enqueue_result(
            task,
            payload,
            key=key,
            delay=delay,
            run_at=run_at,
            queue=queue,
            priority=priority,
            group=group,
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
        try:
            if connection is None and values["key"] is None:
                return Enqueued(dialects.insert_one(self.engine, tasks, values), False)
            [(task_id, duplicate)] = self._in_transaction(
                connection, lambda c: store.insert_tasks(c, [values]), needs_transaction=False
            )
        except Exception as exc:
            self._explain(connection, exc)
            raise
        return Enqueued(task_id, duplicate)

    def enqueue_many(
        self, items: Iterable[tuple[str, Mapping[str, Any] | None]], *, connection: Any = None
    ) -> list[int]:
        """Add many keyless tasks in one transaction (each checked like :meth:`enqueue`).

        Returns the new tasks' ids, ascending.
        """
        from tickrun import store

        # One time for the whole batch: the rows then share their times, bound once.
        now = clock.now()
        rows = [self.task_row(name, payload, now=now) for name, payload in items]
        if not rows:
            return []
        try:
            inserted = self._in_transaction(connection, lambda c: store.insert_tasks(c, rows))
        except Exception as exc:
            self._explain(connection, exc)
            raise
        return sorted(task_id for task_id, _ in inserted)

    def _explain(self, connection: Any, exc: Exception) -> None:
        """Raise SchemaError ("run tickrun init") when ``exc`` failed for want of tickrun's
        tables, judged on the caller's database when given a connection, else on ours."""
        from tickrun.database import explain_missing_schema

        try:
            engine = self.engine if connection is None else _as_connection(connection).engine
        except Exception:  # noqa: BLE001 - no engine to look at: the original error stands
            return
        explain_missing_schema(engine, exc)

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

    # -- status -------------------------------------------------------------------------

    def status(self, task_id: int | None = None, *, key: str | None = None) -> TaskStatus | None:
        """Where one task stands (by id, or by its idempotency ``key``); None if there is none.

        One indexed query, cheap enough for an endpoint polled every second. A task pruned
        after it finished is gone, its result with it: None too.
        """
        from tickrun.status import lookup

        _check_lookup(task_id, key)
        try:
            return lookup(self.engine, task_id=task_id, key=key)
        except Exception as exc:
            self._explain(None, exc)
            raise

    def wait(
        self,
        task_id: int | None = None,
        *,
        key: str | None = None,
        timeout: float = 30.0,
        poll: float = 1.0,
    ) -> TaskStatus | None:
        """Poll :meth:`status` until the task is finished (succeeded, dead or cancelled) or
        ``timeout`` seconds passed; the last status seen (None if the task never existed).

        Polls start 50 ms apart and back off (x1.5) to at most ``poll`` seconds. Something must
        run the task meanwhile (``tickrun run`` elsewhere): waiting does not run it.
        """
        import time

        _check_lookup(task_id, key)
        if not (isinstance(timeout, int | float) and timeout >= 0):
            raise UsageError(f"timeout must be a number of seconds >= 0, not {timeout!r}")
        deadline = time.monotonic() + timeout
        pause = 0.05
        while True:
            found = self.status(task_id, key=key)
            left = deadline - time.monotonic()
            if (found is not None and found.finished) or left <= 0:
                return found
            time.sleep(min(pause, left))
            pause = min(pause * 1.5, poll)

    def task_row(
        self, task: str, payload: Mapping[str, Any] | None, **options: Any
    ) -> dict[str, Any]:
        """The checked row for a new ``task`` (options of :func:`tickrun.specs.task_row`)."""
        return specs.task_row(self.spec(task), payload, **options)

    def spec(self, task: str) -> TaskSpec:
        try:
            return self.tasks[task]
        except KeyError:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise UnknownTask(f"unknown task {task!r} (registered: {known})") from None


def _check_lookup(task_id: int | None, key: str | None) -> None:
    if (task_id is None) == (key is None):
        raise UsageError("give a task id or key=, not both or neither")
    if task_id is not None and (not isinstance(task_id, int) or isinstance(task_id, bool)):
        raise UsageError(f"task id must be an integer, not {task_id!r}")
    if key is not None and not isinstance(key, str):
        raise UsageError(f"key must be a string, not {key!r}")


def _as_connection(connection: Any) -> Connection:
    """A Session gives its Connection, inside the Session's transaction."""
    from sqlalchemy.engine import Connection

    if isinstance(connection, Connection):
        return connection
    get = getattr(connection, "connection", None)
    if callable(get):
        found = get()
        if isinstance(found, Connection):
            return found
    raise UsageError("connection= takes a SQLAlchemy Connection or Session")
    raise UsageError("connection= takes a SQLAlchemy Connection or Session")
