"""Small SQLAlchemy Core helpers shared by the read models (tickrun.listings) and the repair
writes (tickrun.maintenance)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import Executable


def rows(conn: Connection, stmt: Executable) -> list[dict[str, Any]]:
    """Every row ``stmt`` returns, each as a plain dict keyed by column label."""
    return [dict(r._mapping) for r in conn.execute(stmt)]
