"""How a run's log records look: ``text`` (one line, ``logger: message``) or ``json`` (one
object per record, with every field a record carries: task id, name, attempt, worker,
duration, error, and the ``task_id`` of a handler's ``ctx.logger`` records).

Records go through the standard :mod:`logging` module, so Sentry's and OpenTelemetry's
logging integrations see them: a dead task is logged at ERROR, other failures at WARNING.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")
# The attributes every LogRecord has; anything else on a record came in through ``extra``.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of a record."""
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(fields(record))
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``logger: message``, and ``[task N, attempt M]`` on a handler's ``ctx.logger`` lines."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        task_id = getattr(record, "task_id", None)
        if task_id is not None and record.name.startswith("tickrun.task."):
            line += f" [task {task_id}, attempt {getattr(record, 'attempt', '?')}]"
        return line


LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LEVEL = "info"
# The level of a run's child processes (tasks with a timeout) comes from here: they inherit
# the environment the run sets before starting them (see setup's caller in the CLI).
LEVEL_ENV = "TICKRUN_LOG_LEVEL"


def setup(fmt: str = "text", level: str | None = None) -> None:
    """Log to stderr in ``fmt``: tickrun's records and the handlers' ``ctx.logger`` lines
    (``tickrun.*``) from ``level`` up (default: $TICKRUN_LOG_LEVEL, else ``info``), other
    libraries' from WARNING. The handler is installed unless the application configured
    logging itself (as :func:`logging.basicConfig` does).

    In ``text``, a run's summary record (INFO) is left out: the summary is printed on stdout.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}")
    level = (level or os.environ.get(LEVEL_ENV) or DEFAULT_LEVEL).lower()
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {LEVELS}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    # The root stays at WARNING: below it SQLAlchemy would log every statement.
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    threshold = logging.getLevelName(level.upper())
    logging.getLogger("tickrun").setLevel(threshold)
    summaries = threshold if fmt == "json" else max(threshold, logging.WARNING)
    logging.getLogger("tickrun.run").setLevel(summaries)
