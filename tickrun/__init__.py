"""tickrun: a durable background-job queue in the database you already have, driven by cron."""

from tickrun.app import App
from tickrun.backoff import exponential
from tickrun.errors import (
    ConfigError,
    DatabaseError,
    Fail,
    LeaseLost,
    NotFound,
    PayloadError,
    Retry,
    SchemaError,
    TickrunError,
    UnknownTask,
    UsageError,
)
from tickrun.execution import TaskContext
from tickrun.status import TaskStatus

__version__ = "0.1.0"

__all__ = [
    "App",
    "ConfigError",
    "DatabaseError",
    "Fail",
    "LeaseLost",
    "NotFound",
    "PayloadError",
    "Retry",
    "SchemaError",
    "TaskContext",
    "TaskStatus",
    "TickrunError",
    "UnknownTask",
    "UsageError",
    "exponential",
    "__version__",
]
