"""``tickrun init``: create the schema or upgrade an older one in place, idempotently.

Several hosts may run it at once. SQLite serialises it with its IMMEDIATE lock and PostgreSQL
with a transaction-scoped advisory lock (DDL is transactional there); MariaDB commits DDL
implicitly, so a lost race ("already exists") is simply retried against the new state.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Engine, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from tickrun import dialects
from tickrun.schema import SCHEMA_VERSION, apply_ddl_options, attempts, meta, metadata, runs, tasks


def _ids_never_reused(conn: Connection) -> None:
    """Version 2: task and run ids are never issued twice (AUTOINCREMENT on SQLite).

    Ids of rows deleted before the upgrade are unknown to the database; the task ids still
    named by attempt rows count as issued too, so the next id is above both.
    """
    if dialects.kind(conn) != "sqlite":
        return  # sequences (PostgreSQL) and AUTO_INCREMENT (MariaDB) never went back
    for table in (tasks, runs):
        dialects.rebuild_sqlite_table(conn, table)
    dialects.raise_sqlite_sequence(conn, tasks, select(func.max(attempts.c.task_id)))


def _add_missing(conn: Connection) -> None:
    """Version 3: the columns and indexes the metadata has and an existing table lacks.

    New tables are created by ``create_all`` before any step runs. New columns are nullable
    (or have a constant default), so adding them never rewrites what older rows mean.
    """
    from sqlalchemy import inspect

    inspector = inspect(conn)
    for table in metadata.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                dialects.add_column(conn, table, column)
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def _worker_support(conn: Connection) -> None:
    """Version 4: the runs' heartbeat column, and the trigger that wakes PostgreSQL workers."""
    _add_missing(conn)
    dialects.install_notify(conn)


# version reached -> the step that upgrades the previous version to it, in place.
UPGRADES: dict[int, Callable[[Connection], None]] = {
    2: _ids_never_reused,
    3: _add_missing,
    4: _worker_support,
}


def init_schema(engine: Engine, attempts: int = 5) -> tuple[int | None, int]:
    """Create or upgrade the schema; returns (version before, version after)."""
    for attempt in range(1, attempts + 1):
        try:
            with engine.begin() as conn:
                dialects.lock_schema(conn)
                return _init(conn)
        except SQLAlchemyError:
            if attempt == attempts:
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def _init(conn: Connection) -> tuple[int | None, int]:
    before = _stored_version(conn)
    apply_ddl_options()
    metadata.create_all(conn, checkfirst=True)
    if before is None:
        dialects.insert_unless_exists(
            conn, meta, {"name": "schema_version", "value": str(SCHEMA_VERSION)}, unique="name"
        )
        dialects.install_notify(conn)
        return None, SCHEMA_VERSION
    for version in range(before + 1, SCHEMA_VERSION + 1):
        UPGRADES[version](conn)
        conn.execute(update(meta).where(meta.c.name == "schema_version").values(value=str(version)))
    return before, max(before, SCHEMA_VERSION)


def _stored_version(conn: Connection) -> int | None:
    from sqlalchemy import inspect

    if not inspect(conn).has_table(meta.name):
        return None
    value = conn.execute(select(meta.c.value).where(meta.c.name == "schema_version")).scalar()
    return None if value is None else int(value)
