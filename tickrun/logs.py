"""How a run's log records look: ``text`` (one line, ``logger: message``) or ``json`` (one
object per record, with every field a record carries: task id, name, attempt, worker,
duration, error, and the ``task_id`` of a handler's ``ctx.logger`` records).

Records go through the standard :mod:`logging` module, so Sentry's and OpenTelemetry's
logging integrations see them: a dead task is logged at ERROR, other failures at WARNING.
"""

from __future__ import annotations

import json
import logging
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


def setup(fmt: str = "text") -> None:
    """Log WARNING and above to stderr in ``fmt``, unless the application configured logging
    itself (as :func:`logging.basicConfig` does); in ``json``, run summaries (INFO) too."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    if fmt == "json":
        logging.getLogger("tickrun.run").setLevel(logging.INFO)
