"""Task and schedule specs, and every check of what a user registers or enqueues.

Pure: nothing here touches the database, so a bad option or payload is refused before
anything is written (``App`` registers specs and enqueues the rows built here).
"""

from __future__ import annotations

import inspect
import json
import math
import re
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tickrun import clock
from tickrun.backoff import BackoffFn, BackoffSpec, as_backoff, exponential
from tickrun.durations import FORMS, Duration, as_seconds
from tickrun.errors import ConfigError, PayloadError, ScheduleError, UsageError
from tickrun.flow import ON_DEAD, Rate, check_limit, group_of, is_text, parse_rate
from tickrun.lifecycle import Status

_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
_QUEUE = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}$")  # the queue column is 100 wide
_INT32_MAX = 2**31 - 1
OVERLAP = ("allow", "skip")


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
    rate: Rate | None = None
    concurrency: int | None = None  # per group when concurrency_key is set, else per task
    concurrency_key: str | None = None
    ordered: bool = False
    on_dead: str = "block"
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

    def group(self, payload: Mapping[str, Any], given: str | None) -> dict[str, Any]:
        """The flow-control columns of a new task row (all None for a task without a key)."""
        if self.concurrency_key is None:
            if given is not None:
                raise UsageError(f"task {self.name!r} has no concurrency_key: group= needs one")
            return {"group_key": None, "group_limit": None, "group_order": None}
        default = self.signature.parameters[self.concurrency_key].default
        return {
            "group_key": group_of(self.concurrency_key, dict(payload), default, given),
            "group_limit": 1 if self.ordered else self.concurrency,
            "group_order": self.on_dead if self.ordered else None,
        }

    def _shown_signature(self) -> str:
        params = list(self.signature.parameters.values())
        return str(self.signature.replace(parameters=params[1:] if self.context else params))


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    task: str
    cron: str
    tz: str
    catchup: str
    overlap: str
    payload: Mapping[str, Any] = field(default_factory=dict)


def task_spec(
    fn: Callable[..., Any],
    *,
    name: str,
    max_attempts: int,
    backoff: BackoffSpec | None,
    timeout: Duration | None,
    lease: Duration,
    queue: str,
    priority: int,
    context: bool,
    rate: str | None = None,
    concurrency: int | None = None,
    concurrency_key: str | None = None,
    ordered: bool = False,
    on_dead: str = "block",
) -> TaskSpec:
    """A checked TaskSpec; ConfigError names the task and every problem found."""
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
    if timeout is not None:
        timeout = _seconds(timeout, "timeout", "> 0", problems, lambda s: 0 < s < math.inf)
    lease = _seconds(lease, "lease", ">= 1", problems, lambda s: 1 <= s < math.inf)
    if not _is_queue(queue):
        problems.append(f"queue must be 1-100 letters, digits or _ . : -, not {queue!r}")
    if not is_priority(priority):
        problems.append(f"priority must be a 32-bit integer, not {priority!r}")
    if problems:
        raise ConfigError(f"task {name!r}: " + "; ".join(problems))
    try:
        backoff_fn = as_backoff(exponential() if backoff is None else backoff)
    except ValueError as exc:
        raise ConfigError(f"task {name!r}: {exc}") from None
    signature = inspect.signature(fn)
    if context and not signature.parameters:
        raise ConfigError(f"task {name!r}: context=True needs a first parameter")
    what = f"task {name!r}"
    parsed_rate = None if rate is None else parse_rate(rate, what)
    limit = check_limit(concurrency, what)
    _check_key(what, signature, context, concurrency_key, limit, ordered, on_dead)
    return TaskSpec(
        name=name,
        fn=fn,
        max_attempts=max_attempts,
        backoff=backoff_fn,
        timeout=timeout,
        lease=lease,
        queue=queue,
        priority=priority,
        context=context,
        signature=signature,
        rate=parsed_rate,
        concurrency=limit,
        concurrency_key=concurrency_key,
        ordered=ordered,
        on_dead=on_dead,
    )


