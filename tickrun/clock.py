"""The one place "now" comes from.

Never capture the time at import: freezegun (and any test that moves time) patches
``datetime`` at call time, so every caller asks here, and SQL never calls the database's
``NOW()``.
"""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current instant, timezone-aware, in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to already be UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
