"""Apps in the test process, on a test database, and runs of them that cannot hang a test."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from tickrun import App
from tickrun.runner import RunOptions, RunSummary, run
from tickrun.schema import tasks

T0 = datetime(2026, 4, 6, 10, 0, 0, tzinfo=UTC)
W = RunOptions(worker="w1")


def new_app(db_url: str) -> App:
    app = App(database_url=db_url)
    app.use_database(db_url)
    return app


def row(engine: Engine, task_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(tasks).where(tasks.c.id == task_id)).one()


def run_bounded(app: App, options: RunOptions = W, timeout: float = 90) -> RunSummary:
    """run(app), failing the test instead of hanging it when the run never ends."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["summary"] = run(app, options)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the run did not end within {timeout}s"
    if "error" in box:
        raise box["error"]
    return box["summary"]