def _seconds(
    value: Any, what: str, bound: str, problems: list[str], ok: Callable[[float], bool]
) -> float:
    """A task option that is a duration (seconds, or a string like ``"30s"``), in seconds; a
    problem naming the option and its bound when it is not one or is out of bounds."""
    try:
        seconds = as_seconds(value, what)
    except UsageError:
        seconds = math.nan
    if not ok(seconds):
        problems.append(f"{what} must be a duration {bound} ({FORMS}, or seconds), not {value!r}")
    return seconds


def _check_key(
    what: str,
    signature: inspect.Signature,
    context: bool,
    key: str | None,
    concurrency: int | None,
    ordered: bool,
    on_dead: str,
) -> None:
    if not isinstance(ordered, bool):
        raise ConfigError(f"{what}: ordered must be True or False, not {ordered!r}")
    if on_dead not in ON_DEAD:
        raise ConfigError(f"{what}: on_dead must be one of {', '.join(ON_DEAD)}, not {on_dead!r}")
    if key is None:
        if ordered:
            raise ConfigError(f"{what}: ordered=True needs concurrency_key (the key to order by)")
        return
    params = list(signature.parameters.values())[1 if context else 0 :]
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if key not in names:
        raise ConfigError(
            f"{what}: concurrency_key {key!r} names no parameter of the handler "
            f"(parameters: {', '.join(names) or 'none'})"
        )
    if concurrency is None and not ordered:
        raise ConfigError(f"{what}: concurrency_key needs concurrency=K or ordered=True")
    if ordered and concurrency not in (None, 1):
        raise ConfigError(f"{what}: ordered=True runs one task per key at a time; drop concurrency")


def schedule_spec(
    *,
    name: str,
    task: TaskSpec | None,
    task_name: str,
    taken: Collection[str],
    expr: str,
    tz: str,
    catchup: str,
    overlap: str,
    payload: Mapping[str, Any] | None,
) -> ScheduleSpec:
    """Validate a schedule when the application loads; errors name the schedule.

    ``task`` is the registered spec of ``task_name`` (None: unknown), ``taken`` the names of
    the schedules already registered.
    """

    from tickrun import cron  # croniter is imported only by apps that have schedules

    def fail(problem: str) -> ScheduleError:
        return ScheduleError(f"schedule {name!r}: {problem}")

    if not isinstance(name, str) or not 0 < len(name) <= 200:  # the width of its column
        raise fail("name must be a string of 1 to 200 characters")
    if name in taken:
        raise fail("a schedule with this name is already registered")
    if not isinstance(expr, str) or not isinstance(tz, str):
        raise fail("cron expression and tz must be strings")
    try:
        cron.validate(expr, tz)
    except cron.CronError as exc:
        raise fail(str(exc)) from None
    if catchup not in cron.CATCHUP_POLICIES:
        raise fail(f"catchup must be one of {', '.join(cron.CATCHUP_POLICIES)}, not {catchup!r}")
    if overlap not in OVERLAP:
        raise fail(f"overlap must be one of {', '.join(OVERLAP)}, not {overlap!r}")
    if task is None:
        raise fail(f"unknown task {task_name!r}")
    try:
        encode_payload(task, payload)
    except PayloadError as exc:
        raise fail(str(exc)) from None
    return ScheduleSpec(name, task_name, expr, tz, catchup, overlap, dict(payload or {}))


def encode_payload(spec: TaskSpec, payload: Mapping[str, Any] | None) -> str:
    """The payload as stored: a JSON object that fits the handler, else PayloadError."""
    payload = {} if payload is None else payload
    if not isinstance(payload, Mapping):
        raise PayloadError(f"payload must be a JSON object, not {json_kind(payload)}")
    try:
        text = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    except RecursionError:
        raise PayloadError(TOO_DEEP) from None
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"payload is not JSON-serialisable: {_one_line(exc)}") from None
    # Deeper nesting takes more than two characters a level, and more brackets than levels:
    # the enqueues of short payloads check one length, and only a payload with that many
    # brackets walks its nesting.
    if (
        len(text) > 2 * MAX_DEPTH
        and text.count("[") + text.count("{") > MAX_DEPTH
        and _deeper_than(payload, MAX_DEPTH)
    ):
        raise PayloadError(TOO_DEEP)
    spec.bind(payload)
    return text


