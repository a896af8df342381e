"""Real "hosts" for partition tests: network namespaces joined to the root namespace by veth
pairs, and a throwaway PostgreSQL cluster of the test's own that listens on their root-side
addresses.

Host ``n`` is the namespace ``tkr<pid>h<n>``; its veth pair is ``tkr<pid>h<n>`` (root side,
``10.213.X.1/24``) and ``eth0`` inside the namespace (``10.213.X.2/24``), X being the n-th /24
of 10.213.0.0/16 no interface uses yet. A namespace has no default route: its processes can
reach only the root side of their own pair. Both sides have a permanent neighbour entry for
the other, so no ARP is involved and a blackhole is silent in both directions:
``blackhole(n)`` sets the root side down (packets are dropped, nothing answers, no error
comes back: connections time out), ``restore(n)`` sets it up again.

Everything is named after this process's pid; ``sweep_stale()`` removes what a killed test
process left behind (its pid gone). Every command has a timeout; teardown is idempotent,
kills what still runs in the namespaces (by pid, from ``ip netns pids``), deletes the
namespaces (which deletes the veth pairs) and checks nothing is left.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

PREFIX = "tkr"
NAME = re.compile(rf"^{PREFIX}(\d+)h(\d+)$")
SUBNET = "10.213"
CMD_TIMEOUT = 20.0
PG_DIR_PREFIX = "tickrun-netns-"


def missing_requirements() -> str | None:
    """Why this machine cannot run the partition tests, or None."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "`ip` is not on PATH"
    return cluster_requirements()


