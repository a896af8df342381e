"""The alerts outbox: rows written with the transition they report, claimed and delivered later.

A row is ``pending`` until one delivery succeeds, then ``delivered``. Delivery claims rows as
runs claim tasks: due rows (``claimable_at <= now``) are locked with SKIP LOCKED where the
database has it (SQLite's IMMEDIATE transaction excludes other claimers), given a token and a
lease (``claimable_at`` moves to the lease's end), and the result is written only while the
token still matches. So overlapping runs deliver each alert once; a run killed mid-delivery
leaves its rows to be claimed again once the lease ends (at least once: the receiver may
then see an alert twice, with the same ``alert_id``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from tickrun import dialects
from tickrun.errors import NotFound
from tickrun.schema import alerts

PENDING = "pending"
DELIVERED = "delivered"
DEAD_EVENT = "dead"
CHECK_EVENT = "check"  # `tickrun check --alert` found a problem


@dataclass(frozen=True)
class Alert:
    """A claimed alert row: what to send, and the token that fences its result."""

    id: int
    target: str
    document: dict[str, Any]
    attempts: int  # deliveries tried before this one
    token: str


def write(
    conn: Connection,
    targets: Sequence[str],
    documents: Sequence[Mapping[str, Any]],
    now: datetime,
    kind: str = DEAD_EVENT,
) -> None:
    """Insert one pending row per document and target, in ``conn``'s transaction (the one that
    makes the tasks dead), due now."""
    if not targets or not documents:
        return
    conn.execute(
        insert(alerts),
        [
            {
                "kind": kind,
                "target": target,
                "task_id": doc.get("task_id"),
                "task": doc.get("task"),
                "body": json.dumps(dict(doc)),
                "status": PENDING,
                "attempts": 0,
                "created_at": now,
                "claimable_at": now,
                "claim_token": None,
                "delivered_at": None,
                "last_error": None,
            }
            for doc in documents
            for target in targets
        ],
    )


def claim(
    engine: Engine, targets: Sequence[str], *, limit: int, lease: float, now: datetime
) -> list[Alert]:
    """Claim up to ``limit`` due rows of ``targets``, oldest first, for ``lease`` seconds."""
    if not targets:
        return []
    a = alerts
    token = uuid.uuid4().hex
    stmt = (
        select(a.c.id, a.c.target, a.c.body, a.c.attempts)
        .where(a.c.claimable_at <= now, a.c.target.in_(targets))
        .order_by(a.c.claimable_at, a.c.id)
        .limit(limit)
    )
    with engine.begin() as conn:
        rows = conn.execute(dialects.skip_locked(stmt, conn)).all()
        if not rows:
            return []
        conn.execute(
            update(a)
            .where(a.c.id.in_([r.id for r in rows]))
            .values(claim_token=token, claimable_at=now + timedelta(seconds=lease))
        )
    found = []
    for r in rows:
        try:
            document = json.loads(r.body)
        except ValueError:
            document = {"event": "unreadable", "alert_id": r.id}
        document["alert_id"] = r.id
        found.append(Alert(r.id, r.target, document, r.attempts, token))
    return found


def delivered(engine: Engine, done: Sequence[Alert], now: datetime) -> int:
    """Mark rows delivered, where the claim is still ours; how many were."""
    total = 0
    with engine.begin() as conn:
        for alert in done:
            total += conn.execute(
                update(alerts)
                .where(alerts.c.id == alert.id, alerts.c.claim_token == alert.token)
                .values(
                    status=DELIVERED,
                    attempts=alerts.c.attempts + 1,
                    claimable_at=None,
                    claim_token=None,
                    delivered_at=now,
                    last_error=None,
                )
            ).rowcount
    return total


def failed(engine: Engine, results: Sequence[tuple[Alert, str, datetime]]) -> None:
    """Record failed deliveries (alert, error, next attempt), where the claim is still ours."""
    with engine.begin() as conn:
        for alert, error, next_at in results:
            conn.execute(
                update(alerts)
                .where(alerts.c.id == alert.id, alerts.c.claim_token == alert.token)
                .values(
                    attempts=alerts.c.attempts + 1,
                    claimable_at=next_at,
                    claim_token=None,
                    last_error=error[:2000],
                )
            )


def release(engine: Engine, held: Sequence[Alert], now: datetime) -> None:
    """Give back claimed rows never tried (a run out of time): due again now, uncounted."""
    if not held:
        return
    with engine.begin() as conn:
        for alert in held:
            conn.execute(
                update(alerts)
                .where(alerts.c.id == alert.id, alerts.c.claim_token == alert.token)
                .values(claimable_at=now, claim_token=None)
            )


# -- read model and repair (tickrun alerts, alerts retry, metrics) --------------------------


def listing(
    engine: Engine, now: datetime, *, include_delivered: bool = False, limit: int | None = None
) -> list[dict[str, Any]]:
    """Alert rows, oldest first: pending ones (``status`` pending, ``failed`` once a delivery
    failed, ``sending`` while a run holds it), and delivered ones when asked."""
    a = alerts
    stmt = select(a).order_by(a.c.id)
    if not include_delivered:
        stmt = stmt.where(a.c.status == PENDING)
    if limit is not None:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    out = []
    for r in rows:
        if r.status == DELIVERED:
            state = DELIVERED
        elif r.claim_token is not None and r.claimable_at is not None and r.claimable_at > now:
            state = "sending"
        else:
            state = "failed" if r.attempts else PENDING
        out.append(
            {
                "id": r.id,
                "kind": r.kind,
                "target": r.target,
                "task_id": r.task_id,
                "task": r.task,
                "status": state,
                "attempts": r.attempts,
                "created_at": r.created_at,
                "next_attempt_at": r.claimable_at if r.status == PENDING else None,
                "delivered_at": r.delivered_at,
                "last_error": r.last_error,
            }
        )
    return out


def make_due(engine: Engine, ids: Sequence[int] | None, now: datetime) -> list[int]:
    """``alerts retry``: pending rows (``ids``, or all) due now, unless a run holds them;
    NotFound, before any write, for an id that is not a pending alert."""
    a = alerts
    with engine.begin() as conn:
        stmt = select(a.c.id).where(a.c.status == PENDING)
        if ids is not None:
            stmt = stmt.where(a.c.id.in_(list(ids)))
        found = list(conn.execute(dialects.locked(stmt.order_by(a.c.id), conn)).scalars())
        if ids is not None:
            missing = [i for i in ids if i not in set(found)]
            if missing:
                shown = ", ".join(str(i) for i in missing[:10])
                raise NotFound(f"no pending alert with id {shown}; nothing changed")
        if found:
            conn.execute(
                update(a)
                .where(a.c.id.in_(found), or_(a.c.claim_token.is_(None), a.c.claimable_at <= now))
                .values(claimable_at=now)
            )
    return found


def prune_delivered(engine: Engine, before: datetime, chunk: int = 500) -> int:
    """Delete alerts delivered before ``before``, in batches that commit one by one (delivered
    rows never change again); how many."""
    total = 0
    where = (alerts.c.status == DELIVERED, alerts.c.delivered_at < before)
    while True:
        with engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(alerts.c.id).where(*where).order_by(alerts.c.id).limit(chunk)
                ).scalars()
            )
            if not ids:
                return total
            total += conn.execute(delete(alerts).where(alerts.c.id.in_(ids), *where)).rowcount


def backlog(conn: Connection) -> dict[str, int]:
    """Pending alerts per target."""
    stmt = (
        select(alerts.c.target, func.count())
        .where(alerts.c.status == PENDING)
        .group_by(alerts.c.target)
    )
    return {target: n for target, n in conn.execute(stmt).all()}
