"""Benchmark databases: a fresh one per benchmark run, reset between runs, filled fast.

SQLite gets a new temporary file for every measured run. PostgreSQL and MariaDB get one fresh
database per benchmark run on the local servers (dropped at the end), emptied with TRUNCATE
between measured runs.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, create_engine, func, select, text
from sqlalchemy.engine import Engine, make_url

from tickrun import clock, dialects, store
from tickrun.database import open_engine
from tickrun.migrations import init_schema
from tickrun.schema import UTCDateTime, tasks

SERVER_URLS = {
    "postgresql": os.environ.get(
        "TICKRUN_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
    "mysql": os.environ.get("TICKRUN_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql"),
}
DATA_TABLES = ("tickrun_tasks", "tickrun_attempts", "tickrun_runs", "tickrun_schedules")
BULK_CHUNK = 250_000  # rows per INSERT ... SELECT, so no statement holds a huge transaction


def _admin_engine(url: str) -> Engine:
    """An autocommit engine on the administrative database, with tickrun's options for the URL
    (so a URL option tickrun reads, such as ``?prepare_threshold=5``, works here too)."""
    return create_engine(url, **{**dialects.engine_options(url), "isolation_level": "AUTOCOMMIT"})


class Unavailable(Exception):
    """The server cannot be used for this benchmark run (the message says why)."""


@dataclass
class BenchDB:
    """One database under test; ``url`` changes on SQLite, where every reset is a new file."""

    kind: str  # sqlite | postgresql | mysql
    url: str = ""
    admin_url: str = ""
    name: str = ""
    workdir: str = ""
    _files: list[str] = field(default_factory=list)

    # -- lifecycle ----------------------------------------------------------------------

    @classmethod
    def create(cls, kind: str, sqlite_dir: str | None) -> BenchDB:
        if kind == "sqlite":
            db = cls(kind, workdir=tempfile.mkdtemp(prefix="tickrun-bench-", dir=sqlite_dir))
            db.reset()
            return db
        admin_url = SERVER_URLS[kind]
        name = f"tickrun_bench_{uuid.uuid4().hex[:10]}"
        try:
            admin = _admin_engine(admin_url)
            with admin.connect() as conn:
                if kind == "postgresql":
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
                else:
                    conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
            admin.dispose()
        except Exception as exc:  # noqa: BLE001 - any failure means the server is unusable
            masked = make_url(admin_url).render_as_string(hide_password=True)
            raise Unavailable(f"{masked}: {' '.join(str(exc).split())[:300]}") from None
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        db = cls(kind, url=url, admin_url=admin_url, name=name)
        init_schema(open_engine(url))
        return db

    @property
    def engine(self) -> Engine:
        return open_engine(self.url)

    def reset(self) -> None:
        """An empty, initialised schema."""
        if self.kind == "sqlite":
            self._drop_sqlite_file()
            path = os.path.join(self.workdir, f"bench-{uuid.uuid4().hex[:8]}.db")
            self._files.append(path)
            self.url = f"sqlite:///{path}"
            init_schema(self.engine)
            return
        with self.engine.begin() as conn:
            if self.kind == "postgresql":
                conn.execute(text(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY"))
            else:
                for table in DATA_TABLES:
                    conn.execute(text(f"TRUNCATE TABLE {table}"))

    def drop(self) -> None:
        if self.kind == "sqlite":
            self._drop_sqlite_file()
            with contextlib.suppress(OSError):
                os.rmdir(self.workdir)
            return
        open_engine(self.url).dispose()
        admin = _admin_engine(self.admin_url)
        with admin.connect() as conn:
            if self.kind == "postgresql":
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{self.name}`"))
        admin.dispose()

    def _drop_sqlite_file(self) -> None:
        for path in self._files:
            if self.url.endswith(path):
                open_engine(self.url).dispose()
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path + suffix)
        self._files.clear()

    # -- filling ------------------------------------------------------------------------

    def fill(self, task: str, template: dict[str, Any], *, finished: int, due: int) -> None:
        """Insert ``finished`` succeeded tasks, then ``due`` pending ones with payload {"i": i}.

        Rows are generated by the database (INSERT ... SELECT over a number series), so a
        million rows take seconds. Finished rows come first, so they have the lower ids, as old
        rows would. ``template`` is a row from ``App.task_row`` (queue, priority, attempts).
        """
        now = clock.now()
        past = now - timedelta(hours=1)
        old = now - timedelta(days=2)
        for lo in range(0, finished, BULK_CHUNK):
            hi = min(finished, lo + BULK_CHUNK) - 1
            self._insert_series(task, template, lo, hi, finished=True, at=old, payload_base=-1)
        for lo in range(0, due, BULK_CHUNK):
            hi = min(due, lo + BULK_CHUNK) - 1
            self._insert_series(task, template, lo, hi, finished=False, at=past, payload_base=0)

    def _insert_series(
        self,
        task: str,
        template: dict[str, Any],
        lo: int,
        hi: int,
        *,
        finished: bool,
        at: datetime,
        payload_base: int,
    ) -> None:
        # Finished rows get payloads -1, -2, ...: a handler that ever ran one would log a
        # value outside the expected set and fail the run's check.
        x = "x" if payload_base == 0 else "(-1 - x)"
        payload = (
            f"CONCAT('{{\"i\":', {x}, '}}')"
            if self.kind == "mysql"
            else f"'{{\"i\":' || {x} || '}}'"
        )
        columns = (
            "name, queue, priority, status, payload, run_at, claimable_at, attempts, "
            "max_attempts, created_at, started_at, finished_at, worker"
        )
        if finished:
            values = "'succeeded', {payload}, :at, NULL, 1, :max_attempts, :at, :at, :at, 'bench'"
        else:
            values = "'pending', {payload}, :at, :at, 0, :max_attempts, :at, NULL, NULL, NULL"
        select_list = ":name, :queue, :priority, " + values.format(payload=payload)
        if self.kind == "postgresql":
            sql = (
                f"INSERT INTO tickrun_tasks ({columns}) SELECT {select_list} "
                f"FROM generate_series({lo}, {hi}) AS s(x) ORDER BY x"
            )
        elif self.kind == "mysql":
            sql = (
                f"INSERT INTO tickrun_tasks ({columns}) SELECT {select_list} "
                f"FROM (SELECT CAST(seq AS SIGNED) AS x FROM seq_{lo}_to_{hi}) AS s ORDER BY x"
            )
        else:
            sql = (
                f"WITH RECURSIVE s(x) AS "
                f"(SELECT {lo} UNION ALL SELECT x + 1 FROM s WHERE x < {hi}) "
                f"INSERT INTO tickrun_tasks ({columns}) SELECT {select_list} FROM s"
            )
        stmt = text(sql).bindparams(bindparam("at", type_=UTCDateTime()))
        with self.engine.begin() as conn:
            conn.execute(
                stmt,
                {
                    "name": task,
                    "queue": template["queue"],
                    "priority": template["priority"],
                    "max_attempts": template["max_attempts"],
                    "at": at,
                },
            )

    def settle(self) -> list[str]:
        """What a long-lived database would have done by itself after a bulk load.

        PostgreSQL: VACUUM ANALYZE (autovacuum's job) and a CHECKPOINT, so the timed run neither
        sets hint bits on a million fresh rows nor meets a checkpoint the load started. MariaDB:
        ANALYZE TABLE. SQLite: a WAL checkpoint (no ANALYZE: tickrun never runs one).
        """
        if self.kind == "postgresql":
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE tickrun_tasks"))
                conn.execute(text("CHECKPOINT"))
            return ["VACUUM ANALYZE tickrun_tasks", "CHECKPOINT"]
        if self.kind == "mysql":
            with self.engine.connect() as conn:
                conn.execute(text("ANALYZE TABLE tickrun_tasks")).all()
            return ["ANALYZE TABLE tickrun_tasks"]
        raw = sqlite3.connect(make_url(self.url).database)
        try:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            raw.close()
        return ["PRAGMA wal_checkpoint(TRUNCATE)"]

    def raw_commit_rate(self, n: int, *, task_row: bool, single: bool = False) -> float:
        """Durable one-row transactions per second through the bare driver (no SQLAlchemy).

        The floor under one-at-a-time enqueues: the cheapest durable insert the driver can do
        (SQLite: BEGIN IMMEDIATE, INSERT, COMMIT in process; servers: one autocommit INSERT,
        one round trip). ``task_row`` inserts an enqueue's row into tickrun_tasks, with all its
        indexes; otherwise a row into a two-column table (the cost of a commit alone).
        ``single`` on SQLite: one autocommit INSERT, its own transaction (as huey enqueues),
        with no BEGIN IMMEDIATE / COMMIT around it; as durable at synchronous=FULL.
        """
        if task_row:
            table = "tickrun_tasks"
            sql = (
                "INSERT INTO tickrun_tasks (name, queue, priority, status, payload, run_at, "
                "claimable_at, attempts, max_attempts, created_at) "
                "VALUES ('bench_floor', 'default', 0, 'pending', {m}, {m}, {m}, 0, 5, {m})"
            )
        else:
            table = "bench_commit"
            sql = "INSERT INTO bench_commit (v) VALUES ({m})"
            self._exec(
                {
                    "sqlite": "CREATE TABLE bench_commit (id INTEGER PRIMARY KEY, v TEXT)",
                    "postgresql": "CREATE TABLE bench_commit (id BIGSERIAL PRIMARY KEY, v TEXT)",
                    "mysql": "CREATE TABLE bench_commit (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                    "v TEXT) ENGINE=InnoDB",
                }[self.kind]
            )
        sql = sql.format(m="?" if self.kind == "sqlite" else "%s")
        stamp = clock.now().replace(tzinfo=None).isoformat(" ", "microseconds")
        raw = self.engine.raw_connection()
        driver = raw.driver_connection
        try:
            cur = raw.cursor()
            if self.kind == "postgresql":
                driver.autocommit = True
            elif self.kind == "mysql":
                driver.autocommit(True)
            started = time.perf_counter()
            for i in range(n):
                params = (f'{{"i":{i}}}', stamp, stamp, stamp) if task_row else (str(i),)
                if self.kind == "sqlite" and not single:
                    # tickrun's connect hook leaves the driver in autocommit; BEGIN as it does.
                    cur.execute("BEGIN IMMEDIATE")
                    cur.execute(sql, params)
                    cur.execute("COMMIT")
                else:
                    cur.execute(sql, params)
            rate = n / (time.perf_counter() - started)
            cur.close()
        finally:
            if self.kind == "postgresql":
                driver.autocommit = False
            elif self.kind == "mysql":
                driver.autocommit(False)
            raw.close()
        # Only its own rows: bench/peers.py interleaves this with tickrun's enqueues.
        self._exec(
            "DROP TABLE bench_commit"
            if table == "bench_commit"
            else "DELETE FROM tickrun_tasks WHERE name = 'bench_floor'"
        )
        return rate

    def _exec(self, sql: str) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(sql)

    # -- inspection ---------------------------------------------------------------------

    def status_counts(self) -> dict[str, int]:
        stmt = select(tasks.c.status, func.count()).group_by(tasks.c.status)
        with self.engine.connect() as conn:
            return {status: n for status, n in conn.execute(stmt).all()}

    def scalar(self, sql: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql)).scalar()

    def settings(self) -> dict[str, Any]:
        """The server version and the settings that decide durability and speed."""
        with self.engine.connect() as conn:
            if self.kind == "sqlite":
                # What the engine's own connections run with (set by tickrun.dialects).
                got = {
                    p: conn.exec_driver_sql(f"PRAGMA {p}").scalar()
                    for p in ("journal_mode", "synchronous", "busy_timeout", "page_size")
                }
                got["synchronous"] = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(
                    got["synchronous"], got["synchronous"]
                )
                return {"version": sqlite3.sqlite_version, **got}
            if self.kind == "postgresql":
                names = (
                    "fsync",
                    "synchronous_commit",
                    "wal_sync_method",
                    "full_page_writes",
                    "shared_buffers",
                    "default_transaction_isolation",
                )
                got = {n: conn.exec_driver_sql(f"SHOW {n}").scalar() for n in names}
                version = conn.exec_driver_sql("SHOW server_version").scalar()
                return {"version": version, **got}
            names = (
                "innodb_flush_log_at_trx_commit",
                "sync_binlog",
                "log_bin",
                "innodb_doublewrite",
                "innodb_flush_method",
                "innodb_buffer_pool_size",
            )
            rows = conn.exec_driver_sql(
                "SHOW VARIABLES WHERE Variable_name IN (" + ", ".join(f"'{n}'" for n in names) + ")"
            ).all()
            version = conn.exec_driver_sql("SELECT VERSION()").scalar()
            isolation = conn.exec_driver_sql("SELECT @@tx_isolation").scalar()
            return {
                "version": version,
                **dict(rows),
                "tickrun session isolation": isolation,
            }

    def explain_claim(self, names: list[str], *, as_claimed: bool = True, limit: int = 51) -> str:
        """The plan of the claim's SELECT (``tickrun.store.due_query``), locking as it locks.

        ``as_claimed`` runs it as the claim does (``dialects.for_claim``: planner settings or
        an index hint); without, the plan is the planner's own choice.
        """
        with self.engine.connect() as conn:
            if as_claimed:
                dialects.before_claim(conn)
                stmt = store.claim_query(self.kind, tuple(names), ())
            else:
                stmt = dialects.skip_locked(store.due_query(tuple(names), ()), conn)
            stmt = stmt.params(claim_now=clock.now(), claim_limit=limit)
            compiled = stmt.compile(conn, compile_kwargs={"literal_binds": True})
            if self.kind == "postgresql":
                prefix = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "
            elif self.kind == "mysql":
                prefix = "EXPLAIN "
            else:
                prefix = "EXPLAIN QUERY PLAN "
            rows = conn.exec_driver_sql(prefix + str(compiled)).all()
            conn.rollback()
        if self.kind == "mysql":
            return "\n".join(" | ".join(str(v) for v in row) for row in rows)
        if self.kind == "sqlite":
            return "\n".join(str(row[-1]) for row in rows)
        return "\n".join(row[0] for row in rows)