# Deep enough for any real payload, far from where json and a run's stack give up (about
# 1,000 levels, fewer in a handler's thread): what is stored can always be decoded again.
MAX_DEPTH = 100
TOO_DEEP = f"payload is nested more than {MAX_DEPTH} levels deep"


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than ``limit`` levels in ``value`` (no recursion:
    the point is values too deep for it)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def decode_payload(text: str) -> dict[str, Any]:
    """A payload as a user writes it (``tickrun enqueue --payload``): a JSON object, else
    PayloadError, one line, whatever the text holds."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise PayloadError(TOO_DEEP) from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"invalid JSON payload: {_one_line(exc)}") from None
    except ValueError:  # the only other: an integer longer than Python converts
        raise PayloadError(
            f"invalid JSON payload: an integer has more than {sys.get_int_max_str_digits()} digits"
        ) from None
    if not isinstance(value, dict):
        raise PayloadError(f"payload must be a JSON object, not {json_kind(value)}")
    return value


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


def task_row(
    spec: TaskSpec,
    payload: Mapping[str, Any] | None,
    *,
    key: str | None = None,
    delay: Duration | None = None,
    run_at: datetime | None = None,
    queue: str | None = None,
    priority: int | None = None,
    group: str | None = None,
    scheduled_for: datetime | None = None,
    schedule: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The checked row for a new task; raises before anything touches the database."""
    text = encode_payload(spec, payload)
    if key is not None:
        if not isinstance(key, str) or not 0 < len(key) <= 255:
            raise UsageError("key must be a string of 1 to 255 characters")
        if not is_text(key):
            raise UsageError(f"key {key!r} is not valid Unicode text")
    if priority is not None and not is_priority(priority):
        raise UsageError(f"priority must be a 32-bit integer, not {priority!r}")
    if queue is not None and not _is_queue(queue):
        raise UsageError(f"queue must be 1-100 letters, digits or _ . : -, not {queue!r}")
    flow = spec.group(payload or {}, group)
    now = now or clock.now()
    when = _when(now, delay, run_at)
    return {
        "name": spec.name,
        "queue": queue or spec.queue,
        "priority": spec.priority if priority is None else priority,
        "status": Status.PENDING,
        "payload": text,
        "key": key,
        "run_at": when,
        "claimable_at": when,
        "attempts": 0,
        "max_attempts": spec.max_attempts,
        "created_at": now,
        "scheduled_for": scheduled_for,
        "schedule": schedule,
        **flow,
    }


def _is_queue(value: Any) -> bool:
    return isinstance(value, str) and _QUEUE.match(value) is not None


def check_queue(name: Any, what: str) -> None:
    if not _is_queue(name):
        raise ConfigError(f"{what}: a queue name must be 1-100 letters, digits or _ . : -")


def is_priority(value: Any) -> bool:
    # The column is a 32-bit INTEGER: a larger value would fail on the server, not here.
    return isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31


def _when(now: datetime, delay: Duration | None, run_at: datetime | None) -> datetime:
    if delay is not None and run_at is not None:
        raise UsageError("give delay or run_at, not both")
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise UsageError(f"run_at must be a datetime, not {run_at!r}")
        return clock.as_utc(run_at)
    if delay is None:
        return now
    try:
        seconds = as_seconds(delay, "delay")
    except UsageError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise UsageError(f"delay must be a duration >= 0 ({FORMS}, or seconds), not {delay!r}")
    return now + timedelta(seconds=seconds)


def json_kind(value: Any) -> str:
    """What a value that should have been an object is, in JSON's words: ``an array``,
    ``a string``, ``null``, ``true``, ``5``."""
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None or isinstance(value, bool | int | float):
        try:
            return json.dumps(value)
        except ValueError:  # an integer of more digits than int_max_str_digits
            return "a number"
    return type(value).__name__
