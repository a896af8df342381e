"""The claim query is served by its index, however many finished rows the table holds and
however stale the planner's statistics are (a queue table churns faster than ANALYZE runs)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from tickrun import dialects, store

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def fill(engine, backend: str, finished: int, due: int) -> None:  # noqa: ANN001
    """Bulk rows straight in SQL: ``finished`` succeeded tasks, then ``due`` pending ones."""
    series = {
        "postgresql": "SELECT g AS n FROM generate_series(1, {n}) AS g",
        "sqlite": "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) "
        "SELECT n FROM s",
        "mysql": "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {n}) "
        "SELECT n FROM s",
    }[backend]
    columns = (
        "name, queue, priority, status, payload, run_at, claimable_at, attempts, max_attempts, "
        "created_at, finished_at"
    )
    with engine.begin() as conn:
        if backend == "mysql":
            variable = (
                "max_recursive_iterations"
                if conn.dialect.is_mariadb
                else ("cte_max_recursion_depth")
            )
            conn.exec_driver_sql(f"SET SESSION {variable} = 1000000")
        for status, count, claimable, finished_at in (
            ("succeeded", finished, "NULL", "'2026-11-22 00:00:00'"),
            ("pending", due, "'2026-11-22 00:00:00'", "NULL"),
        ):
            conn.execute(
                text(
                    f"INSERT INTO tickrun_tasks ({columns}) "
                    f"SELECT 'noop', 'default', 0, '{status}', '{{}}', '2026-11-22 00:00:00', "
                    f"{claimable}, 1, 5, '2026-11-22 00:00:00', {finished_at} "
                    f"FROM ({series.format(n=count)}) AS seq"
                )
            )


def plan_of(engine, backend: str) -> str:  # noqa: ANN001
    with engine.begin() as conn:
        dialects.before_claim(conn)
        stmt = store.claim_query(backend, ("noop",), ()).params(claim_now=NOW, claim_limit=50)
        sql = str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
        prefix = {"postgresql": "EXPLAIN ", "sqlite": "EXPLAIN QUERY PLAN ", "mysql": "EXPLAIN "}
        rows = conn.exec_driver_sql(prefix[backend] + sql).all()
    return "\n".join(" ".join(str(v) for v in row) for row in rows)


def test_claim_uses_its_index_with_many_finished_rows(engine, backend: str) -> None:  # noqa: ANN001
    fill(engine, backend, finished=50_000, due=2_000)
    plan = plan_of(engine, backend)
    if backend == "postgresql":
        assert "Index Scan using ix_tickrun_tasks_claim" in plan, plan
        assert "Seq Scan" not in plan and "Sort" not in plan, plan
    elif backend == "sqlite":
        assert "USING INDEX ix_tickrun_tasks_claim" in plan, plan
        assert "TEMP B-TREE" not in plan, plan  # no sort step
    else:
        # MariaDB's stand-in for a partial index: a range over unfinished rows, in claim order.
        assert "ix_tickrun_tasks_claim_mariadb" in plan, plan
        assert " range " in f" {plan} " and "filesort" not in plan, plan
