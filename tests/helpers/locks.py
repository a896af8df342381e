"""Whether sessions of the test's own database wait for a lock of ``tickrun_limits`` now."""

from __future__ import annotations

from sqlalchemy import Engine


def sessions_waiting(engine: Engine) -> int:
    """How many other sessions of this database (not another test's) wait for a lock of
    ``tickrun_limits`` (PostgreSQL), or run a statement on it (MariaDB: a waiting statement is
    listed as running there, not in innodb_trx; statements on the table are instant
    otherwise)."""
    if engine.dialect.name == "postgresql":
        stmt = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
    else:
        stmt = (
            "SELECT count(*) FROM information_schema.processlist"
            " WHERE db = DATABASE() AND command = 'Query' AND id <> CONNECTION_ID()"
            " AND info LIKE '%%tickrun_limits%%'"
        )
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(stmt).scalar() or 0)
