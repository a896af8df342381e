"""The one place "now" comes from.

Never capture the time at import: freezegun (and any test that moves time) patches
``datetime`` at call time, so every caller asks here.

Leases and rate windows are judged by one clock for every host: on PostgreSQL and MariaDB the
database's, taken in the statement that writes or compares them (``dialects.database_now``),
so hosts whose clocks disagree cannot take each other's live claims. Those statements take
``pinned()``: None, so the database decides, unless a test has frozen time, when they take the
frozen time instead (River's ``coalesce(@now, now())``). SQLite is one host: its clock.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime


def now() -> datetime:
    """The current instant, timezone-aware, in UTC."""
    return datetime.now(UTC)


def pinned() -> datetime | None:
    """The frozen instant while a test has frozen time (freezegun), else None.

    Looked up, not imported: a program that never loaded freezegun pays one dict lookup.
    """
    api = sys.modules.get("freezegun.api")
    if api is not None and getattr(api, "freeze_factories", None):
        return now()
    return None


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to already be UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
