"""What ``tickrun doctor`` finds where the invocation's settings point: the database server and
its settings, the schema, the tasks by status, and the file system under a SQLite file.

The settings themselves (which database, which application, and where each comes from) are
resolved once, by the command line's Context, the same way for every command; this module only
looks at what they resolve to. The rendering is tickrun.cli.inspect's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from tickrun import clock, dialects
from tickrun.database import describe_db_error, open_engine, schema_version, sqlite_path
from tickrun.errors import TickrunError
from tickrun.lifecycle import STATUSES
from tickrun.schema import SCHEMA_VERSION, runs, tasks

_T = tasks


# A worker beats every 15 s (tickrun.worker.HEARTBEAT): one silent for four beats is gone.
WORKER_SILENCE = 60.0


@dataclass(frozen=True)
class LiveWorker:
    worker: str
    started_at: datetime
    heartbeat_at: datetime
    claimed: int


@dataclass(frozen=True)
class DatabaseReport:
    """What doctor found at one database URL.

    ``path`` is the SQLite file (None for a server). A SQLite file that does not exist is not
    created: ``missing_file`` is set and nothing was opened. Otherwise either ``error`` is set
    (the database could not be read) or ``facts`` and ``version`` are: ``facts`` as
    :func:`server_facts` has them, ``version`` the schema's (None: no schema), and ``counts``
    the tasks by status when the schema is this tickrun's.
    """

    path: str | None
    missing_file: bool
    facts: dict[str, Any] | None = None
    version: int | None = None
    counts: dict[str, int] | None = None
    error: TickrunError | None = None
    workers: list[LiveWorker] | None = None  # with the current schema only
    fs_type: str | None = None  # the file system under ``path``: None if unknown, or a server

    @property
    def network_fs(self) -> bool:
        return is_network_fs(self.fs_type)


def examine(url: str) -> DatabaseReport:
    """Open the database at ``url`` (never creating a SQLite file) and read what doctor shows.

    Errors are reported in the result, not raised: a database error as
    tickrun.database.describe_db_error words it.
    """
    try:
        path = sqlite_path(url)
    except Exception:  # noqa: BLE001 - an unparseable URL is reported by open_engine below
        path = None
    fs_type = None if path is None else filesystem_type(path)
    if path is not None and not os.path.exists(path):
        return DatabaseReport(path, missing_file=True, fs_type=fs_type)
    try:
        engine = open_engine(url)
        facts = server_facts(engine)
        version = schema_version(engine)
        current = version == SCHEMA_VERSION
        counts = status_counts(engine) if current else None
        workers = live_workers(engine, clock.now()) if current else None
    except TickrunError as exc:
        return DatabaseReport(path, missing_file=False, error=exc, fs_type=fs_type)
    except SQLAlchemyError as exc:
        error = describe_db_error(exc, url)
        return DatabaseReport(path, missing_file=False, error=error, fs_type=fs_type)
    return DatabaseReport(path, False, facts, version, counts, workers=workers, fs_type=fs_type)


# File systems where SQLite's locking (and so WAL) cannot be trusted.
# fmt: off
NETWORK_FS = frozenset([
    "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "ncpfs", "afs", "9p", "sshfs",
    "fuse.sshfs", "ceph", "fuse.ceph", "glusterfs", "fuse.glusterfs", "lustre", "gpfs", "davfs",
    "fuse.davfs2", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "fuse.juicefs", "beegfs",
])
# fmt: on


def filesystem_type(path: str, mounts: str | None = None) -> str | None:
    """The type of the file system holding ``path``, from /proc/mounts (None if unknown)."""
    if mounts is None:
        try:
            with open("/proc/mounts", encoding="utf-8", errors="replace") as fh:
                mounts = fh.read()
        except OSError:
            return None
    target = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        # /proc/mounts escapes spaces, tabs, newlines and backslashes as octal.
        point = _unescape(parts[1])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        # The last mount of a point shadows earlier ones: keep it on equal length.
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), parts[2])
    return None if best is None else best[1]


def _unescape(text: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text


def is_network_fs(fs_type: str | None) -> bool:
    return fs_type is not None and (fs_type in NETWORK_FS or fs_type.split(".")[0] in NETWORK_FS)


def server_facts(engine: Engine) -> dict[str, Any]:
    """What the database says about itself: product and version, and SQLite's settings."""
    with engine.connect() as conn:
        sqlite = dialects.sqlite_settings(conn)
        dialect = conn.dialect
        info = dialect.server_version_info or ()
    product = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}.get(dialect.name)
    if product is None:
        product = "MariaDB" if getattr(dialect, "is_mariadb", False) else "MySQL"
    version = ".".join(str(p) for p in info if isinstance(p, int))
    facts: dict[str, Any] = {"server": f"{product} {version} ({dialect.driver})".replace("  ", " ")}
    if sqlite is not None:
        facts.update(sqlite)
    return facts


def status_counts(engine: Engine) -> dict[str, int]:
    """How many tasks are in each status, every status listed (in STATUSES order)."""
    with engine.connect() as conn:
        counts: dict[str, int] = dict(
            conn.execute(select(_T.c.status, func.count()).group_by(_T.c.status)).all()
        )
    return {s: counts.get(s, 0) for s in STATUSES}


def live_workers(engine: Engine, now: datetime) -> list[LiveWorker]:
    """The ``tickrun worker`` processes whose heartbeat is recent, oldest first."""
    r = runs.c
    stmt = (
        select(r.worker, r.started_at, r.heartbeat_at, r.claimed)
        .where(
            r.finished_at.is_(None),
            r.heartbeat_at >= now - timedelta(seconds=WORKER_SILENCE),
        )
        .order_by(r.started_at)
    )
    with engine.connect() as conn:
        return [LiveWorker(*row) for row in conn.execute(stmt)]
