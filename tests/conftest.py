"""Database fixtures: every engine test runs on SQLite, and on PostgreSQL and MariaDB when
their servers answer. Each test session creates its own server databases and drops them after.

Server URLs (an administrative database to connect to) come from TICKRUN_TEST_POSTGRES_URL and
TICKRUN_TEST_MYSQL_URL, defaulting to the local servers; an unreachable server skips its tests
with the reason, unless TICKRUN_TEST_REQUIRE_SERVERS=1 (CI), where it fails them.

The ``pgbouncer`` fixture starts a PgBouncer of its own (transaction pooling) in front of that
PostgreSQL; without a ``pgbouncer`` binary its tests are skipped, unless
TICKRUN_TEST_REQUIRE_PGBOUNCER=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.helpers.background import _background, _workers, kill_all
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
REQUIRE_PGBOUNCER = os.environ.get("TICKRUN_TEST_REQUIRE_PGBOUNCER") == "1"
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


class PgBouncer:
    """A PgBouncer process of this test session, in transaction pooling mode with a pool of
    POOL_SIZE server connections per database, listening on a free loopback port and
    forwarding every database name to the test PostgreSQL server.

    ``server_round_robin`` hands idle server connections out in turn instead of the most
    recently used first, so even one client's consecutive transactions move between them.
    """

    POOL_SIZE = 3  # small, so consecutive transactions of one client share server connections
    START_TIMEOUT = 30.0

    def __init__(self, binary: str, server_url: str) -> None:
        self.server = make_url(server_url)
        self.dir = Path(tempfile.mkdtemp(prefix="tickrun-pgbouncer-"))
        self.log = self.dir / "pgbouncer.log"
        self.port = 0
        # PgBouncer refuses to run as root: as root, run it as the postgres system user.
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
            if self.user is None:
                raise RuntimeError("running as root with neither a postgres nor a nobody user")
            shutil.chown(self.dir, user=self.user)
        self.proc = self._start(binary)

    def _start(self, binary: str) -> subprocess.Popen[bytes]:
        for _ in range(3):  # a free port found here may be taken before pgbouncer binds it
            self.port = _free_port()
            self._write_config()
            proc = subprocess.Popen(
                [binary, str(self.dir / "pgbouncer.ini")],
                user=self.user,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self.dir,
            )
            end = time.monotonic() + self.START_TIMEOUT
            while proc.poll() is None and time.monotonic() < end:
                with socket.socket() as probe:
                    probe.settimeout(1)
                    if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                        return proc
                time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if "Address already in use" not in self.log_text():
                break
        raise RuntimeError(f"pgbouncer did not start: {self.log_text()[-2000:]}")

    def _write_config(self) -> None:
        host = self.server.host or "127.0.0.1"
        port = self.server.port or 5432
        user = self.server.username or "postgres"
        password = self.server.password or ""
        (self.dir / "userlist.txt").write_text(f'"{user}" "{password}"\n')
        (self.dir / "pgbouncer.ini").write_text(
            textwrap.dedent(f"""\
                [databases]
                * = host={host} port={port}

                [pgbouncer]
                listen_addr = 127.0.0.1
                listen_port = {self.port}
                unix_socket_dir =
                auth_type = trust
                auth_file = {self.dir / "userlist.txt"}
                pool_mode = transaction
                default_pool_size = {self.POOL_SIZE}
                server_round_robin = 1
                max_client_conn = 200
                logfile = {self.log}
                pidfile = {self.dir / "pgbouncer.pid"}
                """)
        )
        for name in ("userlist.txt", "pgbouncer.ini"):
            if self.user is not None:
                shutil.chown(self.dir / name, user=self.user)
        if self.log.exists():
            self.log.unlink()

    def url(self, database: str) -> str:
        """The URL of ``database`` on the test PostgreSQL, through this PgBouncer."""
        url = self.server.set(host="127.0.0.1", port=self.port, database=database)
        return url.render_as_string(hide_password=False)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: PgBouncer's immediate shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer") if os.access(p, os.X_OK)),
        None,
    )


@pytest.fixture(scope="session")
def pgbouncer(servers: ServerDatabases) -> Iterator[PgBouncer]:
    """This session's PgBouncer in front of the test PostgreSQL (transaction pooling)."""
    servers.get("postgresql")  # skips or fails as every PostgreSQL test does, with the reason
    binary = pgbouncer_binary()
    if binary is None:
        reason = "no pgbouncer binary (PATH, /usr/sbin): apt-get install pgbouncer"
        if REQUIRE_PGBOUNCER:
            pytest.fail(reason)
        pytest.skip(reason)
    bouncer = PgBouncer(binary, SERVERS["postgresql"])
    yield bouncer
    bouncer.stop()


@pytest.fixture
def bounced_url(pgbouncer: PgBouncer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (no tickrun schema) reached through PgBouncer;
    dropped after the test."""
    name = f"tickrun_test_{uuid.uuid4().hex[:10]}_pgbouncer"
    admin = create_engine(SERVERS["postgresql"], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = pgbouncer.url(name)
    try:
        yield url
    finally:
        open_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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


@pytest.fixture(params=BACKENDS)
def bare_url(
    request: pytest.FixtureRequest, tmp_path: Path, servers: ServerDatabases
) -> Iterator[str]:
    """A database without tickrun's schema (before ``tickrun init``), dropped after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bare.db'}"
        return
    servers.get(request.param)  # skips or fails as every server test does, with the reason
    name = f"tickrun_test_{uuid.uuid4().hex[:10]}_bare"
    admin = create_engine(SERVERS[request.param], isolation_level="AUTOCOMMIT")
    quoted = f'"{name}"' if request.param == "postgresql" else f"`{name}`"
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {quoted}"))
    url = make_url(SERVERS[request.param]).set(database=name).render_as_string(False)
    try:
        yield url
    finally:
        open_engine(url).dispose()
        force = " WITH (FORCE)" if request.param == "postgresql" else ""
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}{force}"))
        admin.dispose()


@pytest.fixture(params=[b for b in BACKENDS if b != "sqlite"])
def server_url(request: pytest.FixtureRequest, servers: ServerDatabases) -> str:
    """A PostgreSQL or MariaDB database with a current, empty tickrun schema: for what only
    a database shared by several hosts can show."""
    url = servers.get(request.param)
    empty_tables(url)
    return url


@pytest.fixture
def server_engine(server_url: str):  # noqa: ANN201
    return open_engine(server_url)


@pytest.fixture
def backend(db_url: str) -> str:
    name = make_url(db_url).get_backend_name()
    return "mysql" if name == "mariadb" else name


@pytest.fixture
def engine(db_url: str):  # noqa: ANN201
    return open_engine(db_url)


@pytest.fixture(autouse=True)
def reap_runs() -> Iterator[None]:
    """A failed test must not leave a blocked ``tickrun run`` behind."""
    yield
    kill_all(_background)


@pytest.fixture(autouse=True)
def reap_workers() -> Iterator[None]:
    """Nor a ``tickrun worker``."""
    yield
    kill_all(_workers)


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
