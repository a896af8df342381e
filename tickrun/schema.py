"""The tables, as SQLAlchemy Core metadata. Every table is prefixed ``tickrun_``.

Statuses are in :mod:`tickrun.lifecycle`.

``claimable_at`` is what the claim query orders and filters on: the ``run_at`` of a waiting task,
the lease expiry of a running one, and NULL once the task is finished, so one partial index
covers every due task however many finished rows the table holds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Computed,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

# 2: SQLite tables whose ids users see (tasks, runs) are AUTOINCREMENT, so committed ids are
#    never reused (a rolled-back insert's id is: SQLite's counter rolls back with it).
# 3: columns and tables for flow control, alerts and results (added in place by `tickrun init`).
# 4: runs have a heartbeat (long-running workers); PostgreSQL notifies workers of new tasks.
SCHEMA_VERSION = 4


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as a naive UTC timestamp (microseconds everywhere), returned timezone-aware."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import DATETIME

            return dialect.type_descriptor(DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("tickrun stores aware datetimes only")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)

    # SQLite stores text: format and parse it in C (isoformat / fromisoformat) instead of
    # SQLAlchemy's per-field Python formatting, which dominated bulk enqueues. The text is
    # the same as SQLAlchemy's own SQLite DATETIME format, so ordering and comparison hold.
    def bind_processor(self, dialect: Any) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is None:
                raise ValueError("tickrun stores aware datetimes only")
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

        return process

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        def process(value: str | None) -> datetime | None:
            return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)

        return process


class _SizedText(TypeDecorator[str]):
    """TEXT, widened on MariaDB/MySQL, whose TEXT holds only 64 KiB of bytes.

    Dialect types are imported only when that dialect is in use: importing every dialect at
    start-up would cost each cron tick tens of milliseconds.
    """

    impl = Text
    cache_ok = True
    mysql_type = "MEDIUMTEXT"

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            from sqlalchemy.dialects import mysql

            return dialect.type_descriptor(getattr(mysql, self.mysql_type)())
        return dialect.type_descriptor(Text())


class BoundedText(_SizedText):
    """Errors and tracebacks: at most 64 KiB of UTF-8 plus a marker."""

    cache_ok = True


class LongText(_SizedText):
    """Payloads, which may be larger still."""

    cache_ok = True

    mysql_type = "LONGTEXT"


Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

meta = Table(
    "tickrun_meta",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
)

tasks = Table(
    "tickrun_tasks",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("queue", String(100), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("payload", LongText(), nullable=False),
    Column("key", String(255), nullable=True),
    Column("run_at", UTCDateTime, nullable=False),
    Column("claimable_at", UTCDateTime, nullable=True),
    # MariaDB's stand-in for a partial index (see claim_index_mariadb): NULL once finished.
    Column(
        "claim_priority",
        Integer,
        Computed("CASE WHEN claimable_at IS NULL THEN NULL ELSE priority END", persisted=True),
    ),
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("claim_token", String(32), nullable=True),
    Column("worker", String(255), nullable=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("last_error", BoundedText(), nullable=True),
    Column("last_traceback", BoundedText(), nullable=True),
    Column("schedule", String(200), nullable=True),
    Column("scheduled_for", UTCDateTime, nullable=True),
    # Flow control (tickrun.flow): the group a task belongs to, the most of its group that may
    # run at once, and for an ordered group what a dead task does to those after it.
    Column("group_key", String(255), nullable=True),
    Column("group_limit", Integer, nullable=True),
    Column("group_order", String(8), nullable=True),
    # The handler's return value as JSON, at most MAX_RESULT_BYTES (tickrun.failures): set when
    # the task succeeds, kept as long as the row is (prune deletes both).
    Column("result", BoundedText(), nullable=True),
    # The task whose successful attempt enqueued this one (ctx.enqueue); NULL for the rest.
    Column("parent_id", BigInteger, nullable=True),
    UniqueConstraint("key", name="uq_tickrun_tasks_key"),
)

# The claim order (priority, then run_at or lease expiry, then enqueue order) and its index,
# partial where the database can (see ddl_options), so
# finished rows cost nothing.
CLAIM_ORDER = (tasks.c.priority.desc(), tasks.c.claimable_at, tasks.c.id)
claim_index = Index("ix_tickrun_tasks_claim", *CLAIM_ORDER)
# MariaDB has no partial indexes and sorts NULL first: in the index above, finished rows would
# stand before every due row (17 claims/s beside 1,000,000 finished rows). Descending, the NULL
# claim_priority of finished rows sorts last, and "claim_priority IS NOT NULL" is a range that
# holds only unfinished rows, as the partial index does elsewhere.
CLAIM_ORDER_MARIADB = (tasks.c.claim_priority.desc(), tasks.c.claimable_at, tasks.c.id)
Index("ix_tickrun_tasks_claim_mariadb", *CLAIM_ORDER_MARIADB).ddl_if(
    dialect=("mysql", "mariadb")  # type: ignore[arg-type]  # a tuple works; the stub says str
)
Index("ix_tickrun_tasks_status_finished", tasks.c.status, tasks.c.finished_at)
Index("ix_tickrun_tasks_schedule", tasks.c.schedule, tasks.c.status)
# A group's tasks in enqueue order: the claim looks for an unfinished earlier one.
group_index = Index("ix_tickrun_tasks_group", tasks.c.group_key, tasks.c.id)
Index("ix_tickrun_tasks_parent", tasks.c.parent_id)  # `tickrun show`: a task's children

attempts = Table(
    "tickrun_attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", BigInteger, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=False),
    Column("worker", String(255), nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("error", BoundedText(), nullable=True),
    Column("traceback", BoundedText(), nullable=True),
    Index("ix_tickrun_attempts_task", "task_id", "attempt"),
    Index("ix_tickrun_attempts_finished", "finished_at"),
)

runs = Table(
    "tickrun_runs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("host", String(255), nullable=False),
    Column("worker", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("claimed", Integer, nullable=False, default=0),
    Column("succeeded", Integer, nullable=False, default=0),
    Column("retried", Integer, nullable=False, default=0),
    Column("dead", Integer, nullable=False, default=0),
    Column("exit_code", Integer, nullable=True),
    # Renewed by a `tickrun worker` while it lives; a cron run ends instead (finished_at).
    Column("heartbeat_at", UTCDateTime, nullable=True),
    Index("ix_tickrun_runs_started", "started_at"),
)

# One row per limited scope ("task:NAME", "queue:NAME": the limits a run registered; "group:KEY"
# rows carry no limit). Claims lock these rows, so the claims that could exceed one limit take
# turns, while claims of unlimited tasks never touch them.
limits = Table(
    "tickrun_limits",
    metadata,
    Column("scope", String(300), primary_key=True),
    Column("rate_count", Integer, nullable=True),
    Column("rate_period", Float(53), nullable=True),  # DOUBLE on MariaDB
    Column("concurrency", Integer, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

# The sliding window of rate limits: one row per start of a rate-limited task, kept for one
# period.
starts = Table(
    "tickrun_starts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("scope", String(300), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Index("ix_tickrun_starts_scope", "scope", "started_at"),
)

schedules = Table(
    "tickrun_schedules",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("task", String(200), nullable=False),
    Column("cron", String(200), nullable=False),
    Column("tz", String(64), nullable=False),
    Column("last_fire_at", UTCDateTime, nullable=False),
    Column("last_enqueued_at", UTCDateTime, nullable=True),
    Column("last_success_at", UTCDateTime, nullable=True),
    Column("missed", BigInteger, nullable=False, default=0),
    Column("skipped", BigInteger, nullable=False, default=0),
    Column("updated_at", UTCDateTime, nullable=False),
)

# The outbox of alerts (dead tasks, and problems `tickrun check --alert` found): a row per alert
# and target, inserted in the transaction that makes the task dead, so no alert is lost
# whatever dies after that commit. Delivery claims rows like tasks: ``claimable_at`` is the
# next attempt (a claim's lease while one is in flight), NULL once delivered; ``claim_token``
# fences the write of a delivery's result.
alerts = Table(
    "tickrun_alerts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # dead | check
    Column("target", String(16), nullable=False),  # webhook | command | hook
    Column("task_id", BigInteger, nullable=True),
    Column("task", String(200), nullable=True),
    Column("body", LongText(), nullable=False),  # the alert document, JSON, as of the event
    Column("status", String(16), nullable=False),  # pending | delivered
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("claimable_at", UTCDateTime, nullable=True),
    Column("claim_token", String(32), nullable=True),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("last_error", BoundedText(), nullable=True),
    Index("ix_tickrun_alerts_claimable", "claimable_at", "id"),
    Index("ix_tickrun_alerts_status", "status", "created_at"),
)


def apply_ddl_options() -> None:
    """Dialect-specific DDL options, set only when creating tables (``tickrun init``).

    Naming a dialect's option in a Table or Index loads that dialect's module, so declaring
    them above would import every dialect on every start-up.
    """
    for table in metadata.tables.values():
        table.dialect_kwargs["mysql_charset"] = "utf8mb4"
        table.dialect_kwargs["mysql_engine"] = "InnoDB"
    # Without AUTOINCREMENT SQLite hands out max(rowid) + 1, so deleting the newest tasks
    # (prune, dlq purge) would give their ids to the next ones: a task id passed to a payment
    # API as an idempotency key would then skip a charge. PostgreSQL's sequences and
    # MariaDB's AUTO_INCREMENT (kept across restarts since 10.2.4) never go back.
    for table in (tasks, runs, alerts):
        table.dialect_kwargs["sqlite_autoincrement"] = True
    claim_index.dialect_kwargs["postgresql_where"] = tasks.c.claimable_at.isnot(None)
    claim_index.dialect_kwargs["sqlite_where"] = tasks.c.claimable_at.isnot(None)
    # Ungrouped tasks, nearly all of them, stay out of the group index where it can be partial.
    group_index.dialect_kwargs["postgresql_where"] = tasks.c.group_key.isnot(None)
    group_index.dialect_kwargs["sqlite_where"] = tasks.c.group_key.isnot(None)
