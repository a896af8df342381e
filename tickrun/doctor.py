"""What ``tickrun doctor`` reads about a database: the server and its settings, the tasks by
status, and the file system under a SQLite file. The rendering is tickrun.cli.inspect's."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import Engine, func, select

from tickrun import dialects
from tickrun.schema import STATUSES, tasks

_T = tasks


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
