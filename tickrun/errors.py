"""Errors that tickrun raises, and the two exceptions handlers raise to steer a task.

Every :class:`TickrunError` carries the exit code the CLI ends with; its message is one line
meant for the user.
"""

from __future__ import annotations


class TickrunError(Exception):
    """Base of every error tickrun reports to its user."""

    exit_code = 2


class UsageError(TickrunError):
    """A bad flag, value, duration, date or payload."""


class ConfigError(TickrunError):
    """The configuration or application cannot be used (missing, import error, bad option)."""


class UnknownTask(TickrunError):
    """No handler is registered under that task name."""


class PayloadError(UsageError):
    """The payload is not a JSON object or does not fit the handler's signature."""


class NotFound(TickrunError):
    """No task has that id."""


class SchemaError(TickrunError):
    """The database has no tickrun schema, or an older one: ``tickrun init`` fixes it."""


class ScheduleError(ConfigError):
    """A schedule's expression, time zone or option is invalid."""


class DatabaseError(TickrunError):
    """The database could not be reached or opened, or failed mid-command."""

    exit_code = 3


class LeaseLost(Exception):  # noqa: N818 - named for what happened, like Retry and Fail
    """Raised by ``TaskContext.check()`` once the run gave up the task's lease: it could not
    reach the database to renew it in time, and another run may take the task over. Stop
    the work; the attempt is over and the task will run again."""


class Retry(Exception):  # noqa: N818 - the contract names it
    """Raised by a handler to ask for another attempt, after ``delay`` seconds if given.

    It still counts as an attempt: with none left, the task becomes ``dead``.
    """

    def __init__(self, delay: float | None = None) -> None:
        if delay is not None and delay < 0:
            raise ValueError("Retry(delay) must be >= 0")
        super().__init__(
            f"retry requested (delay={delay})" if delay is not None else "retry requested"
        )
        self.delay = delay


class Fail(Exception):  # noqa: N818 - the contract names it
    """Raised by a handler to send its task straight to the dead-letter queue."""