def pg_tool(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, else Debian's /usr/lib/postgresql/<version>/bin
    (the newest version)."""
    found = shutil.which(name)
    if found is not None:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    return str(candidates[-1]) if candidates else None


def cluster_requirements() -> str | None:
    """Why this machine cannot run a PostgreSQL cluster of a test's own, or None."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if pg_tool(tool) is None:
            return f"no `{tool}` on PATH or in /usr/lib/postgresql/*/bin (the postgresql package)"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "`runuser` is not on PATH (root runs the cluster as the postgres user)"
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "no `postgres` system user to run a cluster as (postgres refuses root)"
    return None


def sh(*argv: str, check: bool = True, timeout: float = CMD_TIMEOUT) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def namespaces() -> list[str]:
    return [line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line.strip()]


def links() -> list[str]:
    out = sh("ip", "-o", "link", "show")
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def ours(names: Sequence[str], pid: int | None = None) -> list[str]:
    return [n for n in names if (m := NAME.match(n)) and (pid is None or int(m[1]) == pid)]


def sweep_stale() -> list[str]:
    """Remove namespaces, links and clusters of earlier test processes that are gone."""
    removed = []
    for name in ours(namespaces()) + ours(links()):
        m = NAME.match(name)
        assert m is not None
        if not _alive(int(m[1])):
            _kill_pids_in(name)
            sh("ip", "netns", "delete", name, check=False)
            sh("ip", "link", "delete", name, check=False)
            removed.append(name)
    for path in Path(tempfile.gettempdir()).glob(f"{PG_DIR_PREFIX}*"):
        m = re.match(rf"^{PG_DIR_PREFIX}(\d+)-", path.name)
        if m and not _alive(int(m[1])):
            Cluster(path).stop()
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed


def _kill_pids_in(ns: str) -> None:
    if ns not in namespaces():
        return
    for pid in sh("ip", "netns", "pids", ns, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


@dataclass
class Host:
    index: int
    ns: str  # namespace name; also the name of the root-side veth
    subnet: str  # "10.213.X"

    @property
    def server_address(self) -> str:
        """The root side of this host's pair, where the database listens for it."""
        return f"{self.subnet}.1"

    @property
    def address(self) -> str:
        return f"{self.subnet}.2"

    def argv(self, *command: str) -> list[str]:
        """``command`` run inside this host's namespace (``ip netns exec`` execs it, so the
        process started is the command itself, with its pid and its exit code)."""
        return ["ip", "netns", "exec", self.ns, *command]


@dataclass
class Network:
    count: int
    pid: int = field(default_factory=os.getpid)
    hosts: list[Host] = field(default_factory=list)

    def create(self) -> None:
        used = set(re.findall(rf"inet {re.escape(SUBNET)}\.(\d+)\.", sh("ip", "-o", "-4", "addr")))
        free = [x for x in range(1, 255) if str(x) not in used]
        if len(free) < self.count:
            raise RuntimeError(f"not enough free /24s in {SUBNET}.0.0/16")
        for n, x in zip(range(1, self.count + 1), free, strict=False):
            host = Host(n, f"{PREFIX}{self.pid}h{n}", f"{SUBNET}.{x}")
            self.hosts.append(host)  # before it exists: teardown removes half-made hosts too
            ns, root_if = host.ns, host.ns
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", root_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "addr", "add", f"{host.server_address}/24", "dev", root_if)
            sh("ip", "-n", ns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            sh("ip", "link", "set", root_if, "up")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            root_mac = Path(f"/sys/class/net/{root_if}/address").read_text().strip()
            ns_mac = sh("ip", "netns", "exec", ns, "cat", "/sys/class/net/eth0/address").strip()
            sh("ip", "-n", ns, "neigh", "replace", host.server_address, "lladdr", root_mac,
               "dev", "eth0", "nud", "permanent")  # fmt: skip
            sh("ip", "neigh", "replace", host.address, "lladdr", ns_mac,
               "dev", root_if, "nud", "permanent")  # fmt: skip

    def blackhole(self, host: Host) -> None:
        sh("ip", "link", "set", host.ns, "down")

    def restore(self, host: Host) -> None:
        sh("ip", "link", "set", host.ns, "up")

    def teardown(self) -> None:
        """Kill what runs in our namespaces, delete them (and so their veth pairs); raise if
        anything of ours is left."""
        for host in self.hosts:
            _kill_pids_in(host.ns)
            sh("ip", "netns", "delete", host.ns, check=False)
            sh("ip", "link", "delete", host.ns, check=False)
        left = ours(namespaces(), self.pid) + ours(links(), self.pid)
        if left:
            raise RuntimeError(f"left behind after teardown: {left}")


@dataclass
class Cluster:
    """A PostgreSQL cluster in a temporary directory, run as the ``postgres`` user (as the
    current user when that is not root)."""

    root: Path
    port: int = 0

    @classmethod
    def make(cls) -> Cluster:
        root = Path(tempfile.mkdtemp(prefix=f"{PG_DIR_PREFIX}{os.getpid()}-"))
        root.chmod(0o700)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        return cls(root)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _as_postgres(self, tool: str, *args: str, timeout: float = 60) -> str:
        argv = [pg_tool(tool) or tool, *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return sh(*argv, timeout=timeout)

    def pg_ctl(self, action: str, *args: str) -> None:
        """``pg_ctl ACTION`` (``restart``, ``stop``, ``start``), waiting until it is done."""
        self._as_postgres(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
            *args, action, timeout=90,
        )  # fmt: skip

    def start(self, addresses: Sequence[str], hba: Sequence[str], settings: dict[str, str]) -> None:
        self._as_postgres(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip
        with (self.data / "pg_hba.conf").open("a") as f:
            f.writelines(f"host all all {net} trust\n" for net in hba)
        self.port = free_port()
        conf = {
            "listen_addresses": ",".join(["127.0.0.1", *addresses]),
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            **settings,
        }
        with (self.data / "postgresql.conf").open("a") as f:
            f.writelines(f"{k} = '{v}'\n" for k, v in conf.items())
        self.pg_ctl("start")

    def url(self, address: str = "127.0.0.1", database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@{address}:{self.port}/{database}"

    def create_database(self, prefix: str) -> str:
        """A fresh, empty database named ``prefix`` and a random suffix; its name."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return name

    def pids(self) -> list[int]:
        pidfile = self.data / "postmaster.pid"
        if not pidfile.exists():
            return []
        return [int(pidfile.read_text().split()[0])]

    def stop(self) -> None:
        """Stop the server (immediate: it is thrown away), even when pg_ctl does not manage."""
        pids = self.pids()
        if not pids:
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "20",
                              "stop")  # fmt: skip
        for pid in pids:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < end:
            time.sleep(0.05)

    def destroy(self) -> None:
        pids = self.pids()
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        processes = [p for p in pids if _alive(p)]
        if processes or self.root.exists():
            raise RuntimeError(f"cluster in {self.root} left behind: pids {processes}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PROBE = """
import sys, time
import psycopg
began = time.monotonic()
try:
    with psycopg.connect(sys.argv[1], connect_timeout=int(sys.argv[2])) as conn:
        conn.execute("SELECT 1").fetchone()
    print("ok")
except psycopg.OperationalError as exc:
    print("failed", round(time.monotonic() - began, 2), " ".join(str(exc).split())[:300])
"""


def probe(host: Host, port: int, timeout: int = 2) -> str:
    """Connect to the database from inside ``host``: "ok", or "failed <seconds> <error>"."""
    dsn = f"host={host.server_address} port={port} user=postgres dbname=postgres"
    argv = host.argv(sys.executable, "-c", PROBE, dsn, str(timeout))
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout + 20, check=True
    ).stdout.strip()
