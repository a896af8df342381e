"""Database fixtures: every engine test runs on SQLite, and on PostgreSQL and MariaDB when
their servers answer. Each test session creates its own server databases and drops them after.

Server URLs (an administrative database to connect to) come from TICKRUN_TEST_POSTGRES_URL and
TICKRUN_TEST_MYSQL_URL, defaulting to the local servers; an unreachable server skips its tests
with the reason, unless TICKRUN_TEST_REQUIRE_SERVERS=1 (CI), where it fails them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tickrun.database import open_engine
from tickrun.migrations import init_schema
from tickrun.schema import metadata

ROOT = Path(__file__).resolve().parent.parent
SERVERS = {
    "postgresql": os.environ.get(
        "TICKRUN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
    "mysql": os.environ.get("TICKRUN_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql"),
}
REQUIRE = os.environ.get("TICKRUN_TEST_REQUIRE_SERVERS") == "1"
BACKENDS = ["sqlite", "postgresql", "mysql"]


class ServerDatabases:
    """One fresh database per server per test session, dropped at the end."""

    def __init__(self) -> None:
        self.name = f"tickrun_test_{uuid.uuid4().hex[:10]}"
        self.urls: dict[str, str] = {}
        self.errors: dict[str, str] = {}

    def get(self, backend: str) -> str:
        if backend in self.urls:
            return self.urls[backend]
        if backend not in self.errors:
            try:
                self.urls[backend] = self._create(backend)
                return self.urls[backend]
            except Exception as exc:  # noqa: BLE001 - any failure means the server is unusable
                self.errors[backend] = " ".join(str(exc).split())[:300]
        where = make_url(SERVERS[backend]).render_as_string(hide_password=True)
        reason = f"{backend} server unavailable at {where}: {self.errors[backend]}"
        if REQUIRE:
            pytest.fail(reason)
        pytest.skip(reason)

    def _create(self, backend: str) -> str:
        admin = create_engine(SERVERS[backend], isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            if backend == "postgresql":
                conn.execute(text(f'CREATE DATABASE "{self.name}"'))
            else:
                conn.execute(text(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4"))
        admin.dispose()
        url = make_url(SERVERS[backend]).set(database=self.name)
        engine = open_engine(url.render_as_string(hide_password=False))
        init_schema(engine)
        return url.render_as_string(hide_password=False)

    def drop_all(self) -> None:
        for backend in self.urls:
            open_engine(self.urls[backend]).dispose()
            admin = create_engine(SERVERS[backend], isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                if backend == "postgresql":
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
                else:
                    conn.execute(text(f"DROP DATABASE IF EXISTS `{self.name}`"))
            admin.dispose()


@pytest.fixture(scope="session")
def servers() -> Iterator[ServerDatabases]:
    dbs = ServerDatabases()
    yield dbs
    dbs.drop_all()


def empty_tables(url: str) -> None:
    engine = open_engine(url)
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            if table.name != "tickrun_meta":
                conn.execute(table.delete())


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path, servers: ServerDatabases) -> str:
    """A database with a current, empty tickrun schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'tickrun.db'}"
        init_schema(open_engine(url))
        return url
    url = servers.get(request.param)
    empty_tables(url)
    return url


@pytest.fixture
def backend(db_url: str) -> str:
    name = make_url(db_url).get_backend_name()
    return "mysql" if name == "mariadb" else name


@pytest.fixture
def engine(db_url: str):  # noqa: ANN201
    return open_engine(db_url)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A working directory for real ``tickrun`` processes; write jobs.py with ``write_app``."""
    work = tmp_path / "project"
    work.mkdir()
    return work


def write_app(project: Path, source: str, module: str = "jobs") -> str:
    (project / f"{module}.py").write_text(textwrap.dedent(source))
    return f"{module}:app"


def tickrun(
    *args: str,
    cwd: Path,
    db: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as cron would (no inherited TICKRUN_* settings)."""
    return subprocess.run(
        [sys.executable, "-m", "tickrun", *args],
        cwd=cwd,
        env=cli_env(db, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


def tickruns(
    count: int, *args: str, cwd: Path, db: str, env: dict[str, str] | None = None
) -> list[tuple[int, str, str]]:
    """``count`` real CLI processes started together; (exit code, stdout, stderr) of each."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tickrun", *args],
            cwd=cwd,
            env=cli_env(db, env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]


def cli_env(db: str | None, extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKRUN_")}
    env.update(extra or {})
    if db is not None:
        env["TICKRUN_DATABASE_URL"] = db
    return env
